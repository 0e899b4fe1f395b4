//! The admin listener (default 127.0.0.1:9901): health probes and a summary
//! of the live routing table. Kept off the proxy port so it can stay
//! internal (the Kubernetes NetworkPolicy relies on that).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::json;

use crate::body::Body;
use crate::pipeline::health;
use crate::server::Handler;
use crate::table::TableHandle;

/// Admin API handler.
#[derive(Debug)]
pub struct Admin {
    /// The same table handle the proxy reads.
    pub tables: Arc<TableHandle>,
}

impl Handler for Admin {
    async fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
        let path = req.uri().path();
        if let Some(resp) = health(path, &self.tables) {
            return resp;
        }
        match path {
            "/admin/table" => json_response(StatusCode::OK, self.table_summary()),
            _ => json_response(
                StatusCode::NOT_FOUND,
                json!({"type": "https://switchyard.dev/problems/no-route", "title": "Not Found", "status": 404,
                       "detail": "admin endpoints: /health/live, /health/ready, /admin/table"}),
            ),
        }
    }
}

impl Admin {
    fn table_summary(&self) -> serde_json::Value {
        let Some(t) = self.tables.load() else {
            return json!({"loaded": false});
        };
        json!({
            "loaded": true,
            "origin": t.origin,
            "revision": t.revision,
            "versions": t.versions.iter().map(|v| json!({
                "name": &*v.name,
                "status": format!("{:?}", v.lifecycle.status).to_lowercase(),
                "sunset_at": v.lifecycle.sunset_at.map(|s| s.to_string()),
            })).collect::<Vec<_>>(),
            "pools": t.pools.iter().map(|p| json!({
                "name": &*p.pool.name,
                "version": &*t.versions[p.version as usize].name,
                "endpoints": p.pool.endpoints.iter().map(|e| json!({
                    "address": e.authority.as_str(), "inflight": e.inflight(),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "routes": t.routes.iter().map(|r| json!({
                "name": &*r.name,
                "default_version": &*t.versions[r.default_version as usize].name,
                "supported": &*r.supported,
            })).collect::<Vec<_>>(),
        })
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(body.to_string()));
    *resp.status_mut() = status;
    let ct = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}
