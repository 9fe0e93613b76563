//! Citadel end to end over real TLS: CSRs made by `openssl req`, chains checked by
//! `openssl verify`, callers authenticated by real tokens and certificates.

mod support;

use std::os::unix::fs::PermissionsExt;

use citadel::ledger::{Ledger, ListQuery};
use support::{Running, config, openssl_csr, openssl_text, openssl_verify, token};
use tonic::Code;

const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";

#[tokio::test]
async fn openssl_csr_is_signed_for_the_callers_identity_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Running::start(config(dir.path())).await;
    let tok = token(&ca.key_dir, "default", "reviews", "istio-ca");
    let (csr, _key) = openssl_csr(dir.path(), "w", Some(&format!("URI:{REVIEWS}")), "ec");

    let resp = ca.sign(Some(&tok), &csr, 3600).await.expect("signed");
    assert_eq!(resp.cert_chain.len(), 2, "leaf and root");
    assert_eq!(resp.cert_chain.last().unwrap(), &ca.root_pem(), "root last");
    let ok = openssl_verify(dir.path(), &resp.cert_chain, &ca.root_pem()).expect("verifies");
    assert!(ok.contains("OK"), "{ok}");

    let text = openssl_text(dir.path(), &resp.cert_chain[0]);
    assert!(text.contains(&format!("URI:{REVIEWS}")), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(
        !text.contains("O=workload"),
        "the CSR's subject is not copied: {text}"
    );

    let metrics = ca.metrics().await;
    assert!(
        metrics.contains("citadel_server_csr_count_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citadel_server_success_cert_issuance_count_total 1"),
        "{metrics}"
    );
    let key_dir = ca.key_dir.clone();
    ca.stop().await;

    let ledger = Ledger::open(&Ledger::default_url(&key_dir)).await.unwrap();
    let rows = ledger.list(&ListQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0].issuance;
    assert_eq!(row.spiffe_id, REVIEWS);
    assert_eq!(row.authenticator, "jwt");
    assert_eq!(row.requester, "system:serviceaccount:default:reviews");
    assert_eq!(row.key_algorithm, "ECDSA-P256");
    assert_eq!(row.not_after - row.not_before, 3600);
    let serial = text
        .split("Serial Number:")
        .nth(1)
        .unwrap()
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap()
        .replace(':', "");
    assert_eq!(row.serial, serial, "ledger serial is the certificate's");
}

#[tokio::test]
async fn refusals_carry_the_right_status_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Running::start(config(dir.path())).await;
    let good = token(&ca.key_dir, "default", "reviews", "istio-ca");
    let (csr, _) = openssl_csr(dir.path(), "w", Some(&format!("URI:{REVIEWS}")), "ec");

    // A SAN that is not the caller's identity.
    let (other, _) = openssl_csr(
        dir.path(),
        "o",
        Some("URI:spiffe://cluster.local/ns/default/sa/ratings"),
        "ec",
    );
    let e = ca.sign(Some(&good), &other, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("sa/ratings") && e.message().contains("sa/reviews"),
        "{}",
        e.message()
    );

    // An extra DNS SAN beside the right URI.
    let (extra, _) = openssl_csr(
        dir.path(),
        "x",
        Some(&format!("URI:{REVIEWS},DNS:evil.example")),
        "ec",
    );
    let e = ca.sign(Some(&good), &extra, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("DNS:evil.example"), "{}", e.message());

    // No SAN at all.
    let (bare, _) = openssl_csr(dir.path(), "b", None, "ec");
    let e = ca.sign(Some(&good), &bare, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // No credentials; a token signed by another key; the wrong audience; expired.
    let e = ca.sign(None, &csr, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("no credentials"), "{}", e.message());

    let stranger_dir = dir.path().join("stranger");
    let forged = token(&stranger_dir, "default", "reviews", "istio-ca");
    let e = ca.sign(Some(&forged), &csr, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let aud = token(&ca.key_dir, "default", "reviews", "someone-else");
    let e = ca.sign(Some(&aud), &csr, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("audience"), "{}", e.message());

    let expired = expired_token(&ca.key_dir);
    let e = ca.sign(Some(&expired), &csr, 0).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("expired"), "{}", e.message());

    // Malformed and oversize CSRs; a negative TTL.
    let e = ca
        .sign(
            Some(&good),
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            0,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = ca
        .sign(Some(&good), &"A".repeat(20_000), 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = ca
        .sign(Some(&good), &"A".repeat(1_000_000), 0)
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::OutOfRange,
        "a request over the size bound: {e:?}"
    );
    let e = ca.sign(Some(&good), &csr, -5).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Still serving, and every refusal counted.
    ca.sign(Some(&good), &csr, 0)
        .await
        .expect("still serving after the refusals");
    let metrics = ca.metrics().await;
    assert!(
        metrics.contains("citadel_server_authentication_failure_count_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citadel_server_csr_parsing_err_count_total 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("citadel_server_success_cert_issuance_count_total 1"),
        "{metrics}"
    );
    ca.stop().await;
}

/// A token from the local issuer's own key whose `exp` is an hour ago.
fn expired_token(key_dir: &std::path::Path) -> String {
    let pem = std::fs::read(key_dir.join("issuer-key.pem")).unwrap();
    let jwks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(key_dir.join("jwks.json")).unwrap()).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = jwks["keys"][0]["kid"].as_str().map(str::to_string);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = serde_json::json!({
        "iss": "mizzen-local",
        "sub": "system:serviceaccount:default:reviews",
        "aud": ["istio-ca"],
        "iat": now - 7200,
        "exp": now - 3600,
    });
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn ttl_is_capped_and_a_client_certificate_renews() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Running::start(config(dir.path())).await;
    let tok = token(&ca.key_dir, "default", "reviews", "istio-ca");
    let (csr, key) = openssl_csr(dir.path(), "w", Some(&format!("URI:{REVIEWS}")), "rsa");
    let first = ca.sign(Some(&tok), &csr, 30 * 24 * 3600).await.unwrap();
    let text = openssl_text(dir.path(), &first.cert_chain[0]);
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");

    // Renewal: no token, the certificate just issued as the TLS client identity.
    let channel = ca
        .channel(Some((first.cert_chain.concat(), key.clone())))
        .await
        .unwrap();
    let (csr2, _) = openssl_csr(dir.path(), "w2", Some(&format!("URI:{REVIEWS}")), "ec");
    let second = support::sign_on(channel.clone(), None, &csr2, 0)
        .await
        .expect("renewed");
    openssl_verify(dir.path(), &second.cert_chain, &ca.root_pem()).unwrap();
    // ... but only for its own identity.
    let (other, _) = openssl_csr(
        dir.path(),
        "o",
        Some("URI:spiffe://cluster.local/ns/default/sa/db"),
        "ec",
    );
    let e = support::sign_on(channel, None, &other, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A certificate from another CA is refused at the TLS handshake.
    let stranger = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
    let refused = match ca
        .channel(Some((
            stranger.cert.pem(),
            stranger.signing_key.serialize_pem(),
        )))
        .await
    {
        Err(_) => true,
        Ok(ch) => support::sign_on(ch, None, &csr2, 0).await.is_err(),
    };
    assert!(
        refused,
        "a foreign client certificate must not get a certificate"
    );
    let key_dir = ca.key_dir.clone();
    ca.stop().await;

    let ledger = Ledger::open(&Ledger::default_url(&key_dir)).await.unwrap();
    let rows = ledger.list(&ListQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 2);
    let (renewed, original) = (&rows[0].issuance, &rows[1].issuance);
    assert_eq!(
        original.not_after - original.not_before,
        24 * 3600,
        "capped at the max TTL"
    );
    assert_eq!(original.key_algorithm, "RSA-2048");
    assert_eq!(renewed.authenticator, "client-cert");
    assert_eq!(
        renewed.requester, original.serial,
        "the renewing certificate's serial"
    );
}

#[tokio::test]
async fn root_persists_across_restarts_with_private_key_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Running::start(config(dir.path())).await;
    let tok = token(&ca.key_dir, "default", "reviews", "istio-ca");
    let (csr, _) = openssl_csr(dir.path(), "w", Some(&format!("URI:{REVIEWS}")), "ec");
    ca.sign(Some(&tok), &csr, 0).await.unwrap();
    let root = ca.root_pem();
    let key_dir = ca.key_dir.clone();
    ca.stop().await;
    for f in ["root-key.pem", "issuer-key.pem", "ledger.db"] {
        let mode = std::fs::metadata(key_dir.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }

    let ca = Running::start(config(dir.path())).await;
    assert_eq!(ca.root_pem(), root, "same root after restart");
    let tok = token(&ca.key_dir, "default", "reviews", "istio-ca");
    ca.sign(Some(&tok), &csr, 0)
        .await
        .expect("the old token key still trusted");
    ca.stop().await;
    let ledger = Ledger::open(&Ledger::default_url(&key_dir)).await.unwrap();
    assert_eq!(ledger.count().await.unwrap(), 2, "issuances of both runs");
}

#[tokio::test]
async fn rsa_root_and_trust_bundle() {
    use common::pb::ca::v1::GetTrustBundleRequest;
    use common::pb::ca::v1::trust_bundle_client::TrustBundleClient;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.key_algorithm = citadel::ca::KeyAlgorithm::Rsa2048;
    cfg.trust_domain = "example.org".into();
    let ca = Running::start(cfg).await;
    let text = openssl_text(dir.path(), &ca.root_pem());
    assert!(
        text.contains("rsaEncryption") && text.contains("O = example.org"),
        "{text}"
    );

    let mut client = TrustBundleClient::new(ca.channel(None).await.unwrap());
    let bundle = client
        .get_trust_bundle(GetTrustBundleRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bundle.roots, vec![ca.root_pem()]);
    assert_eq!(bundle.trust_domain, "example.org");

    let tok = token(&ca.key_dir, "shop", "cart", "istio-ca");
    let (csr, _) = openssl_csr(
        dir.path(),
        "w",
        Some("URI:spiffe://example.org/ns/shop/sa/cart"),
        "ec",
    );
    let resp = ca.sign(Some(&tok), &csr, 0).await.unwrap();
    openssl_verify(dir.path(), &resp.cert_chain, &ca.root_pem()).unwrap();
    let metrics = ca.metrics().await;
    assert!(
        metrics.contains("citadel_server_root_cert_expiry_timestamp "),
        "{metrics}"
    );
    ca.stop().await;
}

#[tokio::test]
async fn jwks_fetch_flags_without_a_jwks_url_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys": []}"#).unwrap();
    let mut cfg = config(dir.path());
    cfg.jwks = Some(jwks.display().to_string());
    cfg.jwt_issuer = Some("https://kubernetes.default.svc.cluster.local".into());
    cfg.jwks_ca_file = Some(dir.path().join("ca.crt"));
    let err = citadel::app::App::build(cfg)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("--jwks-ca-file") && err.contains("is a file"),
        "{err}"
    );
}
