#!/usr/bin/env bash
# Our proxies against their peers, closed loop AND open loop, in one run per comparison.
# Not run by CI.
#
#   bash peer-benches/open_loop.sh                  # full figures (about 40 min)
#   bash peer-benches/open_loop.sh --pin            # the same, unpinned and then pinned
#   DURATION=1s WRK_DURATION=1s WARMUP=1s ROUNDS=1 THREADS=1 bash peer-benches/open_loop.sh  # smoke, < 2 min
#   SUITES=cache bash peer-benches/open_loop.sh     # one suite: cache or balance
#
# The full run takes about 40 minutes (cache about 16, balance about 12 per thread count),
# twice that with --pin.
#
# Needs wrk, nginx, varnish, haproxy (installed with apt-get when missing) and oha
# (`cargo install --locked oha`); builds the examples it runs in release mode.
#
# Comparisons:
# - cache: `cache_proxy` vs nginx `proxy_cache` and Varnish (default VCL), all in front of
#   the same origin (nginx serving files with `Cache-Control: max-age=3600`), on 1 KiB and
#   64 KiB hits. Beside them, the floor: nginx serving the same files from its own disk
#   (no proxying; not counted as a peer).
# - balance: the lean forwarder (`tower_balance_ext::forward`, as in fleet_figures
#   section 4: `fleet_figures --role forwarder`) and `balance_proxy` (the forwarder with
#   health gates, breakers and its limits) vs HAProxy, each with round robin and least
#   connections, in front of the same three loopback backends (`fleet_figures --role
#   backends`, one process), with THREADS threads each (tokio workers, `nbthread`).
#
# Method, per comparison:
# 1. closed loop: `wrk -t$WRK_THREADS -c$CONNECTIONS -d$WRK_DURATION --latency`, ROUNDS
#    rounds interleaved between the servers (A B C A B C ...); median requests/s and p99.
# 2. the offered rates: FRACTIONS (0.25 0.5 0.9) of the best peer's median closed-loop
#    requests/s from step 1.
# 3. open loop at each rate: `oha -q RATE -z $DURATION -c $CONNECTIONS --latency-correction
#    --no-tui --output-format json`, ROUNDS rounds interleaved between the servers; latency
#    counts from when each request was due (coordinated omission corrected); medians of the
#    rounds of p50, p99, p99.9 and of the rate achieved.
# Ratios: requests/s against the best peer's; latencies against that same peer's at the
# same offered rate (below 1x is better).
#
# --pin (PIN=both; PIN=1 pinned only): `taskset` puts the load generator and the
# backends/origin on core 0 and the server under test alone on core 1 (with 2 threads,
# both on core 1).
#
# Settings (environment): DURATION (open-loop step, 10s), WRK_DURATION (10s), ROUNDS (3),
# WARMUP (each server's wrk warm-up per comparison, 1s),
# FRACTIONS ("0.25 0.5 0.9"), CONNECTIONS (64), WRK_THREADS (1), THREADS ("1 2"),
# SUITES ("cache balance"), BASE_PORT (19000), BUILD (1; 0 to use the built binaries).
# Everything started is stopped by its pid at the end of each comparison.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
WRK_DURATION=${WRK_DURATION:-10s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-3}
FRACTIONS=${FRACTIONS:-0.25 0.5 0.9}
CONNECTIONS=${CONNECTIONS:-64}
WRK_THREADS=${WRK_THREADS:-1}
THREADS=${THREADS:-1 2}
SUITES=${SUITES:-cache balance}
PIN=${PIN:-0}
for a in "$@"; do
    case "$a" in
        --pin) PIN=both ;;
        *) echo "unknown argument $a; see the header of $0" >&2; exit 2 ;;
    esac
done

source peer-benches/lib.sh
need_tools wrk nginx varnishd haproxy jq taskset oha
build
make_files

load_pin=() server_pin=() side_pin=()
pinning() { # 0|1
    if [ "$1" = 1 ]; then
        load_pin=(taskset -c 0) server_pin=(taskset -c 1) side_pin=(taskset -c 0)
    else
        load_pin=() server_pin=() side_pin=()
    fi
}

names=() roles=() addrs=() # the servers of the current comparison
serve() { # name role(ours|peer|floor) port command...: starts one server under test
    local name=$1 role=$2 p=$3
    shift 3
    "${server_pin[@]}" "$@" >"$work/$name.log" 2>&1 &
    started+=($!)
    names+=("$name") roles+=("$role") addrs+=("127.0.0.1:$p")
}
side() { # command...: starts an origin or the backends
    "${side_pin[@]}" "$@" >/dev/null 2>&1 &
    started+=($!)
}

ms() { # wrk's latency (12.3us, 1.2ms, 1.1s) in ms
    awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 } else if (v ~ /ms$/) sub(/ms/, "", v); else if (v ~ /s$/) { sub(/s/, "", v); v *= 1000 }; print v + 0 }'
}

closed() { # url -> "rps p50 p99"
    local out
    out=$("${load_pin[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"$WRK_DURATION" --latency "$1")
    echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
        "$(ms "$(awk '$1=="50%" {print $2}' <<<"$out")")" \
        "$(ms "$(awk '$1=="99%" {print $2}' <<<"$out")")"
}

open() { # url rate -> "achieved p50 p99 p99.9 success-rate"
    "${load_pin[@]}" oha -q "$2" -z "$DURATION" -c "$CONNECTIONS" --latency-correction \
        --no-tui --output-format json "$1" 2>/dev/null |
        jq -r '[.summary.requestsPerSec, (.latencyPercentiles.p50 // 0) * 1000,
                (.latencyPercentiles.p99 // 0) * 1000, (.latencyPercentiles["p99.9"] // 0) * 1000,
                .summary.successRate] | map(tostring) | join(" ")'
}

median() { # column: median of that column of stdin's lines
    sort -g -k"$1,$1" | awk -v c="$1" '{ v[NR] = $c } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'
}

# compare TITLE PATH: runs the servers in names/addrs, prints the table.
compare() {
    local title=$1 path=$2 dir="$work/res/$RANDOM$RANDOM" i r f rate best=-1 bestrps=0
    mkdir -p "$dir"
    for i in "${!names[@]}"; do
        for _ in 1 2; do curl -s -o /dev/null "http://${addrs[$i]}$path"; done
        "${load_pin[@]}" wrk -t1 -c"$CONNECTIONS" -d"$WARMUP" "http://${addrs[$i]}$path" >/dev/null # warm-up
    done
    for r in $(seq "$ROUNDS"); do
        for i in "${!names[@]}"; do closed "http://${addrs[$i]}$path" >>"$dir/$i.closed"; done
    done
    for i in "${!names[@]}"; do
        [ "${roles[$i]}" = peer ] || continue
        r=$(median 1 <"$dir/$i.closed")
        if awk "BEGIN{exit !($r > $bestrps)}"; then best=$i bestrps=$r; fi
    done
    for f in $FRACTIONS; do
        rate=$(awk "BEGIN{printf \"%d\", $f * $bestrps}")
        [ "$rate" -gt 0 ] || rate=1
        for r in $(seq "$ROUNDS"); do
            for i in "${!names[@]}"; do open "http://${addrs[$i]}$path" "$rate" >>"$dir/$i.open.$f"; done
        done
    done

    echo
    echo "### $title (pinned: $([ ${#server_pin[@]} -gt 0 ] && echo "yes, server on core 1, load on core 0" || echo no))"
    echo
    echo "| server | load | achieved req/s | p50 ms | p99 ms | p99.9 ms | vs ${names[$best]} |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
    local rps p50 p99 p999 ok brps bp99 bp999
    brps=$(median 1 <"$dir/$best.closed") bp99=$(median 3 <"$dir/$best.closed")
    for i in "${!names[@]}"; do
        rps=$(median 1 <"$dir/$i.closed") p50=$(median 2 <"$dir/$i.closed") p99=$(median 3 <"$dir/$i.closed")
        awk -v n="${names[$i]}" -v l="closed loop, wrk -c$CONNECTIONS" -v r="$rps" -v a="$p50" -v b="$p99" -v br="$brps" -v bb="$bp99" \
            'BEGIN { printf "| %s | %s | %.0f | %.2f | %.2f | - | %.2fx req/s, p99 %.2fx |\n", n, l, r, a, b, r / (br ? br : 1), b / (bb ? bb : 1) }'
    done
    for f in $FRACTIONS; do
        rate=$(awk "BEGIN{printf \"%d\", $f * $bestrps}")
        bp99=$(median 3 <"$dir/$best.open.$f") bp999=$(median 4 <"$dir/$best.open.$f")
        for i in "${!names[@]}"; do
            rps=$(median 1 <"$dir/$i.open.$f") p50=$(median 2 <"$dir/$i.open.$f")
            p99=$(median 3 <"$dir/$i.open.$f") p999=$(median 4 <"$dir/$i.open.$f") ok=$(median 5 <"$dir/$i.open.$f")
            awk -v n="${names[$i]}" -v l="open loop, $rate/s ($f of best)" -v r="$rps" -v a="$p50" -v b="$p99" -v c="$p999" \
                -v bb="$bp99" -v bc="$bp999" -v ok="$ok" \
                'BEGIN { printf "| %s | %s%s | %.0f | %.2f | %.2f | %.2f | p99 %.2fx, p99.9 %.2fx |\n", n, l, (ok < 1 ? sprintf(", %.1f%% ok", ok * 100) : ""), r, a, b, c, b / (bb ? bb : 1), c / (bc ? bc : 1) }'
        done
    done
}

cache_suite() {
    local o=$(port 0) ours=$(port 1) pc=$(port 2) va=$(port 3) st=$(port 4)
    names=() roles=() addrs=()
    side nginx -c "$(origin_conf "$o")"
    wait_port "$o"
    serve cache_proxy ours "$ours" "$CACHE_PROXY" --listen "127.0.0.1:$ours" --upstream "http://127.0.0.1:$o" --memory-mb 256
    serve "nginx proxy_cache" peer "$pc" nginx -c "$(proxy_cache_conf "$pc" "$o" 2)"
    serve varnish peer "$va" varnishd -F -a "127.0.0.1:$va" -f "$(varnish_vcl "$o")" -s malloc,256m -n "$work/varnish"
    serve "nginx static (floor)" floor "$st" nginx -c "$(static_conf "$st" 2)"
    for p in "$ours" "$pc" "$va" "$st"; do wait_port "$p"; done
    compare "cache, 1 KiB hits" /hit/1k
    compare "cache, 64 KiB hits" /hit/64k
    stop_all
}

balance_suite() {
    local t b1=$(port 10) b2=$(port 11) b3=$(port 12) p i=20 pick balance
    side "$FLEET_FIGURES" --role backends --listen "127.0.0.1:$b1,127.0.0.1:$b2,127.0.0.1:$b3"
    for p in "$b1" "$b2" "$b3"; do wait_port "$p"; done
    for t in $THREADS; do
        names=() roles=() addrs=()
        for pick in round-robin least-conn; do
            balance=$([ "$pick" = round-robin ] && echo roundrobin || echo leastconn)
            p=$(port $i) i=$((i + 1))
            serve "forwarder $pick" ours "$p" "$FLEET_FIGURES" --role forwarder --listen "127.0.0.1:$p" \
                --upstream "127.0.0.1:$b1,127.0.0.1:$b2,127.0.0.1:$b3" --pick "$pick" --threads "$t"
            p=$(port $i) i=$((i + 1))
            serve "balance_proxy $pick" ours "$p" "$BALANCE_PROXY" --listen "127.0.0.1:$p" \
                --upstream "127.0.0.1:$b1,127.0.0.1:$b2,127.0.0.1:$b3" --pick "$pick" --threads "$t"
            p=$(port $i) i=$((i + 1))
            serve "HAProxy $balance" peer "$p" haproxy -f "$(haproxy_conf "$p" "$balance" "$t" "$b1" "$b2" "$b3")"
        done
        for a in "${addrs[@]}"; do wait_port "${a##*:}"; done
        compare "balance, $t thread(s) each" /
        # Stop this thread count's proxies, keep the backends (the first pid started).
        for p in "${started[@]:1}"; do stop "$p"; done
    done
    stop_all
}

SECONDS=0
echo "open_loop.sh: ROUNDS=$ROUNDS WRK_DURATION=$WRK_DURATION DURATION=$DURATION CONNECTIONS=$CONNECTIONS FRACTIONS='$FRACTIONS' THREADS='$THREADS' on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
case "$PIN" in
    both) pins="0 1" ;;
    1) pins=1 ;;
    *) pins=0 ;;
esac
for pin in $pins; do
    pinning "$pin"
    for s in $SUITES; do "${s}_suite"; done
done
echo
echo "($SECONDS s; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end)"
