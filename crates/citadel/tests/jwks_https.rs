//! A JWKS URL over real https, as citadel reads a cluster's
//! `https://kubernetes.default.svc/openid/v1/jwks`: the server's certificate
//! verified with `--jwks-ca-file` roots, and the `--jwks-token-file` content sent
//! as a bearer token on every fetch.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use citadel::auth::jwks::{JwksError, JwksSource, UrlOptions};
use citadel::auth::jwt::JwtAuthenticator;
use citadel::auth::{AuthError, Authenticator, CallContext};
use citadel::local_issuer::{ISSUER, LocalIssuer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "reader-token-1";

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca PEM, cert PEM, key PEM).
fn server_material() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// An https server answering `GET /keys` with `body` when the request carries
/// `Authorization: Bearer TOKEN`, 401 otherwise. Returns the URL and the hit count.
async fn https_jwks(cert: &str, key: &str, body: String) -> (String, Arc<AtomicUsize>) {
    common::tls::install_crypto_provider();
    let config = common::tls::server_config(cert.as_bytes(), key.as_bytes()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/keys", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, body, h) = (acceptor.clone(), body.clone(), h.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                h.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&request).to_lowercase();
                let answer = if text.contains(&format!("authorization: bearer {TOKEN}")) {
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\ncontent-length: 12\r\nconnection: close\r\n\r\nunauthorized"
                        .to_string()
                };
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (url, hits)
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn authenticator(url: &str, options: UrlOptions) -> JwtAuthenticator {
    JwtAuthenticator::new(
        JwksSource::Url(url.to_string(), options),
        ISSUER.into(),
        "istio-ca".into(),
        "cluster.local".into(),
    )
    .await
    .unwrap()
}

fn bearer(token: &str) -> CallContext {
    CallContext {
        authorization: Some(format!("Bearer {token}")),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_https_jwks_is_read_with_the_given_roots_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let issuer = LocalIssuer::load_or_create(&dir.path().join("issuer")).unwrap();
    let (ca, cert, key) = server_material();
    let body = serde_json::to_string(&issuer.jwks()).unwrap();
    let (url, hits) = https_jwks(&cert, &key, body).await;
    let ca_file = write(dir.path(), "ca.crt", &ca);
    let token_file = write(dir.path(), "token", &format!("{TOKEN}\n"));
    let workload = issuer
        .mint("default", "reviews", "istio-ca", Duration::from_secs(600))
        .unwrap();

    // The right roots and token: the keys are fetched and the token verifies.
    let auth = authenticator(
        &url,
        UrlOptions {
            ca_file: Some(ca_file.clone()),
            token_file: Some(token_file.clone()),
        },
    )
    .await;
    let caller = auth
        .authenticate(&bearer(&workload))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        caller.identity.uri(),
        "spiffe://cluster.local/ns/default/sa/reviews"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    // Without the token the server refuses the fetch: no keys, so unavailable.
    let no_token = authenticator(
        &url,
        UrlOptions {
            ca_file: Some(ca_file.clone()),
            token_file: None,
        },
    )
    .await;
    let err = no_token.authenticate(&bearer(&workload)).await.unwrap_err();
    assert!(
        matches!(&err, AuthError::Unavailable { reason, .. } if reason.contains("401")),
        "{err:?}"
    );

    // With the system's roots the private CA is not trusted: the handshake fails.
    let system = authenticator(
        &url,
        UrlOptions {
            ca_file: None,
            token_file: Some(token_file),
        },
    )
    .await;
    let err = system.authenticate(&bearer(&workload)).await.unwrap_err();
    assert!(matches!(err, AuthError::Unavailable { .. }), "{err:?}");

    // A CA file that is not PEM stops the construction, naming the file.
    let junk = write(dir.path(), "junk.crt", "not a certificate");
    let Err(err) = JwtAuthenticator::new(
        JwksSource::Url(
            url,
            UrlOptions {
                ca_file: Some(junk),
                token_file: None,
            },
        ),
        ISSUER.into(),
        "istio-ca".into(),
        "cluster.local".into(),
    )
    .await
    else {
        panic!("a CA file that is not PEM must be refused");
    };
    assert!(
        matches!(&err, JwksError::CaFile { path, .. } if path.ends_with("junk.crt")),
        "{err}"
    );
}
