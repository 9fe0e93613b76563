//! The citadel the identity and mTLS suites get certificates from: local mode
//! (a self-signed root and its own token issuer in `key_dir`), loopback ports,
//! ECDSA keys, 24 h certificates.

use std::path::Path;
use std::time::Duration;

use citadel::app::Config;
use citadel::ca::KeyAlgorithm;
use common::runtime::{LogArgs, LogFormat};

/// Citadel's flags for a test CA whose keys live in `key_dir`.
pub fn config(key_dir: &Path) -> Config {
    Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        trust_domain: "cluster.local".into(),
        key_dir: key_dir.to_path_buf(),
        cacerts_dir: None,
        key_algorithm: KeyAlgorithm::EcdsaP256,
        jwks: None,
        jwks_ca_file: None,
        jwks_token_file: None,
        jwt_issuer: None,
        jwt_audience: "istio-ca".into(),
        token_review: false,
        db_url: None,
        max_cert_ttl: Duration::from_secs(24 * 3600),
        default_cert_ttl: Duration::from_secs(24 * 3600),
        root_ttl: Duration::from_secs(10 * 365 * 24 * 3600),
        serving_hosts: vec!["localhost".into(), "127.0.0.1".into()],
        cluster: Default::default(),
        log: LogArgs {
            log_format: LogFormat::Text,
            log_level: "warn".into(),
        },
    }
}
