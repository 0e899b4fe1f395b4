//! switchyard: a version-routing API gateway. The binary is a thin CLI over
//! this library; tests and benches use the same entry points.

pub mod admin;
pub mod body;
pub mod cache;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod framing;
pub mod headers;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod problem;
pub mod route;
pub mod season;
pub mod server;
pub mod sock;
pub mod split;
pub mod table;
pub mod tls;
pub mod trace;
pub mod translate;
pub mod upstream;
pub mod version;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Document;
use crate::pipeline::Gateway;
use crate::table::TableHandle;
use crate::upstream::Upstream;

/// How to run a gateway beyond its document.
pub struct ServeOptions {
    /// The file the document came from (reloaded by `POST /admin/reload`
    /// without Redis).
    pub file: Option<std::path::PathBuf>,
    /// The document's text, for `/admin/table`.
    pub text: Option<String>,
    /// The clock (tests inject one to cross freezes and sunsets).
    pub clock: Arc<dyn control::Clock>,
    /// The TLS listener(s) and their certificates, when `server.tls` is set.
    pub tls: Option<TlsListeners>,
}

/// TLS listeners bound to `server.tls.listen` (one per worker with
/// [`server::bind_workers`]; [`serve_with`] uses the first) and the loaded
/// certificates they share.
#[derive(Debug)]
pub struct TlsListeners {
    /// Certificates, SNI choice and reload.
    pub terminator: Arc<tls::TlsTerminator>,
    /// Bound, not yet registered with a runtime.
    pub listeners: Vec<std::net::TcpListener>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            file: None,
            text: None,
            clock: Arc::new(control::SystemClock),
            tls: None,
        }
    }
}

/// Serves a validated document on the given listeners until `shutdown` is
/// cancelled, then drains within the document's grace period. Returns
/// whether every in-flight request finished in time.
pub async fn serve(
    doc: Document,
    origin: String,
    proxy: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
) -> bool {
    serve_with(doc, origin, proxy, admin, shutdown, ServeOptions::default()).await
}

/// [`serve`] with a source file, document text and clock. With
/// `server.redis_url` set, the table follows Redis (the document's own
/// table, if it has routes, serves until Redis answers).
pub async fn serve_with(
    doc: Document,
    origin: String,
    proxy: TcpListener,
    admin: TcpListener,
    shutdown: CancellationToken,
    mut options: ServeOptions,
) -> bool {
    let tls = options.tls.take().and_then(|t| {
        let listener = t.listeners.into_iter().next()?;
        let listener = TcpListener::from_std(listener).ok()?;
        Some((listener, t.terminator))
    });
    let terminator = tls.as_ref().map(|t| t.1.clone());
    let plane = Plane::start(doc, origin, admin, &shutdown, options, terminator).await;
    let drained = serve_worker(
        proxy,
        tls,
        plane.gateway.clone(),
        plane.conns(),
        shutdown,
        (None, None),
    )
    .await;
    plane.stop().await;
    drained
}

/// One worker's listeners: the plain one and, with TLS, the TLS one.
async fn serve_worker(
    plain: TcpListener,
    tls: Option<(TcpListener, Arc<tls::TlsTerminator>)>,
    gateway: Arc<Gateway>,
    (conn, tls_conn): (server::ConnSettings, server::ConnSettings),
    shutdown: CancellationToken,
    (balance, tls_balance): (Option<server::WorkerBalance>, Option<server::WorkerBalance>),
) -> bool {
    let plain_done = server::serve(
        plain,
        gateway.clone(),
        conn.clone(),
        shutdown.clone(),
        balance,
    );
    match tls {
        None => plain_done.await,
        Some((listener, terminator)) => {
            let tls_done = server::serve_tls(
                listener,
                terminator,
                gateway,
                tls_conn,
                shutdown,
                tls_balance,
            );
            let (a, b) = tokio::join!(plain_done, tls_done);
            a && b
        }
    }
}

/// [`serve_with`] thread-per-core: each of `proxies` (listeners bound to one
/// address with [`server::bind_workers`]) is served by its own
/// single-threaded runtime on its own thread, the first on the caller's.
/// The control plane (table sources, admin listener) stays on the caller's
/// runtime. Errors only while setting the workers up, before serving.
///
/// Why: a request then lives on one thread from accept to response, upstream
/// connections included, with no work stealing or cross-thread wakeups.
pub async fn serve_per_core(
    doc: Document,
    origin: String,
    proxies: Vec<std::net::TcpListener>,
    admin: TcpListener,
    shutdown: CancellationToken,
    mut options: ServeOptions,
) -> std::io::Result<bool> {
    let terminator = options.tls.as_ref().map(|t| t.terminator.clone());
    let mut tls_listeners = options
        .tls
        .take()
        .map(|t| t.listeners)
        .unwrap_or_default()
        .into_iter();
    let mut proxies = proxies.into_iter();
    let own = TcpListener::from_std(proxies.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no proxy listener")
    })?)?;
    let own_tls = match (&terminator, tls_listeners.next()) {
        (Some(t), Some(l)) => Some((TcpListener::from_std(l)?, t.clone())),
        _ => None,
    };
    let mut workers = Vec::new();
    for listener in proxies {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Registered with the worker's own reactor.
        let (listener, tls) = {
            let _entered = rt.enter();
            let tls = match (&terminator, tls_listeners.next()) {
                (Some(t), Some(l)) => Some((TcpListener::from_std(l)?, t.clone())),
                _ => None,
            };
            (TcpListener::from_std(listener)?, tls)
        };
        workers.push((rt, listener, tls));
    }
    let spread = doc.server.balance_connections;
    let affinity = doc.server.worker_cpu_affinity;
    let several = !workers.is_empty();
    let has_tls = own_tls.is_some();
    let plane = Plane::start(doc, origin, admin, &shutdown, options, terminator).await;
    // One balancer per listener kind, over every worker (this thread is 0).
    let balancers = |listener: &str| {
        let gauges = (0..=workers.len())
            .map(|w| {
                plane
                    .gateway
                    .metrics
                    .worker_connections
                    .with_label_values(&[listener, &w.to_string()])
            })
            .collect();
        server::Balancer::workers(gauges, spread)
    };
    // With several workers their connections are counted (and spread
    // unless `balance_connections = false`); one worker gets `None`.
    let mut plain_sides = several.then(|| balancers("plain")).into_iter().flatten();
    let mut tls_sides = (several && has_tls)
        .then(|| balancers("tls"))
        .into_iter()
        .flatten();
    let own_balance = (plain_sides.next(), tls_sides.next());
    let cpus = match server::placement(
        affinity,
        workers.len() + 1,
        server::allowed_cpus().as_deref(),
    ) {
        server::Placement::Pinned(cpus) => {
            tracing::info!(?cpus, "proxy workers pinned, worker i to the i-th CPU");
            cpus
        }
        server::Placement::Unpinned(why) => {
            tracing::info!(reason = why, "proxy workers not pinned to CPUs");
            Vec::new()
        }
    };
    let mut done = Vec::with_capacity(workers.len());
    for (i, (rt, listener, tls)) in workers.into_iter().enumerate() {
        let cpu = cpus.get(i + 1).copied();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (gateway, conn, stop) = (plane.gateway.clone(), plane.conns(), shutdown.clone());
        let balance = (plain_sides.next(), tls_sides.next());
        let spawned = std::thread::Builder::new()
            .name(format!("switchyard-{}", i + 1))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    server::pin_current_thread(cpu);
                }
                let worker = serve_worker(listener, tls, gateway, conn, stop, balance);
                let drained = logging::block_on_batched(&rt, worker);
                let _ = tx.send(drained);
            });
        if let Err(e) = spawned {
            shutdown.cancel();
            plane.stop().await;
            return Err(e);
        }
        done.push(rx);
    }
    // Last, so the threads started above keep the whole CPU set (threads
    // this one starts from now on inherit its single CPU).
    if let Some(&cpu) = cpus.first() {
        server::pin_current_thread(cpu);
    }
    let mut drained = serve_worker(
        own,
        own_tls,
        plane.gateway.clone(),
        plane.conns(),
        shutdown,
        own_balance,
    )
    .await;
    for rx in done {
        // A worker that panicked drops its sender: count it as not drained.
        drained &= rx.await.unwrap_or(false);
    }
    plane.stop().await;
    Ok(drained)
}

/// What every proxy listener shares, and the control-plane tasks beside it.
struct Plane {
    gateway: Arc<Gateway>,
    conn: server::ConnSettings,
    /// The TLS listener's: same settings, its own counters.
    tls_conn: server::ConnSettings,
    admin: tokio::task::JoinHandle<bool>,
    watcher: tokio::task::JoinHandle<()>,
    tls_watcher: Option<tokio::task::JoinHandle<()>>,
    seasons: tokio::task::JoinHandle<()>,
    evictor: tokio::task::JoinHandle<()>,
    health: tokio::task::JoinHandle<()>,
}

impl Plane {
    /// The plain and TLS listeners' connection settings.
    fn conns(&self) -> (server::ConnSettings, server::ConnSettings) {
        (self.conn.clone(), self.tls_conn.clone())
    }

    async fn start(
        doc: Document,
        origin: String,
        admin: TcpListener,
        shutdown: &CancellationToken,
        options: ServeOptions,
        tls: Option<Arc<tls::TlsTerminator>>,
    ) -> Plane {
        let tables = Arc::new(TableHandle::default());
        let upstream = Arc::new(Upstream::default());
        let sources = control::Sources {
            file: options.file.clone(),
            redis: doc
                .server
                .redis_url
                .clone()
                .map(|u| (u, doc.server.redis_prefix.clone())),
            poll: std::time::Duration::from_millis(doc.server.redis_poll_ms),
        };
        let clock = options.clock.clone();
        let control = Arc::new(control::Control::new(
            tables.clone(),
            upstream.clone(),
            sources,
            options.clock,
        ));
        let mut conn = server::ConnSettings::from(&doc.server);
        conn.handoffs = Some(control.metrics.requests.http1_handoffs.clone());
        let mut tls_conn = conn.for_another_listener();
        if let Some(ms) = doc.server.tls.as_ref().and_then(|t| t.idle_timeout_ms) {
            tls_conn.idle_timeout = server::optional_ms(ms);
        }
        let gateway = Arc::new(Gateway::new(
            tables.clone(),
            upstream,
            &doc.server,
            control.metrics.requests.clone(),
        ));
        let token = std::env::var(admin::ADMIN_TOKEN_ENV)
            .ok()
            .filter(|t| !t.is_empty())
            .or(doc.server.admin_token.clone());
        let admin_handler = Arc::new(admin::Admin {
            tables,
            control: control.clone(),
            token,
            cache: gateway.cache.clone(),
            top_clients: doc.server.metrics_top_clients,
        });
        control.start_with_file(doc, origin, options.text).await;
        let watcher = tokio::spawn(control.clone().watch(shutdown.clone()));
        let tls_watcher = tls.map(|t| tokio::spawn(t.watch(shutdown.clone())));
        // Off the request path: the active season per region, and idle
        // rate-limit keys.
        let seasons = tokio::spawn(season::keep_current(
            control.tables.clone(),
            clock,
            shutdown.clone(),
        ));
        let evictor = tokio::spawn(
            control
                .traffic
                .clone()
                .evict_periodically(limit::EVICT_EVERY, shutdown.clone()),
        );
        let health = tokio::spawn(upstream::health::run_checks(
            control.tables.clone(),
            shutdown.clone(),
        ));
        let admin = tokio::spawn(server::serve(
            admin,
            admin_handler,
            // Its own counters: shedding proxy traffic never blinds probes.
            conn.for_another_listener(),
            shutdown.clone(),
            None,
        ));
        Plane {
            gateway,
            conn,
            tls_conn,
            admin,
            watcher,
            tls_watcher,
            seasons,
            evictor,
            health,
        }
    }

    /// Waits for the admin listener and the table watcher (both stop on the
    /// shutdown token).
    async fn stop(self) {
        let _ = self.admin.await;
        let _ = self.watcher.await;
        if let Some(t) = self.tls_watcher {
            let _ = t.await;
        }
        let _ = self.seasons.await;
        let _ = self.evictor.await;
        let _ = self.health.await;
    }
}
