//! The webhook picks up a renewed serving certificate without a restart: the files
//! are laid out as a Kubernetes Secret volume (`tls.crt` → `..data/tls.crt`,
//! `..data` → a timestamped directory) and renewed by swapping `..data`, as the
//! kubelet does; real TLS clients see the new certificate on their next handshake,
//! and a broken update keeps the last good one.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;

use galley::app::{App, Config};
use rustls_pki_types::{CertificateDer, ServerName};

/// Writes `cert`/`key` into a new timestamped directory and points `..data` at it
/// atomically (a new symlink renamed over the old one).
fn kubelet_write(dir: &Path, version: &str, cert: &str, key: &str) {
    let data = dir.join(format!("..2026_12_07_{version}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), cert).unwrap();
    std::fs::write(data.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if link.symlink_metadata().is_err() {
            symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
}

/// The leaf the server presents in a fresh handshake (the client trusts `roots`).
async fn presented(addr: std::net::SocketAddr, roots: &[&str]) -> CertificateDer<'static> {
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for c in common::tls::certs_from_pem(pem.as_bytes(), "root").unwrap() {
            store.add(c).unwrap();
        }
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the webhook");
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

fn der(pem: &str) -> CertificateDer<'static> {
    common::tls::certs_from_pem(pem.as_bytes(), "cert")
        .unwrap()
        .remove(0)
}

#[tokio::test]
async fn renewed_certificate_is_served_without_a_restart() {
    common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = common::tls::self_signed(&["localhost".into()]).unwrap();
    kubelet_write(dir.path(), "a", &cert_a, &key_a);

    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        webhook_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        tls_cert_file: Some(dir.path().join("tls.crt")),
        tls_key_file: Some(dir.path().join("tls.key")),
        tls_hosts: vec![],
        log: common::runtime::LogArgs {
            log_format: common::runtime::LogFormat::Text,
            log_level: "info".into(),
        },
    };
    let app = App::build(config).await.expect("galley builds");
    let addr = app.addrs().webhook;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));

    let (cert_b, key_b) = common::tls::self_signed(&["localhost".into()]).unwrap();
    let both = [cert_a.as_str(), cert_b.as_str()];
    assert_eq!(presented(addr, &both).await, der(&cert_a));

    // citadel renewed the Secret; the kubelet swaps ..data.
    kubelet_write(dir.path(), "b", &cert_b, &key_b);
    assert_eq!(
        presented(addr, &both).await,
        der(&cert_b),
        "the next handshake gets the renewed certificate"
    );
    // A client trusting only the new certificate succeeds too.
    assert_eq!(presented(addr, &[&cert_b]).await, der(&cert_b));

    // A broken update (the key of another certificate) keeps the last good one.
    let (_, key_c) = common::tls::self_signed(&["localhost".into()]).unwrap();
    kubelet_write(dir.path(), "c", &cert_b, &key_c);
    assert_eq!(presented(addr, &both).await, der(&cert_b));
    // Fixed again: served.
    let (cert_d, key_d) = common::tls::self_signed(&["localhost".into()]).unwrap();
    kubelet_write(dir.path(), "d", &cert_d, &key_d);
    assert_eq!(presented(addr, &[&cert_d]).await, der(&cert_d));

    let _ = tx.send(());
    task.await.unwrap().unwrap();
}
