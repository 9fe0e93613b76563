//! `mizzen proxy-status` and `mizzen proxy-config` against a real pilot
//! (in process, serving samples/bookinfo) with a real ADS client connected.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use mizzen::cli::Cli;
use tokio_stream::wrappers::ReceiverStream;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const NODE: &str = "sidecar~10.1.0.5~productpage-v1-abc.default~default.svc.cluster.local";

/// Runs the CLI off the async runtime (it builds its own); exit status, stdout, stderr.
async fn mizzen(args: Vec<String>) -> (u8, String, String) {
    tokio::task::spawn_blocking(move || {
        let cli = Cli::try_parse_from(std::iter::once("mizzen".to_string()).chain(args))
            .expect("the command line parses");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = mizzen::run(cli, &mut out, &mut err);
        (
            code,
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(err).expect("utf-8"),
        )
    })
    .await
    .expect("the CLI ran")
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

/// Bookinfo's endpoints for details (the sample has Deployments, no Pods).
const DETAILS_ENDPOINTS: &str = "apiVersion: v1
kind: Endpoints
metadata:
  name: details
  namespace: default
subsets:
- addresses:
  - ip: 10.1.0.7
  ports:
  - name: http
    port: 9080
";

/// Pilot serving samples/bookinfo plus endpoints for details: (xDS, debug) addresses.
async fn pilot(dir: &std::path::Path) -> (SocketAddr, SocketAddr) {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../../samples/bookinfo");
    for file in ["platform.yaml", "networking.yaml"] {
        std::fs::copy(format!("{sample}/{file}"), dir.join(file)).expect("copy the sample");
    }
    std::fs::write(dir.join("endpoints.yaml"), DETAILS_ENDPOINTS).expect("write");
    let mut config = pilot::app::Config::for_dir(dir);
    config.xds_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let app = pilot::app::App::build(config).await.expect("pilot starts");
    let addrs = app.addrs();
    tokio::spawn(app.run_until(std::future::pending()));
    (addrs.xds, addrs.http)
}

#[tokio::test]
async fn proxy_status_and_config_show_what_pilot_serves_a_connected_sidecar() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (xds, http) = pilot(dir.path()).await;
    let pilot_addr = http.to_string();

    // Nothing connected yet: an empty table.
    let (code, out, err) = mizzen(words(&format!("proxy-status --pilot-addr {pilot_addr}"))).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 1, "only the header: {out}");

    // A sidecar asks for clusters and ACKs them.
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{xds}"))
        .await
        .expect("connect");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let request = |version: &str, nonce: &str| DiscoveryRequest {
        node: Some(Node {
            id: NODE.to_string(),
            ..Default::default()
        }),
        type_url: CDS.to_string(),
        version_info: version.to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    };
    tx.send(request("", "")).await.expect("send");
    let cds: DiscoveryResponse = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .expect("CDS within 10 s")
        .expect("stream ok")
        .expect("a response");
    assert!(!cds.resources.is_empty());
    // Before the ACK: sent, not acknowledged.
    let (_, out, _) = mizzen(words(&format!("proxy-status --pilot-addr {pilot_addr}"))).await;
    let row = out
        .lines()
        .find(|l| l.starts_with("productpage-v1-abc.default "))
        .unwrap_or_else(|| panic!("no row for the sidecar: {out}"));
    assert_eq!(
        &words(row)[1..6],
        ["sidecar", "STALE", "NOT", "SENT", "NOT"],
        "{out}"
    );
    tx.send(request(&cds.version_info, &cds.nonce))
        .await
        .expect("ACK");

    let mut synced = String::new();
    for _ in 0..100 {
        let (_, out, _) = mizzen(words(&format!("proxy-status --pilot-addr {pilot_addr}"))).await;
        if out.contains("SYNCED") {
            synced = out;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let row = synced
        .lines()
        .find(|l| l.starts_with("productpage-v1-abc.default "))
        .unwrap_or_else(|| panic!("the ACK never showed: {synced}"));
    let cols = words(row);
    assert_eq!(cols[2], "SYNCED", "{synced}");
    assert!(synced.starts_with("NAME"), "{synced}");
    assert!(row.contains(&pilot_addr), "{row}");

    // JSON is pilot's own.
    let (code, out, _) = mizzen(words(&format!(
        "proxy-status -o json --pilot-addr {pilot_addr}"
    )))
    .await;
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json[0]["proxy_id"], NODE);

    // The clusters pilot generates for it, bookinfo's subsets included.
    let (code, out, err) = mizzen(words(&format!(
        "proxy-config cluster productpage-v1-abc.default --pilot-addr {pilot_addr}"
    )))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("SERVICE FQDN"), "{out}");
    let reviews_v2 = out
        .lines()
        .map(words)
        .find(|w| w[0] == "reviews.default.svc.cluster.local" && w[2] == "v2")
        .unwrap_or_else(|| panic!("no reviews v2 cluster: {out}"));
    assert_eq!(reviews_v2[1..5], ["9080", "v2", "outbound", "EDS"]);

    let (code, out, _) = mizzen(words(&format!(
        "proxy-config endpoints productpage-v1-abc.default --pilot-addr {pilot_addr}"
    )))
    .await;
    assert_eq!(code, 0);
    assert!(out.starts_with("ENDPOINT"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("outbound|9080||details.default.svc.cluster.local")),
        "{out}"
    );

    for kind in ["listener", "route"] {
        let (code, out, err) = mizzen(words(&format!(
            "proxy-config {kind} productpage-v1-abc.default --pilot-addr {pilot_addr}"
        )))
        .await;
        assert_eq!(code, 0, "{err}");
        assert!(out.lines().count() > 1, "{kind}: {out}");
    }

    // An unknown proxy names those that are connected; secrets are refused.
    let (code, _, err) = mizzen(words(&format!(
        "proxy-config cluster nobody.default --pilot-addr {pilot_addr}"
    )))
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("not connected") && err.contains(NODE), "{err}");
    let (code, _, err) = mizzen(words(&format!(
        "proxy-config secret productpage-v1-abc.default --pilot-addr {pilot_addr}"
    )))
    .await;
    assert_eq!(code, 2);
    assert!(err.contains("not supported"), "{err}");
    drop(tx);
}

#[tokio::test]
async fn an_unreachable_pilot_is_named_with_what_to_do() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    drop(l);
    let (code, out, err) = mizzen(words(&format!("proxy-status --pilot-addr {addr}"))).await;
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(err.contains(&addr) && err.contains("--pilot-addr"), "{err}");
}
