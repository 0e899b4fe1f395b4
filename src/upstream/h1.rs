//! The lean HTTP/1.1 client: every plain-TCP upstream exchange that asks
//! for no protocol upgrade, which is nearly all proxied API traffic.
//!
//! Why not hyper's client here: hyper runs each connection as its own task
//! and hands the request to it through a channel, the response back through
//! a oneshot and the body through another channel, so every request wakes
//! two tasks and crosses four queues. By `benches/instructions.sh`, hyper's
//! connection task alone was 12,400 of 52,100 instructions per proxied
//! request (e05df5a); with this client the total fell from 51,064 to
//! 41,923. Here the request's own task writes the head and body
//! (one `write` when the body is buffered or already arrived), reads and
//! parses the response head (httparse, as hyper does) and the response
//! body reads the socket directly; the connection travels with the body
//! and goes back to this thread's idle list when the body ends. Upgrades
//! (WebSocket), buffered bodies over [`MAX_BODY`], TLS and HTTP/2 pools
//! keep using hyper (see [`super::exchange`]).
//!
//! One difference from hyper: the request is sent whole before the
//! response is read, as nginx does, so an upstream that answers early and
//! resets the connection mid-upload gives a 502 rather than its answer.
//!
//! Framing follows RFC 9112 section 6: no body for HEAD, 1xx, 204 and 304;
//! `Transfer-Encoding` ending in `chunked` is decoded (extensions skipped,
//! trailers passed on as a trailers frame); another transfer coding, or no
//! length at all, reads until the upstream closes; `Content-Length` must be
//! one non-negative number (repeated identical values are accepted). Any
//! other response is malformed: 502, and the connection is closed. A
//! connection is reused only if the response allowed keep-alive, its body
//! was read to the end and nothing followed it.
//!
//! An idle connection the upstream has closed is noticed at checkout
//! without a system call in the common case: the runtime already knows
//! whether the socket turned readable. A reused connection that still
//! fails before the first response byte (the close raced the request) is
//! tried once more on a new connection when the method is idempotent.
//!
//! A plain response the gateway passes on untouched keeps its fields
//! unparsed ([`RawFields`]) for the lean server to copy out in one piece.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant as TokioInstant, Sleep};

use super::{Endpoint, Forwarding, IDLE_TIMEOUT, IdMap, Timeouts, UpstreamError};
use crate::body::{Body, BodyError, Gap};
use crate::headers::{FieldSpan, FieldSpans, content_length, field_spans, write_field};
use crate::sock::RawTcp;

/// The largest buffered request body sent this way, with the head in one
/// write (a larger one goes through hyper, which writes and reads at once).
pub const MAX_BODY: usize = 64 * 1024;

/// The most response header fields accepted (hyper's default too).
const MAX_HEADERS: usize = 100;

/// The largest response head accepted; a longer one is a 502.
const MAX_HEAD: usize = 64 * 1024;

/// The longest chunk-size line or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Read buffer growth per read.
const READ_CHUNK: usize = 8 * 1024;

/// How many fields the pipeline may add to a response on its way to the
/// client (see `pipeline::Gateway::finish`).
const RESPONSE_FIELDS_ADDED: usize = 12;

/// One upstream connection and the bytes read from it but not yet used.
#[derive(Debug)]
pub(crate) struct Conn {
    io: RawTcp,
    buf: BytesMut,
    /// Request head (and body) staging, kept with the connection so a
    /// reused connection allocates nothing to send.
    out: Vec<u8>,
    /// The response timeout's timer, kept armed across requests (see
    /// [`within`]); made at the connection's first request.
    timer: Option<Pin<Box<Sleep>>>,
    /// When its latest request's try began (the pipeline's clock reading):
    /// its idle age counts from there, so an exchange that itself lasts
    /// longer than [`IDLE_TIMEOUT`] retires the connection early, which is
    /// the safe side, and no clock is read when it goes idle.
    used: Instant,
}

/// Connections live boxed: a response body holds one, and bodies are moved
/// whole between the pipeline's layers; boxed once per connection, not per
/// request, it keeps every request's body a pointer's width instead of
/// the connection's ~100 bytes.
type Idle = Box<Conn>;

thread_local! {
    /// This thread's idle lean connections by endpoint id, oldest first.
    static IDLE: RefCell<IdMap<u64, Vec<Idle>>> = RefCell::new(HashMap::default());
}

/// Whether `req` can go the lean way to a plain-TCP HTTP/1.1 pool: not
/// a tunnel (CONNECT, `Upgrade`), and a buffered body no larger than
/// [`MAX_BODY`] or a streamed one.
pub(crate) fn eligible(req: &Request<Body>) -> bool {
    req.method() != Method::CONNECT
        && req.body().buffered().is_none_or(|b| b.len() <= MAX_BODY)
        && !req.headers().contains_key(http::header::UPGRADE)
}

/// Sends `req` (origin-form URI, `Host` set; see [`eligible`]) to `ep` and
/// returns the response with its body streaming from the connection.
///
/// The request goes out whole before the response is read (as nginx sends
/// a buffered request): a buffered body with the head in one write, a
/// streamed one frame by frame (`Content-Length` when the client gave
/// one, else chunked), whatever of it had arrived already going with the
/// head.
///
/// The request is borrowed, not taken: it stays in the caller's future
/// (stored once, where each level of the nest used to hold and copy its
/// own), and a buffered body is still there after it was sent, so a retry
/// can send it again without a copy made in advance. The failure says
/// whether any of it may have left (`false`: no connection could be made).
pub(crate) async fn exchange(
    ep: &Endpoint,
    req: &mut Request<Body>,
    forwarding: &Forwarding,
    timeouts: Timeouts,
) -> Result<Response<Body>, (UpstreamError, bool)> {
    // The body is read while the head is borrowed: apart for the exchange,
    // back in the request after it.
    let mut body = std::mem::replace(req.body_mut(), Body::empty());
    let head = &*req;
    // The response timeout covers connecting, sending and the response
    // head, as `tokio::time::timeout` around it all would, but on the
    // connection's own timer.
    let start = timeouts.start.unwrap_or_else(Instant::now);
    let deadline = TokioInstant::from_std(start) + timeouts.response;
    let head_only = head.method() == Method::HEAD;
    let mut retried = false;
    let result = 'sent: loop {
        let reused = checkout(ep.id, start);
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(c) => c,
            // Boxed: a connect is once per connection, and its future
            // would otherwise add to every request's (see `super::exchange`).
            None => match Box::pin(super::tcp(ep, timeouts.connect)).await {
                Ok(io) => Box::new(Conn {
                    io: RawTcp::new(io),
                    buf: BytesMut::new(),
                    out: Vec::new(),
                    timer: None,
                    used: start,
                }),
                Err(error) => break 'sent Err((error, false)),
            },
        };
        // Whether the body can be sent again (buffered, or nothing of it
        // read yet) if this connection turns out to be dead.
        let replayable = body.buffered().is_some() || body.is_end_stream();
        let mut timer = conn.timer.take();
        let outcome = within(&mut timer, deadline, async {
            let sent = match body.buffered() {
                Some(data) => {
                    encode(head, forwarding, Some(data.len() as u64), &mut conn.out);
                    conn.out.extend_from_slice(data);
                    conn.flush().await.map_err(|e| Fault::Io(e, true))
                }
                // Boxed: a streamed upload's future would otherwise add to
                // every request's (see `super::exchange`).
                None => Box::pin(send_streamed(head, forwarding, &mut body, &mut conn)).await,
            };
            sent?;
            Ok::<_, Fault>(roundtrip(&mut conn, head_only, forwarding.raw_response).await)
        })
        .await;
        conn.timer = timer;
        let result = match outcome {
            Some(Ok(result)) => result,
            Some(Err(Fault::Client(error))) => break 'sent Err((error, true)),
            Some(Err(Fault::Io(error, silent))) => Err(Broken { error, silent }),
            None => {
                let error = UpstreamError::Timeout {
                    endpoint: ep.authority.clone(),
                    after: timeouts.response,
                };
                break 'sent Err((error, true));
            }
        };
        match result {
            Ok(head) => break 'sent Ok(respond(head, conn, ep.id, timeouts.body)),
            Err(Broken { error, silent }) => {
                // The upstream closed an idle connection as the request
                // went out: nothing was processed, so an idempotent request
                // may go again, once, on a new connection.
                if was_reused
                    && silent
                    && replayable
                    && !retried
                    && super::retry::idempotent(head.method())
                {
                    retried = true;
                    continue;
                }
                let error = UpstreamError::Broken {
                    endpoint: ep.authority.clone(),
                    source: error,
                };
                break 'sent Err((error, true));
            }
        }
    };
    *req.body_mut() = body;
    result
}

/// Runs `fut` until `deadline` on a connection's reusable `timer`; `None`
/// when the deadline passed first. A timer made per request would be
/// registered with the runtime's timer wheel and removed again every
/// time; this one stays armed at an earlier request's deadline and, when
/// that passes with a later request in flight, is moved on to the later
/// deadline: one wheel update per timeout period instead of two per request.
async fn within<F: Future>(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: TokioInstant,
    fut: F,
) -> Option<F::Output> {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    // Armed later than this request's deadline (a route with a shorter
    // timeout on the same connection): it cannot wait for that one.
    if timer.deadline() > deadline {
        timer.as_mut().reset(deadline);
    }
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= deadline {
                return Poll::Ready(None);
            }
            // An earlier request's deadline: wait on for this one's.
            timer.as_mut().reset(deadline);
        }
        Poll::Pending
    })
    .await
}

/// Why sending a request failed.
enum Fault {
    /// The client's body failed (too large, aborted, timed out).
    Client(UpstreamError),
    /// The connection failed; `true` when no response byte can have
    /// been processed yet (for the retry rule).
    Io(std::io::Error, bool),
}

/// Writes the head of a streamed request and its body as it arrives.
async fn send_streamed(
    head: &Request<Body>,
    forwarding: &Forwarding,
    body: &mut Body,
    conn: &mut Conn,
) -> Result<(), Fault> {
    let length = body.size_hint().exact();
    encode(head, forwarding, length, &mut conn.out);
    let chunked = length.is_none();
    let mut first = true;
    loop {
        // Frames already here go out with what is staged; the first wait
        // for more sends what is staged first.
        let frame =
            match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await
            {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    conn.flush().await.map_err(|e| Fault::Io(e, first))?;
                    first = false;
                    body.frame().await
                }
            };
        match frame {
            None => break,
            Some(Err(e)) => return Err(Fault::Client(client_body_error(e))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if chunked => {
                    if !data.is_empty() {
                        conn.out
                            .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                        conn.out.extend_from_slice(&data);
                        conn.out.extend_from_slice(b"\r\n");
                    }
                }
                Ok(data) => conn.out.extend_from_slice(&data),
                Err(frame) => {
                    if let (true, Ok(trailers)) = (chunked, frame.into_trailers()) {
                        conn.out.extend_from_slice(b"0\r\n");
                        encode_fields(&trailers, None, &mut conn.out);
                        conn.out.extend_from_slice(b"\r\n");
                        return conn.flush().await.map_err(|e| Fault::Io(e, first));
                    }
                }
            },
        }
        if body.is_end_stream() {
            break;
        }
        if conn.out.len() >= READ_CHUNK * 8 {
            conn.flush().await.map_err(|e| Fault::Io(e, first))?;
            first = false;
        }
    }
    if chunked {
        conn.out.extend_from_slice(b"0\r\n\r\n");
    }
    conn.flush().await.map_err(|e| Fault::Io(e, first))
}

/// The upstream error for a client body that failed mid-send.
fn client_body_error(e: BodyError) -> UpstreamError {
    match e {
        BodyError::TooLarge { limit } => UpstreamError::RequestBodyTooLarge { limit },
        BodyError::Timeout { after } => UpstreamError::RequestBodyTimeout { after },
        BodyError::Stream(_) => UpstreamError::RequestBodyAborted,
    }
}

/// A failed round trip; `silent` when not one response byte arrived.
struct Broken {
    error: std::io::Error,
    silent: bool,
}

/// Reads the response head of the request just sent.
async fn roundtrip(conn: &mut Conn, head_only: bool, raw: bool) -> Result<Head, Broken> {
    loop {
        if !conn.buf.is_empty() {
            match parse_head(&mut conn.buf, head_only, raw) {
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(reason) => {
                    return Err(Broken {
                        error: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
                        silent: false,
                    });
                }
            }
        }
        let silent = conn.buf.is_empty();
        conn.buf.reserve(READ_CHUNK);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => {
                return Err(Broken {
                    error: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection before a complete response head",
                    ),
                    silent,
                });
            }
            Ok(_) => {}
            Err(error) => return Err(Broken { error, silent }),
        }
    }
}

/// Serialises the request head (origin form; the caller set `Host`) into
/// `out`, with the gateway's `forwarding` fields after the client's own,
/// framed by `length` (`Content-Length`) or, for `None`, chunked.
/// The client's own `Content-Length` and `Transfer-Encoding` are not
/// forwarded: the body is framed here, not the way the client framed it.
/// `head`'s body is not read (the caller has it apart).
fn encode(head: &Request<Body>, forwarding: &Forwarding, length: Option<u64>, out: &mut Vec<u8>) {
    let pq = head.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.reserve(256);
    out.extend_from_slice(head.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(pq.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    encode_fields(head.headers(), Some(forwarding), out);
    forwarding.each(|name, value, _| write_field(out, name, value));
    match length {
        // A method that defines a body gets an explicit zero length, as
        // hyper sends it; GET, HEAD and the like send none when empty.
        Some(0) if !matches!(*head.method(), Method::POST | Method::PUT | Method::PATCH) => {}
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// `name: value` lines for every field but the framing ones and those
/// `forwarding` replaces.
fn encode_fields(fields: &HeaderMap, forwarding: Option<&Forwarding>, out: &mut Vec<u8>) {
    // The replaced names, gathered once (compared as `HeaderName`s: a
    // standard name against these custom ones is a tag test).
    let mut set = [None::<&HeaderName>; 6];
    let mut sets = 0;
    if let Some(f) = forwarding {
        f.each(|name, _, replaces| {
            if replaces {
                set[sets] = Some(name);
                sets += 1;
            }
        });
    }
    for (name, value) in fields {
        if name == CONTENT_LENGTH || name == TRANSFER_ENCODING || set[..sets].contains(&Some(name))
        {
            continue;
        }
        write_field(out, name, value);
    }
}

/// A parsed response head and how its body is framed.
#[derive(Debug)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    /// The fields left unparsed (then `headers` is empty).
    raw: Option<RawFields>,
    framing: Framing,
    keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// This many bytes left.
    Length(u64),
    /// Chunked transfer coding.
    Chunked(Chunk),
    /// Until the upstream closes.
    Close,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// Parses a complete response head off the front of `buf`, skipping
/// interim (1xx) responses; `None` when more bytes are needed. With `raw`,
/// a head whose fields nothing in the gateway reads keeps them unparsed
/// (see [`RawFields`]).
fn parse_head(
    buf: &mut BytesMut,
    head_only: bool,
    raw: bool,
) -> Result<Option<Head>, &'static str> {
    loop {
        // Offsets of each field's name and value in the head, so the head
        // can be frozen once and the values shared, not copied. (u32: the
        // head is at most MAX_HEAD bytes.)
        let mut fields = FieldSpans::<MAX_HEADERS>::new();
        let mut parsed =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let (len, code, minor, count) = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut parsed)
        {
            Ok(httparse::Status::Complete(len)) => {
                field_spans(buf, resp.headers, &mut fields);
                (
                    len,
                    resp.code.unwrap_or(0),
                    resp.version.unwrap_or(1),
                    resp.headers.len(),
                )
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err("response head too large");
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err("too many response header fields"),
            Err(_) => return Err("malformed response head"),
        };
        let mut head = buf.split_to(len).freeze();
        if (100..200).contains(&code) {
            if code == 101 {
                return Err("upstream switched protocols unasked");
            }
            // Interim response (100 Continue, 103 Early Hints): the final
            // one follows.
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| "invalid response status")?;
        let fields = &fields[..count];
        let no_body =
            head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // A body framed by length or (HTTP/1.1) chunks; every other
        // framing takes the general path, which adjusts the fields.
        if raw
            && !no_body
            && minor == 1
            && let Some(r) = RawFields::classify(&head, fields)
        {
            let framing = match (r.chunked, r.length) {
                (Some(true), _) => Some(Framing::Chunked(Chunk::Size)),
                (None, Some(n)) if n > 0 => Some(Framing::Length(n)),
                _ => None,
            };
            if let Some(framing) = framing {
                let start = fields.first().map_or(len - 2, |f| f.0 as usize);
                head.advance(start);
                return Ok(Some(Head {
                    status,
                    version,
                    headers: HeaderMap::new(),
                    raw: Some(RawFields {
                        block: head,
                        // A chunked body's length field goes, as below.
                        skip: match (framing, r.length_at) {
                            (Framing::Chunked(_), Some(i)) => r.skip | 1 << i,
                            _ => r.skip,
                        },
                        length: r.length.filter(|_| matches!(framing, Framing::Length(_))),
                        date: r.date,
                        via: false,
                    }),
                    framing,
                    keep_alive: !r.close,
                }));
            }
        }
        // Room for the fields the gateway adds on the way back (`Via`, the
        // version echo and source, request id, `Vary`, rate-limit fields,
        // `x-cache`...): a full map doubles and rehashes on the next insert.
        let mut headers = crate::headers::pooled_map(count + RESPONSE_FIELDS_ADDED);
        let mut length: Option<u64> = None;
        let mut chunked = None;
        let mut close = minor == 0;
        for &(n0, n1, v0, v1) in fields {
            let (n0, n1, v0, v1) = (n0 as usize, n1 as usize, v0 as usize, v1 as usize);
            let name = crate::headers::parse_name(&head[n0..n1])
                .map_err(|_| "invalid response header name")?;
            let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
                .map_err(|_| "invalid response header value")?;
            if name == CONTENT_LENGTH {
                let n = content_length(value.as_bytes()).ok_or("invalid content-length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting content-length values");
                }
                length = Some(n);
            } else if name == TRANSFER_ENCODING {
                chunked = Some(last_coding_chunked(value.as_bytes()));
            } else if name == http::header::CONNECTION {
                for token in value.as_bytes().split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if minor == 0 && token.eq_ignore_ascii_case(b"keep-alive") {
                        close = false;
                    }
                }
            }
            headers.append(name, value);
        }
        let framing = match (chunked, length) {
            _ if no_body => Framing::Empty,
            (Some(true), _) if minor == 1 => {
                // Transfer-Encoding overrides Content-Length (RFC 9112
                // 6.3): the length must not reach the client.
                headers.remove(CONTENT_LENGTH);
                Framing::Chunked(Chunk::Size)
            }
            (Some(_), _) => {
                // Not chunked last (or HTTP/1.0): delimited by close.
                headers.remove(CONTENT_LENGTH);
                close = true;
                Framing::Close
            }
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => {
                close = true;
                Framing::Close
            }
        };
        return Ok(Some(Head {
            status,
            version,
            headers,
            raw: None,
            framing,
            keep_alive: !close,
        }));
    }
}

/// Whether a `Transfer-Encoding` value's last coding is chunked: only the
/// last one matters.
fn last_coding_chunked(value: &[u8]) -> bool {
    let last = value.rsplit(|&b| b == b',').next().unwrap_or(b"");
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// A lean response's fields as the upstream sent them, unparsed, for the
/// lean HTTP/1.1 server to write out in one copy. Put through a
/// `HeaderMap` instead, each field costs a name lookup, a hash and an
/// insert, a shared reference count taken and dropped, and a walk to write
/// it out: ~400 instructions a field, a tenth of a proxied request.
///
/// Only a response whose fields nothing in the gateway reads or changes
/// travels this way (the pipeline asks for it with
/// [`Forwarding::raw_response`]: no translation, no cache, no upgrade, a
/// lean server writing the answer) and only when its head is plain: framed
/// by a length or by chunks, lines ending in CRLF, no field named by
/// `Connection`, none of the names the gateway's stamp replaces, one
/// length at most. Anything else takes the general path. Only the lean
/// server writes them (`Body::take_raw_fields`); the tests' `fill` puts
/// them in a map to hold them to the general path's fields.
#[derive(Debug)]
pub struct RawFields {
    /// The head from its first field line through the empty line that
    /// ends it.
    block: Bytes,
    /// Fields (bit `i`: the `i`th line) not passed on: the hop-by-hop
    /// ones, and a chunked body's length.
    skip: u64,
    /// The `Content-Length` the block passes on.
    length: Option<u64>,
    /// The block has a `Date`.
    date: bool,
    /// The gateway's `via: 1.1 switchyard` follows.
    via: bool,
}

/// What [`RawFields::classify`] found in a head's fields.
struct Classified {
    skip: u64,
    length: Option<u64>,
    /// The line of the `Content-Length`.
    length_at: Option<u32>,
    chunked: Option<bool>,
    close: bool,
    date: bool,
}

impl RawFields {
    /// Reads an HTTP/1.1 head's fields by their bytes (no `HeaderName`s
    /// made): the framing ones, the hop-by-hop ones to skip, `Date`. `None`
    /// for a head the general path must take (see the type's doc), which
    /// also reports any malformed value.
    fn classify(head: &[u8], fields: &[FieldSpan]) -> Option<Classified> {
        if fields.len() > 64 || !head.ends_with(b"\r\n\r\n") {
            return None;
        }
        let mut c = Classified {
            skip: 0,
            length: None,
            length_at: None,
            chunked: None,
            close: false,
            date: false,
        };
        for (i, &(n0, n1, v0, v1)) in fields.iter().enumerate() {
            // Each line must end in CRLF, as it is written out as it is.
            let next = fields.get(i + 1).map_or(head.len() - 2, |f| f.0 as usize);
            if !head[..next].ends_with(b"\r\n") {
                return None;
            }
            let name = &head[n0 as usize..n1 as usize];
            let value = &head[v0 as usize..v1 as usize];
            let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
            let hop = match name.len() {
                2 => is(b"te"),
                4 if is(b"date") => {
                    c.date = true;
                    false
                }
                7 => is(b"trailer") || is(b"upgrade"),
                10 if is(b"connection") => {
                    for token in value.split(|&b| b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            c.close = true;
                        } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                            // Names another field as hop-by-hop.
                            return None;
                        }
                    }
                    true
                }
                10 => is(b"keep-alive"),
                14 if is(b"content-length") => {
                    if c.length.is_some() {
                        return None;
                    }
                    c.length = Some(content_length(value)?);
                    c.length_at = Some(i as u32);
                    false
                }
                16 => is(b"proxy-connection"),
                17 if is(b"transfer-encoding") => {
                    c.chunked = Some(last_coding_chunked(value));
                    true
                }
                19 => is(b"proxy-authorization"),
                _ => false,
            };
            if hop {
                c.skip |= 1 << i;
            } else if crate::pipeline::stamp_replaces(name) {
                return None;
            }
        }
        Some(c)
    }

    /// The `Content-Length` the fields pass on.
    pub(crate) fn length(&self) -> Option<u64> {
        self.length
    }

    /// Whether the fields have a `Date`.
    pub(crate) fn has_date(&self) -> bool {
        self.date
    }

    /// Adds the gateway's `via: 1.1 switchyard` after the upstream's fields.
    pub(crate) fn add_via(&mut self) {
        self.via = true;
    }

    /// The field lines to pass on, each ending in CRLF.
    fn lines(&self) -> impl Iterator<Item = &[u8]> {
        // Without the final empty line.
        let fields = &self.block[..self.block.len() - 2];
        fields
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
            .filter(|(i, _)| self.skip & (1 << i) == 0)
            .map(|(_, line)| line)
    }

    /// Writes the fields to pass on, as `name: value` lines.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        if self.skip == 0 {
            out.extend_from_slice(&self.block[..self.block.len() - 2]);
        } else {
            for line in self.lines() {
                out.extend_from_slice(line);
            }
        }
        if self.via {
            out.extend_from_slice(b"via: 1.1 switchyard\r\n");
        }
    }

    /// Appends the fields to pass on to `h`, as the general path would
    /// have them (its tests hold the two paths to the same fields).
    #[cfg(test)]
    pub fn fill(self, h: &mut HeaderMap) {
        for line in self.lines() {
            // Checked when the head was parsed: a name, a colon, a value.
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (Ok(name), Ok(value)) = (
                crate::headers::parse_name(&line[..colon]),
                HeaderValue::from_maybe_shared(
                    self.block.slice_ref(line[colon + 1..].trim_ascii()),
                ),
            ) else {
                continue;
            };
            h.append(name, value);
        }
        if self.via {
            h.append(
                http::header::VIA,
                HeaderValue::from_static("1.1 switchyard"),
            );
        }
    }
}

fn respond(head: Head, conn: Box<Conn>, endpoint: u64, gap: Option<Duration>) -> Response<Body> {
    let body = ResponseBody {
        conn: Some(conn),
        raw: head.raw,
        framing: head.framing,
        keep_alive: head.keep_alive,
        endpoint,
        gap: gap.map(Gap::new),
    };
    let mut resp = Response::new(Body::lean(body));
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    resp
}

/// A response body read straight from its connection. When it has been
/// read to the end the connection goes back to the idle list (if the
/// response allowed it); dropped before that, the connection closes.
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Box<Conn>>,
    /// The response's fields, when left unparsed (see [`RawFields`]).
    raw: Option<RawFields>,
    framing: Framing,
    keep_alive: bool,
    endpoint: u64,
    /// The longest wait for the next bytes (the route's body timeout).
    gap: Option<Gap>,
}

impl ResponseBody {
    /// Builds the body; an empty one releases its connection at once.
    pub(crate) fn start(mut self) -> ResponseBody {
        if self.framing == Framing::Empty {
            self.finish();
        }
        self
    }

    /// Whether no more frames follow.
    pub(crate) fn is_end_stream(&self) -> bool {
        self.framing == Framing::Empty
    }

    /// The response's fields when they were left unparsed.
    pub(crate) fn raw_fields(&mut self) -> &mut Option<RawFields> {
        &mut self.raw
    }

    /// The bytes still to come, when known.
    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked(_) | Framing::Close => SizeHint::default(),
        }
    }

    /// The body ended: back to the pool if the exchange allows.
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            checkin(self.endpoint, conn);
        }
    }

    /// The next frame.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            match self.step() {
                Step::Frame(f) => return Poll::Ready(Some(Ok(f))),
                Step::End => return Poll::Ready(None),
                Step::Fail(reason) => {
                    self.fail();
                    return Poll::Ready(Some(Err(BodyError::Stream(reason.into()))));
                }
                Step::Read => {}
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            conn.buf.reserve(READ_CHUNK);
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => {
                    // On the connection's own timer (see `within`).
                    if let Some(gap) = &mut self.gap
                        && gap.poll_expired(&mut conn.timer, cx)
                    {
                        let after = gap.after();
                        self.fail();
                        return Poll::Ready(Some(Err(BodyError::Timeout { after })));
                    }
                    return Poll::Pending;
                }
                Poll::Ready(Ok(0)) => {
                    if self.framing == Framing::Close {
                        self.framing = Framing::Empty;
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                    self.fail();
                    return Poll::Ready(Some(Err(BodyError::Stream(
                        "upstream closed the connection mid-body".into(),
                    ))));
                }
                Poll::Ready(Ok(_)) => {
                    if let Some(gap) = &mut self.gap {
                        gap.progress();
                    }
                }
                Poll::Ready(Err(e)) => {
                    self.fail();
                    return Poll::Ready(Some(Err(BodyError::Stream(e.into()))));
                }
            }
        }
    }

    fn fail(&mut self) {
        self.framing = Framing::Empty;
        self.conn = None;
    }

    /// Advances on the bytes already buffered, without I/O.
    fn step(&mut self) -> Step {
        let Some(conn) = self.conn.as_mut() else {
            return Step::End;
        };
        let buf = &mut conn.buf;
        match self.framing {
            Framing::Empty => Step::End,
            Framing::Close if buf.is_empty() => Step::Read,
            Framing::Close => Step::Frame(Frame::data(buf.split().freeze())),
            Framing::Length(_) if buf.is_empty() => Step::Read,
            Framing::Length(n) => {
                let take = n.min(buf.len() as u64);
                let data = buf.split_to(take as usize).freeze();
                if take == n {
                    // The last bytes: hand the connection back now, since
                    // the server stops polling once the body says it ended.
                    self.finish();
                } else {
                    self.framing = Framing::Length(n - take);
                }
                Step::Frame(Frame::data(data))
            }
            Framing::Chunked(_) => self.step_chunked(),
        }
    }

    fn step_chunked(&mut self) -> Step {
        loop {
            let (Some(conn), Framing::Chunked(state)) = (self.conn.as_mut(), self.framing) else {
                return Step::End;
            };
            let buf = &mut conn.buf;
            match state {
                Chunk::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = buf.split_to(used);
                        self.framing = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                        return Step::Fail("chunk size line too long");
                    }
                    Ok(httparse::Status::Partial) => return Step::Read,
                    Err(_) => return Step::Fail("invalid chunk size"),
                },
                Chunk::Data(_) if buf.is_empty() => return Step::Read,
                Chunk::Data(n) => {
                    let take = n.min(buf.len() as u64);
                    let data = buf.split_to(take as usize).freeze();
                    self.framing = Framing::Chunked(if take == n {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(n - take)
                    });
                    if take == n {
                        // Settle what is already here (the CRLF, often the
                        // last chunk too) so the end is known with the data.
                        self.settle();
                    }
                    return Step::Frame(Frame::data(data));
                }
                Chunk::DataEnd if buf.len() < 2 => return Step::Read,
                Chunk::DataEnd => {
                    if &buf[..2] != b"\r\n" {
                        return Step::Fail("chunk data not followed by CRLF");
                    }
                    let _ = buf.split_to(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Chunk::Trailers => {
                    if buf.starts_with(b"\r\n") {
                        let _ = buf.split_to(2);
                        self.finish();
                        return Step::End;
                    }
                    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    match httparse::parse_headers(buf, &mut raw) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                let (Ok(name), Ok(value)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) else {
                                    return Step::Fail("invalid trailer field");
                                };
                                trailers.append(name, value);
                            }
                            let _ = buf.split_to(used);
                            self.finish();
                            return Step::Frame(Frame::trailers(trailers));
                        }
                        Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                            return Step::Fail("trailer section too large");
                        }
                        Ok(httparse::Status::Partial) => return Step::Read,
                        Err(_) => return Step::Fail("malformed trailer section"),
                    }
                }
            }
        }
    }

    /// After a chunk's data: consume its CRLF and, if the last chunk and
    /// an empty trailer section are buffered too, end the body now.
    fn settle(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if conn.buf.starts_with(b"\r\n0\r\n\r\n") {
            let _ = conn.buf.split_to(7);
            self.finish();
        }
    }
}

/// What the buffered bytes allow next.
enum Step {
    Frame(Frame<Bytes>),
    End,
    Read,
    Fail(&'static str),
}

fn checkin(endpoint: u64, conn: Box<Conn>) {
    IDLE.with_borrow_mut(|pool| super::park(pool, endpoint, conn));
}

/// The most recently idled live connection to `endpoint`, for a try that
/// began at `now`: those idle longer than [`IDLE_TIMEOUT`] and those the
/// upstream closed are dropped.
fn checkout(endpoint: u64, now: Instant) -> Option<Box<Conn>> {
    IDLE.with_borrow_mut(|pool| {
        let list = pool.get_mut(&endpoint)?;
        while let Some(mut conn) = list.pop() {
            if now.saturating_duration_since(conn.used) > IDLE_TIMEOUT {
                // The rest are older still.
                list.clear();
                return None;
            }
            if conn.alive() {
                conn.used = now;
                return Some(conn);
            }
        }
        None
    })
}

impl Conn {
    /// Writes what is staged in `out`. The staging buffer keeps its
    /// allocation for the next request, but not a large one for ever.
    async fn flush(&mut self) -> std::io::Result<()> {
        let wrote = self.io.write_all(&self.out).await;
        if self.out.capacity() > 2 * READ_CHUNK * 8 {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        wrote
    }

    /// Whether an idle connection is still open. The runtime records when
    /// a socket turns readable; an idle one that has is closed (or sent
    /// bytes nobody asked for) unless a read finds nothing after all.
    fn alive(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.get_ref().poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.get_ref().try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(bytes: &[u8], head_only: bool) -> Result<Option<Head>, &'static str> {
        let mut buf = BytesMut::from(bytes);
        parse_head(&mut buf, head_only, false)
    }

    type Fields = Vec<(String, String)>;

    /// The fields as the writer puts them on the wire, parsed back: the
    /// raw path's written lines (`None`: the head took the general path),
    /// and the general path's map after the pipeline's hop-by-hop strip
    /// and `via`.
    fn passed_on(bytes: &[u8]) -> (Option<Fields>, Fields) {
        let pairs = |h: &HeaderMap| -> Vec<(String, String)> {
            h.iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
                .collect()
        };
        let general = {
            let mut h = head(bytes, false).unwrap().unwrap();
            crate::pipeline::strip_hop_by_hop(&mut h.headers);
            h.headers.append(
                http::header::VIA,
                HeaderValue::from_static("1.1 switchyard"),
            );
            h
        };
        let mut buf = BytesMut::from(bytes);
        let raw = parse_head(&mut buf, false, true).unwrap().unwrap();
        assert_eq!(raw.framing, general.framing);
        assert_eq!(raw.keep_alive, general.keep_alive);
        let written = raw.raw.map(|mut r| {
            r.add_via();
            let mut out = Vec::new();
            r.write(&mut out);
            // Lines as written, each ending in CRLF, parse back as they
            // went in; `fill` gives the same fields.
            let mut fields = [httparse::EMPTY_HEADER; 64];
            out.extend_from_slice(b"\r\n");
            let httparse::Status::Complete((_, parsed)) =
                httparse::parse_headers(&out, &mut fields).unwrap()
            else {
                panic!("written fields parse");
            };
            let lines: Vec<(String, String)> = parsed
                .iter()
                .map(|f| {
                    (
                        f.name.to_ascii_lowercase(),
                        String::from_utf8(f.value.to_vec()).unwrap(),
                    )
                })
                .collect();
            let mut filled = HeaderMap::new();
            r.fill(&mut filled);
            let mut sorted = lines.clone();
            let mut from_fill = pairs(&filled);
            sorted.sort();
            from_fill.sort();
            assert_eq!(sorted, from_fill, "fill gives the written fields");
            lines
        });
        (written, pairs(&general.headers))
    }

    #[test]
    fn raw_fields_pass_on_what_the_general_path_does() {
        let sorted = |mut v: Vec<(String, String)>| {
            v.sort();
            v
        };
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-c: a\r\nVia: 1.0 edge\r\nx-c: b\r\nTE: trailers\r\nProxy-Connection: x\r\nProxy-Authorization: y\r\nUpgrade: h2c\r\nTrailer: x-sum\r\nDate: Tue, 01 Dec 2026 10:00:00 GMT\r\ncontent-length: 5\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nx-a: 1\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nx-a:   padded  \r\ncontent-length: 2\r\n\r\n",
        ] {
            let (raw, general) = passed_on(bytes);
            let raw = raw.expect("a plain head stays raw");
            assert_eq!(sorted(raw.clone()), sorted(general), "{}", String::from_utf8_lossy(bytes));
            // Same-name fields keep their order; ours comes last.
            assert_eq!(raw.last().unwrap(), &("via".to_string(), "1.1 switchyard".to_string()));
        }
        // Heads the general path must take.
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nconnection: x-drop\r\nx-drop: 1\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nx-request-id: up\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-API-Version: v0\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\nx-lf: 1\ncontent-length: 2\n\n",
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n",
        ] {
            let (raw, _) = passed_on(bytes);
            assert!(raw.is_none(), "{}", String::from_utf8_lossy(bytes));
        }
        // Malformed heads fail as they did.
        for bytes in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: nope\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(bytes);
            assert!(parse_head(&mut buf, false, true).is_err());
        }
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let h = head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabc", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(3));
        assert!(h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty, "HEAD has no body");
        assert_eq!(h.headers[CONTENT_LENGTH], "3", "but keeps its length");
        let h = head(
            b"HTTP/1.1 304 Not Modified\r\ncontent-length: 3\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\ncontent-length: 9\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.headers.contains_key(CONTENT_LENGTH), "TE overrides CL");
        let h = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Close);
        assert!(!h.keep_alive);
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked");
        assert_eq!(h.version, Version::HTTP_10);
        let h = head(
            b"HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 1\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(h.keep_alive);
        let h = head(
            b"HTTP/1.1 200 OK\r\nconnection: x, close\r\ncontent-length: 1\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
    }

    #[test]
    fn malformed_heads_are_refused() {
        let cases: [(&[u8], &str); 5] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                "conflicting content-length values",
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
                "invalid content-length",
            ),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed response head"),
            (b"nonsense\r\n\r\n", "malformed response head"),
            (
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
                "upstream switched protocols unasked",
            ),
        ];
        for (bytes, reason) in cases {
            assert_eq!(head(bytes, false).unwrap_err(), reason);
        }
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            head(&many, false).unwrap_err(),
            "too many response header fields"
        );
        let mut huge = b"HTTP/1.1 200 OK\r\nx: ".to_vec();
        huge.resize(MAX_HEAD + 10, b'a');
        assert_eq!(head(&huge, false).unwrap_err(), "response head too large");
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"[..],
        );
        let h = parse_head(&mut buf, false, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert!(!h.headers.contains_key("link"));
        assert_eq!(&buf[..], b"ok");
        assert!(
            head(b"HTTP/1.1 200 OK\r\ncontent-le", false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn header_values_are_kept_byte_for_byte() {
        let h = head(
            b"HTTP/1.1 200 OK\r\nx-a: one\r\nx-a: two\r\nx-b: caf\xc3\xa9\r\ncontent-length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        let all: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(all, ["one", "two"]);
        assert_eq!(h.headers["x-b"].as_bytes(), "café".as_bytes());
        assert_eq!(h.framing, Framing::Empty);
    }

    #[test]
    fn encode_writes_origin_form_with_its_own_length() {
        let req = Request::post("http://ignored/a/b?c=1")
            .header("host", "up:1")
            .header("content-length", "999")
            .header("transfer-encoding", "chunked")
            .header("x-k", "v")
            .body(Body::empty())
            .unwrap();
        let mut out = Vec::new();
        encode(&req, &Forwarding::default(), Some(2), &mut out);
        out.extend_from_slice(b"{}");
        assert_eq!(
            out,
            b"POST /a/b?c=1 HTTP/1.1\r\nhost: up:1\r\nx-k: v\r\ncontent-length: 2\r\n\r\n{}"
        );
        let req = Request::get("/x").body(Body::empty()).unwrap();
        out.clear();
        encode(&req, &Forwarding::default(), Some(0), &mut out);
        assert_eq!(out, b"GET /x HTTP/1.1\r\n\r\n");
        let req = Request::put("/x").body(Body::empty()).unwrap();
        out.clear();
        encode(&req, &Forwarding::default(), Some(0), &mut out);
        assert_eq!(out, b"PUT /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        out.clear();
        encode(&req, &Forwarding::default(), None, &mut out);
        assert_eq!(
            out,
            b"PUT /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }
}
