#!/usr/bin/env bash
# Profile-guided build of the gateway: the release binary, laid out by
# what a gateway actually runs.
#
#   benches/pgo.sh        # -> target/pgo/switchyard (about 10 minutes)
#
# Why: on these 2-CPU machines switchyard's request path executes fewer
# instructions than nginx's (22.4k against 23.4k per proxied request,
# counted by callgrind), yet spent more user time, because its hot code is
# spread over large functions whose cold parts (error paths, the
# fallbacks) share its cache lines. By callgrind's cache simulation
# (benches/icache.sh, 64 connections) the plain build takes 174-175
# first-level instruction-cache misses per request, nginx 100, and this
# build 11; under benches/load.sh it spent 2-6% less CPU per request than
# the plain build (the README's Benchmarks).
#
# Steps:
#  1. an instrumented build (rustc -Cprofile-generate) in target/pgo-gen;
#  2. training: that binary serves, on 127.0.0.1 ports picked free, its
#     own demo upstream and
#       a. the load benchmark's table (header detection, v1/v2): wrk GETs
#          at 32 and 256 connections, then a mix of detection sources
#          (header, Accept, path prefix, query), unknown versions (400),
#          unrouted paths (404), and small JSON POSTs;
#       b. the demo table's change chain: v1 clients translated to v2 and
#          back (GET list, POST body), and plain v2 clients;
#     each stopped with SIGTERM, which writes its profile at exit;
#  3. llvm-profdata merges the profiles; it must be of rustc's LLVM major
#     version (installed with apt-get as llvm-N when missing);
#  4. the optimized build (rustc -Cprofile-use) in target/pgo-use, copied to
#     target/pgo/switchyard with the merged profile beside it.
#
# The same source and Cargo profile as `cargo build --release` (fat LTO,
# one codegen unit); only the code layout and inlining follow the profile.
# Builds are for the host target (`--target`), so build scripts and
# proc-macros are not instrumented.
#
# Environment: PGO_TRAIN_SECS (seconds per wrk phase, default 4).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BENCH=pgo.sh
# shellcheck source=benches/common.sh
source "$ROOT/benches/common.sh"
bench_tmp switchyard-pgo
SECS=${PGO_TRAIN_SECS:-4}

ensure_packages wrk=wrk curl=curl python3=python3
HOST=$(rustc -vV | awk '/^host:/ {print $2}')
LLVM_MAJOR=$(rustc -vV | awk '/^LLVM version:/ {split($3, v, "."); print v[1]}')
[[ -n $HOST && -n $LLVM_MAJOR ]] || die "cannot read the host target and LLVM version from rustc -vV"
PROFDATA=
for p in "llvm-profdata-$LLVM_MAJOR" "/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-profdata"; do
    if command -v "$p" >/dev/null; then
        PROFDATA=$(command -v "$p")
        break
    fi
done
if [[ -z $PROFDATA ]]; then
    [[ $(id -u) == 0 ]] || die "llvm-profdata $LLVM_MAJOR (rustc's LLVM) is missing: install llvm-$LLVM_MAJOR"
    log "installing llvm-$LLVM_MAJOR (llvm-profdata of rustc's LLVM version)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "llvm-$LLVM_MAJOR" >/dev/null ||
        die "apt-get install llvm-$LLVM_MAJOR failed: rustc uses LLVM $LLVM_MAJOR and its profiles need that llvm-profdata"
    PROFDATA=/usr/lib/llvm-$LLVM_MAJOR/bin/llvm-profdata
fi
"$PROFDATA" --version | grep -q "LLVM version $LLVM_MAJOR\." ||
    die "$PROFDATA is not LLVM $LLVM_MAJOR (rustc's): $("$PROFDATA" --version | grep 'LLVM version')"

DATA=$ROOT/target/pgo/profiles
rm -rf "$DATA"
mkdir -p "$DATA"

log "1/4 instrumented build (target/pgo-gen)"
RUSTFLAGS="-Cprofile-generate=$DATA" timeout 1800 cargo build --release --quiet --locked \
    --bin switchyard --target "$HOST" --target-dir "$ROOT/target/pgo-gen"
BIN=$ROOT/target/pgo-gen/$HOST/release/switchyard

log "2/4 training"
read -r UP GW ADMIN <<<"$(free_ports 3)"
start_upstream "$UP"

# stop PID: SIGTERM and wait (the profile is written at exit).
stop() {
    kill -TERM "$1"
    wait "$1" 2>/dev/null || true
}

# serve CONFIG URL: the instrumented gateway on CONFIG (listening on $GW),
# ready once it answers URL (with the header in $HDR); its PID in GW_PID.
serve() {
    RUST_LOG=warn "$BIN" run --config "$1" --workers 2 >"$TMP/gateway.log" 2>&1 &
    GW_PID=$!
    PIDS+=("$GW_PID")
    wait_ready switchyard "$2" "$GW_PID" || { cat "$TMP/gateway.log" >&2; exit 1; }
}

cat >"$TMP/train.lua" <<'LUA'
-- Rotations of requests, chosen by the script's argument (wrk ... -- SET).
-- A request with its own header table gets no Host from wrk: add one.
local function h(t)
  t = t or {}
  t["Host"] = "localhost"
  return t
end
local sets = {
  -- a. every detection source, errors, small POSTs.
  bench = {
    wrk.format("GET", "/api/orders", h{["x-api-version"] = "1"}),
    wrk.format("GET", "/api/orders/17?expand=items", h{["Accept"] = "application/vnd.wedsync.v2+json"}),
    wrk.format("GET", "/api/orders", h{["Accept"] = "application/json; version=1"}),
    wrk.format("GET", "/api/v1/orders", h()),
    wrk.format("GET", "/api/orders?api-version=2", h()),
    wrk.format("GET", "/api/orders", h{["x-api-version"] = "v9"}),
    wrk.format("GET", "/elsewhere", h{["x-api-version"] = "2"}),
    wrk.format("POST", "/api/orders", h{["x-api-version"] = "2", ["Content-Type"] = "application/json"},
      '{"couple":"A & B","date":"2027-06-12","guests":120}'),
    wrk.format("PUT", "/api/orders/17", h{["x-api-version"] = "2", ["Content-Type"] = "application/json"},
      '{"guests":121}'),
    wrk.format("DELETE", "/api/orders/17", h{["x-api-version"] = "2", ["x-request-id"] = "abc-123",
      ["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}),
  },
  -- b. translated both ways, plain, an unknown version.
  chain = {
    wrk.format("GET", "/api/weddings?n=9", h{["x-api-version"] = "1"}),
    wrk.format("GET", "/api/events?n=9", h{["x-api-version"] = "2"}),
    wrk.format("POST", "/api/weddings", h{["x-api-version"] = "1", ["Content-Type"] = "application/json"},
      '{"client_name":"A & B","wedding_date":"2027-06-12","guest_count":120,"venue":"Harbour Hall"}'),
    wrk.format("GET", "/api/weddings/7", h{["x-api-version"] = "v0"}),
  },
}
local reqs, i = nil, 0
init = function(args)
  reqs = sets[args[1]]
end
request = function()
  i = i % #reqs + 1
  return reqs[i]
end
LUA

# a. the load benchmark's table.
{
    gateway_server "$GW" "$ADMIN"
    gateway_table "$UP"
} >"$TMP/bench.toml"
HDR='x-api-version: 2'
serve "$TMP/bench.toml" "http://127.0.0.1:$GW/api/orders"
for c in 32 256; do
    wrk -t2 -c"$c" -d"${SECS}s" -H "$HDR" "http://127.0.0.1:$GW/api/orders" >/dev/null
done
wrk -t2 -c32 -d"${SECS}s" -s "$TMP/train.lua" "http://127.0.0.1:$GW" -- bench >/dev/null
stop "$GW_PID"

# b. the demo table's change chain, every pool on the one upstream and v1
# clients sent to the v2 pool (benches/demo_table.py, as for benches/translate_load.sh).
python3 benches/demo_table.py "$UP" "$GW" "$ADMIN" >"$TMP/demo.toml"
HDR='x-api-version: 1'
serve "$TMP/demo.toml" "http://127.0.0.1:$GW/api/weddings?n=9"
curl -fsS -H 'x-api-version: 1' "http://127.0.0.1:$GW/api/weddings?n=9" | grep -q '"client_name"' ||
    die "the demo table did not translate during training"
wrk -t2 -c32 -d"${SECS}s" -s "$TMP/train.lua" "http://127.0.0.1:$GW" -- chain >/dev/null
stop "$GW_PID"
stop "$UP_PID"

log "3/4 merging $(find "$DATA" -name '*.profraw' | wc -l) profiles"
"$PROFDATA" merge -o "$ROOT/target/pgo/switchyard.profdata" "$DATA"

log "4/4 optimized build (target/pgo-use)"
RUSTFLAGS="-Cprofile-use=$ROOT/target/pgo/switchyard.profdata" timeout 1800 cargo build --release --quiet --locked \
    --bin switchyard --target "$HOST" --target-dir "$ROOT/target/pgo-use"
cp "$ROOT/target/pgo-use/$HOST/release/switchyard" "$ROOT/target/pgo/switchyard"
echo "built $ROOT/target/pgo/switchyard (profile: target/pgo/switchyard.profdata)"
