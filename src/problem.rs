//! `GatewayError` and its rendering as `application/problem+json` (RFC 9457).
//! The only place a status code is chosen for a failure.

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};
use serde_json::json;

use crate::body::Body;
use crate::config::Source;
use crate::translate::TranslateError;
use crate::upstream::UpstreamError;

/// Base of the `type` URIs of our problems.
const TYPE_BASE: &str = "https://switchyard.dev/problems/";

/// Everything the pipeline can answer instead of a proxied response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The client named a version that does not resolve.
    #[error("API version {requested:?} from {} is not supported", detected_by.as_str())]
    UnknownVersion {
        /// What the client sent.
        requested: String,
        /// Which detection source carried it.
        detected_by: Source,
        /// Whether it was malformed rather than merely unknown.
        malformed: bool,
        /// The versions the route serves.
        supported: Arc<[String]>,
    },
    /// The version is past its sunset.
    #[error("API version {version} is sunset; use {successor}")]
    Sunset {
        /// The sunset version.
        version: Arc<str>,
        /// Its successor.
        successor: Arc<str>,
        /// The migration guide.
        doc_url: Option<Arc<str>>,
    },
    /// A restricted (beta) version requested by a client not on its allow-list.
    #[error("API version {version} is restricted to listed clients")]
    VersionRestricted {
        /// The restricted version.
        version: Arc<str>,
    },
    /// A rate-limit policy refused the request.
    #[error("rate limit {:?} exceeded; retry after {} s", .0.policy, .0.retry_after)]
    RateLimited(Box<crate::limit::Denied>),
    /// No route matches host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// No routing table has been loaded yet.
    #[error("no routing table loaded")]
    NotReady,
    /// A listener limit is reached; the request is shed.
    #[error("overloaded: {limit} limit of {max} reached on this listener")]
    Overloaded {
        /// Which limit: `connections` or `requests in flight`.
        limit: &'static str,
        /// Its configured value.
        max: usize,
    },
    /// The request breaks a framing or hygiene rule.
    #[error("bad request: {reason}")]
    BadRequest {
        /// What was wrong.
        reason: &'static str,
    },
    /// Request head too large.
    #[error("request headers too large: {reason}")]
    HeadersTooLarge {
        /// Which limit.
        reason: String,
    },
    /// Request URI too long.
    #[error("request URI is {len} bytes, limit {limit}")]
    UriTooLong {
        /// Actual length.
        len: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Request body too large.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// Configured limit.
        limit: u64,
    },
    /// The client did not finish sending its request head in time
    /// (slowloris); written by the connection itself, which then closes.
    #[error("the request head did not arrive within {after:?}")]
    HeaderTimeout {
        /// The header read timeout.
        after: std::time::Duration,
    },
    /// The client stopped sending its request body mid-way (while the
    /// gateway buffered it).
    #[error("no request body data for {after:?}")]
    BodyTimeout {
        /// The body read timeout.
        after: std::time::Duration,
    },
    /// The request body could not be translated to the target version
    /// (invalid JSON, duplicate key, too deep, too large, or a change refused it).
    #[error("request cannot be translated from {from} to {to}: {source}")]
    RequestTranslation {
        /// Client version.
        from: Arc<str>,
        /// Target version.
        to: Arc<str>,
        /// Why.
        #[source]
        source: TranslateError,
    },
    /// The upstream's response could not be translated back.
    #[error("upstream response cannot be translated from {from} to {to}: {source}")]
    ResponseTranslation {
        /// Target (pool) version.
        from: Arc<str>,
        /// Client version.
        to: Arc<str>,
        /// Why.
        #[source]
        source: TranslateError,
    },
    /// Forwarding failed.
    #[error("upstream pool {pool} failed: {source}")]
    Upstream {
        /// The pool.
        pool: Arc<str>,
        /// Why.
        #[source]
        source: UpstreamError,
    },
}

impl GatewayError {
    /// The status a client sees.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownVersion { .. } | Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Sunset { .. } => StatusCode::GONE,
            Self::VersionRestricted { .. } => StatusCode::FORBIDDEN,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::NotReady | Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout { .. } | Self::HeaderTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::RequestTranslation {
                source: TranslateError::TooLarge { .. },
                ..
            } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTranslation { .. } => StatusCode::BAD_REQUEST,
            Self::ResponseTranslation { .. } => StatusCode::BAD_GATEWAY,
            Self::Upstream { source, .. } => source.status(),
        }
    }

    /// Short stable slug for `type` and metrics.
    #[deny(clippy::wildcard_enum_match_arm)]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownVersion {
                malformed: true, ..
            } => "malformed-version",
            Self::UnknownVersion {
                malformed: false, ..
            } => "unknown-version",
            Self::Sunset { .. } => "version-sunset",
            Self::VersionRestricted { .. } => "version-restricted",
            Self::RateLimited(_) => "rate-limited",
            Self::NoRoute => "no-route",
            Self::NotReady => "not-ready",
            Self::Overloaded { .. } => "overloaded",
            Self::BadRequest { .. } => "bad-request",
            Self::HeadersTooLarge { .. } => "headers-too-large",
            Self::UriTooLong { .. } => "uri-too-long",
            Self::BodyTooLarge { .. } => "body-too-large",
            Self::BodyTimeout { .. } => "request-body-timeout",
            Self::HeaderTimeout { .. } => "request-header-timeout",
            Self::RequestTranslation {
                source: TranslateError::TooLarge { .. },
                ..
            } => "body-too-large",
            Self::RequestTranslation { .. } => "request-not-translatable",
            Self::ResponseTranslation { .. } => "response-not-translatable",
            Self::Upstream { source, .. } => source.kind(),
        }
    }

    /// The problem+json response as HTTP/1.1 bytes, for an answer the
    /// connection writes itself, outside hyper (the header timeout).
    pub fn to_http1_bytes(&self) -> Vec<u8> {
        let resp = self.to_response(None);
        let body = resp.body().buffered().cloned().unwrap_or_default();
        let status = resp.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        )
        .into_bytes();
        for (name, value) in resp.headers() {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Renders the problem+json response. `request_id` goes in the body so a
    /// client's report can be found in our logs.
    pub fn to_response(&self, request_id: Option<&HeaderValue>) -> Response<Body> {
        self.to_response_traced(request_id, None)
    }

    /// [`GatewayError::to_response`] with the W3C trace id in the body too
    /// (`trace_id`), so a client's report leads to the trace and the access log.
    pub fn to_response_traced(
        &self,
        request_id: Option<&HeaderValue>,
        trace_id: Option<&str>,
    ) -> Response<Body> {
        let status = self.status();
        let mut body = json!({
            "type": format!("{TYPE_BASE}{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        let obj = body.as_object_mut().expect("object literal");
        if let Some(id) = request_id.and_then(|v| v.to_str().ok()) {
            obj.insert("request_id".into(), id.into());
        }
        if let Some(id) = trace_id {
            obj.insert("trace_id".into(), id.into());
        }
        match self {
            Self::UnknownVersion {
                supported,
                requested,
                detected_by,
                ..
            } => {
                obj.insert("requested".into(), requested.as_str().into());
                obj.insert("source".into(), detected_by.as_str().into());
                obj.insert("supported".into(), json!(&**supported));
            }
            Self::Sunset {
                version,
                successor,
                doc_url,
            } => {
                obj.insert("version".into(), (&**version).into());
                obj.insert("successor".into(), (&**successor).into());
                if let Some(url) = doc_url {
                    obj.insert("migration_guide".into(), (&**url).into());
                }
            }
            Self::VersionRestricted { version } => {
                obj.insert("version".into(), (&**version).into());
            }
            Self::Upstream { pool, .. } => {
                obj.insert("pool".into(), (&**pool).into());
            }
            Self::RateLimited(denied) => {
                obj.insert("policy".into(), (&*denied.policy).into());
                obj.insert("retry_after".into(), denied.retry_after.into());
            }
            Self::RequestTranslation { from, to, source }
            | Self::ResponseTranslation { from, to, source } => {
                obj.insert("from_version".into(), (&**from).into());
                obj.insert("to_version".into(), (&**to).into());
                obj.insert("reason".into(), source.kind().into());
            }
            Self::NoRoute
            | Self::NotReady
            | Self::Overloaded { .. }
            | Self::BadRequest { .. }
            | Self::HeadersTooLarge { .. }
            | Self::UriTooLong { .. }
            | Self::BodyTooLarge { .. }
            | Self::BodyTimeout { .. }
            | Self::HeaderTimeout { .. } => {}
        }
        let mut resp = Response::new(Body::full(body.to_string()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(id) = request_id {
            h.insert(crate::headers::X_REQUEST_ID, id.clone());
        }
        // The rest of a stalled body may still arrive: this connection
        // cannot carry another request.
        if status == StatusCode::REQUEST_TIMEOUT {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(status, StatusCode::SERVICE_UNAVAILABLE) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::RateLimited(denied) = self {
            h.insert(header::RETRY_AFTER, HeaderValue::from(denied.retry_after));
            h.insert(
                crate::headers::RATELIMIT_POLICY,
                denied.headers.policy.clone(),
            );
            // Sensitive: h2 sends it as a never-indexed literal (see
            // `Gateway::finish`).
            let mut limit = denied.headers.limit.clone();
            limit.set_sensitive(true);
            h.insert(crate::headers::RATELIMIT, limit);
        }
        resp
    }
}
