//! The one body type of the data path: empty, a buffered chunk (local replies,
//! bodies kept for retries and mirrors), or a body streaming from a peer. An
//! upstream response body returns its HTTP/1.1 connection to the pool when
//! it has been read to the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::upstream::Checkin;

/// A request or response body.
pub enum Body {
    /// No body.
    Empty,
    /// One buffered chunk (taken when sent).
    Full(Option<Bytes>),
    /// Streaming from the peer that sent it.
    Incoming(Incoming),
    /// An upstream response, with its connection's way back to the pool.
    Upstream(Incoming, Option<Checkin>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Full(b) => write!(f, "Body::Full({} bytes)", b.as_ref().map_or(0, |b| b.len())),
            Body::Incoming(_) => f.write_str("Body::Incoming"),
            Body::Upstream(..) => f.write_str("Body::Upstream"),
        }
    }
}

impl Body {
    /// A buffered body (`Empty` when `bytes` is empty).
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::Empty
        } else {
            Body::Full(Some(bytes))
        }
    }

    /// An upstream response body; `checkin` returns its connection to the pool.
    pub fn upstream(body: Incoming, checkin: Option<Checkin>) -> Body {
        if body.is_end_stream() {
            if let Some(c) = checkin {
                c.done();
            }
            return Body::Upstream(body, None);
        }
        Body::Upstream(body, checkin)
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Incoming(b) => Pin::new(b).poll_frame(cx),
            Body::Upstream(b, checkin) => {
                let r = Pin::new(&mut *b).poll_frame(cx);
                match &r {
                    Poll::Ready(None) => {
                        if let Some(c) = checkin.take() {
                            c.done();
                        }
                    }
                    Poll::Ready(Some(Ok(_))) if b.is_end_stream() => {
                        if let Some(c) = checkin.take() {
                            c.done();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        checkin.take();
                    }
                    _ => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Incoming(b) | Body::Upstream(b, _) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(b) | Body::Upstream(b, _) => b.size_hint(),
        }
    }
}
