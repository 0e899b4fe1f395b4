//! Header names the gateway reads or writes, in one place, as statics:
//! the request path compares these, never builds strings. Also the lookup
//! of the few table-configured names (region, client id, API key, canary)
//! the traffic phases read: one pass over the request's headers for all of
//! them ([`TrafficNames::find`]), since each separate lookup is a scan (or
//! a hash) of its own.

use std::cell::RefCell;

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
    let [found] = find_each(headers, [Some(name)]);
    found
}

/// The first value of each of `names` (`None`: not looked for, answered
/// `None`), as [`find`] answers each, in one pass over the request's
/// headers; the pass ends once every name has a value. Beyond
/// [`SCAN_UP_TO`] distinct names each is asked of the map instead. Names
/// compare as the lower-case text of `HeaderName`s (hyper lower-cases what
/// it parses), so the lookup is case-insensitive like HTTP field names.
#[inline]
pub fn find_each<'h, const N: usize>(
    headers: &'h HeaderMap,
    names: [Option<&HeaderName>; N],
) -> [Option<&'h HeaderValue>; N] {
    let mut found = [None; N];
    if headers.keys_len() > SCAN_UP_TO {
        for (f, name) in found.iter_mut().zip(names) {
            *f = name.and_then(|n| headers.get(n));
        }
        return found;
    }
    let wanted = names.map(|n| n.map(HeaderName::as_str));
    // Bit `len % 64` set for each wanted name's length: most of a request's
    // headers have no wanted length, and one test rejects them against all
    // N names (comparing as `HeaderName`s costs a tag, a length and a
    // bounds check per pair: 4 names over 6 headers were ~600 instructions).
    let lengths = wanted
        .iter()
        .flatten()
        .fold(0u64, |m, w| m | 1 << (w.len() % 64));
    let mut missing = wanted.iter().flatten().count();
    for (name, value) in headers {
        let name = name.as_str();
        if lengths & 1 << (name.len() % 64) == 0 {
            continue;
        }
        // `iter` yields a name's further values right after its first:
        // only a slot still empty takes one.
        for (f, w) in found.iter_mut().zip(&wanted) {
            if f.is_none() && *w == Some(name) {
                *f = Some(value);
                missing -= 1;
            }
        }
        if missing == 0 {
            break;
        }
    }
    found
}

/// The names of the headers the traffic phases read on one route, compiled
/// with the table: the calendar's region header (if any), the route's
/// client-id and API-key headers and its canary-override header.
#[derive(Debug, Clone, Default)]
pub struct TrafficNames {
    names: [Option<HeaderName>; 4],
}

/// What one request carries of a route's [`TrafficNames`]: the first value
/// of each.
#[derive(Debug, Clone, Copy, Default)]
pub struct Traffic<'h> {
    /// The region header (season lookup).
    pub region: Option<&'h HeaderValue>,
    /// The client-id header (sticky split, canary allow-list, limits).
    pub client_id: Option<&'h HeaderValue>,
    /// The API-key header (sticky split, limits).
    pub api_key: Option<&'h HeaderValue>,
    /// The canary-override header (split).
    pub canary: Option<&'h HeaderValue>,
}

impl TrafficNames {
    /// The names a route's traffic phases read.
    pub fn new(
        region: Option<HeaderName>,
        client_id: HeaderName,
        api_key: HeaderName,
        canary: HeaderName,
    ) -> TrafficNames {
        TrafficNames {
            names: [region, Some(client_id), Some(api_key), Some(canary)],
        }
    }

    /// Their values in `headers`, in one pass ([`find_each`]).
    #[inline]
    pub fn find<'h>(&self, headers: &'h HeaderMap) -> Traffic<'h> {
        let [region, client_id, api_key, canary] =
            find_each(headers, self.names.each_ref().map(Option::as_ref));
        Traffic {
            region,
            client_id,
            api_key,
            canary,
        }
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

/// One `name: value` line of an HTTP/1.1 head, into `out`.
pub(crate) fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Slots in this thread's cache of parsed header names ([`parse_name`]).
const NAME_SLOTS: usize = 64;

/// Longest name the cache keeps (longer ones are parsed every time).
const NAME_KEY: usize = 30;

/// A cached name and the exact bytes it was parsed from.
struct CachedName {
    len: u8,
    key: [u8; NAME_KEY],
    name: HeaderName,
}

thread_local! {
    static NAMES: RefCell<[Option<CachedName>; NAME_SLOTS]> =
        const { RefCell::new([const { None }; NAME_SLOTS]) };
}

/// `HeaderName::from_bytes`, answered from a small per-thread cache of the
/// names seen last: a connection's requests (and an upstream's responses)
/// repeat the same few names, and parsing one costs about 160
/// instructions (a standard name is matched against the whole list, a
/// custom one validated byte by byte and copied into an allocation of its
/// own). The cache compares the bytes exactly (as sent, in their case) and
/// hands out a clone; a slot is chosen by the name's length and its first
/// and last bytes, and a different name in it is replaced.
pub(crate) fn parse_name(bytes: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return HeaderName::from_bytes(bytes);
    };
    if bytes.len() > NAME_KEY {
        return HeaderName::from_bytes(bytes);
    }
    let slot = (bytes.len() * 7 + usize::from(first) * 3 + usize::from(last)) % NAME_SLOTS;
    let cached = NAMES
        .try_with(|n| {
            n.borrow()[slot]
                .as_ref()
                .filter(|c| &c.key[..usize::from(c.len)] == bytes)
                .map(|c| c.name.clone())
        })
        .ok()
        .flatten();
    if let Some(name) = cached {
        return Ok(name);
    }
    let name = HeaderName::from_bytes(bytes)?;
    let mut key = [0; NAME_KEY];
    key[..bytes.len()].copy_from_slice(bytes);
    let entry = CachedName {
        len: bytes.len() as u8,
        key,
        name: name.clone(),
    };
    let _ = NAMES.try_with(|n| n.borrow_mut()[slot] = Some(entry));
    Ok(name)
}

/// Header maps kept per thread for reuse ([`pooled_map`], [`recycle_map`]):
/// a map's two tables (its index and its entries, a kilobyte or more) are
/// allocated past glibc's per-thread cache, so a request and its response
/// each paid about 300 instructions in `malloc`/`free` for a fresh map. The
/// lean paths take the request's map and the upstream response's from
/// here and give them back once written; maps that leave by other ways are
/// dropped as before.
const POOLED_MAPS: usize = 64;

/// A map that grew past this many fields (a request with hundreds of
/// headers) is dropped, not kept: the pool holds ordinary maps only.
const POOLED_CAPACITY: usize = 96;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `capacity` fields, reused from this
/// thread's pool when it has one.
pub(crate) fn pooled_map(capacity: usize) -> HeaderMap {
    match MAPS.try_with(|m| m.borrow_mut().pop()).ok().flatten() {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Empties `map` (its values dropped) and keeps its tables for
/// [`pooled_map`], up to [`POOLED_MAPS`] per thread.
pub(crate) fn recycle_map(mut map: HeaderMap) {
    let cap = map.capacity();
    if cap == 0 || cap > POOLED_CAPACITY {
        return;
    }
    map.clear();
    let _ = MAPS.try_with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < POOLED_MAPS {
            m.push(map);
        }
    });
}

/// Where a parsed field's name and value lie in the head httparse read them
/// from, as byte ranges (`u32`: heads are far under 4 GiB): the head can
/// then be frozen into `Bytes` once and every value shared from it.
pub(crate) type FieldSpan = (u32, u32, u32, u32);

/// A head's [`FieldSpan`]s, up to `N` (httparse's header limit) inline:
/// unlike an array of `N`, not zeroed before each parse (1.6 KB for 100).
pub(crate) type FieldSpans<const N: usize> = smallvec::SmallVec<[FieldSpan; N]>;

/// The [`FieldSpan`] of each of `fields`, parsed from `head`, into `out`.
pub(crate) fn field_spans<const N: usize>(
    head: &[u8],
    fields: &[httparse::Header<'_>],
    out: &mut FieldSpans<N>,
) {
    out.extend(fields.iter().map(|h| {
        let (name, value) = (span(head, h.name.as_bytes()), span(head, h.value));
        (name.0, name.1, value.0, value.1)
    }));
}

/// The byte range of `part`, a slice of `head`, within it.
pub(crate) fn span(head: &[u8], part: &[u8]) -> (u32, u32) {
    let start = (part.as_ptr() as usize - head.as_ptr() as usize) as u32;
    (start, start + part.len() as u32)
}

/// A `Content-Length` value: digits, or a list of identical ones
/// (`5, 5`, which some intermediaries produce).
pub(crate) fn content_length(v: &[u8]) -> Option<u64> {
    let mut out = None;
    for part in v.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        if out.is_some_and(|o| o != n) {
            return None;
        }
        out = Some(n);
    }
    out
}

/// `s` in lower case: `s` itself when it has no upper-case letter (the
/// common case: no copy), else a copy lowered in `buf`; `None` when that
/// copy does not fit. No allocation per request.
pub(crate) fn ascii_lowercase<'a>(s: &'a str, buf: &'a mut [u8]) -> Option<&'a str> {
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(s);
    }
    let lower = buf.get_mut(..s.len())?;
    lower.copy_from_slice(s.as_bytes());
    lower.make_ascii_lowercase();
    // Lowering ASCII letters keeps the text valid UTF-8.
    std::str::from_utf8(lower).ok()
}

/// Whether a `Connection` value lists `token` (case-insensitive).
pub(crate) fn lists_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cache answers what `from_bytes` answers, for names seen before
    /// or not, in any case, and refuses what it refuses.
    #[test]
    fn parse_name_answers_as_from_bytes() {
        let inputs: [&[u8]; 12] = [
            b"host",
            b"Host",
            b"HOST",
            b"x-api-version",
            b"X-Api-Version",
            b"x-api-version",
            b"x-api-versioN",
            b"content-type",
            b"bad name",
            b"bad\xffname",
            b"",
            b"x_under",
        ];
        for _ in 0..2 {
            for input in inputs {
                let want = HeaderName::from_bytes(input).ok();
                let got = parse_name(input).ok();
                assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
            }
        }
        // Names that share a slot replace each other and stay right.
        for n in 0..200u32 {
            let text = format!("x-n{n}");
            assert_eq!(parse_name(text.as_bytes()).unwrap().as_str(), text);
        }
        assert_eq!(parse_name(b"Host").unwrap(), http::header::HOST);
    }

    fn name(n: &str) -> HeaderName {
        HeaderName::from_bytes(n.as_bytes()).unwrap()
    }

    /// A request's headers, in order; names may be in any case (as a client
    /// sends them; `HeaderName` lower-cases them, as hyper does).
    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(name(n), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    /// The same request with enough other names that `find_each` asks the
    /// map instead of scanning.
    fn padded(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = request(pairs);
        for i in 0..=SCAN_UP_TO {
            h.append(name(&format!("x-pad-{i}")), HeaderValue::from_static("1"));
        }
        h
    }

    #[test]
    fn content_length_accepts_digits_and_identical_lists_only() {
        assert_eq!(content_length(b"42"), Some(42));
        assert_eq!(content_length(b"5, 5"), Some(5));
        assert_eq!(content_length(b"5, 6"), None);
        assert_eq!(content_length(b"-1"), None);
        assert_eq!(content_length(b"+1"), None);
        assert_eq!(content_length(b""), None);
        assert_eq!(content_length(b"99999999999999999999"), None);
    }

    #[test]
    fn find_each_answers_the_first_value_of_each_name() {
        let wanted = [
            Some(name("x-geo")),
            Some(name("x-client-id")),
            None,
            Some(name("x-canary")),
            Some(name("accept")),
        ];
        // (case, request headers, expected values in `wanted` order)
        type Case = (
            &'static str,
            &'static [(&'static str, &'static str)],
            [Option<&'static str>; 5],
        );
        let cases: &[Case] = &[
            ("none present", &[("host", "a")], [None; 5]),
            ("empty request", &[], [None; 5]),
            (
                "all present",
                &[
                    ("host", "a"),
                    ("x-client-id", "c1"),
                    ("accept", "*/*"),
                    ("x-geo", "US"),
                    ("x-canary", "always"),
                ],
                [Some("US"), Some("c1"), None, Some("always"), Some("*/*")],
            ),
            (
                "present twice: the first value",
                &[
                    ("x-geo", "US"),
                    ("x-client-id", "c1"),
                    ("x-geo", "IE"),
                    ("x-client-id", "c2"),
                ],
                [Some("US"), Some("c1"), None, None, None],
            ),
            (
                "names in any case",
                &[("X-Geo", "SG"), ("X-CLIENT-ID", "c3"), ("Accept", "a/b")],
                [Some("SG"), Some("c3"), None, None, Some("a/b")],
            ),
            (
                "a longer or shorter name is another name",
                &[("x-geos", "US"), ("x-client", "c1"), ("x-canary-", "never")],
                [None; 5],
            ),
            (
                "empty value is present",
                &[("x-canary", "")],
                [None, None, None, Some(""), None],
            ),
        ];
        for (case, pairs, want) in cases {
            let names = wanted.each_ref().map(Option::as_ref);
            for (how, h) in [("scan", request(pairs)), ("map", padded(pairs))] {
                let got = find_each(&h, names).map(|v| v.map(|v| v.to_str().unwrap()));
                assert_eq!(&got, want, "case {case} ({how})");
                for (i, n) in names.iter().enumerate() {
                    if let Some(n) = n {
                        assert_eq!(
                            find(&h, n).map(|v| v.to_str().unwrap()),
                            want[i],
                            "case {case} ({how}): find({n}) agrees"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_name_wanted_twice_fills_both_slots() {
        // A route whose canary header is its client-id header (odd, valid).
        let h = request(&[("x-client-id", "c1")]);
        let n = name("x-client-id");
        let got = find_each(&h, [Some(&n), Some(&n)]);
        assert_eq!(got, [h.get("x-client-id"), h.get("x-client-id")]);
    }

    #[test]
    fn traffic_names_fill_their_fields() {
        let names = TrafficNames::new(
            Some(name("x-geo")),
            name("x-client-id"),
            name("x-api-key"),
            name("x-canary"),
        );
        let h = request(&[
            ("x-canary", "always"),
            ("x-api-key", "k1"),
            ("x-client-id", "c1"),
            ("x-geo", "US"),
        ]);
        let t = names.find(&h);
        let s = |v: Option<&HeaderValue>| v.map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(s(t.region).as_deref(), Some("US"));
        assert_eq!(s(t.client_id).as_deref(), Some("c1"));
        assert_eq!(s(t.api_key).as_deref(), Some("k1"));
        assert_eq!(s(t.canary).as_deref(), Some("always"));
        // Without a region header in the calendar, the region is never read.
        let no_region = TrafficNames::new(
            None,
            name("x-client-id"),
            name("x-api-key"),
            name("x-canary"),
        );
        assert!(no_region.find(&h).region.is_none());
        assert!(names.find(&HeaderMap::new()).client_id.is_none());
    }
}
