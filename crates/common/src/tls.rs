//! TLS setup shared by the services: rustls with the aws-lc-rs provider, serving
//! certificates from PEM files, and self-signed certificates for local use and tests.
//!
//! A server configuration made from files ([`server_config_from_files`]) serves
//! through [`ReloadingCert`]: each handshake compares the files' identity (device,
//! inode, size, modification time, symlinks followed) with what was loaded, and
//! re-reads them when they changed, so a certificate renewed on disk (a Kubernetes
//! Secret volume swaps its `..data` symlink) is served without a restart. A pair
//! that does not load (half written, key and certificate not matching yet) keeps
//! the previous certificate and is tried again on the next handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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

/// A server configuration from PEM files, re-read when they change
/// ([`ReloadingCert`]). Fails when they cannot be used now.
pub fn server_config_from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    install_crypto_provider();
    let resolver = ReloadingCert::load(cert, key)?;
    let mut cfg = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A serving certificate read from a PEM chain file and a PEM key file, re-read on
/// the first handshake after either changed (see the module docs).
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
}

struct Loaded {
    stamp: Stamp,
    key: Arc<CertifiedKey>,
    /// The files' stamp when they last failed to load: not retried (nor logged)
    /// again until they change once more.
    failed: Option<Stamp>,
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

type Stamp = (Option<FileStamp>, Option<FileStamp>);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        modified: m.modified().ok(),
    })
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    /// Loads `cert` and `key` now (an error names the file) and watches them.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ReloadingCert>, TlsError> {
        install_crypto_provider();
        let stamp = (file_stamp(cert), file_stamp(key));
        let certified = certified_key(cert, key)?;
        Ok(Arc::new(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            loaded: Mutex::new(Loaded {
                stamp,
                key: certified,
                failed: None,
            }),
        }))
    }

    /// The certificate to serve: re-read first if the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamp = (file_stamp(&self.cert), file_stamp(&self.key));
        if stamp != loaded.stamp && loaded.failed.as_ref() != Some(&stamp) {
            match certified_key(&self.cert, &self.key) {
                Ok(key) => {
                    tracing::info!(cert = %self.cert.display(), "serving certificate changed on disk: reloaded");
                    *loaded = Loaded {
                        stamp,
                        key,
                        failed: None,
                    };
                }
                Err(error) => {
                    tracing::warn!(cert = %self.cert.display(), %error, "serving certificate changed on disk but does not load; still serving the previous one");
                    loaded.failed = Some(stamp);
                }
            }
        }
        loaded.key.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let certs = certs_from_pem(&read(cert)?, &cert.display().to_string())?;
    let key_der = key_from_pem(&read(key)?, &key.display().to_string())?;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    Ok(Arc::new(CertifiedKey::from_der(certs, key_der, &provider)?))
}

/// A self-signed certificate and key (PEM) for `hosts` (DNS names or IPs).
pub fn self_signed(hosts: &[String]) -> Result<(String, String), TlsError> {
    let ck = rcgen::generate_simple_self_signed(hosts.to_vec())?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}
