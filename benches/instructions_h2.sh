#!/usr/bin/env bash
# User-space instructions per proxied HTTP/2 request over TLS, counted by
# callgrind: instructions.sh's figure for tls_load.sh's h2 test, which the
# machine's load does not move.
#
#   benches/instructions_h2.sh              # release build, 1000 and 6000 requests
#   INSN_BIN=target/profiling/switchyard benches/instructions_h2.sh
#
# The gateway (one worker, tls_load.sh's config: a TLS listener with a
# self-signed ECDSA P-256 certificate, header detection, two versions, no
# limits, no cache, log level warn) runs under `valgrind --tool=callgrind`;
# a small upstream (`switchyard demo-upstream`) runs natively. h2load sends
# N requests over TLS with ALPN h2, as tls_load.sh does (-c 10 -m 10 by
# default: 10 connections, 10 concurrent streams each), twice (N1 and N2
# requests, two gateway processes); the difference of the two totals
# divided by N2 - N1 removes start-up, the handshakes and shutdown. The
# per-function profile of the larger run is kept for `callgrind_annotate`.
#
# Environment: INSN_BIN (default target/release/switchyard, built unless
# LOAD_NO_BUILD=1), INSN_N1 (1000), INSN_N2 (6000), INSN_H2_CLIENTS (10),
# INSN_H2_STREAMS (10), INSN_OUT (directory for the callgrind files,
# default benches/results).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=${INSN_BIN:-$ROOT/target/release/switchyard}
N1=${INSN_N1:-1000}
N2=${INSN_N2:-6000}
CLIENTS=${INSN_H2_CLIENTS:-10}
STREAMS=${INSN_H2_STREAMS:-10}
OUT=${INSN_OUT:-$ROOT/benches/results}
HDR='x-api-version: 2'
mkdir -p "$OUT"

BENCH=instructions_h2.sh
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_tmp switchyard-insn-h2

ensure_packages valgrind=valgrind h2load=nghttp2-client openssl=openssl curl=curl
if [[ -z ${INSN_BIN:-} && ${LOAD_NO_BUILD:-0} != 1 ]]; then
    log "building (cargo build --release)"
    timeout 1800 cargo build --release --quiet --bin switchyard
fi
[[ -x $BIN ]] || die "$BIN missing"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 >"$TMP/openssl.log" 2>&1 ||
    { cat "$TMP/openssl.log" >&2; die "openssl could not make a certificate"; }

# Runs the gateway under callgrind for $1 h2 requests; prints its total Ir.
measure() {
    local n=$1 up gw admin tls up_pid gw_pid
    read -r up gw admin tls <<<"$(free_ports 4)"
    start_upstream "$up"
    up_pid=$UP_PID
    {
        gateway_server "$gw" "$admin" "$tls"
        gateway_table "$up"
    } >"$TMP/gateway.toml"
    # glibc's `rep movsb`/`rep stosb` off (see CALLGRIND_GLIBC in common.sh).
    rm -f "$OUT/callgrind.h2.$n.out"*
    GLIBC_TUNABLES=$CALLGRIND_GLIBC \
        RUST_LOG=warn valgrind --tool=callgrind --separate-threads=yes \
        --callgrind-out-file="$OUT/callgrind.h2.$n.out" \
        "$BIN" run --config "$TMP/gateway.toml" --workers 1 \
        >"$TMP/gateway.log" 2>&1 &
    gw_pid=$!
    PIDS+=("$gw_pid")
    local ok=0
    for _ in $(seq 150); do
        if curl -fsS -m 2 --cacert "$TMP/cert.pem" -H "$HDR" "https://127.0.0.1:$tls/api/orders" 2>/dev/null |
            grep -q '"served_by":"v2"'; then
            ok=1
            break
        fi
        sleep 0.2
    done
    ((ok)) || die "gateway under valgrind not ready (see $TMP/gateway.log)"
    local res
    res=$(h2load -n "$n" -c "$CLIENTS" -m "$STREAMS" -H "$HDR" "https://127.0.0.1:$tls/api/orders")
    grep -q '^Application protocol: h2$' <<<"$res" || die "h2load did not negotiate h2: $res"
    grep -q "^status codes: $n 2xx" <<<"$res" || die "not every request got a 2xx: $res"
    kill -TERM "$gw_pid"
    wait "$gw_pid" 2>/dev/null || true
    kill -TERM "$up_pid" 2>/dev/null || true
    wait "$up_pid" 2>/dev/null || true
    callgrind_sum "$OUT/callgrind.h2.$n.out"-*
}

log "counting with callgrind: $N1 then $N2 h2 requests (a minute or two)"
measure_twice "$N1" "$N2"
echo "commit $(short_commit), binary $BIN"
echo "gateway instructions: $T1 for $N1 requests, $T2 for $N2 requests (h2load -c $CLIENTS -m $STREAMS over TLS)"
echo "instructions per proxied h2 request: $PER"
echo "profile: callgrind_annotate $OUT/callgrind.h2.$N2.out-01 (thread 1: main, worker 0)"
