# shellcheck shell=bash
# Sourced by the load scripts (load.sh, tls_load.sh, instructions.sh,
# instructions_h2.sh, anatomy.sh): log and die, installing missing tools, the list of
# started processes and its cleanup on exit, free loopback ports, CPU ticks
# from /proc, readiness polling, the demo-like routing table every one of
# them proxies through, and nginx's equivalent and its start. The caller sets BENCH (its name, for messages) and HDR (the
# version header wait_ready sends) before using them.

log() { printf '%s\n' "$*" >&2; }
die() { log "$BENCH: $*"; exit 1; }

# ensure_packages COMMAND=PACKAGE...: installs with apt-get (as root) the
# packages whose command is missing.
ensure_packages() {
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
    done
    ((${#missing[@]} == 0)) && return
    [[ $(id -u) == 0 ]] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout 600 apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
        timeout 600 apt-get update >/dev/null
        timeout 600 apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# Everything started is added to PIDS; the load client's PID, while it
# runs, is CLIENT_PID. bench_tmp NAME makes TMP and arms the cleanup,
# which stops them all (TERM, then KILL after 5 s) and removes TMP.
PIDS=()
CLIENT_PID=
cleanup() {
    local pid
    [[ -n $CLIENT_PID ]] && { kill -TERM "$CLIENT_PID" 2>/dev/null || true; }
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || break
        sleep 0.1
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
bench_tmp() {
    TMP=$(mktemp -d "/tmp/$1.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# Free loopback ports: bound together so they are distinct, then released.
free_ports() {
    local n=$1
    if command -v python3 >/dev/null; then
        python3 - "$n" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
        return
    fi
    local ports=() p
    while ((${#ports[@]} < n)); do
        p=$((20000 + RANDOM % 40000))
        [[ " ${ports[*]} " == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            ports+=("$p")
        fi
    done
    echo "${ports[*]}"
}

# wait_ready NAME URL PID [CURL ARGS...]: waits (bounded, 10 s) until the
# URL answers 200 with the v2 upstream's JSON.
wait_ready() {
    local name=$1 url=$2 pid=$3
    shift 3
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { log "$BENCH: $name exited at start"; return 1; }
        if curl -fsS -m 1 "$@" -H "$HDR" "$url" 2>/dev/null | grep -q '"served_by":"v2"'; then
            return
        fi
        sleep 0.1
    done
    log "$BENCH: $name not ready at $url after 10 s"
    return 1
}

# "utime stime" in clock ticks, summed over the given PIDs (all threads).
cpu_ticks() {
    local user=0 sys=0 pid rest f
    for pid in "$@"; do
        rest=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        rest=${rest##*) }
        read -r -a f <<<"$rest"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    echo "$user $sys"
}

# start_nginx CONFIG: nginx (as root: see nginx_conf) on the configuration
# given, written to $TMP/nginx/nginx.conf, logging to $TMP/nginx.log and
# $TMP/nginx/logs/error.log; its PID in NGX_PID (and PIDS).
start_nginx() {
    mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
    printf '%s\n' "$1" >"$TMP/nginx/nginx.conf"
    nginx -p "$TMP/nginx" -e "$TMP/nginx/logs/error.log" -c "$TMP/nginx/nginx.conf" \
        >"$TMP/nginx.log" 2>&1 &
    NGX_PID=$!
    PIDS+=("$NGX_PID")
}

# start_upstream PORT: the small upstream the proxies forward to (hyper, one
# worker thread, a ~200-byte JSON body, answering as v2) on 127.0.0.1:PORT,
# logging to $TMP/upstream.log; its PID in UP_PID (and PIDS). Needs $BIN.
start_upstream() {
    RUST_LOG=warn "$BIN" demo-upstream --listen "127.0.0.1:$1" --version v2 --threads 1 \
        >"$TMP/upstream.log" 2>&1 &
    UP_PID=$!
    PIDS+=("$UP_PID")
}

# gateway_server PORT ADMIN_PORT [TLS_PORT]: the [server] section of the
# benches' gateway config (grace 1 s); with TLS_PORT, a TLS listener too,
# serving $TMP/cert.pem and $TMP/key.pem for "localhost", never reloaded.
gateway_server() {
    cat <<TOML
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
grace_period_ms = 1000

TOML
    if [[ -n ${3:-} ]]; then
        cat <<TOML
[server.tls]
listen = "127.0.0.1:$3"
reload_poll_ms = 0

[[server.tls.certificates]]
cert = "$TMP/cert.pem"
key = "$TMP/key.pem"
server_names = ["localhost"]

TOML
    fi
}

# gateway_table UPSTREAM_PORT: the routing part of the gateway config, after
# [server]: header detection first, versions v1 and v2, one pool each on
# the one upstream, everything under /api/ (default v2).
gateway_table() {
    cat <<TOML
[detection]
order = ["header", "accept", "path", "query", "pin"]
header = "x-api-version"

[[versions]]
name = "v1"
status = "stable"

[[versions]]
name = "v2"
status = "current"

[[pools]]
name = "v1"
version = "v1"
endpoints = ["127.0.0.1:$1"]

[[pools]]
name = "v2"
version = "v2"
endpoints = ["127.0.0.1:$1"]

[[routes]]
name = "api"
path_prefix = "/api/"
default_version = "v2"
timeout_ms = 5000
TOML
}

# add_limits CONFIG: puts two rate-limit policies on the gateway_table route
# in CONFIG, one budget per client IP and one per route, each 1e9 requests a
# second, so every client stays under quota and what they cost is the
# checking (load.sh's LOAD_LIMITS, instructions.sh's INSN_LIMITS).
add_limits() {
    sed -i 's/^timeout_ms = 5000$/timeout_ms = 5000\nlimits = ["per-ip", "per-route"]/' "$1"
    cat >>"$1" <<EOF

[rate_limits]

[[rate_limits.policies]]
name = "per-ip"
key = "ip"
requests = 1000000000
window_secs = 1

[[rate_limits.policies]]
name = "per-route"
key = "route"
requests = 1000000000
window_secs = 1
EOF
    grep -q '^limits = ' "$1" || die "could not add limits to the route in $1"
}

# nginx_conf UPSTREAM_PORT SERVER_LINES [HTTP_LINES] [MORE_SERVERS]: nginx
# as the equivalent version-routing proxy, under $TMP/nginx (the caller
# makes its logs/ and tmp/): NGINX_WORKERS workers, access log off, a map on
# the version header choosing between two keep-alive upstream blocks (both
# on the one upstream), /api/ proxied like switchyard proxies it.
# SERVER_LINES (listen, TLS) open the proxy's server block; HTTP_LINES go in
# the http block and MORE_SERVERS after the server.
nginx_conf() {
    local user=
    # Started as root, nginx's workers would run as nobody and could not
    # write proxy_cache files under the 0700 temp dir: keep the invoker.
    [[ $(id -u) == 0 ]] && user="user root root;"
    cat <<NGINX
$user
daemon off;
worker_processes $NGINX_WORKERS;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events {
    worker_connections 4096;
}
http {
    access_log off;
    client_body_temp_path $TMP/nginx/tmp/body;
    proxy_temp_path $TMP/nginx/tmp/proxy;
    fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
    uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
    scgi_temp_path $TMP/nginx/tmp/scgi;
    # Keep client (HTTP/1.1 and HTTP/2) and upstream connections open like
    # hyper does (nginx closes them after 1000 requests by default).
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    ${3:-}

    upstream api_v1 {
        server 127.0.0.1:$1;
        keepalive 256;
        keepalive_requests 1000000;
    }
    upstream api_v2 {
        server 127.0.0.1:$1;
        keepalive 256;
        keepalive_requests 1000000;
    }
    map \$http_x_api_version \$api_pool {
        default api_v2;
        ~^v?1$  api_v1;
        ~^v?2$  api_v2;
    }
    server {
        $2
        location /api/ {
$(nginx_proxy_lines)
        }
    }
    ${4:-}
}
NGINX
}

# nginx_proxy_lines: the /api/ location's proxying, as nginx_conf and
# nginx_fields_server use it.
nginx_proxy_lines() {
    cat <<'NGINX'
            proxy_pass http://$api_pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
NGINX
}

# nginx_fields_server PORT: for nginx_conf's MORE_SERVERS, the same proxy on
# PORT sending the upstream the forwarding fields switchyard adds beyond
# nginx_conf's (issue #2's proxy hygiene): `X-Forwarded-Host`, `Via`, the
# client's `X-Request-ID` or nginx's `$request_id`, and a new W3C
# `traceparent` (its span id the request id's first half), so the upstream
# parses the same fields from either proxy.
nginx_fields_server() {
    cat <<NGINX
    map \$http_x_request_id \$api_request_id {
        default \$http_x_request_id;
        ""      \$request_id;
    }
    map \$request_id \$api_traceparent {
        "~^(?<span>[0-9a-f]{16})" "00-\$request_id-\$span-01";
    }
    server {
        listen 127.0.0.1:$1;
        location /api/ {
$(nginx_proxy_lines)
            proxy_set_header X-Forwarded-Host \$http_host;
            proxy_set_header Via "1.1 nginx";
            proxy_set_header X-Request-ID \$api_request_id;
            proxy_set_header traceparent \$api_traceparent;
        }
    }
NGINX
}

# An awk function, median(a, n): the median of a[1..n] (sorts a). Put in
# front of an awk program: awk "$AWK_MEDIAN"'...'.
# shellcheck disable=SC2016,SC2034
AWK_MEDIAN='
function median(a, n,    i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
'

# Latency in wrk's and h2load's units (us, ms, s) to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") m = 1; else if (u == "ms") m = 1000; else if (u == "s") m = 1000000; else m = -1
        printf "%.0f", (m < 0 ? -1 : n * m)
    }'
}

# Callgrind runs of the gateway (instructions.sh, instructions_h2.sh,
# anatomy.sh) set GLIBC_TUNABLES=$CALLGRIND_GLIBC: glibc copies and clears
# blocks past a size threshold (8 KiB and 2 KiB here) with `rep movsb` /
# `rep stosb`, which callgrind counts once per byte, so a request future
# that grows past it would look 8,000 instructions dearer while costing a
# few hundred cycles. The vector loops for every size keep counts
# comparable between builds.
# shellcheck disable=SC2034 # read by the scripts that source this file
CALLGRIND_GLIBC=glibc.cpu.x86_rep_movsb_threshold=16777216:glibc.cpu.x86_rep_stosb_threshold=16777216

# callgrind_sum FILE...: the instructions counted in callgrind output files
# (one per thread with --separate-threads: their sum).
callgrind_sum() {
    awk '/^totals:/ {t += $2} END {print t}' "$@"
}

# measure_twice N1 N2 [ARGS...]: the caller's `measure N [ARGS...]`, which
# prints one run's total, for N1 then N2 requests; sets T1 and T2 and PER,
# the instructions per request of the difference (start-up and shutdown
# cancel out).
measure_twice() {
    T1=$(measure "$1" "${@:3}")
    T2=$(measure "$2" "${@:3}")
    # shellcheck disable=SC2034 # read by the caller
    PER=$(((T2 - T1) / ($2 - $1)))
}

# HEAD's short commit, or "unknown" outside a git checkout.
short_commit() {
    git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown
}
