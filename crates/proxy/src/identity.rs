//! The workload's mesh identity: its SPIFFE certificate, obtained from the CA
//! and kept fresh, and the rustls configurations that use it for Istio's mesh
//! mTLS (`ISTIO_MUTUAL`).
//!
//! This module owns the key pair, the CSR, the call to the CA, the checks on
//! the answer, renewal, and the TLS configs. It does not decide which
//! connections use mTLS (the listeners and clusters do, from xDS) nor authorize
//! peers (authorization reads [`tls::peer_identity`]).
//!
//! The path of a certificate, top-down:
//! - [`manager`]: [`CertManager::run`] asks for a certificate at once, retries
//!   with exponential backoff (1 s to 60 s, jittered) while the CA cannot be
//!   reached or refuses, and renews at half the certificate's lifetime (Istio's
//!   default grace ratio), publishing each new [`Certified`] on a `watch`
//!   channel; the previous one stays current until its successor is checked;
//! - [`ca_client`]: one request is a fresh key pair ([`KeyType`]) and a CSR
//!   whose only SAN is the SPIFFE ID, sent to
//!   `istio.v1.auth.IstioCertificateService/CreateCertificate` over TLS (trusting
//!   [`IdentityConfig::ca_root_pem`]) with `authorization: Bearer <token>` and,
//!   when set, the `ClusterID` header, as istio-agent sends them. The
//!   [`CaClient`] trait is the seam where a test CA or another transport plugs in;
//! - [`certified`]: the CA's answer (leaf first, root last) becomes a
//!   [`Certified`] only when the leaf names the requested identity, holds our
//!   public key, and chains to the root the answer carries;
//! - [`tls`]: rustls client and server configs from a [`Certified`]: present
//!   our chain, verify the peer's chain against the mesh roots, and (client
//!   side) check the server's URI SAN against the allowed identities while
//!   ignoring the SNI, which in Istio names a cluster, not a certificate;
//!   [`tls::from_sds`] builds a [`Certified`] from Envoy SDS secrets instead.

use std::path::PathBuf;
use std::time::Duration;

pub mod ca_client;
pub mod certified;
pub mod manager;
mod sds;
pub mod tls;

pub use ca_client::{CaClient, IstioCaClient};
pub use certified::Certified;
pub use manager::CertManager;
/// The bytes of an Envoy `DataSource` (file, inline bytes or string, environment
/// variable), as SDS secrets and bootstrap TLS contexts give them.
pub(crate) use sds::read as read_data_source;

use crate::xds::Backoff;

/// Istio's default workload certificate lifetime.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the [`CertManager`] asks for and from whom.
#[derive(Clone)]
pub struct IdentityConfig {
    /// The CA's gRPC address, e.g. `https://127.0.0.1:15012` or
    /// `istiod.istio-system.svc:15012` (`https://` is assumed). The host must be
    /// a name or IP in the CA's serving certificate.
    pub ca_addr: String,
    /// PEM roots that verify the CA's serving certificate (istio-agent's
    /// `/var/run/secrets/istio/root-cert.pem`).
    pub ca_root_pem: Vec<u8>,
    /// The bearer token that proves the workload's service account.
    pub token: TokenSource,
    /// The identity asked for: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub spiffe_id: String,
    /// The lifetime asked for; the CA may cap it.
    pub requested_ttl: Duration,
    /// The algorithm of the workload's key.
    pub key: KeyType,
    /// Sent as the `ClusterID` header when set (Istio's multi-cluster CA routing).
    pub cluster_id: Option<String>,
    /// Delays between failed attempts (default 1 s to 60 s).
    pub backoff: Backoff,
}

impl IdentityConfig {
    /// A config with Istio's defaults: 24 h, ECDSA P-256, no cluster id, 1 s to
    /// 60 s backoff.
    pub fn new(
        ca_addr: impl Into<String>,
        ca_root_pem: impl Into<Vec<u8>>,
        token: TokenSource,
        spiffe_id: impl Into<String>,
    ) -> Self {
        IdentityConfig {
            ca_addr: ca_addr.into(),
            ca_root_pem: ca_root_pem.into(),
            token,
            spiffe_id: spiffe_id.into(),
            requested_ttl: DEFAULT_TTL,
            key: KeyType::default(),
            cluster_id: None,
            backoff: Backoff {
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
            },
        }
    }
}

impl std::fmt::Debug for IdentityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityConfig")
            .field("ca_addr", &self.ca_addr)
            .field("ca_root_pem_bytes", &self.ca_root_pem.len())
            .field("token", &self.token)
            .field("spiffe_id", &self.spiffe_id)
            .field("requested_ttl", &self.requested_ttl)
            .field("key", &self.key)
            .field("cluster_id", &self.cluster_id)
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// Where the bearer token comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// A file read on every request, so a rotated projected token is picked up
    /// (istio-agent's `/var/run/secrets/tokens/istio-token`).
    File(PathBuf),
    /// A fixed token.
    Static(String),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
            TokenSource::Static(_) => f.write_str("Static(<redacted>)"),
        }
    }
}

impl TokenSource {
    /// The current token, trimmed; an unreadable or empty file is an error.
    pub fn read(&self) -> Result<String> {
        match self {
            TokenSource::Static(t) if t.trim().is_empty() => Err(Error::EmptyToken {
                source_name: "the static token".into(),
            }),
            TokenSource::Static(t) => Ok(t.trim().to_string()),
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::TokenFile {
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(Error::EmptyToken {
                        source_name: format!("token file {}", path.display()),
                    });
                }
                Ok(token.to_string())
            }
        }
    }
}

/// The algorithm of the workload's key pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256 (Istio's default with `ECC_SIGNATURE_ALGORITHM`,
    /// and Mizzen's default).
    #[default]
    EcdsaP256,
    /// RSA 2048 with PKCS#1 SHA-256 signatures (istio-agent's default).
    Rsa2048,
}

/// Why an identity could not be obtained or used. Each message names what to
/// check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is unusable.
    #[error("identity config: {what}: {reason}")]
    Config {
        /// Which setting.
        what: &'static str,
        /// What is wrong and what to give instead.
        reason: String,
    },
    /// The token file could not be read.
    #[error(
        "cannot read the CA token file {path}: {source}; check that the projected service-account token is mounted there"
    )]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The token is empty.
    #[error("{source_name} is empty; a bearer token for the CA is needed")]
    EmptyToken {
        /// Which source (the file, or the static token).
        source_name: String,
    },
    /// A key pair or CSR could not be made.
    #[error("cannot generate the workload key or CSR: {0}")]
    KeyGen(#[source] rcgen::Error),
    /// The CA could not be reached over TLS.
    #[error(
        "cannot connect to the CA at {addr}: {detail}; check the CA address, that it serves TLS, and that the CA root (ca_root_pem) signed its serving certificate"
    )]
    Connect {
        /// The CA address.
        addr: String,
        /// The transport error with its causes.
        detail: String,
    },
    /// The CA answered with an error.
    #[error("the CA at {addr} refused the request ({code:?}): {message}{}", rpc_hint(*.code))]
    Rpc {
        /// The CA address.
        addr: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The CA's message.
        message: String,
    },
    /// The CA's answer is not a usable certificate for this workload.
    #[error("the CA's answer is unusable: {0}")]
    Response(String),
    /// PEM or DER input holds no usable certificate or key.
    #[error("{what}: {detail}")]
    Pem {
        /// Which input.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The certificate does not chain to the roots, or rustls refused it.
    #[error("{what}: {source}")]
    Tls {
        /// What was being checked or built.
        what: &'static str,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// A client or server verifier could not be built from the roots.
    #[error("cannot build a certificate verifier from the mesh roots: {0}; check roots_pem")]
    Verifier(String),
    /// An SDS secret is not a usable certificate or trust bundle.
    #[error("SDS secret {name:?}: {reason}")]
    Sds {
        /// The secret's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
}

/// The module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn rpc_hint(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Unauthenticated => {
            "; check the token: its issuer and audience must be ones the CA trusts, and it must not be expired"
        }
        tonic::Code::PermissionDenied => {
            "; check that the SPIFFE ID asked for is the token's namespace and service account in the CA's trust domain"
        }
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
            "; the CA is unreachable or overloaded, check the CA address and that it is running"
        }
        tonic::Code::Unimplemented => {
            "; the address does not serve istio.v1.auth.IstioCertificateService, check the CA address"
        }
        tonic::Code::InvalidArgument => "; the CA did not accept the CSR or the requested TTL",
        _ => "",
    }
}
