#!/usr/bin/env bash
# tower-cache's cache_proxy against nginx (proxy_cache) and Varnish (default VCL), all in
# front of the same loopback origin, driven by the same wrk load. Not run by CI.
#
#   bash peer-benches/proxies.sh            # installs nginx, varnish, wrk when missing
#
# Loads: 1 KiB hits, 64 KiB hits, and a 90/10 mix of 1 KiB hits and misses (new URLs).
# Prints requests/s and p99 per server and load, and cache_proxy's ratio to the best peer.
# Closed loop only; `open_loop.sh` adds open-loop latencies at fixed offered rates.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ORIGIN=127.0.0.1:18000
OURS=127.0.0.1:18080
NGINX=127.0.0.1:18081
VARNISH=127.0.0.1:18082
work=$(mktemp -d)
chmod 755 "$work"
pids=()
# Everything started is stopped by its pid (varnishd runs in the foreground, -F, so `$!`
# is its manager's pid; nginx daemonizes and writes its pid file).
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v varnishd >/dev/null || need+=(varnish)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release -q --manifest-path peer-benches/Cargo.toml --bin origin
cargo build --release -q -p examples --example cache_proxy
peer-benches/target/release/origin "$ORIGIN" & pids+=($!)
target/release/examples/cache_proxy --listen "$OURS" --upstream "http://$ORIGIN" --memory-mb 256 >/dev/null & pids+=($!)

mkdir -p "$work/nginx-cache"
cat > "$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    proxy_cache_path $work/nginx-cache levels=1:2 keys_zone=c:64m max_size=1g inactive=1h;
    upstream origin { server $ORIGIN; keepalive 64; }
    server {
        listen $NGINX;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache c;
            proxy_cache_lock on;
        }
    }
}
CONF
nginx -c "$work/nginx.conf"

cat > "$work/default.vcl" <<CONF
vcl 4.1;
backend default { .host = "${ORIGIN%:*}"; .port = "${ORIGIN#*:}"; }
CONF
chmod -R a+rwX "$work"
varnishd -F -a "$VARNISH" -f "$work/default.vcl" -s malloc,256m -n "$work/varnish" >/dev/null 2>&1 & pids+=($!)

cat > "$work/mix.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  if math.random(10) == 1 then
    return wrk.format("GET", "/miss/" .. n .. "-" .. math.random(1e9))
  end
  return wrk.format("GET", "/hit/1k")
end
LUA

for addr in "$OURS" "$NGINX" "$VARNISH"; do
    for _ in $(seq 50); do curl -s -o /dev/null "http://$addr/hit/1k" && break; sleep 0.1; done
    curl -s -o /dev/null "http://$addr/hit/64k"
done

run() { # name addr load -> "rps p99_ms"
    local out
    case "$3" in
        1k) out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://$2/hit/1k") ;;
        64k) out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://$2/hit/64k") ;;
        mix) out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/mix.lua" "http://$2") ;;
    esac
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
    echo "$rps $p99"
}

printf '%-6s %-12s %12s %10s\n' load server requests/s p99_ms
for load in 1k 64k mix; do
    declare -A rps=() p99=()
    for s in ours:$OURS nginx:$NGINX varnish:$VARNISH; do
        name=${s%%:*}; addr=${s#*:}
        read -r r p < <(run "$name" "$addr" "$load")
        rps[$name]=$r; p99[$name]=$p
        printf '%-6s %-12s %12.0f %10.2f\n' "$load" "$name" "$r" "$p"
    done
    best=nginx
    awk "BEGIN{exit !(${rps[varnish]} > ${rps[nginx]})}" && best=varnish
    awk "BEGIN{printf \"%-6s cache_proxy / best peer (%s): %.2fx requests/s (target >= 1.3x), p99 %.2fx (target <= 1x)\n\", \"$load\", \"$best\", ${rps[ours]}/${rps[$best]}, ${p99[ours]}/${p99[$best]}}"
done
