#!/usr/bin/env bash
# TLS termination comparison: switchyard and nginx (Debian's 1.22), both
# terminating TLS with the same self-signed ECDSA P-256 certificate and
# forwarding plain HTTP/1.1 (keep-alive) to the same small upstream, as the
# same version-routing proxy load.sh compares. Interleaved rounds (the order
# of the two alternates each round) of three tests on loopback:
#
#   ka<N>      HTTPS keep-alive: wrk -c N over https (HTTP/1.1, no ALPN);
#              req/s, p50, p99, proxy CPU us per request
#   new<N>     a new TLS connection per request: wrk -c N over https with
#              `Connection: close`, so both proxies close after every
#              response and wrk reconnects; wrk offers the previous
#              session, and both proxies resume it (TLS 1.3 PSK with
#              X25519, no certificate signature); connections/s (= req/s),
#              p50, p99 of handshake + request, proxy CPU us per connection
#   full<N>    the same with resumption prevented in the client (a small
#              LD_PRELOAD shim, built here with cc, drops the session wrk
#              keeps), so every connection is a full handshake with an
#              ECDSA signature: the figure for clients that never resume
#   h2_<C>x<M> HTTP/2 over TLS (ALPN h2): h2load -c C -m M, i.e. C client
#              connections with M concurrent streams each, for a fixed
#              duration; req/s, h2load's mean request time (h2load reports
#              no percentiles), proxy CPU us per request
#
# Per test and round it prints the switchyard/nginx ratios, and at the end
# the median of those ratios and the median absolute figures. Results are
# also written to benches/results/ (gitignored).
#
#   benches/tls_load.sh                          # 3 rounds, 10 s runs
#   LOAD_ROUNDS=5 LOAD_DURATION=5 LOAD_NO_BUILD=1 benches/tls_load.sh
#
# Environment (the LOAD_* names are load.sh's, so one setting drives both):
#   LOAD_WORKERS      switchyard worker threads (default 2)
#   NGINX_WORKERS     nginx worker processes (default 2)
#   LOAD_ROUNDS       interleaved rounds (default 3, at least 3 for a median)
#   LOAD_CONNS        wrk connections for the keep-alive test (default "32 256")
#   LOAD_DURATION     seconds per measured run (default 10)
#   LOAD_WARMUP       seconds of unmeasured load before each run (default 2)
#   LOAD_THREADS      wrk and h2load threads (default 2)
#   LOAD_NO_BUILD     set to 1 to skip `cargo build --release`
#   LOAD_COMMIT       commit to print when the tree is not a git checkout
#   TLS_NEWCONN_CONNS wrk connections for the new-connection test (default 32)
#   TLS_H2_CLIENTS    h2load client connections (default 10)
#   TLS_H2_STREAMS    h2load concurrent streams per connection (default 10)
#   TLS_TESTS         which tests to run (default "ka new full h2"; full
#                     needs a C compiler and is skipped without one)
#
# Needs nginx, wrk, h2load (nghttp2-client), openssl and curl (installed with
# apt-get when missing; that needs root). Everything listens on 127.0.0.1
# ports picked free at start; nginx runs with its own prefix, pid and log
# files in a temp dir and never touches a system nginx. Everything started
# here is stopped by PID on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKERS=${LOAD_WORKERS:-2}
NGINX_WORKERS=${NGINX_WORKERS:-2}
ROUNDS=${LOAD_ROUNDS:-3}
CONNS=${LOAD_CONNS:-32 256}
DURATION=${LOAD_DURATION:-10}
WARMUP=${LOAD_WARMUP:-2}
THREADS=${LOAD_THREADS:-2}
NEW_CONNS=${TLS_NEWCONN_CONNS:-32}
H2_CLIENTS=${TLS_H2_CLIENTS:-10}
H2_STREAMS=${TLS_H2_STREAMS:-10}
TESTS=${TLS_TESTS:-ka new full h2}
HDR='x-api-version: 2'
URL_PATH=/api/orders
TARGETS=(nginx switchyard)

BENCH=tls_load.sh
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_tmp switchyard-tls-load

# ---------------------------------------------------------------- setup
ensure_packages nginx=nginx wrk=wrk h2load=nghttp2-client openssl=openssl curl=curl
cd "$ROOT"
if [[ ${LOAD_NO_BUILD:-0} != 1 ]]; then
    log "building (cargo build --release --bin switchyard)"
    timeout 1800 cargo build --release --quiet --bin switchyard
fi
BIN=$ROOT/target/release/switchyard
[[ -x $BIN ]] || die "$BIN missing"
ulimit -n 65536 2>/dev/null || true
CLK_TCK=$(getconf CLK_TCK)
((H2_CLIENTS >= 1 && H2_STREAMS >= 1)) || die "TLS_H2_CLIENTS and TLS_H2_STREAMS must be at least 1"
H2_THREADS=$((THREADS < H2_CLIENTS ? THREADS : H2_CLIENTS))

read -r UP_PORT GW_PORT ADMIN_PORT GW_TLS_PORT NGX_TLS_PORT <<<"$(free_ports 5)"

# One certificate for both: ECDSA P-256, as in the README's TLS section,
# naming 127.0.0.1 so curl can check it by address.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >"$TMP/openssl.log" 2>&1 ||
    { cat "$TMP/openssl.log" >&2; die "openssl could not make a certificate"; }

# The small upstream; both versions' pools point at it, and the header
# routes every request to v2.
start_upstream "$UP_PORT"

# load.sh's gateway plus a TLS listener. The certificate files are read at
# start and on SIGHUP only (no polling during the runs).
{
    gateway_server "$GW_PORT" "$ADMIN_PORT" "$GW_TLS_PORT"
    gateway_table "$UP_PORT"
} >"$TMP/gateway.toml"
RUST_LOG=warn "$BIN" run --config "$TMP/gateway.toml" --workers "$WORKERS" \
    >"$TMP/switchyard.log" 2>&1 &
GW_PID=$!
PIDS+=("$GW_PID")

# nginx: load.sh's routing (a map on the version header between two
# keep-alive upstream blocks), access log off, on one TLS listener with
# HTTP/2 by ALPN (1.22 syntax) and the protocols switchyard allows. Session
# cache and tickets stay at nginx's defaults (the clients here never resume).
start_nginx "$(nginx_conf "$UP_PORT" "listen 127.0.0.1:$NGX_TLS_PORT ssl http2;
        server_name localhost;
        ssl_certificate $TMP/cert.pem;
        ssl_certificate_key $TMP/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;")"

show_logs() {
    local f
    for f in "$TMP/upstream.log" "$TMP/switchyard.log" "$TMP/nginx.log" "$TMP/nginx/logs/error.log"; do
        [[ -s $f ]] && { log "--- $f"; tail -20 "$f" >&2; }
    done
    return 0
}

declare -A URL=(
    [nginx]="https://127.0.0.1:$NGX_TLS_PORT$URL_PATH"
    [switchyard]="https://127.0.0.1:$GW_TLS_PORT$URL_PATH"
)
wait_ready upstream "http://127.0.0.1:$UP_PORT$URL_PATH" "$UP_PID" || { show_logs; exit 1; }
wait_ready switchyard "${URL[switchyard]}" "$GW_PID" --cacert "$TMP/cert.pem" || { show_logs; exit 1; }
wait_ready nginx "${URL[nginx]}" "$NGX_PID" --cacert "$TMP/cert.pem" || { show_logs; exit 1; }

# What each listener negotiates with an OpenSSL 3 client offering h2 (wrk
# offers no ALPN and gets HTTP/1.1 from both), and whether it resumes a
# session: wrk keeps each connection's session across its reconnects (it
# SSL_clear()s rather than frees), so the new* runs resume wherever the
# server lets them.
tls_params() {
    local port=$1 out resumed
    out=$(printf 'GET %s HTTP/1.1\r\nHost: localhost\r\n%s\r\nConnection: close\r\n\r\n' "$URL_PATH" "$HDR" |
        timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
            -alpn h2,http/1.1 -ign_eof -sess_out "$TMP/session-$port.pem" 2>&1 | tr -d '\0') || true
    resumed=$(timeout 5 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
        -sess_in "$TMP/session-$port.pem" </dev/null 2>&1 | awk '/^(New|Reused),/ {print $1; exit}') || true
    awk -F': ' -v r="${resumed%,}" '
        /^New, / { split($0, w, /, /); p = w[2]; c = w[3]; sub(/^Cipher is /, "", c) }
        /^Server Temp Key/ { k = $2 } /^ALPN protocol/ { a = $2 } /^No ALPN/ { a = "none" }
        END { printf "%s %s, key exchange %s, ALPN %s; second connection with the first one'"'"'s session: %s", p, c, k, a, (r == "" ? "?" : r) }' <<<"$out"
}

# The process(es) whose CPU counts for a target: the proxy only.
cpu_pids() {
    case $1 in
        switchyard) echo "$GW_PID" ;;
        nginx) echo "$NGX_PID $(pgrep -P "$NGX_PID" | tr '\n' ' ')" ;;
    esac
}


mkdir -p "$ROOT/benches/results"
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=$ROOT/benches/results/tls-load-$STAMP.txt
RUNS=$TMP/runs.tsv
: >"$RUNS"

# wrk closes a TLS connection with SSL_shutdown + SSL_clear and reconnects
# with the same SSL object, which keeps the session and offers it again.
# This shim makes SSL_clear forget it, so the next handshake is a full one.
build_noresume() {
    command -v cc >/dev/null || return 1
    cat >"$TMP/noresume.c" <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
int SSL_set_session(void *ssl, void *session);
int SSL_clear(void *ssl) {
    static int (*real)(void *);
    if (!real)
        real = (int (*)(void *))dlsym(RTLD_NEXT, "SSL_clear");
    int rc = real(ssl);
    SSL_set_session(ssl, 0);
    return rc;
}
EOF
    cc -shared -fPIC -O2 -o "$TMP/noresume.so" "$TMP/noresume.c" -ldl >"$TMP/cc.log" 2>&1 ||
        { cat "$TMP/cc.log" >&2; return 1; }
}

# Test ids in run order.
TEST_IDS=()
for t in $TESTS; do
    case $t in
        ka) for c in $CONNS; do TEST_IDS+=("ka$c"); done ;;
        new) TEST_IDS+=("new$NEW_CONNS") ;;
        full)
            if build_noresume; then
                TEST_IDS+=("full$NEW_CONNS")
            else
                log "tls_load.sh: no C compiler (cc) for the no-resumption shim: skipping the full test"
            fi
            ;;
        h2) TEST_IDS+=("h2_${H2_CLIENTS}x$H2_STREAMS") ;;
        *) die "unknown test '$t' in TLS_TESTS (ka, new, full, h2)" ;;
    esac
done
((${#TEST_IDS[@]} > 0)) || die "TLS_TESTS selects nothing"

{
    echo "switchyard TLS termination comparison, $(date -u '+%Y-%m-%d %H:%M UTC')"
    if commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null); then
        git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock || commit+=" + uncommitted changes in src/ or Cargo.*"
    fi
    echo "commit ${commit:-${LOAD_COMMIT:-unknown}}; binary built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$(nginx -v 2>&1), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $(h2load --version 2>&1 | head -1), $(openssl version | cut -d' ' -f1-2)"
    echo "certificate: self-signed ECDSA P-256 (same files for both)"
    echo "nginx      TLS: $(tls_params "$NGX_TLS_PORT")"
    echo "switchyard TLS: $(tls_params "$GW_TLS_PORT")"
    echo "switchyard workers=$WORKERS, nginx workers=$NGINX_WORKERS, upstream 1 thread (plain HTTP/1.1, keep-alive from both)"
    echo "each run after ${WARMUP}s of unmeasured warm-up; the order of nginx and switchyard alternates by round"
    for id in "${TEST_IDS[@]}"; do
        case $id in
            ka*) echo "  $id: wrk -t$THREADS -c${id#ka} -d${DURATION}s --latency -H '$HDR' https://..." ;;
            new*) echo "  $id: wrk -t$THREADS -c$NEW_CONNS -d${DURATION}s --latency -H '$HDR' -H 'Connection: close' https://...  (one TLS handshake per request, resumed; req/s = connections/s)" ;;
            full*) echo "  $id: LD_PRELOAD=noresume.so wrk (as new$NEW_CONNS)  (one full TLS handshake per request; req/s = connections/s)" ;;
            h2*) echo "  $id: h2load -t$H2_THREADS -c$H2_CLIENTS -m$H2_STREAMS -D$DURATION -H '$HDR' https://...  ($((H2_CLIENTS * H2_STREAMS)) concurrent streams; p50 column = h2load's mean, no p99)" ;;
        esac
    done
    echo "cpu/req: proxy utime+stime (nginx: master+workers) per completed request (new*, full*: per connection)"
    echo
    printf '%-5s %-9s %-10s %10s %9s %9s %9s %11s %8s\n' round test target req/s p50_us p99_us cpu_us/req usr/sys errors
} | tee "$OUT"

# ---------------------------------------------------------------- runs
# The client in the background and `wait`, so a signal stops the script at once.
client_bg() {
    local secs=$1
    shift
    timeout $((secs + 30)) "$@" >"$TMP/client.out" 2>&1 &
    CLIENT_PID=$!
    wait "$CLIENT_PID" || true
    CLIENT_PID=
}

run_one() {
    local round=$1 id=$2 target=$3 url=${URL[$3]}
    if ((WARMUP > 0)); then
        run_client "$WARMUP" "$id" "$url" "$WARMUP"
    fi
    local pids before after out
    pids=$(cpu_pids "$target")
    # shellcheck disable=SC2086
    before=$(cpu_ticks $pids)
    run_client "$DURATION" "$id" "$url" "$DURATION"
    out=$(<"$TMP/client.out")
    # shellcheck disable=SC2086
    after=$(cpu_ticks $pids)
    local reqs rps p50 p99 errs
    case $id in
        h2*)
            grep -q '^Application protocol: h2$' <<<"$out" ||
                { log "$out"; die "h2load did not negotiate h2 with $target"; }
            reqs=$(awk '/^requests:/ {print $6}' <<<"$out")
            rps=$(awk '/^finished in/ {gsub(/,/, "", $4); printf "%.0f", $4}' <<<"$out")
            p50=$(to_us "$(awk '/^time for request:/ {print $6}' <<<"$out")")
            p99=-
            [[ -s $TMP/h2-tls-$target ]] ||
                awk '/^(TLS Protocol|Cipher|Server Temp Key|Application protocol):/' <<<"$out" | paste -sd ' ' >"$TMP/h2-tls-$target"
            # failed + errored + timeout requests, and non-2xx answers
            errs=$(awk '/^requests:/ {n += $10 + $12 + $14} /^status codes:/ {n += $5 + $7 + $9} END {print n + 0}' <<<"$out")
            ;;
        *)
            reqs=$(awk '/requests in/ {print $1}' <<<"$out")
            rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
            p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
            p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
            errs=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/,/, ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
            ;;
    esac
    [[ -n $reqs && -n $rps ]] || { log "$out"; die "could not read the $id run against $target"; }
    local cpu usr sys
    read -r cpu usr sys < <(awk -v b="$before" -v a="$after" -v hz="$CLK_TCK" -v n="$reqs" 'BEGIN {
        split(b, x, " "); split(a, y, " "); k = (n > 0 ? 1e6 / hz / n : 0)
        u = (y[1] - x[1]) * k; s = (y[2] - x[2]) * k
        printf "%.1f %.1f %.1f\n", u + s, u, s
    }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$id" "$target" "$rps" "$p50" "$p99" "$cpu" "$errs" >>"$RUNS"
    printf '%-5s %-9s %-10s %10s %9s %9s %9s %11s %8s\n' "$round" "$id" "$target" "$rps" "$p50" "$p99" "$cpu" "$usr/$sys" "$errs" | tee -a "$OUT"
}

# Runs the test's client for secs (wrk and h2load both stop by themselves;
# timeout is the backstop).
run_client() {
    local secs=$1 id=$2 url=$3 d=$4
    case $id in
        ka*) client_bg "$secs" wrk -t"$THREADS" -c"${id#ka}" -d"${d}s" --latency -H "$HDR" "$url" ;;
        new*) client_bg "$secs" wrk -t"$THREADS" -c"$NEW_CONNS" -d"${d}s" --latency -H "$HDR" -H "Connection: close" "$url" ;;
        full*) client_bg "$secs" env LD_PRELOAD="$TMP/noresume.so" wrk -t"$THREADS" -c"$NEW_CONNS" -d"${d}s" --latency -H "$HDR" -H "Connection: close" "$url" ;;
        h2*) client_bg "$secs" h2load -t"$H2_THREADS" -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$d" -H "$HDR" "$url" ;;
    esac
}

for round in $(seq "$ROUNDS"); do
    order=("${TARGETS[@]}")
    ((round % 2 == 0)) && order=("${TARGETS[1]}" "${TARGETS[0]}")
    for id in "${TEST_IDS[@]}"; do
        for target in "${order[@]}"; do
            kill -0 "$GW_PID" "$NGX_PID" "$UP_PID" 2>/dev/null || { show_logs; die "a server died"; }
            run_one "$round" "$id" "$target"
        done
        awk -F'\t' -v r="$round" -v id="$id" '
            $1 == r && $2 == id { rps[$3] = $4; p99[$3] = $6; cpu[$3] = $7 }
            END {
                p = (p99["nginx"] > 0 && p99["switchyard"] != "-") ? sprintf("%.2f", p99["switchyard"] / p99["nginx"]) : "-"
                printf "      round %s, %s: switchyard/nginx throughput %.2f, p99 %s, cpu/req %.2f\n",
                    r, id, rps["switchyard"] / rps["nginx"], p, cpu["switchyard"] / cpu["nginx"]
            }' "$RUNS" | tee -a "$OUT"
    done
done

# ---------------------------------------------------------------- summary
{
    echo
    echo "median over $ROUNDS rounds of the per-round ratios (switchyard/nginx; throughput >= 1, p99 and cpu <= 1 favour switchyard), per-round throughput ratios in brackets:"
    for id in "${TEST_IDS[@]}"; do
        awk -F'\t' -v id="$id" "$AWK_MEDIAN"'
            $2 == id { rps[$1, $3] = $4; p50[$1, $3] = $5; p99[$1, $3] = $6; cpu[$1, $3] = $7; if ($1 > rounds) rounds = $1 }
            END {
                has99 = (p99[1, "switchyard"] != "-")
                list = ""
                for (r = 1; r <= rounds; r++) {
                    t[r] = rps[r, "switchyard"] / rps[r, "nginx"]; u[r] = cpu[r, "switchyard"] / cpu[r, "nginx"]
                    list = list (r > 1 ? "/" : "") sprintf("%.2f", t[r])
                    if (has99) p[r] = p99[r, "switchyard"] / p99[r, "nginx"]
                    sr[r] = rps[r, "switchyard"]; nr[r] = rps[r, "nginx"]; sc[r] = cpu[r, "switchyard"]; nc[r] = cpu[r, "nginx"]
                    s5[r] = p50[r, "switchyard"]; n5[r] = p50[r, "nginx"]; s9[r] = p99[r, "switchyard"]; n9[r] = p99[r, "nginx"]
                }
                printf "  %-9s throughput %.2f (%s)  p99 %s  cpu/req %.2f\n", id, median(t, rounds), list,
                    has99 ? sprintf("%.2f", median(p, rounds)) : "-", median(u, rounds)
                if (has99)
                    printf "            medians: req/s nginx %.0f switchyard %.0f; p50 us nginx %.0f switchyard %.0f; p99 us nginx %.0f switchyard %.0f; cpu us/req nginx %.1f switchyard %.1f\n",
                        median(nr, rounds), median(sr, rounds), median(n5, rounds), median(s5, rounds),
                        median(n9, rounds), median(s9, rounds), median(nc, rounds), median(sc, rounds)
                else
                    printf "            medians: req/s nginx %.0f switchyard %.0f; mean us nginx %.0f switchyard %.0f; cpu us/req nginx %.1f switchyard %.1f\n",
                        median(nr, rounds), median(sr, rounds), median(n5, rounds), median(s5, rounds),
                        median(nc, rounds), median(sc, rounds)
            }' "$RUNS"
    done
    for target in "${TARGETS[@]}"; do
        [[ -s $TMP/h2-tls-$target ]] && echo "h2load with $target: $(<"$TMP/h2-tls-$target")"
    done
    echo
    echo "load avg at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "results: ${OUT#"$ROOT"/}"
} | tee -a "$OUT"
