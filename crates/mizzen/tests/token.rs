//! `mizzen token create` as users run it: the tokens it prints verify with citadel's
//! JWT authenticator against the JWKS it leaves in the key directory.

use std::path::Path;
use std::process::{Command, Output};

use citadel::auth::jwks::JwksSource;
use citadel::auth::jwt::JwtAuthenticator;
use citadel::auth::{Authenticator, CallContext};

fn mizzen(args: &[&str], key_dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mizzen"))
        .args(args)
        .arg("--key-dir")
        .arg(key_dir)
        .env_remove("CITADEL_KEY_DIR")
        .output()
        .expect("mizzen runs")
}

#[tokio::test]
async fn created_tokens_verify_against_the_key_dirs_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("citadel");
    let create = |sa: &str| {
        let o = mizzen(
            &[
                "token",
                "create",
                "--namespace",
                "shop",
                "--service-account",
                sa,
                "--ttl",
                "30m",
            ],
            &key_dir,
        );
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(0), "{stderr}");
        let stdout = String::from_utf8(o.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
        stdout.trim().to_string()
    };
    let first = create("cart");
    let second = create("checkout");
    assert_ne!(first, second);

    let auth = JwtAuthenticator::new(
        JwksSource::File(key_dir.join("jwks.json")),
        citadel::local_issuer::ISSUER.into(),
        "istio-ca".into(),
        "cluster.local".into(),
    )
    .await
    .unwrap();
    for (token, sa) in [(&first, "cart"), (&second, "checkout")] {
        let ctx = CallContext {
            authorization: Some(format!("Bearer {token}")),
            ..Default::default()
        };
        let caller = auth.authenticate(&ctx).await.unwrap().unwrap();
        assert_eq!(caller.requester, format!("system:serviceaccount:shop:{sa}"));
        assert_eq!(
            caller.identity.to_string(),
            format!("spiffe://cluster.local/ns/shop/sa/{sa}")
        );
    }
    let claims = decode_claims(&first);
    let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(ttl, 30 * 60);
}

/// The payload of a JWT, unverified (the test verified it above).
fn decode_claims(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let mut bits = 0u32;
    let mut n = 0;
    let mut bytes = Vec::new();
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => continue,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            bytes.push((bits >> n) as u8);
        }
    }
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn a_bad_namespace_exits_1_with_a_message_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key_dir = dir.path().join("citadel");
    let o = mizzen(
        &[
            "token",
            "create",
            "--namespace",
            "Not_Valid",
            "--service-account",
            "sa",
        ],
        &key_dir,
    );
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("namespace") && stderr.contains("Not_Valid"),
        "{stderr}"
    );
    assert!(o.stdout.is_empty());
    assert!(!key_dir.exists());
}

#[test]
fn a_corrupt_key_is_reported_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("issuer-key.pem"), "junk").unwrap();
    let o = mizzen(
        &[
            "token",
            "create",
            "--namespace",
            "ns",
            "--service-account",
            "sa",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("issuer-key.pem"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("issuer-key.pem")).unwrap(),
        "junk"
    );
}
