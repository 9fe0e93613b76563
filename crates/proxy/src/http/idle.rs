//! Envoy's stream idle timeout (`stream_idle_timeout`, overridden by the
//! route's `idle_timeout` once the route is chosen): a stream with no
//! activity for that long ends. Activity is every request body frame from
//! downstream ([`crate::body::Body::Watched`]) and every response body frame
//! sent back ([`IdleBody`]); the request headers start the clock.
//!
//! Before the response headers, the connection manager races the request
//! against [`Activity::expired`] and answers Envoy's `408 stream timeout`;
//! afterwards [`IdleBody`] fails the response body, which resets the stream
//! (HTTP/2) or closes the connection (HTTP/1.1).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The boxed error of a response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One stream's last activity and its idle timeout.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Microseconds from `origin` to the last activity.
    last: AtomicU64,
    /// The timeout in microseconds (zero: none).
    timeout: AtomicU64,
    changed: Notify,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Activity {
    /// A stream whose headers arrived now; `timeout` none or zero: no limit.
    pub fn new(timeout: Option<Duration>) -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            timeout: AtomicU64::new(timeout.map_or(0, micros)),
            changed: Notify::new(),
        })
    }

    /// Records activity now.
    pub fn touch(&self) {
        self.last
            .store(micros(self.origin.elapsed()), Ordering::Relaxed);
    }

    /// Replaces the timeout (the route's `idle_timeout`; zero: no limit),
    /// counting from now.
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        self.touch();
        self.timeout
            .store(timeout.map_or(0, micros), Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    /// When the stream times out if nothing happens before (none: never).
    pub fn deadline(&self) -> Option<Instant> {
        let timeout = self.timeout.load(Ordering::Relaxed);
        if timeout == 0 {
            return None;
        }
        let at = self.last.load(Ordering::Relaxed).saturating_add(timeout);
        self.origin.checked_add(Duration::from_micros(at))
    }

    /// Completes once the stream has been idle for its timeout.
    pub async fn expired(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.deadline() {
                None => changed.await,
                Some(d) if Instant::now() >= d => return,
                Some(d) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(d) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }
}

/// The error that ends a response body idle past its timeout.
#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout")]
pub struct StreamIdle;

/// A response body that counts its frames as activity and fails when the
/// stream has been idle past its timeout.
pub struct IdleBody<B> {
    inner: B,
    activity: Option<Arc<Activity>>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> IdleBody<B> {
    /// `inner`, watched by `activity` (none: passed through).
    pub fn new(inner: B, activity: Option<Arc<Activity>>) -> IdleBody<B> {
        IdleBody {
            inner,
            activity,
            timer: None,
        }
    }
}

impl<B> HttpBody for IdleBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(a) = &this.activity {
                    a.touch();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let Some(activity) = &this.activity else {
            return Poll::Pending;
        };
        loop {
            let Some(deadline) = activity.deadline() else {
                this.timer = None;
                return Poll::Pending;
            };
            if Instant::now() >= deadline {
                tracing::debug!("stream idle timeout after the response started: reset");
                return Poll::Ready(Some(Err(Box::new(StreamIdle))));
            }
            let timer = this
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_expires_after_the_last_activity() {
        let a = Activity::new(Some(Duration::from_millis(300)));
        tokio::time::sleep(Duration::from_millis(200)).await;
        a.touch();
        let start = Instant::now();
        a.expired().await;
        assert!(start.elapsed() >= Duration::from_millis(290));
        // The route's override counts from when it is set; zero disables.
        a.set_timeout(None);
        let waited = tokio::time::timeout(Duration::from_millis(400), a.expired()).await;
        assert!(waited.is_err(), "no timeout: never idle");
    }
}
