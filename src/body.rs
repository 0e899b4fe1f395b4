//! The one body type the gateway sends and receives: a streamed hyper body
//! (with an optional byte cap), a buffered `Bytes`, or nothing. An enum
//! rather than a boxed trait object, so the request path allocates nothing
//! for bodies. An upstream response body carries its connection's
//! [`Reuse`] and hands the connection back to the pool when it ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use crate::upstream::Reuse;
use crate::upstream::h1::ResponseBody;

/// Error from a streamed body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The peer's stream failed (reset, truncated, malformed).
    #[error("body stream failed")]
    Stream(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// More bytes than the route allows.
    #[error("body exceeds {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// The peer sent nothing for longer than the read timeout mid-body.
    #[error("no body data for {after:?}")]
    Timeout {
        /// The read timeout.
        after: Duration,
    },
}

/// The longest wait for a body's next bytes, on a timer the caller keeps
/// (its own, or a connection's shared one): set when a read first has to
/// wait, and set again only when bytes came since, so a body that arrives
/// with its head never touches a timer.
#[derive(Debug)]
pub(crate) struct Gap {
    after: Duration,
    /// The timer is set for this body.
    armed: bool,
    /// Bytes arrived since the timer was last set.
    progress: bool,
}

impl Gap {
    pub(crate) fn new(after: Duration) -> Gap {
        Gap {
            after,
            armed: false,
            progress: false,
        }
    }

    /// The wait this allows.
    pub(crate) fn after(&self) -> Duration {
        self.after
    }

    /// Bytes arrived.
    pub(crate) fn progress(&mut self) {
        self.progress = true;
    }

    /// A read is pending: set `timer` if needed; whether it has fired.
    pub(crate) fn poll_expired(
        &mut self,
        timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
        cx: &mut Context<'_>,
    ) -> bool {
        let timer = match timer {
            Some(t) => {
                if !self.armed || self.progress {
                    t.as_mut().reset(tokio::time::Instant::now() + self.after);
                }
                t
            }
            None => timer.insert(Box::pin(tokio::time::sleep(self.after))),
        };
        self.armed = true;
        self.progress = false;
        timer.as_mut().poll(cx).is_ready()
    }
}

/// A [`Gap`] on its own timer: a client's request body, or an upstream
/// response body read through hyper's client.
#[derive(Debug)]
pub struct ReadTimeout {
    gap: Gap,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ReadTimeout {
    fn new(after: Duration) -> ReadTimeout {
        ReadTimeout {
            gap: Gap::new(after),
            timer: None,
        }
    }
}

/// A client request's body as the server received it: streamed by hyper,
/// or (the lean HTTP/1.1 path) a small body that arrived whole with its
/// head. Either way the pipeline treats it as a stream read once: whether
/// a request can be retried must not depend on how its bytes happened to
/// be split into packets.
#[derive(Debug)]
pub enum ClientBody {
    /// hyper's body stream.
    Stream(Incoming),
    /// Every byte of a `Content-Length` body, already read.
    Arrived(Bytes),
}

impl ClientBody {
    /// Whether there is nothing (more) to read.
    pub fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Stream(b) => b.is_end_stream(),
            ClientBody::Arrived(b) => b.is_empty(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request or response body.
    #[project = BodyProj]
    pub enum Body {
        /// Streamed from a peer; errors once more than `limit` bytes arrive.
        /// `reuse`, if any, goes back to the upstream pool at end of stream.
        /// `timeout`, if any, bounds each wait for the next frame.
        Stream { #[pin] inner: Incoming, limit: u64, seen: u64, reuse: Option<Reuse>, timeout: Option<ReadTimeout> },
        /// Fully buffered.
        Full { data: Option<Bytes> },
        /// A client's body that arrived whole ([`ClientBody::Arrived`]):
        /// yielded like a stream (read once, never cloned, capped at
        /// `limit` bytes).
        Arrived { data: Option<Bytes>, limit: u64 },
        /// An upstream response read straight from its connection by the
        /// lean HTTP/1.1 client.
        Lean { inner: ResponseBody },
    }
}

impl Body {
    /// An empty body.
    pub fn empty() -> Body {
        Body::Full { data: None }
    }

    /// A buffered body.
    pub fn full(data: impl Into<Bytes>) -> Body {
        let data = data.into();
        Body::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// A streamed body without a cap.
    pub fn stream(inner: Incoming) -> Body {
        Body::Stream {
            inner,
            limit: u64::MAX,
            seen: 0,
            reuse: None,
            timeout: None,
        }
    }

    /// A client's body that fails with [`BodyError::TooLarge`] past
    /// `limit` bytes.
    pub fn limited(inner: ClientBody, limit: u64) -> Body {
        match inner {
            ClientBody::Stream(inner) => Body::stream(inner).capped(limit),
            ClientBody::Arrived(data) => Body::arrived(data, limit),
        }
    }

    /// A client's request body: capped at `limit` bytes, and (streamed)
    /// failing with [`BodyError::Timeout`] when no frame arrives for
    /// `read_timeout`.
    pub fn request(inner: ClientBody, limit: u64, read_timeout: Duration) -> Body {
        match inner {
            ClientBody::Stream(inner) => Body::Stream {
                inner,
                limit,
                seen: 0,
                reuse: None,
                timeout: Some(ReadTimeout::new(read_timeout)),
            },
            ClientBody::Arrived(data) => Body::arrived(data, limit),
        }
    }

    fn arrived(data: Bytes, limit: u64) -> Body {
        Body::Arrived {
            data: (!data.is_empty()).then_some(data),
            limit,
        }
    }

    /// An upstream response body: `reuse`, if any, returns its connection
    /// to the pool once the body has been read to the end (right away if
    /// it is empty); with `gap`, a wait longer than that for the next
    /// frame fails with [`BodyError::Timeout`].
    pub(crate) fn upstream(inner: Incoming, reuse: Option<Reuse>, gap: Option<Duration>) -> Body {
        if inner.is_end_stream() {
            if let Some(r) = reuse {
                r.release();
            }
            return Body::stream(inner);
        }
        Body::Stream {
            inner,
            limit: u64::MAX,
            seen: 0,
            reuse,
            timeout: gap.map(ReadTimeout::new),
        }
    }

    /// A response body of the lean HTTP/1.1 client.
    pub(crate) fn lean(inner: ResponseBody) -> Body {
        Body::Lean {
            inner: inner.start(),
        }
    }

    /// A proxied response's own fields, when the lean client left them
    /// unparsed for the lean server to write as they are (see
    /// `upstream::h1::RawFields`); taken, they are no longer the body's.
    pub(crate) fn take_raw_fields(&mut self) -> Option<crate::upstream::h1::RawFields> {
        match self {
            Body::Lean { inner } => inner.raw_fields().take(),
            _ => None,
        }
    }

    /// The unparsed fields (see [`Body::take_raw_fields`]), to add to.
    pub(crate) fn raw_fields_mut(&mut self) -> Option<&mut crate::upstream::h1::RawFields> {
        match self {
            Body::Lean { inner } => inner.raw_fields().as_mut(),
            _ => None,
        }
    }

    /// The bytes of a buffered body (empty when there is none); `None`
    /// for a streamed one.
    pub fn buffered(&self) -> Option<&Bytes> {
        static EMPTY: Bytes = Bytes::new();
        match self {
            Body::Full { data } => Some(data.as_ref().unwrap_or(&EMPTY)),
            Body::Stream { .. } | Body::Arrived { .. } | Body::Lean { .. } => None,
        }
    }

    /// A copy, if this body can be sent twice (buffered or empty; a
    /// streamed body can be read only once).
    pub fn try_clone(&self) -> Option<Body> {
        match self {
            Body::Full { data } => Some(Body::Full { data: data.clone() }),
            Body::Stream { .. } | Body::Arrived { .. } | Body::Lean { .. } => None,
        }
    }

    /// The same body, failing with [`BodyError::TooLarge`] past `limit`
    /// bytes (a buffered body is not checked: it is ours).
    pub fn capped(mut self, cap: u64) -> Body {
        if let Body::Stream { limit, .. } | Body::Arrived { limit, .. } = &mut self {
            *limit = (*limit).min(cap);
        }
        self
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            BodyProj::Stream {
                mut inner,
                limit,
                seen,
                reuse,
                timeout,
            } => match inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(t) = timeout {
                        t.gap.progress();
                    }
                    if let Some(data) = frame.data_ref() {
                        *seen += data.len() as u64;
                        if *seen > *limit {
                            // Dropping `reuse` unread closes that connection.
                            reuse.take();
                            return Poll::Ready(Some(Err(BodyError::TooLarge { limit: *limit })));
                        }
                    }
                    // hyper's server stops polling once `is_end_stream`, so
                    // the last frame may be the last poll.
                    if inner.is_end_stream()
                        && let Some(r) = reuse.take()
                    {
                        r.release();
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => {
                    reuse.take();
                    Poll::Ready(Some(Err(BodyError::Stream(e.into()))))
                }
                Poll::Ready(None) => {
                    if let Some(r) = reuse.take() {
                        r.release();
                    }
                    Poll::Ready(None)
                }
                Poll::Pending => {
                    if let Some(t) = timeout
                        && t.gap.poll_expired(&mut t.timer, cx)
                    {
                        return Poll::Ready(Some(Err(BodyError::Timeout {
                            after: t.gap.after(),
                        })));
                    }
                    Poll::Pending
                }
            },
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Arrived { data, limit } => Poll::Ready(data.take().map(|d| {
                if d.len() as u64 > *limit {
                    Err(BodyError::TooLarge { limit: *limit })
                } else {
                    Ok(Frame::data(d))
                }
            })),
            BodyProj::Lean { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Stream { inner, .. } => inner.is_end_stream(),
            Body::Full { data } | Body::Arrived { data, .. } => data.is_none(),
            Body::Lean { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Stream { inner, .. } => inner.size_hint(),
            Body::Full { data } | Body::Arrived { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Body::Lean { inner } => inner.size_hint(),
        }
    }
}
