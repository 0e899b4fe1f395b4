//! Retries (`[routes.retry]`): when a failed upstream exchange may be tried
//! again, and the budget that keeps retries from amplifying an outage.
//!
//! A request is retried only if it provably never reached the upstream (no
//! connection could be made: safe for any method, even with a streamed
//! body, which was never read), or if its method is idempotent and its body
//! can be sent again (none, or buffered for translation); a streamed body
//! that was already sent is never replayed. The budget is concurrency-based,
//! like Envoy's: retries in progress on a route may not exceed
//! `budget_percent` of its requests in progress, plus a floor of
//! `min_retries`, so when every endpoint fails the extra load is bounded.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::config::RetryDoc;

/// A route's compiled retry policy and its live counters.
#[derive(Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1 = never retry).
    pub attempts: u32,
    /// Timeout of one try; `None` = the route's whole timeout.
    pub per_try: Option<Duration>,
    statuses: Vec<StatusCode>,
    budget_percent: u32,
    min_retries: u32,
    active: AtomicU32,
    retrying: AtomicU32,
}

impl From<&RetryDoc> for RetryPolicy {
    fn from(d: &RetryDoc) -> Self {
        RetryPolicy {
            attempts: d.attempts.max(1),
            per_try: (d.per_try_timeout_ms > 0)
                .then(|| Duration::from_millis(d.per_try_timeout_ms)),
            statuses: d
                .retry_statuses
                .iter()
                .filter_map(|s| StatusCode::from_u16(*s).ok())
                .collect(),
            budget_percent: d.budget_percent,
            min_retries: d.min_retries,
            active: AtomicU32::new(0),
            retrying: AtomicU32::new(0),
        }
    }
}

impl RetryPolicy {
    /// Counts a request in progress on the route until the guard drops.
    pub fn enter(&self) -> Attempts<'_> {
        self.active.fetch_add(1, Ordering::Relaxed);
        Attempts {
            policy: self,
            held: 0,
        }
    }

    /// Whether an answer with `status` is worth another try.
    pub fn retry_status(&self, status: StatusCode) -> bool {
        self.statuses.contains(&status)
    }

    /// Retries in progress on the route now.
    pub fn retrying(&self) -> u32 {
        self.retrying.load(Ordering::Relaxed)
    }
}

/// Whether `method` may be sent twice without changing the outcome.
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// One request's share of its route's retry budget.
#[derive(Debug)]
pub struct Attempts<'a> {
    policy: &'a RetryPolicy,
    held: u32,
}

impl Attempts<'_> {
    /// Takes one retry from the budget, if it has room.
    pub fn try_retry(&mut self) -> bool {
        let p = self.policy;
        let active = p.active.load(Ordering::Relaxed);
        let cap =
            (u64::from(active) * u64::from(p.budget_percent) / 100).max(u64::from(p.min_retries));
        let now = p.retrying.fetch_add(1, Ordering::Relaxed) + 1;
        if u64::from(now) > cap {
            p.retrying.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        self.held += 1;
        true
    }
}

impl Drop for Attempts<'_> {
    fn drop(&mut self) {
        self.policy.active.fetch_sub(1, Ordering::Relaxed);
        if self.held > 0 {
            self.policy.retrying.fetch_sub(self.held, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(percent: u32, floor: u32) -> RetryPolicy {
        RetryPolicy::from(&RetryDoc {
            budget_percent: percent,
            min_retries: floor,
            ..RetryDoc::default()
        })
    }

    #[test]
    fn budget_is_a_fraction_of_requests_in_progress_plus_a_floor() {
        let p = policy(20, 2);
        let mut guards: Vec<_> = (0..50).map(|_| p.enter()).collect();
        // 20% of 50 = 10 retries at once, then no more.
        let granted = guards
            .iter_mut()
            .map(|g| g.try_retry())
            .filter(|ok| *ok)
            .count();
        assert_eq!(granted, 10);
        assert_eq!(p.retrying(), 10);
        drop(guards);
        assert_eq!(p.retrying(), 0, "finished requests give their retries back");
        // Few requests: the floor applies.
        let mut g = [p.enter(), p.enter()];
        assert!(g[0].try_retry() && g[1].try_retry());
        assert!(!g[0].try_retry(), "floor of 2 reached");
    }

    #[test]
    fn only_idempotent_methods_replay() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!idempotent(&m), "{m}");
        }
    }
}
