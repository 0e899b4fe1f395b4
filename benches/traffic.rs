//! Per-request cost of the season calendar, the sticky split and the rate
//! limiters, the way `pipeline::Gateway::run` calls them (issue 5 targets:
//! season lookup + weighted sticky pick under 100 ns; a limiter check on a
//! hot key with 2 threads contending under 200 ns).
//!
//! * `traffic/season_sticky_pick`: as the pipeline runs it since 31151d2:
//!   the route's traffic headers (`x-geo`, `x-client-id`, `x-api-key`,
//!   `x-canary`) in one pass, the region of the `x-geo` value (mapped), the
//!   region's active season (one atomic load), then `split::pick`: canary
//!   probe, FNV-1a + fmix64 of `x-client-id`, the season's profile, the
//!   range scan. Four regions, three seasons, 3 profiles.
//! * `traffic/traffic_headers`: the one pass alone.
//! * `traffic/limiter_hot_key_1_thread`: `Limiter::check` on one key.
//! * `traffic/limiter_hot_key_2_threads`: the same key checked from two
//!   threads at once; the time is per check as one thread sees it while
//!   the other hammers the same key (since 17847b3 both reach its cell
//!   through their hot-key caches: one CAS on the key's word, no shard lock).
//! * `traffic/limiter_route_key_2_threads`: the same for a `key = "route"`
//!   budget, a direct limiter (one atomic word, no map).
//! * `traffic/limits_check_ip_and_client`: `Limits::check` for a route with
//!   a per-IP and a per-client policy (key hashing, trusted-proxy test,
//!   two limiter checks), as the pipeline runs it.
//! * `traffic/season_lookup` (region value to season), `traffic/sticky_pick`
//!   (the split given the found headers), `traffic/bucket_of`: the other
//!   parts of `season_sticky_pick` on their own.
//!
//! Measured with `cargo bench --bench traffic -- --warm-up-time 1
//! --measurement-time 3` (or 2 for the A/B rounds) on the 2-core shared VM
//! (AMD EPYC, KVM), criterion median, load average (1 min) per run. The
//! machine was never quiet (other engineers' release builds), so numbers
//! from one run to the next vary 2x; old and new binaries ran alternately
//! so each pair shares its load.
//!
//! 2026-12-01, commit 2b43df2 (before), first table:
//!
//! | bench                        | run 1 (load ~5) | run 2 (load ~4.5) | target  |
//! |------------------------------|-----------------|-------------------|---------|
//! | season_sticky_pick           | 152 ns          | 142 ns            | <100 ns |
//! | season_lookup                |                 | 93 ns             |         |
//! | sticky_pick                  |                 | 137 ns            |         |
//! | bucket_of (18-byte id)       |                 | 16 ns             |         |
//! | limiter_hot_key_1_thread     | 98 ns           | 87 ns             |         |
//! | limiter_hot_key_2_threads    | 294 ns          | 232 ns            | <200 ns |
//! | limiter_route_key_2_threads  | 170 ns          | 173 ns            | <200 ns |
//! | limits_check_ip_and_client   | 403 ns          | 324 ns            |         |
//!
//! 2026-12-01, c8a30c9 (before) against 17847b3 (after: header scan,
//! hot-key cache), alternating, medians:
//!
//! | bench                      | load | before | after  |
//! |----------------------------|------|--------|--------|
//! | season_sticky_pick         | 2.8  | 115 ns | 140 ns |
//! | season_sticky_pick         | 4-5  | 249 ns | 130 ns |
//! | season_sticky_pick         | 7.2  | 182 ns | 145 ns |
//! | season_sticky_pick         | 7.4  | 145 ns | 317 ns |
//! | season_sticky_pick         | 7.7  | 317 ns | 123 ns |
//! | season_sticky_pick         | 8-9  | 198 ns | 201 ns |
//! | limiter_hot_key_2_threads  | 7.2  | 244 ns | 138 ns |
//! | limiter_hot_key_2_threads  | 7.4  | 244 ns | 141 ns |
//! | limiter_hot_key_2_threads  | 7.7  | 484 ns | 169 ns |
//! | limiter_hot_key_2_threads  | 8-9  | 227 ns | 212 ns |
//! | limiter_hot_key_1_thread   | 8-9  | 98 ns  | 120 ns |
//! | limits_check_ip_and_client | 8-9  | 551 ns | 268 ns |
//!
//! Instructions per iteration (callgrind, `--profile-time 1`, load-free):
//! `season_sticky_pick` 603 -> 549, a `limiter_hot_key_1_thread` check
//! 196 -> 165. Before, 40% of `season_sticky_pick` was `HeaderMap::get`
//! hashing its three names (FNV, one multiply per byte of tag, length and
//! name, a serial chain); `headers::find` compares the request's few names
//! instead. Before, a keyed check was three atomic read-modify-writes (the
//! shard's reader count up and down, the state CAS) on two lines both
//! threads shared; now it is the CAS alone.
//!
//! Verdict: `limiter_hot_key_2_threads` is under its 200 ns target in 3 of
//! 4 loaded runs (212 ns at load 8-9) and about 1.7x faster than before in
//! the same conditions. `season_sticky_pick` is not shown under 100 ns: at
//! this load the pairs disagree in both directions, and the 9% fewer
//! instructions are within that noise; it needs a quiet machine (about
//! 0.7x the busy figures on this VM) to judge. It takes three header
//! lookups (`x-geo`, `x-canary`, `x-client-id`), one read-only map probe,
//! one atomic load and an 18-byte hash; nothing in it allocates or takes
//! a lock.

//!
//! 2026-12-01 14:31, d953fbd (before) against 31151d2 (after: one pass
//! for the four traffic headers, region values grouped by length and
//! binary-searched instead of copied, lower-cased, UTF-8-checked, trimmed
//! and FNV-hashed), `--warm-up-time 1 --measurement-time 2`, alternating,
//! criterion medians:
//!
//! | bench              | load (1 min) | before | after  |
//! |--------------------|--------------|--------|--------|
//! | season_sticky_pick | 4.9-5.0      | 140 ns | 115 ns |
//! | season_sticky_pick | 4.9-5.0      | 86 ns  | 69 ns  |
//!
//! Instructions per iteration (callgrind on the bench binary,
//! `--bench --profile-time 2 'traffic/season_sticky_pick$'`: inclusive
//! `Bencher::iter` over the calls of `split::pick`): 1,023 -> 847 (-17%).
//! Before: `region_of` 430 (the header scan and the hash lookup),
//! `split::pick` 549 (two more header scans); after: the one pass 405,
//! the region value 165, `split::pick` 222. What made "one atomic load"
//! cost 32 ns was not the load but `region_of` around it. The target
//! (< 100 ns) is met in the quieter pair (69 ns) but not at load 5 in the
//! first (115 ns); the one pass, still ~65 instructions per request
//! header, is the next thing to cut.

use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, header};
use switchyard::config::{self, Origin};
use switchyard::limit::{Limiter, Registry};
use switchyard::split;
use switchyard::table::RoutingTable;
use switchyard::upstream::Upstream;

const DOC: &str = r#"
[[versions]]
name = "v2"
status = "current"

[[pools]]
name = "v2"
version = "v2"
endpoints = ["127.0.0.1:19000"]

[[pools]]
name = "v2-canary"
version = "v2"
endpoints = ["127.0.0.1:19001"]

[[routes]]
name = "api"
path_prefix = "/api"
default_version = "v2"
limits = ["per-ip", "per-client"]

[routes.split]
v2 = [{ pool = "v2", weight = 90 }, { pool = "v2-canary", weight = 10 }]

[routes.profiles.peak]
v2 = [{ pool = "v2", weight = 98 }, { pool = "v2-canary", weight = 2 }]

[routes.profiles.saturday]
v2 = [{ pool = "v2", weight = 100 }, { pool = "v2-canary", weight = 0 }]

[calendar]
region_header = "x-geo"

[calendar.region_map]
US = "us-east-1"
IE = "eu-west-1"
SG = "ap-southeast-1"
AU = "au-southeast-2"

[[calendar.regions]]
name = "us-east-1"
time_zone = "America/New_York"

[[calendar.regions]]
name = "eu-west-1"
time_zone = "Europe/Dublin"

[[calendar.regions]]
name = "ap-southeast-1"
time_zone = "Asia/Singapore"

[[calendar.regions]]
name = "au-southeast-2"
time_zone = "Australia/Sydney"

[[calendar.seasons]]
name = "holiday"
dates = ["2026-12-24", "2026-12-25"]

[[calendar.seasons]]
name = "saturday"
weekdays = ["saturday"]
start = "08:00"
end = "23:00"

[[calendar.seasons]]
name = "peak"
regions = ["us-east-1"]
months = [5, 6, 7, 8, 9, 10]
limit_multiplier = 4.5

[rate_limits]
trusted_proxies = ["10.0.0.0/8"]

[[rate_limits.policies]]
name = "per-ip"
key = "ip"
requests = 100000000
window_secs = 1

[[rate_limits.policies]]
name = "per-client"
key = "client_id"
requests = 100000000
window_secs = 1
"#;

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("api.example.com"));
    h.insert(header::USER_AGENT, HeaderValue::from_static("wrk/4.2.0"));
    h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    h.insert("x-api-version", HeaderValue::from_static("2"));
    h.insert("x-geo", HeaderValue::from_static("US"));
    h.insert(
        "x-client-id",
        HeaderValue::from_static("acme-weddings-1234"),
    );
    h
}

fn table() -> RoutingTable {
    let doc = config::load(DOC, Origin::Embedded("benches/traffic.rs"))
        .unwrap_or_else(|e| panic!("bench table is invalid:\n{e}"));
    let table = RoutingTable::compile_with(
        &doc,
        &Upstream::default(),
        &Registry::default(),
        "bench".into(),
        0,
    );
    // A July Friday noon in New York: us-east-1 is in `peak`.
    table
        .calendar
        .refresh("2026-07-03T16:00:00Z".parse().unwrap());
    table
}

/// `iters` checks of one key on this thread while another thread checks
/// the same key as often; the time this thread took.
fn contended(limiter: &Limiter, iters: u64) -> Duration {
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        let other = s.spawn(|| {
            start.wait();
            for _ in 0..iters {
                let _ = black_box(limiter.check(black_box(42)));
            }
        });
        start.wait();
        let t0 = Instant::now();
        for _ in 0..iters {
            let _ = black_box(limiter.check(black_box(42)));
        }
        let elapsed = t0.elapsed();
        other.join().expect("contender");
        elapsed
    })
}

fn traffic(c: &mut Criterion) {
    let table = table();
    let route = &table.routes[0];
    let h = headers();
    let mut g = c.benchmark_group("traffic");

    // As `pipeline::Gateway::run`: the route's traffic headers in one pass,
    // then the season, then the split.
    g.bench_function("season_sticky_pick", |b| {
        b.iter(|| {
            let h = black_box(&h);
            let traffic = route.traffic.find(h);
            let rule = table
                .calendar
                .active(table.calendar.region_of(traffic.region));
            let season = table.calendar.season(rule);
            let profiles = route.splits[0].as_ref().expect("a split");
            split::pick(&route.split, profiles, season, &traffic, h, |p| {
                &*table.pools[p as usize].pool.name
            })
            .pool
        })
    });

    g.bench_function("traffic_headers", |b| {
        b.iter(|| route.traffic.find(black_box(&h)))
    });
    let traffic = route.traffic.find(&h);
    g.bench_function("season_lookup", |b| {
        b.iter(|| {
            let region = black_box(traffic.region);
            table
                .calendar
                .season(table.calendar.active(table.calendar.region_of(region)))
        })
    });
    let season = table.calendar.season(
        table
            .calendar
            .active(table.calendar.region_of(traffic.region)),
    );
    g.bench_function("sticky_pick", |b| {
        b.iter(|| {
            let profiles = route.splits[0].as_ref().expect("a split");
            split::pick(
                &route.split,
                profiles,
                season,
                black_box(&traffic),
                black_box(&h),
                |p| &table.pools[p as usize].pool.name,
            )
            .pool
        })
    });
    g.bench_function("bucket_of", |b| {
        b.iter(|| split::bucket_of(black_box(b"acme-weddings-1234")))
    });

    let registry = Registry::default();
    let hot = registry.limiter("hot", 1_000_000_000, 0, Duration::from_secs(1));
    g.bench_function("limiter_hot_key_1_thread", |b| {
        b.iter(|| hot.check(black_box(42)))
    });
    g.bench_function("limiter_hot_key_2_threads", |b| {
        b.iter_custom(|iters| contended(&hot, iters))
    });
    let budget = registry.direct_limiter("route", 1_000_000_000, 0, Duration::from_secs(1));
    g.bench_function("limiter_route_key_2_threads", |b| {
        b.iter_custom(|iters| contended(&budget, iters))
    });

    let peer: IpAddr = "203.0.113.7".parse().unwrap();
    g.bench_function("limits_check_ip_and_client", |b| {
        b.iter(|| {
            let h = black_box(&h);
            let traffic = route.traffic.find(h);
            let rule = table
                .calendar
                .active(table.calendar.region_of(traffic.region));
            table
                .limits
                .check(&route.limits, rule, &traffic, h, peer)
                .is_ok()
        })
    });
    g.finish();
}

criterion_group!(benches, traffic);
criterion_main!(benches);
