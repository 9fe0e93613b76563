//! The plaintext xDS port's own gRPC transport: HTTP/2 ([`http2`], written
//! for this port) with gRPC's framing, serving exactly the two ADS methods,
//! one task per connection.
//!
//! Why not tonic, nor the `h2` crate, here: an ADS connection is one long
//! stream of small messages, and under a push every one of thousands of
//! connections sends one response and reads one ACK. Through hyper and tonic
//! each message crosses three tasks (the connection loop, hyper's stream task,
//! hyper's connection task) and several body layers; a general HTTP/2 library
//! keeps its streams behind locks and wakers and polls each through a set of
//! futures. Here the connection's HTTP/2 state, its calls and their ADS loops
//! ([`super::connection::serve`], running inside [`super::Served`]) are polled
//! by one task with one pass over its (usually one) calls, so a response is
//! generated, framed into the output buffer and written with one `write` in
//! one turn, and an ACK is read, decoded and applied in the next. The mTLS
//! port keeps tonic (TLS and client certificates); both run the same ADS code.
//!
//! What it implements of gRPC over HTTP/2: `POST` with `content-type:
//! application/grpc[+proto]` to `StreamAggregatedResources` or
//! `DeltaAggregatedResources` (anything else: `UNIMPLEMENTED`), uncompressed
//! length-prefixed messages both ways, bounded by
//! [`super::Limits::max_message_bytes`], `grpc-status`/`grpc-message` trailers,
//! HTTP/2 keepalive pings on idle connections (as grpc-go's server, istiod's,
//! does: a connection that has read nothing for the interval is pinged, and
//! one that then reads nothing, pong included, for the timeout is dropped; a
//! busy one is never pinged, so a large push queued ahead of a PING cannot
//! get a live proxy dropped) and, on
//! shutdown, GOAWAY once the streams have ended.

use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::Status;

use super::connection::{self, Requests};
use super::wave::Wave;
use super::{AdsServer, Peer, Served, delta, sotw};

mod http2;

/// `StreamAggregatedResources`'s path.
pub const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// `DeltaAggregatedResources`'s path.
pub const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// HTTP/2 settings of the port (the same as the mTLS port's tonic server).
#[derive(Debug, Clone, Copy)]
pub struct Http2 {
    /// Connection-level receive window.
    pub connection_window: u32,
    /// Per-stream receive window.
    pub stream_window: u32,
    /// Streams one connection may open at once.
    pub max_concurrent_streams: u32,
    /// How long a connection may read nothing before it is pinged.
    pub keepalive_interval: Duration,
    /// How long a pinged connection may then read nothing before it is dropped.
    pub keepalive_timeout: Duration,
}

impl Default for Http2 {
    fn default() -> Self {
        Http2 {
            connection_window: 4 << 20,
            stream_window: 1 << 20,
            max_concurrent_streams: 128,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// Accepts connections on `listener` until `stop` resolves, then asks every
/// connection to finish (its streams end with `UNAVAILABLE` through
/// [`AdsServer::close`], then GOAWAY) and waits for them.
pub async fn serve(
    listener: TcpListener,
    server: AdsServer,
    settings: Http2,
    stop: impl Future<Output = ()>,
) {
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "ADS: TCP_NODELAY");
                    }
                    connections.spawn(serve_connection(
                        server.clone(),
                        tcp,
                        addr,
                        settings,
                        closing.clone(),
                    ));
                }
                // Out of file descriptors and the like: wait, then go on.
                Err(e) => {
                    tracing::warn!(error = %e, "ADS: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    closing_tx.send_replace(true);
    while connections.join_next().await.is_some() {}
}

/// One HTTP/2 connection: its calls, keepalive and shutdown, in this task
/// ([`http2::Connection`] does the protocol).
async fn serve_connection(
    server: AdsServer,
    tcp: TcpStream,
    addr: SocketAddr,
    settings: Http2,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let started = tokio::time::Instant::now();
    let last_read = Arc::new(AtomicU64::new(0));
    let mut io = Tracked {
        io: tcp,
        started,
        last_read: last_read.clone(),
        wave: server.wave.clone(),
        parked_in: 0,
    };
    let last_read_at = || started + Duration::from_millis(last_read.load(Ordering::Relaxed));
    let mut conn = http2::Connection::new(http2::Local {
        connection_window: settings.connection_window,
        stream_window: settings.stream_window,
        max_concurrent_streams: settings.max_concurrent_streams,
        max_message_bytes: server.limits.max_message_bytes,
    });
    let mut calls = AdsCalls {
        server,
        peer: Peer {
            addr: Some(addr),
            identity: None,
        },
    };
    // Until the preface and SETTINGS are read, the keepalive timer is the
    // handshake's deadline.
    let keepalive = tokio::time::sleep(settings.keepalive_timeout);
    tokio::pin!(keepalive);
    let mut handshaking = true;
    let mut ping_sent: Option<tokio::time::Instant> = None;
    // Long-lived, so each turn does not register it again.
    let closing = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    tokio::pin!(closing);
    let ended = loop {
        let turn = poll_fn(|cx| {
            // Everything the socket has, frame by frame.
            loop {
                conn.read.reserve(4096);
                match tokio_util::io::poll_read_buf(Pin::new(&mut io), cx, &mut conn.read) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Turn::Closed(None));
                    }
                    Poll::Ready(Ok(_)) => {
                        if let Err(e) = conn.receive(&mut calls) {
                            return Poll::Ready(Turn::Closed(Some(e)));
                        }
                    }
                    Poll::Pending => break,
                }
            }
            if handshaking && conn.handshaken {
                handshaking = false;
                keepalive
                    .as_mut()
                    .reset(last_read_at() + settings.keepalive_interval);
            }
            let blocked = conn.poll_calls(cx);
            conn.return_credit();
            if conn.pong {
                conn.pong = false;
                ping_sent = None;
                keepalive
                    .as_mut()
                    .reset(tokio::time::Instant::now() + settings.keepalive_interval);
            }
            if !conn.shutting_down && closing.as_mut().poll(cx).is_ready() {
                conn.shutting_down = true;
            }
            if (conn.shutting_down || conn.peer_going_away) && conn.open_calls() == 0 {
                if conn.shutting_down {
                    conn.goaway(http2::code::NO_ERROR, "");
                }
                return Poll::Ready(Turn::Closed(None));
            }
            // Nothing read for the interval: ping. Nothing read for the
            // timeout after the ping: drop.
            while keepalive.as_mut().poll(cx).is_ready() {
                let now = tokio::time::Instant::now();
                if handshaking {
                    tracing::debug!(peer = %addr, "ADS: HTTP/2 handshake timed out");
                    return Poll::Ready(Turn::Closed(None));
                }
                let last = last_read_at();
                if let Some(sent) = ping_sent {
                    if last <= sent {
                        tracing::debug!(peer = %addr, "ADS: keepalive ping unanswered; closing");
                        return Poll::Ready(Turn::Closed(None));
                    }
                    ping_sent = None;
                }
                if now < last + settings.keepalive_interval {
                    keepalive.as_mut().reset(last + settings.keepalive_interval);
                } else {
                    conn.ping();
                    ping_sent = Some(now);
                    keepalive.as_mut().reset(now + settings.keepalive_timeout);
                }
            }
            match conn.poll_flush(&mut io, cx) {
                Poll::Ready(Err(_)) => Poll::Ready(Turn::Closed(None)),
                // Room again for the calls that stopped at a full buffer:
                // they go on after the other tasks had their turn.
                Poll::Ready(Ok(())) if blocked => Poll::Ready(Turn::Yield),
                _ => Poll::Pending,
            }
        })
        .await;
        match turn {
            Turn::Yield => tokio::task::yield_now().await,
            Turn::Closed(e) => break e,
        }
    };
    if let Some(e) = ended {
        tracing::debug!(peer = %addr, code = e.code, reason = %e.reason, "ADS: HTTP/2 connection error");
        conn.goaway(e.code, &e.reason);
    }
    // What is queued (GOAWAY, the last trailers) goes out if the proxy takes it.
    let flush = poll_fn(|cx| conn.poll_flush(&mut io, cx));
    if let Ok(Ok(())) = tokio::time::timeout(settings.keepalive_timeout, flush).await {
        let _ = io.shutdown().await;
    }
}

/// The connection's socket, noting when it last read anything (milliseconds
/// after `started`) for the keepalive, and holding reads back during an
/// endpoint push wave ([`Wave`]).
struct Tracked {
    io: TcpStream,
    started: tokio::time::Instant,
    last_read: Arc<AtomicU64>,
    wave: Arc<Wave>,
    /// The wave this connection last parked its reads in.
    parked_in: u64,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = if self.wave.gated() {
            // Whatever is already there is read; an empty socket is left
            // registered with a waker that does nothing, so the proxy's ACK
            // arriving now does not wake this task, and the task parks on the
            // wave, which wakes it when it ends.
            let mut quiet = Context::from_waker(Waker::noop());
            match Pin::new(&mut self.io).poll_read(&mut quiet, buf) {
                Poll::Pending => {
                    let this = &mut *self;
                    if this.wave.park(cx.waker(), &mut this.parked_in) {
                        return Poll::Pending;
                    }
                    Pin::new(&mut this.io).poll_read(cx, buf)
                }
                ready => ready,
            }
        } else {
            Pin::new(&mut self.io).poll_read(cx, buf)
        };
        if buf.filled().len() > before {
            let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last_read.store(ms, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How one turn of a connection ended.
enum Turn {
    /// Output was written and the calls have more: poll again after the
    /// runtime's other tasks (a proxy's initial push of megabytes is written
    /// in slices, not in one turn that holds up the others).
    Yield,
    /// The connection is over: closed, or ended with a connection error.
    Closed(Option<http2::ConnectionError>),
}

/// Starts the ADS calls of one connection.
struct AdsCalls {
    server: AdsServer,
    peer: Peer,
}

impl http2::Calls for AdsCalls {
    fn start(
        &mut self,
        head: &http2::RequestHead,
        inbound: http2::SharedInbound,
    ) -> Result<http2::Call, Status> {
        check_call(head)?;
        let server = self.server.clone();
        let peer = self.peer.clone();
        let queue = server.limits.send_queue;
        let max = server.limits.max_message_bytes;
        let requests = GrpcRequests::new(inbound, max);
        Ok(if head.path == DELTA_PATH {
            http2::Call::Delta(Served::new(queue, |tx| {
                connection::serve::<delta::Delta, _>(server, requests, tx, peer)
            }))
        } else {
            http2::Call::Sotw(Served::new(queue, |tx| {
                connection::serve::<sotw::Sotw, _>(server, requests.retyped(), tx, peer)
            }))
        })
    }
}

/// The call must be a gRPC `POST` to one of the two ADS methods, uncompressed.
fn check_call(head: &http2::RequestHead) -> Result<(), Status> {
    let path = head.path.as_str();
    if head.method != "POST" || (path != SOTW_PATH && path != DELTA_PATH) {
        return Err(Status::unimplemented(format!(
            "{} {path} is not served here; this port serves {SOTW_PATH} and {DELTA_PATH}",
            head.method
        )));
    }
    let content_type = head.content_type.as_str();
    if content_type != "application/grpc" && content_type != "application/grpc+proto" {
        return Err(Status::invalid_argument(format!(
            "content-type {content_type:?} is not gRPC; send application/grpc"
        )));
    }
    if let Some(encoding) = &head.encoding
        && encoding != "identity"
    {
        return Err(Status::unimplemented(format!(
            "grpc-encoding {encoding:?} is not supported; send uncompressed messages"
        )));
    }
    Ok(())
}

/// The request messages of a call, cut from the bytes the connection
/// delivers. Never registers a waker: the connection polls its calls after
/// every read ([`http2`]).
pub(crate) struct GrpcRequests<T> {
    inbound: http2::SharedInbound,
    max: usize,
    _message: PhantomData<fn() -> T>,
}

impl<T> GrpcRequests<T> {
    fn new(inbound: http2::SharedInbound, max: usize) -> Self {
        GrpcRequests {
            inbound,
            max,
            _message: PhantomData,
        }
    }

    /// The same requests, read as messages of another type.
    fn retyped<U>(self) -> GrpcRequests<U> {
        GrpcRequests {
            inbound: self.inbound,
            max: self.max,
            _message: PhantomData,
        }
    }

    /// The next whole message's bytes, `Ok(None)` at the end of the requests,
    /// `Pending` until more arrive.
    fn poll_message(&self) -> Poll<Result<Option<Bytes>, Status>> {
        let mut inbound = http2::lock(&self.inbound);
        let buf = &mut inbound.buf;
        if buf.len() >= 5 {
            if buf[0] != 0 {
                return Poll::Ready(Err(Status::unimplemented(
                    "compressed messages are not supported; send them uncompressed",
                )));
            }
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if len > self.max {
                return Poll::Ready(Err(Status::resource_exhausted(format!(
                    "request of {len} bytes exceeds the limit of {} bytes",
                    self.max
                ))));
            }
            if buf.len() >= 5 + len {
                buf.advance(5);
                let message = buf.split_to(len).freeze();
                let already = inbound.credited.min(5 + len);
                inbound.credited -= already;
                inbound.consumed += 5 + len - already;
                return Poll::Ready(Ok(Some(message)));
            }
        }
        match (inbound.ended, inbound.buf.is_empty()) {
            (false, _) => {
                // The call waits for the rest of a message: what it has is
                // credited now, or a message larger than the proxy's window
                // could never arrive whole.
                let waited = inbound.buf.len() - inbound.credited;
                inbound.consumed += waited;
                inbound.credited += waited;
                Poll::Pending
            }
            (true, true) => Poll::Ready(Ok(None)),
            (true, false) => Poll::Ready(Err(Status::invalid_argument(
                "the stream ended inside a message",
            ))),
        }
    }
}

impl<T: Message + Default + Send> Requests<T> for GrpcRequests<T> {
    async fn message(&mut self) -> Result<Option<T>, Status> {
        match poll_fn(|_| self.poll_message()).await? {
            Some(bytes) => T::decode(bytes)
                .map(Some)
                .map_err(|e| Status::invalid_argument(format!("malformed request: {e}"))),
            None => Ok(None),
        }
    }
}
