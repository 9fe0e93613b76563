//! The plaintext xDS port's own gRPC transport: HTTP/2 ([`h2`]) with gRPC's
//! framing, serving exactly the two ADS methods, one task per connection.
//!
//! Why not tonic here: an ADS connection is one long stream of small messages,
//! and under a push every one of thousands of connections sends one response
//! and reads one ACK. Through hyper and tonic each message crosses three tasks
//! (the connection loop, hyper's stream task, hyper's connection task) and
//! several body layers; here the connection's HTTP/2 state, its streams and
//! their ADS loops ([`super::connection::serve`], running inside
//! [`super::Served`]) are polled by one task, so a response is generated,
//! framed and written in one turn and an ACK is read, decoded and applied in
//! the next. The mTLS port keeps tonic (TLS and client certificates); both run
//! the same ADS code.
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

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::Status;

use super::connection::{self, Requests};
use super::wave::Wave;
use super::{AdsServer, Peer, Served, delta, sotw};

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

/// One HTTP/2 connection: its streams, keepalive and shutdown, in this task.
async fn serve_connection(
    server: AdsServer,
    tcp: TcpStream,
    addr: SocketAddr,
    settings: Http2,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(settings.stream_window)
        .initial_connection_window_size(settings.connection_window)
        .max_concurrent_streams(settings.max_concurrent_streams);
    let started = tokio::time::Instant::now();
    let last_read = Arc::new(AtomicU64::new(0));
    let tcp = Tracked {
        io: tcp,
        started,
        last_read: last_read.clone(),
        wave: server.wave.clone(),
        parked_in: 0,
    };
    let last_read_at = || started + Duration::from_millis(last_read.load(Ordering::Relaxed));
    let handshake = tokio::time::timeout(settings.keepalive_timeout, builder.handshake(tcp));
    let mut conn = match handshake.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, error = %e, "ADS: HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %addr, "ADS: HTTP/2 handshake timed out");
            return;
        }
    };
    let mut pings = conn.ping_pong();
    let keepalive = tokio::time::sleep(settings.keepalive_interval);
    tokio::pin!(keepalive);
    let mut ping_sent: Option<tokio::time::Instant> = None;
    let mut streams = FuturesUnordered::new();
    // Counted here: `FuturesUnordered::is_empty` reads its (cold) task list.
    let mut open_streams = 0usize;
    let mut shutting_down = false;
    // Long-lived, so each turn of the loop does not register them again.
    let closing = async move {
        let _ = closing.wait_for(|c| *c).await;
    };
    tokio::pin!(closing);
    loop {
        // Streams first: what they queued is then written by the connection
        // poll below in the same turn of this task.
        tokio::select! {
            biased;
            Some(()) = streams.next(), if open_streams > 0 => {
                open_streams -= 1;
                if shutting_down && open_streams == 0 {
                    conn.graceful_shutdown();
                }
            }
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    let peer = Peer { addr: Some(addr), identity: None };
                    streams.push(serve_stream(server.clone(), request, respond, peer));
                    open_streams += 1;
                }
                Some(Err(e)) => {
                    tracing::debug!(peer = %addr, error = %e, "ADS: connection error");
                    break;
                }
                None => break,
            },
            () = &mut closing, if !shutting_down => {
                shutting_down = true;
                if open_streams == 0 {
                    conn.graceful_shutdown();
                }
            }
            // Nothing read for the interval: ping. Nothing read for the
            // timeout after the ping: drop.
            () = &mut keepalive => {
                let now = tokio::time::Instant::now();
                let last = last_read_at();
                if let Some(sent) = ping_sent {
                    if last <= sent {
                        tracing::debug!(peer = %addr, "ADS: keepalive ping unanswered; closing");
                        break;
                    }
                    ping_sent = None;
                }
                if now < last + settings.keepalive_interval {
                    keepalive.as_mut().reset(last + settings.keepalive_interval);
                    continue;
                }
                match pings.as_mut().map(|p| p.send_ping(h2::Ping::opaque())) {
                    Some(Ok(())) => {
                        ping_sent = Some(now);
                        keepalive.as_mut().reset(now + settings.keepalive_timeout);
                    }
                    Some(Err(e)) => {
                        tracing::debug!(peer = %addr, error = %e, "ADS: keepalive ping");
                        break;
                    }
                    None => keepalive.as_mut().reset(now + settings.keepalive_interval),
                }
            }
            pong = poll_pong(&mut pings), if ping_sent.is_some() => {
                if pong.is_err() {
                    break;
                }
                ping_sent = None;
                keepalive
                    .as_mut()
                    .reset(tokio::time::Instant::now() + settings.keepalive_interval);
            }
        }
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

/// Waits for the answer to a keepalive ping.
async fn poll_pong(pings: &mut Option<h2::PingPong>) -> Result<(), h2::Error> {
    match pings {
        Some(p) => poll_fn(|cx| p.poll_pong(cx)).await.map(|_| ()),
        None => std::future::pending().await,
    }
}

/// One gRPC call: checks the method and framing, then runs the ADS loop of
/// its protocol and writes what it yields.
async fn serve_stream(
    server: AdsServer,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: Peer,
) {
    if let Err(status) = check_call(&request) {
        let _ = respond.send_response(trailers_only(&status), true);
        return;
    }
    let path = request.uri().path().to_string();
    let max = server.limits.max_message_bytes;
    let recv = request.into_body();
    let head = http::Response::builder()
        .status(http::StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .body(());
    let Ok(head) = head else { return };
    let Ok(send) = respond.send_response(head, false) else {
        return;
    };
    let queue = server.limits.send_queue;
    if path == DELTA_PATH {
        let requests = GrpcRequests::new(recv, max);
        let served = Served::new(queue, |tx| {
            connection::serve::<delta::Delta, _>(server, requests, tx, peer)
        });
        pump(served, send, max).await;
    } else {
        let requests = GrpcRequests::new(recv, max);
        let served = Served::new(queue, |tx| {
            connection::serve::<sotw::Sotw, _>(server, requests, tx, peer)
        });
        pump(served, send, max).await;
    }
}

/// The call must be a gRPC `POST` to one of the two ADS methods, uncompressed.
fn check_call(request: &http::Request<RecvStream>) -> Result<(), Status> {
    let path = request.uri().path();
    if request.method() != http::Method::POST || (path != SOTW_PATH && path != DELTA_PATH) {
        return Err(Status::unimplemented(format!(
            "{} {path} is not served here; this port serves {SOTW_PATH} and {DELTA_PATH}",
            request.method()
        )));
    }
    let content_type = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/grpc" && content_type != "application/grpc+proto" {
        return Err(Status::invalid_argument(format!(
            "content-type {content_type:?} is not gRPC; send application/grpc"
        )));
    }
    if let Some(encoding) = request.headers().get("grpc-encoding")
        && encoding.as_bytes() != b"identity"
    {
        return Err(Status::unimplemented(format!(
            "grpc-encoding {encoding:?} is not supported; send uncompressed messages"
        )));
    }
    Ok(())
}

/// A response that is only a gRPC status (no messages).
fn trailers_only(status: &Status) -> http::Response<()> {
    let mut response = http::Response::new(());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    let _ = status.add_header(headers);
    response
}

/// `grpc-status` and `grpc-message` of `status`, as trailers.
fn status_trailers(status: &Status) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    trailers
}

/// Writes what `served` yields as gRPC messages, then the status trailers.
/// Waits for flow-control capacity before taking the next response, so a
/// proxy that stops reading holds its loop instead of filling pilot's memory.
async fn pump<R: Message>(
    mut served: Served<Result<R, Status>>,
    mut send: SendStream<Bytes>,
    max: usize,
) {
    loop {
        if send.capacity() == 0 {
            send.reserve_capacity(1);
            // Capacity, unless the proxy reset the stream meanwhile.
            let capacity = poll_fn(|cx| {
                if send.poll_reset(cx).is_ready() {
                    return std::task::Poll::Ready(None);
                }
                send.poll_capacity(cx)
            })
            .await;
            match capacity {
                Some(Ok(_)) => {}
                _ => return,
            }
        }
        let item = tokio::select! {
            item = served.next() => item,
            _ = poll_fn(|cx| send.poll_reset(cx)) => return,
        };
        let status = match item {
            Some(Ok(response)) => {
                let len = response.encoded_len();
                if len > max {
                    Status::resource_exhausted(format!(
                        "response of {len} bytes exceeds --xds-max-message-bytes ({max})"
                    ))
                } else {
                    match send.send_data(frame(&response, len), false) {
                        Ok(()) => continue,
                        Err(_) => return,
                    }
                }
            }
            Some(Err(status)) => status,
            None => Status::ok(""),
        };
        let _ = send.send_trailers(status_trailers(&status));
        return;
    }
}

/// `message` with gRPC's prefix: an uncompressed flag and the length.
fn frame(message: &impl Message, len: usize) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + len);
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    // Encoding into a buffer with the room reserved cannot fail.
    let _ = message.encode(&mut out);
    out.freeze()
}

/// The request messages of a call, read from its HTTP/2 stream.
pub(crate) struct GrpcRequests<T> {
    recv: RecvStream,
    buf: BytesMut,
    max: usize,
    _message: PhantomData<fn() -> T>,
}

impl<T> GrpcRequests<T> {
    fn new(recv: RecvStream, max: usize) -> Self {
        GrpcRequests {
            recv,
            buf: BytesMut::new(),
            max,
            _message: PhantomData,
        }
    }

    /// The next whole message's bytes, if buffered.
    fn take_message(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::unimplemented(
                "compressed messages are not supported; send them uncompressed",
            ));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            return Err(Status::resource_exhausted(format!(
                "request of {len} bytes exceeds the limit of {} bytes",
                self.max
            )));
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

impl<T: Message + Default + Send> Requests<T> for GrpcRequests<T> {
    async fn message(&mut self) -> Result<Option<T>, Status> {
        loop {
            if let Some(bytes) = self.take_message()? {
                return T::decode(bytes)
                    .map(Some)
                    .map_err(|e| Status::invalid_argument(format!("malformed request: {e}")));
            }
            match self.recv.data().await {
                Some(Ok(chunk)) => {
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return Err(Status::from_error(Box::new(e))),
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(Status::invalid_argument(
                        "the stream ended inside a message",
                    ));
                }
            }
        }
    }
}
