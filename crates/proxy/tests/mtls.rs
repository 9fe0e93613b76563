//! Mutual TLS between two proxies with verified SPIFFE identities, end to
//! end: a real citadel issues each proxy its workload certificate
//! (`--ca-addr`, a service account token, the node's namespace and service
//! account); the client proxy's cluster originates ISTIO_MUTUAL TLS (SDS
//! `default`/`ROOTCA` from `sds-grpc`, the server's SPIFFE id as the only
//! accepted SAN); the server proxy's listener chain terminates it, requiring
//! a client certificate (STRICT). The app behind the server sees the request;
//! the server's metrics name the client's SPIFFE id and `mutual_tls`; a
//! plaintext client is refused; a client that expects another identity gets a
//! 503.

#[path = "support/citadel.rs"]
mod citadel_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "support/tcp.rs"]
mod tcp;

use citadel::app::App as Citadel;
use citadel::local_issuer::LocalIssuer;
use proxy::app::App;
use proxy::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(30);
const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const CLIENT_ID: &str = "spiffe://cluster.local/ns/default/sa/productpage";

/// A one-response HTTP/1.1 app that names the request it saw.
async fn app() -> SocketAddr {
    tcp::serve(move |mut s| async move {
        if tcp::read_head(&mut s).await.is_none() {
            return;
        }
        let body = "reviews app";
        let _ = s
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
    })
    .await
}

const HCM: &str = r#"
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: STAT
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: CLUSTER }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#;

const SDS: &str = r#"
          tls_certificate_sds_secret_configs:
          - name: default
            sds_config:
              api_config_source:
                api_type: GRPC
                grpc_services: [{ envoy_grpc: { cluster_name: sds-grpc } }]
                transport_api_version: V3
              resource_api_version: V3"#;

const SDS_ROOT: &str = r#"
            validation_context_sds_secret_config:
              name: ROOTCA
              sds_config:
                api_config_source:
                  api_type: GRPC
                  grpc_services: [{ envoy_grpc: { cluster_name: sds-grpc } }]
                  transport_api_version: V3
                resource_api_version: V3"#;

fn node(sa: &str) -> String {
    format!(
        "node:\n  id: sidecar~127.0.0.1~{sa}-v1.default~default.svc.cluster.local\n  cluster: {sa}.default\n  metadata:\n    NAMESPACE: default\n    SERVICE_ACCOUNT: {sa}\n    WORKLOAD_NAME: {sa}-v1\n"
    )
}

fn static_cluster(name: &str, addr: SocketAddr, tls: &str) -> String {
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 2s{tls}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}"#,
        port = addr.port()
    )
}

/// The server sidecar: a STRICT mTLS listener in front of the app.
fn server_bootstrap(app: SocketAddr) -> String {
    format!(
        r#"{node}admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: inbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    traffic_direction: INBOUND
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    filter_chains:
    - filter_chain_match: {{ transport_protocol: tls }}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]{sds}
            combined_validation_context:
              default_validation_context: {{}}{root}
      filters:{hcm}
  clusters:{app}{sds_cluster}
"#,
        node = node("reviews"),
        sds = SDS.replace("\n          ", "\n            "),
        root = SDS_ROOT.replace("\n            ", "\n              "),
        hcm = HCM.replace("STAT", "inbound").replace("CLUSTER", "app"),
        app = static_cluster("app", app, ""),
        sds_cluster = static_cluster("sds-grpc", "127.0.0.1:1".parse().unwrap(), ""),
    )
}

/// The client sidecar: plain HTTP in, ISTIO_MUTUAL to the server out,
/// accepting only `allowed` as the server's identity.
fn client_bootstrap(server: SocketAddr, allowed: &str) -> String {
    let tls = format!(
        r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.9080_._.reviews.default.svc.cluster.local
        common_tls_context:
          alpn_protocols: [istio-peer-exchange, istio]{sds}
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {{ exact: "{allowed}" }}{root}"#,
        sds = SDS,
        root = SDS_ROOT,
    );
    format!(
        r#"{node}admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: outbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:{hcm}
  clusters:{cluster}{sds_cluster}
"#,
        node = node("productpage"),
        hcm = HCM
            .replace("STAT", "outbound")
            .replace("CLUSTER", "reviews"),
        cluster = static_cluster(
            "outbound|9080||reviews.default.svc.cluster.local",
            server,
            &tls
        )
        .replace(
            "name: outbound|9080||reviews.default.svc.cluster.local",
            "name: \"outbound|9080||reviews.default.svc.cluster.local\""
        )
        .replace(
            "cluster_name: outbound|9080||reviews.default.svc.cluster.local",
            "cluster_name: \"outbound|9080||reviews.default.svc.cluster.local\""
        ),
        sds_cluster = static_cluster("sds-grpc", "127.0.0.1:1".parse().unwrap(), ""),
    )
    .replace(
        "route: { cluster: reviews }",
        "route: { cluster: \"outbound|9080||reviews.default.svc.cluster.local\" }",
    )
}

struct Running {
    listener: SocketAddr,
    admin: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn run_proxy(
    dir: &Path,
    name: &str,
    yaml: &str,
    ca: &str,
    root: &Path,
    token: &Path,
) -> Running {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let mut config = Config::for_path(&path);
    config.ca_addr = Some(ca.to_string());
    config.ca_root_cert = root.to_path_buf();
    config.token_file = token.to_path_buf();
    let app = App::build(config)
        .await
        .unwrap_or_else(|e| panic!("{name} proxy starts: {e}\n{yaml}"));
    let admin = app.addrs().admin.unwrap();
    let data_path = app.data_path();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    let listener = loop {
        if let Some(addr) = data_path.bound().values().next() {
            break *addr;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name}: no listener bound"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Running {
        listener,
        admin,
        _stop: stop,
    }
}

/// `GET path` over a new connection: the status line and body, or the error.
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: reviews\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

struct Mesh {
    dir: tempfile::TempDir,
    ca: String,
    root: PathBuf,
    issuer: LocalIssuer,
    _citadel: tokio::sync::oneshot::Sender<()>,
}

impl Mesh {
    async fn start() -> Mesh {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("keys");
        let citadel = Citadel::build(citadel_support::config(&key_dir))
            .await
            .expect("citadel");
        let ca = format!("https://{}", citadel.addrs().grpc);
        let root = dir.path().join("root-cert.pem");
        std::fs::write(&root, citadel.ca().roots().concat()).unwrap();
        let issuer = LocalIssuer::load(&key_dir).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(citadel.run_until(async move {
            let _ = stopped.await;
        }));
        Mesh {
            dir,
            ca,
            root,
            issuer,
            _citadel: stop,
        }
    }

    fn token(&self, sa: &str) -> PathBuf {
        let path = self.dir.path().join(format!("{sa}.token"));
        let token = self
            .issuer
            .mint("default", sa, "istio-ca", Duration::from_secs(3600))
            .unwrap();
        std::fs::write(&path, token).unwrap();
        path
    }

    async fn proxy(&self, name: &str, yaml: &str, sa: &str) -> Running {
        let token = self.token(sa);
        run_proxy(self.dir.path(), name, yaml, &self.ca, &self.root, &token).await
    }
}

async fn eventually_ok(addr: SocketAddr) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = get(addr, "/reviews").await;
        if let Ok((200, body)) = &r {
            return (200, body.clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 200 through the mesh within {WAIT:?}; last: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_speak_mutual_tls_with_verified_spiffe_identities() {
    let mesh = Mesh::start().await;
    let server = mesh
        .proxy("server", &server_bootstrap(app().await), "reviews")
        .await;
    let client = mesh
        .proxy(
            "client",
            &client_bootstrap(server.listener, SERVER_ID),
            "productpage",
        )
        .await;

    let (_, body) = eventually_ok(client.listener).await;
    assert_eq!(body, "reviews app");

    // The server saw the client's identity over mutual TLS.
    let (status, metrics) = get(server.admin, "/stats/prometheus").await.unwrap();
    assert_eq!(status, 200);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap_or_else(|| panic!("no request metric on the server:\n{metrics}"));
    assert!(line.contains("reporter=\"destination\""), "{line}");
    assert!(
        line.contains(&format!("source_principal=\"{CLIENT_ID}\"")),
        "{line}"
    );
    assert!(
        line.contains("connection_security_policy=\"mutual_tls\""),
        "{line}"
    );
    assert!(
        line.contains(&format!("destination_principal=\"{SERVER_ID}\"")),
        "{line}"
    );

    // STRICT: plain text straight to the server's listener is refused.
    let plain = get(server.listener, "/reviews").await;
    assert!(
        !matches!(plain, Ok((200, _))),
        "plaintext reached the app: {plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_another_identity_is_refused() {
    let mesh = Mesh::start().await;
    let server = mesh
        .proxy("server", &server_bootstrap(app().await), "reviews")
        .await;
    let wrong = "spiffe://cluster.local/ns/default/sa/ratings";
    let client = mesh
        .proxy(
            "client",
            &client_bootstrap(server.listener, wrong),
            "productpage",
        )
        .await;
    // Wait until the client has its own certificate (then the only failure
    // left is the server's identity).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = get(client.listener, "/reviews")
            .await
            .expect("the client proxy answers");
        assert_ne!(
            r.0, 200,
            "a server outside the allowed SANs was trusted: {r:?}"
        );
        if r.1.contains("TLS error") {
            assert_eq!(r.0, 503, "{r:?}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "last answer: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pilot with its mTLS xDS port: a serving certificate for `localhost` from
/// its own test CA (returned as PEM, for the proxy to trust), and the mesh
/// roots (citadel's) as the client CA.
async fn pilot_with_mtls(
    dir: &Path,
    mesh_root: &Path,
) -> (pilot::app::Addrs, String, tokio::sync::oneshot::Sender<()>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let config_dir = dir.join("pilot-config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  ports: [{name: http, port: 9080}]\n",
    )
    .unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names = vec![SanType::DnsName("localhost".try_into().unwrap())];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let mut c = pilot::app::Config::for_dir(&config_dir);
    c.xds_addr = "127.0.0.1:0".parse().unwrap();
    c.xds_tls_addr = "127.0.0.1:0".parse().unwrap();
    c.http_addr = "127.0.0.1:0".parse().unwrap();
    c.tls_cert_file = Some(write("pilot-cert.pem", &cert.pem()));
    c.tls_key_file = Some(write("pilot-key.pem", &key.serialize_pem()));
    c.tls_client_ca_file = Some(mesh_root.to_path_buf());
    let app = pilot::app::App::build(c).await.expect("pilot builds");
    let addrs = app.addrs();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    (addrs, ca_pem, stop)
}

/// Without istio-agent in between, the proxy connects to pilot's mTLS port
/// itself, presenting its workload certificate (SDS `default` on the ADS
/// cluster's TLS), and pilot sees its SPIFFE identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_takes_its_config_over_mtls_with_its_workload_certificate() {
    let mesh = Mesh::start().await;
    let (pilot, pilot_ca, _stop) = pilot_with_mtls(mesh.dir.path(), &mesh.root).await;
    let pilot_root = mesh.dir.path().join("pilot-root.pem");
    std::fs::write(&pilot_root, pilot_ca).unwrap();
    let xds = pilot.xds_tls.expect("the mTLS port is on");
    let yaml = format!(
        r#"{node}admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    grpc_services: [{{ envoy_grpc: {{ cluster_name: xds-grpc }} }}]
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:{xds}{sds_cluster}
"#,
        node = node("productpage"),
        xds = static_cluster(
            "xds-grpc",
            xds,
            &format!(
                r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          alpn_protocols: [h2]{SDS}
          validation_context:
            trusted_ca: {{ filename: {} }}"#,
                pilot_root.display()
            )
        ),
        sds_cluster = static_cluster("sds-grpc", "127.0.0.1:1".parse().unwrap(), ""),
    );
    let token = mesh.token("productpage");
    let path = mesh.dir.path().join("xds-tls.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let mut config = Config::for_path(&path);
    config.ca_addr = Some(mesh.ca.clone());
    config.ca_root_cert = mesh.root.clone();
    config.token_file = token;
    let app = App::build(config)
        .await
        .unwrap_or_else(|e| panic!("the proxy starts: {e}\n{yaml}"));
    let admin = app.addrs().admin.unwrap();
    let (_stop_proxy, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, stats) = get(admin, "/stats").await.unwrap();
        if stats.contains("control_plane.connected_state: 1")
            && stats.lines().any(|l| {
                l.starts_with("cluster_manager.cds.update_success: ") && !l.ends_with(" 0")
            })
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the proxy never synced over mTLS:\n{stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut s = TcpStream::connect(pilot.http).await.unwrap();
    s.write_all(b"GET /debug/syncz HTTP/1.1\r\nhost: pilot\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut syncz = String::new();
    s.read_to_string(&mut syncz).await.unwrap();
    assert!(
        syncz.contains(CLIENT_ID),
        "pilot did not see the workload identity:\n{syncz}"
    );
}
