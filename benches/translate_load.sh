#!/usr/bin/env bash
# Translation under load: one v2 upstream serving a ~1 KiB JSON list
# (`/api/events?n=9`), and one gateway with the demo's change chain. In the
# same run and interleaved rounds, wrk drives
#   plain      v2 clients, GET /api/events        (no translation, streamed)
#   translated v1 clients, GET /api/weddings      (path rewritten, list unwrapped,
#                                                  3 fields per element moved back)
# and prints req/s, p50, p99 per run and the median translated/plain ratio
# (issue #3 target: at least 0.8). Everything runs on 127.0.0.1 and is
# stopped by PID on exit.
#
# Usage: benches/translate_load.sh [ROUNDS=3] [SECONDS=10]   env: CONNS (64), SWITCHYARD_WORKERS (2)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${CONNS:-64}
WORKERS=${SWITCHYARD_WORKERS:-2}
N=${ITEMS:-9}

command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
[[ ${LOAD_NO_BUILD:-0} == 1 ]] || cargo build --release --quiet
BIN=$PWD/target/release/switchyard

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

UP=$(free_port); GP=$(free_port); AP=$(free_port)
RUST_LOG=warn "$BIN" demo-upstream --listen "127.0.0.1:$UP" --version v2 --threads 1 & pids+=($!)
wait_port "$UP"
# The demo table, every pool on the one v2 upstream, v1 clients sent to the
# v2 pool through the chain.
python3 benches/demo_table.py "$UP" "$GP" "$AP" "$WORKERS" >"$tmp/gw.toml"
"$BIN" validate "$tmp/gw.toml" >/dev/null
RUST_LOG=warn "$BIN" run --config "$tmp/gw.toml" & pids+=($!)
wait_port "$GP"

plain_url="http://127.0.0.1:$GP/api/events?n=$N"
trans_url="http://127.0.0.1:$GP/api/weddings?n=$N"
plain_bytes=$(curl -s -H 'x-api-version: 2' "$plain_url" | wc -c)
trans_body=$(curl -s -H 'x-api-version: 1' "$trans_url")
echo "plain body ${plain_bytes} B (v2 shape); translated body $(printf %s "$trans_body" | wc -c) B (v1 shape): ${trans_body:0:80}..."
grep -q '"client_name"' <<<"$trans_body" || { echo "translation did not happen" >&2; exit 1; }

run() { wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H "x-api-version: $1" "$2" 2>&1; }
field() { awk -v k="$1" '$1==k {print $2}' <<<"$2"; }
rps() { awk '/Requests\/sec/ {print $2}' <<<"$1"; }
non2xx() { awk '/Non-2xx/ {print $NF; f=1} END {if (!f) print 0}' <<<"$1"; }

run 2 "$plain_url" >/dev/null # warm-up
ratios=()
printf '%-6s %-11s %10s %9s %9s %7s\n' round mode req/s p50 p99 non2xx
for r in $(seq 1 "$ROUNDS"); do
  a=$(run 2 "$plain_url")
  b=$(run 1 "$trans_url")
  printf '%-6s %-11s %10s %9s %9s %7s\n' "$r" plain "$(rps "$a")" "$(field 50% "$a")" "$(field 99% "$a")" "$(non2xx "$a")"
  printf '%-6s %-11s %10s %9s %9s %7s\n' "$r" translated "$(rps "$b")" "$(field 50% "$b")" "$(field 99% "$b")" "$(non2xx "$b")"
  ratios+=("$(python3 -c "print(round($(rps "$b")/$(rps "$a"), 3))")")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "translated/plain throughput per round: ${ratios[*]}; median $median (target >= 0.8)"
