//! Rate limits: keyed policies (client id, API key, client IP, route) on
//! governor's GCRA limiters, a quota multiplier per season, and the IETF
//! draft `RateLimit-Policy` / `RateLimit` fields. Owns limiter state and
//! its eviction; knows nothing about calendars beyond the active rule id
//! the caller passes (the table maps each rule to a quota variant).
//!
//! A governor quota cannot change after the limiter is built, so each
//! policy compiles to one limiter per distinct effective quota (the base and
//! each season's multiplied one); a request checks the variant of its
//! region's active season. Limiters live in a [`Registry`] outside the
//! table, keyed by the policy's canonical form (name, key, quota, window,
//! burst): a reload that leaves a policy unchanged keeps its counts, like
//! `upstream` keeps endpoint state.
//!
//! Request path: per policy, one keyed SipHash of the key bytes (a
//! per-process random key, so clients cannot aim at each other's buckets),
//! then governor's GCRA on the key's state word in our [`StateStore`]: a
//! key this thread checked just before is found in the thread's hot-key
//! cache and costs one CAS on its own word (two workers on one hot key
//! share only that line); others take a read-locked DashMap shard lookup
//! and the CAS. No allocation unless the answer carries headers or a key
//! turns hot (its cell moves into an `Arc`, once while it stays tracked).
//! Idle keys are dropped by [`Registry::evict_idle`] from a periodic task
//! (`retain_recent` + `shrink_to_fit`), so memory follows the keys active
//! in the last window.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use crate::config::{ConfigError, Document, LimitKey, RouteDoc};
use crate::headers::{Traffic, X_FORWARDED_FOR};
use crate::season::{Calendar, RuleId};

/// How often the serving gateway drops idle limiter keys.
pub const EVICT_EVERY: Duration = Duration::from_secs(10);

/// Largest `requests + burst` of a policy (after the season multiplier).
pub const MAX_CAPACITY: u64 = 1_000_000_000;

/// Keys are already keyed-SipHash outputs: the map uses them as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Governor = RateLimiter<u64, KeyStore, DefaultClock, StateInformationMiddleware>;

/// One budget for everyone (`key = "route"`): a single atomic, no map and
/// no shard lock, however many workers hit it at once.
type DirectGovernor =
    RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

enum Store {
    Keyed(Governor),
    Direct(DirectGovernor),
}

/// A key's GCRA state: governor's theoretical arrival time in nanoseconds
/// since the limiter started (0 = never measured, [`EVICTED`] = dropped by
/// eviction, never counted in again).
enum Cell {
    /// A key not (yet) hot: reached only through its shard's lock.
    Inline(AtomicU64),
    /// A hot key: also held by the [`HOT`] caches of the threads checking
    /// it, which reach it without the shard lock.
    Shared(Arc<AtomicU64>),
}

impl Cell {
    #[inline]
    fn tat(&self) -> &AtomicU64 {
        match self {
            Cell::Inline(tat) => tat,
            Cell::Shared(tat) => tat,
        }
    }
}

/// State word of a cell [`KeyStore::retain_recent`] dropped.
const EVICTED: u64 = u64::MAX;

/// A cell reached through the map under its shard lock is live: eviction
/// marks a cell and removes it under that shard's write lock.
const LIVE: &str = "a cell in the map is not evicted";

/// governor's GCRA step on one state word (the CAS loop of its
/// `InMemoryState`); `None` when the cell was evicted meanwhile.
#[inline]
fn measure<T, E>(
    tat: &AtomicU64,
    f: &impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Option<Result<T, E>> {
    let mut prev = tat.load(Ordering::Acquire);
    loop {
        if prev == EVICTED {
            return None;
        }
        let (out, next) = match f(NonZeroU64::new(prev).map(|n| Nanos::from(n.get()))) {
            Ok(step) => step,
            Err(e) => return Some(Err(e)),
        };
        match tat.compare_exchange_weak(prev, next.into(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(Ok(out)),
            Err(now) => prev = now,
        }
    }
}

/// Slots of a thread's hot-key cache (direct-mapped by key).
const HOT_SLOTS: usize = 64;

/// One slot of [`HOT`]: a (limiter, key) this thread checked last, and the
/// key's shared cell once the key is hot here.
struct HotSlot {
    limiter: u64,
    key: u64,
    tat: Option<Arc<AtomicU64>>,
}

thread_local! {
    /// Per thread, the cells of the keys it checks again and again. A
    /// DashMap read still takes the shard's reader count (two atomic
    /// read-modify-writes on a line every thread checking that shard
    /// shares); through this cache a hot key costs one CAS on its own word.
    static HOT: RefCell<[HotSlot; HOT_SLOTS]> = const {
        RefCell::new(
            [const {
                HotSlot {
                    limiter: 0,
                    key: 0,
                    tat: None,
                }
            }; HOT_SLOTS],
        )
    };
}

/// Process-unique limiter ids (0 = an empty [`HotSlot`]), so a thread's
/// cache never mistakes one limiter's key for another's.
static NEXT_STORE: AtomicU64 = AtomicU64::new(1);

/// The keyed limiters' state store: a DashMap of per-key cells, fronted by
/// each thread's [`HOT`] cache. A key a thread checks twice in a row
/// becomes hot there: its cell moves into an `Arc` (allocated once per key
/// while it stays in the map) the thread keeps, so later checks skip the
/// map; other keys are checked in place under the shard's read lock.
/// Eviction marks a shared cell [`EVICTED`] with a CAS that fails if a
/// check counted in it meanwhile, so no request is counted in a dropped
/// cell and no active key is dropped.
struct KeyStore {
    map: DashMap<u64, Cell, BuildHasherDefault<PassThrough>>,
    id: u64,
}

impl Default for KeyStore {
    fn default() -> Self {
        KeyStore {
            map: DashMap::with_hasher(Default::default()),
            id: NEXT_STORE.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl KeyStore {
    /// The map path: in place under the shard's read lock, or under its
    /// write lock for a new key or a promotion; with `promote`, also the
    /// key's shared cell for the caller's cache.
    fn measure_in_map<T, E>(
        &self,
        key: u64,
        promote: bool,
        f: &impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    ) -> (Result<T, E>, Option<Arc<AtomicU64>>) {
        if let Some(cell) = self.map.get(&key) {
            match &*cell {
                Cell::Inline(tat) if !promote => return (measure(tat, f).expect(LIVE), None),
                Cell::Inline(_) => {}
                Cell::Shared(tat) => {
                    return (measure(tat, f).expect(LIVE), promote.then(|| tat.clone()));
                }
            }
        }
        let mut cell = self
            .map
            .entry(key)
            .or_insert_with(|| Cell::Inline(AtomicU64::new(0)));
        if promote && let Cell::Inline(tat) = &*cell {
            // Under the write lock: nobody else can be counting in `tat`.
            let now = tat.load(Ordering::Acquire);
            *cell = Cell::Shared(Arc::new(AtomicU64::new(now)));
        }
        let out = measure(cell.tat(), f).expect(LIVE);
        let shared = match &*cell {
            Cell::Shared(tat) if promote => Some(tat.clone()),
            _ => None,
        };
        (out, shared)
    }
}

impl StateStore for KeyStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let key = *key;
        // Keys are keyed-SipHash outputs: their low bits are uniform.
        let at = ((key ^ self.id.wrapping_mul(0x9e37_79b9_7f4a_7c15)) as usize) % HOT_SLOTS;
        let cached = HOT.try_with(|hot| {
            let mut hot = hot.borrow_mut();
            let slot = &mut hot[at];
            let promote = if slot.limiter == self.id && slot.key == key {
                if let Some(tat) = &slot.tat {
                    if let Some(out) = measure(tat, &f) {
                        return out;
                    }
                    // Evicted while idle: count in the map's new cell.
                    slot.tat = None;
                    false
                } else {
                    true
                }
            } else {
                *slot = HotSlot {
                    limiter: self.id,
                    key,
                    tat: None,
                };
                false
            };
            let (out, shared) = self.measure_in_map(key, promote, &f);
            if shared.is_some() {
                slot.tat = shared;
            }
            out
        });
        // Only while this thread's locals are being destroyed.
        cached.unwrap_or_else(|_| self.measure_in_map(key, false, &f).0)
    }
}

impl ShrinkableKeyedStateStore<u64> for KeyStore {
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = u64::from(drop_below);
        self.map.retain(|_, cell| match cell {
            // Under the shard's write lock nothing else reaches an inline cell.
            Cell::Inline(tat) => tat.load(Ordering::Acquire) > drop_below,
            Cell::Shared(tat) => {
                let now = tat.load(Ordering::Acquire);
                now > drop_below
                    || tat
                        .compare_exchange(now, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                        .is_err()
            }
        });
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// One governor limiter for one effective quota: `requests` per `window`
/// sustained, `requests + burst` at once for a fresh key.
pub struct Limiter {
    store: Store,
    clock: DefaultClock,
    /// Requests per window (after the season multiplier).
    pub requests: u32,
    /// Extra requests at once.
    pub burst: u32,
    /// The window.
    pub window: Duration,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("requests", &self.requests)
            .field("burst", &self.burst)
            .field("window", &self.window)
            .field("keys", &self.keys())
            .finish()
    }
}

impl Limiter {
    /// A keyed limiter allowing each key `requests` per `window` plus
    /// `burst` (`requests >= 1`, `window >= 1 s`, validated).
    pub fn new(requests: u32, burst: u32, window: Duration) -> Limiter {
        Limiter::build(requests, burst, window, false)
    }

    /// Like [`Limiter::new`] with a single budget; [`Limiter::check`]
    /// ignores its key.
    pub fn direct(requests: u32, burst: u32, window: Duration) -> Limiter {
        Limiter::build(requests, burst, window, true)
    }

    fn build(requests: u32, burst: u32, window: Duration, direct: bool) -> Limiter {
        let period = window / requests.max(1);
        let capacity =
            NonZeroU32::new(requests.saturating_add(burst).max(1)).expect("at least one");
        let quota = Quota::with_period(period)
            .expect("a window of at least a second over at most 1e9 requests is positive")
            .allow_burst(capacity);
        let clock = DefaultClock::default();
        let store = if direct {
            Store::Direct(RateLimiter::new(
                quota,
                InMemoryState::default(),
                clock.clone(),
            ))
        } else {
            Store::Keyed(RateLimiter::new(quota, KeyStore::default(), clock.clone()))
        };
        Limiter {
            store,
            clock,
            requests,
            burst,
            window,
        }
    }

    /// Takes one cell for `key`: `Ok(remaining)` (cells still available at
    /// once) or `Err(wait)` until one will be.
    #[inline]
    pub fn check(&self, key: u64) -> Result<u32, Duration> {
        let decision = match &self.store {
            Store::Keyed(g) => g.check_key(&key),
            Store::Direct(g) => g.check(),
        };
        match decision {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => Err(not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Keys currently tracked.
    pub fn keys(&self) -> usize {
        match &self.store {
            Store::Keyed(g) => g.len(),
            Store::Direct(_) => 0,
        }
    }

    /// Drops keys indistinguishable from fresh ones and gives the memory back.
    pub fn evict_idle(&self) {
        if let Store::Keyed(g) = &self.store {
            g.retain_recent();
            g.shrink_to_fit();
        }
    }

    /// Seconds until `remaining` cells have grown back to the full capacity.
    fn reset_secs(&self, remaining: u32) -> u64 {
        let used = u64::from(self.requests + self.burst).saturating_sub(u64::from(remaining));
        let period = self.window.as_nanos() / u128::from(self.requests.max(1));
        (u128::from(used) * period).div_ceil(1_000_000_000) as u64
    }
}

/// Long-lived state the table compiler resolves limiters and traffic
/// metric handles against; one per gateway process, outlives tables.
#[derive(Debug)]
pub struct Registry {
    limiters: Mutex<HashMap<String, Weak<Limiter>>>,
    keys: RandomState,
    /// `switchyard_rate_limited_total{route, policy}`.
    pub rate_limited: IntCounterVec,
    /// `switchyard_canary_override_ignored_total{route}`.
    pub canary_ignored: IntCounterVec,
    /// `switchyard_season_active{region, season}`.
    pub season_active: IntGaugeVec,
    /// `switchyard_rate_limit_keys`.
    pub tracked_keys: IntGauge,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            limiters: Mutex::default(),
            keys: RandomState::new(),
            rate_limited: IntCounterVec::new(
                Opts::new(
                    "switchyard_rate_limited_total",
                    "Requests answered 429 by a rate-limit policy",
                ),
                &["route", "policy"],
            )
            .expect("valid metric"),
            canary_ignored: IntCounterVec::new(
                Opts::new(
                    "switchyard_canary_override_ignored_total",
                    "Canary override headers ignored (client not on the route's canary_clients, or an unknown value)",
                ),
                &["route"],
            )
            .expect("valid metric"),
            season_active: IntGaugeVec::new(
                Opts::new(
                    "switchyard_season_active",
                    "1 for the season active in a region, 0 for the others",
                ),
                &["region", "season"],
            )
            .expect("valid metric"),
            tracked_keys: IntGauge::new(
                "switchyard_rate_limit_keys",
                "Keys tracked by the rate limiters after the last eviction",
            )
            .expect("valid metric"),
        }
    }
}

impl Registry {
    /// The metric families, for registering with `/metrics`.
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![
            Box::new(self.rate_limited.clone()),
            Box::new(self.canary_ignored.clone()),
            Box::new(self.season_active.clone()),
            Box::new(self.tracked_keys.clone()),
        ]
    }

    /// The limiter for a canonical policy form, shared with every table
    /// that still uses it, or a new one.
    pub fn limiter(
        &self,
        canonical: &str,
        requests: u32,
        burst: u32,
        window: Duration,
    ) -> Arc<Limiter> {
        self.shared(canonical, || Limiter::new(requests, burst, window))
    }

    /// [`Registry::limiter`] for a single budget ([`Limiter::direct`]).
    pub fn direct_limiter(
        &self,
        canonical: &str,
        requests: u32,
        burst: u32,
        window: Duration,
    ) -> Arc<Limiter> {
        self.shared(canonical, || Limiter::direct(requests, burst, window))
    }

    fn shared(&self, canonical: &str, build: impl FnOnce() -> Limiter) -> Arc<Limiter> {
        let mut map = self.limiters.lock().expect("limiter registry poisoned");
        if let Some(l) = map.get(canonical).and_then(Weak::upgrade) {
            return l;
        }
        let l = Arc::new(build());
        map.insert(canonical.to_string(), Arc::downgrade(&l));
        l
    }

    /// Drops idle keys from every live limiter (and forgets limiters no
    /// table uses). Returns the keys still tracked.
    pub fn evict_idle(&self) -> usize {
        let live: Vec<Arc<Limiter>> = {
            let mut map = self.limiters.lock().expect("limiter registry poisoned");
            map.retain(|_, w| w.strong_count() > 0);
            map.values().filter_map(Weak::upgrade).collect()
        };
        // Outside the registry lock: retain takes each shard's write lock in turn.
        let mut keys = 0;
        for l in &live {
            l.evict_idle();
            keys += l.keys();
        }
        self.tracked_keys.set(keys as i64);
        keys
    }

    /// Calls [`Registry::evict_idle`] every `every` until `shutdown`.
    pub async fn evict_periodically(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let keys = self.evict_idle();
            tracing::debug!(keys, "rate-limit keys after eviction");
        }
    }
}

fn key_hash(keys: &RandomState, kind: LimitKey, bytes: &[u8]) -> u64 {
    let mut h = keys.build_hasher();
    h.write_u8(kind as u8);
    h.write(bytes);
    h.finish()
}

/// One compiled policy: its quota variants and which one each season rule uses.
#[derive(Debug)]
pub struct Policy {
    /// Policy name.
    pub name: Arc<str>,
    /// What it counts by.
    pub key: LimitKey,
    /// Requests per window of each quota variant: `[0]` is the base quota,
    /// others are season-multiplied ones.
    requests: Vec<u32>,
    burst: u32,
    window: Duration,
    /// The keyed limiter of each variant (empty for `route` policies, whose
    /// single budgets live in each route's [`RouteLimits`]).
    variants: Vec<Arc<Limiter>>,
    /// Season rule id -> variant.
    by_rule: Box<[u8]>,
}

impl Policy {
    /// The quota variant in force under `rule`.
    #[inline]
    fn variant(&self, rule: Option<RuleId>) -> usize {
        rule.map_or(0, |r| self.by_rule[r as usize] as usize)
    }

    /// The canonical form limiters are shared by across tables.
    fn canonical(&self, requests: u32, route: Option<&str>) -> String {
        format!(
            "{}\u{0}{:?}\u{0}{}\u{0}{requests}\u{0}{}\u{0}{}",
            self.name,
            self.key,
            route.unwrap_or(""),
            self.window.as_secs(),
            self.burst
        )
    }

    /// `"name";q=..;w=..` for the variant in force under `rule`.
    fn policy_item(&self, rule: Option<RuleId>) -> String {
        format!(
            "\"{}\";q={};w={}",
            self.name,
            self.requests[self.variant(rule)],
            self.window.as_secs()
        )
    }
}

/// The table's rate-limit settings and policies.
#[derive(Debug, Default)]
pub struct Limits {
    policies: Vec<Policy>,
    trusted: Vec<IpNet>,
    headers_on_allowed: bool,
    keys: RandomState,
}

/// A route's policies and the handles its answers use.
#[derive(Debug, Default)]
pub struct RouteLimits {
    /// Indexes into the table's policies.
    policies: Box<[u16]>,
    /// Per policy (same order): the route's own single budgets of a
    /// `route` policy, one per quota variant; empty for other keys.
    direct: Box<[Box<[Arc<Limiter>]>]>,
    /// Key of `key = "route"` policies.
    route_key: u64,
    /// Per policy (same order): `switchyard_rate_limited_total{route, policy}`.
    rejected: Box<[IntCounter]>,
    /// `RateLimit-Policy` value per active rule (index 0: no season).
    policy_header: Box<[HeaderValue]>,
}

impl RouteLimits {
    /// Whether the route has any policy.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// `RateLimit-Policy` and `RateLimit` values for a response.
#[derive(Debug, Clone)]
pub struct RateLimitHeaders {
    /// `RateLimit-Policy`: every policy of the route.
    pub policy: HeaderValue,
    /// `RateLimit`: the tightest policy's remaining quota and reset.
    pub limit: HeaderValue,
}

/// A request refused by a policy.
#[derive(Debug, Clone)]
pub struct Denied {
    /// The policy with the longest wait.
    pub policy: Arc<str>,
    /// Whole seconds until a retry can succeed (at least 1).
    pub retry_after: u64,
    /// The headers of the 429.
    pub headers: RateLimitHeaders,
}

impl Limits {
    /// Compiles the validated `[rate_limits]` against `registry`, with one
    /// quota variant per distinct season multiplier of `calendar`.
    pub fn compile(doc: &Document, calendar: &Calendar, registry: &Registry) -> Limits {
        let rl = &doc.rate_limits;
        let policies = rl
            .policies
            .iter()
            .map(|p| {
                let mut requests = vec![p.requests];
                let by_rule = calendar
                    .rules
                    .iter()
                    .map(|r| {
                        let n = multiplied(p.requests, r.multiplier);
                        let v = requests.iter().position(|&x| x == n).unwrap_or_else(|| {
                            requests.push(n);
                            requests.len() - 1
                        });
                        v as u8
                    })
                    .collect();
                let mut policy = Policy {
                    name: p.name.as_str().into(),
                    key: p.key,
                    requests,
                    burst: p.burst,
                    window: Duration::from_secs(u64::from(p.window_secs)),
                    variants: Vec::new(),
                    by_rule,
                };
                if p.key != LimitKey::Route {
                    policy.variants = policy
                        .requests
                        .iter()
                        .map(|&n| {
                            registry.limiter(&policy.canonical(n, None), n, p.burst, policy.window)
                        })
                        .collect();
                }
                policy
            })
            .collect();
        Limits {
            policies,
            trusted: rl
                .trusted_proxies
                .iter()
                .map(|t| parse_net(t).expect("validated proxy address"))
                .collect(),
            headers_on_allowed: rl.headers_on_allowed,
            keys: registry.keys.clone(),
        }
    }

    /// Compiles a validated route's policy list.
    pub fn route(&self, route: &RouteDoc, calendar: &Calendar, registry: &Registry) -> RouteLimits {
        let ids: Vec<u16> = route
            .limits
            .iter()
            .map(|n| {
                self.policies
                    .iter()
                    .position(|p| *p.name == **n)
                    .expect("validated policy name") as u16
            })
            .collect();
        let header = |rule: Option<RuleId>| {
            let items: Vec<String> = ids
                .iter()
                .map(|&i| self.policies[i as usize].policy_item(rule))
                .collect();
            HeaderValue::try_from(items.join(", ")).expect("validated policy names")
        };
        let policy_header = std::iter::once(None)
            .chain((0..calendar.rules.len()).map(|r| Some(r as RuleId)))
            .map(header)
            .collect();
        RouteLimits {
            rejected: ids
                .iter()
                .map(|&i| {
                    registry
                        .rate_limited
                        .with_label_values(&[route.name.as_str(), &*self.policies[i as usize].name])
                })
                .collect(),
            direct: ids
                .iter()
                .map(|&i| {
                    let p = &self.policies[i as usize];
                    if p.key != LimitKey::Route {
                        return Box::default();
                    }
                    p.requests
                        .iter()
                        .map(|&n| {
                            registry.direct_limiter(
                                &p.canonical(n, Some(&route.name)),
                                n,
                                p.burst,
                                p.window,
                            )
                        })
                        .collect()
                })
                .collect(),
            policies: ids.into(),
            route_key: key_hash(&self.keys, LimitKey::Route, route.name.as_bytes()),
            policy_header,
        }
    }

    /// Checks every policy of the route for this request under the active
    /// season `rule`. `Ok(Some(..))` carries headers for the allowed
    /// response when `headers_on_allowed` is set; `Err` is the strictest
    /// refusal (the longest wait). A policy whose key the request lacks
    /// (no client id, no API key) does not count it. Every policy takes its
    /// cell even when another refuses, like nginx's `limit_req`. `traffic`
    /// holds the request's client-id and API-key values; `headers` is read
    /// for `x-forwarded-for` from a trusted proxy.
    pub fn check(
        &self,
        route: &RouteLimits,
        rule: Option<RuleId>,
        traffic: &Traffic<'_>,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Result<Option<RateLimitHeaders>, Box<Denied>> {
        // One key per kind, computed once.
        let mut keys: [Option<Option<u64>>; 4] = [None; 4];
        let mut denied: Option<(usize, Duration)> = None;
        let mut tightest: Option<(usize, u32, &Limiter)> = None;
        for (i, &p) in route.policies.iter().enumerate() {
            let policy = &self.policies[p as usize];
            let key = *keys[policy.key as usize]
                .get_or_insert_with(|| self.key_of(policy.key, route, traffic, headers, peer));
            let Some(key) = key else { continue };
            let v = policy.variant(rule);
            let limiter = match policy.key {
                LimitKey::Route => &route.direct[i][v],
                _ => &policy.variants[v],
            };
            match limiter.check(key) {
                Ok(remaining) => {
                    if tightest.is_none_or(|(_, r, _)| remaining < r) {
                        tightest = Some((i, remaining, limiter));
                    }
                }
                Err(wait) => {
                    route.rejected[i].inc();
                    if denied.is_none_or(|(_, w)| wait > w) {
                        denied = Some((i, wait));
                    }
                }
            }
        }
        let policy_header = || route.policy_header[rule.map_or(0, |r| r as usize + 1)].clone();
        if let Some((i, wait)) = denied {
            let policy = &self.policies[route.policies[i] as usize];
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let retry_after = retry_after.max(1);
            let limit = format!("\"{}\";r=0;t={retry_after}", policy.name);
            return Err(Box::new(Denied {
                policy: policy.name.clone(),
                retry_after,
                headers: RateLimitHeaders {
                    policy: policy_header(),
                    limit: HeaderValue::try_from(limit).expect("validated policy name"),
                },
            }));
        }
        match tightest {
            Some((i, remaining, limiter)) if self.headers_on_allowed => {
                let policy = &self.policies[route.policies[i] as usize];
                let reset = limiter.reset_secs(remaining);
                let limit = format!("\"{}\";r={remaining};t={reset}", policy.name);
                Ok(Some(RateLimitHeaders {
                    policy: policy_header(),
                    limit: HeaderValue::try_from(limit).expect("validated policy name"),
                }))
            }
            _ => Ok(None),
        }
    }

    fn key_of(
        &self,
        kind: LimitKey,
        route: &RouteLimits,
        traffic: &Traffic<'_>,
        headers: &HeaderMap,
        peer: IpAddr,
    ) -> Option<u64> {
        let header = |value: Option<&HeaderValue>| {
            value
                .filter(|v| !v.is_empty())
                .map(|v| key_hash(&self.keys, kind, v.as_bytes()))
        };
        match kind {
            LimitKey::ClientId => header(traffic.client_id),
            LimitKey::ApiKey => header(traffic.api_key),
            LimitKey::Ip => Some(match client_ip(peer, headers, &self.trusted) {
                IpAddr::V4(a) => key_hash(&self.keys, kind, &a.octets()),
                IpAddr::V6(a) => key_hash(&self.keys, kind, &a.octets()),
            }),
            LimitKey::Route => Some(route.route_key),
        }
    }
}

/// `requests` times a season multiplier, rounded, at least 1.
fn multiplied(requests: u32, multiplier: f64) -> u32 {
    ((f64::from(requests) * multiplier).round() as u64).clamp(1, MAX_CAPACITY) as u32
}

/// The client address: the peer, unless the peer is a trusted proxy; then
/// the right-most `x-forwarded-for` address that is not a trusted proxy
/// (the left-most when all are), stopping at anything unparseable.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    for value in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = value.to_str() else {
            return client;
        };
        for part in text.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else {
                return client;
            };
            let ip = ip.to_canonical();
            if !is_trusted(&ip) {
                return ip;
            }
            client = ip;
        }
    }
    client
}

/// A CIDR (`10.0.0.0/8`) or a bare address (`10.1.2.3`).
fn parse_net(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Checks `[rate_limits]` and the routes' `limits`; errors carry field paths.
pub fn validate(doc: &Document) -> Vec<ConfigError> {
    let mut errs = Vec::new();
    let rl = &doc.rate_limits;
    for (i, t) in rl.trusted_proxies.iter().enumerate() {
        if parse_net(t).is_none() {
            errs.push(ConfigError::at(
                format!("rate_limits.trusted_proxies[{i}]"),
                format!("{t:?} is not an address or CIDR like 10.0.0.0/8"),
            ));
        }
    }
    let max_multiplier = doc
        .calendar
        .seasons
        .iter()
        .map(|s| s.limit_multiplier)
        .filter(|m| m.is_finite())
        .fold(1.0f64, f64::max);
    let mut names = std::collections::HashSet::new();
    for (i, p) in rl.policies.iter().enumerate() {
        let path = format!("rate_limits.policies[{i}]");
        if p.name.is_empty()
            || p.name.len() > 64
            || !p
                .name
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            errs.push(ConfigError::at(
                format!("{path}.name"),
                format!(
                    "{:?} must be 1-64 printable characters without quotes or backslashes",
                    p.name
                ),
            ));
        }
        if !names.insert(p.name.as_str()) {
            errs.push(ConfigError::at(
                format!("{path}.name"),
                format!("duplicate policy {:?}", p.name),
            ));
        }
        if p.requests == 0 {
            errs.push(ConfigError::at(
                format!("{path}.requests"),
                "must be at least 1",
            ));
        }
        if p.window_secs == 0 || p.window_secs > 86_400 {
            errs.push(ConfigError::at(
                format!("{path}.window_secs"),
                format!("must be 1 to 86400 (a day), got {}", p.window_secs),
            ));
        }
        let most = f64::from(p.requests) * max_multiplier + f64::from(p.burst);
        if most > MAX_CAPACITY as f64 {
            errs.push(ConfigError::at(
                format!("{path}.requests"),
                format!(
                    "requests x the largest limit_multiplier + burst must be at most {MAX_CAPACITY}, got {most}"
                ),
            ));
        }
    }
    for (i, r) in doc.routes.iter().enumerate() {
        for (j, name) in r.limits.iter().enumerate() {
            if !rl.policies.iter().any(|p| p.name == *name) {
                errs.push(ConfigError::at(
                    format!("routes[{i}].limits[{j}]"),
                    format!("unknown policy {name:?}: not in rate_limits.policies"),
                ));
            }
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = [
            parse_net("10.0.0.0/8").unwrap(),
            parse_net("192.168.1.1").unwrap(),
        ];
        // (case, peer, x-forwarded-for values, client)
        let cases: &[(&str, &str, &[&str], &str)] = &[
            (
                "untrusted peer, spoofed header",
                "203.0.113.9",
                &["1.2.3.4"],
                "203.0.113.9",
            ),
            ("trusted peer, no header", "10.1.1.1", &[], "10.1.1.1"),
            (
                "trusted peer, one hop",
                "10.1.1.1",
                &["198.51.100.7"],
                "198.51.100.7",
            ),
            (
                "client-supplied junk left of the real client",
                "10.1.1.1",
                &["6.6.6.6, 198.51.100.7, 10.2.2.2"],
                "198.51.100.7",
            ),
            (
                "two header lines",
                "192.168.1.1",
                &["198.51.100.7", "10.3.3.3"],
                "198.51.100.7",
            ),
            (
                "all trusted: left-most",
                "10.1.1.1",
                &["10.9.9.9, 10.8.8.8"],
                "10.9.9.9",
            ),
            (
                "garbage stops the walk",
                "10.1.1.1",
                &["198.51.100.7, nonsense"],
                "10.1.1.1",
            ),
            (
                "ipv4-mapped peer",
                "::ffff:10.1.1.1",
                &["198.51.100.7"],
                "198.51.100.7",
            ),
        ];
        for (case, peer, xff, want) in cases {
            let mut h = HeaderMap::new();
            for v in *xff {
                h.append(X_FORWARDED_FOR, v.parse().unwrap());
            }
            assert_eq!(client_ip(ip(peer), &h, &trusted), ip(want), "case {case}");
        }
    }

    #[test]
    fn quota_plus_burst_then_refused_with_the_wait() {
        let l = Limiter::new(3, 2, Duration::from_secs(60));
        for i in 0..5 {
            assert_eq!(l.check(7), Ok(4 - i), "request {i}");
        }
        let wait = l.check(7).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert_eq!(l.check(8), Ok(4), "another key has its own budget");
    }

    #[test]
    fn a_hot_key_checked_from_two_threads_counts_every_request_once() {
        let l = Limiter::new(10_000, 0, Duration::from_secs(3_600));
        let allowed = std::thread::scope(|s| {
            let threads: Vec<_> = (0..2)
                .map(|_| s.spawn(|| (0..8_000).filter(|_| l.check(7).is_ok()).count()))
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("checker"))
                .sum::<usize>()
        });
        assert_eq!(allowed, 10_000);
        assert_eq!(l.keys(), 1);
    }

    #[test]
    fn an_evicted_hot_key_starts_fresh() {
        // 1,000 a second: 5 checks and 20 ms idle later, the key is
        // indistinguishable from a fresh one.
        let l = Limiter::new(1_000, 0, Duration::from_secs(1));
        for _ in 0..5 {
            l.check(7).expect("within quota");
        }
        std::thread::sleep(Duration::from_millis(20));
        l.evict_idle();
        assert_eq!(l.keys(), 0, "idle hot key dropped");
        // This thread still caches the dropped cell: the check must land in a new one.
        assert_eq!(l.check(7), Ok(999), "a fresh key's first check");
        assert_eq!(l.keys(), 1);
        assert!(l.check(7).is_ok());
    }

    #[test]
    fn registry_keeps_a_limiter_while_a_table_uses_it() {
        let r = Registry::default();
        let a = r.limiter("p", 1, 0, Duration::from_secs(60));
        a.check(1).unwrap();
        let b = r.limiter("p", 1, 0, Duration::from_secs(60));
        assert!(b.check(1).is_err(), "same state");
        drop((a, b));
        let c = r.limiter("p", 1, 0, Duration::from_secs(60));
        assert!(c.check(1).is_ok(), "no table held it: fresh");
    }

    #[test]
    fn config_errors_name_their_fields() {
        let text = r#"
[[versions]]
name = "v2"
status = "current"

[[pools]]
name = "v2"
version = "v2"
endpoints = ["127.0.0.1:9002"]

[[routes]]
name = "api"
default_version = "v2"
limits = ["per-ip", "ghost"]
sticky = ["cookie", "cookie"]
sticky_cookie = "a b"
canary_header = "x canary"

[routes.profiles.peak]
v2 = [{ pool = "v2", weight = 90 }, { pool = "nope", weight = 20 }]

[routes.profiles.winter]
v2 = [{ pool = "v2", weight = 100 }]

[calendar]
home_region = "mars-1"
region_header = "bad header"

[calendar.region_map]
US = "us-east-9"

[[calendar.regions]]
name = "us-east-1"
time_zone = "America/Nowhere"

[[calendar.seasons]]
name = "peak"
regions = ["eu-west-9"]
months = [0, 13]
start = "10:00"
end = "09:00"
limit_multiplier = -1.0

[[calendar.seasons]]
name = "always"

[rate_limits]
trusted_proxies = ["10.0.0.0/33"]

[[rate_limits.policies]]
name = "per-ip"
key = "ip"
requests = 0
window_secs = 0

[[rate_limits.policies]]
name = "per-ip"
key = "ip"
requests = 5
"#;
        let shown = crate::config::load(text, crate::config::Origin::Embedded("t"))
            .unwrap_err()
            .to_string();
        for want in [
            "calendar.regions[0].time_zone: \"America/Nowhere\" is not an IANA time zone",
            "calendar.home_region: unknown region \"mars-1\"",
            "calendar.region_header: \"bad header\" is not a valid header name",
            "calendar.region_map.US: unknown region \"us-east-9\"",
            "calendar.seasons[0].regions[0]: unknown region \"eu-west-9\"",
            "calendar.seasons[0].months[0]: months are 1 to 12, got 0",
            "calendar.seasons[0].months[1]: months are 1 to 12, got 13",
            "calendar.seasons[0].end: 09:00:00 is not after start 10:00:00",
            "calendar.seasons[0].limit_multiplier: must be greater than 0",
            "calendar.seasons[1]: needs months, weekdays, dates or a start/end window",
            "routes[0].profiles.winter: unknown season \"winter\"",
            "routes[0].profiles.peak.v2[1].pool: unknown pool \"nope\"",
            "routes[0].profiles.peak.v2: weights must sum to 100, got 110",
            "routes[0].sticky[1]: listed twice",
            "routes[0].sticky_cookie: \"a b\" is not a cookie name",
            "routes[0].canary_header: \"x canary\" is not a valid header name",
            "routes[0].limits[1]: unknown policy \"ghost\"",
            "rate_limits.trusted_proxies[0]: \"10.0.0.0/33\" is not an address or CIDR",
            "rate_limits.policies[0].requests: must be at least 1",
            "rate_limits.policies[0].window_secs: must be 1 to 86400 (a day), got 0",
            "rate_limits.policies[1].name: duplicate policy \"per-ip\"",
        ] {
            assert!(shown.contains(want), "missing {want:?} in\n{shown}");
        }
    }

    #[test]
    fn multiplier_rounds_and_keeps_one() {
        assert_eq!(multiplied(100, 2.9), 290);
        assert_eq!(multiplied(3, 0.1), 1);
        assert_eq!(multiplied(10, 5.1), 51);
    }
}
