//! The request path, phase by phase: admit (hygiene and limits), resolve
//! (route and version, lifecycle), season (the region's active season: one
//! atomic load), limit (rate-limit policies), split (target pool), forward,
//! respond.
//! One `Gateway::handle` call per request; it always answers, and failures
//! become problem+json in exactly one place (`finish`).

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;

use crate::body::{Body, BodyError};
use crate::config::{ServerSettings, Source, UnderscoreHeaders};
use crate::headers::*;
use crate::problem::GatewayError;
use crate::route::{self, PathError};
use crate::split;
use crate::table::{RoutingTable, TableHandle};
use crate::translate::{TranslateError, has_json_body, parse_json, set_body_headers, to_bytes};
use crate::upstream::Upstream;
use crate::version::{self, Detected, RequestView, ResolveError};

/// Limits and switches from the process settings, in request-path form.
#[derive(Debug, Clone)]
pub struct Admission {
    max_header_bytes: usize,
    max_headers: usize,
    max_uri_bytes: usize,
    underscore: UnderscoreHeaders,
    health_on_proxy: bool,
}

impl From<&ServerSettings> for Admission {
    fn from(s: &ServerSettings) -> Self {
        Admission {
            max_header_bytes: s.max_header_bytes,
            max_headers: s.max_headers,
            max_uri_bytes: s.max_uri_bytes,
            underscore: s.underscore_headers,
            health_on_proxy: s.health_on_proxy,
        }
    }
}

/// The proxy: shared by every connection of the proxy listener.
#[derive(Debug)]
pub struct Gateway {
    /// The published routing table.
    pub tables: Arc<TableHandle>,
    /// Long-lived upstream clients and endpoint state.
    pub upstream: Arc<Upstream>,
    admission: Admission,
}

/// What the phases learned about one request, for the response headers and
/// the log line.
#[derive(Default)]
struct RequestContext {
    request_id: Option<HeaderValue>,
    table: Option<Arc<RoutingTable>>,
    route: Option<crate::route::RouteId>,
    detected: Option<Detected>,
    target: Option<version::VersionId>,
    /// The season active in the request's region.
    season: Option<crate::season::SeasonId>,
    /// `RateLimit-Policy`/`RateLimit` for an allowed response (when configured).
    rate_limit: Option<crate::limit::RateLimitHeaders>,
    /// A sticky identity cookie the gateway just assigned.
    set_cookie: Option<HeaderValue>,
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

impl Gateway {
    /// A gateway over a table handle (which may still be empty: not ready).
    pub fn new(
        tables: Arc<TableHandle>,
        upstream: Arc<Upstream>,
        settings: &ServerSettings,
    ) -> Gateway {
        Gateway {
            tables,
            upstream,
            admission: settings.into(),
        }
    }

    /// Handles one request. Always answers.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let mut ctx = RequestContext {
            request_id: Some(request_id(req.headers())),
            ..Default::default()
        };
        let method = req.method().clone();
        let result = self.run(&mut ctx, req, peer).await;
        self.finish(ctx, &method, result)
    }

    async fn run(
        &self,
        ctx: &mut RequestContext,
        mut req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, GatewayError> {
        // admit
        self.admit(&mut req)?;
        let path = route::normalize(req.uri().path()).map_err(|e| GatewayError::BadRequest {
            reason: match e {
                PathError::EscapesRoot => "path escapes the root with ..",
                PathError::BadEscape => "path has an invalid percent-escape",
            },
        })?;
        if self.admission.health_on_proxy
            && path.starts_with("/health/")
            && let Some(resp) = health(&path, &self.tables)
        {
            return Ok(resp);
        }

        // resolve: one snapshot for the whole request
        let table = self.tables.load().ok_or(GatewayError::NotReady)?;
        let host = request_host(&req);
        let (route_id, prefix_len) = table
            .router
            .resolve(host, &path)
            .ok_or(GatewayError::NoRoute)?;
        let route = table.route(route_id);
        ctx.route = Some(route_id);
        let view = RequestView {
            path: &path,
            query: req.uri().query(),
            headers: req.headers(),
            prefix_len,
        };
        let mut detected = version::detect(
            &route.detection,
            &table.resolver,
            &table.pins,
            route.default_version,
            &view,
        )
        .map_err(|e| GatewayError::UnknownVersion {
            requested: e.requested,
            detected_by: e.source,
            malformed: e.kind == ResolveError::Malformed,
            supported: route.supported.clone(),
        })?;
        // An explicit beta request is a canary override: on a route with
        // `canary_clients`, anyone else is served the default (and counted).
        if detected.source != Source::Default
            && table.versions[detected.version as usize].lifecycle.status
                == crate::config::Status::Beta
            && !route
                .split
                .override_allowed(&route.detection, req.headers())
        {
            detected.version = route.default_version;
            detected.source = Source::Default;
        }
        let version = &table.versions[detected.version as usize];
        if route.served & (1 << detected.version) == 0 {
            return Err(GatewayError::UnknownVersion {
                requested: version.name.to_string(),
                detected_by: detected.source,
                malformed: false,
                supported: route.supported.clone(),
            });
        }
        // Errors from here on still say which version was detected.
        ctx.detected = Some(detected);
        ctx.table = Some(table.clone());
        if version.lifecycle.is_sunset(jiff::Timestamp::now()) {
            let successor = version
                .successor
                .map_or_else(|| "".into(), |s| table.versions[s as usize].name.clone());
            return Err(GatewayError::Sunset {
                version: version.name.clone(),
                successor,
                doc_url: version.doc_url.clone(),
            });
        }
        if !version.allow_clients.is_empty() {
            let client = req
                .headers()
                .get(&route.detection.client_header)
                .and_then(|v| v.to_str().ok());
            if !client.is_some_and(|c| version.allow_clients.contains(c)) {
                return Err(GatewayError::VersionRestricted {
                    version: version.name.clone(),
                });
            }
        }

        // season: one atomic load of the region's active rule
        let rule = table
            .calendar
            .active(table.calendar.region_of(req.headers()));
        ctx.season = table.calendar.season(rule);

        // limit: every policy of the route; the strictest answer wins
        if !route.limits.is_empty() {
            ctx.rate_limit = table
                .limits
                .check(
                    &route.limits,
                    rule,
                    req.headers(),
                    peer.ip(),
                    &route.detection,
                )
                .map_err(GatewayError::RateLimited)?;
        }

        // split: canary override, sticky bucket, the season's weight profile
        let profiles = route.splits[detected.version as usize]
            .as_ref()
            .expect("served, non-sunset versions have a split");
        let picked = split::pick(
            &route.split,
            profiles,
            ctx.season,
            &route.detection,
            req.headers(),
            |p| &*table.pools[p as usize].pool.name,
        );
        ctx.set_cookie = picked.set_cookie;
        let pool_entry = &table.pools[picked.pool as usize];
        ctx.target = Some(pool_entry.version);

        // forward
        let declared = content_length(req.headers());
        if declared.is_some_and(|n| n > route.max_body_bytes) {
            return Err(GatewayError::BodyTooLarge {
                limit: route.max_body_bytes,
            });
        }
        let mut new_path = match detected.strip {
            Some((start, end)) => {
                let mut p = String::with_capacity(path.len());
                p.push_str(&path[..start]);
                p.push_str(&path[end..]);
                if p.is_empty() {
                    p.push('/');
                }
                Some(p)
            }
            // Rare: only when normalisation changed the path.
            None => match &path {
                std::borrow::Cow::Owned(p) => Some(p.clone()),
                std::borrow::Cow::Borrowed(_) => None,
            },
        };
        // translate (request up): only across versions, only with a plan.
        let plan = (detected.version != pool_entry.version)
            .then(|| {
                table
                    .translations
                    .plan(detected.version, pool_entry.version)
            })
            .flatten();
        let mut exchange = None;
        if let Some(plan) = plan {
            let fwd = new_path.take().unwrap_or_else(|| path.to_string());
            exchange = Some(plan.exchange(req.method(), &fwd));
            new_path = Some(fwd);
        }
        // Kept only when the path changes (the URI is rebuilt then).
        let query = new_path.as_ref().and(req.uri().query()).map(str::to_string);
        let (mut parts, body) = req.into_parts();
        let https = parts.extensions.get::<crate::tls::TlsInfo>().is_some();
        prepare_upstream_headers(
            &mut parts.headers,
            parts.version,
            peer,
            https,
            ctx.request_id.as_ref(),
        );
        let no_body = declared.is_none_or(|n| n == 0) && body_is_empty(&body);
        let body = match (plan, exchange.as_mut()) {
            (Some(plan), Some(ex)) => {
                let target = &table.versions[pool_entry.version as usize];
                let fail = |source| GatewayError::RequestTranslation {
                    from: version.name.clone(),
                    to: target.name.clone(),
                    source,
                };
                let buffer =
                    !no_body && plan.request_body_needed(ex) && has_json_body(&parts.headers);
                let (value, stream) = if buffer {
                    let limits = route.translate_limits;
                    if declared.is_some_and(|n| n > limits.max_bytes) {
                        return Err(fail(TranslateError::TooLarge {
                            limit: limits.max_bytes,
                        }));
                    }
                    let bytes = collect_limited(Body::stream(body), limits.max_bytes)
                        .await
                        .map_err(|e| match e {
                            BodyError::TooLarge { limit } => {
                                fail(TranslateError::TooLarge { limit })
                            }
                            BodyError::Stream(_) => GatewayError::BadRequest {
                                reason: "request body stream failed",
                            },
                        })?;
                    // An empty body (e.g. chunked with no data) is no body.
                    let value = if bytes.is_empty() {
                        None
                    } else {
                        Some(parse_json(&bytes, limits).map_err(fail)?)
                    };
                    (value, None)
                } else {
                    (None, Some(body))
                };
                let mut fwd = new_path.take().expect("set with the exchange");
                let out = plan
                    .request(ex, &mut fwd, &mut parts.headers, value)
                    .map_err(fail)?;
                new_path = Some(fwd);
                // The upstream speaks the target version: say so. Ask for an
                // uncompressed answer, since a compressed body cannot be translated.
                parts
                    .headers
                    .insert(route.detection.header.clone(), target.header.clone());
                parts.headers.insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("identity"),
                );
                match (out, stream) {
                    (Some(v), _) => {
                        let bytes = to_bytes(&v);
                        set_body_headers(&mut parts.headers, bytes.len());
                        Body::full(bytes)
                    }
                    (None, Some(b)) => plain_body(b, no_body, route.max_body_bytes),
                    (None, None) => Body::empty(),
                }
            }
            _ => plain_body(body, no_body, route.max_body_bytes),
        };
        if let Some(p) = new_path {
            let pq = match &query {
                Some(q) => format!("{p}?{q}"),
                None => p,
            };
            let pq = PathAndQuery::try_from(pq).map_err(|_| GatewayError::BadRequest {
                reason: "unparseable path",
            })?;
            let mut uri = parts.uri.clone().into_parts();
            uri.path_and_query = Some(pq);
            parts.uri = http::Uri::from_parts(uri).map_err(|_| GatewayError::BadRequest {
                reason: "unparseable URI",
            })?;
        }
        let method = parts.method.clone();
        let upstream_req = Request::from_parts(parts, body);
        let resp = Upstream::forward(&pool_entry.pool, upstream_req, route.timeouts)
            .await
            .map_err(|source| GatewayError::Upstream {
                pool: pool_entry.pool.name.clone(),
                source,
            })?;

        // respond (translate the response down to the client's version)
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .append(header::VIA, HeaderValue::from_static("1.1 switchyard"));
        let body = match (plan, exchange) {
            (Some(plan), Some(ex)) => {
                let target = &table.versions[pool_entry.version as usize];
                let fail = |source| GatewayError::ResponseTranslation {
                    from: target.name.clone(),
                    to: version.name.clone(),
                    source,
                };
                let bodiless = method == http::Method::HEAD
                    || parts.status == StatusCode::NO_CONTENT
                    || parts.status == StatusCode::NOT_MODIFIED;
                if !bodiless
                    && plan.response_body_needed(&ex, parts.status)
                    && has_json_body(&parts.headers)
                {
                    if parts
                        .headers
                        .get(header::CONTENT_ENCODING)
                        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"))
                    {
                        return Err(fail(TranslateError::InvalidJson {
                            line: 0,
                            column: 0,
                            reason: "the upstream sent a compressed body (content-encoding), which cannot be translated".into(),
                        }));
                    }
                    let limits = route.translate_limits;
                    let bytes =
                        collect_limited(body, limits.max_bytes)
                            .await
                            .map_err(|e| match e {
                                BodyError::TooLarge { limit } => {
                                    fail(TranslateError::TooLarge { limit })
                                }
                                BodyError::Stream(_) => fail(TranslateError::InvalidJson {
                                    line: 0,
                                    column: 0,
                                    reason: "the upstream's body stream failed".into(),
                                }),
                            })?;
                    // An empty body (a 201 with `Content-Length: 0`) is no body.
                    let value = if bytes.is_empty() {
                        None
                    } else {
                        Some(parse_json(&bytes, limits).map_err(fail)?)
                    };
                    match plan
                        .response(&ex, &mut parts.status, &mut parts.headers, value)
                        .map_err(fail)?
                    {
                        Some(out) => {
                            let bytes = to_bytes(&out);
                            set_body_headers(&mut parts.headers, bytes.len());
                            Body::full(bytes)
                        }
                        None => Body::empty(),
                    }
                } else {
                    // A HEAD answer describes the body a GET would get, which
                    // would be translated: its length and validators are unknown.
                    let stale = method == http::Method::HEAD
                        && plan.response_body_needed(&ex, parts.status)
                        && has_json_body(&parts.headers);
                    plan.response(&ex, &mut parts.status, &mut parts.headers, None)
                        .map_err(fail)?;
                    if stale {
                        set_body_headers(&mut parts.headers, 0);
                        parts.headers.remove(header::CONTENT_LENGTH);
                    }
                    body
                }
            }
            _ => body,
        };
        Ok(Response::from_parts(parts, body))
    }

    /// Framing and hygiene rules hyper does not enforce by itself.
    fn admit(&self, req: &mut Request<Incoming>) -> Result<(), GatewayError> {
        let a = &self.admission;
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > a.max_uri_bytes {
            return Err(GatewayError::UriTooLong {
                len: uri_len,
                limit: a.max_uri_bytes,
            });
        }
        let h = req.headers();
        if h.len() > a.max_headers {
            return Err(GatewayError::HeadersTooLarge {
                reason: format!("{} headers, limit {}", h.len(), a.max_headers),
            });
        }
        let head_bytes: usize = h
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + uri_len;
        if head_bytes > a.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge {
                reason: format!(
                    "{head_bytes} bytes of headers, limit {}",
                    a.max_header_bytes
                ),
            });
        }
        let cl = h.get_all(header::CONTENT_LENGTH).iter().count();
        if cl > 0 && h.contains_key(header::TRANSFER_ENCODING) {
            return Err(GatewayError::BadRequest {
                reason: "both Content-Length and Transfer-Encoding",
            });
        }
        if cl > 1 {
            return Err(GatewayError::BadRequest {
                reason: "more than one Content-Length",
            });
        }
        let hosts = h.get_all(header::HOST).iter().count();
        if hosts > 1 {
            return Err(GatewayError::BadRequest {
                reason: "more than one Host",
            });
        }
        if hosts == 0 && req.version() == Version::HTTP_11 {
            return Err(GatewayError::BadRequest {
                reason: "missing Host",
            });
        }
        if a.underscore != UnderscoreHeaders::Allow && h.keys().any(|k| k.as_str().contains('_')) {
            if a.underscore == UnderscoreHeaders::Reject {
                return Err(GatewayError::BadRequest {
                    reason: "header name contains an underscore",
                });
            }
            let names: Vec<HeaderName> = h
                .keys()
                .filter(|k| k.as_str().contains('_'))
                .cloned()
                .collect();
            for n in names {
                req.headers_mut().remove(n);
            }
        }
        Ok(())
    }

    /// Adds the version headers (also to errors once the version is known)
    /// and renders errors.
    fn finish(
        &self,
        ctx: RequestContext,
        method: &http::Method,
        result: Result<Response<Body>, GatewayError>,
    ) -> Response<Body> {
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::warn!(request_id = ?ctx.request_id, error = %e, source = ?std::error::Error::source(&e), "request failed");
                } else {
                    tracing::debug!(request_id = ?ctx.request_id, error = %e, "request rejected");
                }
                e.to_response(ctx.request_id.as_ref())
            }
        };
        let h = resp.headers_mut();
        if let Some(id) = ctx.request_id {
            h.insert(X_REQUEST_ID, id);
        }
        if let Some(rl) = ctx.rate_limit {
            h.insert(RATELIMIT_POLICY, rl.policy);
            h.insert(RATELIMIT, rl.limit);
        }
        if let Some(cookie) = ctx.set_cookie {
            h.append(header::SET_COOKIE, cookie);
        }
        if let (Some(table), Some(route), Some(d)) = (ctx.table.as_ref(), ctx.route, ctx.detected) {
            let v = &table.versions[d.version as usize];
            h.insert(X_API_VERSION, v.header.clone());
            h.insert(X_API_VERSION_SOURCE, source_value(d.source));
            if let Some(t) = ctx.target {
                h.insert(
                    X_API_VERSION_SERVED,
                    table.versions[t as usize].header.clone(),
                );
            }
            let vary = &table.route(route).detection.vary;
            if !vary.is_empty() {
                h.append(header::VARY, vary.clone());
            }
            let lc = &v.lifecycle;
            if let Some(d) = &lc.deprecation {
                h.insert(DEPRECATION, d.clone());
            }
            if let Some(s) = &lc.sunset {
                h.insert(SUNSET, s.clone());
            }
            if let Some(l) = &lc.link {
                h.append(header::LINK, l.clone());
            }
        }
        tracing::trace!(%method, status = resp.status().as_u16(), "answered");
        resp
    }
}

fn source_value(s: Source) -> HeaderValue {
    HeaderValue::from_static(s.as_str())
}

/// Propagates a sane client `x-request-id`, else makes a random 128-bit one.
fn request_id(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(X_REQUEST_ID)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (i * 4)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).expect("hex is a valid header value")
}

fn request_host(req: &Request<Incoming>) -> &str {
    if let Some(a) = req.uri().authority() {
        return a.host();
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Strip the port; keep IPv6 brackets off too.
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The request body as forwarded untranslated: nothing, or a stream
/// capped at the route's limit.
fn plain_body(body: Incoming, no_body: bool, limit: u64) -> Body {
    if no_body {
        Body::empty()
    } else {
        Body::limited(body, limit)
    }
}

/// Buffers a body up to `limit` bytes.
async fn collect_limited(body: Body, limit: u64) -> Result<bytes::Bytes, BodyError> {
    use http_body_util::BodyExt;
    Ok(body.capped(limit).collect().await?.to_bytes())
}

fn body_is_empty(b: &Incoming) -> bool {
    http_body::Body::is_end_stream(b)
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Headers named by Connection are hop-by-hop too (RFC 9110 §7.6.1).
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::try_from(n.trim()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

fn prepare_upstream_headers(
    h: &mut HeaderMap,
    version: Version,
    peer: SocketAddr,
    https: bool,
    request_id: Option<&HeaderValue>,
) {
    strip_hop_by_hop(h);
    // x-forwarded-for: append the peer to whatever chain the client sent.
    let ip = peer.ip().to_string();
    let xff = match h.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if h.get_all(X_FORWARDED_FOR).iter().count() == 1 => format!("{prev}, {ip}"),
        Some(_) => {
            let mut all: Vec<&str> = h
                .get_all(X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            all.push(&ip);
            all.join(", ")
        }
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert(X_FORWARDED_FOR, v);
    }
    let proto = if https { "https" } else { "http" };
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert(X_FORWARDED_HOST, host);
    }
    let via = if version == Version::HTTP_2 {
        HeaderValue::from_static("2 switchyard")
    } else if version == Version::HTTP_10 {
        HeaderValue::from_static("1.0 switchyard")
    } else {
        HeaderValue::from_static("1.1 switchyard")
    };
    h.append(header::VIA, via);
    if let Some(id) = request_id {
        h.insert(X_REQUEST_ID, id.clone());
    }
}

/// `/health/live` and `/health/ready`, shared by both listeners.
pub fn health(path: &str, tables: &TableHandle) -> Option<Response<Body>> {
    let (status, body) = match path {
        "/health/live" => (StatusCode::OK, "{\"status\":\"live\"}".to_string()),
        "/health/ready" if tables.is_ready() => {
            // Degraded (a pool and its failover have no available
            // endpoint) is still ready: taking every replica out of the
            // Service would turn one dead pool into a full outage.
            let down: Vec<String> = tables
                .load()
                .map(|t| {
                    t.pools
                        .iter()
                        .filter(|p| !p.pool.serving())
                        .map(|p| p.pool.name.to_string())
                        .collect()
                })
                .unwrap_or_default();
            if down.is_empty() {
                (StatusCode::OK, "{\"status\":\"ready\"}".to_string())
            } else {
                let body = serde_json::json!({"status": "degraded", "pools_down": down});
                (StatusCode::OK, body.to_string())
            }
        }
        "/health/ready" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "{\"status\":\"not ready\",\"reason\":\"no routing table loaded\"}".to_string(),
        ),
        _ => return None,
    };
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(resp)
}
