//! The demo: small hyper upstreams that answer JSON naming the version and
//! pool that served them, and the bundled `config/demo.toml` rewired to them.
//! The same upstream serves `benches/load.sh` (`switchyard demo-upstream`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::config::{self, Document, Origin};

/// The bundled demo table.
pub const DEMO_TOML: &str = include_str!("../config/demo.toml");

/// Parses the bundled demo table (it is tested to be valid).
pub fn demo_document() -> Document {
    config::load(DEMO_TOML, Origin::Embedded("config/demo.toml"))
        .expect("bundled demo table is valid")
}

/// Serves a demo upstream on `listener` until `shutdown`: every request gets
/// `{"served_by": <version>, "pool": <pool>, "method", "path", "query",
/// "x_api_version", "request_id"}`. `?delay_ms=N` delays the answer (to try
/// timeouts).
pub async fn serve_upstream(
    listener: TcpListener,
    version: &str,
    pool: &str,
    shutdown: CancellationToken,
) {
    let names = Arc::new((version.to_string(), pool.to_string()));
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
        };
        let _ = stream.set_nodelay(true);
        let names = names.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let names = names.clone();
            async move { Ok::<_, Infallible>(answer(&names.0, &names.1, req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(conn);
    }
}

async fn answer(version: &str, pool: &str, req: Request<Incoming>) -> Response<Body> {
    // Generic answers need only the head.
    let query = req.uri().query().unwrap_or("");
    if let Some(ms) = query
        .split('&')
        .find_map(|p| p.strip_prefix("delay_ms="))
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
    }
    let (parts, body) = req.into_parts();
    let sent = if parts.method == http::Method::POST {
        use http_body_util::BodyExt;
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        serde_json::from_slice::<serde_json::Value>(&bytes).ok()
    } else {
        None
    };
    let req = Request::from_parts(parts, ());
    if let Some(resp) = events(version, pool, &req, sent) {
        return resp;
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let body = serde_json::json!({
        "served_by": version,
        "pool": pool,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "x_api_version": header("x-api-version"),
        "request_id": header("x-request-id"),
    });
    json(StatusCode::OK, &body)
}

/// The demo's wedding/event API in the shape of each version, so the
/// translation chain is visible: v1 serves flat `/api/weddings`, v2 nested
/// `/api/events` (lists wrapped in `items`, 201 on create, nested errors),
/// v2.2-beta adds `currency`. Reads are served from two fixed records
/// (or `?n=N` generated ones for a list); a create echoes what it was sent
/// with a new id.
fn events(
    version: &str,
    pool: &str,
    req: &Request<()>,
    sent: Option<serde_json::Value>,
) -> Option<Response<Body>> {
    let v1 = version == "v1";
    let base = if v1 { "/api/weddings" } else { "/api/events" };
    let rest = req.uri().path().strip_prefix(base)?;
    let record = |id: u64, name: &str, date: &str| {
        let mut r = if v1 {
            serde_json::json!({"id": id, "client_name": name, "wedding_date": date, "status": "booked"})
        } else {
            serde_json::json!({"id": id, "client": {"name": name}, "event": {"date": date}, "status": "confirmed"})
        };
        if version == "v2.2-beta" {
            r["currency"] = "EUR".into();
        }
        r["served_by"] = pool.into();
        r
    };
    let not_found = |what: &str| {
        let (code, message) = ("not_found", format!("no wedding {what}"));
        let body = if v1 {
            serde_json::json!({"code": code, "message": message})
        } else {
            serde_json::json!({"error": {"code": code, "message": message}})
        };
        json(StatusCode::NOT_FOUND, &body)
    };
    let records = [
        record(1, "Ann", "2027-06-12"),
        record(2, "Bo", "2027-09-04"),
    ];
    Some(match (req.method().as_str(), rest) {
        ("GET", "" | "/") => {
            // `?n=N` (up to 1,000) lists N records, for load tests that
            // want a body of a given size; default the two fixed ones.
            let n = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("n=")))
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| n.min(1_000));
            let list = match n {
                None => serde_json::Value::Array(records.to_vec()),
                Some(n) => (1..=n)
                    .map(|id| {
                        let (name, date) =
                            [("Ann", "2027-06-12"), ("Bo", "2027-09-04")][(id % 2) as usize];
                        record(id, name, date)
                    })
                    .collect(),
            };
            json(
                StatusCode::OK,
                &if v1 {
                    list
                } else {
                    serde_json::json!({"items": list})
                },
            )
        }
        ("GET", id) => match records.iter().find(|r| format!("/{}", r["id"]) == id) {
            Some(r) => json(StatusCode::OK, r),
            None => not_found(id.trim_start_matches('/')),
        },
        ("POST", "" | "/") => {
            // Echo what was sent (in this version's shape) as the stored record.
            let mut created = match sent {
                Some(serde_json::Value::Object(o)) => serde_json::Value::Object(o),
                _ => {
                    return Some(json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"code": "bad_request", "message": "send a JSON object"}),
                    ));
                }
            };
            created["id"] = 3.into();
            created["served_by"] = pool.into();
            json(
                if v1 {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                &created,
            )
        }
        _ => return None,
    })
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Body::full(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Starts one demo upstream per pool of `doc` on free loopback ports and
/// points each pool at its upstream. Returns the addresses by pool name.
pub async fn start_upstreams(
    doc: &mut Document,
    shutdown: &CancellationToken,
) -> std::io::Result<Vec<(String, SocketAddr)>> {
    let mut started = Vec::new();
    for pool in &mut doc.pools {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        pool.endpoints = vec![addr.to_string()];
        let (version, name) = (pool.version.clone(), pool.name.clone());
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move { serve_upstream(listener, &version, &name, shutdown).await }
        });
        started.push((pool.name.clone(), addr));
    }
    Ok(started)
}

/// The curl commands the demo prints for a gateway on `proxy`/`admin`.
pub fn walkthrough(proxy: SocketAddr, admin: SocketAddr) -> String {
    let p = format!("http://{proxy}");
    format!(
        "switchyard demo: gateway on {p}, admin on http://{admin}\n\
         \n\
         Try:\n\
         \x20 curl -i {p}/api/orders                                      # no version: route default v2 (90% v2, 10% v2-canary)\n\
         \x20 curl -i -H 'x-api-version: 1' {p}/api/orders                # header: v1, with Deprecation/Sunset/Link headers\n\
         \x20 curl -i -H 'accept: application/vnd.wedsync.v1+json' {p}/api/orders   # Accept media type\n\
         \x20 curl -i {p}/api/v1/orders                                   # path prefix, stripped before forwarding\n\
         \x20 curl -i '{p}/api/orders?api-version=2.1.0'                   # query parameter, v2.1.0 resolves to v2\n\
         \x20 curl -i -H 'x-client-id: acme-weddings' {p}/api/orders      # per-client pin: v1\n\
         \x20 curl -i -H 'x-api-version: v0' {p}/api/orders               # sunset: 410 naming the successor\n\
         \x20 curl -i -H 'x-api-version: v9' {p}/api/orders               # unknown: 400 listing supported versions\n\
         \x20 curl -i -H 'x-api-version: beta' {p}/api/orders             # beta for listed clients only: 403\n\
         \x20 curl -i -H 'x-api-version: beta' -H 'x-client-id: beta-tester' {p}/api/orders\n\
         \x20 curl -s -H 'x-api-version: 1' {p}/api/weddings/1                # v1 shape; 20% of v1 traffic is served by the v2 pool, translated\n\
         \x20 curl -s -H 'x-api-version: 2' {p}/api/events/1                 # the same record in v2's shape\n\
         \x20 curl -s -H 'x-api-version: beta' -H 'x-client-id: beta-tester' {p}/api/events  # v2.2-beta adds currency\n\
         \x20 curl -s -X POST -H 'x-api-version: 1' -H 'content-type: application/json' \\\n\
         \x20      -d '{{\"client_name\":\"Dee\",\"wedding_date\":\"2028-02-02\",\"status\":\"booked\"}}' {p}/api/weddings\n\
         \x20 curl -s http://{admin}/admin/table                          # the live routing table\n\
         \n\
         Ctrl-C stops the demo.\n"
    )
}
