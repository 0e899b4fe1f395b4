//! W3C Trace Context (`traceparent`, `tracestate`): continue the client's
//! trace or start a new one, and give the upstream a `traceparent` whose
//! parent is this hop. Owns parsing and id generation; the pipeline decides
//! where the ids go (upstream headers, the access log, problem bodies).
//!
//! No spans are exported: the gateway is a hop that keeps a trace connected
//! and makes a client's error report findable by its trace id. An OTLP
//! exporter (a cargo feature, later) would hang off the same ids.
//!
//! Invariant: every id held here is lowercase hex of the right length and not
//! all zeros, so rendering a header value cannot fail.

use http::{HeaderMap, HeaderValue};

use crate::headers::{TRACEPARENT, TRACESTATE};

/// The trace a request belongs to and this hop's span in it, as lowercase
/// hex bytes (no allocation: the context lives in `RequestContext`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 32],
    span_id: [u8; 16],
    flags: [u8; 2],
    /// Whether the client sent a valid `traceparent` (its `tracestate` is
    /// then forwarded; otherwise `tracestate` is dropped, as the spec asks).
    pub continued: bool,
    /// Whether the client sent a `tracestate`, which a new trace drops
    /// (`remove` hashes the name even when it is absent).
    state: bool,
}

impl TraceContext {
    /// Continues the trace named by a valid `traceparent` in `h`, or starts
    /// a new one (random trace id, sampled flag set: the gateway records
    /// every request in its access log). Either way this hop gets a new
    /// random span id.
    pub fn from_headers(h: &HeaderMap) -> TraceContext {
        let [parent, state] = crate::headers::find_each(h, [Some(&TRACEPARENT), Some(&TRACESTATE)]);
        TraceContext::from_values(parent, state.is_some())
    }

    /// [`TraceContext::from_headers`] from the request's first
    /// `traceparent` and whether it has a `tracestate`, when the caller has
    /// looked them up already.
    pub fn from_values(traceparent: Option<&HeaderValue>, tracestate: bool) -> TraceContext {
        let span_id = hex(u128::from(nonzero(|| fastrand::u64(..))));
        match traceparent.and_then(|v| parse(v.as_bytes())) {
            Some((trace_id, flags)) => TraceContext {
                trace_id,
                span_id,
                flags,
                continued: true,
                state: tracestate,
            },
            None => TraceContext {
                trace_id: hex(nonzero(|| fastrand::u128(..))),
                span_id,
                flags: *b"01",
                continued: false,
                state: tracestate,
            },
        }
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.trace_id).expect("hex digits")
    }

    /// The 16-hex-digit id of this hop's span (the upstream's parent).
    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.span_id).expect("hex digits")
    }

    /// `00-<trace id>-<span id>-<flags>`, for the upstream request.
    pub fn traceparent(&self) -> HeaderValue {
        let mut buf = [0u8; 55];
        buf[..3].copy_from_slice(b"00-");
        buf[3..35].copy_from_slice(&self.trace_id);
        buf[35] = b'-';
        buf[36..52].copy_from_slice(&self.span_id);
        buf[52] = b'-';
        buf[53..].copy_from_slice(&self.flags);
        // Owned by its `Bytes`: one allocation, no copy.
        HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
            .expect("hex digits and dashes")
    }

    /// The upstream request's `traceparent` (which replaces the client's);
    /// keeps the client's `tracestate` in `h` only when its trace is
    /// continued.
    pub fn propagate(&self, h: &mut HeaderMap) -> HeaderValue {
        // Only the client's `tracestate` can be here (propagation comes
        // before any change renames a header).
        if !self.continued && self.state {
            h.remove(TRACESTATE);
        }
        self.traceparent()
    }
}

/// Parses `version-traceid-parentid-flags` (W3C Trace Context level 1, §3.2).
/// Version `ff` and all-zero ids are invalid; a version above `00` may carry
/// more fields after the flags, which are ignored (we answer as version 00).
fn parse(v: &[u8]) -> Option<([u8; 32], [u8; 2])> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let (version, trace, parent, flags) = (&v[..2], &v[3..35], &v[36..52], &v[53..55]);
    let lower_hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !(lower_hex(version) && lower_hex(trace) && lower_hex(parent) && lower_hex(flags)) {
        return None;
    }
    if version == b"ff" || (version == b"00" && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if trace.iter().all(|&b| b == b'0') || parent.iter().all(|&b| b == b'0') {
        return None;
    }
    let mut t = [0u8; 32];
    t.copy_from_slice(trace);
    Some((t, [flags[0], flags[1]]))
}

/// A random id other than zero (the spec's invalid id). A full-range draw
/// retried on zero: a range such as `1..` makes fastrand reduce a 128-bit
/// product for every draw (~100 instructions), to avoid a 2^-128 event.
fn nonzero<T: PartialEq + Default>(draw: impl Fn() -> T) -> T {
    loop {
        let v = draw();
        if v != T::default() {
            return v;
        }
    }
}

/// The low `4 * N` bits of `n` as `N` lowercase hex digits.
#[inline]
pub(crate) fn hex<const N: usize>(n: u128) -> [u8; N] {
    const { assert!(N.is_multiple_of(2) && N <= 32, "whole bytes of a u128") };
    // Eight digits at a time in a u64 (see `hex8`): a byte-at-a-time table
    // lookup was ~3 instructions a digit, 144 of them for a request's ids.
    let mut all = [0u8; 32];
    for (i, eight) in all.chunks_exact_mut(8).enumerate() {
        let word = (n >> (96 - 32 * i)) as u32;
        eight.copy_from_slice(&hex8(word).to_be_bytes());
    }
    let mut out = [0u8; N];
    out.copy_from_slice(&all[32 - N..]);
    out
}

/// `x` as eight lowercase hex digits, most significant first, in the bytes
/// of a big-endian u64.
#[inline]
fn hex8(x: u32) -> u64 {
    // Spread the nibbles one to a byte: 0x1234_5678 -> 0x0102_0304_0506_0708.
    let mut v = u64::from(x);
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    // 1 in each byte whose nibble is 10 or more (n + 6 carries into bit 4,
    // never out of the byte), which then goes from '0'+n to 'a'+n-10.
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    v + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn ctx(traceparent: Option<&str>) -> TraceContext {
        let mut h = HeaderMap::new();
        if let Some(tp) = traceparent {
            h.insert(TRACEPARENT, HeaderValue::from_str(tp).unwrap());
        }
        TraceContext::from_headers(&h)
    }

    #[test]
    fn hex_digits_most_significant_first() {
        assert_eq!(&hex::<16>(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(&hex::<4>(0xbeef_00ff), b"00ff");
        assert_eq!(
            &hex::<32>(u128::MAX - 1),
            b"fffffffffffffffffffffffffffffffe"
        );
        // Every nibble value in every position, against `format!`.
        let mut values = vec![
            0,
            1,
            9,
            10,
            15,
            16,
            u128::MAX,
            0x0123_4567_89ab_cdef_fedc_ba98_7654_3210,
        ];
        values.extend((0..16u128).map(|d| d * 0x1111_1111_1111_1111_1111_1111_1111_1111));
        values.extend((0..10_000).map(|_| fastrand::u128(..)));
        for n in values {
            assert_eq!(&hex::<32>(n)[..], format!("{n:032x}").as_bytes());
            assert_eq!(&hex::<16>(n)[..], format!("{:016x}", n as u64).as_bytes());
            assert_eq!(&hex::<2>(n)[..], format!("{:02x}", n as u8).as_bytes());
        }
    }

    #[test]
    fn traceparent_cases() {
        let extra = format!("{VALID}-x");
        // (name, header, continued)
        let cases = [
            ("valid", Some(VALID), true),
            ("absent", None, false),
            (
                "upper-case hex",
                Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
                false,
            ),
            (
                "zero trace id",
                Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
                false,
            ),
            (
                "zero parent id",
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
                false,
            ),
            (
                "version ff",
                Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                false,
            ),
            ("version 00 with extra", Some(extra.as_str()), false),
            (
                "future version with extra field",
                Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-abc"),
                true,
            ),
            ("short", Some("00-4bf92f35-00f067aa0ba902b7-01"), false),
            ("garbage", Some("hello"), false),
        ];
        for (name, header, continued) in cases {
            let c = ctx(header);
            assert_eq!(c.continued, continued, "{name}");
            if continued {
                assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736", "{name}");
            }
            let tp = c.traceparent();
            let tp = tp.to_str().unwrap();
            assert!(parse(tp.as_bytes()).is_some(), "{name}: rendered {tp}");
            assert_eq!(&tp[3..35], c.trace_id(), "{name}");
            assert_ne!(&tp[36..52], "00f067aa0ba902b7", "{name}: a new span id");
        }
    }

    #[test]
    fn new_traces_differ_and_keep_flags() {
        let (a, b) = (ctx(None), ctx(None));
        assert_ne!(a.trace_id(), b.trace_id());
        assert!(a.traceparent().to_str().unwrap().ends_with("-01"));
        let sampled_off = ctx(Some(VALID.replace("-01", "-00").as_str()));
        assert!(sampled_off.traceparent().to_str().unwrap().ends_with("-00"));
    }

    #[test]
    fn tracestate_only_follows_a_continued_trace() {
        // The context is read from the request the headers are forwarded
        // from, as the pipeline does.
        let mut h = HeaderMap::new();
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        let _ = TraceContext::from_headers(&h).propagate(&mut h);
        assert!(h.get(TRACESTATE).is_none());
        let mut h = HeaderMap::new();
        h.insert(TRACESTATE, HeaderValue::from_static("vendor=1"));
        h.insert(TRACEPARENT, HeaderValue::from_static(VALID));
        let parent = TraceContext::from_headers(&h).propagate(&mut h);
        assert_eq!(h.get(TRACESTATE).unwrap(), "vendor=1");
        assert_eq!(&parent.to_str().unwrap()[..35], &VALID[..35]);
    }
}
