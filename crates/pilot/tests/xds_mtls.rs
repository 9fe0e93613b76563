//! ADS over mTLS (Istio's 15012): real TLS on loopback, certificates from a test CA
//! made with rcgen. A proxy gets configuration only with a client certificate from
//! the mesh CA, and only for proxies of its certificate's namespace; a stock Envoy
//! 1.40 with a workload certificate connects and accepts what it gets.

#[path = "support/envoy.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use pilot::xds::CLUSTER;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const WAIT: Duration = Duration::from_secs(10);

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(p, key),
    }
}

/// A leaf signed by `ca` with `sans`; returns (chain PEM, key PEM).
fn leaf(ca: &Ca, sans: Vec<SanType>) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans;
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn spiffe(ns: &str, sa: &str) -> SanType {
    SanType::URI(
        format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
            .try_into()
            .unwrap(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

struct Running {
    addrs: pilot::app::Addrs,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), pilot::app::Error>>,
}

async fn start(dir: &Path, mesh: &Ca) -> Running {
    let config_dir = dir.join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(
        config_dir.join("svc.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews, namespace: default}\nspec:\n  ports: [{name: http, port: 9080}]\n",
    )
    .unwrap();
    let (cert, key) = leaf(
        mesh,
        vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress("127.0.0.1".parse().unwrap()),
        ],
    );
    let mut c = pilot::app::Config::for_dir(&config_dir);
    c.xds_addr = "127.0.0.1:0".parse().unwrap();
    c.xds_tls_addr = "127.0.0.1:0".parse().unwrap();
    c.http_addr = "127.0.0.1:0".parse().unwrap();
    c.tls_cert_file = Some(write(dir, "pilot-cert.pem", &cert));
    c.tls_key_file = Some(write(dir, "pilot-key.pem", &key));
    c.tls_client_ca_file = Some(write(dir, "root-cert.pem", &mesh.pem));
    let app = pilot::app::App::build(c).await.expect("pilot builds");
    let addrs = app.addrs();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    Running {
        addrs,
        stop: Some(tx),
        task,
    }
}

async fn channel(
    addr: std::net::SocketAddr,
    root: &str,
    client: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

/// An open stream, kept alive while held.
type Open = (
    mpsc::Sender<DeltaDiscoveryRequest>,
    tonic::Streaming<envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse>,
);

/// Opens a delta stream as sidecar `pod` of namespace `ns` and asks for CDS;
/// returns the number of clusters in the first response or the stream's error.
async fn first_cds(channel: Channel, ns: &str) -> Result<usize, tonic::Status> {
    open_cds(channel, ns).await.map(|(n, _)| n)
}

async fn open_cds(channel: Channel, ns: &str) -> Result<(usize, Open), tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: format!("sidecar~10.1.0.7~pod.{ns}~{ns}.svc.cluster.local"),
            ..Default::default()
        }),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut stream = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let resp = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an answer in time")?
        .expect("a response");
    Ok((resp.resources.len(), (tx, stream)))
}

#[tokio::test]
async fn mtls_xds_needs_a_mesh_certificate_of_the_proxys_namespace() {
    common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mesh = ca("mesh root");
    let pilot = start(dir.path(), &mesh).await;
    let tls_addr = pilot.addrs.xds_tls.expect("the mTLS port is on");

    // A workload certificate of namespace default: configuration for a default proxy.
    let client = leaf(&mesh, vec![spiffe("default", "reviews")]);
    let ch = channel(tls_addr, &mesh.pem, Some(client.clone()))
        .await
        .unwrap();
    let clusters = first_cds(ch.clone(), "default").await.expect("served");
    assert!(clusters > 0, "CDS carries the registry's clusters");

    // ... but not for a proxy of another namespace.
    let err = first_cds(ch, "payments").await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("ns/default/sa/reviews") && err.message().contains("payments"),
        "{}",
        err.message()
    );

    // A certificate without a SPIFFE ID: unauthenticated.
    let plain = leaf(&mesh, vec![SanType::DnsName("reviews".try_into().unwrap())]);
    let ch = channel(tls_addr, &mesh.pem, Some(plain)).await.unwrap();
    let err = first_cds(ch, "default").await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

    // No client certificate, or one from another CA: the handshake fails.
    let refused = |r: Result<Result<usize, tonic::Status>, tonic::transport::Error>| {
        matches!(r, Err(_) | Ok(Err(_)))
    };
    let none = match channel(tls_addr, &mesh.pem, None).await {
        Ok(ch) => Ok(first_cds(ch, "default").await),
        Err(e) => Err(e),
    };
    assert!(
        refused(none),
        "a client without a certificate must be refused"
    );
    let stranger = ca("stranger");
    let foreign = leaf(&stranger, vec![spiffe("default", "reviews")]);
    let other = match channel(tls_addr, &mesh.pem, Some(foreign)).await {
        Ok(ch) => Ok(first_cds(ch, "default").await),
        Err(e) => Err(e),
    };
    assert!(
        refused(other),
        "a certificate of another CA must be refused"
    );

    // The plaintext port is unchanged, and syncz shows the identity.
    let plain_ch = Channel::from_shared(format!("http://{}", pilot.addrs.xds))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let ch = channel(tls_addr, &mesh.pem, Some(client)).await.unwrap();
    let (_, _open) = open_cds(ch, "default").await.expect("served");
    assert!(first_cds(plain_ch, "payments").await.unwrap() > 0);
    let mut syncz = String::new();
    for _ in 0..50 {
        syncz = http_get(pilot.addrs.http, "/debug/syncz").await;
        if syncz.contains("spiffe://cluster.local/ns/default/sa/reviews") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        syncz.contains("spiffe://cluster.local/ns/default/sa/reviews"),
        "{syncz}"
    );

    let Running { stop, task, .. } = pilot;
    let _ = stop.unwrap().send(());
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("stops in time")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn bad_tls_files_fail_the_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = pilot::app::Config::for_dir(dir.path());
    c.xds_addr = "127.0.0.1:0".parse().unwrap();
    c.xds_tls_addr = "127.0.0.1:0".parse().unwrap();
    c.http_addr = "127.0.0.1:0".parse().unwrap();
    c.tls_cert_file = Some(write(dir.path(), "cert.pem", "not a certificate"));
    c.tls_key_file = Some(write(dir.path(), "key.pem", "not a key"));
    c.tls_client_ca_file = Some(dir.path().join("missing-root.pem"));
    let err = pilot::app::App::build(c)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("--tls-client-ca-file") || err.contains("--tls-cert-file"),
        "{err}"
    );
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn envoy_takes_its_config_over_mtls_with_a_workload_certificate() {
    common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let mesh = ca("mesh root");
    let pilot = start(dir.path(), &mesh).await;
    let tls_addr = pilot.addrs.xds_tls.expect("the mTLS port is on");
    let (cert, key) = leaf(
        &mesh,
        vec![spiffe(
            "istio-system",
            "istio-ingressgateway-service-account",
        )],
    );
    let envoy_dir = dir.path().join("envoy");
    std::fs::create_dir_all(&envoy_dir).unwrap();
    let cert = write(&envoy_dir, "cert-chain.pem", &cert);
    let key = write(&envoy_dir, "key.pem", &key);
    let root = write(&envoy_dir, "root-cert.pem", &mesh.pem);
    let node = support::BootstrapNode {
        id: support::NODE_ID,
        cluster: "istio-ingressgateway.istio-system",
        metadata: "    NAMESPACE: istio-system\n    LABELS:\n      istio: ingressgateway\n    INSTANCE_IPS: 127.0.0.1\n",
    };
    // istio-agent's bootstrap with the xds-grpc cluster over TLS, as Istio's
    // (the workload certificate as the client identity, the mesh root as trust).
    let tls = format!(
        r#"    connect_timeout: 1s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: localhost
        common_tls_context:
          alpn_protocols: [h2]
          tls_certificates:
          - certificate_chain: {{filename: {cert}}}
            private_key: {{filename: {key}}}
          validation_context:
            trusted_ca: {{filename: {root}}}
            match_typed_subject_alt_names:
            - san_type: DNS
              matcher: {{exact: localhost}}
"#,
        cert = cert.display(),
        key = key.display(),
        root = root.display(),
    );
    let bootstrap = support::istio_bootstrap(&node, tls_addr, true, "127.0.0.1", 0).replacen(
        "    connect_timeout: 1s\n",
        &tls,
        1,
    );
    assert!(bootstrap.contains("UpstreamTlsContext"), "{bootstrap}");
    let mut envoy = support::Envoy::spawn(&envoy_dir, &bootstrap, None);
    let admin = envoy.admin().await;

    // The config has no Gateway, so there are no routes: CDS, EDS and LDS only.
    // Envoy asks for LDS once its clusters have warmed, so wait for all three.
    let parts = [
        "cluster_manager.cds.",
        "listener_manager.lds.",
        "cluster.outbound|",
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stats = support::stats(admin).await;
        if support::stat_u64(&stats, "control_plane.connected_state") == 1
            && parts
                .iter()
                .all(|part| support::stat_sum(&stats, part, "update_success") > 0)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Envoy never took CDS, EDS and LDS over mTLS:\n{}",
            envoy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = support::stats(admin).await;
    let rejected: Vec<_> = stats
        .iter()
        .filter(|(k, v)| k.ends_with("update_rejected") && v.as_str() != "0")
        .collect();
    assert!(rejected.is_empty(), "Envoy rejected updates: {rejected:#?}");
    for part in parts {
        assert!(
            support::stat_sum(&stats, part, "update_success") > 0,
            "no accepted update under {part}"
        );
    }
    let syncz = http_get(pilot.addrs.http, "/debug/syncz").await;
    assert!(
        syncz.contains(
            "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
        ),
        "{syncz}"
    );
    envoy.kill();
    let Running { stop, task, .. } = pilot;
    let _ = stop.unwrap().send(());
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("stops in time")
        .unwrap()
        .unwrap();
}
