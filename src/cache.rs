//! Response cache: which responses may be stored, under which key and for
//! how long; the store itself (moka, bounded in bytes); purge.
//!
//! Owns the key, the freshness rules, the stored entries and their
//! stale-while-revalidate state. Leaves to the pipeline when to look up,
//! forwarding a miss (and the background refresh of a stale entry), and the
//! per-request response headers (`x-request-id`, the version headers,
//! `Vary` for detection), which are added to hits and misses alike.
//!
//! # Cached after translation, per client version
//! An entry is the response exactly as a client of one API version receives
//! it, after it was translated down the version chain; the key carries the
//! client's version. Why:
//! * a hit then costs a lookup and a copy of the head: no JSON parse and
//!   serialise, which is most of a translated request's cost, and hits have
//!   to beat plain proxying several times over;
//! * the request translation (path rewrite, header renames) is a function of
//!   the client's request and version alone, so (route, method, path, query,
//!   version, `vary` headers) determines what the upstream was asked;
//! * the price is one entry per client version of a resource. Caching the
//!   upstream's answer instead would share entries between versions, but pay
//!   translation on every hit and need the split's target in the key.
//!
//! A split between pools (canary) is not in the key: a hit serves whichever
//! pool answered the miss, and `x-api-version-served` says which version that was.
//!
//! # What is stored
//! GET and HEAD requests without a body, on routes with a `cache` table.
//! Responses with a storable status ([`STORABLE`]), a body of known length
//! up to `max_entry_bytes`, and none of: `Cache-Control: no-store`,
//! `private` or `no-cache` (we do not revalidate), `Set-Cookie`, `Vary: *`,
//! or a `Vary` naming a request header outside the key. A request with
//! `Authorization` is only stored when the response says `public` or has
//! `s-maxage` (RFC 9111 §3.5). Freshness: `s-maxage`, else `max-age`, else
//! the route's `ttl_ms`, minus the upstream's `Age`, times the active
//! season's multiplier. Request `Cache-Control` is ignored: clients cannot
//! force misses onto the upstream.
//!
//! # Coalescing and stale-while-revalidate
//! A miss runs inside moka's `try_get_with`, so concurrent misses on one key
//! wait for the first one's upstream exchange and share its entry. When that
//! response may not be stored, each waiter forwards its own request: a
//! `private` answer is never handed to another client. An entry past its
//! freshness but inside its stale-while-revalidate window is served (STALE)
//! while exactly one background request refreshes it ([`Entry::begin_refresh`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use moka::policy::Expiry;

use crate::body::Body;
use crate::config::CacheDoc;
use crate::headers::X_CACHE;
use crate::problem::GatewayError;

/// A cache key: `[route len u32][route][path-and-query len u32][path?query]`
/// then `method \0 version \0` and each `vary` header's values, `\0`-separated.
pub type Key = Box<[u8]>;

/// Statuses stored: the ones RFC 9110 §15.1 calls heuristically cacheable,
/// less 405/414/501 (a route's cache is for its resources, not its errors).
pub const STORABLE: [StatusCode; 8] = [
    StatusCode::OK,
    StatusCode::NON_AUTHORITATIVE_INFORMATION,
    StatusCode::NO_CONTENT,
    StatusCode::MULTIPLE_CHOICES,
    StatusCode::MOVED_PERMANENTLY,
    StatusCode::PERMANENT_REDIRECT,
    StatusCode::NOT_FOUND,
    StatusCode::GONE,
];

/// How a response was served from the cache's point of view (the
/// discriminant indexes the per-route counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// A fresh entry (or another request's coalesced miss).
    Hit = 0,
    /// Forwarded to the upstream.
    Miss = 1,
    /// A stale entry inside its stale-while-revalidate window.
    Stale = 2,
}

impl CacheStatus {
    /// `HIT`, `MISS` or `STALE`: the `x-cache` value and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
        }
    }

    /// The `x-cache` header value.
    pub fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// A route's compiled cache rules.
#[derive(Debug, Clone)]
pub struct RouteCache {
    /// Freshness when the upstream names none.
    pub ttl: Duration,
    /// Stale-while-revalidate window when the upstream names none.
    pub stale_while_revalidate: Duration,
    /// Request headers in the key (lower-case, validated).
    pub vary: Vec<HeaderName>,
    /// Largest body stored.
    pub max_entry_bytes: u64,
    /// TTL multiplier by season name.
    season_multipliers: Vec<(Box<str>, f64)>,
}

/// How long a response stays fresh, and then usable while it is refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Fresh for this long after storing.
    pub ttl: Duration,
    /// Then served stale for up to this long while one refresh runs.
    pub stale_while_revalidate: Duration,
}

impl RouteCache {
    /// Compiles a validated `[routes.cache]` table.
    pub fn compile(doc: &CacheDoc) -> RouteCache {
        RouteCache {
            ttl: Duration::from_millis(doc.ttl_ms),
            stale_while_revalidate: Duration::from_millis(doc.stale_while_revalidate_ms),
            vary: doc
                .vary
                .iter()
                .map(|h| HeaderName::try_from(h.as_str()).expect("validated header name"))
                .collect(),
            max_entry_bytes: doc.max_entry_bytes,
            season_multipliers: doc
                .season_ttl_multiplier
                .iter()
                .map(|(k, v)| (k.as_str().into(), *v))
                .collect(),
        }
    }

    /// The TTL multiplier while `season` is active: 1 without a season or
    /// for a season not listed.
    pub fn multiplier(&self, season: Option<&str>) -> f64 {
        season
            .and_then(|s| self.season_multipliers.iter().find(|(n, _)| **n == *s))
            .map_or(1.0, |(_, m)| *m)
    }

    /// The key of a request: route, path and query as the client sent them,
    /// method, the client's version, and the `vary` headers' values.
    pub fn key(
        &self,
        route: &str,
        method: &Method,
        path_and_query: &str,
        version: &str,
        headers: &HeaderMap,
    ) -> Key {
        let mut k = Vec::with_capacity(
            16 + route.len() + path_and_query.len() + version.len() + 32 * self.vary.len(),
        );
        k.extend_from_slice(&(route.len() as u32).to_le_bytes());
        k.extend_from_slice(route.as_bytes());
        k.extend_from_slice(&(path_and_query.len() as u32).to_le_bytes());
        k.extend_from_slice(path_and_query.as_bytes());
        k.extend_from_slice(method.as_str().as_bytes());
        k.push(0);
        k.extend_from_slice(version.as_bytes());
        k.push(0);
        for name in &self.vary {
            // Absent and empty differ: a marker byte says which.
            let mut values = headers.get_all(name).iter();
            match values.next() {
                None => k.push(1),
                Some(first) => {
                    k.push(2);
                    k.extend_from_slice(first.as_bytes());
                    for v in values {
                        k.push(b',');
                        k.extend_from_slice(v.as_bytes());
                    }
                }
            }
            k.push(0);
        }
        k.into_boxed_slice()
    }

    /// Whether a response may be stored, and for how long. `authorized`:
    /// the request carried `Authorization`. `version_header`: the route's
    /// version header, implied by the key's version.
    pub fn freshness(
        &self,
        authorized: bool,
        version_header: &HeaderName,
        status: StatusCode,
        headers: &HeaderMap,
        multiplier: f64,
    ) -> Option<Freshness> {
        if !STORABLE.contains(&status) || headers.contains_key(header::SET_COOKIE) {
            return None;
        }
        let cc = CacheControl::parse(headers);
        if cc.no_store || cc.private || cc.no_cache {
            return None;
        }
        if authorized && !(cc.public || cc.s_maxage.is_some()) {
            return None;
        }
        for value in headers.get_all(header::VARY) {
            let Ok(value) = value.to_str() else {
                return None;
            };
            for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let covered = name.eq_ignore_ascii_case(version_header.as_str())
                    || self
                        .vary
                        .iter()
                        .any(|h| name.eq_ignore_ascii_case(h.as_str()));
                if name == "*" || !covered {
                    return None;
                }
            }
        }
        let age = headers
            .get(header::AGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(Duration::ZERO, Duration::from_secs);
        let ttl = cc
            .s_maxage
            .or(cc.max_age)
            .map_or(self.ttl, Duration::from_secs)
            .saturating_sub(age)
            .mul_f64(multiplier)
            // A day at most, like `ttl_ms`: an upstream's max-age=31536000
            // should not pin an entry for a year.
            .min(Duration::from_secs(86_400));
        if ttl.is_zero() {
            return None;
        }
        Some(Freshness {
            ttl,
            stale_while_revalidate: cc
                .stale_while_revalidate
                .map_or(self.stale_while_revalidate, Duration::from_secs)
                .min(Duration::from_secs(86_400)),
        })
    }
}

/// The `Cache-Control` directives the cache acts on.
#[derive(Debug, Default, PartialEq, Eq)]
struct CacheControl {
    no_store: bool,
    no_cache: bool,
    private: bool,
    public: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
    stale_while_revalidate: Option<u64>,
}

impl CacheControl {
    fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                // Unreadable: the safe reading is "do not store".
                cc.no_store = true;
                continue;
            };
            for directive in value.split(',') {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let secs = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    // `no-cache="field"` restricts fields; treat it as no-cache.
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    // A malformed max-age is stale (RFC 9111 §4.2.1): zero.
                    "max-age" => cc.max_age = Some(secs().unwrap_or(0)),
                    "s-maxage" => cc.s_maxage = Some(secs().unwrap_or(0)),
                    "stale-while-revalidate" => cc.stale_while_revalidate = secs(),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// Name of the version the serving pool spoke.
    pub served: Option<Arc<str>>,
    stored: Instant,
    fresh_until: Instant,
    stale_until: Instant,
    refreshing: AtomicBool,
    weight: u32,
}

impl Entry {
    /// An entry from a response head and its whole body.
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        freshness: Freshness,
        served: Option<Arc<str>>,
    ) -> Entry {
        // Per-exchange headers: ours are added again for each answer.
        headers.remove(X_CACHE);
        headers.remove(header::AGE);
        let now = Instant::now();
        let fresh_until = now + freshness.ttl;
        // Heads are small: count each header at its bytes plus the map's
        // per-entry overhead, so a budget of many tiny entries still holds.
        let head: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 48)
            .sum();
        Entry {
            status,
            headers,
            weight: u32::try_from(body.len() + head + 256).unwrap_or(u32::MAX),
            body,
            served,
            stored: now,
            fresh_until,
            stale_until: fresh_until + freshness.stale_while_revalidate,
            refreshing: AtomicBool::new(false),
        }
    }

    /// Bytes this entry holds (body, head, bookkeeping).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Still fresh at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.fresh_until
    }

    /// Past freshness but still inside its stale-while-revalidate window.
    pub fn is_stale_usable(&self, now: Instant) -> bool {
        !self.is_fresh(now) && now < self.stale_until
    }

    /// Claims the one background refresh of this entry; `false` if one is
    /// already running.
    pub fn begin_refresh(&self) -> bool {
        self.refreshing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Releases the claim after a failed refresh (a later request retries).
    pub fn end_refresh(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    /// The stored response, with `Age` unless it is the miss that stored
    /// it (the pipeline adds `x-cache`).
    pub fn response(&self, status: CacheStatus, now: Instant) -> Response<Body> {
        let mut resp = Response::new(Body::full(self.body.clone()));
        *resp.status_mut() = self.status;
        let h = resp.headers_mut();
        *h = self.headers.clone();
        if status != CacheStatus::Miss {
            h.insert(
                header::AGE,
                HeaderValue::from(now.saturating_duration_since(self.stored).as_secs()),
            );
        }
        resp
    }
}

/// Why a miss produced no entry; shared by moka with the requests that
/// waited on it, so the response sits behind a `Mutex` for the one request
/// that owns it (uncontended: taken once).
pub enum Miss {
    /// The response may not be stored (or shared): its owner streams it.
    Uncacheable(Mutex<Option<Response<Body>>>),
    /// Forwarding failed: its owner answers with the error.
    Failed(Mutex<Option<GatewayError>>),
}

impl Miss {
    /// Wraps a response that may not be stored.
    pub fn uncacheable(resp: Response<Body>) -> Miss {
        Miss::Uncacheable(Mutex::new(Some(resp)))
    }

    /// Wraps a forwarding error.
    pub fn failed(e: GatewayError) -> Miss {
        Miss::Failed(Mutex::new(Some(e)))
    }

    /// The owner's answer (once; `None` afterwards).
    pub fn take(&self) -> Option<Result<Response<Body>, GatewayError>> {
        match self {
            Miss::Uncacheable(r) => r.lock().ok()?.take().map(Ok),
            Miss::Failed(e) => e.lock().ok()?.take().map(Err),
        }
    }
}

/// Entries live in moka until the end of their stale window.
struct UntilStale;

impl Expiry<Key, Arc<Entry>> for UntilStale {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &Arc<Entry>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.stale_until.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &Key,
        value: &Arc<Entry>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.stale_until.saturating_duration_since(updated_at))
    }
}

/// The response cache of one gateway: every cached route shares its byte
/// budget.
pub struct ResponseCache {
    store: moka::future::Cache<Key, Arc<Entry>>,
    budget: u64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("budget", &self.budget)
            .field("entries", &self.store.entry_count())
            .finish()
    }
}

impl ResponseCache {
    /// A cache holding at most `budget` bytes (entries are weighed by body,
    /// head and key; the least useful are evicted first).
    pub fn new(budget: u64) -> ResponseCache {
        ResponseCache {
            store: moka::future::Cache::builder()
                .max_capacity(budget)
                .weigher(|k: &Key, v: &Arc<Entry>| {
                    v.weight
                        .saturating_add(u32::try_from(k.len()).unwrap_or(u32::MAX))
                })
                .expire_after(UntilStale)
                .build(),
            budget,
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// The entry for `key`, fresh or stale.
    pub async fn get(&self, key: &[u8]) -> Option<Arc<Entry>> {
        self.store.get(key).await
    }

    /// Stores (or replaces) an entry.
    pub async fn insert(&self, key: Key, entry: Arc<Entry>) {
        self.store.insert(key, entry).await;
    }

    /// Drops an entry.
    pub async fn invalidate(&self, key: &[u8]) {
        self.store.invalidate(key).await;
    }

    /// Runs `miss` unless another request for `key` is already running
    /// one, in which case this waits for that one's outcome. `Ok` is the
    /// stored entry (this request's or the other's); `Err` is shared with
    /// every waiter.
    pub async fn coalesce(
        &self,
        key: Key,
        miss: impl Future<Output = Result<Arc<Entry>, Miss>>,
    ) -> Result<Arc<Entry>, Arc<Miss>> {
        self.store.try_get_with(key, miss).await
    }

    /// Drops every entry of `route` (if given) whose path starts with
    /// `path_prefix` (if given). Returns how many were dropped.
    pub async fn purge(&self, route: Option<&str>, path_prefix: Option<&str>) -> u64 {
        let mut doomed = Vec::new();
        for (key, _) in self.store.iter() {
            let Some((r, pq)) = split_key(&key) else {
                continue;
            };
            if route.is_none_or(|want| want.as_bytes() == r)
                && path_prefix.is_none_or(|p| pq.starts_with(p.as_bytes()))
            {
                doomed.push(key);
            }
        }
        for key in &doomed {
            self.store.invalidate(&***key).await;
        }
        doomed.len() as u64
    }

    /// `(bytes, entries)` after pending evictions have run.
    pub async fn usage(&self) -> (u64, u64) {
        self.store.run_pending_tasks().await;
        (self.store.weighted_size(), self.store.entry_count())
    }
}

/// The route and path-and-query parts of a key.
fn split_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let take = |b: &[u8]| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize)
    };
    let rlen = take(key)?;
    let route = key.get(4..4 + rlen)?;
    let rest = &key[4 + rlen..];
    let plen = take(rest)?;
    Some((route, rest.get(4..4 + plen)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(ttl_ms: u64, vary: &[&str]) -> RouteCache {
        RouteCache::compile(&CacheDoc {
            ttl_ms,
            stale_while_revalidate_ms: 0,
            vary: vary.iter().map(|s| s.to_string()).collect(),
            max_entry_bytes: 1024,
            season_ttl_multiplier: [("peak".to_string(), 2.0)].into(),
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::try_from(*k).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn freshness_cases() {
        let vh = HeaderName::from_static("x-api-version");
        let secs = |s| {
            Some(Freshness {
                ttl: Duration::from_secs(s),
                stale_while_revalidate: Duration::ZERO,
            })
        };
        // (name, authorized, status, headers, expected)
        type Case<'a> = (
            &'a str,
            bool,
            u16,
            &'a [(&'a str, &'a str)],
            Option<Freshness>,
        );
        let cases: &[Case] = &[
            ("route ttl", false, 200, &[], secs(60)),
            (
                "max-age wins",
                false,
                200,
                &[("cache-control", "max-age=5")],
                secs(5),
            ),
            (
                "s-maxage over max-age",
                false,
                200,
                &[("cache-control", "max-age=5, s-maxage=7")],
                secs(7),
            ),
            (
                "age subtracted",
                false,
                200,
                &[("cache-control", "max-age=5"), ("age", "2")],
                secs(3),
            ),
            (
                "max-age=0",
                false,
                200,
                &[("cache-control", "max-age=0")],
                None,
            ),
            (
                "no-store",
                false,
                200,
                &[("cache-control", "no-store")],
                None,
            ),
            (
                "private",
                false,
                200,
                &[("cache-control", "private, max-age=9")],
                None,
            ),
            (
                "no-cache",
                false,
                200,
                &[("cache-control", "no-cache")],
                None,
            ),
            ("set-cookie", false, 200, &[("set-cookie", "a=b")], None),
            ("500", false, 500, &[], None),
            ("404 stored", false, 404, &[], secs(60)),
            ("vary *", false, 200, &[("vary", "*")], None),
            (
                "vary outside key",
                false,
                200,
                &[("vary", "accept-encoding")],
                None,
            ),
            (
                "vary in key",
                false,
                200,
                &[("vary", "Accept-Language, x-api-version")],
                secs(60),
            ),
            (
                "authorized, plain",
                true,
                200,
                &[("cache-control", "max-age=5")],
                None,
            ),
            (
                "authorized, public",
                true,
                200,
                &[("cache-control", "public, max-age=5")],
                secs(5),
            ),
            (
                "swr from upstream",
                false,
                200,
                &[("cache-control", "max-age=1, stale-while-revalidate=30")],
                Some(Freshness {
                    ttl: Duration::from_secs(1),
                    stale_while_revalidate: Duration::from_secs(30),
                }),
            ),
        ];
        let r = rules(60_000, &["accept-language"]);
        for (name, auth, status, h, want) in cases {
            let got = r.freshness(
                *auth,
                &vh,
                StatusCode::from_u16(*status).unwrap(),
                &headers(h),
                1.0,
            );
            assert_eq!(got, *want, "{name}");
        }
        let peak = r.freshness(
            false,
            &vh,
            StatusCode::OK,
            &HeaderMap::new(),
            r.multiplier(Some("peak")),
        );
        assert_eq!(peak.unwrap().ttl, Duration::from_secs(120));
        assert_eq!(r.multiplier(Some("off-peak")), 1.0);
    }

    #[test]
    fn keys_split_on_every_part() {
        let r = rules(1000, &["accept-language"]);
        let h = headers(&[("accept-language", "de")]);
        let base = r.key("api", &Method::GET, "/a?x=1", "v2", &h);
        let variants = [
            r.key("web", &Method::GET, "/a?x=1", "v2", &h),
            r.key("api", &Method::HEAD, "/a?x=1", "v2", &h),
            r.key("api", &Method::GET, "/a?x=2", "v2", &h),
            r.key("api", &Method::GET, "/a?x=1", "v1", &h),
            r.key(
                "api",
                &Method::GET,
                "/a?x=1",
                "v2",
                &headers(&[("accept-language", "fr")]),
            ),
            r.key(
                "api",
                &Method::GET,
                "/a?x=1",
                "v2",
                &headers(&[("accept-language", "")]),
            ),
            r.key("api", &Method::GET, "/a?x=1", "v2", &HeaderMap::new()),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(&base, v, "variant {i}");
        }
        assert_eq!(base, r.key("api", &Method::GET, "/a?x=1", "v2", &h));
        assert_eq!(split_key(&base), Some((&b"api"[..], &b"/a?x=1"[..])));
    }
}
