//! Citadel in a Kubernetes cluster (`--kubernetes`): its key material and the
//! objects it keeps in the cluster, as Istio's istiod does.
//!
//! At start, [`ca_secret::load_ca`] takes the CA from Secret `cacerts` in citadel's
//! namespace (Istio's plug-in CA) or, without it, from the self-signed root kept in
//! Secret `istio-ca-secret`, created on first start (a lost create race reads the
//! winner's), so restarts and replicas share one root. Then [`Cluster::run`] keeps,
//! until shutdown, three loops going, each retrying with backoff on API errors:
//!
//! - [`root_cert`]: ConfigMap `istio-ca-root-cert` (`root-cert.pem`) in every
//!   namespace but Istio's ignored ones, created for new namespaces and restored when
//!   deleted or edited (a kube-runtime controller over Namespaces, triggered by those
//!   ConfigMaps too);
//! - [`webhook_cert`]: the webhooks' serving certificates in kubernetes.io/tls
//!   Secrets, issued when missing, invalid, for other names or from another CA, and
//!   renewed at two thirds of their lifetime;
//! - [`ca_bundle`]: the root as `caBundle` of every webhook of the named
//!   Validating/MutatingWebhookConfigurations, re-patched when something resets it.
//!
//! Every replica runs these loops: each write is idempotent (merge patches with the
//! same content, creates that accept a 409, replaces guarded by `resourceVersion`),
//! so replicas converge without leader election. Workload tokens are checked with
//! TokenReview (`crate::auth::token_review`), which `--kubernetes` turns on.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::ca::{Ca, CaError};

pub mod ca_bundle;
pub mod ca_secret;
#[cfg(test)]
pub(crate) mod mock;
pub mod root_cert;
pub mod webhook_cert;

/// Citadel's namespace when neither `--namespace` nor `POD_NAMESPACE` says.
pub const DEFAULT_NAMESPACE: &str = "istio-system";

/// What citadel keeps in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Citadel's namespace: where `cacerts`, `istio-ca-secret` and the webhook
    /// Secrets live.
    pub namespace: String,
    /// The webhook serving certificates to issue and renew.
    pub webhook_certs: Vec<WebhookCert>,
    /// Lifetime of a webhook serving certificate.
    pub webhook_cert_ttl: Duration,
    /// ValidatingWebhookConfigurations whose webhooks get the root as `caBundle`.
    pub validating_webhooks: Vec<String>,
    /// MutatingWebhookConfigurations whose webhooks get the root as `caBundle`.
    pub mutating_webhooks: Vec<String>,
}

/// One webhook serving certificate: the kubernetes.io/tls Secret it is written to,
/// and the DNS names it is for (`--webhook-cert SECRET=DNS[,DNS…]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookCert {
    /// The Secret's name in citadel's namespace.
    pub secret: String,
    /// The certificate's DNS names; the first is also its common name.
    pub hosts: Vec<String>,
}

impl FromStr for WebhookCert {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let usage = "give SECRET=DNS[,DNS…], e.g. galley-webhook-tls=galley.istio-system.svc";
        let (secret, hosts) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} has no '='; {usage}"))?;
        let secret = secret.trim();
        if !is_dns_label_path(secret) {
            return Err(format!(
                "{secret:?} is not a valid Secret name (lowercase letters, digits, '-' and '.'); {usage}"
            ));
        }
        let hosts: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if hosts.is_empty() {
            return Err(format!("{s:?} names no DNS name; {usage}"));
        }
        if let Some(bad) = hosts.iter().find(|h| !is_dns_label_path(h)) {
            return Err(format!("{bad:?} is not a DNS name; {usage}"));
        }
        Ok(WebhookCert {
            secret: secret.to_string(),
            hosts,
        })
    }
}

/// A DNS-1123 subdomain: what Secret names and the webhooks' DNS names are.
fn is_dns_label_path(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Why cluster mode could not start or a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No Kubernetes client could be configured.
    #[error(
        "--kubernetes needs a Kubernetes client: run in a pod (in-cluster service account) or set KUBECONFIG: {0}"
    )]
    NoClient(#[source] kube::Error),
    /// An API call failed.
    #[error("{what}: {source}; check the API server is reachable and citadel's RBAC allows it")]
    Api {
        /// The call, naming the object.
        what: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// The CA material in a Secret is unusable.
    #[error("{0}")]
    Ca(#[from] CaError),
    /// A request body could not be encoded (a bug: report it).
    #[error("could not encode a request: {0}")]
    Encode(String),
    /// A Secret lacks a key or holds something that is not text.
    #[error("Secret {secret}: {reason}")]
    Secret {
        /// `namespace/name`.
        secret: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

impl ClusterError {
    /// Wraps a kube error, naming the call.
    pub(crate) fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ClusterError {
        let what = what.into();
        move |source| ClusterError::Api { what, source }
    }
}

/// The API server's status code of a failed call, if it answered.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// A client from the pod's service account, or KUBECONFIG.
pub async fn connect() -> Result<kube::Client, ClusterError> {
    kube::Client::try_default()
        .await
        .map_err(ClusterError::NoClient)
}

/// Citadel's cluster controllers, ready to run.
pub struct Cluster {
    client: kube::Client,
    ca: Arc<Ca>,
    config: ClusterConfig,
}

impl Cluster {
    /// Controllers writing through `client` for `ca`.
    pub fn new(client: kube::Client, ca: Arc<Ca>, config: ClusterConfig) -> Cluster {
        Cluster { client, ca, config }
    }

    /// Runs the root publisher, the webhook certificate manager and the `caBundle`
    /// patcher until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send) {
        let root_pem = self.ca.roots().concat();
        let roots = root_cert::run(self.client.clone(), root_pem.clone());
        let certs = webhook_cert::run(
            self.client.clone(),
            self.ca.clone(),
            self.config.namespace.clone(),
            self.config.webhook_certs.clone(),
            self.config.webhook_cert_ttl,
        );
        let bundles = ca_bundle::run(
            self.client.clone(),
            root_pem,
            self.config.validating_webhooks.clone(),
            self.config.mutating_webhooks.clone(),
        );
        tokio::select! {
            _ = shutdown => {}
            _ = roots => {}
            _ = certs => {}
            _ = bundles => {}
        }
    }
}

/// Exponential backoff for a loop that retries after API errors: 1 s doubling to
/// 60 s, reset after a success.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) const MIN: Duration = Duration::from_secs(1);
    pub(crate) const MAX: Duration = Duration::from_secs(60);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Self::MIN }
    }

    /// The wait before the next try (and doubles the one after).
    pub(crate) fn fail(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        now
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_cert_flag() {
        let w: WebhookCert = "galley-webhook-tls=galley.istio-system.svc, galley.istio-system"
            .parse()
            .unwrap();
        assert_eq!(w.secret, "galley-webhook-tls");
        assert_eq!(w.hosts, ["galley.istio-system.svc", "galley.istio-system"]);
        for bad in [
            "galley-webhook-tls",
            "galley-webhook-tls=",
            "Galley=galley.istio-system.svc",
            "g=bad_name.svc",
            "=x.svc",
        ] {
            assert!(bad.parse::<WebhookCert>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..8).map(|_| b.fail().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        b.reset();
        assert_eq!(b.fail(), Duration::from_secs(1));
    }
}
