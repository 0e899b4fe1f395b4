//! The control plane: where routing tables come from (a file, or Redis with
//! pub/sub + polling), how a new one is applied (parse -> validate ->
//! compile -> one atomic swap, keeping the last good table on any error),
//! change freezes, Redis pins, and the status the admin API shows.
//!
//! Nothing here runs on the request path: the proxy only ever loads the
//! published table. The watcher's state sits behind an async mutex that only
//! the watcher task and admin requests take.

pub mod freeze;
pub mod metrics;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use redis::{PushInfo, PushKind};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigErrors, Document, Origin};
use crate::table::{RoutingTable, TableHandle};
use crate::upstream::Upstream;
use store::{Store, Stored};

/// The wall clock, injectable so freezes and sunsets can be tested.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Where the gateway's table comes from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The file (also the fallback when Redis is unreachable at start).
    pub file: Option<PathBuf>,
    /// Redis URL and key prefix.
    pub redis: Option<(String, String)>,
    /// Redis revision poll interval.
    pub poll: Duration,
}

/// The outcome of the last reload attempt.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadResult {
    /// When it ran.
    pub at: Timestamp,
    /// The revision it tried (0 for a file).
    pub revision: u64,
    /// `applied`, `rejected`, `deferred`, `unchanged`, `error`.
    pub result: &'static str,
    /// Errors, one per line, when rejected or failed.
    pub errors: Vec<String>,
}

/// A revision held back by a freeze.
#[derive(Debug, Clone, Serialize)]
pub struct Deferred {
    /// The revision.
    pub revision: u64,
    /// The freeze it was written in.
    pub freeze: String,
    /// When it will be applied.
    pub until: Timestamp,
}

/// What `/admin/status` shows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// `file`, `redis` or `file-fallback` (Redis unreachable at start).
    pub source: String,
    /// Whether the last Redis command succeeded.
    pub redis_connected: bool,
    /// Revision of the serving table (0 = file).
    pub table_revision: u64,
    /// Revision of the Redis pin set mirrored in memory.
    pub pins_revision: u64,
    /// Pins mirrored from Redis.
    pub redis_pins: usize,
    /// Redis pins skipped because their version is not in the table.
    pub skipped_pins: Vec<String>,
    /// The last reload attempt.
    pub last_reload: Option<ReloadResult>,
    /// The last rejected revision and why (kept until a later one applies).
    pub rejected: Option<ReloadResult>,
    /// A revision deferred by a freeze.
    pub deferred: Option<Deferred>,
    /// Reloads applied since start.
    pub reloads: u64,
}

/// Everything the watcher remembers between checks.
#[derive(Default)]
struct WatchState {
    store: Option<Store>,
    doc: Option<(Document, String)>,
    applied_rev: u64,
    rejected_rev: Option<u64>,
    pins_rev: u64,
    pins: HashMap<String, String>,
    first_seen: Option<(u64, Timestamp)>,
}

/// The control plane of one gateway process.
pub struct Control {
    /// The published table.
    pub tables: Arc<TableHandle>,
    /// Upstream resources the compiler resolves against.
    pub upstream: Arc<Upstream>,
    sources: Sources,
    clock: Arc<dyn Clock>,
    status: Mutex<Status>,
    state: tokio::sync::Mutex<WatchState>,
    /// Control-plane metrics, rendered on `/metrics`.
    pub metrics: metrics::ControlMetrics,
    /// Limiters and traffic metric families that outlive tables.
    pub traffic: Arc<crate::limit::Registry>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("sources", &self.sources)
            .finish_non_exhaustive()
    }
}

impl Control {
    /// A control plane publishing into `tables`.
    pub fn new(
        tables: Arc<TableHandle>,
        upstream: Arc<Upstream>,
        sources: Sources,
        clock: Arc<dyn Clock>,
    ) -> Control {
        let metrics = metrics::ControlMetrics::default();
        let traffic = Arc::new(crate::limit::Registry::default());
        for c in traffic.collectors() {
            metrics.register(c);
        }
        Control {
            tables,
            upstream,
            sources,
            clock,
            status: Mutex::new(Status::default()),
            state: tokio::sync::Mutex::new(WatchState::default()),
            metrics,
            traffic,
        }
    }

    /// A copy of the status.
    pub fn status(&self) -> Status {
        self.status.lock().expect("status poisoned").clone()
    }

    /// The control plane's clock's now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Whether Redis is configured.
    pub fn has_redis(&self) -> bool {
        self.sources.redis.is_some()
    }

    /// The connected store, if any (for `/admin/history`).
    pub async fn store(&self) -> Option<Store> {
        self.state.lock().await.store.clone()
    }

    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.lock().expect("status poisoned");
        f(&mut s);
        let m = &self.metrics;
        m.revision.set(s.table_revision as i64);
        m.deferred
            .set(s.deferred.as_ref().map_or(0, |d| d.revision as i64));
        m.redis_connected.set(i64::from(s.redis_connected));
        m.redis_pins.set(s.redis_pins as i64);
    }

    /// Publishes a validated document read from the file at start.
    pub async fn start_with_file(&self, doc: Document, origin: String, text: Option<String>) {
        let mut st = self.state.lock().await;
        let has_table = !doc.routes.is_empty();
        st.doc = Some((doc, text.unwrap_or_default()));
        if has_table {
            self.publish(&mut st, origin, 0);
        }
        let source = if self.sources.redis.is_some() {
            "file-fallback"
        } else {
            "file"
        };
        self.set_status(|s| s.source = source.into());
    }

    fn publish(&self, st: &mut WatchState, origin: String, revision: u64) -> Vec<String> {
        let (doc, text) = st.doc.as_ref().expect("a document to publish");
        let mut table =
            RoutingTable::compile_with(doc, &self.upstream, &self.traffic, origin, revision);
        table.source_text = Some(text.as_str().into());
        table.loaded_at = self.clock.now();
        table.calendar.refresh(table.loaded_at);
        let skipped = table.add_pins(&st.pins);
        table.metrics = self.metrics.requests.compile(&table);
        let redis_pins = st.pins.len() - skipped.len();
        // Published under the status lock: whoever sees the new table's
        // answers and then asks for the status sees its revision (a swap
        // before the status update left a window where it did not).
        self.set_status(|s| {
            self.tables.publish(table);
            s.table_revision = revision;
            s.redis_pins = redis_pins;
            s.skipped_pins = skipped.clone();
            s.reloads += 1;
        });
        skipped
    }

    /// Re-reads the source now: the file (file mode) or the Redis revision
    /// and pin set. `force` retries a revision rejected before.
    pub async fn check(&self, force: bool) -> ReloadResult {
        let now = self.clock.now();
        let mut st = self.state.lock().await;
        let result = if self.sources.redis.is_some() {
            self.check_redis(&mut st, force, now).await
        } else {
            self.check_file(&mut st, now)
        };
        // A deferral is counted once, not on every poll that re-checks it.
        let repeat = result.result == "deferred"
            && self
                .status()
                .deferred
                .as_ref()
                .is_some_and(|d| d.revision == result.revision)
            && self.metrics.reloads.with_label_values(&["deferred"]).get() > 0;
        if result.result != "unchanged" && !repeat {
            self.metrics
                .reloads
                .with_label_values(&[result.result])
                .inc();
        }
        self.set_status(|s| {
            s.last_reload = Some(result.clone());
            if result.result == "rejected" {
                s.rejected = Some(result.clone());
            }
            if result.result == "applied" {
                s.rejected = None;
            }
        });
        result
    }

    fn check_file(&self, st: &mut WatchState, now: Timestamp) -> ReloadResult {
        let Some(path) = &self.sources.file else {
            return result(now, 0, "unchanged", vec![]);
        };
        let origin = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => return result(now, 0, "error", vec![format!("{origin}: {e}")]),
        };
        match config::load(&text, Origin::File(origin.clone())) {
            Ok(doc) => {
                st.doc = Some((doc, text));
                self.publish(st, origin.clone(), 0);
                tracing::info!(file = %origin, "routing table reloaded from file");
                result(now, 0, "applied", vec![])
            }
            Err(errors) => {
                tracing::error!(file = %origin, errors = %errors, "routing table rejected; the last good table keeps serving");
                result(now, 0, "rejected", lines(&errors))
            }
        }
    }

    async fn check_redis(&self, st: &mut WatchState, force: bool, now: Timestamp) -> ReloadResult {
        let Some(store) = st.store.as_mut() else {
            return result(
                now,
                st.applied_rev,
                "error",
                vec!["not connected to Redis yet".into()],
            );
        };
        let revisions = store.revisions().await;
        let (rev, pins_rev) = match revisions {
            Ok(r) => {
                self.set_status(|s| s.redis_connected = true);
                r
            }
            Err(e) => {
                self.set_status(|s| s.redis_connected = false);
                return result(now, st.applied_rev, "error", vec![format!("redis: {e}")]);
            }
        };
        let mut changed_pins = false;
        if pins_rev != st.pins_rev {
            match store.pins().await {
                Ok((r, pins)) => {
                    st.pins_rev = r;
                    st.pins = pins;
                    changed_pins = true;
                    self.set_status(|s| s.pins_revision = r);
                }
                Err(e) => return result(now, st.applied_rev, "error", vec![format!("redis: {e}")]),
            }
        }
        let wanted = rev != 0 && rev != st.applied_rev && (force || st.rejected_rev != Some(rev));
        if !wanted {
            if changed_pins && st.doc.is_some() {
                let origin = format!("redis revision {}", st.applied_rev);
                let skipped = self.publish(st, origin, st.applied_rev);
                tracing::info!(
                    pins_revision = pins_rev,
                    skipped = skipped.len(),
                    "pin set reloaded"
                );
                return result(now, st.applied_rev, "applied", vec![]);
            }
            return result(now, st.applied_rev, "unchanged", vec![]);
        }
        let stored = match store.current().await {
            Ok(Some(s)) => s,
            Ok(None) => return result(now, st.applied_rev, "unchanged", vec![]),
            Err(e) => return result(now, st.applied_rev, "error", vec![format!("redis: {e}")]),
        };
        self.apply_stored(st, stored, now)
    }

    fn apply_stored(&self, st: &mut WatchState, stored: Stored, now: Timestamp) -> ReloadResult {
        let rev = stored.revision;
        // Freeze: a non-emergency revision written inside a freeze window of
        // the serving table waits for the window to end.
        let written = match (&stored.meta, st.first_seen) {
            (Some(m), _) => m.time,
            (None, Some((r, t))) if r == rev => t,
            (None, _) => {
                st.first_seen = Some((rev, now));
                now
            }
        };
        let emergency = stored.meta.as_ref().is_some_and(|m| m.emergency);
        if !emergency
            && let Some(table) = self.tables.load()
            && let Some(f) = freeze::active(&table.freezes, written)
            && now < f.until
        {
            let newly = self.status().deferred.is_none_or(|d| d.revision != rev);
            if newly {
                tracing::warn!(revision = rev, freeze = %f.name, until = %f.until,
                    "revision written during a change freeze without --emergency; deferred until the freeze ends");
            }
            self.set_status(|s| {
                s.deferred = Some(Deferred {
                    revision: rev,
                    freeze: f.name.clone(),
                    until: f.until,
                })
            });
            return result(
                now,
                rev,
                "deferred",
                vec![format!("change freeze {:?} until {}", f.name, f.until)],
            );
        }
        let origin = Origin::Redis { revision: rev };
        match config::load(&stored.text, origin.clone()) {
            Ok(doc) => {
                st.doc = Some((doc, stored.text));
                st.applied_rev = rev;
                st.rejected_rev = None;
                self.publish(st, origin.to_string(), rev);
                self.set_status(|s| {
                    s.source = "redis".into();
                    s.deferred = None;
                });
                tracing::info!(revision = rev, author = ?stored.meta.as_ref().map(|m| &m.author), "routing table applied");
                result(now, rev, "applied", vec![])
            }
            Err(errors) => {
                st.rejected_rev = Some(rev);
                tracing::error!(revision = rev, errors = %errors, "routing table rejected; the last good table keeps serving");
                result(now, rev, "rejected", lines(&errors))
            }
        }
    }

    /// Runs the Redis watcher until `shutdown`: connects (retrying with
    /// backoff), subscribes, and re-checks on every announcement, on every
    /// poll tick and after every reconnect.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let Some((url, prefix)) = self.sources.redis.clone() else {
            return;
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<PushInfo>();
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = Store::connect(&url, &prefix, Some(tx.clone())) => c,
            };
            match connected {
                Ok(mut store) => {
                    if let Err(e) = store.subscribe().await {
                        tracing::warn!(error = %e, "redis subscribe failed; relying on polling");
                    }
                    self.state.lock().await.store = Some(store);
                    self.set_status(|s| s.redis_connected = true);
                    tracing::info!(url = %redact(&url), "connected to redis");
                    break;
                }
                Err(e) => {
                    self.set_status(|s| s.redis_connected = false);
                    tracing::warn!(error = %e, retry_in = ?backoff, "redis unreachable; serving the last good table");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut tick = tokio::time::interval(self.sources.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = rx.recv() => match msg {
                    Some(m) if m.kind == PushKind::Disconnection => {
                        self.set_status(|s| s.redis_connected = false);
                        tracing::warn!("redis connection lost; reconnecting, serving the last good table");
                        continue;
                    }
                    Some(m) if m.kind == PushKind::Message || m.kind == PushKind::Subscribe => {}
                    Some(_) => continue,
                    None => return,
                },
                _ = tick.tick() => {}
            }
            let r = self.check(false).await;
            if r.result == "error" {
                tracing::debug!(errors = ?r.errors, "redis check failed");
            }
        }
    }
}

fn result(at: Timestamp, revision: u64, result: &'static str, errors: Vec<String>) -> ReloadResult {
    ReloadResult {
        at,
        revision,
        result,
        errors,
    }
}

fn lines(errors: &ConfigErrors) -> Vec<String> {
    errors.to_string().lines().map(str::to_string).collect()
}

/// A Redis URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}
