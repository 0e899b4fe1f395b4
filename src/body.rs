//! The one body type the gateway sends and receives: a streamed hyper body
//! (with an optional byte cap), a buffered `Bytes`, or nothing. An enum
//! rather than a boxed trait object, so the request path allocates nothing
//! for bodies.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

/// Error from a streamed body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The peer's stream failed (reset, truncated, timed out).
    #[error("body stream failed")]
    Stream(#[source] hyper::Error),
    /// More bytes than the route allows.
    #[error("body exceeds {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
}

pin_project_lite::pin_project! {
    /// A request or response body.
    #[project = BodyProj]
    pub enum Body {
        /// Streamed from a peer; errors once more than `limit` bytes arrive.
        Stream { #[pin] inner: Incoming, limit: u64, seen: u64 },
        /// Fully buffered.
        Full { data: Option<Bytes> },
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
        Body::limited(inner, u64::MAX)
    }

    /// A streamed body that fails with [`BodyError::TooLarge`] past `limit` bytes.
    pub fn limited(inner: Incoming, limit: u64) -> Body {
        Body::Stream {
            inner,
            limit,
            seen: 0,
        }
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
            BodyProj::Stream { inner, limit, seen } => match inner.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        *seen += data.len() as u64;
                        if *seen > *limit {
                            return Poll::Ready(Some(Err(BodyError::TooLarge { limit: *limit })));
                        }
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Stream(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Stream { inner, .. } => inner.is_end_stream(),
            Body::Full { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Stream { inner, .. } => inner.size_hint(),
            Body::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
