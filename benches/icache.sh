#!/usr/bin/env bash
# Instructions and simulated cache misses per proxied request, nginx
# against switchyard, by callgrind's cache simulation (`--cache-sim=yes`:
# first-level instruction and data caches and the last level, sized like
# this machine's by valgrind). Like instructions.sh, counts the machine's
# load does not move; unlike it, many connections at once, so each
# connection's state is as cold as under wrk.
#
#   benches/icache.sh                 # 64 connections
#   ICACHE_CONNS=256 benches/icache.sh
#
# Each proxy runs with one worker under valgrind (nginx: master_process
# off); the upstream (`switchyard demo-upstream`, plain release build) runs
# natively. A client keeps ICACHE_CONNS connections open and, per round,
# sends one GET on each and then reads every answer; two runs (10 and 60
# rounds) per proxy, and their difference divided by the requests between
# them removes start-up and shutdown.
#
# Targets: nginx, switchyard (target/release/switchyard, built unless
# LOAD_NO_BUILD=1) and, when benches/pgo.sh has made it,
# switchyard_pgo (target/pgo/switchyard). Output per request: Ir
# (instructions), I1mr (first-level instruction-cache misses), D1mr / D1mw
# (first-level data-cache read / write misses), ILmr / DLmr / DLmw (last
# level). Callgrind files stay in ICACHE_OUT (default benches/results).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH=icache.sh
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_tmp switchyard-icache
CONNS=${ICACHE_CONNS:-64}
OUT=${ICACHE_OUT:-$ROOT/benches/results}
mkdir -p "$OUT"
NGINX_WORKERS=1
HDR='x-api-version: 2'

ensure_packages valgrind=valgrind python3=python3 curl=curl nginx=nginx
if [[ ${LOAD_NO_BUILD:-0} != 1 ]]; then
    log "building (cargo build --release)"
    timeout 1800 cargo build --release --quiet --bin switchyard
fi
BIN=$ROOT/target/release/switchyard
[[ -x $BIN ]] || die "$BIN missing"
TARGETS=(nginx switchyard)
[[ -x $ROOT/target/pgo/switchyard ]] && TARGETS+=(switchyard_pgo)

# measure TARGET ROUNDS: one proxy under callgrind for ROUNDS rounds.
measure() {
    local target=$1 rounds=$2 up px admin pid file=$OUT/icache.$1.$2.out
    read -r up px admin <<<"$(free_ports 3)"
    start_upstream "$up"
    local grind=(valgrind --tool=callgrind --cache-sim=yes --callgrind-out-file="$file")
    # glibc's `rep movsb`/`rep stosb` off (see CALLGRIND_GLIBC in common.sh).
    if [[ $target == nginx ]]; then
        rm -rf "$TMP/nginx"
        mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
        {
            echo "master_process off;"
            nginx_conf "$up" "listen 127.0.0.1:$px;"
        } >"$TMP/nginx/nginx.conf"
        GLIBC_TUNABLES=$CALLGRIND_GLIBC "${grind[@]}" nginx -p "$TMP/nginx" \
            -e "$TMP/nginx/logs/error.log" -c "$TMP/nginx/nginx.conf" >"$TMP/proxy.log" 2>&1 &
    else
        local bin=$BIN
        [[ $target == switchyard_pgo ]] && bin=$ROOT/target/pgo/switchyard
        {
            gateway_server "$px" "$admin"
            gateway_table "$up"
        } >"$TMP/gateway.toml"
        GLIBC_TUNABLES=$CALLGRIND_GLIBC RUST_LOG=warn "${grind[@]}" "$bin" run \
            --config "$TMP/gateway.toml" --workers 1 >"$TMP/proxy.log" 2>&1 &
    fi
    pid=$!
    PIDS+=("$pid")
    local ok=0
    for _ in $(seq 150); do
        if curl -fsS -m 2 -H "$HDR" "http://127.0.0.1:$px/api/orders" >/dev/null 2>&1; then
            ok=1
            break
        fi
        sleep 0.2
    done
    ((ok)) || { tail -20 "$TMP/proxy.log" >&2; die "$target under valgrind not ready"; }
    python3 "$ROOT/benches/keepalive_client.py" "$px" "$rounds" "$CONNS"
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
}

log "callgrind with cache simulation, $CONNS connections: ${TARGETS[*]} (a few minutes)"
echo "commit $(short_commit), $CONNS connections, per proxied request (difference of 60 and 10 rounds):"
for target in "${TARGETS[@]}"; do
    measure "$target" 10
    measure "$target" 60
    python3 - "$OUT/icache.$target.10.out" "$OUT/icache.$target.60.out" "$target" $((50 * CONNS)) <<'EOF'
import sys
def totals(path):
    events = values = None
    for line in open(path):
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("totals:", "summary:")):
            values = [int(v) for v in line.split()[1:]]
    return dict(zip(events, values))
a, b = totals(sys.argv[1]), totals(sys.argv[2])
n = int(sys.argv[4])
print(f"  {sys.argv[3]:<15}" + "  ".join(f"{k} {(b[k] - a[k]) / n:,.0f}" for k in b))
EOF
done
echo "profiles: callgrind_annotate --show=I1mr,Ir --sort=I1mr $OUT/icache.TARGET.60.out"
