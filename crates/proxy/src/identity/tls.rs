//! rustls configurations for Istio's mesh mTLS (`ISTIO_MUTUAL`).
//!
//! Both sides present the workload's chain and verify the peer's chain against
//! the mesh roots of the [`Certified`]. The client additionally requires the
//! server's URI SAN to be one of the identities the cluster allows (Envoy's
//! `match_subject_alt_names`), and ignores the server name: Istio's SNI
//! (`outbound_.9080_._.reviews.default.svc.cluster.local`) names a cluster, not
//! a name in the certificate. The server requires a client certificate
//! (`STRICT`) or accepts connections without one (`PERMISSIVE`'s TLS half);
//! who the client is, is read with [`peer_identity`] and left to
//! authorization.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

pub use super::sds::from_sds;

use super::certified::{is_spiffe, provider, root_store, uri_sans};
use super::{Certified, Error, Result};

/// A client config that presents `cert`'s chain, trusts only `cert.roots`, and
/// accepts a server whose URI SAN is one of `allowed_sans` (any identity under
/// the mesh roots when empty). `alpn` is offered in order.
pub fn client_config(
    cert: &Certified,
    allowed_sans: &[String],
    alpn: &[&str],
) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let verifier = Arc::new(MeshServerVerifier {
        roots: Arc::new(root_store(&cert.roots)?),
        allowed: allowed_sans.to_vec(),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            what: "no TLS protocol version is available",
            source,
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(cert.certs.clone(), cert.key.clone_key())
        .map_err(|source| Error::Tls {
            what: "the workload certificate and key cannot be presented",
            source,
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// A server config that presents `cert`'s chain and verifies client chains
/// against `cert.roots`: a client certificate is required when
/// `require_client_cert`, otherwise optional (but verified when sent).
pub fn server_config(
    cert: &Certified,
    require_client_cert: bool,
    alpn: &[&str],
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = provider();
    let builder = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(&cert.roots)?),
        provider.clone(),
    );
    let builder = if require_client_cert {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let verifier = builder
        .build()
        .map_err(|e| Error::Verifier(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls {
            what: "no TLS protocol version is available",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert.certs.clone(), cert.key.clone_key())
        .map_err(|source| Error::Tls {
            what: "the workload certificate and key cannot be presented",
            source,
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Arc::new(config))
}

/// What Envoy's `x-forwarded-client-cert` says of a peer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// SHA-256 of the leaf's DER, lowercase hex (`Hash=`).
    pub hash: String,
    /// The leaf's subject, RFC 2253 (`Subject=`).
    pub subject: String,
    /// The leaf's URI SANs (`URI=`).
    pub uris: Vec<String>,
    /// The leaf's DNS SANs (`DNS=`).
    pub dns: Vec<String>,
}

/// The peer's leaf certificate after a handshake, for XFCC.
pub fn peer_cert(conn: &rustls::CommonState) -> Option<PeerCert> {
    use x509_parser::extensions::GeneralName;
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    let hash = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let dns = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Some(PeerCert {
        hash,
        subject: cert.subject().to_string(),
        uris: uri_sans(&cert),
        dns,
    })
}

/// The peer's identity after a handshake: the first `spiffe://` URI SAN of its
/// leaf certificate. `None` when the peer sent no certificate or its leaf has
/// no SPIFFE ID.
pub fn peer_identity(conn: &rustls::CommonState) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    uri_sans(&cert).into_iter().find(|u| is_spiffe(u))
}

/// Why a server's certificate was refused after its chain verified. Its
/// `Debug` is its message, because rustls shows the `Debug` form in errors.
#[derive(thiserror::Error)]
#[error("the server's identity {found:?} is not one of the allowed {allowed:?}")]
struct SanMismatch {
    found: Vec<String>,
    allowed: Vec<String>,
}

impl std::fmt::Debug for SanMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Chain verification against the mesh roots plus the URI SAN check; the
/// server name is not checked (see the module doc).
#[derive(Debug)]
struct MeshServerVerifier {
    roots: Arc<rustls::RootCertStore>,
    allowed: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.allowed.is_empty() {
            return Ok(ServerCertVerified::assertion());
        }
        let (_, cert) = X509Certificate::from_der(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let found = uri_sans(&cert);
        if found.iter().any(|san| self.allowed.contains(san)) {
            return Ok(ServerCertVerified::assertion());
        }
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(SanMismatch {
                found,
                allowed: self.allowed.clone(),
            })),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
