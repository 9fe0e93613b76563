//! The one body type of the data path: empty, a buffered chunk (local replies,
//! bodies kept for retries and mirrors), or a body streaming from a peer. An
//! upstream response body returns its HTTP/1.1 connection to the pool when
//! it has been read to the end.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::upstream::Checkin;

/// A body's error: hyper's, or an upstream connection's read by the
/// request's own task ([`crate::upstream::h1`]).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A request or response body.
pub enum Body {
    /// No body.
    Empty,
    /// One buffered chunk (taken when sent).
    Full(Option<Bytes>),
    /// Streaming from the peer that sent it.
    Incoming(Incoming),
    /// Streaming from downstream, each frame counted as its stream's
    /// activity (the stream idle timeout, [`crate::http::idle`]).
    Watched(Incoming, std::sync::Arc<crate::http::idle::Activity>),
    /// An upstream response, with its connection's way back to the pool.
    Upstream(Incoming, Option<Checkin>),
    /// An upstream HTTP/1.1 response read by the request's own task.
    H1(Box<crate::upstream::h1::Incoming>),
    /// An upstream response still streaming when the route timeout applies:
    /// Envoy's route timeout runs until the response is complete.
    Deadline(Box<Deadline>),
}

/// A response body that must end by the route's deadline; past it the body
/// fails with [`RouteTimeout`] (the downstream stream is reset, an HTTP/1.1
/// connection closed), the cluster counts an `upstream_rq_timeout`, and the
/// request's metrics and access log carry Envoy's `UT` flag.
pub struct Deadline {
    inner: Body,
    timer: Pin<Box<tokio::time::Sleep>>,
    cluster: std::sync::Arc<crate::cluster::Cluster>,
}

/// The error of a response body cut by the route timeout ([`Deadline`]).
#[derive(Debug)]
pub struct RouteTimeout;

impl std::fmt::Display for RouteTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream request timeout")
    }
}

impl std::error::Error for RouteTimeout {}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Full(b) => write!(f, "Body::Full({} bytes)", b.as_ref().map_or(0, |b| b.len())),
            Body::Incoming(_) => f.write_str("Body::Incoming"),
            Body::Watched(..) => f.write_str("Body::Watched"),
            Body::Upstream(..) => f.write_str("Body::Upstream"),
            Body::H1(_) => f.write_str("Body::H1"),
            Body::Deadline(d) => write!(f, "Body::Deadline({:?})", d.inner),
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

    /// `inner`, failing if it has not ended by `deadline` (see [`Deadline`]).
    pub fn deadline(
        inner: Body,
        deadline: std::time::Instant,
        cluster: std::sync::Arc<crate::cluster::Cluster>,
    ) -> Body {
        Body::Deadline(Box::new(Deadline {
            inner,
            timer: Box::pin(tokio::time::sleep_until(deadline.into())),
            cluster,
        }))
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
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Body::Watched(b, activity) => {
                let r = Pin::new(b).poll_frame(cx);
                if let Poll::Ready(Some(Ok(_))) = &r {
                    activity.touch();
                }
                r.map_err(Into::into)
            }
            Body::H1(b) => b.poll_frame(cx),
            Body::Deadline(d) => {
                if let Poll::Ready(r) = Pin::new(&mut d.inner).poll_frame(cx) {
                    return Poll::Ready(r);
                }
                if d.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                d.cluster
                    .stats
                    .rq_timeout
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Drops the upstream side (its connection is not reused).
                d.inner = Body::Empty;
                Poll::Ready(Some(Err(Box::new(RouteTimeout))))
            }
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
                r.map_err(Into::into)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(b) => b.is_none(),
            Body::Incoming(b) | Body::Watched(b, _) | Body::Upstream(b, _) => b.is_end_stream(),
            Body::H1(b) => b.is_end_stream(),
            Body::Deadline(d) => d.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Incoming(b) | Body::Watched(b, _) | Body::Upstream(b, _) => b.size_hint(),
            Body::H1(b) => b.size_hint(),
            Body::Deadline(d) => d.inner.size_hint(),
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
    /// The access log line to write at the end, when access logging is on.
    pub log: Option<Box<PendingLog>>,
    /// The request's span, when it is traced and reported.
    pub span: Option<Box<crate::telemetry::span::ActiveSpan>>,
}

/// What an access log line needs from the request, kept until it ends.
#[derive(Debug)]
pub struct PendingLog {
    /// Where the line goes.
    pub sink: std::sync::Arc<AccessLogSink>,
    /// When the request arrived (wall clock).
    pub start_time: std::time::SystemTime,
    /// Request method.
    pub method: String,
    /// `:path`.
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// `:authority`.
    pub authority: Option<String>,
    /// `user-agent`.
    pub user_agent: Option<String>,
    /// `x-request-id`.
    pub request_id: Option<String>,
    /// `x-forwarded-for`.
    pub forwarded_for: Option<String>,
    /// The upstream cluster.
    pub cluster: Option<String>,
    /// `x-envoy-upstream-service-time`.
    pub upstream_time: Option<std::time::Duration>,
    /// The listener's address.
    pub local: std::net::SocketAddr,
    /// The peer.
    pub remote: std::net::SocketAddr,
}

/// An access log destination (a file, or standard output), one JSON object
/// per line.
pub struct AccessLogSink {
    out: std::sync::Mutex<Box<dyn std::io::Write + Send>>,
}

impl std::fmt::Debug for AccessLogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLogSink")
    }
}

impl AccessLogSink {
    /// Opens `path` for appending (`-`: standard output).
    pub fn open(path: &std::path::Path) -> std::io::Result<AccessLogSink> {
        let out: Box<dyn std::io::Write + Send> = if path.as_os_str() == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        Ok(AccessLogSink {
            out: std::sync::Mutex::new(out),
        })
    }

    fn write(&self, line: &str) {
        use std::io::Write as _;
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

impl Metered {
    /// `inner`, recording into `recording` when it ends (none: not metered).
    pub fn new(inner: Body, recording: Option<Recording>) -> Metered {
        Metered { inner, recording }
    }

    fn finish(&mut self) {
        if let Some(r) = self.recording.take() {
            let duration = r.start.elapsed();
            r.series.record(
                r.status,
                r.grpc,
                r.flags,
                duration,
                r.request_bytes,
                r.response_bytes,
            );
            if let Some(span) = r.span {
                span.finish(r.status, r.flags, r.request_bytes, r.response_bytes);
            }
            if let Some(log) = r.log {
                let mut e = crate::telemetry::AccessLogEntry::new(log.start_time);
                e.method = Some(&log.method);
                e.path = Some(&log.path);
                e.protocol = Some(log.protocol);
                e.response_code = r.status;
                e.response_flags = r.flags;
                e.bytes_received = r.request_bytes;
                e.bytes_sent = r.response_bytes;
                e.duration = duration;
                e.upstream_service_time = log.upstream_time;
                e.x_forwarded_for = log.forwarded_for.as_deref();
                e.user_agent = log.user_agent.as_deref();
                e.request_id = log.request_id.as_deref();
                e.authority = log.authority.as_deref();
                e.upstream_cluster = log.cluster.as_deref();
                e.downstream_local_address = Some(log.local);
                e.downstream_remote_address = Some(log.remote);
                log.sink.write(&crate::telemetry::access_log_json(&e));
            }
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
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
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
            Poll::Ready(Some(Err(err))) => {
                // Envoy flags a response cut by the route timeout `UT`,
                // though its status (sent with the head) stays. Only proxied
                // responses have a body the deadline can cut, and they carry
                // no flags of their own.
                if err.is::<RouteTimeout>()
                    && let Some(rec) = this.recording.as_mut()
                {
                    rec.flags = "UT";
                }
                this.finish();
            }
            Poll::Ready(None) => this.finish(),
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
