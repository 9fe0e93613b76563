//! The proxy's workload identity against a real citadel, in-process on
//! loopback: certificates are issued over Istio's CA API with tokens from
//! citadel's local issuer, renewed at half-life, and used for mesh mTLS with
//! tokio-rustls on both ends.

#[path = "support/citadel.rs"]
mod citadel_support;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use citadel::app::App;
use citadel::local_issuer::LocalIssuer;
use proxy::identity::tls::{client_config, peer_identity, server_config};
use proxy::identity::{CertManager, Certified, Error, IdentityConfig, KeyType, TokenSource};
use proxy::xds::Backoff;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The bound of every wait in this file: generous, so a slow machine is not a
/// failure, and finite, so a hang is.
const WAIT: Duration = Duration::from_secs(30);

const ID_A: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const ID_B: &str = "spiffe://cluster.local/ns/default/sa/reviews";
/// The SNI Istio's client sidecar sends: a cluster name, not a certificate name.
const ISTIO_SNI: &str = "outbound_.9080_._.reviews.default.svc.cluster.local";

/// A citadel in local mode (tokens from its own issuer) on loopback.
struct Citadel {
    addr: String,
    root_pem: String,
    issuer: LocalIssuer,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), citadel::app::Error>>,
    _dir: tempfile::TempDir,
}

impl Citadel {
    async fn start() -> Citadel {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("keys");
        let app = App::build(citadel_support::config(&key_dir))
            .await
            .expect("citadel builds");
        let addr = format!("https://{}", app.addrs().grpc);
        let root_pem = app.ca().roots().concat();
        let issuer = LocalIssuer::load(&key_dir).expect("citadel created its token issuer");
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Citadel {
            addr,
            root_pem,
            issuer,
            stop: Some(tx),
            task,
            _dir: dir,
        }
    }

    /// A token for `default/<sa>` with the audience citadel expects.
    fn token(&self, sa: &str) -> String {
        self.issuer
            .mint("default", sa, "istio-ca", Duration::from_secs(3600))
            .unwrap()
    }

    /// A config asking this citadel for `id` with `token`, retrying quickly.
    fn identity(&self, id: &str, token: TokenSource) -> IdentityConfig {
        let mut c = IdentityConfig::new(&self.addr, self.root_pem.as_bytes(), token, id);
        c.backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        c
    }

    async fn cert(&self, id: &str, sa: &str) -> Arc<Certified> {
        let m = CertManager::new(self.identity(id, TokenSource::Static(self.token(sa))));
        m.fetch().await.expect("citadel issues a certificate")
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().expect("citadel stops cleanly");
    }
}

/// Waits for `cond` to hold, polling, at most [`WAIT`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?}: {what}"))
}

#[tokio::test]
async fn issues_a_certificate_for_the_requested_identity_chained_to_citadels_root() {
    let citadel = Citadel::start().await;
    for key in [KeyType::EcdsaP256, KeyType::Rsa2048] {
        let mut config = citadel.identity(ID_A, TokenSource::Static(citadel.token("productpage")));
        config.key = key;
        config.requested_ttl = Duration::from_secs(3600);
        config.cluster_id = Some("Kubernetes".into());
        let manager = CertManager::new(config);
        assert!(manager.current().is_none());
        let cert = bounded("fetch", manager.fetch()).await.unwrap();

        assert_eq!(cert.spiffe_id, ID_A);
        let leaf = common::spiffe::from_certificate(&cert.certs[0]).unwrap();
        assert_eq!(leaf.uri(), ID_A);
        assert_eq!(cert.roots_pem, citadel.root_pem);
        assert_eq!(cert.roots.len(), 1);
        let life = cert.not_after.duration_since(cert.not_before).unwrap();
        assert!(
            life <= Duration::from_secs(3600) && life >= Duration::from_secs(3590),
            "{life:?}"
        );
        assert!(cert.is_valid_at(SystemTime::now()));
        assert!(cert.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem.contains("PRIVATE KEY"));
        let current = manager
            .current()
            .expect("the fetched certificate is current");
        assert!(Arc::ptr_eq(&current, &cert));
        assert!(Arc::ptr_eq(
            manager.subscribe().borrow().as_ref().unwrap(),
            &cert
        ));
    }
    citadel.stop().await;
}

#[tokio::test]
async fn refusals_name_what_to_check() {
    let citadel = Citadel::start().await;

    let bad = CertManager::new(citadel.identity(ID_A, TokenSource::Static("not-a-jwt".into())));
    let err = bounded("fetch", bad.fetch()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Rpc {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("check the token"), "{err}");

    // A token for another service account may not ask for this identity.
    let other =
        CertManager::new(citadel.identity(ID_A, TokenSource::Static(citadel.token("reviews"))));
    let err = bounded("fetch", other.fetch()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Rpc {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ),
        "{err}"
    );

    // The wrong trust anchor for the CA's serving certificate.
    let stranger = Citadel::start().await;
    let mut config = citadel.identity(ID_A, TokenSource::Static(citadel.token("productpage")));
    config.ca_root_pem = stranger.root_pem.clone().into_bytes();
    let err = bounded("fetch", CertManager::new(config).fetch())
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("ca_root_pem"), "{err}");

    // A missing token file.
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("istio-token");
    let m = CertManager::new(citadel.identity(ID_A, TokenSource::File(missing.clone())));
    let err = m.fetch().await.unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");

    stranger.stop().await;
    citadel.stop().await;
}

#[tokio::test]
async fn a_bad_token_is_retried_until_the_token_file_is_fixed() {
    let citadel = Citadel::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("istio-token");
    std::fs::write(&token_file, "expired-or-garbage").unwrap();
    let manager = Arc::new(CertManager::new(
        citadel.identity(ID_A, TokenSource::File(token_file.clone())),
    ));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(manager.clone().run(stop_rx));

    eventually("the first failure to be recorded", || {
        manager.last_error().is_some()
    })
    .await;
    let err = manager.last_error().unwrap();
    assert!(
        err.contains("Unauthenticated") && err.contains("check the token"),
        "{err}"
    );
    assert!(manager.current().is_none());
    assert!(!task.is_finished(), "the loop keeps retrying");

    // The file is re-read on every attempt: fixing it is enough.
    std::fs::write(&token_file, citadel.token("productpage")).unwrap();
    let mut rx = manager.subscribe();
    let cert = bounded("a certificate after the token is fixed", async {
        rx.wait_for(Option::is_some).await.unwrap().clone().unwrap()
    })
    .await;
    assert_eq!(cert.spiffe_id, ID_A);
    eventually("the error to be cleared", || manager.last_error().is_none()).await;

    let _ = stop_tx.send(());
    bounded("the loop to stop", task).await.unwrap();
    citadel.stop().await;
}

#[tokio::test]
async fn renews_at_half_life_and_keeps_the_old_certificate_until_then() {
    let citadel = Citadel::start().await;
    let mut config = citadel.identity(ID_B, TokenSource::Static(citadel.token("reviews")));
    config.requested_ttl = Duration::from_secs(8);
    let manager = Arc::new(CertManager::new(config));
    let mut rx = manager.subscribe();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(manager.clone().run(stop_rx));

    let first = bounded("the first certificate", async {
        rx.wait_for(Option::is_some).await.unwrap().clone().unwrap()
    })
    .await;
    let life = first.not_after.duration_since(first.not_before).unwrap();
    assert!(
        life <= Duration::from_secs(8),
        "citadel honours the short TTL: {life:?}"
    );

    let second = bounded("a renewed certificate", async {
        rx.wait_for(|c| c.as_ref().is_some_and(|c| c.certs[0] != first.certs[0]))
            .await
            .unwrap()
            .clone()
            .unwrap()
    })
    .await;
    let renewed_at = SystemTime::now();
    assert_eq!(second.spiffe_id, ID_B);
    assert_ne!(
        second.key_pem, first.key_pem,
        "a fresh key for every certificate"
    );
    assert!(second.not_after > first.not_after);
    // Renewal waits for the grace point (50% ± 1%, whole seconds in the
    // certificate), and comes before the old one expires.
    assert!(
        second.not_before + Duration::from_secs(1) >= first.renew_at(0.49),
        "renewed too early: first {first:?}, second {second:?}"
    );
    assert!(
        renewed_at < first.not_after + Duration::from_secs(1),
        "the old certificate expired before it was replaced"
    );

    let _ = stop_tx.send(());
    bounded("the loop to stop", task).await.unwrap();
    assert!(
        manager.current().is_some(),
        "stopping keeps the last certificate"
    );
    citadel.stop().await;
}

/// One handshake over loopback: (server's view, client's view), each the peer's
/// identity or the error. The server writes two bytes after its handshake so
/// the client learns of a refusal of its certificate (TLS 1.3 finishes the
/// client's handshake before the server has checked it).
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    sni: &str,
) -> (
    Result<Option<String>, String>,
    Result<Option<String>, String>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        match tokio_rustls::TlsAcceptor::from(server).accept(tcp).await {
            Ok(mut tls) => {
                let peer = peer_identity(tls.get_ref().1);
                tls.write_all(b"ok").await.map_err(|e| e.to_string())?;
                tls.flush().await.map_err(|e| e.to_string())?;
                Ok(peer)
            }
            Err(e) => Err(e.to_string()),
        }
    });
    let name = ServerName::try_from(sni.to_string()).expect("Istio's SNI is a valid server name");
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let peer = peer_identity(tls.get_ref().1);
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        Ok(peer)
    };
    let client_view = bounded("client handshake", client_side).await;
    let server_view = bounded("server handshake", server_side).await.unwrap();
    (server_view, client_view)
}

/// A client that presents no certificate and trusts any server (to test the
/// server's side alone).
fn anonymous_client() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct AnyServer(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
            .with_no_client_auth(),
    )
}

#[tokio::test]
async fn mesh_mtls_between_two_workloads() {
    let citadel = Citadel::start().await;
    let a = citadel.cert(ID_A, "productpage").await;
    let b = citadel.cert(ID_B, "reviews").await;
    let strict = server_config(&b, true, &["istio-peer-exchange", "istio"]).unwrap();
    let permissive = server_config(&b, false, &[]).unwrap();

    // Both sides learn each other's identity; the SNI names a cluster and is
    // not checked against the certificate.
    let client = client_config(&a, &[ID_B.to_string()], &["istio"]).unwrap();
    let (server_view, client_view) = handshake(strict.clone(), client, ISTIO_SNI).await;
    assert_eq!(server_view, Ok(Some(ID_A.to_string())));
    assert_eq!(client_view, Ok(Some(ID_B.to_string())));

    // An empty allow list accepts any identity under the mesh roots; an IP
    // server name works too.
    let any = client_config(&a, &[], &[]).unwrap();
    let (server_view, client_view) = handshake(strict.clone(), any, "127.0.0.1").await;
    assert_eq!(server_view, Ok(Some(ID_A.to_string())));
    assert_eq!(client_view, Ok(Some(ID_B.to_string())));

    // A client that allows only another identity refuses the server.
    let elsewhere = client_config(
        &a,
        &["spiffe://cluster.local/ns/default/sa/ratings".to_string()],
        &[],
    )
    .unwrap();
    let (server_view, client_view) = handshake(strict.clone(), elsewhere, ISTIO_SNI).await;
    let err = client_view.unwrap_err();
    assert!(err.contains("is not one of the allowed"), "{err}");
    assert!(server_view.is_err());

    // No client certificate: refused by STRICT, accepted by PERMISSIVE.
    let (server_view, client_view) = handshake(strict.clone(), anonymous_client(), ISTIO_SNI).await;
    let err = server_view.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(client_view.is_err());
    let (server_view, client_view) =
        handshake(permissive.clone(), anonymous_client(), ISTIO_SNI).await;
    assert_eq!(server_view, Ok(None));
    assert_eq!(client_view, Ok(Some(ID_B.to_string())));

    // Certificates of another mesh's CA are refused on both sides.
    let stranger = Citadel::start().await;
    let c = stranger.cert(ID_A, "productpage").await;
    let foreign_client = client_config(&c, &[ID_B.to_string()], &[]).unwrap();
    let (server_view, client_view) = handshake(strict.clone(), foreign_client, ISTIO_SNI).await;
    assert!(
        client_view.is_err(),
        "the client does not trust b's root either"
    );
    assert!(server_view.is_err());
    // Even a client that trusts our roots is refused for a foreign certificate.
    let c_trusting_us = Certified {
        chain_pem: c.chain_pem.clone(),
        key_pem: c.key_pem.clone(),
        roots_pem: a.roots_pem.clone(),
        spiffe_id: c.spiffe_id.clone(),
        not_before: c.not_before,
        not_after: c.not_after,
        certs: c.certs.clone(),
        key: c.key.clone_key(),
        roots: a.roots.clone(),
    };
    for server in [strict.clone(), permissive.clone()] {
        let foreign_client = client_config(&c_trusting_us, &[ID_B.to_string()], &[]).unwrap();
        let (server_view, client_view) = handshake(server, foreign_client, ISTIO_SNI).await;
        let err = server_view.unwrap_err();
        // Both citadels name their root alike, so webpki reports a bad signature
        // rather than an unknown issuer.
        assert!(err.contains("invalid peer certificate"), "{err}");
        assert!(client_view.is_err());
    }

    // Against the foreign server, our client refuses the chain.
    let foreign_server = server_config(&c, false, &[]).unwrap();
    let client = client_config(&a, &[], &[]).unwrap();
    let (_, client_view) = handshake(foreign_server, client, ISTIO_SNI).await;
    let err = client_view.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");

    stranger.stop().await;
    citadel.stop().await;
}
