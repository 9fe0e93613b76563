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

/// A response body that records the request's Istio metrics when it ends
/// (or is dropped): the response bytes it carried, the gRPC status from its
/// headers or trailers, and the duration until then.
pub struct Metered {
    inner: Body,
    recording: Option<Recording>,
}

/// What [`Metered`] records into.
pub struct Recording {
    /// The series of the request's stable labels.
    pub series: std::sync::Arc<crate::telemetry::RequestSeries>,
    /// The response status.
    pub status: u16,
    /// The gRPC status, once known.
    pub grpc: Option<u32>,
    /// Envoy's response flags (`-` when none).
    pub flags: &'static str,
    /// When the request arrived.
    pub start: std::time::Instant,
    /// Request body bytes.
    pub request_bytes: u64,
    /// Response body bytes so far.
    pub response_bytes: u64,
}

impl Metered {
    /// `inner`, recording into `recording` when it ends (none: not metered).
    pub fn new(inner: Body, recording: Option<Recording>) -> Metered {
        Metered { inner, recording }
    }

    fn finish(&mut self) {
        if let Some(r) = self.recording.take() {
            r.series.record(
                r.status,
                r.grpc,
                r.flags,
                r.start.elapsed(),
                r.request_bytes,
                r.response_bytes,
            );
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(rec) = this.recording.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        rec.response_bytes += data.len() as u64;
                    } else if let Some(g) = frame
                        .trailers_ref()
                        .and_then(|t| t.get("grpc-status"))
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                    {
                        rec.grpc = Some(g);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
