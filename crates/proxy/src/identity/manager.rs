//! The certificate manager: one workload identity, fetched and kept fresh.
//!
//! [`CertManager::run`] is the loop: fetch now; on failure log what failed and
//! what to check, then retry after the backoff (exponential, jittered); on
//! success publish the certificate and sleep until half its lifetime (Istio's
//! `SECRET_GRACE_PERIOD_RATIO` 0.5, with Istio's 1 % jitter), then renew. The
//! published certificate is only replaced by a newer one that passed every
//! check, so a failed renewal leaves the current one in place.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::ca_client::{self, CaClient, IstioCaClient};
use super::{Certified, IdentityConfig, Result};

/// The share of a certificate's lifetime after which it is renewed.
pub const GRACE_RATIO: f64 = 0.5;
/// Random spread around [`GRACE_RATIO`], so that proxies started together do
/// not renew together.
pub const GRACE_RATIO_JITTER: f64 = 0.01;

/// The shortest wait before a renewal.
const MIN_RENEW_WAIT: Duration = Duration::from_secs(1);

/// The workload's identity: the current certificate and the loop that renews it.
pub struct CertManager {
    config: IdentityConfig,
    ca: Arc<dyn CaClient>,
    current: watch::Sender<Option<Arc<Certified>>>,
    last_error: Mutex<Option<String>>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("config", &self.config)
            .field("current", &*self.current.borrow())
            .finish_non_exhaustive()
    }
}

impl CertManager {
    /// A manager asking the CA of `config` over Istio's CA API. Nothing is
    /// fetched until [`CertManager::fetch`] or [`CertManager::run`].
    pub fn new(config: IdentityConfig) -> CertManager {
        let ca = Arc::new(IstioCaClient::new(&config));
        CertManager::with_ca(config, ca)
    }

    /// A manager asking `ca` instead (another transport, or a test CA); the
    /// config's CA address, root, token and cluster id are then unused.
    pub fn with_ca(config: IdentityConfig, ca: Arc<dyn CaClient>) -> CertManager {
        CertManager {
            config,
            ca,
            current: watch::channel(None).0,
            last_error: Mutex::new(None),
        }
    }

    /// The identity this manager asks for.
    pub fn spiffe_id(&self) -> &str {
        &self.config.spiffe_id
    }

    /// The current certificate, if one was obtained.
    pub fn current(&self) -> Option<Arc<Certified>> {
        self.current.borrow().clone()
    }

    /// A receiver that sees every new certificate (and the current one at once).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Certified>>> {
        self.current.subscribe()
    }

    /// The last failure of the loop, cleared by the next success (for debug
    /// endpoints and tests).
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One attempt: a new key and certificate, checked and published.
    pub async fn fetch(&self) -> Result<Arc<Certified>> {
        let c = &self.config;
        let certified = Arc::new(
            ca_client::request(self.ca.as_ref(), &c.spiffe_id, c.key, c.requested_ttl).await?,
        );
        self.current.send_replace(Some(certified.clone()));
        Ok(certified)
    }

    /// Fetches now, then keeps the certificate fresh until `stop` resolves:
    /// retries failures with backoff and renews at half the lifetime.
    pub async fn run<F: Future>(self: Arc<Self>, stop: F) {
        tokio::pin!(stop);
        let mut failures: u32 = 0;
        loop {
            let wait = match self.fetch().await {
                Ok(cert) => {
                    failures = 0;
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    let ratio = GRACE_RATIO + GRACE_RATIO_JITTER * (fastrand::f64() * 2.0 - 1.0);
                    let renew_at = cert.renew_at(ratio);
                    // At least a second, so a CA handing out certificates that
                    // are already past their grace point is not asked in a loop.
                    let wait = renew_at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .max(MIN_RENEW_WAIT);
                    tracing::info!(
                        identity = %cert.spiffe_id,
                        not_after_unix = unix_secs(cert.not_after),
                        renew_in = ?wait,
                        "identity: certificate issued"
                    );
                    wait
                }
                Err(error) => {
                    let delay = self.config.backoff.delay(failures, fastrand::u64(..));
                    failures = failures.saturating_add(1);
                    let current = self.current();
                    let current_valid = current
                        .as_ref()
                        .is_some_and(|c| c.is_valid_at(SystemTime::now()));
                    tracing::warn!(
                        identity = %self.config.spiffe_id,
                        ca = %self.config.ca_addr,
                        attempt = failures,
                        retry_in = ?delay,
                        keeping_current = current.is_some(),
                        current_valid,
                        %error,
                        "identity: cannot get a certificate; check the CA address, the token and the CA root"
                    );
                    *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(error.to_string());
                    delay
                }
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Seconds since the epoch, for log lines.
fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
