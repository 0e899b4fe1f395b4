//! switchyard: a version-routing API gateway. The binary is a thin CLI over
//! this library; tests and benches use the same entry points.

pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod headers;
pub mod pipeline;
pub mod problem;
pub mod route;
pub mod server;
pub mod split;
pub mod table;
pub mod upstream;
pub mod version;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Document;
use crate::pipeline::Gateway;
use crate::table::{RoutingTable, TableHandle};
use crate::upstream::Upstream;

/// A running gateway's shared parts.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The published table.
    pub tables: Arc<TableHandle>,
    /// Upstream clients and endpoint state.
    pub upstream: Arc<Upstream>,
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
    let handles = Handles {
        tables: Arc::new(TableHandle::default()),
        upstream: Arc::new(Upstream::default()),
    };
    handles
        .tables
        .publish(RoutingTable::compile(&doc, &handles.upstream, origin, 1));
    let conn = server::ConnSettings::from(&doc.server);
    let gateway = Arc::new(Gateway::new(
        handles.tables.clone(),
        handles.upstream.clone(),
        &doc.server,
    ));
    let admin_handler = Arc::new(admin::Admin {
        tables: handles.tables.clone(),
    });
    let admin_task = tokio::spawn(server::serve(
        admin,
        admin_handler,
        conn.clone(),
        shutdown.clone(),
    ));
    let drained = server::serve(proxy, gateway, conn, shutdown).await;
    let _ = admin_task.await;
    drained
}
