#!/usr/bin/env bash
# What one request costs each proxy: CPU time, instructions and system calls per request,
# ours beside the peers. Not run by CI.
#
#   bash peer-benches/per_request.sh                       # all, 20,000 requests each (~2 min)
#   REQUESTS=5000 CG_REQUESTS=5000 bash peer-benches/per_request.sh   # smoke, < 1 min
#   SUITES=balance bash peer-benches/per_request.sh        # one group: balance or cache
#
# Each server runs with one thread (tokio: one worker; nginx: one worker process;
# HAProxy: nbthread 1; Varnish: its defaults), alone, with a fixed number of requests
# from `oha -n N -c $CONNECTIONS` after a warm-up:
# - CPU: utime+stime from /proc/PID/stat of the server's process tree (threads included;
#   nginx's workers, varnishd's child) before and after REQUESTS requests;
# - system calls: `strace -c -f` attached to every thread of the tree for REQUESTS requests;
# - instructions: the server under `valgrind --tool=callgrind`, counters zeroed after the
#   warm-up (`callgrind_control -z`) and dumped after CG_REQUESTS requests
#   (`callgrind_control -d`); Ir / CG_REQUESTS. (`perf stat -e instructions` is not
#   available in this VM.) Varnish is left out (its worker is a forked, jailed child).
# For ours, it prints the 10 costliest functions (inclusive and self, instructions per
# request), and per request the allocations, memcpy calls, clock reads and wakeups, with
# who allocates and who copies. The profiles and their `callgrind_annotate` (inclusive,
# self, callers) stay in OUT (/tmp/per_request by default). Under callgrind a server runs
# ~50x slower, so more requests wait per wakeup: epoll calls and wakeups per request are
# lower there (and under strace) than at full speed.
#
# Groups: balance (the lean forwarder of fleet_figures section 4, balance_proxy and HAProxy,
# round robin, over three loopback backends: `GET /`, a 3-byte body) and cache
# (cache_proxy, nginx proxy_cache, Varnish and nginx serving the file from its own disk,
# the floor: 1 KiB hits, `GET /hit/1k`).
#
# Settings (environment): REQUESTS (20000), CG_REQUESTS (20000), CONNECTIONS (16),
# SUITES ("balance cache"), OUT (/tmp/per_request), BASE_PORT (19000), BUILD (1).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=${REQUESTS:-20000}
CG_REQUESTS=${CG_REQUESTS:-20000}
CONNECTIONS=${CONNECTIONS:-16}
SUITES=${SUITES:-balance cache}
OUT=${OUT:-/tmp/per_request}
mkdir -p "$OUT"

source peer-benches/lib.sh
need_tools nginx varnishd haproxy jq strace valgrind callgrind_control oha
build
make_files
hz=$(getconf CLK_TCK)

load() { # url n: n requests; fails when any did not succeed
    local ok
    ok=$(oha -n "$2" -c "$CONNECTIONS" --no-tui --output-format json "$1" 2>/dev/null | jq -r '.summary.successRate')
    awk "BEGIN{exit !($ok >= 1)}" || { echo "only $ok of the requests to $1 succeeded" >&2; return 1; }
}

rows=() hot=()

# The runtime's and the thread start's frames, which include everything below them.
frames='^(clone|start_thread|\(below main\))$|^0x[0-9a-f]+$|thread_start|__rust_begin_short_backtrace|FnOnce::call_once|tokio::runtime::(scheduler|task|context|blocking|park)|block_on|std::rt::|main$|__libc_start|_start$|BlockingTask'

top() { # annotation-file: the 10 costliest functions, instructions per request
    awk -v n="$CG_REQUESTS" -v frames="$frames" '
        /^ *[0-9,]+ \( *[0-9.]+%\)  / && $0 !~ /PROGRAM TOTALS/ {
            ir = $1; gsub(",", "", ir); f = $0
            sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, "", f); sub(/ \[[^]]*\]$/, "", f); sub(/^[^:]*:/, "", f)
            if (f ~ frames || seen[f]++) next
            printf "  %8.0f  %s\n", ir / n, substr(f, 1, 150)
            if (++k == 10) exit
        }' "$1"
}
# measure NAME URL COMMAND...: starts the server, measures CPU and system calls, stops it;
# then (unless NOCG=1) the same under callgrind.
measure() {
    local name=$1 url=$2 port pid t0 t1 sp tids cpu calls top ir=- file
    shift 2
    port=${url#http://127.0.0.1:}
    port=${port%%/*}
    "$@" >"$work/$name.log" 2>&1 &
    pid=$!
    started+=("$pid")
    wait_port "$port"
    load "$url" 2000
    t0=$(cpu_ticks "$pid")
    load "$url" "$REQUESTS"
    t1=$(cpu_ticks "$pid")
    cpu=$(echo "$t0 $t1" | awk -v hz="$hz" -v n="$REQUESTS" '{ k = 1e6 / hz / n; printf "%.1f (%.1f + %.1f)", ($3 + $4 - $1 - $2) * k, ($3 - $1) * k, ($4 - $2) * k }')

    tids=()
    for p in $(tree "$pid"); do for t in /proc/"$p"/task/*; do tids+=(-p "${t##*/}"); done; done
    strace -c -f -o "$OUT/$name.strace" "${tids[@]}" 2>/dev/null &
    sp=$!
    sleep 1
    load "$url" "$REQUESTS"
    kill -INT "$sp"
    wait "$sp" || true
    calls=$(awk '$NF == "total" { print $4 }' "$OUT/$name.strace")
    top=$(awk -v n="$REQUESTS" '$NF != "total" && $4 ~ /^[0-9]+$/ { printf "%s %.2f\n", $NF, $4 / n }' "$OUT/$name.strace" |
        sort -k2 -g -r | head -4 | awk '{ printf "%s%s %s", (NR > 1 ? ", " : ""), $1, $2 }')
    stop "$pid"

    if [ "${NOCG:-0}" != 1 ]; then
        file="$OUT/$name.callgrind"
        rm -f "$file"*
        valgrind --tool=callgrind --callgrind-out-file="$file" "$@" >"$work/$name.cg.log" 2>&1 &
        pid=$!
        started+=("$pid")
        wait_port "$port"
        load "$url" 500
        callgrind_control -z "$pid" >/dev/null 2>&1
        load "$url" "$CG_REQUESTS"
        callgrind_control -d "$pid" >/dev/null 2>&1
        stop "$pid"
        # The dump after the zeroing is the first numbered file.
        file=$(ls "$file".* 2>/dev/null | sort -t. -k2 -n | head -1)
        if [ -n "$file" ]; then
            ir=$(awk '/^(summary|totals):/ { print $2 }' "$file" | tail -1)
            ir=$(awk "BEGIN{printf \"%.0f\", $ir / $CG_REQUESTS}")
            callgrind_annotate --threshold=100 --inclusive=yes "$file" 2>/dev/null >"$OUT/$name.inclusive.txt"
            callgrind_annotate --threshold=100 "$file" 2>/dev/null >"$OUT/$name.self.txt"
            callgrind_annotate --threshold=100 --tree=caller "$file" 2>/dev/null >"$OUT/$name.callers.txt"
            [ "${OURS:-0}" = 1 ] && hot+=("$name")
        fi
    fi
    rows+=("| $name | $cpu | $ir | $(awk "BEGIN{printf \"%.1f\", ${calls:-0} / $REQUESTS}") | $top |")
}

balance_group() {
    local b1=$(port 10) b2=$(port 11) b3=$(port 12) p=$(port 20) ups
    ups="127.0.0.1:$b1,127.0.0.1:$b2,127.0.0.1:$b3"
    side() { "$@" >/dev/null 2>&1 & started+=($!); }
    side "$FLEET_FIGURES" --role backends --listen "$ups"
    for b in "$b1" "$b2" "$b3"; do wait_port "$b"; done
    OURS=1 measure "forwarder round-robin" "http://127.0.0.1:$p/" \
        "$FLEET_FIGURES" --role forwarder --listen "127.0.0.1:$p" --upstream "$ups" --pick round-robin --threads 1
    OURS=1 measure "balance_proxy round-robin" "http://127.0.0.1:$p/" \
        "$BALANCE_PROXY" --listen "127.0.0.1:$p" --upstream "$ups" --pick round-robin --threads 1
    measure "HAProxy roundrobin" "http://127.0.0.1:$p/" \
        haproxy -f "$(haproxy_conf "$p" roundrobin 1 "$b1" "$b2" "$b3")"
    stop_all
}

cache_group() {
    local o=$(port 0) p=$(port 1)
    "$(command -v nginx)" -c "$(origin_conf "$o")" >/dev/null 2>&1 &
    started+=($!)
    wait_port "$o"
    OURS=1 TOKIO_WORKER_THREADS=1 measure "cache_proxy 1 KiB hit" "http://127.0.0.1:$p/hit/1k" \
        "$CACHE_PROXY" --listen "127.0.0.1:$p" --upstream "http://127.0.0.1:$o" --memory-mb 256
    measure "nginx proxy_cache 1 KiB hit" "http://127.0.0.1:$p/hit/1k" \
        nginx -c "$(proxy_cache_conf "$p" "$o" 1 "master_process off;")"
    measure "nginx static 1 KiB (floor)" "http://127.0.0.1:$p/hit/1k" \
        nginx -c "$(static_conf "$p" 1 "master_process off;")"
    NOCG=1 measure "varnish 1 KiB hit" "http://127.0.0.1:$p/hit/1k" \
        varnishd -F -a "127.0.0.1:$p" -f "$(varnish_vcl "$o")" -s malloc,256m -n "$work/varnish"
    stop_all
}

for s in $SUITES; do "${s}_group"; done
echo
echo "per request, $REQUESTS requests (callgrind: $CG_REQUESTS) from oha -c $CONNECTIONS, one thread each, load average $(cut -d' ' -f1-3 /proc/loadavg):"
echo
echo "| server | CPU µs/request (user + system) | instructions/request (user space) | system calls/request | top system calls per request |"
echo "| --- | ---: | ---: | ---: | --- |"
printf '%s\n' "${rows[@]}"
# calls FILE: per function, calls per request (the sum of its callers' counts) from a
# `callgrind_annotate --tree=caller` file, those called at least once per 2 requests.
calls() {
    awk -v n="$CG_REQUESTS" '
        /^$/ { c = 0; next }
        / < / { if (match($0, /\(([0-9,]+)x\) \[/)) { s = substr($0, RSTART + 1, RLENGTH - 4); gsub(",", "", s); c += s }; next }
        / \*  / { f = $0; sub(/^.*\*  /, "", f); sub(/ \[[^]]*\]$/, "", f); sub(/^[^:]*:/, "", f); k[f] += c; c = 0 }
        END { for (f in k) if (k[f] / n >= 0.5) printf "%.2f %s\n", k[f] / n, f }' "$1" | sort -rn
}

# callers FILE FUNCTION: who calls it, calls per request.
callers() {
    awk -v n="$CG_REQUESTS" -v fn="$2" '
        /^$/ { blk = ""; next }
        { blk = blk "\n" $0 }
        / \*  / && index($0, fn " [") { print blk; exit }' "$1" |
        awk -v n="$CG_REQUESTS" '/ < / && match($0, /\(([0-9,]+)x\) \[/) {
            s = substr($0, RSTART + 1, RLENGTH - 4); gsub(",", "", s); f = $0
            sub(/^.*< /, "", f); sub(/ \([0-9,]+x\) \[[^]]*\]$/, "", f); sub(/^[^:]*:/, "", f)
            if (s / n >= 0.1) printf "      %5.2f  %s\n", s / n, substr(f, 1, 140) }' | sort -rn
}

for name in "${hot[@]}"; do
    f="$OUT/$name.callers.txt"
    echo
    echo "$name, instructions per request, inclusive (the runtime's frames left out):"
    top "$OUT/$name.inclusive.txt"
    echo "$name, instructions per request, self:"
    top "$OUT/$name.self.txt"
    calls "$f" >"$OUT/$name.calls.txt"
    count() { awk -v p="$1" '$2 ~ p { s += $1 } END { printf "%.1f", s }' "$OUT/$name.calls.txt"; }
    echo "$name, per request: $(count '^malloc$') allocations, $(count '^__memcpy_avx_unaligned_erms$') memcpy calls, $(count '^clock_gettime') clock reads, $(count 'ScheduledIo::wake$') I/O wakeups, $(count 'waker::wake_by_(val|ref)$') task wakes"
    echo "  who allocates (calls per request):"
    callers "$f" __rustc::__rust_alloc | head -12
    echo "  who copies (memcpy calls per request):"
    callers "$f" __memcpy_avx_unaligned_erms | head -8
done
echo
echo "callgrind profiles and annotations (inclusive, self, callers): $OUT"
