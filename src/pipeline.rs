//! The request path, phase by phase: admit (hygiene and limits), resolve
//! (route and version, lifecycle), season (the region's active season: one
//! atomic load), limit (rate-limit policies), split (target pool), forward,
//! respond.
//! One `Gateway::handle` call per request; it always answers, and failures
//! become problem+json in exactly one place (`finish`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};

use crate::body::{Body, BodyError, ClientBody};
use crate::cache::{CacheStatus, Entry, Key, Miss, ResponseCache, RouteCache};
use crate::config::{ServerSettings, Source, UnderscoreHeaders};
use crate::headers::*;
use crate::logging;
use crate::metrics::{Outcome, RequestMetrics};
use crate::problem::GatewayError;
use crate::route::{self, PathError};
use crate::split;
use crate::table::{RoutingTable, TableHandle};
use crate::trace::TraceContext;
use crate::translate::{TranslateError, has_json_body, parse_json, set_body_headers, to_bytes};
use crate::upstream::{Endpoint, Forwarding, Upstream, UpstreamError};
use crate::version::{self, Detected, RequestView, ResolveError};

/// The access log's `tracing` target: `RUST_LOG=switchyard::access=off`
/// silences it, `info` (the default level) keeps it.
pub const ACCESS_LOG: &str = "switchyard::access";

/// Limits and switches from the process settings, in request-path form.
#[derive(Debug, Clone)]
pub struct Admission {
    max_header_bytes: usize,
    max_headers: usize,
    max_uri_bytes: usize,
    underscore: UnderscoreHeaders,
    health_on_proxy: bool,
    /// Longest wait for the next piece of a request body.
    body_read_timeout: Duration,
}

impl From<&ServerSettings> for Admission {
    fn from(s: &ServerSettings) -> Self {
        Admission {
            max_header_bytes: s.max_header_bytes,
            max_headers: s.max_headers,
            max_uri_bytes: s.max_uri_bytes,
            underscore: s.underscore_headers,
            health_on_proxy: s.health_on_proxy,
            body_read_timeout: Duration::from_millis(s.body_read_timeout_ms),
        }
    }
}

/// The proxy: shared by every connection of the proxy listener. Cheap to
/// clone (handles only): a background cache refresh takes a copy.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The published routing table.
    pub tables: Arc<TableHandle>,
    /// Long-lived upstream clients and endpoint state.
    pub upstream: Arc<Upstream>,
    admission: Admission,
    /// Request metric families (each table carries its label handles).
    pub metrics: Arc<RequestMetrics>,
    /// The response cache shared by every cached route.
    pub cache: Arc<ResponseCache>,
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
    /// The W3C trace this request belongs to.
    trace: Option<TraceContext>,
    /// When the request head arrived.
    started: Option<Instant>,
    /// The request's declared body length.
    bytes_in: Option<u64>,
    /// The pool, endpoint and time to the upstream's response head, once forwarded.
    pool: Option<crate::split::PoolId>,
    endpoint: Option<Arc<Endpoint>>,
    upstream_time: Option<Duration>,
    /// The cache outcome on a cached route.
    cache: Option<CacheStatus>,
    /// The client connection is TLS (`x-forwarded-proto: https`).
    https: bool,
    /// The answer's writer takes a response's fields as they arrived (see
    /// `Forwarding::raw_response`): the lean HTTP/1.1 server.
    raw_fields: bool,
}

/// The fields the gateway adds to every answer once the request is done
/// (`finish`): the request id, the version echo and its source, the
/// served version, `Vary`, the lifecycle fields, `x-cache`, `RateLimit`
/// and a sticky cookie. They are kept apart from the response's map so the
/// lean HTTP/1.1 path can write them after the response's own fields: a
/// `HeaderMap::insert` of a custom name hashes it byte by byte and costs
/// about 250 instructions, four or more per response. [`Stamp::apply`]
/// puts them in the map, in the same order and with the same meaning, for
/// every other path (hyper's HTTP/1.1 and h2, TLS).
#[derive(Default)]
pub struct Stamp {
    cache: Option<CacheStatus>,
    request_id: Option<HeaderValue>,
    rate_limit: Option<crate::limit::RateLimitHeaders>,
    set_cookie: Option<HeaderValue>,
    /// The table the request was routed by, which holds the version
    /// fields' values (moved out of the request's context: no copy).
    version: Option<VersionStamp>,
}

/// The names a [`Stamp`] writes, as statics so [`Stamp::each`] can lend
/// them for as long as its caller keeps them (a `const` lends a temporary).
static STAMP_NAMES: [HeaderName; 12] = [
    X_CACHE,
    X_REQUEST_ID,
    RATELIMIT_POLICY,
    RATELIMIT,
    header::SET_COOKIE,
    X_API_VERSION,
    X_API_VERSION_SOURCE,
    X_API_VERSION_SERVED,
    header::VARY,
    DEPRECATION,
    SUNSET,
    header::LINK,
];

/// Whether a response field of this name gives way to a [`Stamp`]'s (by
/// its bytes, in any case): the lean client keeps a head with one in the
/// general path, where the lean server's writer skips it.
pub(crate) fn stamp_replaces(name: &[u8]) -> bool {
    // Every stamp name but the three it appends (`set-cookie`, `vary`,
    // `link`), by length first: most fields differ from all in length
    // alone (a scan of `STAMP_NAMES` cost ~190 instructions a field).
    let is = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        6 => is("sunset"),
        7 => is("x-cache"),
        9 => is("ratelimit"),
        11 => is("deprecation"),
        12 => is("x-request-id"),
        13 => is("x-api-version"),
        16 => is("ratelimit-policy"),
        20 => is("x-api-version-source") || is("x-api-version-served"),
        _ => false,
    }
}

/// The version fields of a [`Stamp`], read from the routing table.
struct VersionStamp {
    table: Arc<RoutingTable>,
    route: crate::route::RouteId,
    detected: Detected,
    target: Option<version::VersionId>,
}

impl Stamp {
    /// Each field in order, with whether it replaces the response's own
    /// fields of that name (`true`) or is added to them (`false`).
    pub fn each(&self, mut f: impl FnMut(&'static HeaderName, &HeaderValue, bool)) {
        if let Some(c) = self.cache {
            f(&STAMP_NAMES[0], &c.header(), true);
        }
        if let Some(id) = &self.request_id {
            f(&STAMP_NAMES[1], id, true);
        }
        if let Some(rl) = &self.rate_limit {
            f(&STAMP_NAMES[2], &rl.policy, true);
            f(&STAMP_NAMES[3], &rl.limit, true);
        }
        if let Some(cookie) = &self.set_cookie {
            f(&STAMP_NAMES[4], cookie, false);
        }
        if let Some(VersionStamp {
            table,
            route,
            detected,
            target,
        }) = &self.version
        {
            let v = &table.versions[detected.version as usize];
            f(&STAMP_NAMES[5], &v.header, true);
            f(&STAMP_NAMES[6], &source_value(detected.source), true);
            if let Some(t) = target {
                f(&STAMP_NAMES[7], &table.versions[*t as usize].header, true);
            }
            let vary = &table.route(*route).detection.vary;
            if !vary.is_empty() {
                f(&STAMP_NAMES[8], vary, false);
            }
            let lc = &v.lifecycle;
            if let Some(d) = &lc.deprecation {
                f(&STAMP_NAMES[9], d, true);
            }
            if let Some(s) = &lc.sunset {
                f(&STAMP_NAMES[10], s, true);
            }
            if let Some(l) = &lc.link {
                f(&STAMP_NAMES[11], l, false);
            }
        }
    }

    /// Puts the fields in `h`: set ones replace any of that name, the
    /// others are added after them.
    pub fn apply(&self, h: &mut HeaderMap) {
        self.each(|name, value, set| {
            if set {
                h.insert(name.clone(), value.clone());
            } else {
                h.append(name.clone(), value.clone());
            }
        });
    }
}

impl RequestContext {
    /// The forwarded request's response body broke off (or stopped
    /// arriving) while the gateway read it whole.
    fn response_body_failed(&self, source: BodyError) -> UpstreamError {
        UpstreamError::ResponseBody {
            endpoint: self
                .endpoint
                .as_ref()
                .map(|e| e.authority.clone())
                .expect("a forwarded request has an endpoint"),
            source,
        }
    }
}

/// What routing decided (`Gateway::route`).
enum Routed {
    /// Forward (or answer from the cache).
    To(Destination),
    /// Answered without forwarding (health on the proxy listener).
    Answered(Response<Body>),
}

/// Where a routed request goes; [`Hop`] borrows from it.
struct Destination {
    route: crate::route::RouteId,
    detected: Detected,
    pool: crate::split::PoolId,
    /// The normalised path, when it differs from the URI's.
    path: Option<String>,
    /// The request's URI as it arrived (the path borrows it).
    uri: Uri,
    table: Arc<RoutingTable>,
}

/// Everything after the split needs: the snapshot, the route, the version
/// detected, the normalised path and the target pool.
#[derive(Clone, Copy)]
struct Hop<'a> {
    table: &'a RoutingTable,
    route: &'a crate::table::Route,
    detected: Detected,
    path: &'a std::borrow::Cow<'a, str>,
    pool: crate::split::PoolId,
}

/// Counts a request in flight until dropped (also when the client goes
/// away mid-request and hyper drops the handler's future).
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> InFlight<'a> {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
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
        metrics: Arc<RequestMetrics>,
    ) -> Gateway {
        Gateway {
            tables,
            upstream,
            admission: settings.into(),
            metrics,
            cache: Arc::new(ResponseCache::new(settings.cache_max_bytes)),
        }
    }

    /// Handles one request from `peer`, over TLS if `https`. Always answers.
    // Not an `async fn`: rustc stores an async fn's by-value arguments
    // twice in its future (as captured and as the local they move into),
    // so the request, several hundred bytes, would be stored and copied
    // twice; an `async move` block uses the captured request in place.
    #[allow(clippy::manual_async_fn)]
    pub fn handle<'a>(
        &'a self,
        req: Request<Option<ClientBody>>,
        peer: SocketAddr,
        https: bool,
    ) -> impl Future<Output = Response<Body>> + Send + 'a {
        async move {
            let (mut resp, stamp) = self.handle_stamped(req, peer, https, false).await;
            stamp.apply(resp.headers_mut());
            resp
        }
    }

    /// [`Gateway::handle`] with the gateway's own response fields apart
    /// (see [`Stamp`]), for a server path that writes the head itself.
    /// With `raw_fields`, a proxied response's own fields may come back
    /// unparsed, in its body (`RawFields`), for that writer to copy out
    /// as they are (`Body::take_raw_fields`; `RawFields::fill` puts them
    /// in a map).
    #[allow(clippy::manual_async_fn)]
    pub fn handle_stamped<'a>(
        &'a self,
        req: Request<Option<ClientBody>>,
        peer: SocketAddr,
        https: bool,
        raw_fields: bool,
    ) -> impl Future<Output = (Response<Body>, Stamp)> + Send + 'a {
        async move {
            let _in_flight = InFlight::enter(&self.metrics.in_flight);
            // The fields read before anything changes the headers, found in
            // one pass (each `HeaderMap::get` hashes its name: 80-150
            // instructions where comparing a handful of names costs less).
            let [id, parent, state, length] = crate::headers::find_each(
                req.headers(),
                [
                    Some(&X_REQUEST_ID),
                    Some(&TRACEPARENT),
                    Some(&TRACESTATE),
                    Some(&header::CONTENT_LENGTH),
                ],
            );
            let mut ctx = RequestContext {
                https,
                request_id: Some(request_id(id)),
                trace: Some(TraceContext::from_values(parent, state.is_some())),
                started: Some(Instant::now()),
                bytes_in: length.and_then(length_value),
                raw_fields,
                ..Default::default()
            };
            let method = req.method().clone();
            // Only the access log reads the path after the request is gone;
            // `Some` also tells `finish` the log is on (asked once a request).
            let uri = access_log_on().then(|| req.uri().clone());
            // The phases up to the split, which never wait, then the cache
            // or `forward`, awaited here: a function of its own for them
            // would be one more future (4.9 KB, `forward`'s inside it)
            // copied whole into this one's state at every request.
            let mut req = req;
            let result = match self.route(&mut ctx, &mut req, peer) {
                Err(e) => Err(e),
                Ok(Routed::Answered(resp)) => Ok(resp),
                Ok(Routed::To(to)) => {
                    let route = to.table.route(to.route);
                    let path = match to.path {
                        Some(p) => std::borrow::Cow::Owned(p),
                        None => std::borrow::Cow::Borrowed(to.uri.path()),
                    };
                    let hop = Hop {
                        table: &to.table,
                        route,
                        detected: to.detected,
                        path: &path,
                        pool: to.pool,
                    };
                    // cache: after limits (a hot cached key still counts
                    // against its quota) and the split (a hit reports the
                    // version that answered)
                    match &route.cache {
                        Some(rc)
                            if (req.method() == Method::GET || req.method() == Method::HEAD)
                                && content_length(req.headers()).is_none_or(|n| n == 0)
                                && req.body().as_ref().is_none_or(body_is_empty)
                                && !req.headers().contains_key(header::UPGRADE) =>
                        {
                            self.cached(&mut ctx, rc, hop, req, peer).await
                        }
                        // Not boxed: the request's future is built in place
                        // (the lean HTTP/1.1 path pins it in the
                        // connection's task; hyper's path boxes it whole),
                        // so a box here only adds an allocation and a copy
                        // of `forward`'s future (31,549 instructions per
                        // request without it, 32,568 with it; again 24,896
                        // against 25,683 on 2026-12-02).
                        _ => self.forward(&mut ctx, hop, req, peer).await,
                    }
                }
            };
            self.finish(ctx, &method, uri.as_ref(), result)
        }
    }

    /// The phases up to the split (admission, path, route, version,
    /// lifecycle, season, limits, the pool): where the request goes, or an
    /// answer without forwarding it.
    fn route(
        &self,
        ctx: &mut RequestContext,
        req: &mut Request<Option<ClientBody>>,
        peer: SocketAddr,
    ) -> Result<Routed, GatewayError> {
        // admit
        self.admit(req)?;
        // The path borrows a copy of the URI (reference-counted bytes), so
        // the request itself can move on to `forward`.
        let uri = req.uri().clone();
        let path = route::normalize(uri.path()).map_err(|e| GatewayError::BadRequest {
            reason: match e {
                PathError::EscapesRoot => "path escapes the root with ..",
                PathError::BadEscape => "path has an invalid percent-escape",
            },
        })?;
        if self.admission.health_on_proxy
            && path.starts_with("/health/")
            && let Some(resp) = health(&path, &self.tables)
        {
            return Ok(Routed::Answered(resp));
        }

        // resolve: one snapshot for the whole request
        let table = self.tables.load().ok_or(GatewayError::NotReady)?;
        let host = request_host(req);
        let (route_id, prefix_len) = table
            .router
            .resolve(host, &path)
            .ok_or(GatewayError::NoRoute)?;
        let route = table.route(route_id);
        ctx.route = Some(route_id);
        ctx.table = Some(table.clone());
        // The region, client-id, API-key and canary headers the phases below
        // read, in one pass over the request's headers.
        let traffic = route.traffic.find(req.headers());
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
            && !route.split.override_allowed(traffic.client_id)
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
        if version.lifecycle.is_sunset_now() {
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
            let client = traffic.client_id.and_then(|v| v.to_str().ok());
            if !client.is_some_and(|c| version.allow_clients.contains(c)) {
                return Err(GatewayError::VersionRestricted {
                    version: version.name.clone(),
                });
            }
        }

        if let Some(client) = traffic.client_id {
            table
                .metrics
                .client_seen(client.as_bytes(), detected.version);
        }

        // season: one atomic load of the region's active rule
        let rule = table
            .calendar
            .active(table.calendar.region_of(traffic.region));
        ctx.season = table.calendar.season(rule);

        // limit: every policy of the route; the strictest answer wins
        if !route.limits.is_empty() {
            ctx.rate_limit = table
                .limits
                .check(&route.limits, rule, &traffic, req.headers(), peer.ip())
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
            &traffic,
            req.headers(),
            |p| &*table.pools[p as usize].pool.name,
        );
        ctx.set_cookie = picked.set_cookie;
        ctx.target = Some(table.pools[picked.pool as usize].version);
        let path = match path {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        };
        Ok(Routed::To(Destination {
            route: route_id,
            detected,
            pool: picked.pool,
            path,
            uri,
            table,
        }))
    }

    /// Translate up, forward, translate down: everything after the split,
    /// for a request the cache did not answer (and for background refreshes).
    // Not an `async fn`, so the request is stored (and copied) once in the
    // future: see `Gateway::handle`.
    #[allow(clippy::manual_async_fn)]
    fn forward<'a>(
        &'a self,
        ctx: &'a mut RequestContext,
        hop: Hop<'a>,
        req: Request<Option<ClientBody>>,
        peer: SocketAddr,
    ) -> impl Future<Output = Result<Response<Body>, GatewayError>> + Send + 'a {
        async move {
            let Hop {
                table,
                route,
                detected,
                path,
                pool: pool_id,
            } = hop;
            let version = &table.versions[detected.version as usize];
            let pool_entry = &table.pools[pool_id as usize];

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
            let https = ctx.https;
            // A WebSocket handshake gives up the client side of the tunnel:
            // HTTP/1.1 `Upgrade: websocket` keeps its Upgrade (hop-by-hop,
            // stripped below); an h2 extended CONNECT (RFC 8441) goes upstream
            // as an HTTP/1.1 handshake.
            let websocket = if parts.version == Version::HTTP_11 {
                parts
                    .headers
                    .get(header::UPGRADE)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))
                    .then_some(Handshake::Upgrade)
            } else if parts.method == Method::CONNECT
                && parts
                    .extensions
                    .get::<hyper::ext::Protocol>()
                    .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
            {
                Some(Handshake::ExtendedConnect)
            } else {
                None
            };
            let client_upgrade = websocket.and_then(|kind| {
                let on = parts.extensions.remove::<hyper::upgrade::OnUpgrade>()?;
                let lease = parts.extensions.remove::<Arc<crate::server::Lease>>();
                Some((kind, on, lease))
            });
            let (te_trailers, mut forwarding) = prepare_upstream_headers(
                &mut parts.headers,
                parts.version,
                peer,
                https,
                ctx.request_id.as_ref(),
            );
            // The gateway forwards trailers, so an HTTP/2 upstream may hear the
            // client's `TE: trailers` (gRPC servers insist on it).
            if te_trailers
                && pool_entry
                    .pool
                    .transport
                    .as_deref()
                    .is_some_and(crate::upstream::Transport::multiplexed)
            {
                parts
                    .headers
                    .insert(header::TE, HeaderValue::from_static("trailers"));
            }
            if let Some((kind, ..)) = &client_upgrade {
                parts.headers.insert(header::UPGRADE, WEBSOCKET.clone());
                parts
                    .headers
                    .insert(header::CONNECTION, UPGRADE_TOKEN.clone());
                if *kind == Handshake::ExtendedConnect {
                    parts.method = Method::GET;
                    parts.extensions.remove::<hyper::ext::Protocol>();
                    parts
                        .headers
                        .insert(header::SEC_WEBSOCKET_KEY, websocket_key());
                }
            }
            if let Some(trace) = &ctx.trace {
                forwarding.traceparent = Some(trace.propagate(&mut parts.headers));
            }
            // Nothing below reads or changes the response's fields unless
            // it is translated, cached or upgraded.
            forwarding.raw_response = ctx.raw_fields
                && route.cache.is_none()
                && client_upgrade.is_none()
                && !matches!((plan, &exchange), (Some(_), Some(_)));
            let no_body =
                declared.is_none_or(|n| n == 0) && body.as_ref().is_none_or(body_is_empty);
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
                    let limits = route.translate_limits;
                    let (buffered, stream) = if buffer {
                        if declared.is_some_and(|n| n > limits.max_bytes) {
                            return Err(fail(TranslateError::TooLarge {
                                limit: limits.max_bytes,
                            }));
                        }
                        let body = body.map_or_else(Body::empty, |b| {
                            Body::request(b, u64::MAX, self.admission.body_read_timeout)
                        });
                        let bytes =
                            collect_limited(body, limits.max_bytes)
                                .await
                                .map_err(|e| match e {
                                    BodyError::TooLarge { limit } => {
                                        fail(TranslateError::TooLarge { limit })
                                    }
                                    BodyError::Stream(_) => GatewayError::BadRequest {
                                        reason: "request body stream failed",
                                    },
                                    BodyError::Timeout { after } => {
                                        GatewayError::BodyTimeout { after }
                                    }
                                })?;
                        (Some(bytes), None)
                    } else {
                        (None, Some(body))
                    };
                    // The parsed body borrows from the buffered bytes. An empty
                    // body (e.g. chunked with no data) is no body.
                    let value = match &buffered {
                        Some(bytes) if !bytes.is_empty() => {
                            Some(parse_json(bytes, limits).map_err(fail)?)
                        }
                        Some(_) | None => None,
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
                        (None, Some(b)) => plain_body(
                            b,
                            no_body,
                            route.max_body_bytes,
                            self.admission.body_read_timeout,
                        ),
                        (None, None) => Body::empty(),
                    }
                }
                _ => plain_body(
                    body,
                    no_body,
                    route.max_body_bytes,
                    self.admission.body_read_timeout,
                ),
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
            let mut upstream_req = Request::from_parts(parts, body);
            let upstream_failed = |source| GatewayError::Upstream {
                pool: pool_entry.pool.name.clone(),
                source,
            };
            ctx.pool = Some(pool_id);
            let sent = Instant::now();
            let resp = forward_with_retries(
                &pool_entry.pool,
                route,
                &mut upstream_req,
                &forwarding,
                &method,
                &mut ctx.endpoint,
                sent,
            )
            .await;
            // Sent: its map goes back for the next request's.
            crate::headers::recycle_map(std::mem::take(upstream_req.headers_mut()));
            drop(upstream_req);
            let waited = sent.elapsed();
            ctx.upstream_time = Some(waited);
            table.metrics.upstream(pool_id, waited);
            let mut resp = resp.map_err(upstream_failed)?;

            // respond (translate the response down to the client's version)
            strip_hop_by_hop(resp.headers_mut());
            add_via(&mut resp);
            // Neither upgraded nor translated (nearly every response): it
            // goes back whole. Split into its head and body and joined
            // again, it was moved ~250 bytes at a time at each step.
            if resp.status() != StatusCode::SWITCHING_PROTOCOLS
                && client_upgrade.is_none()
                && !matches!((plan, &exchange), (Some(_), Some(_)))
            {
                return Ok(resp);
            }
            let (mut parts, body) = resp.into_parts();
            if parts.status == StatusCode::SWITCHING_PROTOCOLS {
                let upstream_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
                let (Some((kind, client, lease)), Some(upstream)) =
                    (client_upgrade, upstream_upgrade)
                else {
                    // A 101 nobody asked for (or that cannot be tunnelled).
                    return Err(upstream_failed(UpstreamError::UnexpectedUpgrade));
                };
                match kind {
                    Handshake::Upgrade => {
                        parts.headers.insert(header::UPGRADE, WEBSOCKET.clone());
                        parts
                            .headers
                            .insert(header::CONNECTION, UPGRADE_TOKEN.clone());
                    }
                    // RFC 8441: a 200 opens the stream as the tunnel.
                    Handshake::ExtendedConnect => {
                        parts.status = StatusCode::OK;
                        parts.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
                        parts.headers.remove(header::CONTENT_LENGTH);
                    }
                }
                tunnel(
                    client,
                    upstream,
                    ctx.endpoint.clone(),
                    lease,
                    route.tunnel_idle,
                );
            } else if parts.status.is_success()
                && matches!(client_upgrade, Some((Handshake::ExtendedConnect, ..)))
            {
                // A 2xx to the CONNECT would open a tunnel the upstream never agreed to.
                return Err(upstream_failed(UpstreamError::NoUpgrade {
                    status: parts.status,
                }));
            }
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
                                    // A body that stopped arriving is the
                                    // upstream being slow (504), not bad JSON.
                                    e @ BodyError::Timeout { .. } => {
                                        upstream_failed(ctx.response_body_failed(e))
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
    }

    /// Framing and hygiene rules hyper does not enforce by itself.
    fn admit<B>(&self, req: &mut Request<B>) -> Result<(), GatewayError> {
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
        // One pass for the size and the framing and host counts (standard
        // names compare as enum tags; `get_all` hashed each name).
        let (mut head_bytes, mut cl, mut te, mut hosts, mut underscore) =
            (uri_len, 0usize, false, 0usize, false);
        let underscores_matter = a.underscore != UnderscoreHeaders::Allow;
        for (k, v) in h {
            let name = k.as_str();
            head_bytes += name.len() + v.len() + 4;
            if k == header::CONTENT_LENGTH {
                cl += 1;
            } else if k == header::TRANSFER_ENCODING {
                te = true;
            } else if k == header::HOST {
                hosts += 1;
            } else if underscores_matter && name.contains('_') {
                underscore = true;
            }
        }
        if head_bytes > a.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge {
                reason: format!(
                    "{head_bytes} bytes of headers, limit {}",
                    a.max_header_bytes
                ),
            });
        }
        if cl > 0 && te {
            return Err(GatewayError::BadRequest {
                reason: "both Content-Length and Transfer-Encoding",
            });
        }
        if cl > 1 {
            return Err(GatewayError::BadRequest {
                reason: "more than one Content-Length",
            });
        }
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
        if underscore {
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
        uri: Option<&Uri>,
        result: Result<Response<Body>, GatewayError>,
    ) -> (Response<Body>, Stamp) {
        // Read only by the error path and the access log (the id's
        // UTF-8 check is ~140 instructions).
        let trace_id = || ctx.trace.as_ref().map(TraceContext::trace_id);
        let mut error = None;
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let trace_id = trace_id();
                if e.status().is_server_error() {
                    tracing::warn!(request_id = ?ctx.request_id, trace_id, error = %e, source = ?std::error::Error::source(&e), "request failed");
                } else {
                    tracing::debug!(request_id = ?ctx.request_id, trace_id, error = %e, "request rejected");
                }
                self.count_error(&ctx, &e);
                error = Some(e.kind());
                e.to_response_traced(ctx.request_id.as_ref(), trace_id)
            }
        };
        let status = resp.status();
        let elapsed = ctx.started.map_or(Duration::ZERO, |t| t.elapsed());
        match (ctx.table.as_deref(), ctx.route) {
            (Some(table), Some(route)) => {
                table.metrics.record(
                    table,
                    Outcome {
                        route,
                        client: ctx.detected.map(|d| d.version),
                        target: ctx.target,
                        source: ctx.detected.map(|d| d.source),
                        status,
                        elapsed,
                    },
                );
                if let Some(c) = ctx.cache {
                    table.metrics.cache(route, c);
                }
            }
            _ => self.metrics.record_unmatched(status, elapsed),
        }
        if let Some(uri) = uri {
            access_log(&ctx, method, uri, trace_id(), &resp, elapsed, error);
        }
        // The request id and `RateLimit`'s remaining count are new with
        // every request: marked sensitive, h2's HPACK encoder sends them as
        // never-indexed literals instead of adding each one to the
        // connection's dynamic table (4 KiB), where it is never used again
        // and evicts entries that would be. HTTP/1.1 ignores the mark.
        let request_id = ctx.request_id.map(|mut id| {
            id.set_sensitive(true);
            id
        });
        let rate_limit = ctx.rate_limit.map(|mut rl| {
            rl.limit.set_sensitive(true);
            rl
        });
        let version = match (ctx.table, ctx.route, ctx.detected) {
            (Some(table), Some(route), Some(detected)) => Some(VersionStamp {
                table,
                route,
                detected,
                target: ctx.target,
            }),
            _ => None,
        };
        let stamp = Stamp {
            cache: ctx.cache,
            request_id,
            rate_limit,
            set_cookie: ctx.set_cookie,
            version,
        };
        (resp, stamp)
    }

    /// Counts the failures that have their own metrics (an error path:
    /// labels are resolved per call).
    fn count_error(&self, ctx: &RequestContext, e: &GatewayError) {
        let route = match (ctx.table.as_deref(), ctx.route) {
            (Some(t), Some(r)) => &*t.route(r).name,
            _ => crate::metrics::NONE,
        };
        match e {
            GatewayError::RequestTranslation { from, to, .. } => {
                self.metrics.translation_error(route, from, to, "request");
            }
            GatewayError::ResponseTranslation { from, to, .. } => {
                self.metrics.translation_error(route, from, to, "response");
            }
            GatewayError::Upstream { pool, source } => {
                self.metrics.upstream_error(pool, source.kind());
            }
            _ => {}
        }
    }

    /// The cache phase for a GET or HEAD on a cached route: a fresh entry
    /// answers (HIT); a stale one inside its stale-while-revalidate window
    /// answers (STALE) while one background request refreshes it; otherwise
    /// the request is forwarded (MISS), concurrent misses on one key
    /// coalesced into one upstream request.
    async fn cached(
        &self,
        ctx: &mut RequestContext,
        rc: &RouteCache,
        hop: Hop<'_>,
        req: Request<Option<ClientBody>>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, GatewayError> {
        let version = &hop.table.versions[hop.detected.version as usize];
        let key = rc.key(
            &hop.route.name,
            req.method(),
            req.uri().path_and_query().map_or("/", PathAndQuery::as_str),
            &version.name,
            req.headers(),
        );
        let now = Instant::now();
        if let Some(entry) = self.cache.get(&key).await {
            if entry.is_fresh(now) {
                return Ok(serve_cached(ctx, hop.table, &entry, CacheStatus::Hit, now));
            }
            if entry.is_stale_usable(now) {
                if entry.begin_refresh() {
                    self.spawn_refresh(ctx, hop, &req, key, entry.clone(), peer);
                }
                return Ok(serve_cached(
                    ctx,
                    hop.table,
                    &entry,
                    CacheStatus::Stale,
                    now,
                ));
            }
            // Expired by our clock a moment before moka's: drop it, so the
            // miss below stores a new one instead of finding this one.
            self.cache.invalidate(&key).await;
        }
        // The miss (moka's coalescing around a whole `forward`) is a future
        // several times the size of a hit's: boxed, so a hit, and `run`
        // which holds either, stay small (hyper moves the request's future
        // into place, and every byte of it is copied per request).
        Box::pin(self.cache_miss(ctx, rc, hop, req, peer, key, now)).await
    }

    /// A cache miss: one forward per key at a time, its response stored when
    /// the route's rules allow; the other requests waiting on it share it.
    #[allow(clippy::too_many_arguments)]
    async fn cache_miss(
        &self,
        ctx: &mut RequestContext,
        rc: &RouteCache,
        hop: Hop<'_>,
        req: Request<Option<ClientBody>>,
        peer: SocketAddr,
        key: Key,
        now: Instant,
    ) -> Result<Response<Body>, GatewayError> {
        let authorized = req.headers().contains_key(header::AUTHORIZATION);
        let mut pending = Some(req);
        let miss = async {
            let req = pending.take().expect("moka runs an init future once");
            let resp = self
                .forward(ctx, hop, req, peer)
                .await
                .map_err(Miss::failed)?;
            to_entry(ctx, rc, hop, authorized, resp).await
        };
        let outcome = self.cache.coalesce(key, miss).await;
        ctx.cache = Some(CacheStatus::Miss);
        match (outcome, pending.take()) {
            // This request's miss, stored.
            (Ok(entry), None) => Ok(entry.response(CacheStatus::Miss, now)),
            // Another request's miss: its entry answers this one too.
            (Ok(entry), Some(_)) => Ok(serve_cached(
                ctx,
                hop.table,
                &entry,
                CacheStatus::Hit,
                Instant::now(),
            )),
            // This request's miss, not storable: its own response or error.
            (Err(miss), None) => miss.take().expect("the owner takes its miss once"),
            // Another request's miss that may not be shared: forward this one.
            (Err(_), Some(req)) => self.forward(ctx, hop, req, peer).await,
        }
    }

    /// Refreshes a stale entry in the background with a copy of the request
    /// that found it (on the current thread's runtime). A failed refresh
    /// releases the entry's claim, so a later request tries again.
    fn spawn_refresh(
        &self,
        ctx: &RequestContext,
        hop: Hop<'_>,
        req: &Request<Option<ClientBody>>,
        key: Key,
        stale: Arc<Entry>,
        peer: SocketAddr,
    ) {
        let (Some(table), Some(route_id)) = (ctx.table.clone(), ctx.route) else {
            stale.end_refresh();
            return;
        };
        let mut copy = Request::new(None::<ClientBody>);
        *copy.method_mut() = req.method().clone();
        *copy.uri_mut() = req.uri().clone();
        *copy.version_mut() = req.version();
        *copy.headers_mut() = req.headers().clone();
        let mut ctx = RequestContext {
            request_id: ctx.request_id.clone(),
            trace: ctx.trace,
            table: Some(table.clone()),
            route: Some(route_id),
            detected: Some(hop.detected),
            target: ctx.target,
            season: ctx.season,
            https: ctx.https,
            ..Default::default()
        };
        let (detected, pool) = (hop.detected, hop.pool);
        let gateway = self.clone();
        tokio::spawn(async move {
            let route = table.route(route_id);
            let uri = copy.uri().clone();
            let (Some(rc), Ok(path)) = (route.cache.as_ref(), route::normalize(uri.path())) else {
                stale.end_refresh();
                return;
            };
            let hop = Hop {
                table: &table,
                route,
                detected,
                path: &path,
                pool,
            };
            let authorized = copy.headers().contains_key(header::AUTHORIZATION);
            let outcome = match gateway.forward(&mut ctx, hop, copy, peer).await {
                Ok(resp) => to_entry(&ctx, rc, hop, authorized, resp).await,
                Err(e) => Err(Miss::failed(e)),
            };
            match outcome {
                Ok(fresh) => gateway.cache.insert(key, fresh).await,
                // The upstream no longer allows storing it: stop serving it.
                Err(Miss::Uncacheable(_)) => gateway.cache.invalidate(&key).await,
                Err(Miss::Failed(e)) => {
                    let e = e.lock().ok().and_then(|mut e| e.take());
                    tracing::debug!(target: "switchyard::cache", route = %route.name, error = ?e, "stale entry refresh failed");
                    stale.end_refresh();
                }
            }
        });
    }
}

/// Answers from a stored entry; the served version is the one that
/// answered when the entry was stored (looked up by name: ids can change
/// across reloads).
fn serve_cached(
    ctx: &mut RequestContext,
    table: &RoutingTable,
    entry: &Entry,
    status: CacheStatus,
    now: Instant,
) -> Response<Body> {
    ctx.cache = Some(status);
    ctx.target = entry
        .served
        .as_deref()
        .and_then(|n| table.versions.iter().position(|v| *v.name == *n))
        .map(|i| i as version::VersionId);
    entry.response(status, now)
}

/// Buffers a response into an entry if the route's rules allow storing it;
/// otherwise hands it back untouched (to stream to its own client).
async fn to_entry(
    ctx: &RequestContext,
    rc: &RouteCache,
    hop: Hop<'_>,
    authorized: bool,
    resp: Response<Body>,
) -> Result<Arc<Entry>, Miss> {
    let season = ctx
        .season
        .and_then(|s| hop.table.calendar.seasons.get(s as usize))
        .map(|s| &**s);
    let fresh = rc.freshness(
        authorized,
        &hop.route.detection.header,
        resp.status(),
        resp.headers(),
        rc.multiplier(season),
    );
    let fits = http_body::Body::size_hint(resp.body())
        .exact()
        .is_some_and(|n| n <= rc.max_entry_bytes);
    let Some(fresh) = fresh.filter(|_| fits) else {
        return Err(Miss::uncacheable(resp));
    };
    let (parts, body) = resp.into_parts();
    let bytes = collect_limited(body, rc.max_entry_bytes)
        .await
        .map_err(|source| {
            Miss::failed(GatewayError::Upstream {
                pool: hop.table.pools[hop.pool as usize].pool.name.clone(),
                source: ctx.response_body_failed(source),
            })
        })?;
    let served = ctx
        .target
        .map(|t| hop.table.versions[t as usize].name.clone());
    Ok(Arc::new(Entry::new(
        parts.status,
        parts.headers,
        bytes,
        fresh,
        served,
    )))
}

/// Whether `RUST_LOG` enables the access event. Asked as `tracing`'s
/// event macros ask for an event: the call site's interest, which the
/// subscribers set when it registers (and again when one is added), and
/// the subscriber's `enabled` only when they disagree ("sometimes").
/// `tracing::enabled!` calls `enabled` every time, ~140 instructions of
/// directive matching per request with one subscriber.
///
/// The call site has the event's target, level, kind and field names, so a
/// directive naming a field (`switchyard::access[{cache}]=info`) decides as
/// it would for the event.
fn access_log_on() -> bool {
    use tracing::callsite::{DefaultCallsite, Identifier};
    use tracing::field::FieldSet;
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    use tracing::{Level, Metadata};

    static CALLSITE: DefaultCallsite = DefaultCallsite::new(&META);
    static META: Metadata<'static> = Metadata::new(
        "access log",
        ACCESS_LOG,
        Level::INFO,
        Some(file!()),
        Some(line!()),
        Some(module_path!()),
        FieldSet::new(
            &[
                "message",
                "request_id",
                "trace_id",
                "method",
                "path",
                "route",
                "client_version",
                "source",
                "target_version",
                "status",
                "duration_ms",
                "upstream_ms",
                "pool",
                "endpoint",
                "bytes_in",
                "bytes_out",
                "cache",
                "error",
            ],
            Identifier(&CALLSITE),
        ),
        tracing::metadata::Kind::EVENT,
    );
    if Level::INFO > STATIC_MAX_LEVEL || Level::INFO > LevelFilter::current() {
        return false;
    }
    let interest = CALLSITE.interest();
    interest.is_always()
        || (!interest.is_never() && tracing::dispatcher::get_default(|d| d.enabled(&META)))
}

/// One event per request on the `switchyard::access` target (JSON with
/// `--log-format json`), when [`access_log_on`]. `bytes_out` is the body
/// length when known up front (`Content-Length` or a buffered body);
/// streamed bodies of unknown length log none.
fn access_log(
    ctx: &RequestContext,
    method: &Method,
    uri: &Uri,
    trace_id: Option<&str>,
    resp: &Response<Body>,
    elapsed: Duration,
    error: Option<&'static str>,
) {
    let table = ctx.table.as_deref();
    let name = |v: version::VersionId| table.map(|t| &*t.versions[v as usize].name);
    let request_id = ctx.request_id.as_ref().and_then(|v| v.to_str().ok());
    let method = method.as_str();
    let path = Some(uri.path());
    let route = table.zip(ctx.route).map(|(t, r)| &*t.route(r).name);
    let client_version = ctx.detected.and_then(|d| name(d.version));
    let source = ctx.detected.map(|d| d.source.as_str());
    let target_version = ctx.target.and_then(name);
    let status = resp.status().as_u16();
    let duration_ms = elapsed.as_secs_f64() * 1e3;
    let upstream_ms = ctx.upstream_time.map(|d| d.as_secs_f64() * 1e3);
    let pool = table
        .zip(ctx.pool)
        .map(|(t, p)| &*t.pools[p as usize].pool.name);
    let endpoint = ctx.endpoint.as_ref().map(|e| e.authority.as_str());
    let bytes_in = ctx.bytes_in;
    let bytes_out = http_body::Body::size_hint(resp.body()).exact();
    let cache = ctx.cache.map(CacheStatus::as_str);
    // The JSON line without a `tracing` event when the subscriber allows
    // (see `write_json_event`); the event otherwise. Same fields, same
    // order: tests/access_log.rs compares the two lines.
    let written = logging::write_json_event(tracing::Level::INFO, ACCESS_LOG, "request", &|f| {
        f.str(b"request_id", request_id);
        // Hex, an HTTP token (no `"`, `\` or control character) and
        // static names: nothing to escape.
        f.plain(b"trace_id", trace_id);
        f.plain(b"method", Some(method));
        f.str(b"path", path);
        f.str(b"route", route);
        f.str(b"client_version", client_version);
        f.plain(b"source", source);
        f.str(b"target_version", target_version);
        f.u64(b"status", Some(status.into()));
        f.f64(b"duration_ms", Some(duration_ms));
        f.f64(b"upstream_ms", upstream_ms);
        f.str(b"pool", pool);
        f.str(b"endpoint", endpoint);
        f.u64(b"bytes_in", bytes_in);
        f.u64(b"bytes_out", bytes_out);
        f.plain(b"cache", cache);
        f.plain(b"error", error);
    });
    if !written {
        tracing::info!(
            target: ACCESS_LOG,
            request_id,
            trace_id,
            method,
            path,
            route,
            client_version,
            source,
            target_version,
            status,
            duration_ms,
            upstream_ms,
            pool,
            endpoint,
            bytes_in,
            bytes_out,
            cache,
            error,
            "request"
        );
    }
}

fn source_value(s: Source) -> HeaderValue {
    HeaderValue::from_static(s.as_str())
}

/// Propagates a sane client `x-request-id`, else makes a random 128-bit one.
fn request_id(client: Option<&HeaderValue>) -> HeaderValue {
    if let Some(v) = client
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
    {
        return v.clone();
    }
    // Owned by its `Bytes` (one allocation, which the upstream request's
    // and the response's copies share): a copied slice would allocate
    // again on its first clone.
    let buf = crate::trace::hex::<32>(fastrand::u128(..));
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .expect("hex is a valid header value")
}

fn request_host<B>(req: &Request<B>) -> &str {
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
    // A byte loop: `rsplit_once`'s `memrchr` costs ~130 instructions to
    // set up for a host this short.
    match host.bytes().rposition(|b| b == b':') {
        Some(i) => &host[..i],
        None => host,
    }
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH).and_then(length_value)
}

/// A `Content-Length` value as a number (`None`: not one).
fn length_value(v: &HeaderValue) -> Option<u64> {
    v.to_str().ok()?.trim().parse().ok()
}

/// The request body as forwarded untranslated: nothing, or a stream
/// capped at the route's limit and bounded by the body read timeout.
fn plain_body(body: Option<ClientBody>, no_body: bool, limit: u64, read_timeout: Duration) -> Body {
    match body {
        Some(body) if !no_body => Body::request(body, limit, read_timeout),
        _ => Body::empty(),
    }
}

/// Sends `req` to an endpoint of `pool` (or of its failover pool), trying
/// again per the route's retry policy: a request that never left goes to
/// another endpoint whatever its method; an idempotent one whose body can be
/// sent again also after a timeout, a broken exchange or a retryable
/// status. All tries together stay within the route's timeout, and each
/// retry needs room in the route's budget. `endpoint` ends as the endpoint
/// of the last try; `start` is when the first try began (the deadline
/// counts from it). `req` is borrowed (see `Upstream::forward_once`): it
/// ends as the last try's request, its body perhaps used.
async fn forward_with_retries(
    pool: &crate::upstream::Pool,
    route: &crate::table::Route,
    req: &mut Request<Body>,
    forwarding: &Forwarding,
    method: &http::Method,
    endpoint: &mut Option<Arc<Endpoint>>,
    start: Instant,
) -> Result<Response<Body>, UpstreamError> {
    let policy = &route.retry;
    let mut attempts = policy.enter();
    let replayable = crate::upstream::retry::idempotent(method);
    let deadline = start + route.timeouts.response;
    let mut tries = 0;
    loop {
        tries += 1;
        // This pool's endpoint, or its failover pool's when none is
        // available; a retry moves away from the endpoint that just failed.
        let picked = match endpoint.as_deref() {
            Some(last) if tries > 1 => pool.pick_other(last),
            _ => pool.pick(),
        };
        let (serving, ep) = picked.ok_or(UpstreamError::NoEndpoint)?;
        *endpoint = Some(ep.clone());
        let more = tries < policy.attempts;
        // Whether the request can go again after this try: in place when
        // the lean client leaves its buffered body there, else from a copy
        // made now (boxed: it is rare, and the future stays small).
        let via = Upstream::via(serving, req);
        let in_place = more && replayable && via.gives_back(req);
        let spare = if more && replayable && !in_place {
            req.body().try_clone().map(|body| {
                let mut copy = Request::new(body);
                *copy.method_mut() = req.method().clone();
                *copy.uri_mut() = req.uri().clone();
                *copy.version_mut() = req.version();
                *copy.headers_mut() = req.headers().clone();
                Box::new(copy)
            })
        } else {
            None
        };
        let again_possible = in_place || spare.is_some();
        // The first try has the whole timeout (`start` is just now).
        let (began, left) = if tries == 1 {
            (start, route.timeouts.response)
        } else {
            let now = Instant::now();
            (now, deadline.saturating_duration_since(now))
        };
        let timeouts = crate::upstream::Timeouts {
            connect: route.timeouts.connect.min(left),
            response: policy.per_try.map_or(left, |t| t.min(left)),
            body: route.timeouts.body,
            start: Some(began),
        };
        let again = |attempts: &mut crate::upstream::retry::Attempts<'_>| {
            more && Instant::now() < deadline && attempts.try_retry()
        };
        let result = Upstream::forward_once(serving, ep, req, forwarding, timeouts, via).await;
        match result {
            Ok(resp) if policy.retry_status(resp.status()) && again_possible => {
                if !again(&mut attempts) {
                    return Ok(resp);
                }
                tracing::debug!(endpoint = %ep.authority, status = %resp.status(), try_ = tries, "retrying");
            }
            Ok(resp) => return Ok(resp),
            Err(failed) => {
                // A request that never left did no work upstream, so trying
                // it elsewhere amplifies nothing: bounded by `attempts` and
                // the deadline, not by the budget.
                let retry = if failed.unsent {
                    more && Instant::now() < deadline
                } else {
                    again_possible && failed.error.is_endpoint_fault() && again(&mut attempts)
                };
                if !retry {
                    return Err(failed.error);
                }
                tracing::debug!(endpoint = %ep.authority, error = %failed.error, try_ = tries, "retrying");
                if failed.unsent {
                    // As it came: no copy needed.
                    continue;
                }
            }
        }
        if let Some(spare) = spare {
            *req = *spare;
        }
    }
}

static WEBSOCKET: HeaderValue = HeaderValue::from_static("websocket");
static UPGRADE_TOKEN: HeaderValue = HeaderValue::from_static("upgrade");

/// How a client asked for a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// HTTP/1.1 `Upgrade: websocket`, answered 101.
    Upgrade,
    /// HTTP/2 extended CONNECT with `:protocol = websocket` (RFC 8441),
    /// answered 200.
    ExtendedConnect,
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
fn websocket_key() -> HeaderValue {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let n = fastrand::u128(..).to_be_bytes();
    let mut out = [b'='; 24];
    for (i, chunk) in n.chunks(3).enumerate() {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for j in 0..=chunk.len() {
            out[i * 4 + j] = B64[((v >> (18 - 6 * j)) & 63) as usize];
        }
    }
    HeaderValue::from_bytes(&out).expect("base64 is a valid header value")
}

/// Once the 101 (or, for an h2 client, the 200) has gone out and both
/// sides have upgraded, copies bytes both ways until either side closes,
/// nothing has moved either way for `idle`, or the listener's grace period
/// is over (on the current worker's runtime). The client connection's
/// `lease` keeps it counted (connection limit, drain, h2 idleness) while
/// the tunnel is open.
fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    endpoint: Option<Arc<Endpoint>>,
    lease: Option<Arc<crate::server::Lease>>,
    idle: Option<Duration>,
) {
    tokio::spawn(async move {
        let (client, upstream) = tokio::join!(client, upstream);
        let endpoint = endpoint.as_ref().map(|e| e.authority.as_str());
        let (client, upstream) = match (client, upstream) {
            (Ok(client), Ok(upstream)) => (client, upstream),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(endpoint, error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let moved = Arc::new(AtomicU64::new(0));
        let mut client = Counted {
            io: hyper_util::rt::TokioIo::new(client),
            reads: moved.clone(),
        };
        let mut upstream = Counted {
            io: hyper_util::rt::TokioIo::new(upstream),
            reads: moved.clone(),
        };
        let stopped = async {
            match &lease {
                Some(l) => l.stopped().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
                Ok((up, down)) => tracing::debug!(endpoint, up, down, "WebSocket tunnel closed"),
                Err(e) => tracing::debug!(endpoint, error = %e, "WebSocket tunnel broke"),
            },
            _ = quiet_for(&moved, idle) => {
                tracing::debug!(endpoint, ?idle, "WebSocket tunnel idle: closing");
            }
            _ = stopped => tracing::debug!(endpoint, "grace period over: closing WebSocket tunnel"),
        }
        // Dropping both ends closes them; the lease goes last.
        drop((client, upstream));
        drop(lease);
    });
}

/// Resolves once `reads` has not moved for `idle`; never without an `idle`.
async fn quiet_for(reads: &AtomicU64, idle: Option<Duration>) {
    match idle {
        Some(idle) => {
            crate::server::quiet_for(idle, || (reads.load(Ordering::Relaxed), false)).await
        }
        None => std::future::pending().await,
    }
}

pin_project_lite::pin_project! {
    /// A tunnel end that counts its reads that brought bytes (for the
    /// tunnel's idle timeout).
    struct Counted<T> {
        #[pin]
        io: T,
        reads: Arc<AtomicU64>,
    }
}

impl<T: tokio::io::AsyncRead> tokio::io::AsyncRead for Counted<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for Counted<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// Buffers a body up to `limit` bytes.
async fn collect_limited(body: Body, limit: u64) -> Result<bytes::Bytes, BodyError> {
    use http_body_util::BodyExt;
    Ok(body.capped(limit).collect().await?.to_bytes())
}

fn body_is_empty(b: &ClientBody) -> bool {
    b.is_end_stream()
}

/// Adds the gateway's `Via` to a proxied response: to the unparsed fields
/// when they are passed through as they are, else to its map.
fn add_via(resp: &mut Response<Body>) {
    if let Some(raw) = resp.body_mut().raw_fields_mut() {
        raw.add_via();
        return;
    }
    resp.headers_mut()
        .append(header::VIA, HeaderValue::from_static("1.1 switchyard"));
}

pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the few names present
    // (standard names compare as enum tags) costs less than hashing all
    // eight for `remove`. `Connection` is one of them, so a message without
    // any has no Connection-named headers either.
    let hop = |k: &HeaderName| {
        matches!(
            k.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "proxy-authorization"
        )
    };
    if !h.keys().any(hop) {
        return;
    }
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

/// The peer's address as a header value. A connection's requests come from
/// one peer, so the last one formatted on this thread is kept (a
/// reference-counted clone instead of formatting per request).
fn peer_value(ip: std::net::IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(std::net::IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((seen, v)) if *seen == ip => v.clone(),
        _ => {
            let v = HeaderValue::from_maybe_shared(bytes::Bytes::from(ip.to_string()))
                .expect("an IP address is a valid header value");
            *last = Some((ip, v.clone()));
            v
        }
    })
}

/// Strips hop-by-hop headers and works out the forwarding ones (sent after
/// the client's: see [`Forwarding`]); says whether the client sent `TE:
/// trailers`.
fn prepare_upstream_headers(
    h: &mut HeaderMap,
    version: Version,
    peer: SocketAddr,
    https: bool,
    request_id: Option<&HeaderValue>,
) -> (bool, Forwarding) {
    // `TE: trailers` says the client takes trailers (gRPC requires it).
    let trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    strip_hop_by_hop(h);
    // Looked up after the strip (the client's `Connection` may name either),
    // in one pass (each `HeaderMap` lookup hashes its name: ~100
    // instructions).
    let [chain, host] = crate::headers::find_each(h, [Some(&X_FORWARDED_FOR), Some(&header::HOST)]);
    let host = host.cloned();
    // x-forwarded-for: append the peer to whatever chain the client sent.
    let xff = if chain.is_some() {
        // One buffer: the client's chain (every line, in order), then the peer.
        let mut xff = String::with_capacity(64);
        for prev in h.get_all(X_FORWARDED_FOR) {
            if let Ok(prev) = prev.to_str() {
                xff.push_str(prev);
                xff.push_str(", ");
            }
        }
        let _ = write!(xff, "{}", peer.ip());
        HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)).ok()
    } else {
        Some(peer_value(peer.ip()))
    };
    let proto = if https { "https" } else { "http" };
    let via = if version == Version::HTTP_2 {
        HeaderValue::from_static("2 switchyard")
    } else if version == Version::HTTP_10 {
        HeaderValue::from_static("1.0 switchyard")
    } else {
        HeaderValue::from_static("1.1 switchyard")
    };
    let forwarding = Forwarding {
        for_: xff,
        proto: Some(HeaderValue::from_static(proto)),
        host,
        via: Some(via),
        request_id: request_id.cloned(),
        traceparent: None,
        raw_response: false,
    };
    (trailers, forwarding)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The lean client keeps a response with a field the stamp replaces in
    /// the map path: `stamp_replaces` must know every such name (those
    /// `Stamp::each` passes with `replaces`: all but `set-cookie`, `vary`
    /// and `link`), in any case, and no other.
    #[test]
    fn stamp_replaces_names_the_fields_a_stamp_sets() {
        for (i, name) in STAMP_NAMES.iter().enumerate() {
            let appended = matches!(i, 4 | 8 | 11);
            for case in [
                name.as_str().to_string(),
                name.as_str().to_ascii_uppercase(),
            ] {
                assert_eq!(stamp_replaces(case.as_bytes()), !appended, "{case}");
            }
        }
        for other in [
            "content-type",
            "x-request-ids",
            "date",
            "server",
            "x-api-versions",
            "",
        ] {
            assert!(!stamp_replaces(other.as_bytes()), "{other}");
        }
        // The flags `each` passes for the fields it can set without a table.
        let stamp = Stamp {
            cache: Some(CacheStatus::Hit),
            request_id: Some(HeaderValue::from_static("id")),
            rate_limit: None,
            set_cookie: Some(HeaderValue::from_static("a=1")),
            version: None,
        };
        stamp.each(|name, _, replaces| {
            assert_eq!(stamp_replaces(name.as_str().as_bytes()), replaces, "{name}");
        });
    }

    #[test]
    fn rust_log_turns_the_access_log_on_and_off() {
        // (directives, on)
        let cases = [
            ("info", true),
            ("warn", false),
            ("warn,switchyard::access=info", true),
            ("info,switchyard::access=off", false),
            ("switchyard=debug", true),
            // A directive naming fields matches an event that has them.
            ("warn,switchyard::access[{cache}]=info", true),
            ("warn,switchyard::access[{no_such_field}]=info", false),
        ];
        for (directives, on) in cases {
            let dispatch = tracing::Dispatch::new(
                tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(directives))
                    .with_writer(std::io::sink)
                    .finish(),
            );
            let got = tracing::dispatcher::with_default(&dispatch, access_log_on);
            assert_eq!(got, on, "{directives}");
        }
    }
}
