#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: the
# one gateway figure that does not move with the machine's load (wrk
# throughput on a shared 2-core VM swings by 15% between rounds; this
# repeats to within a fraction of a percent).
#
#   benches/instructions.sh              # release build, 200 and 2200 requests
#   INSN_BIN=target/profiling/switchyard benches/instructions.sh
#   INSN_ACCESS_LOG=1 benches/instructions.sh   # the same with the access log on
#   INSN_LIMITS=1 benches/instructions.sh   # also with rate limits: the difference
#
# The gateway (one worker, the load.sh config: header detection, two
# versions, no limits, no cache, log level warn) runs under
# `valgrind --tool=callgrind`; a small upstream (`switchyard demo-upstream`)
# runs natively. A client sends N keep-alive GETs on one connection, twice
# (N1 and N2 requests, two gateway processes); the difference of the two
# totals divided by N2 - N1 removes start-up and shutdown. The per-function
# profile of the larger run is kept for `callgrind_annotate`.
#
# With INSN_ACCESS_LOG=1 the gateway runs as `load.sh`'s switchyard_log
# does (RUST_LOG=info, --log-format json, stderr to a file), so the
# difference from a default run is what the access log costs per request.
# callgrind runs one thread at a time and counts every thread, so a log
# writer thread's work is in the total; the per-thread split (callgrind's
# --separate-threads) is printed too, to show which thread pays.
#
# With INSN_LIMITS=1 the same binary is measured a second time with the two
# rate-limit policies load.sh's LOAD_LIMITS=1 adds (per client IP and per
# route, 1e9 requests a second: every request is allowed), and the script
# prints what the limits add per request (issue 5: load.sh's throughput
# with limits at least 0.95x without).
#
# Environment: INSN_BIN (default target/release/switchyard, built unless
# LOAD_NO_BUILD=1), INSN_N1 (200), INSN_N2 (2200), INSN_OUT (directory for
# the callgrind files, default benches/results), INSN_ACCESS_LOG (0),
# INSN_LIMITS (0).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${INSN_BIN:-$ROOT/target/release/switchyard}
N1=${INSN_N1:-200}
N2=${INSN_N2:-2200}
OUT=${INSN_OUT:-$ROOT/benches/results}
mkdir -p "$OUT"
if [[ ${INSN_ACCESS_LOG:-0} == 1 ]]; then
    LEVEL=info
    FORMAT=(--log-format json)
    TAG=log.
else
    LEVEL=warn
    FORMAT=()
    TAG=
fi

BENCH=instructions.sh
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_tmp switchyard-insn

ensure_packages valgrind=valgrind python3=python3 curl=curl
if [[ -z ${INSN_BIN:-} && ${LOAD_NO_BUILD:-0} != 1 ]]; then
    log "building (cargo build --release)"
    timeout 1800 cargo build --release --quiet --bin switchyard
fi
[[ -x $BIN ]] || die "$BIN missing"

# Runs the gateway under callgrind for $1 requests, with the rate limits
# when $2 is "limits"; prints its total Ir.
measure() {
    local n=$1 variant=${2:-} up gw admin up_pid gw_pid
    read -r up gw admin <<<"$(free_ports 3)"
    start_upstream "$up"
    up_pid=$UP_PID
    {
        gateway_server "$gw" "$admin"
        gateway_table "$up"
    } >"$TMP/gateway.toml"
    [[ $variant == limits ]] && add_limits "$TMP/gateway.toml"
    # glibc's `rep movsb`/`rep stosb` off (see CALLGRIND_GLIBC in common.sh).
    # One file per thread (callgrind.N.out-01, -02, ...): the total is their sum.
    rm -f "$OUT/callgrind.$TAG$n$variant.out"*
    GLIBC_TUNABLES=$CALLGRIND_GLIBC \
        RUST_LOG=$LEVEL valgrind --tool=callgrind --separate-threads=yes \
        --callgrind-out-file="$OUT/callgrind.$TAG$n$variant.out" \
        "$BIN" "${FORMAT[@]}" run --config "$TMP/gateway.toml" --workers 1 \
        >"$TMP/gateway.log" 2>&1 &
    gw_pid=$!
    PIDS+=("$gw_pid")
    local ok=0
    for _ in $(seq 150); do
        if curl -fsS -m 2 -H 'x-api-version: 2' "http://127.0.0.1:$gw/api/orders" 2>/dev/null |
            grep -q '"served_by":"v2"'; then
            ok=1
            break
        fi
        sleep 0.2
    done
    ((ok)) || die "gateway under valgrind not ready (see $TMP/gateway.log)"
    python3 "$ROOT/benches/keepalive_client.py" "$gw" "$n" 1
    kill -TERM "$gw_pid"
    wait "$gw_pid" 2>/dev/null || true
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
    if [[ -n $TAG ]]; then
        # Every request's access-log line reached the file by the exit.
        local lines
        lines=$(grep -c '"target":"switchyard::access"' "$TMP/gateway.log" || true)
        ((lines >= n)) || die "$lines access-log lines for $n+ requests (see $TMP/gateway.log)"
    fi
    callgrind_sum "$OUT/callgrind.$TAG$n$variant.out"-*
}

# thread_totals FILE-PREFIX: "number=Ir" per thread of one run (callgrind
# numbers threads in start order: 01 is the main thread, which runs
# worker 0; a log writer thread, when there is one, is another).
thread_totals() {
    local f
    for f in "$1"-*; do
        printf '%s=%s ' "${f##*-}" "$(awk '/^totals:/ {print $2}' "$f")"
    done
}

log "counting with callgrind: $N1 then $N2 requests (a minute or two)"
measure_twice "$N1" "$N2"
echo "commit $(short_commit), binary $BIN"
echo "gateway instructions: $T1 for $N1 requests, $T2 for $N2 requests (RUST_LOG=$LEVEL ${FORMAT[*]})"
echo "instructions per proxied request: $PER"
echo "per thread (callgrind thread number=instructions), $N1 requests: $(thread_totals "$OUT/callgrind.$TAG$N1.out")"
echo "per thread, $N2 requests: $(thread_totals "$OUT/callgrind.$TAG$N2.out")"
echo "profile: callgrind_annotate $OUT/callgrind.$TAG$N2.out-01 (thread 1: main, worker 0)"
if [[ ${INSN_LIMITS:-0} == 1 ]]; then
    log "again with the per-ip and per-route rate limits"
    BASE=$PER
    measure_twice "$N1" "$N2" limits
    echo "with limits: $T1 for $N1 requests, $T2 for $N2 requests"
    echo "instructions per proxied request with limits: $PER"
    awk -v a="$BASE" -v b="$PER" 'BEGIN {
        printf "limits add %d instructions per request (%.2f%%)\n", b - a, 100 * (b - a) / a }'
    echo "profile: callgrind_annotate $OUT/callgrind.$TAG${N2}limits.out-01"
fi
