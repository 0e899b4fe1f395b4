//! Upstream forwarding: keep-alive connections, endpoints and their
//! in-flight counts, power-of-two-choices endpoint choice, connect,
//! response and response-body timeouts, and the mapping of failures to
//! 502/503/504.
//!
//! Plain HTTP/1.1 exchanges go through the lean client in [`h1`] (no
//! connection task, no channels); upgrades, TLS and HTTP/2 pools through
//! hyper's client. Either way connections are pooled per thread: with one
//! single-threaded runtime per worker, a request and its upstream
//! connection stay on one thread, and checkout and checkin touch no lock or
//! atomic shared with other workers. A connection goes back to its
//! thread's pool when the response body ends (see [`Reuse`] and
//! [`h1::ResponseBody`]); it is reused only if it is still open (for
//! hyper's, ready), and dropped when idle longer than [`IDLE_TIMEOUT`].
//!
//! Endpoint state outlives routing tables: the table compiler asks
//! [`Upstream`] for it (under a mutex, off the request path), so a reload
//! keeps in-flight counts; pooled connections are keyed by `host:port`, so
//! they survive reloads too.

use std::cell::RefCell;
use std::collections::HashMap;
use std::error::Error as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::{Body, BodyError};

pub(crate) mod h1;
pub mod health;
pub mod retry;
pub mod transport;

pub use transport::Transport;

/// The fields the gateway adds to a forwarded request (`x-forwarded-*`,
/// `via`, the request id, `traceparent`), kept apart from its map: the
/// lean HTTP/1.1 client writes them after the client's own fields, which
/// saves a `HeaderMap::insert` each (a custom name is hashed byte by byte:
/// about 250 instructions); every other transport has them put in the map
/// first ([`Forwarding::apply`]), as before.
#[derive(Debug, Default)]
pub struct Forwarding {
    /// `x-forwarded-for`: the client's chain with the peer appended.
    pub for_: Option<HeaderValue>,
    /// `x-forwarded-proto`.
    pub proto: Option<HeaderValue>,
    /// `x-forwarded-host`: the client's `Host`.
    pub host: Option<HeaderValue>,
    /// `via`, added after any the client sent.
    pub via: Option<HeaderValue>,
    /// `x-request-id`.
    pub request_id: Option<HeaderValue>,
    /// `traceparent`: this hop as the upstream's parent.
    pub traceparent: Option<HeaderValue>,
    /// The caller passes the response's fields on untouched and its
    /// writer takes them as they arrived: the lean client may leave a
    /// plain head's fields unparsed (`h1::RawFields`, carried by the body).
    pub raw_response: bool,
}

/// The names [`Forwarding`] writes, as statics so [`Forwarding::each`] can
/// lend them for as long as its caller keeps them.
static FORWARDING_NAMES: [http::HeaderName; 6] = [
    crate::headers::X_FORWARDED_FOR,
    crate::headers::X_FORWARDED_PROTO,
    crate::headers::X_FORWARDED_HOST,
    http::header::VIA,
    crate::headers::X_REQUEST_ID,
    crate::headers::TRACEPARENT,
];

impl Forwarding {
    /// Each field in order, with whether it replaces the request's own
    /// fields of that name (`true`) or is added after them (`false`).
    pub fn each(&self, mut f: impl FnMut(&'static http::HeaderName, &HeaderValue, bool)) {
        // `via` is added after the client's; the rest replace theirs.
        let fields = [
            (&self.for_, true),
            (&self.proto, true),
            (&self.host, true),
            (&self.via, false),
            (&self.request_id, true),
            (&self.traceparent, true),
        ];
        for (name, (value, replaces)) in FORWARDING_NAMES.iter().zip(fields) {
            if let Some(v) = value {
                f(name, v, replaces);
            }
        }
    }

    /// Puts the fields in `h`, as the pipeline once did itself.
    pub fn apply(&self, h: &mut http::HeaderMap) {
        self.each(|name, value, set| {
            if set {
                h.insert(name.clone(), value.clone());
            } else {
                h.append(name.clone(), value.clone());
            }
        });
    }

    /// Takes [`Forwarding::apply`]'s fields out of `h` again (a request
    /// given back unsent, which the next try may send by the lean client):
    /// the replaced names go, and the `via` added last.
    fn unapply(&self, h: &mut http::HeaderMap) {
        self.each(|name, _, set| {
            if set {
                h.remove(name);
            }
        });
        if self.via.is_some() {
            let kept: Vec<HeaderValue> = h.get_all(http::header::VIA).iter().cloned().collect();
            h.remove(http::header::VIA);
            for v in &kept[..kept.len().saturating_sub(1)] {
                h.append(http::header::VIA, v.clone());
            }
        }
    }
}

/// Idle connections older than this are dropped at checkout: 90 s, longer
/// than typical upstream keep-alive timeouts would race; a request that
/// still meets a connection the upstream closed is retried once (see
/// [`Upstream::forward`]).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle connections kept per endpoint per worker thread; more are closed.
const MAX_IDLE_PER_ENDPOINT: usize = 256;

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The pool has no endpoint to try.
    #[error("no endpoint available")]
    NoEndpoint,
    /// TCP connect failed (refused, unreachable, unresolvable).
    #[error("connect to {endpoint} failed")]
    Connect {
        /// The endpoint tried.
        endpoint: Authority,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// TCP connect did not finish within the route's connect timeout.
    #[error("connect to {endpoint} timed out after {after:?}")]
    ConnectTimeout {
        /// The endpoint tried.
        endpoint: Authority,
        /// The connect timeout.
        after: Duration,
    },
    /// No response headers within the route's timeout.
    #[error("{endpoint} sent no response within {after:?}")]
    Timeout {
        /// The endpoint tried.
        endpoint: Authority,
        /// The response timeout.
        after: Duration,
    },
    /// The client's streamed request body passed the route's limit.
    #[error("request body exceeds {limit} bytes")]
    RequestBodyTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client's request body stream failed mid-way; the upstream
    /// request was aborted.
    #[error("request body stream from the client failed")]
    RequestBodyAborted,
    /// The client stopped sending its request body mid-way for longer than
    /// the body read timeout; the upstream request was aborted.
    #[error("the client sent no request body data for {after:?}")]
    RequestBodyTimeout {
        /// The body read timeout.
        after: Duration,
    },
    /// The upstream broke the exchange (reset, malformed response).
    #[error("{endpoint} failed mid-exchange")]
    Protocol {
        /// The endpoint tried.
        endpoint: Authority,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The upstream broke an exchange of the lean HTTP/1.1 client (reset,
    /// closed early, malformed response).
    #[error("{endpoint} failed mid-exchange")]
    Broken {
        /// The endpoint tried.
        endpoint: Authority,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The upstream switched protocols (101) for a request that was not a
    /// WebSocket handshake the gateway can tunnel.
    #[error("upstream switched protocols unasked")]
    UnexpectedUpgrade,
    /// The upstream answered a WebSocket handshake from an HTTP/2 client
    /// with a success that is not 101: no tunnel to open.
    #[error("upstream answered the WebSocket handshake with {status}, not 101")]
    NoUpgrade {
        /// What it answered.
        status: StatusCode,
    },
    /// A response body the gateway had to read whole (to cache it) broke off.
    #[error("{endpoint} sent a broken response body")]
    ResponseBody {
        /// The endpoint.
        endpoint: Authority,
        /// The cause.
        #[source]
        source: BodyError,
    },
}

impl UpstreamError {
    /// 502 for a broken upstream, 503 for none available, 504 for a slow one,
    /// 4xx when the client's own body was at fault.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Self::ConnectTimeout { .. }
            | Self::Timeout { .. }
            | Self::ResponseBody {
                source: BodyError::Timeout { .. },
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            Self::Connect { .. }
            | Self::Protocol { .. }
            | Self::Broken { .. }
            | Self::ResponseBody { .. }
            | Self::UnexpectedUpgrade
            | Self::NoUpgrade { .. } => StatusCode::BAD_GATEWAY,
            Self::RequestBodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestBodyAborted => StatusCode::BAD_REQUEST,
            Self::RequestBodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Whether the endpoint is to blame (counts toward outlier ejection);
    /// the client's own body failing does not.
    pub fn is_endpoint_fault(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::ConnectTimeout { .. }
                | Self::Timeout { .. }
                | Self::Protocol { .. }
                | Self::Broken { .. }
        )
    }

    /// Stable slug for problem `type` and metrics.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoEndpoint => "no-upstream-endpoint",
            Self::Connect { .. } => "upstream-connect-failed",
            Self::ConnectTimeout { .. } => "upstream-connect-timeout",
            Self::Timeout { .. }
            | Self::ResponseBody {
                source: BodyError::Timeout { .. },
                ..
            } => "upstream-timeout",
            Self::Protocol { .. } | Self::Broken { .. } | Self::ResponseBody { .. } => {
                "upstream-protocol-error"
            }
            Self::RequestBodyTooLarge { .. } => "body-too-large",
            Self::RequestBodyAborted => "request-body-aborted",
            Self::RequestBodyTimeout { .. } => "request-body-timeout",
            Self::UnexpectedUpgrade => "upstream-unexpected-upgrade",
            Self::NoUpgrade { .. } => "upstream-refused-websocket",
        }
    }
}

/// One upstream endpoint and its live in-flight count (shared across tables).
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: Authority,
    /// Unique per process and stable across reloads (the registry hands a
    /// reloaded table the same `Endpoint`): this thread's idle connections
    /// are found by it, with no hashing of the authority.
    id: u64,
    /// `Host` value for `host_header = "endpoint"`.
    pub host_value: HeaderValue,
    inflight: AtomicU32,
    /// Active-check verdict and passive ejection.
    pub health: health::Health,
}

impl Endpoint {
    /// Requests sent to this endpoint and not yet answered.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// Decrements an endpoint's in-flight count when dropped.
struct InflightGuard<'a>(&'a Endpoint);

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How the upstream `Host` header is set.
#[derive(Debug, Clone)]
pub enum HostRewrite {
    /// Keep the client's (HTTP/2 clients' `:authority` becomes `Host`).
    Preserve,
    /// The chosen endpoint's `host:port`.
    Endpoint,
    /// A fixed value.
    Fixed(HeaderValue),
}

/// A compiled pool: endpoints for one API version.
#[derive(Debug)]
pub struct Pool {
    /// Pool name.
    pub name: Arc<str>,
    /// Endpoints (at least one).
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Host header policy.
    pub host: HostRewrite,
    /// Passive ejection policy.
    pub outlier: Option<health::Outlier>,
    /// Active health check, if configured.
    pub check: Option<health::Check>,
    /// Takes the traffic while no endpoint here is available (one hop).
    pub failover: Option<Arc<Pool>>,
    /// TLS and/or HTTP/2 to the endpoints; None = plain HTTP/1.1.
    pub transport: Option<Arc<Transport>>,
}

impl Pool {
    /// Power of two choices on in-flight count among available endpoints
    /// (healthy and not ejected): two random endpoints, the less busy
    /// wins; if neither is available, the first available one from a random
    /// start. Near-optimal balance without a global scan or lock.
    pub fn choose(&self) -> Option<&Arc<Endpoint>> {
        let mut now = None;
        let n = self.endpoints.len();
        match n {
            0 => None,
            1 => {
                let e = &self.endpoints[0];
                e.health.available(&mut now).then_some(e)
            }
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                match (ea.health.available(&mut now), eb.health.available(&mut now)) {
                    (true, true) if eb.inflight() < ea.inflight() => Some(eb),
                    (true, _) => Some(ea),
                    (false, true) => Some(eb),
                    (false, false) => (1..n)
                        .map(|i| &self.endpoints[(a + i) % n])
                        .find(|e| e.health.available(&mut now)),
                }
            }
        }
    }

    /// An endpoint of this pool, or of its failover pool when none here is
    /// available; with the pool it belongs to (its Host policy applies).
    pub fn pick(&self) -> Option<(&Pool, &Arc<Endpoint>)> {
        if let Some(ep) = self.choose() {
            return Some((self, ep));
        }
        let f = self.failover.as_deref()?;
        f.choose().map(|ep| (f, ep))
    }

    /// For a retry: an available endpoint other than `not` (scanning from
    /// a random start), else one of the failover pool, else [`Pool::pick`].
    pub fn pick_other(&self, not: &Endpoint) -> Option<(&Pool, &Arc<Endpoint>)> {
        let mut now = None;
        let n = self.endpoints.len();
        if n > 1 {
            let start = fastrand::usize(..n);
            let other = (0..n)
                .map(|i| &self.endpoints[(start + i) % n])
                .find(|e| !std::ptr::eq(&***e, not) && e.health.available(&mut now));
            if let Some(e) = other {
                return Some((self, e));
            }
        }
        if let Some(f) = self.failover.as_deref()
            && let Some(e) = f.choose()
        {
            return Some((f, e));
        }
        self.pick()
    }

    /// Whether this pool or its failover has an available endpoint.
    pub fn serving(&self) -> bool {
        self.pick().is_some()
    }

    /// The same pool without a failover (what another pool fails over to).
    pub fn without_failover(&self) -> Pool {
        Pool {
            name: self.name.clone(),
            endpoints: self.endpoints.clone(),
            host: self.host.clone(),
            outlier: self.outlier,
            check: self.check.clone(),
            failover: None,
            transport: self.transport.clone(),
        }
    }
}

/// Per-route timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Until response headers.
    pub response: Duration,
    /// The longest wait for the next piece of the response body.
    pub body: Option<Duration>,
    /// When this try's clock started (`None`: when it is sent). The
    /// pipeline reads the clock for its upstream-time metric just before
    /// sending; the lean client takes its deadline and its idle-age checks
    /// from that reading rather than a clock read of its own each (~40 ns
    /// apiece on this VM's vDSO clock, several per request).
    pub start: Option<Instant>,
}

/// Long-lived upstream resources: endpoint state by address.
#[derive(Debug, Default)]
pub struct Upstream {
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl Upstream {
    /// The shared state of endpoint `host:port` (validated).
    pub fn endpoint(&self, addr: &str) -> Arc<Endpoint> {
        let mut eps = self.endpoints.lock().expect("upstream registry poisoned");
        eps.entry(addr.to_string())
            .or_insert_with(|| {
                static NEXT_ID: AtomicU64 = AtomicU64::new(0);
                Arc::new(Endpoint {
                    authority: addr.parse().expect("validated endpoint"),
                    id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                    host_value: HeaderValue::from_str(addr).expect("validated endpoint"),
                    inflight: AtomicU32::new(0),
                    health: health::Health::default(),
                })
            })
            .clone()
    }

    /// Forwards `req` (whose URI carries the path and query to send) to an
    /// endpoint of `pool`, over an idle keep-alive connection of this thread
    /// if one is ready, else a new one. The body streams; if it fails
    /// mid-way the upstream request is aborted, never completed short. A
    /// request a reused connection could not start (it was closed while
    /// idle) is sent once more on a new connection; nothing is replayed
    /// once hyper has begun writing it. The response body returns the
    /// connection to the pool when it ends.
    pub async fn forward(
        pool: &Pool,
        req: Request<Body>,
        timeouts: Timeouts,
    ) -> Result<Response<Body>, UpstreamError> {
        let (pool, ep) = pool.pick().ok_or(UpstreamError::NoEndpoint)?;
        Self::forward_to(pool, ep, req, &Forwarding::default(), timeouts).await
    }

    /// [`Upstream::forward`] to an endpoint the caller already picked (with
    /// [`Pool::pick`], which may be of the failover pool: pass that pool),
    /// so it can log and count which.
    pub async fn forward_to(
        pool: &Pool,
        ep: &Endpoint,
        mut req: Request<Body>,
        forwarding: &Forwarding,
        timeouts: Timeouts,
    ) -> Result<Response<Body>, UpstreamError> {
        let via = Self::via(pool, &req);
        Self::forward_once(pool, ep, &mut req, forwarding, timeouts, via)
            .await
            .map_err(|f| f.error)
    }

    /// Which client `req` goes to `pool` through, worked out once a try
    /// for [`Upstream::forward_once`] and [`Via::gives_back`].
    pub fn via(pool: &Pool, req: &Request<Body>) -> Via {
        Via {
            lean: lean(pool, req),
        }
    }

    /// [`Upstream::forward_to`] on a borrowed request (`via` is
    /// [`Upstream::via`] of it), which afterwards can go again as it came
    /// when the failure says it never left (no connection could be made),
    /// whatever its body; and, when [`Via::gives_back`] said so before the
    /// try, after it was sent too, so a retry needs no copy made in
    /// advance. Otherwise its body has been used.
    ///
    /// The request stays in the caller's future: each level of the nest
    /// that took it by value stored it (360 bytes) and copied it on,
    /// together with every enclosing future, at every request.
    pub async fn forward_once(
        pool: &Pool,
        ep: &Endpoint,
        req: &mut Request<Body>,
        forwarding: &Forwarding,
        timeouts: Timeouts,
        via: Via,
    ) -> Result<Response<Body>, TryFailed> {
        let client_authority = req.uri().authority().cloned();
        // Origin form: the connection is to the endpoint already.
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq.clone());
        // HTTP/1.1 to the upstream whatever the client used (HTTP/2 pools below).
        *req.version_mut() = http::Version::HTTP_11;
        // HTTP/1.1 needs a Host: without one of the client's, the endpoint's.
        // Set when this endpoint's own name had to stand in for a missing
        // Host: taken out again afterwards, for a retry elsewhere.
        let mut endpoint_host = false;
        let host = match &pool.host {
            HostRewrite::Preserve if req.headers().contains_key(http::header::HOST) => None,
            HostRewrite::Preserve => Some(
                client_authority
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                    .unwrap_or_else(|| {
                        endpoint_host = true;
                        ep.host_value.clone()
                    }),
            ),
            HostRewrite::Endpoint => Some(ep.host_value.clone()),
            HostRewrite::Fixed(v) => Some(v.clone()),
        };
        if let Some(v) = host {
            req.headers_mut().insert(http::header::HOST, v);
        }
        let transport = pool.transport.as_deref();
        if let Some(t) = transport.filter(|t| t.multiplexed()) {
            // HTTP/2: absolute URI; the Host becomes :authority.
            let authority = req
                .headers_mut()
                .remove(http::header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok())
                .unwrap_or_else(|| ep.authority.clone());
            *req.uri_mut() = h2_uri(t, authority, pq);
            *req.version_mut() = http::Version::HTTP_2;
        }

        ep.inflight.fetch_add(1, Ordering::Relaxed);
        let _guard = InflightGuard(ep);
        // The lean client keeps the response timeout on each connection's
        // own timer; the others get one per request.
        let result = if via.lean {
            h1::exchange(ep, req, forwarding, timeouts)
                .await
                .map_err(|(error, sent)| TryFailed {
                    error,
                    unsent: !sent,
                })
        } else {
            forwarding.apply(req.headers_mut());
            // hyper's client takes the request: it comes back only unsent.
            let owned = std::mem::replace(req, Request::new(Body::empty()));
            let result = match tokio::time::timeout(
                timeouts.response,
                exchange(ep, transport, owned, timeouts),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(Failed {
                    error: UpstreamError::Timeout {
                        endpoint: ep.authority.clone(),
                        after: timeouts.response,
                    },
                    unsent: None,
                }),
            };
            result.map_err(|failed| match failed.unsent {
                // Given back unsent, it leaves as it came: the next try
                // (perhaps by the lean client) adds the fields again.
                Some(mut back) => {
                    forwarding.unapply(back.headers_mut());
                    *req = back;
                    TryFailed {
                        error: failed.error,
                        unsent: true,
                    }
                }
                None => TryFailed {
                    error: failed.error,
                    unsent: false,
                },
            })
        };
        if endpoint_host {
            req.headers_mut().remove(http::header::HOST);
        }
        let failed = match &result {
            Ok(resp) => resp.status().is_server_error(),
            Err(f) => f.error.is_endpoint_fault(),
        };
        health::record(pool, ep, failed);
        result
    }
}

/// Which client a request goes through ([`Upstream::via`]).
#[derive(Debug, Clone, Copy)]
pub struct Via {
    lean: bool,
}

impl Via {
    /// Whether `req` can be sent again after [`Upstream::forward_once`]
    /// sent it this way: the lean client leaves a buffered body in place.
    pub fn gives_back(self, req: &Request<Body>) -> bool {
        self.lean && req.body().buffered().is_some()
    }
}

/// Why a try of [`Upstream::forward_once`] failed.
#[derive(Debug)]
pub struct TryFailed {
    /// Why.
    pub error: UpstreamError,
    /// No byte of the request left (connect failed or timed out): the
    /// caller's request is as it came, body included, whatever its body.
    pub unsent: bool,
}

/// A failed exchange through hyper's client, with the request if it was
/// never sent.
struct Failed {
    /// Why.
    error: UpstreamError,
    /// The request, when no byte of it left (connect failed or timed out).
    unsent: Option<Request<Body>>,
}

impl std::fmt::Debug for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failed")
            .field("error", &self.error)
            .field("unsent", &self.unsent.is_some())
            .finish()
    }
}

impl Failed {
    fn sent(error: UpstreamError) -> Failed {
        Failed {
            error,
            unsent: None,
        }
    }
}

fn h2_uri(t: &Transport, authority: Authority, pq: PathAndQuery) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(t.scheme());
    parts.authority = Some(authority);
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).expect("scheme, authority and path make a URI")
}

/// Whether `req` goes to `pool` through the lean HTTP/1.1 client.
fn lean(pool: &Pool, req: &Request<Body>) -> bool {
    pool.transport.is_none() && h1::eligible(req)
}

/// One exchange through hyper's client (h2, TLS, tunnels): everything the
/// lean client in [`h1`] does not take.
async fn exchange(
    ep: &Endpoint,
    transport: Option<&Transport>,
    req: Request<Body>,
    timeouts: Timeouts,
) -> Result<Response<Body>, Failed> {
    // Boxed: the lean client's future is part of every request's, which
    // is copied whole each time it is moved (into its parent's state, into
    // hyper's task); these rarer paths' larger futures are kept out of it.
    if let Some(t) = transport.filter(|t| t.multiplexed()) {
        return Box::pin(exchange_h2(ep, t, req, timeouts)).await;
    }
    Box::pin(exchange_hyper(ep, transport, req, timeouts)).await
}

/// [`exchange`] through hyper's HTTP/1.1 client: TLS pools and WebSocket
/// handshakes.
async fn exchange_hyper(
    ep: &Endpoint,
    transport: Option<&Transport>,
    req: Request<Body>,
    timeouts: Timeouts,
) -> Result<Response<Body>, Failed> {
    let id = transport.map_or(0, |t| t.id);
    let fresh = |req: Request<Body>| async move {
        match connect_h1(ep, transport, timeouts.connect).await {
            Ok(sender) => Ok((sender, req)),
            Err(error) => Err(Failed {
                error,
                unsent: Some(req),
            }),
        }
    };
    let (mut sender, req) = match checkout(ep.id, id) {
        Some(mut sender) => match sender.try_send_request(req).await {
            Ok(resp) => return Ok(respond(resp, sender, ep, id, timeouts.body)),
            Err(mut e) => match e.take_message() {
                // Never started: closed while idle. Once more, on a new one.
                Some(req) => Box::pin(fresh(req)).await?,
                None => return Err(Failed::sent(classify(e.into_error(), ep))),
            },
        },
        // Boxed: connecting (TCP, handshake, spawning the connection task)
        // is a large future needed once per connection, and every byte of
        // this one is copied as the request's future is put in place.
        None => Box::pin(fresh(req)).await?,
    };
    match sender.send_request(req).await {
        Ok(resp) => Ok(respond(resp, sender, ep, id, timeouts.body)),
        Err(e) => Err(Failed::sent(classify(e, ep))),
    }
}

thread_local! {
    /// This thread's HTTP/2 connections, one per endpoint and transport,
    /// or the dial that is making one.
    static H2: RefCell<IdMap<(u64, u64), H2Conn>> = RefCell::new(HashMap::default());
}

/// An entry of [`H2`].
#[derive(Clone)]
enum H2Conn {
    Ready(http2::SendRequest<Body>),
    /// A request is connecting: others wait for it rather than each
    /// opening a connection of their own (a burst of first requests after
    /// a start or a lost connection would otherwise cost the endpoint as
    /// many TLS handshakes).
    Dialing(Arc<Dial>),
}

/// A connection being made: `done` (set, and the waiters woken, when the
/// dial ends whichever way, cancellation included) tells a waiter to look
/// again.
#[derive(Default)]
struct Dial {
    done: AtomicBool,
    notify: tokio::sync::Notify,
}

/// Ends a dial when dropped.
struct Dialer(Arc<Dial>);

impl Drop for Dialer {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }
}

/// This thread's HTTP/2 connection to `ep` over `t`: the one there is, the
/// one another request is making (waited for), or a new one.
async fn h2_sender(
    ep: &Endpoint,
    t: &Transport,
    connect_timeout: Duration,
) -> Result<http2::SendRequest<Body>, UpstreamError> {
    let key = (ep.id, t.id);
    let mut waited = false;
    loop {
        let dial = match H2.with_borrow(|m| m.get(&key).cloned()) {
            Some(H2Conn::Ready(s)) if !s.is_closed() => return Ok(s),
            // Once only: if that dial failed, this request makes its own.
            Some(H2Conn::Dialing(d)) if !waited && !d.done.load(Ordering::Acquire) => {
                let notified = d.notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !d.done.load(Ordering::Acquire) {
                    notified.await;
                }
                waited = true;
                continue;
            }
            _ => Arc::new(Dial::default()),
        };
        H2.with_borrow_mut(|m| m.insert(key, H2Conn::Dialing(dial.clone())));
        let _dialer = Dialer(dial.clone());
        // Boxed, as in `exchange`: a TLS handshake is a large future.
        let made = Box::pin(connect(ep, Some(t), connect_timeout)).await;
        return H2.with_borrow_mut(|m| {
            // A task can move threads while it connects (multi-threaded
            // runtimes): only this dial's own entry is replaced.
            let own = matches!(m.get(&key), Some(H2Conn::Dialing(d)) if Arc::ptr_eq(d, &dial));
            match made {
                Ok(Sender::H2(s)) => {
                    m.insert(key, H2Conn::Ready(s.clone()));
                    Ok(s)
                }
                Ok(Sender::H1(_)) => unreachable!("a multiplexed transport connects with h2"),
                Err(error) => {
                    if own {
                        m.remove(&key);
                    }
                    Err(error)
                }
            }
        });
    }
}

/// Sends on this thread's HTTP/2 connection to `ep` (made if there is none
/// or it has closed). Streams multiplex; the connection is never checked
/// out, so the response body carries no [`Reuse`].
async fn exchange_h2(
    ep: &Endpoint,
    t: &Transport,
    req: Request<Body>,
    timeouts: Timeouts,
) -> Result<Response<Body>, Failed> {
    let key = (ep.id, t.id);
    let mut sender = match h2_sender(ep, t, timeouts.connect).await {
        Ok(s) => s,
        Err(error) => {
            return Err(Failed {
                error,
                unsent: Some(req),
            });
        }
    };
    if sender.ready().await.is_err() {
        // Closed between the check and now: nothing was sent.
        H2.with_borrow_mut(|m| {
            if matches!(m.get(&key), Some(H2Conn::Ready(s)) if s.is_closed()) {
                m.remove(&key);
            }
        });
        return Err(Failed {
            error: UpstreamError::Connect {
                endpoint: ep.authority.clone(),
                source: std::io::Error::from(std::io::ErrorKind::ConnectionReset),
            },
            unsent: Some(req),
        });
    }
    match sender.send_request(req).await {
        Ok(resp) => Ok(resp.map(|body| Body::upstream(body, None, timeouts.body))),
        Err(e) => Err(Failed::sent(classify(e, ep))),
    }
}

fn respond(
    resp: Response<hyper::body::Incoming>,
    sender: SendRequest<Body>,
    ep: &Endpoint,
    transport: u64,
    gap: Option<Duration>,
) -> Response<Body> {
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Upgraded: the connection now belongs to the tunnel, never the pool.
        return resp.map(Body::stream);
    }
    let reuse = Reuse {
        sender,
        endpoint: ep.id,
        transport,
    };
    resp.map(|body| Body::upstream(body, Some(reuse), gap))
}

/// A new connection's request sender.
pub(crate) enum Sender {
    /// HTTP/1.1: one request at a time, pooled when idle.
    H1(SendRequest<Body>),
    /// HTTP/2: cloneable, multiplexed.
    H2(http2::SendRequest<Body>),
}

impl Sender {
    /// Sends one request (its URI and version already fit the protocol).
    pub(crate) async fn send(
        &mut self,
        req: Request<Body>,
    ) -> hyper::Result<Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
    }
}

/// An HTTP/1.1 connection to `ep` (over TLS if the transport says so).
async fn connect_h1(
    ep: &Endpoint,
    transport: Option<&Transport>,
    timeout: Duration,
) -> Result<SendRequest<Body>, UpstreamError> {
    match connect(ep, transport, timeout).await? {
        Sender::H1(s) => Ok(s),
        Sender::H2(_) => unreachable!("only multiplexed transports connect with h2"),
    }
}

/// A new connection to `ep`: TCP connect within `timeout`, `TCP_NODELAY`,
/// keep-alive probes after 60 s idle, TLS (handshake within `timeout`
/// too) if the transport has it, an HTTP/1.1 or HTTP/2 handshake, and the
/// connection's task spawned on the current runtime.
pub(crate) async fn connect(
    ep: &Endpoint,
    transport: Option<&Transport>,
    timeout: Duration,
) -> Result<Sender, UpstreamError> {
    let stream = tcp(ep, timeout).await?;
    let h2 = transport.is_some_and(Transport::multiplexed);
    match transport.and_then(|t| t.tls.as_ref()) {
        None => handshake(stream, ep, h2).await,
        Some(Err(reason)) => Err(UpstreamError::Connect {
            endpoint: ep.authority.clone(),
            source: std::io::Error::other(reason.to_string()),
        }),
        Some(Ok(tls)) => {
            let name = match &tls.server_name {
                Some(n) => n.clone(),
                None => rustls::pki_types::ServerName::try_from(ep.authority.host().to_string())
                    .map_err(|e| UpstreamError::Connect {
                        endpoint: ep.authority.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                    })?,
            };
            let stream =
                match tokio::time::timeout(timeout, tls.connector.connect(name, stream)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(source)) => {
                        return Err(UpstreamError::Connect {
                            endpoint: ep.authority.clone(),
                            source,
                        });
                    }
                    Err(_) => {
                        return Err(UpstreamError::ConnectTimeout {
                            endpoint: ep.authority.clone(),
                            after: timeout,
                        });
                    }
                };
            handshake(stream, ep, h2).await
        }
    }
}

async fn handshake<IO>(io: IO, ep: &Endpoint, h2: bool) -> Result<Sender, UpstreamError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let endpoint = ep.authority.clone();
    if h2 {
        // Pinged every 30 s (20 s to answer, hyper's default) even while
        // idle: the one shared connection must not sit dead in the map.
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| classify(e, ep))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%endpoint, error = %e, "upstream h2 connection ended with an error");
            }
        });
        return Ok(Sender::H2(sender));
    }
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| classify(e, ep))?;
    tokio::spawn(async move {
        // With upgrades: a 101 hands the connection to a WebSocket tunnel.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%endpoint, error = %e, "upstream connection ended with an error");
        }
    });
    Ok(Sender::H1(sender))
}

/// TCP connect within `timeout`, `TCP_NODELAY`, keep-alive probes after 60 s idle.
async fn tcp(ep: &Endpoint, timeout: Duration) -> Result<TcpStream, UpstreamError> {
    let stream =
        match tokio::time::timeout(timeout, TcpStream::connect(ep.authority.as_str())).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => {
                return Err(UpstreamError::Connect {
                    endpoint: ep.authority.clone(),
                    source,
                });
            }
            Err(_) => {
                return Err(UpstreamError::ConnectTimeout {
                    endpoint: ep.authority.clone(),
                    after: timeout,
                });
            }
        };
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream)
        .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
    Ok(stream)
}

/// An upstream connection whose response body is still being read; see
/// [`Body::upstream`](crate::body::Body). Dropped unreleased (the body
/// failed or was abandoned), the connection closes.
#[derive(Debug)]
pub struct Reuse {
    sender: SendRequest<Body>,
    endpoint: u64,
    /// The pool transport's id; 0 for plain HTTP/1.1.
    transport: u64,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
    transport: u64,
}

thread_local! {
    /// This thread's idle connections by endpoint, oldest first.
    static IDLE: RefCell<IdMap<u64, Vec<Idle>>> = RefCell::new(HashMap::default());
}

/// A map keyed by endpoint (and transport) ids.
type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Hashes an endpoint id: one multiply (Fibonacci hashing) spreads the
/// small sequential ids over the table's control bits.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(8) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

impl Reuse {
    /// The response was read to the end: the connection may carry another
    /// request (hyper marks it ready once it has settled).
    pub(crate) fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let idle = Idle {
            sender: self.sender,
            since: Instant::now(),
            transport: self.transport,
        };
        IDLE.with_borrow_mut(|pool| park(pool, self.endpoint, idle));
    }
}

/// Adds an idle connection to `endpoint`'s list in a per-thread idle map
/// (newest last), unless the list holds [`MAX_IDLE_PER_ENDPOINT`] already:
/// then the connection is dropped, which closes it.
fn park<T>(pool: &mut IdMap<u64, Vec<T>>, endpoint: u64, idle: T) {
    let list = pool.entry(endpoint).or_default();
    if list.len() < MAX_IDLE_PER_ENDPOINT {
        list.push(idle);
    }
}

/// The most recently idled ready connection to `endpoint`, if any. Drops
/// closed ones and those idle longer than [`IDLE_TIMEOUT`]; leaves ones
/// that are open but not ready yet (still settling after their response).
/// Only connections made with transport `transport` (0: plain) qualify.
fn checkout(endpoint: u64, transport: u64) -> Option<SendRequest<Body>> {
    IDLE.with_borrow_mut(|pool| {
        let list = pool.get_mut(&endpoint)?;
        let now = Instant::now();
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let idle = &list[i];
            if now.duration_since(idle.since) > IDLE_TIMEOUT {
                // Oldest first: everything up to here is older still.
                list.drain(..=i);
                return None;
            }
            if idle.sender.is_closed() {
                list.remove(i);
            } else if idle.transport == transport && idle.sender.is_ready() {
                return Some(list.remove(i).sender);
            }
        }
        None
    })
}

fn classify(e: hyper::Error, ep: &Endpoint) -> UpstreamError {
    // The request body's own error travels up the source chain.
    let mut cause = e.source();
    while let Some(c) = cause {
        match c.downcast_ref::<BodyError>() {
            Some(BodyError::TooLarge { limit }) => {
                return UpstreamError::RequestBodyTooLarge { limit: *limit };
            }
            Some(BodyError::Stream(_)) => return UpstreamError::RequestBodyAborted,
            Some(BodyError::Timeout { after }) => {
                return UpstreamError::RequestBodyTimeout { after: *after };
            }
            None => {}
        }
        cause = c.source();
    }
    UpstreamError::Protocol {
        endpoint: ep.authority.clone(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue, header};

    use super::Forwarding;
    use crate::headers::{X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID};

    fn fields() -> Forwarding {
        Forwarding {
            for_: Some(HeaderValue::from_static("203.0.113.7, 127.0.0.1")),
            proto: Some(HeaderValue::from_static("http")),
            host: None,
            via: Some(HeaderValue::from_static("1.1 switchyard")),
            request_id: Some(HeaderValue::from_static("abc")),
            traceparent: None,
            raw_response: false,
        }
    }

    fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
        h.iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    /// `apply` replaces the client's fields of the set names and adds `via`
    /// after the client's; `unapply` gives back the map as it came, minus
    /// the fields the next try sets again.
    #[test]
    fn apply_then_unapply_leaves_the_request_as_the_next_try_needs_it() {
        let mut h = HeaderMap::new();
        h.append(X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.7"));
        h.append(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.append(header::VIA, HeaderValue::from_static("1.0 edge"));
        h.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        let f = fields();
        f.apply(&mut h);
        assert_eq!(
            h.get_all(X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            ["203.0.113.7, 127.0.0.1"]
        );
        assert_eq!(
            h.get_all(X_FORWARDED_PROTO).iter().collect::<Vec<_>>(),
            ["http"]
        );
        assert_eq!(
            h.get_all(header::VIA).iter().collect::<Vec<_>>(),
            ["1.0 edge", "1.1 switchyard"]
        );
        assert_eq!(h.get(X_REQUEST_ID).unwrap(), "abc");
        f.unapply(&mut h);
        // (The client's `via` may move after other fields: order between
        // different names carries no meaning.)
        let mut left = pairs(&h);
        left.sort();
        assert_eq!(
            left,
            [
                ("accept".to_string(), "*/*".to_string()),
                ("via".to_string(), "1.0 edge".to_string()),
            ]
        );
        // Applied again, as the next try does: one of each, as the first time.
        f.apply(&mut h);
        assert_eq!(h.get_all(header::VIA).iter().count(), 2);
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().count(), 1);

        // No `via` from the client: none left after `unapply`.
        let mut h = HeaderMap::new();
        f.apply(&mut h);
        f.unapply(&mut h);
        assert!(h.is_empty(), "{:?}", pairs(&h));
    }
}
