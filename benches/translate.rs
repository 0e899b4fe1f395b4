//! Translation engine cost per message, without sockets: the baseline next
//! to the chain in the same run, as STYLE asks.
//!
//! * `translate_2k`: a ~2 KB event body. `passthrough` is what an untouched
//!   body costs when it is buffered anyway (a copy of the bytes);
//!   `parse_serialize` is the strict parse plus serialisation with no change;
//!   `chain3_*` is parse + scope matching + 3 changes (rename into a new
//!   object, enum map, add with default) + serialisation, per direction.
//! * `translate_chain5`: the README's WedSync list endpoint between v1 and
//!   v2.2-beta (5 body changes over `/*/` and `/items/*/` paths: two
//!   renames, a map, a wrap, an add, plus the path rewrite), on ~1 KiB and
//!   ~64 KiB lists, in µs and MB/s. `response`: a v2.2-beta list down to a v1
//!   client; `request`: the same body sent by a v2.2-beta client to a v1
//!   pool (the other direction through the same five changes).
//!
//! Latest, 2026-12-02 10:54 and 11:15 (f14c403, whose translation code is
//! wt-tr6's below; this VM freshly booted, load average 1.3-1.5), two runs
//! of the bench binary, criterion's estimate:
//!
//! | leg | 1 KiB | 64 KiB |
//! | --- | --- | --- |
//! | request | 3.02 / 2.93 µs (332 / 344 MiB/s) | 153.7 / 150.0 µs (407 / 419 MiB/s) |
//! | response | 3.15 / 3.09 µs (319 / 327 MiB/s) | 159.4 / 151.1 µs (393 / 414 MiB/s) |
//!
//! Under the 5 µs target. Counted by callgrind as below, the 1 KiB legs
//! are 55.0k / 55.6k instructions, wt-tr6's figures: the same code ran
//! about twice as fast as in the runs below, which were on a busier VM
//! (nginx in `load.sh` spent 10.5 µs of CPU per request the same hour,
//! 17-21 µs on those days).
//!
//! Results, issue #3 (`cargo bench --bench translate`, 2026-12-01, on the
//! 2-core VM shared with other engineers' builds). Instruction counts are
//! the A/B figures: callgrind per leg, repeatable where wall time is not.
//! Wall times compare only at the same load average (`uptime`): 91a610d's
//! were taken at 18:07, load 1.6-1.7 (at load 4.4-4.6 ten minutes earlier
//! the same binary took 17.7 / 17.5 µs and 0.71 / 0.80 ms); 364860f's at
//! load 6.9-7.9. 87103f8's are A/B rounds at 21:34-21:36, load 1.0-1.1,
//! each binary run in turn (0d75dc5's, the same translation code as
//! 91a610d, between them): 1 KiB request 6.2 / 5.8 µs against 7.3 / 6.2
//! µs, response 5.8 / 5.5 µs against 7.4 / 8.0 µs (median of criterion's
//! estimate, two rounds each). The machine was no steadier than that at
//! load 1: two more rounds gave 8.4 / 6.1 µs against 10.6 / 10.7 µs
//! (request), 7.5 / 8.2 µs against 7.3 / 10.8 µs (response), and the 64 KiB legs scattered over 0.28-0.52 ms for both binaries, so
//! the 64 KiB cells are a range, not a figure.
//!
//! | bench | wt-tr6 | wt-tr5 | wt-tr4 | wt-tr3 | 87103f8 | 91a610d | 364860f | e05df5a |
//! | --- | --- | --- | --- | --- | --- | --- | --- | --- |
//! | callgrind, 1 KiB request leg | 55.2k (8ede52d here: 56.5k) | 56.4k (bb24c04 here: 59.3k) | 59.3k (de5c1f6 here: 62.8k) | 61.3k instructions | 65.1k instructions | 73.1k (73.9k) | 105.8k | 127.4k |
//! | callgrind, 1 KiB response leg | 55.8k (8ede52d here: 57.1k) | 57.0k (bb24c04 here: 59.9k) | 59.9k (de5c1f6 here: 63.4k) | 61.7k instructions | 65.0k instructions | 73.2k (73.7k) | 112.1k | 157.2k |
//! | callgrind, 64 KiB request leg | 2.95M (8ede52d here: 3.02M) | 3.02M (bb24c04 not counted here) | 3.17M (de5c1f6 here: 3.30M) | 3.22M instructions | 3.41M instructions | 3.70M | 5.28M | 6.28M |
//! | callgrind, 64 KiB response leg | 2.95M (8ede52d here: 3.02M) | 3.02M (bb24c04 not counted here) | 3.17M (de5c1f6 here: 3.30M) | 3.22M instructions | 3.41M instructions | 3.83M | 5.33M | 6.43M |
//! | chain5 1 KiB request | 6.1 / 7.2 µs (8ede52d: 6.7 / 8.9) | not measured | not measured | 6.0 / 7.6 µs (ea10f9e: 10.2 / 8.1) | 5.8-6.2 µs (0d75dc5: 6.2-7.3) | 6.1 µs (165 MiB/s) | 13.2 µs (76 MiB/s) | 19.0 µs |
//! | chain5 1 KiB response | 5.6 / 5.8 µs (8ede52d: 7.4 / 6.4) | not measured | not measured | 6.2 / 10.2 µs (ea10f9e: 8.9 / 6.5) | 5.5-5.8 µs (0d75dc5: 7.4-8.0) | 6.7 µs (151 MiB/s) | 13.8 µs (73 MiB/s) | 20.3 µs |
//! | chain5 64 KiB request | 0.31 / 0.32 ms (8ede52d: 0.32 / 0.34) | not measured | not measured | 0.27 / 0.33 ms (ea10f9e: 0.34 / 0.50) | 0.28-0.52 ms (0d75dc5: 0.42-0.49) | 0.35 ms (179 MiB/s) | 0.89 ms (70 MiB/s) | 1.02 ms |
//! | chain5 64 KiB response | 0.31 / 0.30 ms (8ede52d: 0.35 / 0.36) | not measured | not measured | 0.27 / 0.38 ms (ea10f9e: 0.33 / 0.47) | 0.33-0.48 ms (0d75dc5: 0.37-0.38) | 0.33 ms (189 MiB/s) | 1.13 ms (55 MiB/s) | 1.07 ms |
//!
//! The wt-tr6 column (branch wt-tr6): instruction counts by the method
//! below, built and counted on 2026-12-02 07:37-09:15 on this VM under
//! `nice -n 10` with `CARGO_TARGET_DIR=/work/tgt-tr6` (load average
//! 2.3-3.6 all along: these builds, and others' runs). Wall times: two
//! A/B rounds of the two bench binaries in turn under `nice -n 10`
//! (criterion's median estimate), at 09:32 with load 1.0 (8ede52d's) and
//! 1.2 (this branch's), then at 09:33 with load 1.7 and 2.1 (the bench
//! itself keeps one of the two cores busy). The first round is the one
//! below the load the method asks for; the second shows the scatter (a
//! 1 KiB request of 8ede52d's at 8.9 µs, 6.7 µs a minute before). A round
//! at 09:21, load 1.1 rising to 2.9, scattered as much (8ede52d's 1 KiB
//! request 7.8 then 6.2 µs, this branch's 1 KiB response 5.2 then 8.0 µs).
//! Main's code at 8ede52d (wt-tr5's translation code), built and counted
//! the same way before any change, gives 56.5k / 57.1k and 3.02M / 3.02M,
//! wt-tr5's own figures. Where the 1.3k (2.3%) went, 1 KiB request leg
//! (phases as in the wt-tr5 paragraph; response leg in brackets): parse
//! 25.7k -> 25.2k (26.2k -> 25.7k), an object of one member (two in each
//! element of the README's list, `client` and `event`) goes into the
//! document as it closes, without the scratch stack and the copy out of
//! it; serialise 8.1k -> 7.5k (8.5k -> 7.7k), a string member's opening
//! quote is written with its key's `":`, one write of three bytes instead
//! of two writes; scope matching 1.85k -> 1.67k (1.88k -> 1.69k), a path
//! literal is compared where it would be and must then end the segment,
//! where a scan for the segment's end came first. The changes did not
//! move on the request leg (19.2k); the response leg's went 20.1k ->
//! 19.6k with no change to their code (inlining around them moved). The
//! 64 KiB legs went 3.02M -> 2.95M. The figures are f6a6040's binary.
//!
//! Tried and dropped on wt-tr6 (1 KiB request leg, against the figures
//! before each):
//! * Redesign (1) below, fused groups (in the history: 8ddf43f, reverted
//!   by 64ad01f). The changes of one walk that each touch only keys of
//!   the element itself, no two the same key (a map of `/*/k`, a rename
//!   `k -> t` or `k/inner -> t`, a downgraded `add`), commute, so they
//!   ran together: one merge pass of the element's sorted members against
//!   the group's sorted keys (compiled with the plan, for the groups a leg
//!   meets when all its body steps are active), the checks, then one
//!   rewrite of the members, in place when no member is overwritten
//!   before it is read; an element with a rare case (a collision, a
//!   missing or non-object inner value, not an object) got the changes
//!   one by one. Correct (a test held it to the one-by-one result on both
//!   legs, refusals included) but dearer: the changes 19.2k -> 22.5k
//!   (56.5k -> 59.5k); a first form that wrote a new run through iterator
//!   adaptors gave 26.7k (63.7k). The rewrite alone cost ~340
//!   instructions an element, against ~50 for each `replace_at` it
//!   replaced, and the merge pass with its checks ~600, against ~700 for
//!   the three changes one by one: their lookups are short scans of four
//!   or five members, most steps a comparison of heads, and there was
//!   little to share. Not worth it for groups this small.
//! * The parser passing positions along as values (each step taking its
//!   position and returning the next) instead of keeping one in the
//!   parser, so that it would stay in a register across the pushes into
//!   the document: parse 25.7k -> 26.7k (the per-key path grew by ~7
//!   instructions); not committed.
//! * The serialiser writing into a zeroed slice at a position held in a
//!   local, instead of pushing onto a vector: serialise 8.1k -> 8.5k (the
//!   zeroing, and bounds checks no cheaper than the capacity checks they
//!   replaced); not committed. Its test of a body outgrowing its
//!   estimate stays.
//! * The string and key scans reading their word through `get(from..)`
//!   and `first_chunk` (two length checks, where `get(from..from + 8)`
//!   also checks the sum for overflow): parse 25.2k -> 25.5k; not
//!   committed.
//!
//! The wt-tr5 column (branch wt-tr5): instruction counts only, by the
//! method below, built and counted on 2026-12-02 04:45-05:50 on this VM
//! under `nice -n 10` with `CARGO_TARGET_DIR=/work/tgt-tr5`; no wall
//! times (load average 3-5 all along: these builds, and load runs by
//! others). Main's code at bb24c04 (the same translation code as wt-tr4),
//! built and counted the same way before any change, gives 59.3k / 59.9k,
//! wt-tr4's own figures; its 64 KiB legs were not counted again. The
//! figures are 74fc0fe's binary; the commits after it add a test and
//! formatting and take back a change that measured flat (below). Where
//! the 2.9k (5%) went, 1 KiB request leg (phases as the inclusive cost
//! of the bench's `request` -> `parse_json`, `Plan::run_body`, `to_bytes`
//! and `Plan::exchange` edges a call, which also take in the one `request`
//! of `bench_2k`'s setup: ±0.1k): the changes 21.7k -> 19.2k
//! (the common changes, a map, a flattening rename, an added key dropped,
//! run in line in the element walk, the other shapes out of line in
//! `apply_rest`, so a call per change and element with its prologue goes;
//! a flattening rename finds its two keys of the element in one pass, the
//! later one looked for after the earlier one, their order known when the
//! table compiles); scope matching 2.2k -> 1.8k (`matches` walks the
//! pattern without building captures, and `exchange` calls `rewrite` only
//! for a path rewrite). Parse 25.7k and serialise 8.1k are unchanged.
//!
//! Tried and dropped on wt-tr5 (in the history: c5e6201, 947dce1, then
//! reverted): the parser writing the children of a container that holds
//! no container straight into the document rather than through the
//! scratch stack and a copy (the run moved to the scratch stack when a
//! nested container turns up), reading `:` or `,` together with the byte
//! after it, and keeping the last key in a local for the order check.
//! With all of them parse went 25.7k -> ~28k: the key kept in a local
//! alone added ~1k (a 32-byte `Option` stored per key), the rest rose in
//! code callgrind could not give a source line; not taken apart further.
//! A map comparing its values by a byte loop instead of slice equality:
//! 56.41k -> 56.43k, flat, reverted. Pushing the members of a run of up to
//! four one by one instead of `extend_from_slice` (to skip a `memcpy`
//! call per small container): 56.4k -> 58.2k, reverted.
//!
//! The wt-tr4 column (branch wt-tr4, the commit that adds this text):
//! instruction counts only, by the method below, built and counted on
//! 2026-12-02 02:20-03:50 on this VM; no wall times (another engineer was
//! timing on the machine, and every build here ran under `nice`). Main's
//! code at de5c1f6, built and counted the same way on this branch before
//! any change, gives 62.8k / 63.4k and 3.30M / 3.30M, not wt-tr3's 61.3k /
//! 61.7k and 3.22M for what is the same translation code: the build, not
//! the code, moved by ~2.5%, so compare within a column's own baseline.
//! From that baseline (1 KiB request leg): 62.8k -> 61.8k, the parser
//! reads the next token with one load when no whitespace comes first
//! (`ws` then `peek` loaded and bounds-checked the byte twice; parse
//! 26.3k -> 25.7k), and a header rename asks `contains_key` before
//! `entry`, which reserved room in the map (an allocation on an empty
//! one) just to say the header is absent (0.55k -> 0.22k); -> 59.5k, a
//! change's anchor segments and a rename's flatten keys (per direction)
//! are worked out when the table compiles instead of being matched out of
//! the kind at every element (the changes 23.5k -> 21.7k), and an
//! exchange keeps its first 64 step bits in line instead of a vector
//! (scope matching 2.59k -> 2.42k); -> 59.3k, a path rewrite sizes its
//! output once and path literals compare by a byte loop rather than a
//! `memcmp` call (scope matching -> 2.21k). The 64 KiB legs went 3.30M ->
//! 3.17M (counted at the end only). The bench binary was the one `nice
//! -n 10 cargo bench --bench translate --no-run` builds, under
//! `CARGO_TARGET_DIR=/work/tgt-tr4`.
//!
//! Tried and dropped on wt-tr4: the serialiser writing a key's opening
//! quote together with the brace or comma before it (one capacity check
//! for the two bytes instead of one each): 59.33k -> 59.26k, flat, so not
//! worth the less obvious writer. Checking UTF-8 only inside strings,
//! and only those whose end scan met a byte above 0x7f (outside strings
//! the grammar admits ASCII alone), instead of one `from_utf8` pass over
//! the whole body (0.66k a 1 KiB leg): 59.33k -> 59.98k, worse, as the
//! extra high-bit tracking in the key and string scans cost more than the
//! pass it replaced; reverted (its test of bad bytes in strings, keys and
//! around escapes stays). Each build of this bench takes 6-9 minutes
//! here, which bounded the branch to a few measured rounds; the
//! redesigns below were out of reach in that time.
//!
//! The wt-tr3 column (branch wt-tr3, the commit that adds this text;
//! callgrind as below, main's binary at ea10f9e measured the same way
//! gives 65.2k / 65.0k and 3.41M / 3.41M, the 87103f8 figures): wall
//! times are two criterion rounds at 00:18-00:19 on 2026-12-02, each
//! binary in turn, at load 1.8-2.1 and then 1.6-2.3 (other engineers'
//! builds running), so they scatter as much as the differences they
//! would show; the instruction counts are the comparison. Where the
//! 3.9k (6%) went: parse 28.4k -> 26.3k (a key's head comes off the
//! first word the scan for its closing quote loads, instead of a second
//! bounds-checked read), the changes 25.6k -> 23.7k (a trailing `*`
//! visits elements in a loop rather than a recursion each; mapped values
//! carry their escaping from compile time instead of a byte scan per
//! replacement; the request's active-step list is one allocation, not
//! three). Serialise 8.2k and scope matching 2.4k are unchanged.
//!
//! Tried and dropped on this branch: copying a member straight from the
//! body when the body wrote it as we would (`"key":value` when the slices
//! of key and value lie in the body with only the colon between; a body
//! string with its quotes in one copy). Correct, and cheaper for untouched
//! members, but in this bench nearly every member is renamed, moved or
//! mapped, so the address checks cost more than the copies saved:
//! serialise went 8.5k -> 8.8k on the response leg.
//!
//! The target, under 5 µs per direction, is still not met (~45-50k
//! instructions a leg needed; wt-tr6 leaves 55.2k / 55.8k: parse 25.2k,
//! the changes 19.2k, serialise 7.5k, scope matching 1.7k, request leg;
//! wt-tr5 left 56.4k / 57.0k: parse 25.8k,
//! the changes 19.2k, serialise 8.1k, scope matching 1.8k, request leg;
//! wt-tr4 left 59.3k / 59.9k: parse 25.7k, the changes 21.7k, serialise
//! 8.2k, scope matching 2.2k). What remains is spread thin, as below: a
//! member still costs ~210 instructions to parse (32-byte nodes and
//! members written through a scratch stack, ~100 more per object to copy
//! the run out), and each change ~250-450 per element. Of the redesigns
//! listed at the end, (2) and (3) stay the way forward; (1) was tried on
//! wt-tr6 and cost more than it saved (above).
//!
//! The 2 KB group and the `changes_only` rows were not measured again; the
//! last ones, at 3c8ac0f, are in this file's history.
//!
//! Instruction counts: `valgrind --tool=callgrind
//! --toggle-collect='*translate::request*' <bench binary> --bench
//! --profile-time 1 'translate_chain5/1k_request$'` (the binary is
//! target/release/deps/translate-*; `*translate::response*` and
//! `64k_...` for the other legs). A leg's figure is the inclusive cost of
//! the call edge `criterion::bencher::Bencher<M>::iter ->
//! translate::request` (or `response`) divided by its calls, read from the
//! callgrind file (`callgrind_annotate --tree=caller` shows the edge), so
//! the setup calls from `translate::main` are left out. 91a610d's figures
//! were Ir totals divided by `parse_json` calls less the setup; its binary
//! measured this way (as 0d75dc5, the same translation code) gives the
//! figures in brackets, which is the baseline of the 87103f8 column.
//!
//! Where a 1 KiB request leg went at 87103f8 (65.1k): parse 28.4k (44%), the
//! changes 25.6k (39%), serialise 8.2k (13%), scope matching (`exchange`)
//! 2.3k. What took it from 73.9k: a rename that empties a member of the
//! element puts its new member in that slot (one shift of the members
//! between instead of a removal and an insertion, and the emptied nested
//! object is dropped whole, not emptied first): 70.4k; the commonest
//! rename, a field out of a nested object into its parent, has a path
//! without the general walk's bookkeeping; body documents and the
//! parser's scratch stacks reuse the last body's buffers on the thread
//! (five allocations and frees of 1-4 KiB each a parse); path patterns
//! split segments with a byte loop (scope matching 3.1k -> 2.3k).
//!
//! The issue's target, under 5 µs per direction, is still not met. The
//! rest is spread thin: a member costs ~90 instructions to parse and a
//! change ~250-550 to apply to one element (a rename's lookups, each
//! through a node, its span and a head-first key scan). Next steps, each
//! a redesign rather than a tweak: (1) per element, one merge pass of its
//! sorted members against the sorted keys its group of changes reads and
//! writes, instead of ~8 separate lookups (tried on wt-tr6: dearer, see
//! there); (2) smaller nodes and members
//! (text as `u32` offsets into the body rather than 16-byte slices inside
//! a three-way enum, which every comparison resolves); (3) a lazy
//! document: validate the whole body (UTF-8, depth, duplicate keys) but
//! materialise only the containers a change reaches, and write untouched
//! source runs back in one copy when they are already canonical (no
//! whitespace, sorted keys, escapes as we write them).

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use http::{HeaderMap, Method, StatusCode};
use serde_json::{Value, json};
use switchyard::config::{Origin, parse};
use switchyard::translate::{Limits, Plan, TranslationTable, parse_json, to_bytes};

const THREE: &str = r#"
[[versions]]
name = "v1"
status = "stable"

[[versions]]
name = "v2"
status = "current"

[[versions.changes]]
op = "rename"
from = "/client_name"
to = "/client/name"
paths = ["/api/events/*"]

[[versions.changes]]
op = "map"
at = "/status"
values = { booked = "confirmed", cancelled = "canceled" }
paths = ["/api/events/*"]

[[versions.changes]]
op = "add"
at = "/currency"
default = "EUR"
paths = ["/api/events/*"]
"#;

fn example() -> String {
    let text = include_str!("../README.md");
    let section = text.find("### Example: WedSync").expect("example section");
    let start = section + text[section..].find("```toml\n").expect("example") + 8;
    let len = text[start..].find("```").expect("end");
    text[start..start + len].to_string()
}

fn compile(text: &str) -> TranslationTable {
    let doc = parse(text, Origin::Embedded("bench")).expect("parses");
    TranslationTable::compile(&doc).expect("compiles")
}

/// A v1 event of about 2 KB: the translated fields plus realistic bulk.
fn event_2k() -> Bytes {
    let guests: Vec<Value> = (0..24)
        .map(|i| json!({"id": i, "full_name": format!("Guest number {i}"), "diet": "none", "rsvp": true, "table": i % 4}))
        .collect();
    let body = json!({
        "id": 12345678901234567890u64,
        "client_name": "Ann Example",
        "status": "booked",
        "wedding_date": "2027-06-12",
        "venue": {"name": "The Old Mill", "city": "Bath", "capacity": 180},
        "guests": guests,
        "notes": "Ceremony at 14:00, reception from 16:00. Vegetarian menu for table 3.",
    });
    let bytes = Bytes::from(serde_json::to_vec(&body).expect("serialises"));
    assert!((1800..2600).contains(&bytes.len()), "{} bytes", bytes.len());
    bytes
}

/// A v1 list of events of at least `bytes` bytes (~80 bytes an event).
fn list(bytes: usize) -> Bytes {
    let mut items = Vec::new();
    loop {
        let i = items.len();
        let status = if i.is_multiple_of(2) {
            "booked"
        } else {
            "pending"
        };
        items.push(json!({"id": i, "client_name": format!("Client {i}"), "wedding_date": "2027-06-12", "status": status}));
        let out =
            Bytes::from(serde_json::to_vec(&Value::Array(items.clone())).expect("serialises"));
        if out.len() >= bytes {
            return out;
        }
    }
}

fn request(plan: &Plan, method: &Method, path: &str, bytes: &[u8]) -> Bytes {
    let body = parse_json(bytes, Limits::default()).expect("valid");
    let mut ex = plan.exchange(method, path);
    let mut p = path.to_string();
    let out = plan
        .request(&mut ex, &mut p, &mut HeaderMap::new(), Some(body))
        .expect("translates");
    to_bytes(&out.expect("body"))
}

fn response(plan: &Plan, method: &Method, path: &str, bytes: &[u8]) -> Bytes {
    let body = parse_json(bytes, Limits::default()).expect("valid");
    let ex = plan.exchange(method, path);
    let mut status = StatusCode::OK;
    let out = plan
        .response(&ex, &mut status, &mut HeaderMap::new(), Some(body))
        .expect("translates");
    to_bytes(&out.expect("body"))
}

fn bench_2k(c: &mut Criterion) {
    let table = compile(THREE);
    let up = table.plan(0, 1).expect("plan");
    let v1 = event_2k();
    let v2 = request(up, &Method::PUT, "/api/events/1", &v1);
    let mut g = c.benchmark_group("translate_2k");
    g.throughput(Throughput::Bytes(v1.len() as u64));
    g.bench_function("passthrough", |b| {
        b.iter(|| Bytes::copy_from_slice(black_box(&v1)))
    });
    g.bench_function("parse_serialize", |b| {
        b.iter(|| to_bytes(&parse_json(black_box(&v1), Limits::default()).expect("valid")))
    });
    g.bench_function("serde_json_value", |b| {
        // serde_json's own lenient Value parser, for scale.
        b.iter(|| {
            let v: Value = serde_json::from_slice(black_box(&v1)).expect("valid");
            Bytes::from(serde_json::to_vec(&v).expect("serialises"))
        })
    });
    g.bench_function("chain3_request", |b| {
        b.iter(|| request(up, &Method::PUT, "/api/events/1", black_box(&v1)))
    });
    g.bench_function("chain3_response", |b| {
        // The response leg of a v1 client: v2 body down to v1.
        b.iter(|| response(up, &Method::GET, "/api/events/1", black_box(&v2)))
    });
    g.finish();
}

fn bench_chain5(c: &mut Criterion) {
    let table = compile(&example());
    let (v1, beta) = (0, 2);
    let plan = table.plan(v1, beta).expect("plan");
    let reverse = table.plan(beta, v1).expect("plan");
    let mut g = c.benchmark_group("translate_chain5");
    for (name, n) in [("1k", 1024), ("64k", 64 * 1024)] {
        let v1_list = list(n);
        // What a v2.2-beta pool answers: the list as its own version writes it.
        let beta_list = response(reverse, &Method::GET, "/api/events", &v1_list);
        g.throughput(Throughput::Bytes(v1_list.len() as u64));
        g.bench_function(format!("{name}_request"), |b| {
            // A v2.2-beta client's list body going down to a v1 pool.
            b.iter(|| request(reverse, &Method::GET, "/api/events", black_box(&beta_list)))
        });
        g.bench_function(format!("{name}_response"), |b| {
            b.iter(|| response(plan, &Method::GET, "/api/weddings", black_box(&beta_list)))
        });
        // The chain alone: scope matching and the five changes on a parsed
        // body (the clone of the input is outside the timing).
        let parsed = parse_json(&beta_list, Limits::default()).expect("valid");
        g.bench_function(format!("{name}_response_changes_only"), |b| {
            b.iter_batched(
                || parsed.clone(),
                |body| {
                    let mut status = StatusCode::OK;
                    let ex = plan.exchange(&Method::GET, "/api/weddings");
                    plan.response(&ex, &mut status, &mut HeaderMap::new(), Some(body))
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_2k, bench_chain5
}
criterion_main!(benches);
