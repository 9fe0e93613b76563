//! The webhooks' serving certificates, written to kubernetes.io/tls Secrets in
//! citadel's namespace (`tls.crt`: the chain leaf first; `tls.key`) for galley and
//! the injector to mount.
//!
//! [`ensure_webhook_cert`] reads the Secret and keeps it when its certificate is
//! for exactly the configured DNS names, was signed by this CA, matches `tls.key`
//! and is younger than two thirds of its lifetime; otherwise it issues a new one and
//! creates the Secret, or replaces it guarded by the `resourceVersion` it read (a
//! 409 from a racing replica means: read again, theirs is probably good). [`run`]
//! does that for every configured Secret, then sleeps until the earliest renewal
//! (at most [`RESYNC`]) or until one of the Secrets changes (a watch per name), so
//! a deleted or overwritten Secret is rewritten within moments.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ca_secret::optional_text;
use super::{Backoff, ClusterError, WebhookCert, status_code};
use crate::ca::Ca;

/// The Secrets' type.
pub const TLS_TYPE: &str = "kubernetes.io/tls";
/// The chain's key.
pub const TLS_CERT: &str = "tls.crt";
/// The private key's key.
pub const TLS_KEY: &str = "tls.key";
/// The longest sleep between two checks of every Secret.
pub const RESYNC: Duration = Duration::from_secs(600);

/// What [`ensure_webhook_cert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The Secret's certificate is good until its renewal time.
    Unchanged,
    /// A new certificate was written.
    Issued,
}

/// Keeps every certificate in `certs` issued and fresh until the future is dropped.
pub async fn run(
    client: kube::Client,
    ca: Arc<Ca>,
    namespace: String,
    certs: Vec<WebhookCert>,
    ttl: Duration,
) {
    if certs.is_empty() {
        return std::future::pending().await;
    }
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let mut changes = futures::stream::select_all(certs.iter().map(|c| {
        watcher(
            api.clone(),
            watcher::Config::default().fields(&format!("metadata.name={}", c.secret)),
        )
        .default_backoff()
        .boxed()
    }));
    let mut backoff = Backoff::new();
    loop {
        let now = OffsetDateTime::now_utc();
        let mut next = now + RESYNC;
        let mut failed = false;
        for cert in &certs {
            match ensure_webhook_cert(&api, &ca, cert, ttl, now).await {
                Ok((outcome, renew_at)) => {
                    if outcome == Outcome::Issued {
                        tracing::info!(secret = %format!("{namespace}/{}", cert.secret), hosts = ?cert.hosts, renew_at = %renew_at, "issued a webhook serving certificate");
                    }
                    next = next.min(renew_at);
                }
                Err(error) => {
                    tracing::warn!(secret = %format!("{namespace}/{}", cert.secret), %error, "could not issue the webhook serving certificate; retrying");
                    failed = true;
                }
            }
        }
        let mut sleep = (next - OffsetDateTime::now_utc())
            .try_into()
            .unwrap_or(Duration::ZERO);
        if failed {
            sleep = sleep.min(backoff.fail());
        } else {
            backoff.reset();
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = wait_for_change(&mut changes) => {}
        }
    }
}

/// Resolves on the next add, change or deletion of a watched Secret (or a
/// completed relist); watch errors are retried by the watcher's backoff.
async fn wait_for_change(
    changes: &mut (impl futures::Stream<Item = Result<watcher::Event<Secret>, watcher::Error>> + Unpin),
) {
    while let Some(event) = changes.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "watching the webhook Secrets"),
        }
    }
    std::future::pending().await
}

/// Makes Secret `cert.secret` hold a good certificate for `cert.hosts`; returns
/// what was done and when the certificate in the Secret is due for renewal.
pub async fn ensure_webhook_cert(
    api: &Api<Secret>,
    ca: &Ca,
    cert: &WebhookCert,
    ttl: Duration,
    now: OffsetDateTime,
) -> Result<(Outcome, OffsetDateTime), ClusterError> {
    let name = &cert.secret;
    let ns = api.namespace().unwrap_or_default().to_string();
    let what = |verb: &str| format!("{verb} Secret {ns}/{name}");
    // A replica racing us can win a write; then its certificate is read back.
    for _ in 0..3 {
        let existing = api
            .get_opt(name)
            .await
            .map_err(ClusterError::api(what("reading")))?;
        if let Some(secret) = &existing {
            let type_ = secret.type_.as_deref().unwrap_or("Opaque");
            if type_ != TLS_TYPE {
                return Err(ClusterError::Secret {
                    secret: format!("{ns}/{name}"),
                    reason: format!(
                        "has type {type_}, not {TLS_TYPE}; delete it so citadel can write the webhook certificate there"
                    ),
                });
            }
            if let Some(renew_at) = renewal_time(secret, ca, &cert.hosts)
                && now < renew_at
            {
                return Ok((Outcome::Unchanged, renew_at));
            }
        }
        let (chain, key) = ca.dns_cert(&cert.hosts[0], &cert.hosts, ttl)?;
        let mut secret = tls_secret(&ns, name, &chain, &key);
        let written = match &existing {
            None => api.create(&PostParams::default(), &secret).await,
            Some(old) => {
                secret.metadata.resource_version = old.metadata.resource_version.clone();
                api.replace(name, &PostParams::default(), &secret).await
            }
        };
        match written {
            Ok(_) => {
                let renew_at =
                    renewal_time(&secret, ca, &cert.hosts).ok_or_else(|| ClusterError::Secret {
                        secret: format!("{ns}/{name}"),
                        reason: "the certificate just issued does not check out".into(),
                    })?;
                return Ok((Outcome::Issued, renew_at));
            }
            Err(e) if status_code(&e) == Some(409) => continue,
            Err(e) => {
                let verb = if existing.is_some() {
                    "replacing"
                } else {
                    "creating"
                };
                return Err(ClusterError::api(what(verb))(e));
            }
        }
    }
    Err(ClusterError::Secret {
        secret: format!("{ns}/{name}"),
        reason: "kept changing under citadel (three write conflicts in a row); will retry".into(),
    })
}

/// The kubernetes.io/tls Secret holding `chain` and `key`.
pub fn tls_secret(namespace: &str, name: &str, chain: &str, key: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".into(),
                "citadel".into(),
            )])),
            ..Default::default()
        },
        type_: Some(TLS_TYPE.into()),
        data: Some(BTreeMap::from([
            (TLS_CERT.into(), ByteString(chain.as_bytes().to_vec())),
            (TLS_KEY.into(), ByteString(key.as_bytes().to_vec())),
        ])),
        ..Default::default()
    }
}

/// When the Secret's certificate should be renewed (two thirds into its
/// lifetime), or `None` when it is unusable: unparsable, for other names, not
/// signed by `ca`, or not matching its key.
pub fn renewal_time(secret: &Secret, ca: &Ca, hosts: &[String]) -> Option<OffsetDateTime> {
    let chain = optional_text(secret, TLS_CERT).ok()??;
    let key = optional_text(secret, TLS_KEY).ok()??;
    let leaf_der = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()?
        .ok()?;
    let (_, leaf) = X509Certificate::from_der(&leaf_der).ok()?;
    let key = rcgen::KeyPair::from_pem(&key).ok()?;
    if leaf.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return None;
    }
    if !ca.signed_leaf(&leaf_der) {
        return None;
    }
    let names: BTreeSet<&str> = leaf
        .subject_alternative_name()
        .ok()??
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        })
        .collect();
    if names != hosts.iter().map(String::as_str).collect() {
        return None;
    }
    let not_before = leaf.validity().not_before.to_datetime();
    let not_after = leaf.validity().not_after.to_datetime();
    Some(not_before + (not_after - not_before) * 2 / 3)
}

#[cfg(test)]
#[path = "webhook_cert_tests.rs"]
mod tests;
