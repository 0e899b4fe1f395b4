//! Header names the gateway reads or writes, in one place, as statics:
//! the request path compares these, never builds strings.

use http::HeaderName;

/// Request id, propagated or generated.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Echo of the client's resolved version.
pub const X_API_VERSION: HeaderName = HeaderName::from_static("x-api-version");
/// Which detection source decided the version.
pub const X_API_VERSION_SOURCE: HeaderName = HeaderName::from_static("x-api-version-source");
/// The version of the pool that served the request.
pub const X_API_VERSION_SERVED: HeaderName = HeaderName::from_static("x-api-version-served");
/// Client address chain.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// Host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// RFC 9745 deprecation date.
pub const DEPRECATION: HeaderName = HeaderName::from_static("deprecation");
/// RFC 8594 sunset date.
pub const SUNSET: HeaderName = HeaderName::from_static("sunset");
/// Pre-RFC 7230 hop-by-hop header some clients still send.
pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// Non-standard hop-by-hop header.
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
/// IETF draft (httpapi-ratelimit-headers): the quota policies of a route.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// IETF draft (httpapi-ratelimit-headers): remaining quota and reset.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// W3C Trace Context: the trace and the caller's span.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// W3C Trace Context: vendor-specific trace state, forwarded untouched.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Response cache outcome: `HIT`, `MISS` or `STALE`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
