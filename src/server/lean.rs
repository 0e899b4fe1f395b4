//! The lean HTTP/1.1 server path: a client connection's plain requests,
//! served by the connection's own task without hyper, which is nearly all
//! API traffic: `GET`, `POST`, `PUT`, `PATCH` and `DELETE` with no body or
//! a `Content-Length` body (up to 64 KiB) that arrived with its head.
//!
//! Why: by `benches/instructions.sh`, hyper's HTTP/1 server machinery
//! (dispatcher, its buffered IO over `TokioIo`, the service and its boxed
//! future) was about 10,800 of 36,400 instructions per proxied request
//! (428f863), where the work itself (parsing the head into a `HeaderMap`,
//! writing the response head) is a fraction of that. Here the connection
//! task reads into one buffer, parses the head with httparse (as hyper
//! does), shares the head's bytes with the header values rather than
//! copying them, awaits the handler in place, and writes the response head
//! and a small body in one write.
//!
//! Anything else goes to hyper, from the request on which it appears to the
//! end of the connection, with the bytes already read: a body still on its
//! way (after one read that does not wait, for the rest of a small body
//! the network split into segments), larger, or chunked; `HEAD` (its framing rules) and other methods;
//! an upgrade or `Expect`; HTTP/1.0; the h2 preface; a head httparse
//! refuses, too large or with too many fields (counted by reason in
//! `switchyard_http1_handoffs_total`). hyper (behind `framing::Guarded`)
//! then answers exactly as it did before this path existed, so every odd
//! request keeps its established answer, and this path only needs to be
//! right for plain ones.
//!
//! A body taken here reaches the pipeline as [`ClientBody::Arrived`], which
//! it treats as hyper's stream (read once, capped, never retried as a
//! buffered body would be), so how a request's bytes were split into
//! packets changes nothing it does. While the handler runs, the socket is
//! watched as hyper watches it: a client that hangs up cancels the request.
//!
//! Responses follow hyper's rules (RFC 9112 section 6): no body for 1xx,
//! 204 and 304; an empty body gets `content-length: 0`; a `Content-Length`
//! field frames the body, else an exact size does, else chunked; a `date`
//! field when the response has none; `connection: close` when the
//! connection is closing (the client asked, the response said so, or the
//! listener is draining). A body that fails or ends short of its length
//! closes the connection, so the client sees the truncation.

use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};

use super::{Activity, Admission, CLOSE, Handler, Signal};
use crate::body::{Body, ClientBody};
use crate::headers::{FieldSpans, content_length, field_spans, lists_token, span, write_field};
use crate::pipeline::Stamp;
use crate::problem::GatewayError;

/// Most request header fields taken here (hyper's default too); a head
/// with more goes to hyper, which answers 431.
const MAX_HEADERS: usize = 100;

/// Read buffer growth per read.
const READ_CHUNK: usize = 8 * 1024;

/// Fields the pipeline adds to a request on its way upstream
/// (`x-forwarded-*`, `via`, the request id, trace context): room for them
/// up front, since a full `HeaderMap` doubles and rehashes on the next
/// insert.
const REQUEST_FIELDS_ADDED: usize = 8;

/// The largest request body taken here, and only when it arrived with its
/// head (one read): the common small JSON `POST`. A larger one, or one
/// still arriving, is streamed by hyper.
const MAX_ARRIVED: usize = 64 * 1024;

/// Body data up to this size is copied behind the head into one write; a
/// larger piece is written from its own buffer.
const COPY_LIMIT: usize = 16 * 1024;

/// One connection's lean path: what serving its requests needs.
pub(super) struct Lane<'a, H> {
    pub handler: &'a H,
    pub peer: SocketAddr,
    pub https: bool,
    /// The largest head taken here; a longer one goes to hyper (431).
    pub max_head: usize,
    /// The slowloris guard: a head must arrive within this of its first byte.
    pub header_timeout: Option<Duration>,
    /// The connection's watcher: [`CLOSE`] closes the connection at the
    /// next request boundary. (Its task polls the hard stop.)
    pub signal: &'a Signal,
    pub admission: &'a Admission,
    /// Over the connection limit: 503 and close.
    pub shed: bool,
    /// Idle tracking, when the listener has an idle timeout.
    pub activity: Option<&'a Arc<Activity>>,
}

/// How the lean path left a connection.
pub(super) enum End {
    /// Finished: closed by either side, failed, timed out or drained.
    Closed,
    /// hyper serves the rest. `rest` holds the bytes read and not served
    /// (they begin a request); `first`: no request was answered here, so
    /// the connection may still turn out to be HTTP/2.
    Hyper {
        rest: BytesMut,
        first: bool,
        /// Why, for `switchyard_http1_handoffs_total`.
        reason: &'static str,
    },
}

/// A request head taken by the lean path.
struct Head {
    request: Request<Option<ClientBody>>,
    /// The client asked to close after this request.
    close: bool,
}

// Not boxed: `Lean` is the common case, and it moves once.
#[allow(clippy::large_enum_variant)]
enum Parsed {
    Lean(Head),
    Partial,
    /// A whole head whose small body has not all arrived; the request
    /// (head and body) is this long.
    BodyPart(usize),
    /// hyper's, for this reason.
    Hyper(&'static str),
}

/// Serves `io`'s requests until it closes or a request needs hyper.
pub(super) async fn serve<IO, H>(io: &mut IO, lane: Lane<'_, H>) -> End
where
    IO: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::with_capacity(1024);
    let mut first = true;
    // Made at the first head that arrives in pieces, then reused.
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    loop {
        let mut started: Option<Instant> = None;
        let head = loop {
            if !buf.is_empty() {
                match parse(&mut buf, lane.max_head) {
                    Parsed::Lean(head) => break head,
                    Parsed::Partial => {}
                    Parsed::BodyPart(whole) => {
                        // The rest may be here already, in the segments
                        // after the first (a client's small POST split by
                        // the network): one read that does not wait. Else
                        // hyper streams it, as it would any body.
                        buf.reserve(whole - buf.len());
                        let more = poll_fn(|cx| {
                            Poll::Ready(tokio_util::io::poll_read_buf(
                                Pin::new(&mut *io),
                                cx,
                                &mut buf,
                            ))
                        })
                        .await;
                        if let Poll::Ready(Ok(n)) = more
                            && n > 0
                        {
                            continue;
                        }
                        return End::Hyper {
                            rest: buf,
                            first,
                            reason: "body",
                        };
                    }
                    Parsed::Hyper(reason) => {
                        return End::Hyper {
                            rest: buf,
                            first,
                            reason,
                        };
                    }
                }
                // Part of a head is here: the rest must come in time. (A
                // head that arrives in one read, as nearly all do, never
                // reads the clock here.)
                if let Some(after) = lane.header_timeout {
                    let deadline = *started.get_or_insert_with(Instant::now) + after;
                    match &mut timer {
                        Some(t) if t.deadline() == deadline => {}
                        Some(t) => t.as_mut().reset(deadline),
                        None => timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                }
            }
            let waiting = !buf.is_empty();
            let read = poll_fn(|cx| {
                if !waiting && lane.signal.state.load(Ordering::Acquire) == CLOSE {
                    return Poll::Ready(Read::Close);
                }
                if waiting
                    && let Some(t) = timer.as_mut()
                    && t.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Read::Timeout);
                }
                if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                    buf.reserve(READ_CHUNK);
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut buf) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(Read::Eof),
                    Poll::Ready(Ok(_)) => Poll::Ready(Read::Data),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match read {
                Read::Data => {}
                Read::Eof | Read::Close => return End::Closed,
                Read::Timeout => {
                    let after = lane.header_timeout.unwrap_or_default();
                    let answer = GatewayError::HeaderTimeout { after }.to_http1_bytes();
                    let _ = io.write_all(&answer).await;
                    let _ = io.flush().await;
                    return End::Closed;
                }
            }
        };
        first = false;
        // One request's answer: the handler runs while the client's socket
        // is watched as hyper watches it (a client that closes or resets
        // its connection cancels the request, upstream exchange included,
        // as nginx does unless told to ignore client aborts; bytes of a
        // pipelined next request are kept in `buf`, and reading stops until
        // it is served); then the response is written. Whether the
        // connection stays open. Written here rather than as an `async fn`:
        // that would be a future of its own per request (6.4 KB, the
        // handler's inside it), copied whole into this one's state each
        // time.
        let keep = 'answer: {
            let _active = lane.activity.map(Activity::begin);
            let (request_slot, over) = lane.admission.request_here();
            let (resp, stamp) = match lane.admission.overload(lane.shed, over) {
                Some(e) => (e.to_response(None), Stamp::default()),
                None => {
                    let mut call = pin!(lane.handler.call_stamped(
                        head.request,
                        lane.peer,
                        lane.https
                    ));
                    let mut watch = buf.is_empty();
                    let answered = poll_fn(|cx| {
                        if let Poll::Ready(resp) = call.as_mut().poll(cx) {
                            return Poll::Ready(Some(resp));
                        }
                        // Usually no system call: the runtime knows the socket has
                        // nothing to read since the head's read drained it.
                        if watch {
                            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut buf) {
                                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                                    return Poll::Ready(None);
                                }
                                Poll::Ready(Ok(_)) => watch = false,
                                Poll::Pending => {}
                            }
                        }
                        Poll::Pending
                    })
                    .await;
                    match answered {
                        Some(resp) => resp,
                        None => {
                            tracing::debug!(peer = %lane.peer, "client closed the connection mid-request: cancelled");
                            break 'answer false;
                        }
                    }
                }
            };
            drop(request_slot);
            let closing =
                head.close || lane.shed || lane.signal.state.load(Ordering::Acquire) == CLOSE;
            write_response(io, resp, &stamp, closing, &mut out).await
        };
        if !keep {
            let _ = io.shutdown().await;
            return End::Closed;
        }
    }
}

enum Read {
    Data,
    Eof,
    Close,
    Timeout,
}

/// Most fields a [`Stamp`] sets (its replacing ones: `x-cache`, the
/// request id, two `RateLimit` fields, three version fields, two
/// lifecycle ones).
const STAMP_SETS: usize = 9;

/// Parses the head at the start of `buf`; a lean one is split off it.
fn parse(buf: &mut BytesMut, max_head: usize) -> Parsed {
    // Offsets of each field's name and value in the head, so the head can
    // be frozen once and the values shared, not copied.
    let mut fields = FieldSpans::<MAX_HEADERS>::new();
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let (len, method, target, count) = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(len)) => {
            let method = match req.method {
                Some("GET") => Method::GET,
                Some("POST") => Method::POST,
                Some("PUT") => Method::PUT,
                Some("PATCH") => Method::PATCH,
                Some("DELETE") => Method::DELETE,
                _ => return Parsed::Hyper("method"),
            };
            if req.version != Some(1) {
                return Parsed::Hyper("version");
            }
            let Some(path) = req.path else {
                return Parsed::Hyper("malformed");
            };
            let target = span(buf, path.as_bytes());
            field_spans(buf, req.headers, &mut fields);
            (len, method, target, req.headers.len())
        }
        Ok(httparse::Status::Partial) if buf.len() <= max_head => return Parsed::Partial,
        // Too long, too many fields, or malformed: hyper answers.
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Hyper("head_too_large");
        }
        Err(_) if buf.starts_with(b"PRI * HTTP/2.0") => return Parsed::Hyper("h2"),
        Err(_) => return Parsed::Hyper("malformed"),
    };
    if len > max_head {
        return Parsed::Hyper("head_too_large");
    }
    // Frozen once, its bytes shared by the target and the values; a head
    // that turns out to be hyper's is put back (once per connection at
    // most: hyper keeps the connection then).
    let bytes = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(bytes.slice(target.0 as usize..target.1 as usize)) else {
        return undo(buf, bytes, "malformed");
    };
    let mut headers = crate::headers::pooled_map(count + REQUEST_FIELDS_ADDED);
    let mut close = false;
    let mut length: Option<usize> = None;
    for &(n0, n1, v0, v1) in &fields[..count] {
        let (n0, n1, v0, v1) = (n0 as usize, n1 as usize, v0 as usize, v1 as usize);
        let Ok(name) = crate::headers::parse_name(&bytes[n0..n1]) else {
            return undo(buf, bytes, "malformed");
        };
        if name == CONTENT_LENGTH {
            // One length, of a body that is here whole and small: a
            // second length (a framing violation `framing::Guarded`
            // answers), or a body still on its way, is hyper's.
            // One number: a list (`5, 5`), which a response may carry, is
            // refused in a request, by hyper's path (400).
            let value = &bytes[v0..v1];
            let Some(n) = content_length(value)
                .filter(|_| !value.contains(&b','))
                .and_then(|n| usize::try_from(n).ok())
            else {
                return undo(buf, bytes, "malformed");
            };
            if length.is_some() {
                return undo(buf, bytes, "framing");
            }
            if n > MAX_ARRIVED {
                return undo(buf, bytes, "body");
            }
            if n > buf.len() {
                undo(buf, bytes, "body");
                return Parsed::BodyPart(n + len);
            }
            length = Some(n);
        } else if name == TRANSFER_ENCODING {
            return undo(buf, bytes, "body");
        } else if name == UPGRADE {
            return undo(buf, bytes, "upgrade");
        } else if name == EXPECT {
            return undo(buf, bytes, "expect");
        } else if name == CONNECTION && lists_token(&bytes[v0..v1], b"close") {
            close = true;
        }
        let Ok(value) = HeaderValue::from_maybe_shared(bytes.slice(v0..v1)) else {
            return undo(buf, bytes, "malformed");
        };
        headers.append(name, value);
    }
    let body = match length {
        Some(n) if n > 0 => Some(ClientBody::Arrived(buf.split_to(n).freeze())),
        _ => None,
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Parsed::Lean(Head { request, close })
}

/// Puts a frozen head back in front of the buffer for hyper (rare: a
/// target or value httparse accepts and `http` does not).
fn undo(buf: &mut BytesMut, head: Bytes, reason: &'static str) -> Parsed {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(&head);
    whole.extend_from_slice(buf);
    *buf = whole;
    Parsed::Hyper(reason)
}

/// How a response body goes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (1xx, 204, 304, or empty).
    None,
    /// Exactly this many bytes left.
    Length(u64),
    Chunked,
}

/// Writes `resp`; whether the connection may serve another request.
async fn write_response<IO>(
    io: &mut IO,
    resp: Response<Body>,
    stamp: &Stamp,
    mut close: bool,
    out: &mut Vec<u8>,
) -> bool
where
    IO: AsyncWrite + Unpin,
{
    let (parts, mut body) = resp.into_parts();
    let raw = body.take_raw_fields();
    let mut body = pin!(body);
    let status = parts.status;
    out.clear();
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let can_body = !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED);
    let empty = body.is_end_stream();
    let mut length: Option<u64> = None;
    let mut wrote_date = false;
    let mut said_close = false;
    let mut trailers_allowed: Vec<HeaderName> = Vec::new();
    // The names the stamp sets: the response's own fields of those names
    // give way, as `Stamp::apply`'s inserts replace them.
    let mut set = [const { None::<&HeaderName> }; STAMP_SETS];
    let mut sets = 0;
    stamp.each(|name, _, replaces| {
        if replaces {
            debug_assert!(sets < STAMP_SETS, "STAMP_SETS is the most a stamp replaces");
            if sets < STAMP_SETS {
                set[sets] = Some(name);
                sets += 1;
            }
        }
    });
    // Fields left as they arrived (`RawFields`) come first: their names
    // were checked against the stamp's and the framing ones settled when
    // the head was read, and the map holds nothing but the gateway's own.
    if let Some(raw) = &raw {
        raw.write(out);
        wrote_date = raw.has_date();
        length = raw.length();
    }
    for (name, value) in &parts.headers {
        if set[..sets].contains(&Some(name)) {
            continue;
        }
        if name == CONTENT_LENGTH {
            // An empty body is framed below; a second length is dropped.
            if !can_body || empty || length.is_some() {
                continue;
            }
            let Some(n) = content_length(value.as_bytes()) else {
                // hyper refuses such a response too: the client gets 500.
                return write_failed(io, out).await;
            };
            length = Some(n);
        } else if name == TRANSFER_ENCODING {
            // The framing is this connection's to choose.
            continue;
        } else if name == CONNECTION {
            if lists_token(value.as_bytes(), b"close") {
                close = true;
                said_close = true;
            }
        } else if name == DATE {
            wrote_date = true;
        } else if name == TRAILER
            && let Ok(v) = value.to_str()
        {
            trailers_allowed.extend(
                v.split(',')
                    .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok()),
            );
        }
        write_field(out, name, value);
    }
    crate::headers::recycle_map(parts.headers);
    stamp.each(|name, value, _| write_field(out, name, value));
    let framing = if !can_body {
        Framing::None
    } else if empty {
        out.extend_from_slice(b"content-length: 0\r\n");
        Framing::None
    } else if let Some(n) = length {
        Framing::Length(n)
    } else if let Some(n) = body.size_hint().exact() {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
        Framing::Length(n)
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    };
    if close && !said_close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&date::now());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");

    let mut left = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    if matches!(framing, Framing::Length(_) | Framing::Chunked) {
        loop {
            // Whatever the body has ready goes out with the head; the head
            // is sent before waiting for more.
            let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(f) => f,
                Poll::Pending => {
                    // Flushed too: over TLS the records could otherwise wait
                    // in the session (a server-sent event stream must reach
                    // the client as each event does).
                    if !out.is_empty() {
                        if send(io, out, &[]).await.is_err() || io.flush().await.is_err() {
                            return false;
                        }
                        out.clear();
                    }
                    poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                }
            };
            let frame = match frame {
                None => break,
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "response body failed: closing the connection");
                    let _ = send(io, out, &[]).await;
                    return false;
                }
            };
            let mut data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    if let (Framing::Chunked, Ok(trailers)) = (framing, frame.into_trailers()) {
                        out.extend_from_slice(b"0\r\n");
                        for (name, value) in &trailers {
                            if trailers_allowed.contains(name) && trailer_field_allowed(name) {
                                out.extend_from_slice(name.as_str().as_bytes());
                                out.extend_from_slice(b": ");
                                out.extend_from_slice(value.as_bytes());
                                out.extend_from_slice(b"\r\n");
                            }
                        }
                        out.extend_from_slice(b"\r\n");
                        return finish(io, out, close).await;
                    }
                    continue;
                }
            };
            if data.is_empty() {
                continue;
            }
            if framing == Framing::Chunked {
                push_hex(out, data.len());
                out.extend_from_slice(b"\r\n");
            } else {
                if data.len() as u64 > left {
                    // More than the length said: the rest is dropped and
                    // the connection closed, as hyper does.
                    data.truncate(left as usize);
                    close = true;
                }
                left -= data.len() as u64;
            }
            if data.len() <= COPY_LIMIT {
                out.extend_from_slice(&data);
            } else {
                if send(io, out, &data).await.is_err() {
                    return false;
                }
                out.clear();
            }
            if framing == Framing::Chunked {
                out.extend_from_slice(b"\r\n");
            } else if left == 0 {
                break;
            }
        }
        match framing {
            Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
            // Ended short of its length: the client must see it cut.
            _ if left > 0 => close = true,
            _ => {}
        }
    }
    finish(io, out, close).await
}

/// Sends what is left of a response; whether the connection stays open.
async fn finish<IO: AsyncWrite + Unpin>(io: &mut IO, out: &[u8], close: bool) -> bool {
    if send(io, out, &[]).await.is_err() || io.flush().await.is_err() {
        return false;
    }
    !close
}

/// A response hyper would refuse to write: 500, and close.
async fn write_failed<IO: AsyncWrite + Unpin>(io: &mut IO, out: &mut Vec<u8>) -> bool {
    out.clear();
    out.extend_from_slice(
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    );
    let _ = finish(io, out, true).await;
    false
}

/// Writes `a` then `b`, in as few system calls as the socket allows.
async fn send<IO: AsyncWrite + Unpin>(io: &mut IO, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() {
        let n = if b.is_empty() {
            io.write(a).await?
        } else {
            io.write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
                .await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        if n < a.len() {
            a = &a[n..];
        } else {
            b = &b[n - a.len()..];
            a = &[];
        }
    }
    io.write_all(b).await
}

/// `n` in lower-case hex (a chunk-size line).
fn push_hex(out: &mut Vec<u8>, n: usize) {
    let digits = (usize::BITS - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(n >> (i * 4)) & 0xf]);
    }
}

/// Trailer fields a sender must not use (RFC 9110 section 6.5.1), as hyper
/// filters them.
fn trailer_field_allowed(name: &HeaderName) -> bool {
    use http::header::*;
    !matches!(
        *name,
        AUTHORIZATION
            | CACHE_CONTROL
            | CONTENT_ENCODING
            | CONTENT_LENGTH
            | CONTENT_RANGE
            | CONTENT_TYPE
            | HOST
            | MAX_FORWARDS
            | SET_COOKIE
            | TRAILER
            | TRANSFER_ENCODING
            | TE
    )
}

/// The `date` field's value, formatted once a second per thread (as hyper
/// caches it).
mod date {
    use std::cell::RefCell;
    use std::time::{Duration, SystemTime};

    /// "Sun, 06 Nov 1994 08:49:37 GMT"
    const LEN: usize = 29;

    thread_local! {
        static CACHED: RefCell<(SystemTime, [u8; LEN])> =
            const { RefCell::new((SystemTime::UNIX_EPOCH, [0; LEN])) };
    }

    pub(super) fn now() -> [u8; LEN] {
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            let now = SystemTime::now();
            if now >= c.0 {
                let secs = now
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                let text = httpdate::fmt_http_date(at);
                c.1.copy_from_slice(&text.as_bytes()[..LEN]);
                c.0 = at + Duration::from_secs(1);
            }
            c.1
        })
    }
}
