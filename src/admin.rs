//! The admin listener (default 127.0.0.1:9901): health probes (open) and
//! the `/admin/*` API (bearer token when one is configured): the live table,
//! the control plane's status, reload now, and the Redis audit history.
//! Kept off the proxy port so it can stay internal (the Kubernetes
//! NetworkPolicy relies on that).

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::json;

use crate::body::{Body, ClientBody};
use crate::control::Control;
use crate::pipeline::health;
use crate::server::Handler;
use crate::table::TableHandle;

/// Env var holding the bearer token for `/admin/*` (wins over
/// `server.admin_token`; read outside clap, so deployment checks name it here).
pub const ADMIN_TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";

/// Admin API handler.
#[derive(Debug)]
pub struct Admin {
    /// The same table handle the proxy reads.
    pub tables: Arc<TableHandle>,
    /// The control plane.
    pub control: Arc<Control>,
    /// Bearer token for `/admin/*`; `None` = open.
    pub token: Option<String>,
    /// The proxy's response cache (`POST /admin/cache/purge`, size gauges).
    pub cache: Arc<crate::cache::ResponseCache>,
    /// Clients named in the version-usage metrics (`metrics_top_clients`).
    pub top_clients: usize,
}

impl Handler for Admin {
    async fn call(
        &self,
        req: Request<Option<ClientBody>>,
        _peer: SocketAddr,
        _https: bool,
    ) -> Response<Body> {
        let path = req.uri().path();
        if let Some(resp) = health(path, &self.tables) {
            return resp;
        }
        if path == "/metrics" {
            // Gauges computed from live state at scrape time, off the request path.
            let usage = self.cache.usage().await;
            self.control.metrics.requests.refresh_gauges(
                self.tables.load().as_deref(),
                self.top_clients,
                usage,
            );
            let mut resp = Response::new(Body::full(self.control.metrics.render()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return resp;
        }
        if let Err(resp) = self.authorize(&req) {
            return resp;
        }
        if path == "/admin/cache/purge" {
            return match *req.method() {
                Method::POST => self.purge(req).await,
                _ => problem(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method-not-allowed",
                    "POST /admin/cache/purge",
                ),
            };
        }
        let method = req.method();
        match (method, path) {
            (&Method::GET, "/admin/table") => json_response(StatusCode::OK, self.table_summary()),
            (&Method::GET, "/admin/status") => {
                json_response(StatusCode::OK, json!(self.control.status()))
            }
            (&Method::POST, "/admin/reload") => {
                let r = self.control.check(true).await;
                let status = if r.result == "rejected" || r.result == "error" {
                    StatusCode::UNPROCESSABLE_ENTITY
                } else {
                    StatusCode::OK
                };
                json_response(
                    status,
                    json!({"reload": r, "status": self.control.status()}),
                )
            }
            (&Method::GET, "/admin/history") => self.history().await,
            (&Method::GET, "/admin/season") => json_response(StatusCode::OK, self.season()),
            (&Method::GET, "/admin/upstreams") => {
                json_response(StatusCode::OK, upstreams(&self.tables))
            }
            (
                _,
                "/admin/table" | "/admin/status" | "/admin/reload" | "/admin/history"
                | "/admin/season" | "/admin/upstreams",
            ) => problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "GET /admin/table, /admin/status, /admin/history, /admin/season, /admin/upstreams; POST /admin/reload",
            ),
            _ => problem(
                StatusCode::NOT_FOUND,
                "no-route",
                "admin endpoints: /health/live, /health/ready, /admin/table, /admin/status, /admin/reload, /admin/history, /admin/season, /admin/upstreams, /admin/cache/purge",
            ),
        }
    }
}

impl Admin {
    /// `Authorization: Bearer <token>`: 401 when missing, 403 when wrong.
    #[allow(clippy::result_large_err)]
    fn authorize(&self, req: &Request<Option<ClientBody>>) -> Result<(), Response<Body>> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        match given {
            None => {
                let mut resp = problem(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the admin API needs Authorization: Bearer <token>",
                );
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"switchyard-admin\""),
                );
                Err(resp)
            }
            Some(t) if constant_time_eq(t.trim().as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(problem(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the admin token is not valid",
            )),
        }
    }

    async fn history(&self) -> Response<Body> {
        if !self.control.has_redis() {
            return problem(
                StatusCode::CONFLICT,
                "no-redis",
                "history lives in Redis; this gateway serves a file",
            );
        }
        let Some(mut store) = self.control.store().await else {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "redis-unavailable",
                "not connected to Redis",
            );
        };
        match store.history(100).await {
            Ok(entries) => json_response(StatusCode::OK, json!({"entries": entries})),
            Err(e) => problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "redis-unavailable",
                &format!("redis: {e}"),
            ),
        }
    }

    /// `POST /admin/cache/purge` with `{"route": "api", "path_prefix":
    /// "/api/orders"}` (either or both; both must match): drops the matching
    /// cached responses and says how many.
    async fn purge(&self, req: Request<Option<ClientBody>>) -> Response<Body> {
        use http_body_util::BodyExt;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Purge {
            route: Option<String>,
            path_prefix: Option<String>,
        }
        // 64 KiB: a purge request is a few dozen bytes.
        let body = match req.into_body() {
            Some(body) => Body::limited(body, 64 * 1024),
            None => Body::empty(),
        };
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    "the request body could not be read (at most 64 KiB)",
                );
            }
        };
        let purge: Purge = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    &format!("expected {{\"route\": ..., \"path_prefix\": ...}}: {e}"),
                );
            }
        };
        if purge.route.is_none() && purge.path_prefix.is_none() {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "nothing-to-purge",
                "name a route, a path_prefix (\"/\" for everything), or both",
            );
        }
        let purged = self
            .cache
            .purge(purge.route.as_deref(), purge.path_prefix.as_deref())
            .await;
        tracing::info!(route = ?purge.route, path_prefix = ?purge.path_prefix, purged, "cache purged");
        json_response(
            StatusCode::OK,
            json!({"purged": purged, "route": purge.route, "path_prefix": purge.path_prefix}),
        )
    }

    /// The active season per region and the season names.
    fn season(&self) -> serde_json::Value {
        let Some(t) = self.tables.load() else {
            return json!({"loaded": false});
        };
        let now = self.control.now();
        json!({
            "loaded": true,
            "now": now.to_string(),
            "seasons": t.calendar.seasons.iter().map(|s| &**s).collect::<Vec<_>>(),
            "regions": t.calendar.status(now),
        })
    }

    fn table_summary(&self) -> serde_json::Value {
        let Some(t) = self.tables.load() else {
            return json!({"loaded": false});
        };
        json!({
            "loaded": true,
            "origin": t.origin,
            "revision": t.revision,
            "loaded_at": t.loaded_at.to_string(),
            "document": t.source_text.as_deref(),
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

fn problem(status: StatusCode, kind: &str, detail: &str) -> Response<Body> {
    json_response(
        status,
        json!({"type": format!("https://switchyard.dev/problems/{kind}"), "title": status.canonical_reason(),
               "status": status.as_u16(), "detail": detail}),
    )
}

/// Compares without an early exit, so response timing does not reveal how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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

/// Pools, their endpoints' health and in-flight counts, and whether each
/// pool (or its failover) can serve.
pub fn upstreams(tables: &crate::table::TableHandle) -> serde_json::Value {
    let Some(t) = tables.load() else {
        return json!({"loaded": false});
    };
    let pools: Vec<_> = t
        .pools
        .iter()
        .map(|p| {
            let p = &p.pool;
            json!({
                "name": &*p.name,
                "serving": p.serving(),
                "failover": p.failover.as_ref().map(|f| &*f.name),
                "active_checks": p.check.is_some(),
                "endpoints": p.endpoints.iter().map(|e| {
                    let mut r = serde_json::to_value(e.health.report()).unwrap_or_default();
                    r["endpoint"] = e.authority.as_str().into();
                    r["inflight"] = e.inflight().into();
                    r
                }).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"loaded": true, "pools": pools})
}
