//! `RoutingTable`, the compiled immutable form of a validated document, and
//! `TableHandle`, which publishes it through one `arc-swap` pointer. The
//! request path does one atomic load and then only reads: matchers, version
//! resolvers, splits, lifecycle header values and upstream handles are all
//! built here, once per reload.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;

use crate::config::{Document, HostHeader, Status};
use crate::limit::{Limits, RouteLimits};
use crate::route::{RouteId, Router};
use crate::season::Calendar;
use crate::split::{PoolId, Profiles, SplitSettings};
use crate::upstream::{HostRewrite, Pool, Timeouts, Upstream};
use crate::version::{Detection, Lifecycle, Resolver, VersionId};

/// A compiled API version.
#[derive(Debug)]
pub struct Version {
    /// Canonical name.
    pub name: Arc<str>,
    /// The name as a header value (for `x-api-version`).
    pub header: HeaderValue,
    /// Status, dates and their header values.
    pub lifecycle: Lifecycle,
    /// Successor, for 410 answers.
    pub successor: Option<VersionId>,
    /// Migration guide.
    pub doc_url: Option<Arc<str>>,
    /// Client ids allowed to use it; empty = everyone.
    pub allow_clients: HashSet<Box<str>>,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Route name.
    pub name: Arc<str>,
    /// Detection settings.
    pub detection: Detection,
    /// Version used when no source names one.
    pub default_version: VersionId,
    /// Bit `i` set = version `i` is served on this route.
    pub served: u64,
    /// Names of the served versions, for 400 answers.
    pub supported: Arc<[String]>,
    /// Split profiles per client version (indexed by `VersionId`; `None` =
    /// not served).
    pub splits: Vec<Option<Profiles>>,
    /// Sticky identity and canary override settings.
    pub split: SplitSettings,
    /// The headers the season, limit and split phases read (region, client
    /// id, API key, canary), found together in one pass.
    pub traffic: crate::headers::TrafficNames,
    /// Rate-limit policies.
    pub limits: RouteLimits,
    /// Connect and response timeouts.
    pub timeouts: Timeouts,
    /// A WebSocket tunnel idle this long is closed.
    pub tunnel_idle: Option<Duration>,
    /// Request body cap.
    pub max_body_bytes: u64,
    /// Body limits for translation.
    pub translate_limits: crate::translate::Limits,
    /// Response cache rules; `None` = not cached.
    pub cache: Option<crate::cache::RouteCache>,
    /// Retry policy and its budget counters.
    pub retry: crate::upstream::retry::RetryPolicy,
}

/// A compiled pool plus the version it serves.
#[derive(Debug)]
pub struct PoolEntry {
    /// Endpoints and host policy.
    pub pool: Pool,
    /// The API version the pool speaks.
    pub version: VersionId,
}

/// The immutable routing table one request sees from start to finish.
#[derive(Debug)]
pub struct RoutingTable {
    /// Versions by id.
    pub versions: Vec<Version>,
    /// Version string resolver.
    pub resolver: Resolver,
    /// Client pins.
    pub pins: HashMap<Box<str>, VersionId>,
    /// Pools by id.
    pub pools: Vec<PoolEntry>,
    /// Routes by id.
    pub routes: Vec<Route>,
    /// Host and prefix matcher.
    pub router: Router,
    /// Translation plans for every (client, target) version pair.
    pub translations: crate::translate::TranslationTable,
    /// Where the document came from.
    pub origin: String,
    /// Redis revision (0 for a file).
    pub revision: u64,
    /// Change-freeze windows.
    pub freezes: Vec<crate::control::freeze::Freeze>,
    /// Regions, season rules and the season active in each region.
    pub calendar: Calendar,
    /// Rate-limit policies and trusted proxies.
    pub limits: Limits,
    /// The document text, for `/admin/table`.
    pub source_text: Option<Arc<str>>,
    /// When it was compiled.
    pub loaded_at: jiff::Timestamp,
    /// Metric label handles (attached by the control plane after compiling;
    /// the default records nothing).
    pub metrics: crate::metrics::TableMetrics,
}

impl RoutingTable {
    /// Compiles a document that passed `config::validate`, with limiters
    /// of its own (see [`RoutingTable::compile_with`]).
    pub fn compile(
        doc: &Document,
        upstream: &Upstream,
        origin: String,
        revision: u64,
    ) -> RoutingTable {
        Self::compile_with(
            doc,
            upstream,
            &crate::limit::Registry::default(),
            origin,
            revision,
        )
    }

    /// Compiles a document that passed `config::validate`. Limiters and
    /// traffic metric handles come from `registry`, so a policy unchanged
    /// since the last table keeps its counts. The calendar is evaluated at
    /// the system time; the control plane re-evaluates it with its clock.
    pub fn compile_with(
        doc: &Document,
        upstream: &Upstream,
        registry: &crate::limit::Registry,
        origin: String,
        revision: u64,
    ) -> RoutingTable {
        let calendar = Calendar::compile(&doc.calendar, jiff::Timestamp::now(), |r, s| {
            registry.season_active.with_label_values(&[r, s])
        });
        let limits = Limits::compile(doc, &calendar, registry);
        let vid: HashMap<&str, VersionId> = doc
            .versions
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.as_str(), i as VersionId))
            .collect();
        let versions = doc
            .versions
            .iter()
            .map(|v| Version {
                name: v.name.as_str().into(),
                header: HeaderValue::from_str(&v.name).expect("validated version name"),
                lifecycle: Lifecycle::compile(v),
                successor: v.successor.as_deref().map(|s| vid[s]),
                doc_url: v.doc_url.as_deref().map(Into::into),
                allow_clients: v.allow_clients.iter().map(|c| c.as_str().into()).collect(),
            })
            .collect();
        let pid: HashMap<&str, PoolId> = doc
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i as PoolId))
            .collect();
        let mut pools: Vec<PoolEntry> = doc
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| PoolEntry {
                version: vid[p.version.as_str()],
                pool: Pool {
                    name: p.name.as_str().into(),
                    endpoints: p.endpoints.iter().map(|e| upstream.endpoint(e)).collect(),
                    host: match (&p.host, &p.host_header) {
                        (Some(h), _) => {
                            HostRewrite::Fixed(HeaderValue::from_str(h).expect("validated host"))
                        }
                        (None, HostHeader::Endpoint) => HostRewrite::Endpoint,
                        (None, HostHeader::Preserve) => HostRewrite::Preserve,
                    },
                    outlier: Some((&p.outlier).into()),
                    check: p.health.as_ref().map(Into::into),
                    failover: None,
                    transport: crate::upstream::Transport::compile(
                        p.protocol,
                        p.tls.as_ref(),
                        &format!("pools[{i}]"),
                    ),
                },
            })
            .collect();
        // Failover targets are copies without their own failover (one hop).
        let targets: Vec<Option<Arc<Pool>>> = doc
            .pools
            .iter()
            .map(|p| {
                let f = p.failover.as_deref()?;
                Some(Arc::new(pools[pid[f] as usize].pool.without_failover()))
            })
            .collect();
        for (entry, target) in pools.iter_mut().zip(targets) {
            entry.pool.failover = target;
        }
        let routes = doc
            .routes
            .iter()
            .map(|r| {
                let served_names: Vec<&str> = match &r.versions {
                    Some(list) => list.iter().map(String::as_str).collect(),
                    None => doc.versions.iter().map(|v| v.name.as_str()).collect(),
                };
                let mut served = 0u64;
                let mut splits = vec![None; doc.versions.len()];
                for name in &served_names {
                    let v = vid[name];
                    served |= 1 << v;
                    if doc.versions[v as usize].status == Status::Sunset {
                        continue; // answered 410 before any split
                    }
                    let targets = |weights: &[crate::config::WeightDoc]| -> Vec<(PoolId, u32)> {
                        weights
                            .iter()
                            .map(|w| (pid[w.pool.as_str()], w.weight))
                            .collect()
                    };
                    let default = match r.split.get(*name) {
                        Some(weights) => targets(weights),
                        None => pools
                            .iter()
                            .enumerate()
                            .filter(|(_, p)| p.version == v)
                            .map(|(i, _)| (i as PoolId, 1))
                            .collect(),
                    };
                    let by_season: Vec<_> = r
                        .profiles
                        .iter()
                        .filter_map(|(season, profile)| {
                            Some((
                                calendar.season_id(season).expect("validated season"),
                                targets(profile.get(*name)?),
                            ))
                        })
                        .collect();
                    splits[v as usize] = Some(Profiles::compile(
                        &default,
                        &by_season,
                        calendar.seasons.len(),
                    ));
                }
                let timeouts = Timeouts {
                    connect: Duration::from_millis(r.connect_timeout_ms),
                    response: Duration::from_millis(r.timeout_ms),
                    body: crate::server::optional_ms(r.body_timeout_ms),
                    start: None,
                };
                let detection = Detection::compile(&doc.detection, &r.detection);
                let split = SplitSettings::compile(
                    r,
                    registry
                        .canary_ignored
                        .with_label_values(&[r.name.as_str()]),
                );
                Route {
                    name: r.name.as_str().into(),
                    traffic: crate::headers::TrafficNames::new(
                        calendar.header().cloned(),
                        detection.client_header.clone(),
                        detection.api_key_header.clone(),
                        split.canary_header().clone(),
                    ),
                    detection,
                    default_version: vid[r.default_version.as_str()],
                    served,
                    supported: served_names
                        .iter()
                        .filter(|n| doc.versions[vid[*n] as usize].status != Status::Sunset)
                        .map(|n| n.to_string())
                        .collect(),
                    splits,
                    split,
                    limits: limits.route(r, &calendar, registry),
                    timeouts,
                    tunnel_idle: crate::server::optional_ms(r.tunnel_idle_timeout_ms),
                    max_body_bytes: r.max_body_bytes,
                    translate_limits: crate::translate::Limits {
                        max_bytes: r.translate_max_body_bytes,
                        max_depth: r.translate_max_depth,
                    },
                    cache: r.cache.as_ref().map(crate::cache::RouteCache::compile),
                    retry: (&r.retry).into(),
                }
            })
            .collect();
        RoutingTable {
            resolver: Resolver::compile(&doc.versions),
            pins: doc
                .pins
                .iter()
                .map(|(c, v)| (c.as_str().into(), vid[v.as_str()]))
                .collect(),
            router: Router::compile(
                doc.routes
                    .iter()
                    .map(|r| (r.hosts.as_slice(), r.path_prefix.as_str())),
            ),
            translations: crate::translate::TranslationTable::compile(doc)
                .expect("validate() checked the change chains"),
            versions,
            pools,
            routes,
            origin,
            revision,
            freezes: doc
                .freezes
                .iter()
                .map(crate::control::freeze::Freeze::compile)
                .collect(),
            calendar,
            limits,
            source_text: None,
            loaded_at: jiff::Timestamp::now(),
            metrics: Default::default(),
        }
    }

    /// Adds pins kept in Redis (they override the document's). Returns the
    /// clients skipped because their version does not resolve in this table.
    pub fn add_pins(&mut self, pins: &HashMap<String, String>) -> Vec<String> {
        let mut skipped = Vec::new();
        for (client, version) in pins {
            match self.resolver.resolve(version) {
                Ok(v) => {
                    self.pins.insert(client.as_str().into(), v);
                }
                Err(_) => skipped.push(format!("{client}={version}")),
            }
        }
        skipped.sort();
        skipped
    }

    /// The route by id (ids come from this table's router).
    pub fn route(&self, id: RouteId) -> &Route {
        &self.routes[id as usize]
    }
}

/// The published table: one atomic pointer, swapped whole on reload.
#[derive(Debug, Default)]
pub struct TableHandle {
    current: ArcSwapOption<RoutingTable>,
    swaps: AtomicU64,
}

impl TableHandle {
    /// The current table, if one was ever published. One atomic load.
    pub fn load(&self) -> Option<Arc<RoutingTable>> {
        self.current.load_full()
    }

    /// Publishes a new table; in-flight requests keep the one they loaded.
    pub fn publish(&self, table: RoutingTable) {
        self.current.store(Some(Arc::new(table)));
        self.swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a table is loaded (readiness).
    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// How many tables were published since start.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }
}
