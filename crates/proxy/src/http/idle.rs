//! Envoy's stream idle timeout (`stream_idle_timeout`, overridden by the
//! route's `idle_timeout` once the route is chosen): a stream with no
//! activity for that long ends. Activity is every request body frame from
//! downstream ([`crate::body::Body::Watched`]) and every response body frame
//! sent back ([`IdleBody`]); the request headers start the clock.
//!
//! Before the response headers, the connection manager races the request
//! against [`IdleTimer::poll_expired`] and answers Envoy's `408 stream
//! timeout`; afterwards [`IdleBody`] fails the response body, which resets
//! the stream (HTTP/2) or closes the connection (HTTP/1.1).
//!
//! Per request this costs no allocation when the request has no body, and
//! no timer registration once the connection has served a stream: its idle
//! timers are kept in a [`TimerPool`] and only ever moved later.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// The boxed error of a response body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One stream's last activity and its idle timeout. Whoever waits on it
/// ([`IdleTimer::poll_expired`]) reads the deadline again at each poll, so a
/// change made while polling the request in the same task takes effect
/// without a wake-up.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Microseconds from `origin` to the last activity.
    last: AtomicU64,
    /// The timeout in microseconds (zero: none).
    timeout: AtomicU64,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Activity {
    /// A stream whose headers arrived at `origin`; `timeout` none or zero: no
    /// limit.
    pub fn new(origin: Instant, timeout: Option<Duration>) -> Activity {
        Activity {
            origin,
            last: AtomicU64::new(0),
            timeout: AtomicU64::new(timeout.map_or(0, micros)),
        }
    }

    /// Records activity now.
    pub fn touch(&self) {
        self.last
            .store(micros(self.origin.elapsed()), Ordering::Relaxed);
    }

    /// Replaces the timeout (the route's `idle_timeout`; zero: no limit),
    /// counting from now. Only the task that polls the watcher may call it
    /// (the request, raced against [`IdleTimer::poll_expired`]).
    pub fn set_timeout(&self, timeout: Option<Duration>) {
        self.touch();
        self.timeout
            .store(timeout.map_or(0, micros), Ordering::Relaxed);
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
}

/// A stream's [`Activity`]: its own, or shared with its request body
/// ([`crate::body::Body::Watched`]) when it has one.
#[derive(Debug)]
pub enum StreamActivity {
    /// No request body to watch: no allocation.
    Local(Activity),
    /// Shared with the request body.
    Shared(Arc<Activity>),
}

impl Deref for StreamActivity {
    type Target = Activity;

    fn deref(&self) -> &Activity {
        match self {
            StreamActivity::Local(a) => a,
            StreamActivity::Shared(a) => a,
        }
    }
}

/// The most idle timers a connection keeps for its next streams.
const POOLED_TIMERS: usize = 64;

/// A connection's idle timers between streams. The timer wheel only has to
/// be touched when a timer is first armed or moved earlier: moving a
/// registered timer later is an atomic store, and the wheel re-files it
/// when the old deadline comes. With the default 5-minute timeout, the
/// streams of a connection thus reuse a few timers and never register one.
#[derive(Debug, Default)]
pub struct TimerPool(Mutex<Vec<Pin<Box<Sleep>>>>);

impl TimerPool {
    fn take(&self, deadline: Instant) -> Pin<Box<Sleep>> {
        let pooled = self.0.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(mut timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    fn put(&self, timer: Pin<Box<Sleep>>) {
        let mut pool = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOLED_TIMERS {
            pool.push(timer);
        }
    }
}

impl TimerPool {
    /// A timer armed for `deadline` for one wait, back in the pool when the
    /// lease ends. A connection's route timeouts (Envoy's route `timeout`,
    /// 15 s by default) take theirs from a pool of their own: with the same
    /// timeout each stream's deadline is later than the last one's, so no
    /// stream registers a timer or wakes the driver to re-arm its clock.
    pub fn lease(&self, deadline: Instant) -> Lease<'_> {
        Lease {
            pool: self,
            timer: Some(self.take(deadline)),
        }
    }
}

/// A timer of a [`TimerPool`], for one wait.
#[derive(Debug)]
pub struct Lease<'a> {
    pool: &'a TimerPool,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Lease<'_> {
    /// Ready once the deadline has passed.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            self.pool.put(timer);
        }
    }
}

/// One stream's idle timer, taken from its connection's [`TimerPool`] when
/// first needed and given back when the stream ends.
#[derive(Debug)]
pub struct IdleTimer {
    pool: Arc<TimerPool>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl IdleTimer {
    /// A timer from `pool`, not armed yet.
    pub fn new(pool: Arc<TimerPool>) -> IdleTimer {
        IdleTimer { pool, timer: None }
    }

    /// Ready once the stream has been idle for its timeout. The timer fires
    /// at the deadline it was armed for, or earlier; when activity has moved
    /// the deadline since, it is re-armed for the new one.
    pub fn poll_expired(&mut self, activity: &Activity, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = activity.deadline() else {
            return Poll::Pending;
        };
        let timer = match &mut self.timer {
            Some(t) => t,
            None => self.timer.insert(self.pool.take(deadline)),
        };
        if deadline < timer.deadline() {
            timer.as_mut().reset(deadline);
        }
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if deadline <= timer.deadline() {
                return Poll::Ready(());
            }
            timer.as_mut().reset(deadline);
        }
    }
}

impl Drop for IdleTimer {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.take() {
            self.pool.put(timer);
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
    watch: Option<(StreamActivity, IdleTimer)>,
}

impl<B> IdleBody<B> {
    /// `inner`, watched by `watch` (none: passed through).
    pub fn new(inner: B, watch: Option<(StreamActivity, IdleTimer)>) -> IdleBody<B> {
        IdleBody { inner, watch }
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
                if let Some((activity, _)) = &this.watch {
                    activity.touch();
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        let Some((activity, timer)) = &mut this.watch else {
            return Poll::Pending;
        };
        match timer.poll_expired(activity, cx) {
            Poll::Ready(()) => {
                tracing::debug!("stream idle timeout after the response started: reset");
                Poll::Ready(Some(Err(Box::new(StreamIdle))))
            }
            Poll::Pending => Poll::Pending,
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

    async fn expired(timer: &mut IdleTimer, activity: &Activity) {
        std::future::poll_fn(|cx| timer.poll_expired(activity, cx)).await;
    }

    #[tokio::test]
    async fn idle_expires_after_the_last_activity() {
        let pool = Arc::new(TimerPool::default());
        let a = Activity::new(Instant::now(), Some(Duration::from_millis(300)));
        let mut timer = IdleTimer::new(Arc::clone(&pool));
        let early = tokio::time::timeout(Duration::from_millis(200), expired(&mut timer, &a));
        assert!(early.await.is_err(), "not idle yet");
        a.touch();
        let start = Instant::now();
        expired(&mut timer, &a).await;
        assert!(start.elapsed() >= Duration::from_millis(290));
        // The route's override counts from when it is set; zero disables.
        a.set_timeout(None);
        let waited = tokio::time::timeout(Duration::from_millis(400), expired(&mut timer, &a));
        assert!(waited.await.is_err(), "no timeout: never idle");
    }

    #[tokio::test]
    async fn leased_timers_fire_at_each_deadline() {
        let pool = TimerPool::default();
        let start = Instant::now();
        let mut lease = pool.lease(start + Duration::from_millis(100));
        std::future::poll_fn(|cx| lease.poll_expired(cx)).await;
        assert!(start.elapsed() >= Duration::from_millis(99));
        drop(lease);
        assert_eq!(pool.0.lock().unwrap().len(), 1, "the timer is back");
        // The next lease reuses it, moved later.
        let start = Instant::now();
        let mut lease = pool.lease(start + Duration::from_millis(150));
        assert!(
            pool.0.lock().unwrap().is_empty(),
            "the pooled timer is reused"
        );
        let early = tokio::time::timeout(
            Duration::from_millis(100),
            std::future::poll_fn(|cx| lease.poll_expired(cx)),
        );
        assert!(early.await.is_err(), "not before its deadline");
        std::future::poll_fn(|cx| lease.poll_expired(cx)).await;
        assert!(start.elapsed() >= Duration::from_millis(149));
    }

    #[tokio::test]
    async fn pooled_timers_follow_each_streams_deadline() {
        let pool = Arc::new(TimerPool::default());
        // A stream with the default 5 minutes leaves its armed timer behind.
        let long = Activity::new(Instant::now(), Some(Duration::from_secs(300)));
        let mut timer = IdleTimer::new(Arc::clone(&pool));
        let waited = tokio::time::timeout(Duration::from_millis(10), expired(&mut timer, &long));
        assert!(waited.await.is_err());
        drop(timer);
        // The next stream's shorter deadline moves it earlier.
        let start = Instant::now();
        let short = Activity::new(start, Some(Duration::from_millis(100)));
        let mut timer = IdleTimer::new(Arc::clone(&pool));
        expired(&mut timer, &short).await;
        assert!(start.elapsed() >= Duration::from_millis(99));
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(timer);
        // And the one after that moves the fired timer later again.
        let start = Instant::now();
        let next = Activity::new(start, Some(Duration::from_millis(200)));
        let mut timer = IdleTimer::new(Arc::clone(&pool));
        expired(&mut timer, &next).await;
        assert!(start.elapsed() >= Duration::from_millis(199));
        // The route's shorter override counts from when it is set.
        let start = Instant::now();
        let a = Activity::new(start, Some(Duration::from_secs(300)));
        let mut timer = IdleTimer::new(pool);
        let waited = tokio::time::timeout(Duration::from_millis(50), expired(&mut timer, &a));
        assert!(waited.await.is_err());
        a.set_timeout(Some(Duration::from_millis(100)));
        expired(&mut timer, &a).await;
        assert!(start.elapsed() >= Duration::from_millis(149));
    }
}
