//! Header names the gateway reads or writes, in one place, as statics:
//! the request path compares these, never builds strings.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Most distinct header names a request may carry for [`find`] to scan
/// them rather than ask the map.
pub const SCAN_UP_TO: usize = 16;

/// The first value of header `name`, as `HeaderMap::get` answers, for the
/// names the table compiled (client id, canary, region...). `get` hashes
/// the name on every call (FNV, one multiply per byte over its variant tag,
/// length and bytes: about 30 ns for `x-client-id`); comparing the names a
/// request carries (standard ones by tag, others by length and then bytes)
/// costs a few ns each, so up to [`SCAN_UP_TO`] names a scan is cheaper.
#[inline]
pub fn find<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    if headers.keys_len() <= SCAN_UP_TO {
        headers.iter().find(|&(n, _)| n == name).map(|(_, v)| v)
    } else {
        headers.get(name)
    }
}

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
