//! `proxy sidecar` as the injected `istio-proxy` container runs it, with real
//! parts: the real pilot serving bookinfo and a real citadel (both in-process
//! on loopback), the `proxy` binary started with the flags and environment
//! the injector gives it, pilot reached by DNS name (`localhost`, a
//! `STRICT_DNS` ADS cluster), a projected-token stand-in minted by citadel's
//! issuer and a downward-API labels file. It must build its bootstrap, get
//! its certificate, take pilot's config (every type ACKed), turn the health
//! port ready, serve Prometheus on the 15090 stand-in, refuse nothing, and
//! exit 0 on `POST /quitquitquit` to the status port (how a Job's app ends a
//! classic sidecar). `proxy wait` against that health port returns 0.

#[path = "support/citadel.rs"]
mod citadel_support;
#[path = "support/pilot.rs"]
#[allow(dead_code)]
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use citadel::app::App as Citadel;
use citadel::local_issuer::LocalIssuer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const POD: &str = "productpage-v1-6b746f74dc-sdcar";
const NODE_ID: &str =
    "sidecar~127.0.0.1~productpage-v1-6b746f74dc-sdcar.default~default.svc.cluster.local";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request; the status code and body.
async fn http(method: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((code, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injected_sidecar_bootstraps_itself_gets_config_and_turns_ready() {
    // pilot with bookinfo, citadel in local mode.
    let config_dir = support::bookinfo_dir();
    let pilot = support::Pilot::start(config_dir.path(), None).await;
    let ca_dir = tempfile::tempdir().unwrap();
    let key_dir = ca_dir.path().join("keys");
    let ca = Citadel::build(citadel_support::config(&key_dir))
        .await
        .expect("citadel builds");
    let ca_port = ca.addrs().grpc.port();
    let root_pem = ca.ca().roots().concat();
    let issuer = LocalIssuer::load(&key_dir).unwrap();
    let (ca_stop, ca_stopped) = tokio::sync::oneshot::channel::<()>();
    let ca_task = tokio::spawn(ca.run_until(async move {
        let _ = ca_stopped.await;
    }));

    // The pod's files, as the injector's volumes provide them.
    let pod = tempfile::tempdir().unwrap();
    let labels = pod.path().join("etc/istio/pod/labels");
    std::fs::create_dir_all(labels.parent().unwrap()).unwrap();
    std::fs::write(
        &labels,
        "app=\"productpage\"\npod-template-hash=\"6b746f74dc\"\nversion=\"v1\"\n",
    )
    .unwrap();
    let token = pod.path().join("istio-token");
    std::fs::write(
        &token,
        issuer
            .mint(
                "default",
                "bookinfo-productpage",
                "istio-ca",
                Duration::from_secs(3600),
            )
            .unwrap(),
    )
    .unwrap();
    let root = pod.path().join("root-cert.pem");
    std::fs::write(&root, &root_pem).unwrap();
    let bootstrap = pod.path().join("etc/istio/proxy/envoy-rev.json");
    let (status, health, prom) = (free_port(), free_port(), free_port());

    let mut child = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["sidecar", "--discovery-address"])
        .arg(format!("localhost:{}", pilot.xds.port()))
        .arg("--ca-address")
        .arg(format!("localhost:{ca_port}"))
        .args([
            "--trust-domain",
            "cluster.local",
            "--concurrency",
            "1",
            "--log-level",
            "info",
        ])
        .args(["--interception-mode", "NONE", "--bind-address", "127.0.0.1"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .arg("--status-port")
        .arg(status.to_string())
        .arg("--health-port")
        .arg(health.to_string())
        .arg("--prometheus-port")
        .arg(prom.to_string())
        .arg("--labels-file")
        .arg(&labels)
        .arg("--token-file")
        .arg(&token)
        .arg("--ca-root-cert")
        .arg(&root)
        .arg("--bootstrap-out")
        .arg(&bootstrap)
        // The downward-API environment the injector sets, and proxyMetadata.
        .env("POD_NAME", POD)
        .env("POD_NAMESPACE", "default")
        .env("INSTANCE_IP", "127.0.0.1")
        .env("SERVICE_ACCOUNT", "bookinfo-productpage")
        .env("ISTIO_META_MIZZEN_TEST", "sidecar")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the proxy binary starts");

    // Ready on the health port: full config and the workload certificate.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, _)) = http("GET", health, "/healthz/ready").await {
            break;
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("proxy sidecar exited ({exit}):\n{err}");
        }
        assert!(
            Instant::now() < deadline,
            "proxy sidecar not ready on :{health} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The bootstrap it wrote: pilot by name, the pod's labels and metadata.
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&bootstrap).unwrap()).unwrap();
    assert_eq!(b["node"]["id"], NODE_ID);
    assert_eq!(b["static_resources"]["clusters"][0]["type"], "STRICT_DNS");
    assert_eq!(b["node"]["metadata"]["LABELS"]["app"], "productpage");
    assert_eq!(b["node"]["metadata"]["MIZZEN_TEST"], "sidecar");

    // Pilot saw every type ACKed by this node, none NACKed.
    support::eventually("pilot sees every type ACKed", || {
        pilot.connections.find(NODE_ID).is_some_and(|c| {
            ["cds", "lds"].iter().all(|t| {
                c.types.get(*t).is_some_and(|s| {
                    s.nonce_sent.is_some() && s.nonce_acked == s.nonce_sent && s.last_nack.is_none()
                })
            })
        })
    })
    .await;

    // Prometheus on the 15090 stand-in and the status port.
    let (code, body) = http("GET", prom, "/stats/prometheus")
        .await
        .expect("15090 answers");
    assert_eq!(code, 200);
    assert!(body.contains("envoy_"), "{body}");
    let (code, _) = http("GET", status, "/healthz/ready")
        .await
        .expect("15020 answers");
    assert_eq!(code, 200);

    // `proxy wait` (the classic sidecar's postStart hook) against it.
    let waited = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["wait", "--timeout", "10s", "--url"])
        .arg(format!("http://127.0.0.1:{health}/healthz/ready"))
        .output()
        .unwrap();
    assert!(waited.status.success(), "{waited:?}");

    // A Job's app ends the sidecar: POST /quitquitquit on the status port.
    let (code, _) = http("POST", status, "/quitquitquit")
        .await
        .expect("quit answers");
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "proxy sidecar still running 15 s after /quitquitquit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(exit.success(), "exit {exit}:\n{err}");
    assert!(!err.contains("NACK"), "{err}");

    // `proxy wait` now times out, naming what it saw.
    let waited = Command::new(env!("CARGO_BIN_EXE_proxy"))
        .args(["wait", "--timeout", "1s", "--period", "200ms", "--url"])
        .arg(format!("http://127.0.0.1:{health}/healthz/ready"))
        .output()
        .unwrap();
    assert!(!waited.status.success());
    let said = String::from_utf8_lossy(&waited.stderr);
    assert!(said.contains("not ready after 1s"), "{said}");

    let _ = ca_stop.send(());
    let _ = ca_task.await;
    pilot.stop().await;
}
