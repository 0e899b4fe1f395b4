//! Bodies in and out: a strict JSON parser (duplicate keys and excessive
//! nesting are errors, not last-one-wins or a stack overflow), the
//! serialiser, and the header rules around a rewritten body.
//!
//! Numbers are exact: serde_json's `arbitrary_precision` feature (enabled in
//! Cargo.toml for this reason) keeps each number as the text it was written
//! in, so `12345678901234567890123` and `1e-400` come back byte for byte
//! (only an exponent's `E` comes back as `e`).
//! Object keys come back sorted (serde_json's map without `preserve_order`);
//! JSON objects are unordered, and a translated body is a new body anyway.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::TranslateError;

/// Body limits for translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body buffered for translation, in bytes. Default 1 MiB.
    pub max_bytes: u64,
    /// Deepest nesting of arrays and objects (the top-level value is depth
    /// 1). Default 64; at most [`MAX_DEPTH`].
    pub max_depth: usize,
}

/// Default byte limit: 1 MiB, well above our partners' largest JSON
/// payloads (guest lists of a few hundred entries are ~200 KiB).
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
/// Default nesting limit: real API bodies stay under 16 levels; 64 leaves
/// room without letting a hostile body cost much.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Highest nesting limit that can be configured: serde_json's own recursion
/// guard stops at 128 levels.
pub const MAX_DEPTH: usize = 127;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: DEFAULT_MAX_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// serde_json's marker for a number under `arbitrary_precision`: it hands
/// numbers to a visitor as a one-entry map with this key and the digits.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Parses a JSON body strictly.
///
/// Errors: [`TranslateError::TooLarge`] past `limits.max_bytes`,
/// [`TranslateError::TooDeep`] past `limits.max_depth` (checked while
/// parsing, so a 10,000-deep body costs 65 levels of work),
/// [`TranslateError::DuplicateKey`] with the JSON pointer of the repeated
/// key, [`TranslateError::InvalidJson`] with line and column otherwise
/// (trailing data, bad UTF-8, an empty body).
pub fn parse_json(bytes: &[u8], limits: Limits) -> Result<Value, TranslateError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(TranslateError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let max_depth = limits.max_depth.min(MAX_DEPTH);
    let failure = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Node {
        depth: 1,
        max_depth,
        failure: &failure,
    };
    let result = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match result {
        Ok(v) => Ok(v),
        Err(e) => Err(match failure.into_inner() {
            Some(Failure {
                kind: FailureKind::Duplicate,
                mut path,
            }) => {
                path.reverse();
                TranslateError::DuplicateKey {
                    path: path.concat(),
                }
            }
            Some(Failure {
                kind: FailureKind::TooDeep,
                ..
            }) => TranslateError::TooDeep { limit: max_depth },
            None => invalid(&e),
        }),
    }
}

fn invalid(e: &serde_json::Error) -> TranslateError {
    // serde_json's Display appends " at line L column C"; we carry those as
    // fields, so keep only the reason.
    let shown = e.to_string();
    let reason = match shown.rfind(" at line ") {
        Some(i) => shown[..i].to_string(),
        None => shown,
    };
    TranslateError::InvalidJson {
        line: e.line(),
        column: e.column(),
        reason,
    }
}

/// Serialises a body; numbers come out exactly as they went in.
pub fn to_bytes(body: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(body).expect("a Value with string keys always serialises"))
}

/// Whether a `Content-Type` is JSON: `application/json` or
/// `application/<anything>+json`, any parameters, any case.
pub fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(text) = content_type.to_str() else {
        return false;
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || (sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json")))
}

/// Whether a message's headers say its body is JSON.
pub fn has_json_body(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(is_json)
}

/// Fixes the representation headers of a message whose body was rewritten:
/// a new `Content-Length`, and no validator or digest of the old bytes
/// (`ETag`, `Content-MD5`, `Digest`, `Content-Digest`, `Repr-Digest`), nor
/// `Transfer-Encoding` (the new body has a length).
pub fn set_body_headers(headers: &mut HeaderMap, body_len: usize) {
    for name in [
        header::ETAG,
        header::TRANSFER_ENCODING,
        HeaderName::from_static("content-md5"),
        HeaderName::from_static("digest"),
        HeaderName::from_static("content-digest"),
        HeaderName::from_static("repr-digest"),
    ] {
        headers.remove(name);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
}

use http::HeaderName;

#[derive(Debug)]
enum FailureKind {
    Duplicate,
    TooDeep,
}

/// A structured parse failure, recorded beside serde's stringly error. The
/// path is collected while unwinding (innermost segment first), so a body
/// that parses costs nothing for it.
#[derive(Debug)]
struct Failure {
    kind: FailureKind,
    path: Vec<String>,
}

/// Seed for one value at a known depth.
#[derive(Clone, Copy)]
struct Node<'f> {
    depth: usize,
    max_depth: usize,
    failure: &'f RefCell<Option<Failure>>,
}

impl Node<'_> {
    fn child(self) -> Self {
        Node {
            depth: self.depth + 1,
            ..self
        }
    }

    fn fail<E: de::Error>(&self, kind: FailureKind) -> E {
        *self.failure.borrow_mut() = Some(Failure {
            kind,
            path: Vec::new(),
        });
        E::custom("translate: rejected body")
    }

    /// Notes the segment an error came through, for the failure's path.
    fn through(&self, segment: impl FnOnce() -> String) {
        if let Some(f) = self.failure.borrow_mut().as_mut() {
            f.path.push(segment());
        }
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth > self.max_depth {
            Err(self.fail(FailureKind::TooDeep))
        } else {
            Ok(())
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            match seq.next_element_seed(self.child()) {
                Ok(Some(v)) => items.push(v),
                Ok(None) => break,
                Err(e) => {
                    self.through(|| format!("/{}", items.len()));
                    return Err(e);
                }
            }
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let Some(first) = access.next_key::<String>()? else {
            self.enter()?;
            return Ok(Value::Object(Map::new()));
        };
        if first == NUMBER_TOKEN {
            let digits: String = access.next_value()?;
            return Number::from_str(&digits)
                .map(Value::Number)
                .map_err(de::Error::custom);
        }
        self.enter()?;
        let mut map = Map::new();
        let mut key = first;
        loop {
            let value = match access.next_value_seed(self.child()) {
                Ok(v) => v,
                Err(e) => {
                    self.through(|| format!("/{}", escape(&key)));
                    return Err(e);
                }
            };
            if map.contains_key(&key) {
                let e = self.fail(FailureKind::Duplicate);
                self.through(|| format!("/{}", escape(&key)));
                return Err(e);
            }
            map.insert(key, value);
            match access.next_key::<String>()? {
                Some(k) => key = k,
                None => break,
            }
        }
        Ok(Value::Object(map))
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(text: &str) -> Result<Value, TranslateError> {
        parse_json(text.as_bytes(), Limits::default())
    }

    #[test]
    fn numbers_pass_through_exactly() {
        for text in [
            "12345678901234567890123",
            "-12345678901234567890123",
            "1e-400",
            "0.1000000000000000055511151231257827",
            "-0",
            "1.50",
            "18446744073709551616",
        ] {
            let body = format!(r#"{{"n":{text},"a":[{text}]}}"#);
            let v = strict(&body).unwrap();
            assert_eq!(
                to_bytes(&v),
                Bytes::from(format!(r#"{{"a":[{text}],"n":{text}}}"#)),
                "{text}"
            );
        }
    }

    #[test]
    fn exponent_marker_comes_out_lower_case() {
        // serde_json normalises `E` to `e`; the digits stay exact.
        let v = strict("[1E+5,2E-400]").unwrap();
        assert_eq!(to_bytes(&v), Bytes::from_static(b"[1e+5,2e-400]"));
    }

    #[test]
    fn parse_error_cases() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let deep_obj = r#"{"a":"#.repeat(65) + "1" + &"}".repeat(65);
        let ok_depth = "[".repeat(64) + &"]".repeat(64);
        let cases: Vec<(&str, &str, Result<(), TranslateError>)> = vec![
            ("fine", r#"{"a":[1,{"b":null}]}"#, Ok(())),
            ("64 levels are allowed", &ok_depth, Ok(())),
            (
                "10,000 levels",
                &deep,
                Err(TranslateError::TooDeep { limit: 64 }),
            ),
            (
                "65 objects",
                &deep_obj,
                Err(TranslateError::TooDeep { limit: 64 }),
            ),
            (
                "duplicate at the top",
                r#"{"a":1,"a":2}"#,
                Err(TranslateError::DuplicateKey { path: "/a".into() }),
            ),
            (
                "duplicate deep, escaped",
                r#"{"x":[0,{"a/b":1,"a/b":2}]}"#,
                Err(TranslateError::DuplicateKey {
                    path: "/x/1/a~1b".into(),
                }),
            ),
            (
                "trailing data",
                "{} {}",
                Err(TranslateError::InvalidJson {
                    line: 1,
                    column: 4,
                    reason: "trailing characters".into(),
                }),
            ),
            (
                "empty",
                "",
                Err(TranslateError::InvalidJson {
                    line: 1,
                    column: 0,
                    reason: "EOF while parsing a value".into(),
                }),
            ),
            (
                "second line",
                "{\n\"a\": tru}",
                Err(TranslateError::InvalidJson {
                    line: 2,
                    column: 9,
                    reason: "expected ident".into(),
                }),
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(strict(text).map(|_| ()), want, "{name}");
        }
    }

    #[test]
    fn too_large_is_checked_before_parsing() {
        let limits = Limits {
            max_bytes: 4,
            ..Limits::default()
        };
        assert_eq!(
            parse_json(b"[1,2,3]", limits),
            Err(TranslateError::TooLarge { limit: 4 })
        );
    }

    #[test]
    fn content_type_cases() {
        let cases = [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/problem+json", true),
            ("application/vnd.wedsync.v2+json; version=2", true),
            ("application/jsonl", false),
            ("text/json", false),
            ("application/+json", false),
            ("text/plain", false),
        ];
        for (ct, want) in cases {
            assert_eq!(is_json(&HeaderValue::from_static(ct)), want, "{ct}");
        }
    }

    #[test]
    fn body_headers_drop_validators_and_set_length() {
        let mut h = HeaderMap::new();
        h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        h.insert("content-md5", HeaderValue::from_static("x"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        set_body_headers(&mut h, 42);
        assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "42");
        assert!(h.get(header::ETAG).is_none());
        assert!(h.get("content-md5").is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
    }
}
