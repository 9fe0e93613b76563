//! Endpoint push waves: config first, acknowledgements after.
//!
//! An endpoint change reaches every connected proxy at once, and each proxy
//! answers its update with an ACK. Left alone, pilot reads and handles those
//! ACKs while other proxies are still waiting for the update: on a busy control
//! plane the ACK work of the first proxies delays the update of the last ones.
//! A [`Wave`] holds that work back: from the moment the first connection sees
//! an endpoint-only snapshot until every connection has pushed it (or
//! [`Wave::limit`] has passed), the plaintext port's connections leave their
//! sockets unread ([`super::transport`]); the ACKs wait in the kernel and are
//! read, in the same order, once the wave is over. Responses are still written
//! throughout, and full pushes (config changes, which can be large and need
//! the proxy's flow-control credit) never start a wave.
//!
//! What a proxy sees: its update as soon as pilot can produce it; its ACK is
//! taken note of a few milliseconds later. Nothing a proxy sends is lost or
//! reordered; a NACK is recorded when the wave ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

/// How long a wave may hold reads back at most.
pub const DEFAULT_LIMIT: Duration = Duration::from_millis(250);

/// The current wave, shared by every connection of an [`super::AdsServer`].
#[derive(Debug)]
pub struct Wave {
    gated: AtomicBool,
    state: Mutex<State>,
    limit: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// The snapshot version of the latest wave.
    version: u64,
    /// Connections that have not yet pushed it.
    remaining: usize,
    /// Readers waiting for the wave to end.
    parked: Vec<Waker>,
}

impl Default for Wave {
    fn default() -> Self {
        Wave::new(DEFAULT_LIMIT)
    }
}

impl Wave {
    /// No wave yet; a wave lasts at most `limit`.
    pub fn new(limit: Duration) -> Self {
        Wave {
            gated: AtomicBool::new(false),
            state: Mutex::new(State::default()),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The first connection to see endpoint-only snapshot `version` starts its
    /// wave, expecting `connections` pushes; later calls for it do nothing.
    /// Must run inside a Tokio runtime (the limit is a timer task).
    pub fn begin(self: &Arc<Self>, version: u64, connections: impl FnOnce() -> usize) {
        {
            let mut s = self.lock();
            if version <= s.version {
                return;
            }
            let connections = connections();
            s.version = version;
            s.remaining = connections;
            if connections == 0 {
                return;
            }
            self.gated.store(true, Ordering::Release);
        }
        let wave = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wave.limit).await;
            let mut s = wave.lock();
            if s.version == version {
                wave.open(&mut s);
            }
        });
    }

    /// A connection has pushed (or skipped) snapshot `version`.
    pub fn done(&self, version: u64) {
        if !self.gated.load(Ordering::Acquire) {
            return;
        }
        let mut s = self.lock();
        if s.version != version || s.remaining == 0 {
            return;
        }
        s.remaining -= 1;
        if s.remaining == 0 {
            self.open(&mut s);
        }
    }

    fn open(&self, s: &mut State) {
        self.gated.store(false, Ordering::Release);
        for w in s.parked.drain(..) {
            w.wake();
        }
    }

    /// Whether reads are held back now.
    pub fn gated(&self) -> bool {
        self.gated.load(Ordering::Acquire)
    }

    /// Parks a reader until the wave ends: `false` when it already has.
    /// `parked_in` is the reader's own note of the wave it last parked in, so
    /// a reader polled again during one wave is not listed twice (without
    /// searching the list every connection of the fleet joins).
    pub fn park(&self, waker: &Waker, parked_in: &mut u64) -> bool {
        let mut s = self.lock();
        if !self.gated.load(Ordering::Acquire) {
            return false;
        }
        if *parked_in != s.version {
            *parked_in = s.version;
            s.parked.push(waker.clone());
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_wave_gates_until_every_connection_pushed_then_wakes_the_parked() {
        let wave = Arc::new(Wave::new(Duration::from_secs(60)));
        assert!(!wave.gated());
        wave.begin(7, || 2);
        assert!(wave.gated());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut parked_in = 0;
        assert!(wave.park(&waker, &mut parked_in));
        assert!(
            wave.park(&waker, &mut parked_in),
            "parking twice keeps one waker"
        );
        // A push of another version does not count; a second begin for the
        // same version does not restart the count.
        wave.done(6);
        wave.begin(7, || 5);
        wave.done(7);
        assert!(wave.gated());
        wave.done(7);
        assert!(!wave.gated());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(!wave.park(&waker, &mut parked_in), "over: readers go on");
        // Older versions never start a wave again.
        wave.begin(5, || 3);
        assert!(!wave.gated());
    }

    #[tokio::test]
    async fn a_wave_ends_at_its_limit_when_a_connection_never_pushes() {
        let wave = Arc::new(Wave::new(Duration::from_millis(100)));
        wave.begin(1, || 3);
        wave.done(1);
        assert!(wave.gated());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!wave.gated());
        // A newer wave has its own limit.
        wave.begin(2, || 1);
        assert!(wave.gated());
    }
}
