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
#   the same for one connection, request after request).
#
# Environment: ANATOMY_BIN (default target/release/switchyard, built unless
# LOAD_NO_BUILD=1), ANATOMY_SECONDS (8: each strace and perf run),
# ANATOMY_CALLGRIND (1: 0 skips the callgrind runs, the slowest part),
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

ensure_packages wrk=wrk strace=strace perf=linux-perf valgrind=valgrind curl=curl python3=python3
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

echo "anatomy.sh: commit $(short_commit), binary $BIN, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for c in "${CONNS[@]}"; do
    echo "== $c connections"
    syscalls "$c"
    profile "$c"
    if [[ ${ANATOMY_CALLGRIND:-1} == 1 ]]; then
        read -r i1 n1 <<<"$(callgrind_run "$c" 3)"
        read -r i2 n2 <<<"$(callgrind_run "$c" 15)"
        ((n2 > n1)) || die "the longer callgrind run served no more requests ($n1, $n2)"
        echo "  user-space instructions per request (callgrind, 1 worker): $(((i2 - i1) / (n2 - n1)))" \
            "($i1 for $n1 requests, $i2 for $n2)"
    fi
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
