//! Callers that present a certificate this CA issued (renewal over mTLS).
//!
//! The TLS layer has already checked the handshake, but the check is repeated here so
//! that the decision stands on its own: the leaf (`peer_certs[0]`) must chain through
//! the presented intermediates (`peer_certs[1..]`) to one of this CA's roots, with
//! good signatures and within its validity (webpki, through rustls'
//! `WebPkiClientVerifier`) → it must carry exactly one `spiffe://` URI SAN → that ID
//! must be an Istio identity of our trust domain. The requester recorded in the
//! ledger is the leaf's serial number in lowercase hex.

use std::sync::Arc;

use futures::future::BoxFuture;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{AuthError, Authenticator, CallContext, Caller};

/// The authenticator's name.
pub const NAME: &str = "client-cert";

/// Re-verifies client certificates against this CA's roots.
#[derive(Clone)]
pub struct ClientCertAuthenticator {
    trust_domain: String,
    /// `Err` says why no verifier could be built (no usable root).
    verifier: Result<Arc<dyn ClientCertVerifier>, String>,
}

impl std::fmt::Debug for ClientCertAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertAuthenticator")
            .field("trust_domain", &self.trust_domain)
            .field("verifier", &self.verifier.as_ref().map(|_| "webpki"))
            .finish()
    }
}

impl ClientCertAuthenticator {
    /// Accepts certificates chaining to one of `roots` and naming an identity of
    /// `trust_domain`. Roots that are not usable trust anchors are skipped with a
    /// warning; with none usable every certificate is refused, saying so.
    pub fn new(trust_domain: String, roots: Vec<CertificateDer<'static>>) -> Self {
        let mut store = RootCertStore::empty();
        for (i, root) in roots.into_iter().enumerate() {
            if let Err(e) = store.add(root) {
                tracing::warn!(index = i, error = %e, "CA root is not a usable trust anchor; skipped");
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
                .build()
                .map_err(|e| {
                    format!("no usable CA root to verify client certificates against ({e})")
                });
        ClientCertAuthenticator {
            trust_domain,
            verifier,
        }
    }

    /// Verifies a chain (leaf first) and names its holder.
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<Caller, AuthError> {
        let refuse = |reason: String| AuthError::Refused {
            authenticator: NAME,
            reason,
        };
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Err(refuse("no client certificate".into()));
        };
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| {
            refuse(format!(
                "the client certificate is not valid DER X.509: {e}"
            ))
        })?;
        let serial = format!("{:x}", cert.tbs_certificate.serial);
        let verifier = self.verifier.as_ref().map_err(|e| refuse(e.clone()))?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| refuse(chain_error(e, &cert, &serial)))?;

        let identity = common::spiffe::from_certificate(leaf)
            .map_err(|e| refuse(format!("certificate {serial}: {e}")))?;
        if identity.trust_domain != self.trust_domain {
            return Err(refuse(format!(
                "certificate {serial} names {identity}, of trust domain {:?}, not ours ({:?})",
                identity.trust_domain, self.trust_domain
            )));
        }
        Ok(Caller {
            identity,
            authenticator: NAME,
            requester: serial,
        })
    }
}

/// Words for a failed chain check.
fn chain_error(e: rustls::Error, cert: &X509Certificate<'_>, serial: &str) -> String {
    let validity = cert.validity();
    match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                format!("certificate {serial} expired at {}", validity.not_after)
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!(
                    "certificate {serial} is not valid before {}",
                    validity.not_before
                )
            }
            CertificateError::UnknownIssuer => format!(
                "certificate {serial} (issuer {}) was not issued by this CA",
                cert.issuer()
            ),
            CertificateError::BadSignature => {
                format!("certificate {serial} has a bad signature: not issued by this CA")
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                format!("certificate {serial} is not for client authentication")
            }
            other => format!("certificate {serial} was refused: {other:?}"),
        },
        other => format!("certificate {serial} was refused: {other}"),
    }
}

impl Authenticator for ClientCertAuthenticator {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authenticate<'a>(
        &'a self,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Option<Caller>, AuthError>> {
        Box::pin(async move {
            if ctx.peer_certs.is_empty() {
                return Ok(None);
            }
            self.verify(&ctx.peer_certs).map(Some)
        })
    }
}
