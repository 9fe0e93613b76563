//! Upstream connections: opening them (TCP or Unix socket, with the cluster's
//! connect timeout, source address and `max_connections`), and pooling them
//! per host for HTTP: HTTP/1.1 connections are reused one request at a time
//! (a connection goes back to its host's idle list when the response body has
//! been read to the end), an HTTP/2 connection is shared by every request to
//! its host.
//!
//! An HTTP/1.1 request whose body is complete is exchanged by the request's
//! own task ([`h1`]); one whose body still streams, or an upgrade, goes
//! through a hyper client connection and its task. The two kinds of
//! connection are pooled apart; one kind's idle connection is closed when
//! the other needs room under `max_connections`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream, UnixStream};

use crate::body::Body;
use crate::cluster::{Cluster, Host, HostAddr};

pub mod h1;

/// A connected upstream stream: TCP, a Unix socket, or TLS over TCP.
#[derive(Debug)]
pub enum Stream {
    /// TCP.
    Tcp(TcpStream),
    /// Unix domain socket.
    Unix(UnixStream),
    /// TLS (the cluster's `UpstreamTlsContext`) over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Unix(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Why an upstream request failed before a response arrived.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// `max_connections` or `max_pending_requests` reached.
    #[error("overflow")]
    Overflow,
    /// The connection could not be made.
    #[error("connection failure: {0}")]
    Connect(io::Error),
    /// The connection was not made within `connect_timeout`.
    #[error("connection timeout")]
    ConnectTimeout,
    /// The cluster's TLS cannot be set up (no certificate yet, bad secret).
    #[error("TLS not available: {0}")]
    TlsUnavailable(String),
    /// The TLS handshake failed (e.g. the server's identity is not allowed).
    #[error("TLS error: {0}")]
    Tls(io::Error),
    /// The connection was reset or closed before the response headers.
    #[error("connection termination: {0}")]
    Reset(hyper::Error),
    /// The connection failed or closed before the response headers (an
    /// exchange of [`h1`]).
    #[error("connection termination: {0}")]
    Closed(io::Error),
    /// The response head was not valid HTTP/1.1.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl UpstreamError {
    /// Envoy's response flags for this failure.
    pub fn flags(&self) -> &'static str {
        match self {
            UpstreamError::Overflow => "UO",
            UpstreamError::Connect(_)
            | UpstreamError::TlsUnavailable(_)
            | UpstreamError::Tls(_) => "UF",
            UpstreamError::ConnectTimeout => "UF",
            UpstreamError::Reset(_) | UpstreamError::Closed(_) => "UC",
            UpstreamError::Protocol(_) => "UPE",
        }
    }

    /// Envoy's `reset reason` words for the local reply body.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Overflow => "overflow",
            UpstreamError::Connect(_) => "connection failure",
            UpstreamError::TlsUnavailable(_) | UpstreamError::Tls(_) => {
                "connection failure, transport failure reason: TLS error"
            }
            UpstreamError::ConnectTimeout => "connection timeout",
            UpstreamError::Reset(_) | UpstreamError::Closed(_) => "connection termination",
            UpstreamError::Protocol(_) => "protocol error",
        }
    }
}

/// Counts an open upstream connection against its cluster until dropped.
#[derive(Debug)]
pub struct ConnGuard {
    cluster: Arc<Cluster>,
}

impl ConnGuard {
    fn new(cluster: &Arc<Cluster>) -> Result<ConnGuard, UpstreamError> {
        let limit = cluster.limits.max_connections as usize;
        if cluster.connections.fetch_add(1, Ordering::AcqRel) >= limit {
            cluster.connections.fetch_sub(1, Ordering::AcqRel);
            cluster.stats.cx_overflow.fetch_add(1, Ordering::Relaxed);
            return Err(UpstreamError::Overflow);
        }
        cluster.stats.cx_total.fetch_add(1, Ordering::Relaxed);
        cluster.stats.cx_active.fetch_add(1, Ordering::Relaxed);
        Ok(ConnGuard {
            cluster: Arc::clone(cluster),
        })
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.cluster.connections.fetch_sub(1, Ordering::AcqRel);
        self.cluster.stats.cx_active.fetch_sub(1, Ordering::Relaxed);
        if self.cluster.stats.rq_pending_active.load(Ordering::Acquire) > 0 {
            self.cluster.released.notify_waiters();
        }
    }
}

/// Opens a connection to `host` of `cluster`: the cluster's connect timeout,
/// source address and connection limit apply.
pub async fn connect(
    cluster: &Arc<Cluster>,
    host: &Host,
) -> Result<(Stream, ConnGuard), UpstreamError> {
    let tls = match (cluster.tls_for(host), &cluster.secrets) {
        (None, _) => None,
        (Some(t), Some(secrets)) => match secrets.client_config(t) {
            Ok(config) => Some((config, t.sni.clone())),
            Err(e) => {
                tracing::warn!(cluster = %cluster.name, "upstream TLS: {e}");
                cluster
                    .stats
                    .cx_connect_fail
                    .fetch_add(1, Ordering::Relaxed);
                return Err(UpstreamError::TlsUnavailable(e));
            }
        },
        (Some(_), None) => {
            return Err(UpstreamError::TlsUnavailable("no secret provider".into()));
        }
    };
    let guard = ConnGuard::new(cluster)?;
    let attempt = async {
        match &host.addr {
            HostAddr::Ip(addr) => connect_tcp(*addr, cluster).await.map(Stream::Tcp),
            HostAddr::Name(name, port) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for addr in tokio::net::lookup_host((name.as_str(), *port)).await? {
                    match connect_tcp(addr, cluster).await {
                        Ok(s) => return Ok(Stream::Tcp(s)),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
            HostAddr::Pipe(path) => UnixStream::connect(path).await.map(Stream::Unix),
        }
    };
    let attempt = async {
        let stream = attempt.await.map_err(UpstreamError::Connect)?;
        match (tls, stream) {
            (Some((config, sni)), Stream::Tcp(tcp)) => {
                // The server's identity is checked by its SPIFFE URI SAN, not
                // by SNI (Istio's SNI is `outbound_.PORT_.SUBSET_.HOST`).
                let name = rustls::pki_types::ServerName::try_from(sni).unwrap_or_else(|_| {
                    rustls::pki_types::ServerName::try_from("mesh.invalid")
                        .expect("a valid DNS name")
                });
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map(|s| Stream::Tls(Box::new(s)))
                    .map_err(UpstreamError::Tls)
            }
            (_, s) => Ok(s),
        }
    };
    match tokio::time::timeout(cluster.connect_timeout, attempt).await {
        Ok(Ok(s)) => Ok((s, guard)),
        Ok(Err(e)) => {
            cluster
                .stats
                .cx_connect_fail
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(cluster = %cluster.name, "upstream connection: {e}");
            Err(e)
        }
        Err(_) => {
            cluster
                .stats
                .cx_connect_fail
                .fetch_add(1, Ordering::Relaxed);
            cluster
                .stats
                .cx_connect_timeout
                .fetch_add(1, Ordering::Relaxed);
            Err(UpstreamError::ConnectTimeout)
        }
    }
}

async fn connect_tcp(addr: SocketAddr, cluster: &Cluster) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = cluster.bind_source
        && source.is_ipv4() == addr.is_ipv4()
    {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A pooled HTTP/1.1 connection.
struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
    served: u32,
}

/// One host's pooled HTTP connections.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    inline: Mutex<Vec<h1::Conn>>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().map(|i| i.len()).unwrap_or(0);
        let inline = self.inline.lock().map(|i| i.len()).unwrap_or(0);
        f.debug_struct("Pool")
            .field("idle_h1", &idle)
            .field("idle_inline", &inline)
            .finish()
    }
}

/// Where an HTTP/1.1 connection goes back when its response is done.
pub struct Checkin {
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    sender: http1::SendRequest<Body>,
    served: u32,
    max: Option<u32>,
}

impl Checkin {
    /// Returns the connection to the host's idle list (unless it served its
    /// quota of requests).
    pub fn done(self) {
        if self.max.is_some_and(|m| self.served >= m) || self.sender.is_closed() {
            return;
        }
        {
            let mut idle = self
                .host
                .pool
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            idle.push(Idle {
                sender: self.sender,
                since: Instant::now(),
                served: self.served,
            });
        }
        if self.cluster.stats.rq_pending_active.load(Ordering::Acquire) > 0 {
            self.cluster.released.notify_waiters();
        }
    }
}

/// Sends `req` to `host` over a pooled (or new) connection of the given
/// protocol; the response body hands an HTTP/1.1 connection back to the pool
/// when read to its end. Not `async fn`: its arguments would be kept in the
/// future beside the locals they are moved to (rust-lang/rust#62958).
#[allow(clippy::manual_async_fn)]
pub fn send(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: Request<Body>,
    http2: bool,
) -> impl Future<Output = Result<Response<Body>, UpstreamError>> {
    async move {
        if http2 {
            let mut sender = h2_sender(cluster, host).await?;
            let resp = sender.send_request(req).await.map_err(|e| {
                // A GOAWAY or broken connection: drop it so the next request reconnects.
                let mut slot = host.pool.h2.lock().unwrap_or_else(|p| p.into_inner());
                if slot.as_ref().is_some_and(|s| s.is_closed()) {
                    *slot = None;
                }
                UpstreamError::Reset(e)
            })?;
            return Ok(resp.map(|b| Body::upstream(b, None)));
        }
        if h1::eligible(&req) {
            return h1::send(cluster, host, req).await;
        }
        let Hyper(mut sender, served) = pooled(cluster, host).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(UpstreamError::Reset)?;
        let checkin = Checkin {
            cluster: Arc::clone(cluster),
            host: Arc::clone(host),
            sender,
            served: served + 1,
            max: cluster.max_requests_per_connection,
        };
        Ok(resp.map(|b| Body::upstream(b, Some(checkin))))
    }
}

/// A pooled HTTP/1.1 connection of one kind: an idle one that is still open,
/// or a new one.
trait Kind: Sized {
    /// An idle, open, unexpired connection of `host`, ready to send.
    fn idle(cluster: &Cluster, host: &Host) -> impl Future<Output = Option<Self>> + Send;
    /// A new connection over `stream`.
    fn fresh(
        stream: Stream,
        guard: ConnGuard,
    ) -> impl Future<Output = Result<Self, UpstreamError>> + Send;
    /// Closes an idle connection of the other kind, to make room for one of
    /// this kind; whether there was one.
    fn evict_other(host: &Host) -> bool;
}

/// A hyper client connection (its task runs the exchange) and the requests
/// it carried.
struct Hyper(http1::SendRequest<Body>, u32);

impl Kind for Hyper {
    async fn idle(cluster: &Cluster, host: &Host) -> Option<Hyper> {
        loop {
            let mut c = pop(&host.pool.idle)?;
            if c.since.elapsed() > cluster.idle_timeout || c.sender.is_closed() {
                continue;
            }
            if c.sender.ready().await.is_ok() {
                return Some(Hyper(c.sender, c.served));
            }
        }
    }

    async fn fresh(stream: Stream, guard: ConnGuard) -> Result<Hyper, UpstreamError> {
        let (sender, conn) = http1::Builder::new()
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Reset)?;
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!("upstream HTTP/1.1 connection ended: {e}");
            }
        });
        Ok(Hyper(sender, 0))
    }

    fn evict_other(host: &Host) -> bool {
        pop(&host.pool.inline).is_some()
    }
}

/// A connection whose exchanges the request's task makes ([`h1`]), and
/// whether it was pooled (it may have been closed by the upstream meanwhile).
struct Inline {
    conn: h1::Conn,
    reused: bool,
}

impl Kind for Inline {
    async fn idle(cluster: &Cluster, host: &Host) -> Option<Inline> {
        loop {
            let mut conn = pop(&host.pool.inline)?;
            if conn.since.elapsed() <= cluster.idle_timeout && conn.is_open() {
                return Some(Inline { conn, reused: true });
            }
        }
    }

    async fn fresh(stream: Stream, guard: ConnGuard) -> Result<Inline, UpstreamError> {
        Ok(Inline {
            conn: h1::Conn::new(stream, guard),
            reused: false,
        })
    }

    fn evict_other(host: &Host) -> bool {
        // Dropping the sender ends the connection's task, which releases it.
        pop(&host.pool.idle).is_some()
    }
}

fn pop<T>(list: &Mutex<Vec<T>>) -> Option<T> {
    list.lock().unwrap_or_else(|p| p.into_inner()).pop()
}

/// An idle HTTP/1.1 connection of `host` that is still open, or a new one.
/// Without an idle connection the request is pending (at most
/// `max_pending_requests` of them, else `overflow`), as in Envoy's connection
/// pool: while its new connection is made, or, at `max_connections`, until a
/// connection is returned or closed.
async fn pooled<K: Kind>(cluster: &Arc<Cluster>, host: &Arc<Host>) -> Result<K, UpstreamError> {
    let mut pending: Option<Pending<'_>> = None;
    loop {
        // Fast path: an idle connection, or room for a new one.
        if let Some(c) = K::idle(cluster, host).await {
            return Ok(c);
        }
        let limit = cluster.limits.max_connections as usize;
        if cluster.connections.load(Ordering::Acquire) < limit {
            // Waiting for a new connection is pending too, as in Envoy's pool:
            // a burst beyond `max_pending_requests` overflows at once.
            if pending.is_none() {
                pending = Some(Pending::enter(cluster)?);
            }
            // Boxed: connecting is rare (see `h2_sender`).
            let fresh = Box::pin(async {
                let (stream, guard) = connect(cluster, host).await?;
                K::fresh(stream, guard).await
            });
            match fresh.await {
                Ok(c) => return Ok(c),
                // Another request took the last connection meanwhile: wait.
                Err(UpstreamError::Overflow) => {}
                Err(e) => return Err(e),
            }
        }
        // Wait as a pending request for a connection to come back or close;
        // registered before the re-check so no release is missed.
        if pending.is_none() {
            pending = Some(Pending::enter(cluster)?);
        }
        let released = cluster.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if let Some(c) = K::idle(cluster, host).await {
            return Ok(c);
        }
        if cluster.connections.load(Ordering::Acquire) < limit {
            continue;
        }
        // All taken, some idle as the other kind: close one of those.
        if K::evict_other(host) && cluster.connections.load(Ordering::Acquire) < limit {
            continue;
        }
        released.await;
    }
}

/// A request waiting for a connection, counted against `max_pending_requests`.
struct Pending<'a> {
    cluster: &'a Cluster,
}

impl<'a> Pending<'a> {
    fn enter(cluster: &'a Cluster) -> Result<Pending<'a>, UpstreamError> {
        let stats = &cluster.stats;
        let before = stats.rq_pending_active.fetch_add(1, Ordering::AcqRel);
        if before >= cluster.limits.max_pending_requests {
            stats.rq_pending_active.fetch_sub(1, Ordering::AcqRel);
            stats.rq_pending_overflow.fetch_add(1, Ordering::Relaxed);
            return Err(UpstreamError::Overflow);
        }
        stats.rq_pending_total.fetch_add(1, Ordering::Relaxed);
        Ok(Pending { cluster })
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.cluster
            .stats
            .rq_pending_active
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// The host's HTTP/2 connection, made when there is none or it closed.
async fn h2_sender(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
) -> Result<http2::SendRequest<Body>, UpstreamError> {
    {
        let slot = host.pool.h2.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
    }
    // Boxed: connecting is rare, and its future would otherwise make every
    // request's future (moved a few times per request) larger.
    let sender = Box::pin(async {
        let (stream, guard) = connect(cluster, host).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .keep_alive_interval(None)
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Reset)?;
        tokio::spawn(async move {
            let _guard = guard;
            if let Err(e) = conn.await {
                tracing::debug!("upstream HTTP/2 connection ended: {e}");
            }
        });
        Ok::<_, UpstreamError>(sender)
    })
    .await?;
    let mut slot = host.pool.h2.lock().unwrap_or_else(|p| p.into_inner());
    match slot.as_ref() {
        // Another request connected meanwhile: share its connection.
        Some(s) if !s.is_closed() => Ok(s.clone()),
        _ => {
            *slot = Some(sender.clone());
            Ok(sender)
        }
    }
}
