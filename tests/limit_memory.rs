//! Limiter memory stays bounded under a million distinct keys: keys arrive
//! in waves (as from a scan or a botnet), the periodic eviction
//! (`Registry::evict_idle`: governor's `retain_recent` + `shrink_to_fit`)
//! runs between waves, and the process's resident memory is read from
//! `/proc/self/status`. Its own test binary, so no other test's allocations
//! share the process. Prints the figures (`cargo test --test limit_memory
//! -- --nocapture`).

use std::time::{Duration, Instant};

use switchyard::limit::Registry;

const KEYS: u64 = 1_000_000;
const WAVE: u64 = 50_000;

/// Resident set size in KiB (`VmRSS`).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

#[test]
fn a_million_distinct_keys_keep_rss_bounded() {
    let registry = Registry::default();
    // 1,000 requests a second: a key idle for 2 ms is indistinguishable
    // from a fresh one and is evicted.
    let limiter = registry.limiter("memory-test", 1_000, 0, Duration::from_secs(1));
    let start = Instant::now();
    let baseline = rss_kib();
    let mut peak = baseline;
    let mut peak_keys = 0;
    for wave in 0..KEYS / WAVE {
        for k in wave * WAVE..(wave + 1) * WAVE {
            // Spread like the hashed keys the gateway uses.
            let key = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(limiter.check(key).is_ok());
        }
        peak_keys = peak_keys.max(limiter.keys());
        peak = peak.max(rss_kib());
        std::thread::sleep(Duration::from_millis(5));
        registry.evict_idle();
    }
    let after = rss_kib();
    let elapsed = start.elapsed();
    println!(
        "{KEYS} distinct keys in waves of {WAVE}: RSS baseline {baseline} KiB, peak {peak} KiB \
         (+{} KiB), after the last eviction {after} KiB; at most {peak_keys} keys tracked, \
         {} left; {elapsed:?}",
        peak - baseline,
        limiter.keys()
    );
    assert_eq!(limiter.keys(), 0, "every idle key was evicted");
    assert!(peak_keys as u64 <= WAVE, "{peak_keys}");
    // Without eviction the million keys alone take ~35 MiB of map.
    assert!(
        peak - baseline < 16 * 1024,
        "RSS grew {} KiB over {KEYS} keys",
        peak - baseline
    );
    assert!(elapsed < Duration::from_secs(30), "took {elapsed:?}");
}
