//! The webhook's serving certificate, re-read when its files change.
//!
//! Citadel renews the Secret `injector-webhook-tls`; the kubelet then swaps the
//! mounted files (`tls.crt`, `tls.key`). [`ReloadingCert`] answers each TLS
//! handshake with the current pair: it looks at both files' modification time
//! and size (a `stat`, no read) and re-reads them only when either changed. A
//! pair that cannot be used (half written, key and certificate not matching)
//! is logged and the last good one stays.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use common::tls::TlsError;
use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// What identifies one version of a file.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

/// A certificate resolver over a certificate and key file pair.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<(Stamp, Stamp, Arc<CertifiedKey>)>,
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let certs = common::tls::certs_from_pem(&read(cert)?, &cert.display().to_string())?;
    let key_der = common::tls::key_from_pem(&read(key)?, &key.display().to_string())?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(certs, key_der, &provider)?;
    Ok(Arc::new(certified))
}

impl ReloadingCert {
    /// Reads the pair now; fails when it cannot be used.
    pub fn new(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let (cs, ks) = (stamp(cert), stamp(key));
        let current = load(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            state: Mutex::new((cs, ks, current)),
        })
    }

    /// The current pair, re-read first when a file changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (cs, ks) = (stamp(&self.cert), stamp(&self.key));
        if cs != state.0 || ks != state.1 {
            match load(&self.cert, &self.key) {
                Ok(fresh) => {
                    tracing::info!(cert = %self.cert.display(), "webhook certificate reloaded");
                    *state = (cs, ks, fresh);
                }
                Err(e) => {
                    // Keep the stamps old so the next handshake tries again.
                    tracing::warn!(error = %e, "cannot use the changed webhook certificate; serving the previous one");
                }
            }
        }
        state.2.clone()
    }

    /// A rustls server configuration (h2, http/1.1) answering with this pair.
    pub fn server_config(self) -> Arc<ServerConfig> {
        common::tls::install_crypto_provider();
        let mut cfg = ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(self));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, host: &str) {
        let (cert, key) = common::tls::self_signed(&[host.to_string()]).unwrap();
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
    }

    #[test]
    fn a_renewed_pair_is_picked_up_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "one.example");
        let r =
            ReloadingCert::new(&dir.path().join("tls.crt"), &dir.path().join("tls.key")).unwrap();
        let first = r.current().cert[0].clone();
        assert_eq!(
            r.current().cert[0],
            first,
            "unchanged files are not re-read"
        );
        // A renewal with a different size (and usually mtime).
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_pair(dir.path(), "a-longer-name.two.example");
        let second = r.current().cert[0].clone();
        assert_ne!(second, first, "the renewed certificate is served");
        // Half written: the last good one stays.
        std::fs::write(dir.path().join("tls.key"), "garbage").unwrap();
        assert_eq!(r.current().cert[0], second);
        let err = ReloadingCert::new(&dir.path().join("tls.crt"), &dir.path().join("missing.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.key"), "{err}");
    }
}
