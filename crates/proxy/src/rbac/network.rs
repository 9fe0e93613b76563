//! The network RBAC filters of a connection, enforced as Envoy enforces
//! them by default (`ONE_TIME_ON_FIRST_BYTE`): the rules are decided from
//! the connection (peer identity, addresses, port, SNI) when it starts, but
//! counted and enforced when the first downstream bytes arrive, so the
//! terminal filter (a TCP proxy opens its upstream connection) starts as in
//! Envoy, and a connection that never sends counts nothing. A denial closes
//! the connection (the read fails); later filters do not see it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Input, NetworkRbac, RbacStats};

/// One filter's precomputed verdict.
#[derive(Debug)]
struct Check {
    stats: Arc<RbacStats>,
    enforced: Option<bool>,
    shadow: Option<bool>,
}

/// A downstream stream whose first bytes are held to the filters' verdicts.
#[derive(Debug)]
pub struct Gate<S> {
    inner: S,
    pending: Option<Vec<Check>>,
}

/// Decides `filters` for the connection `input` describes; `stats` gives
/// the counters of a stat prefix.
pub fn gate<S>(
    inner: S,
    filters: &[Arc<NetworkRbac>],
    input: &Input<'_>,
    stats: impl Fn(&str) -> Arc<RbacStats>,
) -> Gate<S> {
    let checks = filters
        .iter()
        .map(|f| Check {
            stats: stats(&f.stat_prefix),
            enforced: f.rules.as_ref().map(|r| r.evaluate(input).allowed),
            shadow: f.shadow.as_ref().map(|r| r.evaluate(input).allowed),
        })
        .collect();
    Gate {
        inner,
        pending: Some(checks),
    }
}

impl<S> Gate<S> {
    /// Counts the verdicts; `false` when a filter denies.
    fn decide(&mut self) -> bool {
        for c in self.pending.take().unwrap_or_default() {
            if let Some(allowed) = c.shadow {
                c.stats.count_shadow(allowed);
            }
            if let Some(allowed) = c.enforced {
                c.stats.count(allowed);
                if !allowed {
                    return false;
                }
            }
        }
        true
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gate<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if this.decide() {
                    Poll::Ready(Ok(()))
                } else {
                    buf.set_filled(before);
                    Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "RBAC: connection denied",
                    )))
                }
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gate<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
