//! TLS setup shared by the services: rustls with the aws-lc-rs provider, serving
//! certificates from PEM files, and self-signed certificates for local use and tests.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// PEM text held no usable certificate or key.
    #[error("{what} is not valid PEM: {detail}")]
    Pem {
        /// Which input.
        what: String,
        /// The parser's words.
        detail: String,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("the certificate and key cannot be used together: {0}")]
    Config(#[from] rustls::Error),
    /// Generating a certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Installs aws-lc-rs as the process's rustls provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Parses a PEM certificate chain.
pub fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            what: what.into(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what: what.into(),
            detail: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// Parses a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: what.into(),
        detail: e.to_string(),
    })
}

/// A server configuration from PEM certificate chain and key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let certs = certs_from_pem(cert_pem, "the certificate")?;
    let key = key_from_pem(key_pem, "the private key")?;
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A server configuration from PEM files.
pub fn server_config_from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    server_config(&read(cert)?, &read(key)?)
}

/// A self-signed certificate and key (PEM) for `hosts` (DNS names or IPs).
pub fn self_signed(hosts: &[String]) -> Result<(String, String), TlsError> {
    let ck = rcgen::generate_simple_self_signed(hosts.to_vec())?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}
