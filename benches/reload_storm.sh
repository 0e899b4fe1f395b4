#!/usr/bin/env bash
# Reload storm: throughput and errors of a Redis-fed gateway under wrk load
# (256 connections) while 100 table revisions are pushed in a row, next to
# the same run without pushes, in interleaved rounds (quiet, storm, quiet,
# storm, ...). Prints per round req/s and non-2xx counts, and the median
# storm/quiet throughput ratio. Everything runs on 127.0.0.1 and is stopped
# by PID on exit.
#
# Usage: benches/reload_storm.sh [ROUNDS=3] [SECONDS=10]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${CONNS:-256}
WORKERS=${SWITCHYARD_WORKERS:-2}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; fi
cargo build --release --quiet
BIN=$PWD/target/release/switchyard

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

RP=$(free_port); U1=$(free_port); U2=$(free_port); GP=$(free_port); AP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >/dev/null & pids+=($!)
"$BIN" demo-upstream --listen "127.0.0.1:$U1" --version v1 --threads 1 & pids+=($!)
"$BIN" demo-upstream --listen "127.0.0.1:$U2" --version v2 --threads 1 & pids+=($!)
wait_port "$RP"; wait_port "$U1"; wait_port "$U2"
export SWITCHYARD_REDIS_URL="redis://127.0.0.1:$RP/"

table() { # $1 = weight of v2 pool for v2 clients
cat <<EOF
[[versions]]
name = "v1"
status = "stable"

[[versions]]
name = "v2"
status = "current"

[[pools]]
name = "v1"
version = "v1"
endpoints = ["127.0.0.1:$U1"]

[[pools]]
name = "v2"
version = "v2"
endpoints = ["127.0.0.1:$U2"]

[[routes]]
name = "api"
path_prefix = "/api/"
default_version = "v2"

[routes.split]
v2 = [{ pool = "v2", weight = $1 }, { pool = "v1", weight = $((100 - $1)) }]
EOF
}
table 100 >"$tmp/t.toml"
"$BIN" config push "$tmp/t.toml" --message "storm base" >/dev/null
cat >"$tmp/boot.toml" <<EOF
[server]
listen = "127.0.0.1:$GP"
admin_listen = "127.0.0.1:$AP"
redis_url = "redis://127.0.0.1:$RP/"
workers = $WORKERS
EOF
RUST_LOG=warn "$BIN" run --config "$tmp/boot.toml" & pids+=($!); GWPID=$!
wait_port "$GP"

# The gateway's utime+stime in clock ticks: its CPU per request is steadier
# than req/s on a shared 2-core machine, where wrk, the upstreams and the
# pusher compete for the same cores.
ticks() { local r; r=$(cat "/proc/$GWPID/stat"); r=${r##*) }; set -- $r; echo $((${12} + ${13})); }
cpu_us() { python3 -c "print(round($1 * 1e6 / $(getconf CLK_TCK) / ($2 * $SECS), 1))"; }
run_wrk() { wrk -t2 -c"$CONNS" -d"${SECS}s" -H 'x-api-version: 2' "http://127.0.0.1:$GP/api/orders" 2>&1; }
table 99 >"$tmp/s99.toml"
# 100 pushes spread over the run (one every $GAP_MS ms), each a new
# revision written and announced the way `config push` does (document,
# revision, kept copy, PUBLISH in one MULTI), from ONE small process: the
# CLI's own start-up and validation would otherwise compete with the
# gateway for these 2 cores and measure the pusher, not the reload.
GAP_MS=${GAP_MS:-$((SECS * 800 / 100))}
storm() {
  python3 - "$RP" "$tmp/t.toml" "$tmp/s99.toml" "$GAP_MS" <<'PY'
import socket, sys, time
port, a, b, gap = int(sys.argv[1]), open(sys.argv[2]).read(), open(sys.argv[3]).read(), int(sys.argv[4]) / 1000
s = socket.create_connection(("127.0.0.1", port))
f = s.makefile("rb")
def cmd(*args):
    out = b"*%d\r\n" % len(args)
    for x in args:
        x = x if isinstance(x, bytes) else str(x).encode()
        out += b"$%d\r\n%s\r\n" % (len(x), x)
    return out
def reply():
    line = f.readline()
    if line[:1] == b"*":
        return [reply() for _ in range(int(line[1:]))]
    if line[:1] == b"$":
        n = int(line[1:]);
        return None if n < 0 else f.read(n + 2)[:-2]
    return line.strip()
P = "switchyard:{table}:"
for i in range(100):
    doc = b if i % 2 == 0 else a
    s.sendall(cmd("GET", P + "rev"))
    rev = int(reply() or 0) + 1
    s.sendall(cmd("MULTI") + cmd("SET", P + "doc", doc) + cmd("SET", P + "rev", rev)
              + cmd("HSET", P + "docs", rev, doc) + cmd("PUBLISH", P + "events", "table %d" % rev) + cmd("EXEC"))
    for _ in range(6):
        reply()
    time.sleep(gap)
PY
}
rps() { awk '/Requests\/sec/ {print $2}' <<<"$1"; }
non2xx() { awk '/Non-2xx/ {print $NF; f=1} END {if (!f) print 0}' <<<"$1"; }
errors() { awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10; f=1} END {if (!f) print 0}' <<<"$1"; }

run_wrk >/dev/null # warm-up
ratios=()
cpu_ratios=()
printf '%-6s %-6s %12s %8s %8s %8s %10s\n' round mode req/s non2xx sockerr pushes cpu_us/req
for r in $(seq 1 "$ROUNDS"); do
  t0=$(ticks); q=$(run_wrk); t1=$(ticks); qc=$(cpu_us $((t1 - t0)) "$(rps "$q")")
  printf '%-6s %-6s %12s %8s %8s %8s %10s\n' "$r" quiet "$(rps "$q")" "$(non2xx "$q")" "$(errors "$q")" 0 "$qc"
  before=$(curl -s "http://127.0.0.1:$AP/admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["table_revision"])')
  storm & sp=$!
  t0=$(ticks); s=$(run_wrk); t1=$(ticks); sc=$(cpu_us $((t1 - t0)) "$(rps "$s")")
  wait "$sp"
  after=$(curl -s "http://127.0.0.1:$AP/admin/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["table_revision"])')
  printf '%-6s %-6s %12s %8s %8s %8s %10s\n' "$r" storm "$(rps "$s")" "$(non2xx "$s")" "$(errors "$s")" "$((after - before))" "$sc"
  ratios+=("$(python3 -c "print(round($(rps "$s")/$(rps "$q"), 3))")")
  cpu_ratios+=("$(python3 -c "print(round($sc/$qc, 3))")")
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "storm/quiet throughput per round: ${ratios[*]}; median $median"
cmedian=$(printf '%s\n' "${cpu_ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
echo "storm/quiet gateway CPU per request per round: ${cpu_ratios[*]}; median $cmedian"
