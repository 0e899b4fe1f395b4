#!/usr/bin/env bash
# Load comparison: the small upstream directly, nginx (Debian's 1.22) as the
# equivalent version-routing proxy, and switchyard, driven by wrk in
# interleaved rounds on loopback. Prints per run req/s, p50, p99 and the
# proxy's CPU microseconds per request (utime+stime from /proc over the run
# divided by the requests wrk completed), the switchyard/nginx ratios per
# round, and the median of those ratios. Results are also written to
# benches/results/ (gitignored).
#
#   benches/load.sh                       # 3 rounds x {32,256} conns x 10 s
#   LOAD_ROUNDS=5 LOAD_WORKERS=1 benches/load.sh
#
# Environment:
#   LOAD_WORKERS    switchyard worker threads (default 2; nginx runs 2 workers)
#   NGINX_WORKERS   nginx worker processes (default 2)
#   LOAD_ROUNDS     interleaved rounds (default 3, at least 3 for a median)
#   LOAD_CONNS      wrk connection counts (default "32 256")
#   LOAD_DURATION   seconds per measured run (default 10)
#   LOAD_WARMUP     seconds of unmeasured load before each run (default 2)
#   LOAD_THREADS    wrk threads (default 2)
#   LOAD_NO_BUILD   set to 1 to skip `cargo build --release`
#   LOAD_LIMITS     set to 1 to also run a second switchyard (target
#                   switchyard_limits) on the same table plus two rate-limit
#                   policies (per client IP and per route) that every client
#                   stays under, and print its throughput against switchyard's
#                   (issue 5 target: at least 0.95)
#   LOAD_CACHE      set to 1 to also run switchyard with a response cache on
#                   the route (target switchyard_cache) and nginx with
#                   proxy_cache (target nginx_cache); every request is a hit
#                   after the first. Prints cached/uncached switchyard
#                   (issue 6 target: at least 3) and switchyard_cache/nginx_cache
#                   (target: at least 1.0)
#   LOAD_ACCESS_LOG set to 1 to also run switchyard with the access log on
#                   (target switchyard_log: RUST_LOG=info, --log-format json,
#                   stderr to a file) and print its throughput against
#                   switchyard's, whose log is off (issue 6 target: at least 0.95)
#   LOAD_BALANCE    set to 1 to also run switchyard with connection balancing
#                   off (target switchyard_unbalanced: balance_connections =
#                   false, so the kernel's SO_REUSEPORT hash alone places
#                   connections on workers) and print switchyard (balanced,
#                   the default) against it
#   LOAD_LEAN       set to 1 to also run switchyard with the lean HTTP/1.1
#                   path off (target switchyard_hyper: lean_http1 = false, so
#                   hyper serves every request) and print switchyard (lean,
#                   the default) against it
#   LOAD_PGO        set to 1 to run the switchyard targets on the
#                   profile-guided build, target/pgo/switchyard, made by
#                   benches/pgo.sh (about 10 minutes; skipped with
#                   LOAD_NO_BUILD=1 when the binary exists); default 0: the
#                   plain `cargo build --release` binary, what the container
#                   image ships. The upstream is always the plain binary.
#   LOAD_PLAIN      set to 1 (with LOAD_PGO=1) to also run the plain release
#                   binary (target switchyard_plain) on the same table and
#                   print switchyard (PGO) against it
#   LOAD_BASE_BIN   path of another switchyard binary (say another commit's
#                   release build, copied out of target/) to also run on the
#                   same table (target switchyard_base) and print switchyard
#                   against it: an A/B between two builds within one run,
#                   where comparing separate runs' ratios to nginx would mix
#                   in the machine's drift
#   LOAD_NGINX_AFFINITY  set to 1 to run nginx with `worker_cpu_affinity
#                   auto` (one worker per CPU), as switchyard's default
#                   `worker_cpu_affinity = "auto"` pins its workers on a
#                   machine whose CPUs are all its own; default 0: nginx's
#                   own default, unpinned
#   LOAD_AFFINITY   set to 1 to also run switchyard with its workers left
#                   to the scheduler (target switchyard_unpinned:
#                   worker_cpu_affinity = "off") and print switchyard
#                   (pinned, the default here) against it
#   LOAD_NGINX_FIELDS  set to 1 to also run nginx's proxy sending the
#                   upstream the forwarding fields switchyard sends
#                   (target nginx_fields: X-Forwarded-Host, Via, X-Request-ID
#                   and traceparent beyond the Host, X-Forwarded-For and
#                   X-Forwarded-Proto of target nginx; see
#                   nginx_fields_server in common.sh) and print switchyard
#                   against it too
#   LOAD_COMMIT     commit to print when the tree is not a git checkout
#
# Needs nginx and wrk (installed with apt-get when missing; that needs root).
# Everything listens on 127.0.0.1 ports picked free at start; nginx runs with
# its own prefix, pid and log files in a temp dir and never touches a system
# nginx. Everything started here is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKERS=${LOAD_WORKERS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-2}
ROUNDS=${LOAD_ROUNDS:-3}
CONNS=${LOAD_CONNS:-32 256}
DURATION=${LOAD_DURATION:-10}
WARMUP=${LOAD_WARMUP:-2}
THREADS=${LOAD_THREADS:-2}
HDR='x-api-version: 2'
URL_PATH=/api/orders
TARGETS=(direct nginx switchyard)
LIMITS=${LOAD_LIMITS:-0}
[[ $LIMITS == 1 ]] && TARGETS+=(switchyard_limits)
CACHE=${LOAD_CACHE:-0}
[[ $CACHE == 1 ]] && TARGETS+=(switchyard_cache nginx_cache)
ACCESS_LOG=${LOAD_ACCESS_LOG:-0}
[[ $ACCESS_LOG == 1 ]] && TARGETS+=(switchyard_log)
BALANCE=${LOAD_BALANCE:-0}
[[ $BALANCE == 1 ]] && TARGETS+=(switchyard_unbalanced)
LEAN=${LOAD_LEAN:-0}
[[ $LEAN == 1 ]] && TARGETS+=(switchyard_hyper)
PGO=${LOAD_PGO:-0}
PLAIN=${LOAD_PLAIN:-0}
[[ $PGO == 1 ]] || PLAIN=0
[[ $PLAIN == 1 ]] && TARGETS+=(switchyard_plain)
BASE_BIN=${LOAD_BASE_BIN:-}
[[ -n $BASE_BIN ]] && TARGETS+=(switchyard_base)
NGINX_AFFINITY=${LOAD_NGINX_AFFINITY:-0}
AFFINITY=${LOAD_AFFINITY:-0}
[[ $AFFINITY == 1 ]] && TARGETS+=(switchyard_unpinned)
NGINX_FIELDS=${LOAD_NGINX_FIELDS:-0}
[[ $NGINX_FIELDS == 1 ]] && TARGETS+=(nginx_fields)

BENCH=load.sh
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_tmp switchyard-load

# ---------------------------------------------------------------- setup
ensure_packages nginx=nginx wrk=wrk curl=curl
cd "$ROOT"
if [[ ${LOAD_NO_BUILD:-0} != 1 ]]; then
    log "building (cargo build --release)"
    timeout 1800 cargo build --release --quiet
fi
BIN=$ROOT/target/release/switchyard
[[ -x $BIN ]] || die "$BIN missing"
# The gateway's binary (the upstream runs $BIN).
GW_BIN=$BIN
if [[ $PGO == 1 ]]; then
    GW_BIN=$ROOT/target/pgo/switchyard
    if [[ ${LOAD_NO_BUILD:-0} != 1 || ! -x $GW_BIN ]]; then
        log "building the profile-guided binary (benches/pgo.sh)"
        bash "$ROOT/benches/pgo.sh" >&2
    fi
    [[ -x $GW_BIN ]] || die "$GW_BIN missing"
fi
ulimit -n 65536 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)

read -r UP_PORT GW_PORT ADMIN_PORT NGX_PORT LIM_PORT LIM_ADMIN_PORT \
    CACHE_PORT CACHE_ADMIN_PORT NGX_CACHE_PORT LOG_PORT LOG_ADMIN_PORT \
    UNB_PORT UNB_ADMIN_PORT HYP_PORT HYP_ADMIN_PORT PLN_PORT PLN_ADMIN_PORT UNP_PORT UNP_ADMIN_PORT NGX_FIELDS_PORT \
    BASE_PORT BASE_ADMIN_PORT <<<"$(free_ports 22)"

# The small upstream; both versions' pools point at it, and the header
# routes every request to v2.
start_upstream "$UP_PORT"

{
    cat <<EOF
# Demo-like: two versions, one pool each, header detection first, /api/.
[server]
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$ADMIN_PORT"
grace_period_ms = 1000

EOF
    gateway_table "$UP_PORT"
} >"$TMP/gateway.toml"

# variant NAME PORT ADMIN_PORT: the gateway's config on other ports, as
# $TMP/gateway-NAME.toml, for the variants below to extend.
variant() {
    sed -e "s/\"127.0.0.1:$GW_PORT\"/\"127.0.0.1:$2\"/" \
        -e "s/\"127.0.0.1:$ADMIN_PORT\"/\"127.0.0.1:$3\"/" \
        "$TMP/gateway.toml" >"$TMP/gateway-$1.toml"
}

# start_gateway CONFIG LOG RUST_LOG [GLOBAL ARGS...]: switchyard on CONFIG,
# stdout and stderr to LOG; its PID in STARTED (and PIDS).
start_gateway() {
    local config=$1 out=$2 level=$3
    shift 3
    RUST_LOG=$level "${GATEWAY_BIN:-$GW_BIN}" "$@" run --config "$config" --workers "$WORKERS" >"$out" 2>&1 &
    STARTED=$!
    PIDS+=("$STARTED")
}

start_gateway "$TMP/gateway.toml" "$TMP/switchyard.log" warn
GW_PID=$STARTED

# The same gateway with rate limits on: one budget per client IP (wrk's
# connections all come from 127.0.0.1, so this is one hot key) and one per
# route, both far above what wrk can send, so every request is allowed and
# the difference is the cost of checking.
LIM_PID=
if [[ $LIMITS == 1 ]]; then
    variant limits "$LIM_PORT" "$LIM_ADMIN_PORT"
    add_limits "$TMP/gateway-limits.toml"
    start_gateway "$TMP/gateway-limits.toml" "$TMP/switchyard-limits.log" warn
    LIM_PID=$STARTED
fi

# The same gateway with a response cache on the route (every wrk request
# asks for the same URL, so all but the first are hits).
CACHE_PID=
if [[ $CACHE == 1 ]]; then
    variant cache "$CACHE_PORT" "$CACHE_ADMIN_PORT"
    # The route is the file's last table, so its cache table can follow.
    printf '\n[routes.cache]\nttl_ms = 600000\n' >>"$TMP/gateway-cache.toml"
    start_gateway "$TMP/gateway-cache.toml" "$TMP/switchyard-cache.log" warn
    CACHE_PID=$STARTED
fi

# The same gateway with the access log on: one JSON line per request to a
# file (the log is stderr), as an operator would run it.
LOG_PID=
if [[ $ACCESS_LOG == 1 ]]; then
    variant log "$LOG_PORT" "$LOG_ADMIN_PORT"
    start_gateway "$TMP/gateway-log.toml" "$TMP/switchyard-log.out" info --log-format json
    LOG_PID=$STARTED
fi

# server_variant NAME PORT ADMIN_PORT LINE: the gateway with one more
# [server] setting, log level warn; its PID in STARTED.
server_variant() {
    variant "$1" "$2" "$3"
    sed -i "/^grace_period_ms/a $4" "$TMP/gateway-$1.toml"
    start_gateway "$TMP/gateway-$1.toml" "$TMP/switchyard-$1.log" warn
}

# The same gateway with connection balancing off: each worker serves the
# connections the kernel's SO_REUSEPORT hash gives its socket.
UNB_PID=
if [[ $BALANCE == 1 ]]; then
    server_variant unbalanced "$UNB_PORT" "$UNB_ADMIN_PORT" 'balance_connections = false'
    UNB_PID=$STARTED
fi

# The same gateway with hyper serving every request (no lean HTTP/1.1 path).
HYP_PID=
if [[ $LEAN == 1 ]]; then
    server_variant hyper "$HYP_PORT" "$HYP_ADMIN_PORT" 'lean_http1 = false'
    HYP_PID=$STARTED
fi

# The plain release binary on the same table (no profile-guided layout).
PLN_PID=
if [[ $PLAIN == 1 ]]; then
    variant plain "$PLN_PORT" "$PLN_ADMIN_PORT"
    GATEWAY_BIN=$BIN start_gateway "$TMP/gateway-plain.toml" "$TMP/switchyard-plain.log" warn
    PLN_PID=$STARTED
fi

# Another build of the gateway (LOAD_BASE_BIN) on the same table.
BASE_PID=
if [[ -n $BASE_BIN ]]; then
    [[ -x $BASE_BIN ]] || die "LOAD_BASE_BIN=$BASE_BIN is not an executable"
    variant base "$BASE_PORT" "$BASE_ADMIN_PORT"
    GATEWAY_BIN=$BASE_BIN start_gateway "$TMP/gateway-base.toml" "$TMP/switchyard-base.log" warn
    BASE_PID=$STARTED
fi

# The same gateway with its workers never pinned to CPUs.
UNP_PID=
if [[ $AFFINITY == 1 ]]; then
    server_variant unpinned "$UNP_PORT" "$UNP_ADMIN_PORT" 'worker_cpu_affinity = "off"'
    UNP_PID=$STARTED
fi

# nginx sending the upstream the same forwarding fields as switchyard.
NGX_FIELDS_SERVER=
[[ $NGINX_FIELDS == 1 ]] && NGX_FIELDS_SERVER=$(nginx_fields_server "$NGX_FIELDS_PORT")

# nginx's equivalent of the cached route: proxy_cache keyed like
# switchyard's (method, host, URI, version header), a lock for concurrent
# misses, entries valid for 10 minutes.
NGX_CACHE_HTTP=
NGX_CACHE_SERVER=
if [[ $CACHE == 1 ]]; then
    mkdir -p "$TMP/nginx/cache"
    NGX_CACHE_HTTP="proxy_cache_path $TMP/nginx/cache levels=1:2 keys_zone=api:10m max_size=64m inactive=10m use_temp_path=off;"
    NGX_CACHE_SERVER="server {
        listen 127.0.0.1:$NGX_CACHE_PORT;
        location /api/ {
            proxy_cache api;
            proxy_cache_key \"\$request_method\$host\$request_uri\$http_x_api_version\";
            proxy_cache_valid 200 10m;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
            proxy_pass http://\$api_pool;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host \$http_host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }"
fi

# nginx: the same routing as a map on the version header between two
# upstream blocks with keep-alive; access log off (switchyard logs nothing
# per request at the default level either).
start_nginx "$(
    [[ $NGINX_AFFINITY == 1 ]] && echo "worker_cpu_affinity auto;"
    nginx_conf "$UP_PORT" "listen 127.0.0.1:$NGX_PORT;" "$NGX_CACHE_HTTP" "$NGX_CACHE_SERVER$NGX_FIELDS_SERVER"
)"

show_logs() {
    local f
    for f in "$TMP/upstream.log" "$TMP/switchyard.log" "$TMP/switchyard-limits.log" \
        "$TMP/switchyard-cache.log" "$TMP/switchyard-log.out" "$TMP/switchyard-unbalanced.log" "$TMP/switchyard-hyper.log" "$TMP/switchyard-plain.log" "$TMP/switchyard-base.log" "$TMP/switchyard-unpinned.log" "$TMP/nginx.log" "$TMP/nginx/logs/error.log"; do
        [[ -s $f ]] && { log "--- $f"; tail -20 "$f" >&2; }
    done
    return 0
}

declare -A URL=(
    [direct]="http://127.0.0.1:$UP_PORT$URL_PATH"
    [nginx]="http://127.0.0.1:$NGX_PORT$URL_PATH"
    [switchyard]="http://127.0.0.1:$GW_PORT$URL_PATH"
    [switchyard_limits]="http://127.0.0.1:$LIM_PORT$URL_PATH"
    [switchyard_cache]="http://127.0.0.1:$CACHE_PORT$URL_PATH"
    [nginx_cache]="http://127.0.0.1:$NGX_CACHE_PORT$URL_PATH"
    [switchyard_log]="http://127.0.0.1:$LOG_PORT$URL_PATH"
    [switchyard_unbalanced]="http://127.0.0.1:$UNB_PORT$URL_PATH"
    [switchyard_hyper]="http://127.0.0.1:$HYP_PORT$URL_PATH"
    [switchyard_plain]="http://127.0.0.1:$PLN_PORT$URL_PATH"
    [switchyard_base]="http://127.0.0.1:$BASE_PORT$URL_PATH"
    [switchyard_unpinned]="http://127.0.0.1:$UNP_PORT$URL_PATH"
    [nginx_fields]="http://127.0.0.1:$NGX_FIELDS_PORT$URL_PATH"
)
# The process(es) whose CPU counts for a target: the proxy; for the direct
# runs the upstream itself (there is no proxy).
cpu_pids() {
    case $1 in
        direct) echo "$UP_PID" ;;
        switchyard) echo "$GW_PID" ;;
        switchyard_limits) echo "$LIM_PID" ;;
        switchyard_cache) echo "$CACHE_PID" ;;
        switchyard_log) echo "$LOG_PID" ;;
        switchyard_unbalanced) echo "$UNB_PID" ;;
        switchyard_hyper) echo "$HYP_PID" ;;
        switchyard_plain) echo "$PLN_PID" ;;
        switchyard_base) echo "$BASE_PID" ;;
        switchyard_unpinned) echo "$UNP_PID" ;;
        nginx | nginx_cache | nginx_fields) echo "$NGX_PID $(pgrep -P "$NGX_PID" | tr '\n' ' ')" ;;
    esac
}

# Every target answers before the runs (a target's first PID is its
# server: the upstream for direct, nginx's master for nginx's).
for target in "${TARGETS[@]}"; do
    read -r pid _ <<<"$(cpu_pids "$target")"
    wait_ready "$target" "${URL[$target]}" "$pid" || { show_logs; exit 1; }
done

# thread_cpus PID...: the CPU list each worker (switchyard's proxy worker
# threads; each nginx worker process) may run on, "[0] [1]" or "[0-1] ...".
thread_cpus() {
    local pid t name out=()
    for pid in "$@"; do
        for t in /proc/"$pid"/task/*; do
            name=$(cat "$t/comm" 2>/dev/null) || continue
            [[ $name == switchyard* || $name == nginx ]] || continue
            out+=("[$(awk '/^Cpus_allowed_list:/ {print $2}' "$t/status")]")
        done
    done
    echo "${out[*]}"
}

mkdir -p "$ROOT/benches/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/benches/results/load-$STAMP.txt
RUNS=$TMP/runs.tsv
: >"$RUNS"

{
    echo "switchyard load comparison, $(date -u '+%Y-%m-%d %H:%M UTC')"
    if commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
        git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || commit+=" + uncommitted changes in src/ or Cargo.*"
    fi
    echo "commit ${commit:-${LOAD_COMMIT:-unknown}}"
    echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$(nginx -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
    echo "wrk -t$THREADS -c{$CONNS} -d${DURATION}s --latency -H '$HDR' (after ${WARMUP}s warm-up each); switchyard workers=$WORKERS, nginx workers=$NGINX_WORKERS, upstream 1 thread"
    if [[ $PGO == 1 ]]; then
        echo "switchyard binary: profile-guided (benches/pgo.sh, target/pgo/switchyard)$([[ $PLAIN == 1 ]] && echo "; switchyard_plain: the plain release build")"
    else
        echo "switchyard binary: plain release build (LOAD_PGO=0)"
    fi
    [[ -z $BASE_BIN ]] || echo "switchyard_base binary: $BASE_BIN ($("$BASE_BIN" --version 2>/dev/null || echo 'no --version'))"
    echo "CPUs each worker may run on: switchyard $(thread_cpus "$GW_PID"); nginx $(thread_cpus $(pgrep -P "$NGX_PID" | tr '\n' ' '))"
    echo "cpu/req: proxy utime+stime (nginx: master+workers) per completed request; for direct, the upstream's"
    echo
    printf '%-5s %-5s %-10s %10s %9s %9s %9s %9s %8s\n' round conns target req/s p50_us p99_us cpu_us/req usr/sys errors
} | tee "$OUT"

# ---------------------------------------------------------------- runs
# wrk in the background and `wait`, so a signal stops the script at once.
wrk_bg() {
    local secs=$1
    shift
    timeout $((secs + 30)) wrk "$@" >"$TMP/wrk.out" &
    CLIENT_PID=$!
    wait "$CLIENT_PID"
    CLIENT_PID=
}

run_one() {
    local round=$1 conns=$2 target=$3 url=${URL[$3]}
    if ((WARMUP > 0)); then
        wrk_bg "$WARMUP" -t"$THREADS" -c"$conns" -d"${WARMUP}s" -H "$HDR" "$url"
    fi
    local pids before after out
    pids=$(cpu_pids "$target")
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids)
    wrk_bg "$DURATION" -t"$THREADS" -c"$conns" -d"${DURATION}s" --latency -H "$HDR" "$url"
    out=$(<"$TMP/wrk.out")
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids)
    local reqs rps p50 p99 errs
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
    local cpu usr sys
    read -r cpu usr sys < <(awk -v b="$before" -v a="$after" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {
        split(b, x, " "); split(a, y, " "); k = (n > 0 ? 1e6 / hz / n : 0)
        u = (y[1] - x[1]) * k; s = (y[2] - x[2]) * k
        printf "%.1f %.1f %.1f\n", u + s, u, s
    }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$conns" "$target" "$rps" "$p50" "$p99" "$cpu" "$errs" >>"$RUNS"
    printf '%-5s %-5s %-10s %10s %9s %9s %9s %9s %8s\n' "$round" "$conns" "$target" "$rps" "$p50" "$p99" "$cpu" "$usr/$sys" "$errs" | tee -a "$OUT"
}

for round in $(seq "$ROUNDS"); do
    for conns in $CONNS; do
        for target in "${TARGETS[@]}"; do
            # shellcheck disable=SC2086
            kill -0 "$GW_PID" "$NGX_PID" "$UP_PID" $LIM_PID $CACHE_PID $LOG_PID $UNB_PID $HYP_PID $PLN_PID $BASE_PID $UNP_PID 2>/dev/null || { show_logs; die "a server died"; }
            run_one "$round" "$conns" "$target"
        done
        awk -F'\t' -v r="$round" -v c="$conns" '
            # One line comparing two targets of this round, when both ran.
            function pair(label, a, b) {
                if ((a in rps) && (b in rps))
                    printf "      round %s, %s conns: %s: throughput %.3f, p99 %.2f, cpu/req %.2f\n",
                        r, c, label, rps[a] / rps[b], p99[a] / p99[b], cpu[a] / cpu[b]
            }
            $1 == r && $2 == c { rps[$3] = $4; p99[$3] = $6; cpu[$3] = $7 }
            END {
                printf "      round %s, %s conns: switchyard/nginx throughput %.2f, p99 %.2f, cpu/req %.2f; nginx/direct throughput %.2f\n",
                    r, c, rps["switchyard"] / rps["nginx"], p99["switchyard"] / p99["nginx"],
                    cpu["switchyard"] / cpu["nginx"], rps["nginx"] / rps["direct"]
                pair("switchyard with limits / without", "switchyard_limits", "switchyard")
                if (("switchyard_cache") in rps)
                    printf "      round %s, %s conns: cache hits: switchyard cached/uncached throughput %.2f, switchyard_cache/nginx_cache throughput %.2f, cpu/req %.2f\n",
                        r, c, rps["switchyard_cache"] / rps["switchyard"], rps["switchyard_cache"] / rps["nginx_cache"],
                        cpu["switchyard_cache"] / cpu["nginx_cache"]
                pair("access log on / off", "switchyard_log", "switchyard")
                pair("balancing on / off", "switchyard", "switchyard_unbalanced")
                pair("workers pinned / unpinned", "switchyard", "switchyard_unpinned")
                pair("switchyard / nginx_fields", "switchyard", "nginx_fields")
                pair("PGO / plain release build", "switchyard", "switchyard_plain")
                pair("switchyard / switchyard_base (LOAD_BASE_BIN)", "switchyard", "switchyard_base")
                pair("lean HTTP/1.1 path on / off", "switchyard", "switchyard_hyper")
            }' "$RUNS" | tee -a "$OUT"
    done
done

# pair_medians TITLE A B [NOTE]: per connection count, the medians over
# the rounds of A/B's throughput, p99 and CPU per request.
pair_medians() {
    echo
    echo "$1 ($2/$3, median over $ROUNDS rounds${4:-}):"
    local conns
    for conns in $CONNS; do
        awk -F'\t' -v c="$conns" -v a="$2" -v b="$3" "$AWK_MEDIAN"'
            $2 == c { rps[$1, $3] = $4; p99[$1, $3] = $6; cpu[$1, $3] = $7; if ($1 > rounds) rounds = $1 }
            END {
                for (r = 1; r <= rounds; r++) {
                    t[r] = rps[r, a] / rps[r, b]; p[r] = p99[r, a] / p99[r, b]; u[r] = cpu[r, a] / cpu[r, b]
                }
                printf "  %3s conns: throughput %.3f  p99 %.2f  cpu/req %.2f\n", c, median(t, rounds), median(p, rounds), median(u, rounds)
            }' "$RUNS"
    done
}

# ---------------------------------------------------------------- summary
{
    echo
    echo "median over $ROUNDS rounds of the per-round ratios (switchyard/nginx; throughput >= 1, p99 and cpu <= 1 meet the target):"
    for conns in $CONNS; do
        awk -F'\t' -v c="$conns" "$AWK_MEDIAN"'
            $2 == c { rps[$1, $3] = $4; p50[$1, $3] = $5; p99[$1, $3] = $6; cpu[$1, $3] = $7; if ($1 > rounds) rounds = $1 }
            END {
                for (r = 1; r <= rounds; r++) {
                    t[r] = rps[r, "switchyard"] / rps[r, "nginx"]; p[r] = p99[r, "switchyard"] / p99[r, "nginx"]
                    u[r] = cpu[r, "switchyard"] / cpu[r, "nginx"]; d[r] = rps[r, "nginx"] / rps[r, "direct"]
                    ds[r] = rps[r, "switchyard"] / rps[r, "direct"]
                    sc[r] = cpu[r, "switchyard"]; nc[r] = cpu[r, "nginx"]; sr[r] = rps[r, "switchyard"]; nr[r] = rps[r, "nginx"]; dr[r] = rps[r, "direct"]
                    sp[r] = p99[r, "switchyard"]; np[r] = p99[r, "nginx"]; dp[r] = p99[r, "direct"]
                }
                printf "  %3s conns: throughput %.2f  p99 %.2f  cpu/req %.2f   (nginx/direct %.2f, switchyard/direct %.2f)\n",
                    c, median(t, rounds), median(p, rounds), median(u, rounds), median(d, rounds), median(ds, rounds)
                printf "             medians: req/s direct %.0f nginx %.0f switchyard %.0f; p99 us direct %.0f nginx %.0f switchyard %.0f; cpu us/req nginx %.1f switchyard %.1f\n",
                    median(dr, rounds), median(nr, rounds), median(sr, rounds), median(dp, rounds), median(np, rounds), median(sp, rounds),
                    median(nc, rounds), median(sc, rounds)
            }' "$RUNS"
    done
    if [[ $LIMITS == 1 ]]; then
        echo
        echo "rate limits on vs off (switchyard_limits/switchyard, median over $ROUNDS rounds; target throughput >= 0.95):"
        for conns in $CONNS; do
            awk -F'\t' -v c="$conns" "$AWK_MEDIAN"'
                $2 == c { rps[$1, $3] = $4; p99[$1, $3] = $6; cpu[$1, $3] = $7; if ($1 > rounds) rounds = $1 }
                END {
                    for (r = 1; r <= rounds; r++) {
                        t[r] = rps[r, "switchyard_limits"] / rps[r, "switchyard"]; p[r] = p99[r, "switchyard_limits"] / p99[r, "switchyard"]
                        u[r] = cpu[r, "switchyard_limits"] / cpu[r, "switchyard"]; lr[r] = rps[r, "switchyard_limits"]; sr[r] = rps[r, "switchyard"]
                    }
                    printf "  %3s conns: throughput %.3f  p99 %.2f  cpu/req %.2f   (req/s with limits %.0f, without %.0f)\n",
                        c, median(t, rounds), median(p, rounds), median(u, rounds), median(lr, rounds), median(sr, rounds)
                }' "$RUNS"
        done
    fi
    if [[ $CACHE == 1 ]]; then
        echo
        echo "cache hits (median over $ROUNDS rounds; targets: cached/uncached >= 3, switchyard_cache/nginx_cache >= 1.0):"
        for conns in $CONNS; do
            awk -F'\t' -v c="$conns" "$AWK_MEDIAN"'
                $2 == c { rps[$1, $3] = $4; cpu[$1, $3] = $7; if ($1 > rounds) rounds = $1 }
                END {
                    for (r = 1; r <= rounds; r++) {
                        h[r] = rps[r, "switchyard_cache"] / rps[r, "switchyard"]; n[r] = rps[r, "switchyard_cache"] / rps[r, "nginx_cache"]
                        u[r] = cpu[r, "switchyard_cache"] / cpu[r, "nginx_cache"]
                        cr[r] = rps[r, "switchyard_cache"]; nr[r] = rps[r, "nginx_cache"]
                    }
                    printf "  %3s conns: cached/uncached %.2f  switchyard_cache/nginx_cache %.2f  cpu/req %.2f   (req/s switchyard_cache %.0f, nginx_cache %.0f)\n",
                        c, median(h, rounds), median(n, rounds), median(u, rounds), median(cr, rounds), median(nr, rounds)
                }' "$RUNS"
        done
    fi
    if [[ $ACCESS_LOG == 1 ]]; then
        pair_medians "access log on vs off" switchyard_log switchyard "; target throughput >= 0.95"
    fi
    if [[ $BALANCE == 1 ]]; then
        pair_medians "connection balancing on vs off" switchyard switchyard_unbalanced
    fi
    if [[ $AFFINITY == 1 ]]; then
        pair_medians "workers pinned to CPUs vs not" switchyard switchyard_unpinned
    fi
    if [[ $NGINX_FIELDS == 1 ]]; then
        pair_medians "switchyard vs nginx sending the same forwarding fields" switchyard nginx_fields
    fi
    if [[ $PLAIN == 1 ]]; then
        pair_medians "profile-guided vs plain release build" switchyard switchyard_plain
    fi
    if [[ -n $BASE_BIN ]]; then
        pair_medians "this build vs LOAD_BASE_BIN" switchyard switchyard_base
    fi
    if [[ $LEAN == 1 ]]; then
        pair_medians "lean HTTP/1.1 path on vs off" switchyard switchyard_hyper
    fi
    echo
    echo "results: ${OUT#"$ROOT"/}"
} | tee -a "$OUT"
