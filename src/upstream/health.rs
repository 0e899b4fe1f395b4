//! Endpoint health: the active checker (`[pools.health]`), passive outlier
//! ejection (`[pools.outlier]`), and what both leave on each endpoint for
//! the request path to read.
//!
//! The request path only reads atomics ([`Health::available`]); verdicts
//! are written by the checker task and by the forwarding code after an
//! exchange. Health lives on the endpoint, which outlives routing tables,
//! so a reload neither forgets an ejection nor re-admits a dead endpoint.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{Request, StatusCode};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Endpoint, Pool};
use crate::config::{HealthDoc, OutlierDoc};
use crate::table::TableHandle;

/// Milliseconds since the first call in this process, plus one (0 means
/// "never" in the atomics below).
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// One endpoint's health state.
#[derive(Debug)]
pub struct Health {
    /// The active checker's verdict; true until checks say otherwise.
    up: AtomicBool,
    /// Active probes in a row: > 0 successes, < 0 failures.
    streak: AtomicI32,
    /// Passive failures in a row.
    failures: AtomicU32,
    /// Ejected until this [`now_ms`]; 0 = never ejected.
    ejected_until: AtomicU64,
    /// Ejections so far (lengthens the next; decays while healthy).
    ejections: AtomicU32,
    /// When the checker probes next ([`now_ms`]).
    next_check: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            up: AtomicBool::new(true),
            streak: AtomicI32::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            next_check: AtomicU64::new(0),
        }
    }
}

impl Health {
    /// Whether requests may go to this endpoint. `now` is read once per
    /// pick, and only when some endpoint was ever ejected.
    pub fn available(&self, now: &mut Option<u64>) -> bool {
        if !self.up.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= *now.get_or_insert_with(now_ms)
    }

    fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// A snapshot for the admin API.
    pub fn report(&self) -> HealthReport {
        let now = now_ms();
        let until = self.ejected_until.load(Ordering::Relaxed);
        HealthReport {
            healthy: self.up.load(Ordering::Relaxed),
            ejected_for_ms: until.saturating_sub(now),
            ejections: self.ejections.load(Ordering::Relaxed),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
        }
    }
}

/// What `/admin/upstreams` shows per endpoint.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// The active checker's verdict.
    pub healthy: bool,
    /// Time left in the current ejection (0 = not ejected).
    pub ejected_for_ms: u64,
    /// Ejections so far.
    pub ejections: u32,
    /// Passive failures in a row.
    pub consecutive_failures: u32,
}

/// Compiled `[pools.outlier]`.
#[derive(Debug, Clone, Copy)]
pub struct Outlier {
    consecutive: u32,
    base_ms: u64,
    max_ms: u64,
    max_percent: u32,
}

impl From<&OutlierDoc> for Outlier {
    fn from(d: &OutlierDoc) -> Self {
        Outlier {
            consecutive: d.consecutive_failures,
            base_ms: d.base_ejection_ms,
            max_ms: d.max_ejection_ms,
            max_percent: d.max_ejected_percent,
        }
    }
}

/// Compiled `[pools.health]`.
#[derive(Debug, Clone)]
pub struct Check {
    path: http::uri::PathAndQuery,
    interval: Duration,
    timeout: Duration,
    expected: Option<StatusCode>,
    healthy_threshold: i32,
    unhealthy_threshold: i32,
}

impl From<&HealthDoc> for Check {
    fn from(d: &HealthDoc) -> Self {
        Check {
            path: d.path.parse().expect("validated health path"),
            interval: Duration::from_millis(d.interval_ms),
            timeout: Duration::from_millis(d.timeout_ms),
            expected: d.expected_status.and_then(|s| StatusCode::from_u16(s).ok()),
            healthy_threshold: d.healthy_threshold.min(i32::MAX as u32) as i32,
            unhealthy_threshold: d.unhealthy_threshold.min(i32::MAX as u32) as i32,
        }
    }
}

/// Records one exchange with `ep` (a member of `pool`) for outlier ejection.
pub(super) fn record(pool: &Pool, ep: &Endpoint, failed: bool) {
    let h = &ep.health;
    let Some(o) = pool.outlier.filter(|o| o.consecutive > 0) else {
        return;
    };
    if !failed {
        if h.failures.load(Ordering::Relaxed) != 0 {
            h.failures.store(0, Ordering::Relaxed);
        }
        // Decay: one ejection forgiven per base period served well since
        // the last one ended.
        let n = h.ejections.load(Ordering::Relaxed);
        if n > 0 {
            let now = now_ms();
            let until = h.ejected_until.load(Ordering::Relaxed);
            // `until` becomes `now`: not ejected, and the next decay needs
            // another full period. A concurrent ejection wins the exchange.
            if now > until + o.base_ms
                && h.ejected_until
                    .compare_exchange(until, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let _ =
                    h.ejections
                        .compare_exchange(n, n - 1, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
        return;
    }
    let failures = h.failures.fetch_add(1, Ordering::Relaxed) + 1;
    if failures < o.consecutive {
        return;
    }
    let now = now_ms();
    if h.ejected(now) {
        return;
    }
    let n = pool.endpoints.len() as u64;
    let ejected = pool
        .endpoints
        .iter()
        .filter(|e| e.health.ejected(now))
        .count() as u64;
    // Below the cap before this one: a single-endpoint pool can be ejected
    // (its failover takes over), a large pool never loses more than the cap.
    if ejected * 100 >= u64::from(o.max_percent) * n {
        tracing::warn!(pool = %pool.name, endpoint = %ep.authority, ejected, "outlier not ejected: the pool is at its ejection cap");
        return;
    }
    let times = h.ejections.fetch_add(1, Ordering::Relaxed) + 1;
    let length = (o.base_ms.saturating_mul(u64::from(times))).min(o.max_ms);
    h.ejected_until.store(now + length, Ordering::Relaxed);
    h.failures.store(0, Ordering::Relaxed);
    tracing::warn!(
        pool = %pool.name,
        endpoint = %ep.authority,
        failures,
        ejection_ms = length,
        ejections = times,
        "endpoint ejected after consecutive failures"
    );
}

/// Probes the endpoints of every pool with `[pools.health]` in the current
/// table, each at its pool's interval, until `shutdown`. Runs off the
/// request path (on the control plane's runtime); one probe per endpoint at
/// a time even if it appears in several pools (the first pool's check wins).
pub async fn run_checks(tables: Arc<TableHandle>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(table) = tables.load() else {
            continue;
        };
        let now = now_ms();
        let mut seen = std::collections::HashSet::new();
        for pool in table.pools.iter().map(|p| &p.pool) {
            let Some(check) = &pool.check else { continue };
            for ep in &pool.endpoints {
                if !seen.insert(Arc::as_ptr(ep)) {
                    continue;
                }
                let next = ep.health.next_check.load(Ordering::Relaxed);
                if next > now {
                    continue;
                }
                // Claimed until the probe's own deadline; it sets the next.
                ep.health.next_check.store(
                    now + check.timeout.as_millis() as u64 + check.interval.as_millis() as u64,
                    Ordering::Relaxed,
                );
                let (ep, check, pool_name) = (ep.clone(), check.clone(), pool.name.clone());
                let transport = pool.transport.clone();
                tokio::spawn(async move {
                    let ok = probe(&ep, transport.as_deref(), &check).await;
                    apply(&ep, &check, &pool_name, ok);
                    ep.health.next_check.store(
                        now_ms() + check.interval.as_millis() as u64,
                        Ordering::Relaxed,
                    );
                });
            }
        }
    }
}

fn apply(ep: &Endpoint, check: &Check, pool: &str, ok: Result<(), String>) {
    let h = &ep.health;
    match ok {
        Ok(()) => {
            let streak = h.streak.load(Ordering::Relaxed).max(0) + 1;
            h.streak.store(streak, Ordering::Relaxed);
            if streak >= check.healthy_threshold && !h.up.swap(true, Ordering::Relaxed) {
                // Back by the checks' verdict: a passive ejection from the
                // outage ends too (as Envoy's
                // successful_active_health_check_uneject_host does).
                let now = now_ms();
                if h.ejected(now) {
                    h.ejected_until.store(now, Ordering::Relaxed);
                }
                h.failures.store(0, Ordering::Relaxed);
                tracing::info!(pool, endpoint = %ep.authority, "endpoint healthy again");
            }
        }
        Err(why) => {
            let streak = h.streak.load(Ordering::Relaxed).min(0) - 1;
            h.streak.store(streak, Ordering::Relaxed);
            if -streak >= check.unhealthy_threshold && h.up.swap(false, Ordering::Relaxed) {
                tracing::warn!(pool, endpoint = %ep.authority, reason = %why, "endpoint unhealthy");
            }
        }
    }
}

/// One `GET path` on a fresh connection within the check's timeout.
async fn probe(
    ep: &Endpoint,
    transport: Option<&super::Transport>,
    check: &Check,
) -> Result<(), String> {
    let run = async {
        let mut sender = super::connect(ep, transport, check.timeout)
            .await
            .map_err(|e| e.to_string())?;
        let req = match transport.filter(|t| t.multiplexed()) {
            Some(t) => Request::get(super::h2_uri(t, ep.authority.clone(), check.path.clone()))
                .version(http::Version::HTTP_2),
            None => {
                Request::get(check.path.clone()).header(http::header::HOST, ep.host_value.clone())
            }
        }
        .header(http::header::USER_AGENT, "switchyard-health-check")
        .body(crate::body::Body::empty())
        .expect("valid probe request");
        let resp = sender.send(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let good = match check.expected {
            Some(want) => status == want,
            None => status.is_success(),
        };
        if good {
            Ok(())
        } else {
            Err(format!("status {status}"))
        }
    };
    match tokio::time::timeout(check.timeout, run).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", check.timeout)),
    }
}
