#!/usr/bin/env bash
# Where a proxied HTTP/1.1 request's CPU goes under wrk, at each connection
# count given (default 32 and 256): the figures that tell whether a CPU per
# request gap (load.sh) is more instructions, more system calls, or the
# same work running slower.
#
#   benches/anatomy.sh              # release build, 32 and 256 connections
#   ANATOMY_SECONDS=5 benches/anatomy.sh 1 32 256
#
# For each connection count, against the load.sh gateway config (header
# detection, two versions, no limits, no cache, log level warn) and a small
# upstream (`switchyard demo-upstream`):
#
# * system calls per request: `strace -c -f` attached to the gateway (2
#   workers) for one wrk run; strace slows the gateway, but the count per
#   request is what is read, not the time;
# * where the CPU time goes: `perf record -e cpu-clock` (a software clock:
#   these VMs have no hardware counters) on the gateway (2 workers) for one
#   wrk run, printed as the share per binary (kernel, switchyard, libc,
#   vdso) and the top symbols;
# * user-space instructions per request under wrk: the gateway (1 worker)
#   under callgrind for two wrk runs of different lengths, each in its own
#   gateway process; the difference of the totals over the difference of
#   the requests leaves out start-up and shutdown (instructions.sh counts
#   the same for one connection, request after request);
# * the same against nginx (load.sh's nginx, 2 workers), side by side, per
#   request: CPU (user and system, from /proc), context switches
#   (voluntary: the proxy went idle; involuntary: it was preempted), TCP
#   segments on the machine (`nstat`), all over one unprofiled wrk run
#   each; then both under `perf record` for one run each, printed as
#   microseconds per request by binary and for the symbols whose time
#   differs most between the two (perf's own cost inflates the totals and
#   lands mostly on the context switches; read the differences).
#
# Environment: ANATOMY_BIN (default target/release/switchyard, built unless
# LOAD_NO_BUILD=1), ANATOMY_SECONDS (8: each strace and perf run),
# ANATOMY_CALLGRIND (1: 0 skips the callgrind runs, the slowest part),
# ANATOMY_NGINX (1: 0 skips the comparison with nginx),
# ANATOMY_OUT (directory for the perf and callgrind files, default
# benches/results).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${ANATOMY_BIN:-$ROOT/target/release/switchyard}
SECONDS_EACH=${ANATOMY_SECONDS:-8}
OUT=${ANATOMY_OUT:-$ROOT/benches/results}
HDR='x-api-version: 2'
CONNS=("$@")
((${#CONNS[@]})) || CONNS=(32 256)
mkdir -p "$OUT"

BENCH=anatomy.sh
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_tmp switchyard-anatomy

ensure_packages wrk=wrk strace=strace perf=linux-perf valgrind=valgrind curl=curl python3=python3 \
    nginx=nginx nstat=iproute2
if [[ -z ${ANATOMY_BIN:-} && ${LOAD_NO_BUILD:-0} != 1 ]]; then
    log "building (cargo build --release)"
    timeout 1800 cargo build --release --quiet --bin switchyard
fi
[[ -x $BIN ]] || die "$BIN missing"

read -r UP <<<"$(free_ports 1)"
start_upstream "$UP"

# start_gateway WORKERS [WRAPPER...]: starts the gateway (under WRAPPER,
# if any) on fresh ports; sets GW_PID and GW_PORT once it answers.
start_gateway() {
    local workers=$1 admin
    shift
    read -r GW_PORT admin <<<"$(free_ports 2)"
    {
        gateway_server "$GW_PORT" "$admin"
        gateway_table "$UP"
    } >"$TMP/gateway.toml"
    RUST_LOG=warn "$@" "$BIN" run --config "$TMP/gateway.toml" --workers "$workers" \
        >"$TMP/gateway.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    local _
    for _ in $(seq 300); do
        if curl -fsS -m 2 -H "$HDR" "http://127.0.0.1:$GW_PORT/api/orders" >/dev/null 2>&1; then
            return
        fi
        sleep 0.2
    done
    die "gateway not ready (see $TMP/gateway.log)"
}

stop_gateway() {
    kill -TERM "$GW_PID" 2>/dev/null || true
    wait "$GW_PID" 2>/dev/null || true
}

# load CONNS SECONDS: one wrk run against the gateway; prints the requests
# it completed (and fails on socket errors or non-2xx answers).
load() {
    wrk -t2 -c"$1" -d"$2"s -H "$HDR" "http://127.0.0.1:$GW_PORT/api/orders" >"$TMP/wrk.txt"
    if grep -qE 'Socket errors|Non-2xx' "$TMP/wrk.txt"; then
        cat "$TMP/wrk.txt" >&2
        die "wrk saw errors"
    fi
    awk '/requests in/ {print $1}' "$TMP/wrk.txt"
}

syscalls() {
    local c=$1 sp n
    start_gateway 2
    load "$c" 2 >/dev/null
    strace -c -f -q -p "$GW_PID" -o "$TMP/strace.txt" &
    sp=$!
    sleep 0.5
    n=$(load "$c" "$SECONDS_EACH")
    kill -INT "$sp" 2>/dev/null || true
    wait "$sp" 2>/dev/null || true
    stop_gateway
    echo "  system calls per request ($n requests, strace -c -f, 2 workers):"
    # Rows: % time, seconds, usecs/call, calls, [errors], name.
    awk -v r="$n" '
        NR <= 2 || $NF == "total" || $1 ~ /^-/ || $4 + 0 == 0 { next }
        { all += $4 }
        $4 / r >= 0.005 { printf "    %-14s %6.2f\n", $NF, $4 / r }
        END { printf "    %-14s %6.2f\n", "all", all / r }
    ' "$TMP/strace.txt"
}

profile() {
    local c=$1 pp n data=$OUT/anatomy.perf.$1.data
    start_gateway 2
    load "$c" 2 >/dev/null
    perf record -q -e cpu-clock -F 1999 -p "$GW_PID" -o "$data" -- sleep "$SECONDS_EACH" \
        >/dev/null 2>&1 &
    pp=$!
    n=$(load "$c" "$SECONDS_EACH")
    wait "$pp" || true
    stop_gateway
    echo "  CPU time by binary (perf cpu-clock, 2 workers, $n requests; $data):"
    # awk reads to the end (no `head`): under pipefail, perf killed by
    # SIGPIPE would fail the script.
    perf report -i "$data" --no-children --sort dso 2>/dev/null |
        awk '!/^#/ && NF && ++n <= 6 { printf "    %s\n", $0 }'
    echo "  top symbols:"
    perf report -i "$data" --no-children --sort sym 2>/dev/null |
        awk '!/^#/ && NF && ++n <= 25 { printf "    %s\n", substr($0, 1, 110) }'
}

# callgrind_run CONNS SECONDS: "instructions requests" for one run.
callgrind_run() {
    local c=$1 s=$2 n out=$OUT/anatomy.callgrind.$1.$2.out
    rm -f "$out"
    # glibc's `rep movsb`/`rep stosb` off (see CALLGRIND_GLIBC in common.sh).
    start_gateway 1 env GLIBC_TUNABLES="$CALLGRIND_GLIBC" \
        valgrind --tool=callgrind --callgrind-out-file="$out"
    n=$(load "$c" "$s")
    stop_gateway
    echo "$(callgrind_sum "$out") $n"
}

# nginx as load.sh runs it (2 workers, the version map, keepalive upstreams),
# started once, for the side-by-side figures.
NGX_PID=
nginx_up() {
    read -r NGX_PORT <<<"$(free_ports 1)"
    NGINX_WORKERS=2
    start_nginx "$(nginx_conf "$UP" "listen 127.0.0.1:$NGX_PORT;")"
    wait_ready nginx "http://127.0.0.1:$NGX_PORT/api/orders" "$NGX_PID" || die "nginx not ready"
}

# task_stats PID...: "utime stime voluntary involuntary" (cpu_ticks, then
# context switches summed over every thread of the given processes).
task_stats() {
    # shellcheck disable=SC2046
    echo "$(cpu_ticks "$@") $(awk '/^voluntary_ctxt/ {v += $2} /^nonvoluntary_ctxt/ {n += $2} END {print v, n}' \
        $(printf '/proc/%s/task/*/status ' "$@"))"
}

# wrk_ok NAME: fails on socket errors or non-2xx answers in $TMP/wrk.txt.
wrk_ok() {
    if grep -qE 'Socket errors|Non-2xx' "$TMP/wrk.txt"; then
        cat "$TMP/wrk.txt" >&2
        die "wrk saw errors through $1"
    fi
}

# side_run NAME PORT PIDS CONNS: one unprofiled wrk run through a proxy;
# prints its per-request line.
side_run() {
    local name=$1 port=$2 pids=$3 c=$4 a b segs n
    wrk -t2 -c"$c" -d2s -H "$HDR" "http://127.0.0.1:$port/api/orders" >/dev/null
    # shellcheck disable=SC2086
    a=$(task_stats $pids)
    nstat -n
    wrk -t2 -c"$c" -d"$SECONDS_EACH"s -H "$HDR" "http://127.0.0.1:$port/api/orders" >"$TMP/wrk.txt"
    segs=$(nstat -z TcpOutSegs | awk '$1 == "TcpOutSegs" {print $2}')
    wrk_ok "$name"
    # shellcheck disable=SC2086
    b=$(task_stats $pids)
    n=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
    awk -v name="$name" -v n="$n" -v segs="$segs" -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        us = 1e6 / hz / n
        printf "    %-10s %9d  %5.2f  %5.2f  %5.2f    %5.3f    %5.3f    %5.2f\n", name, n,
            (y[1] - x[1]) * us, (y[2] - x[2]) * us, (y[1] + y[2] - x[1] - x[2]) * us,
            (y[3] - x[3]) / n, (y[4] - x[4]) / n, segs / n
    }'
}

# side_profile NAME PORT PIDS CONNS: one wrk run under perf; the report by
# binary and by symbol, in $TMP/NAME.dso and $TMP/NAME.sym, requests in
# $TMP/NAME.n.
side_profile() {
    local name=$1 port=$2 pids=$3 c=$4 pp data=$OUT/anatomy.perf.$4.$1.data
    wrk -t2 -c"$c" -d2s -H "$HDR" "http://127.0.0.1:$port/api/orders" >/dev/null
    perf record -q -e cpu-clock -F 1999 -p "$pids" -o "$data" -- sleep "$SECONDS_EACH" \
        >/dev/null 2>&1 &
    pp=$!
    wrk -t2 -c"$c" -d"$SECONDS_EACH"s -H "$HDR" "http://127.0.0.1:$port/api/orders" >"$TMP/wrk.txt"
    wait "$pp" || true
    wrk_ok "$name"
    awk '/requests in/ {print $1}' "$TMP/wrk.txt" >"$TMP/$name.n"
    perf report -i "$data" --no-children --sort dso -F sample,dso 2>/dev/null >"$TMP/$name.dso"
    perf report -i "$data" --no-children --sort sym -F sample,sym 2>/dev/null >"$TMP/$name.sym"
}

against_nginx() {
    local c=$1 ngx
    [[ -n $NGX_PID ]] || nginx_up
    ngx=$(pgrep -P "$NGX_PID" | paste -sd' ')
    start_gateway 2
    echo "  against nginx, per request ($SECONDS_EACH s each, unprofiled; CPU in µs):"
    echo "    proxy       requests   user    sys    cpu    vol.sw   invol.sw   segments"
    side_run nginx "$NGX_PORT" "$NGX_PID $ngx" "$c"
    side_run switchyard "$GW_PORT" "$GW_PID" "$c"
    side_profile nginx "$NGX_PORT" "${ngx// /,}" "$c"
    side_profile switchyard "$GW_PORT" "$GW_PID" "$c"
    stop_gateway
    echo "  perf cpu-clock, µs per request (1999 Hz; nginx / switchyard / difference):"
    python3 - "$TMP" <<'PY'
import re, sys
tmp = sys.argv[1]
def load(name, kind):
    n = int(open(f"{tmp}/{name}.n").read())
    out = {}
    for line in open(f"{tmp}/{name}.{kind}"):
        m = re.match(r"\s*(\d+)\s+(.*\S)", line)
        if m and not line.startswith("#"):
            key = m.group(2)
            out[key] = out.get(key, 0) + int(m.group(1)) * 1e6 / 1999 / n
    return out
for kind, rows in (("dso", 6), ("sym", 16)):
    a, b = load("nginx", kind), load("switchyard", kind)
    if kind == "dso":
        print("    %-40s %6.2f %6.2f %+6.2f" % ("all", sum(a.values()), sum(b.values()), sum(b.values()) - sum(a.values())))
        keys = sorted(set(a) | set(b), key=lambda k: -max(a.get(k, 0), b.get(k, 0)))
    else:
        print("    symbols differing most:")
        keys = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))
    for k in keys[:rows]:
        print("    %-40s %6.3f %6.3f %+6.3f" % (k[:40], a.get(k, 0), b.get(k, 0), b.get(k, 0) - a.get(k, 0)))
PY
}

echo "anatomy.sh: commit $(short_commit), binary $BIN, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for c in "${CONNS[@]}"; do
    echo "== $c connections"
    syscalls "$c"
    profile "$c"
    [[ ${ANATOMY_NGINX:-1} == 1 ]] && against_nginx "$c"
    if [[ ${ANATOMY_CALLGRIND:-1} == 1 ]]; then
        read -r i1 n1 <<<"$(callgrind_run "$c" 3)"
        read -r i2 n2 <<<"$(callgrind_run "$c" 15)"
        ((n2 > n1)) || die "the longer callgrind run served no more requests ($n1, $n2)"
        echo "  user-space instructions per request (callgrind, 1 worker): $(((i2 - i1) / (n2 - n1)))" \
            "($i1 for $n1 requests, $i2 for $n2)"
    fi
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
