//! Request metrics (Prometheus): traffic by route, client version, target
//! version, detection source and status class; request and upstream
//! latency; in-flight requests; translation and upstream errors; response
//! cache outcomes and size; upstream endpoints' in-flight counts and
//! availability; and version usage by client (top N plus `other`).
//!
//! Owns the metric families (registered in the gateway's own registry, next
//! to the control plane's, so several gateways in one process never
//! collide) and the handles a routing table records into. Leaves the
//! rendering to the admin listener and the recording points to the pipeline.
//!
//! # The request path takes no lock and allocates nothing
//! [`RequestMetrics::compile`] builds a [`TableMetrics`] for every table the
//! control plane publishes: per route, an array of label-handle slots indexed
//! by (client version, target version, source, status class), plus per-pool
//! upstream histograms and per-route cache counters resolved right away.
//! Recording is an index computation and an atomic add.
//!
//! A request-counter slot is resolved (`with_label_values`, which takes the
//! family's lock and allocates the series) the first time a request lands
//! in it, once per table, rather than all at compile time: resolving every
//! combination up front would export versions x targets x sources x classes
//! zero series per route (thousands for a 50-route table) that nobody reads.
//! Only combinations that actually occur ever appear in `/metrics`, and a
//! table without a route, version or pool drops its series.
//!
//! # Client usage, bounded
//! `switchyard_client_requests{client}` and
//! `switchyard_client_last_version{client,version}` come from a fixed array of
//! [`CLIENT_SLOTS`] slots (open addressing, SipHash with a random key: client
//! ids are attacker-chosen). A client claims a slot once (allocating its
//! name); after that a request is two atomic stores. When the array is full
//! new clients are counted as `other`. The gauges are computed at scrape
//! time: the busiest `metrics_top_clients` by name, everyone else as `other`.
//!
//! Rate limits by policy, canary overrides and the active season per region
//! live with their owners (`limit::Registry`), registered in the same registry.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http::StatusCode;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

use crate::cache::CacheStatus;
use crate::config::Source;
use crate::route::RouteId;
use crate::split::PoolId;
use crate::table::RoutingTable;
use crate::version::VersionId;

/// Label value for "not known at this point" (no route matched, no version
/// detected, no target picked).
pub const NONE: &str = "none";
/// Client version label when detection failed.
pub const UNKNOWN: &str = "unknown";
/// Clients tracked for version usage; past this, new ones count as `other`.
pub const CLIENT_SLOTS: usize = 4096;
/// Longest client id tracked (longer ones count as `other`).
const MAX_CLIENT_ID: usize = 64;
/// Slots probed for a client before it counts as `other`.
const PROBE: usize = 8;

// Detection sources plus "none"; indexed by `Source as usize`.
const SOURCES: usize = 7;
const SOURCE_NAMES: [&str; SOURCES] = ["header", "accept", "path", "query", "pin", "default", NONE];
const CLASSES: usize = 5;
const CLASS_NAMES: [&str; CLASSES] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Request latency buckets in seconds: 0.5 ms (a cache hit) to 30 s (past
/// the default 15 s route timeout).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The request metric families of one gateway.
#[derive(Debug)]
pub struct RequestMetrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_duration: HistogramVec,
    /// `switchyard_requests_in_flight`: requests being handled (until their
    /// response headers are sent).
    pub in_flight: IntGauge,
    /// `switchyard_worker_connections`: open client connections per
    /// listener and worker thread (what connection balancing evens out).
    pub worker_connections: IntGaugeVec,
    /// `switchyard_http1_handoffs_total`: client connections the lean
    /// HTTP/1.1 path handed to hyper, by reason.
    pub http1_handoffs: IntCounterVec,
    translation_errors: IntCounterVec,
    upstream_errors: IntCounterVec,
    cache_requests: IntCounterVec,
    cache_bytes: IntGauge,
    cache_entries: IntGauge,
    version_info: IntGaugeVec,
    endpoint_in_flight: IntGaugeVec,
    endpoint_available: IntGaugeVec,
    client_requests: IntGaugeVec,
    client_version: IntGaugeVec,
    unmatched: [IntCounter; CLASSES],
    unmatched_duration: Histogram,
    clients: Box<[ClientSlot]>,
    /// Client requests that found no slot.
    clients_overflow: AtomicU64,
    hasher: std::hash::RandomState,
    /// Every version name any table had; clients store index + 1.
    version_names: Mutex<Vec<Arc<str>>>,
    /// Label sets resolved so far, so that a table without a route,
    /// version or pool also drops its series.
    resolved: Mutex<Resolved>,
}

/// Series created for some table (cold paths only lock this).
#[derive(Debug, Default)]
struct Resolved {
    requests: HashSet<[Box<str>; 5]>,
    durations: HashSet<[Box<str>; 2]>,
    /// Pools with an upstream histogram, routes with cache counters, as
    /// of the last table.
    pools: HashSet<Box<str>>,
    cached_routes: HashSet<Box<str>>,
}

#[derive(Debug, Default)]
struct ClientSlot {
    name: OnceLock<Box<str>>,
    requests: AtomicU64,
    /// Index into `version_names` + 1 (0: none yet).
    version: AtomicU32,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(v.clone()))
        .expect("unique metric");
    v
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(v.clone()))
        .expect("unique metric");
    v
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let v = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(v.clone()))
        .expect("unique metric");
    v
}

impl RequestMetrics {
    /// Registers the request metric families in `registry`.
    pub fn register(registry: &Registry) -> RequestMetrics {
        let r = registry;
        let requests = counter_vec(
            r,
            "switchyard_requests_total",
            "Requests answered, by route, client version, target version, detection source and status class",
            &[
                "route",
                "client_version",
                "target_version",
                "source",
                "status_class",
            ],
        );
        let duration = histogram_vec(
            r,
            "switchyard_request_duration_seconds",
            "Time from request head to response head, by route and client version",
            &["route", "client_version"],
        );
        let unmatched =
            CLASS_NAMES.map(|c| requests.with_label_values(&[NONE, UNKNOWN, NONE, NONE, c]));
        let unmatched_duration = duration.with_label_values(&[NONE, UNKNOWN]);
        RequestMetrics {
            registry: r.clone(),
            requests,
            duration,
            upstream_duration: histogram_vec(
                r,
                "switchyard_upstream_duration_seconds",
                "Time from sending a request upstream to its response head, by pool",
                &["pool"],
            ),
            in_flight: gauge(
                r,
                "switchyard_requests_in_flight",
                "Requests being handled (until their response head is sent)",
            ),
            worker_connections: gauge_vec(
                r,
                "switchyard_worker_connections",
                "Open client connections by listener (plain or tls) and worker thread",
                &["listener", "worker"],
            ),
            http1_handoffs: counter_vec(
                r,
                "switchyard_http1_handoffs_total",
                "Client connections the lean HTTP/1.1 path handed to hyper at a request it does not take, by reason",
                &["reason"],
            ),
            translation_errors: counter_vec(
                r,
                "switchyard_translation_errors_total",
                "Bodies that could not be translated between versions, by route, versions and direction (request or response)",
                &["route", "from_version", "to_version", "direction"],
            ),
            upstream_errors: counter_vec(
                r,
                "switchyard_upstream_errors_total",
                "Failed upstream exchanges (connect, timeout, protocol, no endpoint), by pool and kind",
                &["pool", "kind"],
            ),
            cache_requests: counter_vec(
                r,
                "switchyard_cache_requests_total",
                "Cacheable requests by route and outcome (hit, miss, stale)",
                &["route", "result"],
            ),
            cache_bytes: gauge(
                r,
                "switchyard_cache_bytes",
                "Bytes held by the response cache (bodies, headers and keys)",
            ),
            cache_entries: gauge(
                r,
                "switchyard_cache_entries",
                "Responses held by the response cache",
            ),
            version_info: gauge_vec(
                r,
                "switchyard_version_info",
                "1 for each API version of the live table, with its lifecycle status",
                &["version", "status"],
            ),
            endpoint_in_flight: gauge_vec(
                r,
                "switchyard_upstream_endpoint_in_flight",
                "Requests sent to an upstream endpoint and not yet answered",
                &["pool", "endpoint"],
            ),
            endpoint_available: gauge_vec(
                r,
                "switchyard_upstream_endpoint_available",
                "1 while an upstream endpoint may take requests; 0 while its health check fails or it is ejected",
                &["pool", "endpoint"],
            ),
            client_requests: gauge_vec(
                r,
                "switchyard_client_requests",
                "Requests per client id since start: the busiest clients by name, the rest as other",
                &["client"],
            ),
            client_version: gauge_vec(
                r,
                "switchyard_client_last_version",
                "Clients by the API version of their last request (1 per named client; other counts the rest)",
                &["client", "version"],
            ),
            unmatched,
            unmatched_duration,
            clients: (0..CLIENT_SLOTS).map(|_| ClientSlot::default()).collect(),
            clients_overflow: AtomicU64::new(0),
            hasher: std::hash::RandomState::new(),
            version_names: Mutex::new(Vec::new()),
            resolved: Mutex::default(),
        }
    }

    /// The registry these families live in (issue 5's limiter and season
    /// metrics register here too).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Label handles for a freshly compiled table (off the request path).
    pub fn compile(self: &Arc<Self>, table: &RoutingTable) -> TableMetrics {
        self.forget_stale(table);
        // The table about to be published describes the live versions.
        self.version_info.reset();
        for v in &table.versions {
            let status = format!("{:?}", v.lifecycle.status).to_lowercase();
            self.version_info
                .with_label_values(&[&*v.name, status.as_str()])
                .set(1);
        }
        let version_ix = {
            let mut names = self.version_names.lock().expect("version names poisoned");
            table
                .versions
                .iter()
                .map(|v| {
                    let i = match names.iter().position(|n| **n == *v.name) {
                        Some(i) => i,
                        None => {
                            names.push(v.name.clone());
                            names.len() - 1
                        }
                    };
                    i as u32 + 1
                })
                .collect()
        };
        let nversions = table.versions.len();
        let routes = table
            .routes
            .iter()
            .map(|r| {
                // Rows per client version (then "unknown"): target "none",
                // then each version its split profiles or a canary override
                // can pick.
                let mut first_row = Vec::with_capacity(nversions + 1);
                let mut targets = Vec::with_capacity(nversions + 1);
                let mut rows = 0;
                for v in 0..=nversions {
                    let mut t: Vec<VersionId> = r
                        .splits
                        .get(v)
                        .and_then(Option::as_ref)
                        .map(|p| {
                            p.pools()
                                .iter()
                                .map(|&pool| table.pools[pool as usize].version)
                                .collect()
                        })
                        .unwrap_or_default();
                    t.sort_unstable();
                    t.dedup();
                    first_row.push(rows as u32);
                    rows += 1 + t.len();
                    targets.push(t.into_boxed_slice());
                }
                RouteSlots {
                    first_row,
                    targets,
                    requests: (0..rows * SOURCES * CLASSES)
                        .map(|_| OnceLock::new())
                        .collect(),
                    duration: (0..=nversions).map(|_| OnceLock::new()).collect(),
                    cache: r.cache.as_ref().map(|_| {
                        ["hit", "miss", "stale"]
                            .map(|res| self.cache_requests.with_label_values(&[&*r.name, res]))
                    }),
                }
            })
            .collect();
        let pools = table
            .pools
            .iter()
            .map(|p| self.upstream_duration.with_label_values(&[&*p.pool.name]))
            .collect();
        TableMetrics {
            inner: Some(Slots {
                owner: self.clone(),
                routes,
                pools,
                version_ix,
            }),
        }
    }

    /// Drops the series of routes, versions and pools `table` no longer
    /// has (requests still running on the old table count into handles
    /// that are no longer exported: a few at most).
    fn forget_stale(&self, table: &RoutingTable) {
        let routes: HashSet<&str> = table.routes.iter().map(|r| &*r.name).collect();
        let versions: HashSet<&str> = table
            .versions
            .iter()
            .map(|v| &*v.name)
            .chain([UNKNOWN, NONE])
            .collect();
        let pools: HashSet<&str> = table.pools.iter().map(|p| &*p.pool.name).collect();
        let cached: HashSet<&str> = table
            .routes
            .iter()
            .filter(|r| r.cache.is_some())
            .map(|r| &*r.name)
            .collect();
        let mut r = self.resolved.lock().expect("resolved series poisoned");
        r.requests.retain(|l| {
            let keep =
                routes.contains(&*l[0]) && versions.contains(&*l[1]) && versions.contains(&*l[2]);
            if !keep {
                let _ = self
                    .requests
                    .remove_label_values(&l.each_ref().map(|v| &**v));
            }
            keep
        });
        r.durations.retain(|l| {
            let keep = routes.contains(&*l[0]) && versions.contains(&*l[1]);
            if !keep {
                let _ = self
                    .duration
                    .remove_label_values(&l.each_ref().map(|v| &**v));
            }
            keep
        });
        for pool in r.pools.iter().filter(|p| !pools.contains(&***p)) {
            let _ = self.upstream_duration.remove_label_values(&[&**pool]);
        }
        for route in r.cached_routes.iter().filter(|c| !cached.contains(&***c)) {
            for result in ["hit", "miss", "stale"] {
                let _ = self.cache_requests.remove_label_values(&[&**route, result]);
            }
        }
        r.pools = pools.into_iter().map(Into::into).collect();
        r.cached_routes = cached.into_iter().map(Into::into).collect();
    }

    /// The request counter for `labels`, remembered for [`Self::forget_stale`].
    fn resolve_request(&self, labels: [&str; 5]) -> IntCounter {
        self.resolved
            .lock()
            .expect("resolved series poisoned")
            .requests
            .insert(labels.map(Into::into));
        self.requests.with_label_values(&labels)
    }

    /// The duration histogram for `labels`, remembered likewise.
    fn resolve_duration(&self, labels: [&str; 2]) -> Histogram {
        self.resolved
            .lock()
            .expect("resolved series poisoned")
            .durations
            .insert(labels.map(Into::into));
        self.duration.with_label_values(&labels)
    }

    /// Counts a request that matched no route (or came before any table).
    pub fn record_unmatched(&self, status: StatusCode, elapsed: Duration) {
        self.unmatched[class(status)].inc();
        self.unmatched_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a body that could not be translated (an error path: resolves
    /// its label set per call).
    pub fn translation_error(&self, route: &str, from: &str, to: &str, direction: &str) {
        self.translation_errors
            .with_label_values(&[route, from, to, direction])
            .inc();
    }

    /// Counts a failed upstream exchange (an error path).
    pub fn upstream_error(&self, pool: &str, kind: &str) {
        self.upstream_errors.with_label_values(&[pool, kind]).inc();
    }

    /// Notes that `client` made a request as version `version` (an index
    /// into [`TableMetrics`]' interned names). Lock-free after a client's
    /// first request.
    fn client_seen(&self, client: &[u8], version: u32) {
        let Ok(client) = std::str::from_utf8(client) else {
            self.clients_overflow.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if client.is_empty() || client.len() > MAX_CLIENT_ID {
            self.clients_overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let start = self.hasher.hash_one(client) as usize;
        for i in 0..PROBE {
            let slot = &self.clients[(start + i) % CLIENT_SLOTS];
            let name = slot.name.get_or_init(|| client.into());
            if **name == *client {
                slot.requests.fetch_add(1, Ordering::Relaxed);
                slot.version.store(version, Ordering::Relaxed);
                return;
            }
        }
        self.clients_overflow.fetch_add(1, Ordering::Relaxed);
    }

    /// Refreshes the gauges that are computed at scrape time: endpoint
    /// in-flight counts from the live table, client usage, cache size.
    pub fn refresh_gauges(
        &self,
        table: Option<&RoutingTable>,
        top_clients: usize,
        cache: (u64, u64),
    ) {
        self.cache_bytes.set(cache.0 as i64);
        self.cache_entries.set(cache.1 as i64);
        self.endpoint_in_flight.reset();
        self.endpoint_available.reset();
        if let Some(t) = table {
            let mut now = None;
            for p in &t.pools {
                for e in &p.pool.endpoints {
                    let labels = [&*p.pool.name, e.authority.as_str()];
                    self.endpoint_in_flight
                        .with_label_values(&labels)
                        .set(i64::from(e.inflight()));
                    self.endpoint_available
                        .with_label_values(&labels)
                        .set(i64::from(e.health.available(&mut now)));
                }
            }
        }
        let names = self
            .version_names
            .lock()
            .expect("version names poisoned")
            .clone();
        let mut seen: Vec<(&str, u64, u32)> = self
            .clients
            .iter()
            .filter_map(|s| {
                let name = s.name.get()?;
                Some((
                    &**name,
                    s.requests.load(Ordering::Relaxed),
                    s.version.load(Ordering::Relaxed),
                ))
            })
            .filter(|c| c.1 > 0)
            .collect();
        seen.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let version_name = |v: u32| {
            v.checked_sub(1)
                .and_then(|i| names.get(i as usize))
                .map_or(UNKNOWN, |n| &**n)
        };
        self.client_requests.reset();
        self.client_version.reset();
        let split = seen.len().min(top_clients);
        for &(client, requests, version) in &seen[..split] {
            self.client_requests
                .with_label_values(&[client])
                .set(requests as i64);
            self.client_version
                .with_label_values(&[client, version_name(version)])
                .set(1);
        }
        let rest = &seen[split..];
        let other =
            rest.iter().map(|c| c.1).sum::<u64>() + self.clients_overflow.load(Ordering::Relaxed);
        if other > 0 || !seen.is_empty() {
            self.client_requests
                .with_label_values(&["other"])
                .set(other as i64);
        }
        for &(_, _, version) in rest {
            self.client_version
                .with_label_values(&["other", version_name(version)])
                .inc();
        }
    }
}

/// A table's label handles; `Default` records nothing (tables compiled
/// outside a gateway, e.g. in benches).
#[derive(Debug, Default)]
pub struct TableMetrics {
    inner: Option<Slots>,
}

#[derive(Debug)]
struct Slots {
    owner: Arc<RequestMetrics>,
    routes: Vec<RouteSlots>,
    /// `switchyard_upstream_duration_seconds` by pool id.
    pools: Vec<Histogram>,
    /// Interned version name index + 1, by version id.
    version_ix: Vec<u32>,
}

#[derive(Debug)]
struct RouteSlots {
    /// First row of each client version (index `versions.len()`: unknown).
    first_row: Vec<u32>,
    /// Per client version (then unknown): the target versions it can get.
    targets: Vec<Box<[VersionId]>>,
    /// `[row][source][class]`, resolved on first use.
    requests: Box<[OnceLock<IntCounter>]>,
    /// Request duration by client version (then unknown).
    duration: Box<[OnceLock<Histogram>]>,
    /// Cache outcomes (hit, miss, stale) when the route has a cache.
    cache: Option<[IntCounter; 3]>,
}

/// One answered request as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The matched route.
    pub route: RouteId,
    /// The detected client version, if detection succeeded.
    pub client: Option<VersionId>,
    /// The target version picked by the split, if any.
    pub target: Option<VersionId>,
    /// The detection source, if known.
    pub source: Option<Source>,
    /// The status sent.
    pub status: StatusCode,
    /// Time to the response head.
    pub elapsed: Duration,
}

impl TableMetrics {
    /// Counts an answered request on a matched route.
    pub fn record(&self, table: &RoutingTable, o: Outcome) {
        let Some(s) = &self.inner else { return };
        let r = &s.routes[o.route as usize];
        let client_ix = o.client.map_or(table.versions.len(), usize::from);
        let row = r.first_row[client_ix] as usize
            + match o.target {
                None => 0,
                Some(t) => match r.targets[client_ix].iter().position(|&x| x == t) {
                    Some(i) => 1 + i,
                    // Not a target the split can pick (cannot happen with one
                    // table): count it without a slot.
                    None => {
                        s.owner.resolve_request(self.labels(table, o)).inc();
                        return;
                    }
                },
            };
        let source = o.source.map_or(SOURCES - 1, |s| s as usize);
        let i = (row * SOURCES + source) * CLASSES + class(o.status);
        r.requests[i]
            .get_or_init(|| s.owner.resolve_request(self.labels(table, o)))
            .inc();
        r.duration[client_ix]
            .get_or_init(|| {
                let route = &*table.routes[o.route as usize].name;
                s.owner
                    .resolve_duration([route, version_label(table, o.client)])
            })
            .observe(o.elapsed.as_secs_f64());
    }

    fn labels<'t>(&self, table: &'t RoutingTable, o: Outcome) -> [&'t str; 5] {
        [
            &*table.routes[o.route as usize].name,
            version_label(table, o.client),
            o.target.map_or(NONE, |t| &*table.versions[t as usize].name),
            SOURCE_NAMES[o.source.map_or(SOURCES - 1, |s| s as usize)],
            CLASS_NAMES[class(o.status)],
        ]
    }

    /// Observes an upstream exchange's time to response head.
    pub fn upstream(&self, pool: PoolId, elapsed: Duration) {
        if let Some(s) = &self.inner {
            s.pools[pool as usize].observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a cache outcome on a route with a cache.
    pub fn cache(&self, route: RouteId, status: CacheStatus) {
        if let Some(c) = self
            .inner
            .as_ref()
            .and_then(|s| s.routes[route as usize].cache.as_ref())
        {
            c[status as usize].inc();
        }
    }

    /// Notes the client id (raw header value) and its version.
    pub fn client_seen(&self, client: &[u8], version: VersionId) {
        if let Some(s) = &self.inner {
            s.owner.client_seen(client, s.version_ix[version as usize]);
        }
    }
}

fn version_label(table: &RoutingTable, v: Option<VersionId>) -> &str {
    v.map_or(UNKNOWN, |v| &*table.versions[v as usize].name)
}

/// 0 for 1xx ... 4 for 5xx.
fn class(status: StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(class(StatusCode::CONTINUE), 0);
        assert_eq!(class(StatusCode::OK), 1);
        assert_eq!(class(StatusCode::NOT_MODIFIED), 2);
        assert_eq!(class(StatusCode::GONE), 3);
        assert_eq!(class(StatusCode::GATEWAY_TIMEOUT), 4);
    }

    #[test]
    fn source_names_follow_the_enum() {
        for s in [
            Source::Header,
            Source::Accept,
            Source::Path,
            Source::Query,
            Source::Pin,
            Source::Default,
        ] {
            assert_eq!(SOURCE_NAMES[s as usize], s.as_str());
        }
    }

    #[test]
    fn clients_past_the_top_n_are_other() {
        let m = RequestMetrics::register(&Registry::new());
        m.version_names
            .lock()
            .unwrap()
            .extend(["v1".into(), "v2".into()]);
        for _ in 0..3 {
            m.client_seen(b"acme", 1);
        }
        m.client_seen(b"acme", 2);
        m.client_seen(b"bravo", 1);
        m.client_seen(b"charlie", 1);
        m.client_seen(&[b'x'; 65], 1); // too long: other
        m.refresh_gauges(None, 1, (0, 0));
        assert_eq!(m.client_requests.with_label_values(&["acme"]).get(), 4);
        assert_eq!(m.client_requests.with_label_values(&["other"]).get(), 3);
        assert_eq!(m.client_version.with_label_values(&["acme", "v2"]).get(), 1);
        assert_eq!(
            m.client_version.with_label_values(&["other", "v1"]).get(),
            2
        );
    }
}
