# Shared by open_loop.sh and per_request.sh: starting the servers under test, stopping
# them by pid, and small helpers. Sourced, not run.
#
# Every server listens on 127.0.0.1:$((BASE_PORT + n)); each is started in the foreground
# (no daemon), so the pid `$!` is the server's own and is the one stopped at the end.

BASE_PORT=${BASE_PORT:-19000}
ROOT=$(pwd)
FLEET_FIGURES=$ROOT/target/release/examples/fleet_figures
CACHE_PROXY=$ROOT/target/release/examples/cache_proxy
BALANCE_PROXY=$ROOT/target/release/examples/balance_proxy

work=$(mktemp -d)
chmod 755 "$work"
started=() # pids of everything this script started

stop_all() {
    local p
    for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${started[@]}"; do wait "$p" 2>/dev/null || true; done
    started=()
}
stop() { # pid: stops that one and forgets it
    local p rest=()
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    for p in "${started[@]}"; do [ "$p" = "$1" ] || rest+=("$p"); done
    started=("${rest[@]}")
}
cleanup() { stop_all; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port() { echo $((BASE_PORT + $1)); }

need_tools() { # tool... ; installs the Debian packages of those missing
    local need=() t
    for t in "$@"; do
        command -v "$t" >/dev/null && continue
        case "$t" in
            varnishd) need+=(varnish) ;;
            callgrind_annotate | callgrind_control) need+=(valgrind) ;;
            oha) echo "needs oha: cargo install --locked oha" >&2; exit 1 ;;
            *) need+=("$t") ;;
        esac
    done
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

build() {
    [ "${BUILD:-1}" = 1 ] || return 0
    cargo build --release -q -p examples --example fleet_figures --example cache_proxy --example balance_proxy
}

wait_port() { # port: until something accepts there (60 s: valgrind is slow to start)
    local i
    for i in $(seq 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# The pids whose CPU a server's figures include: the process and its descendants
# (nginx's workers, varnishd's child); threads are counted in their process's stat.
tree() {
    local p c
    for p in "$@"; do
        echo "$p"
        for c in $(ps -o pid= --ppid "$p"); do tree "$c"; done
    done
}

cpu_ticks() { # pid... -> "utime stime" of the process tree, in clock ticks
    local user=0 sys=0 p f
    for p in $(tree "$@"); do
        f=$(cat /proc/"$p"/stat 2>/dev/null) || continue
        f=${f##*) } # fields after the command name (which may hold spaces)
        set -- $f
        user=$((user + ${12})) sys=$((sys + ${13})) # utime, stime: fields 14 and 15 of stat
    done
    echo "$user $sys"
}

# The origin the caches stand in front of: nginx serving 1 KiB and 64 KiB files with
# `Cache-Control: max-age=3600` (`/hit/1k`, `/hit/64k`, and any `/miss/...` as 1 KiB).
# The same files, served by nginx straight from its own disk, are the floor peer.
make_files() {
    mkdir -p "$work/www/hit" "$work/www/miss"
    head -c 1024 /dev/zero | tr '\0' x >"$work/www/hit/1k"
    head -c 65536 /dev/zero | tr '\0' y >"$work/www/hit/64k"
    cp "$work/www/hit/1k" "$work/www/miss/1k"
}

# nginx NAME PORT WORKERS BODY: an nginx in the foreground with BODY as its server block.
nginx_conf() {
    local name=$1 port=$2 workers=$3 body=$4 extra=${5:-}
    mkdir -p "$work/$name"
    cat >"$work/$name/nginx.conf" <<CONF
worker_processes $workers;
daemon off;
$extra
pid $work/$name/nginx.pid;
error_log $work/$name/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    client_body_temp_path $work/$name/body;
    proxy_temp_path $work/$name/proxy;
    fastcgi_temp_path $work/$name/fastcgi;
    uwsgi_temp_path $work/$name/uwsgi;
    scgi_temp_path $work/$name/scgi;
    $body
}
CONF
    echo "$work/$name/nginx.conf"
}

origin_conf() { # port
    nginx_conf origin "$1" 1 "server {
        listen 127.0.0.1:$1;
        root $work/www;
        location /hit/ { add_header Cache-Control \"max-age=3600\"; }
        location /miss/ { add_header Cache-Control \"max-age=3600\"; try_files /miss/1k =404; }
    }"
}

static_conf() { # port workers [extra global lines]: the floor, nginx serving the files itself
    nginx_conf static "$1" "$2" "server {
        listen 127.0.0.1:$1;
        root $work/www;
        location /hit/ { add_header Cache-Control \"max-age=3600\"; }
    }" "${3:-}"
}

proxy_cache_conf() { # port origin-port workers [extra global lines]
    mkdir -p "$work/nginx-cache"
    nginx_conf proxy-cache "$1" "$3" "proxy_cache_path $work/nginx-cache levels=1:2 keys_zone=c:64m max_size=1g inactive=1h;
    upstream origin { server 127.0.0.1:$2; keepalive 64; }
    server {
        listen 127.0.0.1:$1;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache c;
            proxy_cache_lock on;
        }
    }" "${4:-}"
}

varnish_vcl() { # origin-port
    cat >"$work/default.vcl" <<CONF
vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "$1"; }
CONF
    chmod -R a+rwX "$work"
    echo "$work/default.vcl"
}

haproxy_conf() { # port balance threads backend-port...
    local port=$1 balance=$2 threads=$3 i=0 b
    shift 3
    {
        printf 'global\n    maxconn 4096\n    nbthread %s\n' "$threads"
        printf 'defaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n    option http-keep-alive\n'
        printf 'frontend f\n    bind 127.0.0.1:%s\n    default_backend b\n' "$port"
        printf 'backend b\n    balance %s\n    http-reuse always\n' "$balance"
        for b in "$@"; do printf '    server b%s 127.0.0.1:%s\n' "$i" "$b"; i=$((i + 1)); done
    } >"$work/haproxy-$port.cfg"
    echo "$work/haproxy-$port.cfg"
}
