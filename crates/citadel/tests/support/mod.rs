//! Shared by citadel's integration tests: boot a real citadel in-process on
//! loopback ports, talk to it over real TLS, and make CSRs with the real `openssl`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use citadel::app::{Addrs, App, Config};
use citadel::ca::KeyAlgorithm;
use common::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use common::pb::istio_ca::{IstioCertificateRequest, IstioCertificateResponse};
use common::runtime::LogArgs;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A config on loopback port 0 with its state in `dir`.
pub fn config(dir: &Path) -> Config {
    Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        trust_domain: "cluster.local".into(),
        key_dir: dir.join("keys"),
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
            log_format: common::runtime::LogFormat::Text,
            log_level: "info".into(),
        },
    }
}

/// A running citadel; stopped (and its ledger flushed) by [`Running::stop`].
pub struct Running {
    pub addrs: Addrs,
    pub key_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), citadel::app::Error>>>,
}

impl Running {
    pub async fn start(config: Config) -> Running {
        let key_dir = config.key_dir.clone();
        let app = App::build(config).await.expect("citadel builds");
        let addrs = app.addrs();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Running {
            addrs,
            key_dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn root_pem(&self) -> String {
        std::fs::read_to_string(self.key_dir.join("root-cert.pem")).unwrap()
    }

    /// A TLS channel that trusts the root, optionally presenting a client identity.
    pub async fn channel(
        &self,
        client: Option<(String, String)>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.root_pem()))
            .domain_name("localhost");
        if let Some((chain, key)) = client {
            tls = tls.identity(Identity::from_pem(chain, key));
        }
        Channel::from_shared(format!("https://{}", self.addrs.grpc))
            .unwrap()
            .tls_config(tls)?
            .connect()
            .await
    }

    /// CreateCertificate with an optional bearer token.
    pub async fn sign(
        &self,
        token: Option<&str>,
        csr: &str,
        ttl_secs: i64,
    ) -> Result<IstioCertificateResponse, tonic::Status> {
        let channel = self.channel(None).await.expect("TLS channel");
        sign_on(channel, token, csr, ttl_secs).await
    }

    pub async fn metrics(&self) -> String {
        http_get(self.addrs.http, "/metrics").await
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("citadel stops cleanly");
    }
}

pub async fn sign_on(
    channel: Channel,
    token: Option<&str>,
    csr: &str,
    ttl_secs: i64,
) -> Result<IstioCertificateResponse, tonic::Status> {
    let mut client = IstioCertificateServiceClient::new(channel);
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: ttl_secs,
        metadata: None,
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    client.create_certificate(req).await.map(|r| r.into_inner())
}

/// A minimal HTTP/1.0 GET on loopback.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// `openssl req` making a key and CSR in `dir` with the given SAN extension value
/// (e.g. `URI:spiffe://…`). Returns (csr_pem, key_pem).
pub fn openssl_csr(dir: &Path, name: &str, san: Option<&str>, key: &str) -> (String, String) {
    let key_path = dir.join(format!("{name}-key.pem"));
    let csr_path = dir.join(format!("{name}.csr"));
    let mut cmd = Command::new("openssl");
    cmd.arg("req").arg("-new").arg("-nodes");
    match key {
        "ec" => cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]),
        "rsa" => cmd.args(["-newkey", "rsa:2048"]),
        other => panic!("key kind {other}"),
    };
    cmd.arg("-keyout").arg(&key_path).arg("-out").arg(&csr_path);
    cmd.args(["-subj", "/O=workload"]);
    if let Some(san) = san {
        cmd.arg("-addext").arg(format!("subjectAltName={san}"));
    }
    let out = cmd.output().expect("openssl is installed (scripts/setup)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        std::fs::read_to_string(csr_path).unwrap(),
        std::fs::read_to_string(key_path).unwrap(),
    )
}

/// Runs `openssl verify` of the chain's leaf against `root_pem`, with the rest of the
/// chain as untrusted intermediates. Returns openssl's output on success.
pub fn openssl_verify(dir: &Path, chain: &[String], root_pem: &str) -> Result<String, String> {
    let root = dir.join("verify-root.pem");
    let leaf = dir.join("verify-leaf.pem");
    let inter = dir.join("verify-intermediates.pem");
    std::fs::write(&root, root_pem).unwrap();
    std::fs::write(&leaf, &chain[0]).unwrap();
    std::fs::write(&inter, chain[1..].concat()).unwrap();
    let out = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&root)
        .arg("-untrusted")
        .arg(&inter)
        .arg(&leaf)
        .output()
        .expect("openssl is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `openssl x509 -noout -text` of one PEM certificate.
pub fn openssl_text(dir: &Path, pem: &str) -> String {
    let path = dir.join("text.pem");
    std::fs::write(&path, pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A token from the local issuer in `key_dir`.
pub fn token(key_dir: &Path, ns: &str, sa: &str, audience: &str) -> String {
    citadel::local_issuer::LocalIssuer::load_or_create(key_dir)
        .unwrap()
        .mint(ns, sa, audience, Duration::from_secs(600))
        .unwrap()
}
