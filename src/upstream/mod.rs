//! Upstream forwarding: pooled keep-alive clients, endpoints and their
//! in-flight counts, power-of-two-choices endpoint choice, connect and
//! response timeouts, and the mapping of failures to 502/503/504.
//!
//! Clients and endpoint state outlive routing tables: the table compiler
//! asks [`Upstream`] for them (under a mutex, off the request path), so a
//! reload keeps warm connections and in-flight counts.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::{Body, BodyError};

/// The pooled HTTP client type (HTTP/1.1 keep-alive; h2 comes with #7).
pub type HttpClient = Client<HttpConnector, Body>;

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The pool has no endpoint to try.
    #[error("no endpoint available")]
    NoEndpoint,
    /// TCP connect failed (refused, unreachable).
    #[error("connect to {endpoint} failed")]
    Connect {
        /// The endpoint tried.
        endpoint: Authority,
        /// The cause.
        #[source]
        source: hyper_util::client::legacy::Error,
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
    /// The upstream broke the exchange (reset, malformed response).
    #[error("{endpoint} failed mid-exchange")]
    Protocol {
        /// The endpoint tried.
        endpoint: Authority,
        /// The cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
}

impl UpstreamError {
    /// 502 for a broken upstream, 503 for none available, 504 for a slow one,
    /// 4xx when the client's own body was at fault.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. } | Self::Protocol { .. } => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout { .. } | Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::RequestBodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestBodyAborted => StatusCode::BAD_REQUEST,
        }
    }

    /// Stable slug for problem `type` and metrics.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoEndpoint => "no-upstream-endpoint",
            Self::Connect { .. } => "upstream-connect-failed",
            Self::ConnectTimeout { .. } => "upstream-connect-timeout",
            Self::Timeout { .. } => "upstream-timeout",
            Self::Protocol { .. } => "upstream-protocol-error",
            Self::RequestBodyTooLarge { .. } => "body-too-large",
            Self::RequestBodyAborted => "request-body-aborted",
        }
    }
}

/// One upstream endpoint and its live in-flight count (shared across tables).
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`.
    pub authority: Authority,
    /// `Host` value for `host_header = "endpoint"`.
    pub host_value: HeaderValue,
    inflight: AtomicU32,
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
}

impl Pool {
    /// Power of two choices on in-flight count: two random endpoints, the
    /// less busy wins. Near-optimal balance without a global scan or lock.
    pub fn choose(&self) -> Option<&Arc<Endpoint>> {
        match self.endpoints.len() {
            0 => None,
            1 => self.endpoints.first(),
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (ea, eb) = (&self.endpoints[a], &self.endpoints[b]);
                Some(if eb.inflight() < ea.inflight() {
                    eb
                } else {
                    ea
                })
            }
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
}

/// Long-lived upstream resources: one pooled client per connect timeout,
/// endpoint state by address.
#[derive(Debug, Default)]
pub struct Upstream {
    clients: Mutex<HashMap<Duration, HttpClient>>,
    endpoints: Mutex<HashMap<String, Arc<Endpoint>>>,
}

impl Upstream {
    /// The pooled client for a connect timeout (created on first use by the
    /// table compiler, then shared).
    pub fn client(&self, connect_timeout: Duration) -> HttpClient {
        let mut clients = self.clients.lock().expect("upstream registry poisoned");
        clients
            .entry(connect_timeout)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(connect_timeout));
                connector.set_keepalive(Some(Duration::from_secs(60)));
                Client::builder(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .pool_timer(TokioTimer::new())
                    // 90 s: longer than the typical upstream keep-alive would
                    // race it; hyper retries a request on a connection the
                    // upstream closed while idle.
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_max_idle_per_host(1024)
                    .build(connector)
            })
            .clone()
    }

    /// The shared state of endpoint `host:port` (validated).
    pub fn endpoint(&self, addr: &str) -> Arc<Endpoint> {
        let mut eps = self.endpoints.lock().expect("upstream registry poisoned");
        eps.entry(addr.to_string())
            .or_insert_with(|| {
                Arc::new(Endpoint {
                    authority: addr.parse().expect("validated endpoint"),
                    host_value: HeaderValue::from_str(addr).expect("validated endpoint"),
                    inflight: AtomicU32::new(0),
                })
            })
            .clone()
    }

    /// Forwards `req` (whose URI carries the path and query to send) to an
    /// endpoint of `pool`. The body streams; if it fails mid-way the
    /// upstream request is aborted, never completed short.
    pub async fn forward(
        client: &HttpClient,
        pool: &Pool,
        mut req: Request<Body>,
        timeouts: Timeouts,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let ep = pool.choose().ok_or(UpstreamError::NoEndpoint)?;
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(ep.authority.clone());
        parts.path_and_query = Some(pq);
        let client_authority = req.uri().authority().cloned();
        *req.uri_mut() = Uri::from_parts(parts).expect("scheme, authority and path are set");
        // Upstreams speak HTTP/1.1 here whatever the client used.
        *req.version_mut() = http::Version::HTTP_11;
        match &pool.host {
            HostRewrite::Preserve => {
                if !req.headers().contains_key(http::header::HOST)
                    && let Some(a) = client_authority
                    && let Ok(v) = HeaderValue::from_str(a.as_str())
                {
                    req.headers_mut().insert(http::header::HOST, v);
                }
            }
            HostRewrite::Endpoint => {
                req.headers_mut()
                    .insert(http::header::HOST, ep.host_value.clone());
            }
            HostRewrite::Fixed(v) => {
                req.headers_mut().insert(http::header::HOST, v.clone());
            }
        }

        ep.inflight.fetch_add(1, Ordering::Relaxed);
        let _guard = InflightGuard(ep);
        match tokio::time::timeout(timeouts.response, client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(e, ep, timeouts)),
            Err(_) => Err(UpstreamError::Timeout {
                endpoint: ep.authority.clone(),
                after: timeouts.response,
            }),
        }
    }
}

fn classify(
    e: hyper_util::client::legacy::Error,
    ep: &Endpoint,
    timeouts: Timeouts,
) -> UpstreamError {
    // The request body's own error and the connector's timeout travel up
    // the source chain.
    let mut cause = e.source();
    while let Some(c) = cause {
        match c.downcast_ref::<BodyError>() {
            Some(BodyError::TooLarge { limit }) => {
                return UpstreamError::RequestBodyTooLarge { limit: *limit };
            }
            Some(BodyError::Stream(_)) => return UpstreamError::RequestBodyAborted,
            None => {}
        }
        if e.is_connect()
            && c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return UpstreamError::ConnectTimeout {
                endpoint: ep.authority.clone(),
                after: timeouts.connect,
            };
        }
        cause = c.source();
    }
    let endpoint = ep.authority.clone();
    if e.is_connect() {
        UpstreamError::Connect {
            endpoint,
            source: e,
        }
    } else {
        UpstreamError::Protocol {
            endpoint,
            source: e,
        }
    }
}
