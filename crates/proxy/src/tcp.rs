//! The TCP proxy: picks the chain's cluster (weighted), a host of it, opens
//! the upstream connection and copies bytes both ways until both sides
//! closed or the connection sat idle for the proxy's `idle_timeout`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::balance::Outcome;
use crate::cluster::PickInput;
use crate::dataplane::Dataplane;
use crate::http::ConnInfo;
use crate::listener::TcpProxy;
use crate::telemetry::{Peer, Security, TcpLabels, Telemetry};
use crate::upstream;

/// Proxies `down` to the cluster `tp` picks.
pub async fn proxy<S>(
    down: S,
    conn: ConnInfo,
    tp: Arc<TcpProxy>,
    dp: Arc<Dataplane>,
    dp_telemetry: Telemetry,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = tp.cluster(fastrand::u64(..));
    let Some(cluster) = dp.clusters.get(name) else {
        tracing::debug!(cluster = name, "TCP proxy: unknown cluster; closing");
        return;
    };
    let input = PickInput {
        hash: None,
        original_dst: Some(conn.dst),
    };
    let Ok(host) = cluster.pick(&input, &|_| false) else {
        cluster.stats.no_healthy.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(cluster = name, "TCP proxy: no healthy upstream; closing");
        return;
    };
    let (up, _guard) = match upstream::connect(cluster, &host).await {
        Ok(c) => c,
        Err(e) => {
            cluster.record(&host, Outcome::ConnectFailure);
            tracing::debug!(cluster = name, host = %host.addr, "TCP proxy: {e}");
            return;
        }
    };
    host.active.fetch_add(1, Ordering::Relaxed);
    let (service, service_name, namespace) = cluster.service.clone();
    let telemetry = &dp_telemetry;
    let series = telemetry.tcp_series(&TcpLabels {
        reporter: telemetry.reporter(conn.inbound),
        peer: Peer::unknown(),
        destination_service: service,
        destination_service_name: service_name,
        destination_service_namespace: namespace,
        response_flags: String::new(),
        connection_security_policy: Security::None,
    });
    series.open();
    let epoch = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut down = Watched {
        inner: down,
        epoch,
        last: Arc::clone(&last),
    };
    let mut up = Counted::new(up);
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    match tp.idle_timeout {
        Some(idle) => {
            tokio::select! {
                r = copy => log_end(name, r),
                () = idle_watch(epoch, &last, idle) => {
                    tracing::debug!(cluster = name, ?idle, "TCP proxy: idle timeout");
                }
            }
        }
        None => log_end(name, copy.await),
    }
    // Istio counts from the proxy's side: sent = bytes to the upstream.
    series.close(up.written, up.read);
    host.active.fetch_sub(1, Ordering::Relaxed);
}

fn log_end(cluster: &str, r: std::io::Result<(u64, u64)>) {
    match r {
        Ok((sent, received)) => tracing::trace!(cluster, sent, received, "TCP proxy: closed"),
        Err(e) => tracing::debug!(cluster, "TCP proxy: {e}"),
    }
}

/// Resolves once nothing was read or written for `idle`.
async fn idle_watch(epoch: Instant, last: &AtomicU64, idle: Duration) {
    loop {
        let at = epoch + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
        tokio::time::sleep_until(at.into()).await;
        let quiet = epoch.elapsed()
            - Duration::from_millis(last.load(Ordering::Relaxed)).min(epoch.elapsed());
        if quiet >= idle {
            return;
        }
    }
}

/// A stream that records when it last moved bytes.
struct Watched<S> {
    inner: S,
    epoch: Instant,
    last: Arc<AtomicU64>,
}

impl<S> Watched<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if r.is_ready() {
            this.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if r.is_ready() {
            this.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A stream that counts the bytes read from and written to it.
struct Counted<S> {
    inner: S,
    read: u64,
    written: u64,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Counted<S> {
        Counted {
            inner,
            read: 0,
            written: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.read += (buf.filled().len() - before) as u64;
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.written += *n as u64;
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
