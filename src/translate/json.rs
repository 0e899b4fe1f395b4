//! Bodies in and out: a strict JSON parser (duplicate keys and excessive
//! nesting are errors, not last-one-wins or a stack overflow), the
//! serialiser, and the header rules around a rewritten body.
//!
//! Numbers are exact: a number is the slice of the body it was written as
//! and is never parsed, so `12345678901234567890123`, `1e-400` and `1E5` come
//! back byte for byte. Object keys come back sorted (as serde_json's map
//! wrote them before this parser); JSON objects are unordered, and a
//! translated body is a new body anyway.
//!
//! Two parsers accept the same language: the fast one builds the [`Json`]
//! tree the changes run on and only says yes or no; serde_json's
//! (`arbitrary_precision`, enabled in Cargo.toml so it never rounds) parses
//! a refused body again to say why, with line and column. Tests hold the
//! two to the same verdicts.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::TranslateError;
use super::value::{
    Json, MAX_BODY_BYTES, Member, Node, NodeId, Text, give_back_scratch, head, key_before,
    needs_escape, scratch, sort_members,
};

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

/// Parses a JSON body strictly, into a document that borrows from `bytes`.
///
/// Errors: [`TranslateError::TooLarge`] past `limits.max_bytes` (and past
/// 1 GiB whatever the limit: the document indexes with `u32`),
/// [`TranslateError::TooDeep`] past `limits.max_depth` (checked while
/// parsing, so a 10,000-deep body costs 65 levels of work),
/// [`TranslateError::DuplicateKey`] with the JSON pointer of the repeated
/// key, [`TranslateError::InvalidJson`] with line and column otherwise
/// (trailing data, bad UTF-8, an empty body).
pub fn parse_json(bytes: &[u8], limits: Limits) -> Result<Json<'_>, TranslateError> {
    let limits = Limits {
        max_bytes: limits.max_bytes.min(MAX_BODY_BYTES),
        ..limits
    };
    if bytes.len() as u64 > limits.max_bytes {
        return Err(TranslateError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    // The fast parser only says no; a refused body is rare, so serde_json
    // parses it again to say why, with its messages and positions.
    let explain = || match parse_value(bytes, limits) {
        Err(e) => e,
        // Both parsers accept the same language (tests hold them to it);
        // if they ever disagree, refusing is the safe side.
        Ok(_) => TranslateError::InvalidJson {
            line: 0,
            column: 0,
            reason: "refused by the translation parser".into(),
        },
    };
    // Whole-body UTF-8 validation is one fast pass; after it any slice cut
    // at an ASCII delimiter is a valid `&str`.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(explain());
    };
    let (items, members) = scratch();
    let mut p = Parser {
        text,
        bytes,
        pos: 0,
        max_depth: limits.max_depth.min(MAX_DEPTH),
        doc: Json::for_body(bytes.len()),
        items,
        members,
    };
    let parsed = p.value(1).and_then(|root| p.end().map(|()| root));
    give_back_scratch(p.items, p.members);
    match parsed {
        Ok(root) => {
            p.doc.set_root(root);
            Ok(p.doc)
        }
        Err(Refused) => Err(explain()),
    }
}

/// The index of the first byte at or after `from` that ends an ordinary run
/// inside a string: `"`, `\` or a control character (JSON forbids those
/// raw). Eight bytes at a time: a table lookup per byte cost more than the
/// rest of the parse for string-heavy bodies.
fn special(bytes: &[u8], mut from: usize) -> Option<usize> {
    while let Some(chunk) = bytes.get(from..from + 8) {
        let flags = special_flags(word(chunk));
        if flags != 0 {
            return Some(from + (flags.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    let tail = bytes.get(from..)?;
    tail.iter().position(|&b| needs_escape(b)).map(|i| from + i)
}

/// Eight bytes as a little-endian word.
#[inline(always)]
fn word(chunk: &[u8]) -> u64 {
    u64::from_le_bytes(chunk.try_into().expect("8 bytes"))
}

/// The high bit of each byte of `w` that is `"`, `\` or below 0x20,
/// exact up to the lowest one (all that [`special`] reads).
#[inline(always)]
fn special_flags(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    // The high bit of each byte that is zero (the classic SWAR test),
    // or below 0x20. A borrow only runs upwards from a flagged byte, so
    // the lowest flag is exact, which is all we read.
    ((quote.wrapping_sub(ONES) & !quote)
        | (backslash.wrapping_sub(ONES) & !backslash)
        | (w.wrapping_sub(ONES * 0x20) & !w))
        & HIGH
}

/// The fast parser's only error: the reason is asked of serde_json.
struct Refused;

/// A recursive-descent parser over validated UTF-8, building a [`Json`]
/// document. Recursion is bounded by `max_depth` (at most [`MAX_DEPTH`]).
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    max_depth: usize,
    doc: Json<'a>,
    /// Scratch stacks: the open arrays' items and the open objects'
    /// members, copied into the document's vectors when each one closes
    /// (children come before their container, and nested containers
    /// interleave, so they cannot be written in place).
    items: Vec<NodeId>,
    members: Vec<Member<'a>>,
}

impl<'a> Parser<'a> {
    /// Skips whitespace. Bodies written by machines have none between
    /// tokens, so the first test (anything above a space) usually ends it.
    #[inline(always)]
    fn ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if b > b' ' || !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
    }

    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// The next byte that is not whitespace, after skipping to it. One
    /// load and one comparison when there is none to skip (the common
    /// case), where `ws` then `peek` loaded the byte twice.
    #[inline(always)]
    fn token(&mut self) -> Option<u8> {
        match self.peek() {
            Some(b) if b > b' ' => Some(b),
            _ => {
                self.ws();
                self.peek()
            }
        }
    }

    fn end(&mut self) -> Result<(), Refused> {
        self.ws();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(Refused)
        }
    }

    fn value(&mut self, depth: usize) -> Result<NodeId, Refused> {
        self.value_here(depth)
    }

    /// A value starting at the next token (whitespace skipped here).
    /// Scalars are parsed here, inlined into the container loops; only
    /// containers recurse.
    #[inline(always)]
    fn value_here(&mut self, depth: usize) -> Result<NodeId, Refused> {
        let node = match self.token() {
            Some(b'"') => Node::String(self.string()?),
            Some(b'{') => return self.object(depth),
            Some(b'[') => return self.array(depth),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(b't') => self.literal(b"true", Node::Bool(true))?,
            Some(b'f') => self.literal(b"false", Node::Bool(false))?,
            Some(b'n') => self.literal(b"null", Node::Null)?,
            _ => return Err(Refused),
        };
        Ok(self.doc.push(node))
    }

    fn literal(&mut self, word: &[u8], v: Node<'a>) -> Result<Node<'a>, Refused> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(Refused)
        }
    }

    #[inline(always)]
    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, kept as text.
    #[inline]
    fn number(&mut self) -> Result<Node<'a>, Refused> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(Refused),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Refused);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Refused);
            }
        }
        Ok(Node::Number(Text::Plain(&self.bytes[start..self.pos])))
    }

    #[inline(never)]
    fn array(&mut self, depth: usize) -> Result<NodeId, Refused> {
        if depth > self.max_depth {
            return Err(Refused);
        }
        self.pos += 1;
        let base = self.items.len();
        if self.token() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                let item = self.value_here(depth + 1)?;
                self.items.push(item);
                match self.token() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Refused),
                }
            }
        }
        let span = self.doc.push_items(&self.items[base..]);
        self.items.truncate(base);
        Ok(self.doc.push(Node::Array(span)))
    }

    #[inline(never)]
    fn object(&mut self, depth: usize) -> Result<NodeId, Refused> {
        if depth > self.max_depth {
            return Err(Refused);
        }
        self.pos += 1;
        let base = self.members.len();
        // Whether the keys came in strictly increasing order so far: then
        // (the common case) there is nothing to sort and no repeat.
        let mut sorted = true;
        if self.token() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                if self.token() != Some(b'"') {
                    return Err(Refused);
                }
                let (key, head) = self.key()?;
                if let Some(last) = self.members[base..].last()
                    && (last.head > head
                        || (last.head == head && !key_before(&self.doc, last, &key)))
                {
                    sorted = false;
                }
                if self.token() != Some(b':') {
                    return Err(Refused);
                }
                self.pos += 1;
                let value = self.value_here(depth + 1)?;
                let member = Member::with_head(key, value, head);
                match self.token() {
                    Some(b',') => {
                        self.pos += 1;
                        self.members.push(member);
                    }
                    Some(b'}') => {
                        self.pos += 1;
                        if self.members.len() == base {
                            // One member (a common shape: `{"name": ...}`
                            // in each element of a list): straight into
                            // the document, without the scratch stack and
                            // the copy out of it.
                            let span = self.doc.push_member(member);
                            return Ok(self.doc.push(Node::Object(span)));
                        }
                        self.members.push(member);
                        break;
                    }
                    _ => return Err(Refused),
                }
            }
        }
        // A repeated key is refused here; serde_json then names it.
        if !sorted && !sort_members(self.doc.own(), &mut self.members[base..]) {
            return Err(Refused);
        }
        let span = self.doc.push_members(&self.members[base..]);
        self.members.truncate(base);
        Ok(self.doc.push(Node::Object(span)))
    }

    /// A string at `"`: a slice of the input unless it has escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<Text<'a>, Refused> {
        let start = self.pos + 1;
        let i = special(self.bytes, start).ok_or(Refused)?;
        self.string_to(start, i)
    }

    /// The string whose inside starts at `start` and whose first special
    /// byte is at `i`.
    #[inline(always)]
    fn string_to(&mut self, start: usize, i: usize) -> Result<Text<'a>, Refused> {
        match self.bytes.get(i) {
            Some(b'"') => {
                self.pos = i + 1;
                Ok(Text::Plain(&self.bytes[start..i]))
            }
            Some(b'\\') => self.escaped(start, i),
            _ => Err(Refused),
        }
    }

    /// A key at `"`, and its [`head`]: the key's first four bytes come
    /// off the first word the scan for its end loads (a body has at least
    /// `":0}` after any key, so that word is there but for the last bytes).
    #[inline(always)]
    fn key(&mut self) -> Result<(Text<'a>, u32), Refused> {
        let start = self.pos + 1;
        let Some(chunk) = self.bytes.get(start..start + 8) else {
            let key = self.string()?;
            return Ok((key, head(self.doc.str(&key))));
        };
        let w = word(chunk);
        let flags = special_flags(w);
        let i = if flags != 0 {
            start + (flags.trailing_zeros() / 8) as usize
        } else {
            special(self.bytes, start + 8).ok_or(Refused)?
        };
        let key = self.string_to(start, i)?;
        // Big-endian, zero past the key's end.
        let first = (w as u32).swap_bytes();
        let head = match key {
            Text::Plain(k) if k.len() >= 4 => first,
            Text::Plain(k) => first & !(u32::MAX >> (8 * k.len())),
            Text::Escape(_) | Text::Own { .. } => head(self.doc.str(&key)),
        };
        Ok((key, head))
    }

    /// The rest of a string from its first backslash at `i`, decoded into
    /// the document's own text. Out of line: most strings have no escape,
    /// and `string` stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn escaped(&mut self, start: usize, mut i: usize) -> Result<Text<'a>, Refused> {
        let mut out = String::with_capacity(i - start + 16);
        out.push_str(&self.text[start..i]);
        loop {
            match self.bytes.get(i) {
                Some(b'"') => {
                    self.pos = i + 1;
                    return Ok(self.doc.own_text(&out));
                }
                Some(b'\\') => {
                    let c = match self.bytes.get(i + 1) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let (c, len) = unicode(self.bytes, i + 2)?;
                            out.push(c);
                            i += 2 + len;
                            continue;
                        }
                        _ => return Err(Refused),
                    };
                    out.push(c);
                    i += 2;
                }
                Some(_) => {
                    let end = special(self.bytes, i).ok_or(Refused)?;
                    if end == i {
                        // A raw control character.
                        return Err(Refused);
                    }
                    out.push_str(&self.text[i..end]);
                    i = end;
                }
                None => return Err(Refused),
            }
        }
    }
}

/// The character of a `\u` escape whose hex digits start at `i`, and the
/// bytes it took after the `\u`. Surrogates must come in pairs, as
/// serde_json requires of a string.
fn unicode(bytes: &[u8], i: usize) -> Result<(char, usize), Refused> {
    let hi = hex4(bytes, i)?;
    match hi {
        0xDC00..=0xDFFF => Err(Refused),
        0xD800..=0xDBFF => {
            if bytes.get(i + 4..i + 6) != Some(b"\\u") {
                return Err(Refused);
            }
            let lo = hex4(bytes, i + 6)?;
            if !(0xDC00..=0xDFFF).contains(&lo) {
                return Err(Refused);
            }
            let n = (((hi - 0xD800) << 10) | (lo - 0xDC00)) + 0x1_0000;
            char::from_u32(n).map(|c| (c, 10)).ok_or(Refused)
        }
        n => char::from_u32(n).map(|c| (c, 4)).ok_or(Refused),
    }
}

fn hex4(bytes: &[u8], i: usize) -> Result<u32, Refused> {
    let digits = bytes.get(i..i + 4).ok_or(Refused)?;
    digits.iter().try_fold(0u32, |n, &d| {
        let v = (d as char).to_digit(16).ok_or(Refused)?;
        Ok((n << 4) | v)
    })
}

/// Serialises a body: no whitespace, object keys sorted, numbers exactly
/// as they were written, strings escaped as serde_json escapes them.
pub fn to_bytes(body: &Json<'_>) -> Bytes {
    // Sized from the body it was parsed from: one allocation, no regrowth,
    // unless the changes grew the body by more than a quarter.
    let mut out = Vec::with_capacity(body.source_len + body.source_len / 4 + 64);
    write(&mut out, body, body.root());
    Bytes::from(out)
}

/// Writes the subtree `id` of `doc`.
pub(crate) fn write(out: &mut Vec<u8>, doc: &Json<'_>, id: NodeId) {
    match doc.node(id) {
        Node::Array(_) => {
            out.push(b'[');
            if let Some((&first, rest)) = doc.items(id).split_first() {
                write_value(out, doc, first);
                for &item in rest {
                    out.push(b',');
                    write_value(out, doc, item);
                }
            }
            out.push(b']');
        }
        Node::Object(_) => {
            out.push(b'{');
            if let Some((first, rest)) = doc.members(id).split_first() {
                write_member(out, doc, first);
                for m in rest {
                    out.push(b',');
                    write_member(out, doc, m);
                }
            }
            out.push(b'}');
        }
        scalar => write_scalar(out, doc, scalar),
    }
}

/// One value inside a container: scalars are written in line, only
/// containers recurse.
#[inline(always)]
fn write_value(out: &mut Vec<u8>, doc: &Json<'_>, id: NodeId) {
    match doc.node(id) {
        Node::Array(_) | Node::Object(_) => write(out, doc, id),
        scalar => write_scalar(out, doc, scalar),
    }
}

#[inline(always)]
fn write_scalar(out: &mut Vec<u8>, doc: &Json<'_>, node: Node<'_>) {
    match node {
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bool(true) => out.extend_from_slice(b"true"),
        Node::Bool(false) => out.extend_from_slice(b"false"),
        Node::Number(Text::Plain(n)) => out.extend_from_slice(n),
        Node::Number(n) => out.extend_from_slice(doc.str(&n)),
        Node::String(s) => {
            out.push(b'"');
            write_text(out, doc, &s);
            out.push(b'"');
        }
        Node::Array(_) | Node::Object(_) => unreachable!("containers are written by write"),
    }
}

/// A member: its key with its quotes and the colon after it, then its
/// value. A string value's opening quote goes with the colon, one write
/// for the three bytes.
#[inline(always)]
fn write_member(out: &mut Vec<u8>, doc: &Json<'_>, m: &Member<'_>) {
    out.push(b'"');
    write_text(out, doc, &m.key);
    match doc.node(m.value) {
        Node::String(s) => {
            out.extend_from_slice(b"\":\"");
            write_text(out, doc, &s);
            out.push(b'"');
        }
        _ => {
            out.extend_from_slice(b"\":");
            write_value(out, doc, m.value);
        }
    }
}

/// The inside of a string: borrowed plain text as it is, the rest escaped.
#[inline(always)]
fn write_text(out: &mut Vec<u8>, doc: &Json<'_>, t: &Text<'_>) {
    match *t {
        Text::Plain(s) => out.extend_from_slice(s),
        Text::Escape(_) | Text::Own { .. } => write_escaped(out, doc.str(t)),
    }
}

/// Copies `text` with `"`, `\` and control characters escaped.
fn write_escaped(out: &mut Vec<u8>, text: &[u8]) {
    let mut run = 0;
    while let Some(i) = special(text, run) {
        out.extend_from_slice(&text[run..i]);
        match text[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        run = i + 1;
    }
    out.extend_from_slice(&text[run..]);
}

/// The same strict parse into a `serde_json::Value`: what [`parse_json`]
/// asks for the reason of a body it refused (serde_json's messages and
/// positions), and the reference the tests hold the fast parser to.
pub(crate) fn parse_value(bytes: &[u8], limits: Limits) -> Result<Value, TranslateError> {
    if bytes.len() as u64 > limits.max_bytes {
        return Err(TranslateError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let max_depth = limits.max_depth.min(MAX_DEPTH);
    let failure = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Seed {
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
struct Seed<'f> {
    depth: usize,
    max_depth: usize,
    failure: &'f RefCell<Option<Failure>>,
}

impl Seed<'_> {
    fn child(self) -> Self {
        Seed {
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

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
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
    use proptest::prelude::*;

    use super::*;

    fn strict(text: &str) -> Result<Json<'_>, TranslateError> {
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
    fn a_body_grown_past_its_estimate_is_written_whole() {
        // The output buffer is sized from the parsed body; a document with
        // no body behind it (size 0) outgrows it at once.
        for n in [0, 1, 50, 63, 64, 65, 500] {
            let v = serde_json::json!({"k": "x\n".repeat(n), "a": [1, "\u{1}"]});
            let doc = Json::from_value(&v);
            assert_eq!(to_bytes(&doc), serde_json::to_vec(&v).unwrap(), "{n}");
        }
    }

    #[test]
    fn exponent_forms_come_back_as_written() {
        // serde_json wrote `1E5` as `1e+5`; the tree keeps the text.
        let text = "[1E+5,2E-400,3e7,4E8,5.0e-0,-0.0]";
        let v = strict(text).unwrap();
        assert_eq!(to_bytes(&v), Bytes::from(text));
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
                "duplicate through an escape",
                r#"{"a":1,"\u0061":2}"#,
                Err(TranslateError::DuplicateKey { path: "/a".into() }),
            ),
            (
                "duplicate through an escape, unsorted big object",
                r#"{"k":0,"j":0,"i":0,"h":0,"g":0,"f":0,"e":0,"d":0,"c":0,"b":0,"\u0062":1}"#,
                Err(TranslateError::DuplicateKey { path: "/b".into() }),
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
    fn written_form_cases() {
        // (name, body, as written back)
        let cases = [
            (
                "escaped keys sort as what they spell",
                r#"{"b":1,"\u0061":2,"a\/":3}"#,
                r#"{"a":2,"a/":3,"b":1}"#,
            ),
            (
                "empty containers",
                r#" { "a" : [ ] , "b" : { } } "#,
                r#"{"a":[],"b":{}}"#,
            ),
            ("empty at the top", "[]", "[]"),
            (
                "space around colons, escaped and empty keys",
                r#"{"a" :"x","b": 1,"c":"y" ,"d":2,"e":[1,"z"],"f" : {"g":"h\n"},"":"","i":"\u0041"}"#,
                r#"{"":"","a":"x","b":1,"c":"y","d":2,"e":[1,"z"],"f":{"g":"h\n"},"i":"A"}"#,
            ),
            (
                "escapes written as serde_json writes them",
                r#"["\u0001\b\f\n\r\t\"\\\/\u00e9\ud83d\ude00", "long run with no escape at all, longer than eight bytes"]"#,
                r#"["\u0001\b\f\n\r\t\"\\/é😀","long run with no escape at all, longer than eight bytes"]"#,
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(to_bytes(&strict(text).unwrap()), want, "{name}");
        }
        let deep = format!("{}\"x\"{}", r#"{"\u0061":"#.repeat(63), "}".repeat(63));
        let want = format!("{}\"x\"{}", r#"{"a":"#.repeat(63), "}".repeat(63));
        assert_eq!(
            to_bytes(&strict(&deep).unwrap()),
            want,
            "63 levels of escaped keys"
        );
    }

    #[test]
    fn special_bytes_are_found_at_any_offset() {
        for len in 0..20 {
            for (at, b) in [(0, b'"'), (len / 2, b'\\'), (len, 0x1f)] {
                let mut text = vec![b'a'; len + 1];
                text[at] = b;
                assert_eq!(special(&text, 0), Some(at), "{len} {at}");
            }
            // Bytes >= 0x80 (UTF-8) and plain ASCII are ordinary.
            assert_eq!(special(&vec![0xc3; len], 0), None);
            assert_eq!(special(&vec![b' '; len], 0), None);
        }
    }

    #[test]
    fn utf8_is_checked_in_every_string_and_key() {
        // Bad bytes at any offset of a string or key, short or long, before
        // or after an escape, and outside strings; good multi-byte text
        // passes as it came.
        let bad: &[&[u8]] = &[
            b"\xff",
            b"\xc3",
            b"\xc3(",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
        ];
        for pad in 0..20 {
            let a = "a".repeat(pad);
            for b in bad {
                for (name, pre, post) in [
                    ("string", format!(r#"{{"k":"{a}"#), r#"x"}"#.to_string()),
                    ("key", format!(r#"{{"{a}"#), r#"x":1}"#.to_string()),
                    (
                        "after an escape",
                        format!(r#"["\n{a}"#),
                        r#""]"#.to_string(),
                    ),
                    ("outside strings", format!("[1,{a:.0}"), "]".to_string()),
                ] {
                    let mut text = pre.into_bytes();
                    text.extend_from_slice(b);
                    text.extend_from_slice(post.as_bytes());
                    assert!(
                        matches!(
                            parse_json(&text, Limits::default()),
                            Err(TranslateError::InvalidJson { .. })
                        ),
                        "{name}, {pad} bytes before {b:?}"
                    );
                }
            }
            let good = format!(r#"{{"é{a}€":"{a}😀\n{a}é"}}"#);
            assert_eq!(to_bytes(&strict(&good).unwrap()), good, "{pad}");
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

    /// JSON-ish text: valid documents with whitespace, escapes, exponent
    /// forms, keys that repeat (also through `\u` escapes) and surrogates,
    /// then sometimes one byte inserted, deleted or replaced.
    fn jsonish() -> impl Strategy<Value = String> {
        let ws = || "[ \t\n\r]{0,2}";
        let number = "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?";
        let string = "\"([a-z/é ]|\\\\[\"\\\\/bfnrt]|\\\\u00[0-7][0-9a-f]|\\\\u[dD][89abAB][0-9a-f]{2}(\\\\u[dD][c-fC-F][0-9a-f]{2})?|\\\\u[dD][c-f][0-9a-f]{2})*\"";
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            number.prop_map(|n| n.to_string()),
            string.prop_map(|s| s.to_string()),
        ];
        let key = prop_oneof![
            "\"[ab]{0,2}\"",
            Just("\"\\u0061\"".to_string()),
            Just("\"a\\/\"".to_string()),
        ];
        let doc = leaf.prop_recursive(5, 48, 5, move |inner| {
            prop_oneof![
                prop::collection::vec((ws(), inner.clone(), ws()), 0..5).prop_map(|items| {
                    let parts: Vec<String> =
                        items.into_iter().map(|(a, v, b)| a + &v + &b).collect();
                    format!("[{}]", parts.join(","))
                }),
                prop::collection::vec((key.clone(), ws(), inner, ws()), 0..5).prop_map(|members| {
                    let parts: Vec<String> = members
                        .into_iter()
                        .map(|(k, a, v, b)| format!("{k}{a}:{v}{b}"))
                        .collect();
                    format!("{{{}}}", parts.join(","))
                }),
            ]
        });
        let edit = prop_oneof![
            4 => Just(None),
            1 => (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                b"{}[]\",:\\ 0-9eE.+-tfnul\x00\x1f\xff\xc3".to_vec()
            ))
            .prop_map(Some),
        ];
        (ws(), doc, ws(), edit).prop_map(|(a, d, b, edit)| {
            let mut bytes = format!("{a}{d}{b}").into_bytes();
            if let Some((at, how, byte)) = edit {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ if i < bytes.len() => bytes[i] = byte,
                    _ => bytes.push(byte),
                }
            }
            // Not always UTF-8 after an edit: carried as Latin-1 chars.
            bytes.into_iter().map(char::from).collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Keys in any order come back sorted as serde_json's map sorts
        /// them: keys that share their first four bytes, keys shorter than
        /// four bytes, NULs (which the key heads pad with) and escapes, in
        /// input order or shuffled; values include escapes and numbers no
        /// f64 holds. The output is serde_json's, byte for byte.
        #[test]
        fn keys_sort_as_serde_json_sorts_them(
            keys in prop::collection::btree_set(
                r#"(abcd|ab|\\u0000|a|\\u0061|\\n|é|\\"){0,3}"#,
                0..12,
            ),
            order in any::<prop::sample::Index>(),
            reverse in any::<bool>(),
            values in prop::collection::vec(prop_oneof![
                Just("\"x\\u0007y\"".to_string()),
                Just("12345678901234567890123".to_string()),
                Just("-1.5e-400".to_string()),
                Just("{\"k\\u0000\":[true,null]}".to_string()),
                "\"[a-z]{0,12}\"",
            ], 12),
        ) {
            // Keys spelled differently may decode to the same key: keep one.
            let mut seen = std::collections::BTreeSet::new();
            let mut members: Vec<String> = keys
                .iter()
                .filter(|k| seen.insert(serde_json::from_str::<String>(&format!("\"{k}\"")).unwrap()))
                .zip(&values)
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            if reverse {
                members.reverse();
            }
            if !members.is_empty() {
                let at = order.index(members.len());
                members.rotate_left(at);
            }
            let text = format!("{{{}}}", members.join(","));
            let ours = to_bytes(&parse_json(text.as_bytes(), Limits::default()).unwrap());
            let theirs: Value = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(&ours[..], &serde_json::to_vec(&theirs).unwrap()[..], "{}", text);
        }

        /// The tree parser and serde_json's strict parser agree on every
        /// input: same verdict, same error, and the same document (serde_json
        /// reads the tree's output as it read the input).
        #[test]
        fn fast_parser_agrees_with_serde_json(text in jsonish(), depth in 1usize..7) {
            let bytes: Vec<u8> = text.chars().map(|c| c as u8).collect();
            let limits = Limits { max_depth: depth, ..Limits::default() };
            let fast = parse_json(&bytes, limits);
            let reference = parse_value(&bytes, limits);
            match (&fast, &reference) {
                (Ok(tree), Ok(value)) => {
                    let out = to_bytes(tree);
                    let again = parse_value(&out, Limits::default())
                        .expect("the serialiser writes JSON serde_json accepts");
                    prop_assert_eq!(
                        serde_json::to_vec(&again).unwrap(),
                        serde_json::to_vec(value).unwrap()
                    );
                    // And the tree's output is a fixed point.
                    prop_assert_eq!(to_bytes(&parse_json(&out, limits).unwrap()), out);
                }
                (Err(a), Err(b)) => prop_assert_eq!(a, b),
                _ => prop_assert!(false, "verdicts differ: {:?} vs {:?}", fast, reference),
            }
        }
    }
}
