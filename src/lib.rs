//! switchyard: a version-routing API gateway. The binary is a thin CLI over
//! this library; tests and benches use the same entry points.

pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod framing;
pub mod headers;
pub mod pipeline;
pub mod problem;
pub mod route;
pub mod server;
pub mod split;
pub mod table;
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
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            file: None,
            text: None,
            clock: Arc::new(control::SystemClock),
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
    options: ServeOptions,
) -> bool {
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
    let control = Arc::new(control::Control::new(
        tables.clone(),
        upstream.clone(),
        sources,
        options.clock,
    ));
    let conn = server::ConnSettings::from(&doc.server);
    let gateway = Arc::new(Gateway::new(tables.clone(), upstream, &doc.server));
    let token = std::env::var("SWITCHYARD_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .or(doc.server.admin_token.clone());
    let admin_handler = Arc::new(admin::Admin {
        tables,
        control: control.clone(),
        token,
    });
    control.start_with_file(doc, origin, options.text).await;
    let watcher = tokio::spawn(control.clone().watch(shutdown.clone()));
    let admin_task = tokio::spawn(server::serve(
        admin,
        admin_handler,
        conn.clone(),
        shutdown.clone(),
    ));
    let drained = server::serve(proxy, gateway, conn, shutdown).await;
    let _ = admin_task.await;
    let _ = watcher.await;
    drained
}
