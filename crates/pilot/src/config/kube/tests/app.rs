//! The pilot app in Kubernetes mode over the fake API server: `/ready` and
//! `/debug/sourcez` follow the initial lists; flags that contradict the source
//! are refused.

use std::time::Duration;

use serde_json::Value;

use super::fake_api::FakeApi;
use super::{PODS, REVIEWS, WAIT, bookinfo_api};

#[tokio::test]
async fn the_app_is_ready_only_after_the_initial_lists() {
    let (api, client) = bookinfo_api();
    api.hold_lists(PODS);
    let mut config = crate::app::Config::for_dir("unused");
    config.config_dir.clear();
    config.source = crate::app::SourceKind::Kubernetes;
    config.xds_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    let app = crate::app::App::build_with_kube_client(config, client)
        .await
        .expect("pilot builds");
    let http = app.addrs().http;
    let model = app.model();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    api.wait_requests(PODS, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        http_status(http, "/ready").await,
        503,
        "not ready while Pods are listed"
    );
    assert_eq!(
        model.load().version,
        0,
        "nothing published before the lists complete"
    );
    let (synced, pods) = sourcez(http, "Pod").await;
    assert!(!synced);
    assert_eq!(pods["phase"], "pending");

    api.release_lists(PODS);
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_status(http, "/ready").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "ready after the lists"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(model.load().services.contains_key(REVIEWS));
    let (synced, vs) = sourcez(http, "VirtualService").await;
    assert!(synced);
    assert_eq!(vs["phase"], "serving");
    assert_eq!(vs["api_version"], "networking.istio.io/v1");
    assert_eq!(vs["objects"], 1);
    assert_eq!(vs["resource"], "virtualservices.networking.istio.io");
    assert_eq!(sourcez(http, "Gateway").await.1["phase"], "absent");
    assert_eq!(sourcez(http, "Pod").await.1["objects"], 2);

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("pilot stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_app_refuses_config_dir_with_the_kubernetes_source() {
    let (_api, client) = FakeApi::start();
    let mut config = crate::app::Config::for_dir("/etc/mizzen/config");
    config.source = crate::app::SourceKind::Kubernetes;
    config.xds_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    let err = crate::app::App::build_with_kube_client(config.clone(), client)
        .await
        .expect_err("--config-dir is refused with --source kubernetes");
    assert!(
        err.to_string()
            .contains("--config-dir (/etc/mizzen/config) cannot be used with --source kubernetes"),
        "{err}"
    );
    config.source = crate::app::SourceKind::Files;
    config.config_dir.clear();
    let err = crate::app::App::build(config)
        .await
        .expect_err("files need a directory");
    assert!(
        err.to_string()
            .contains("--source files needs --config-dir"),
        "{err}"
    );
}

/// The status code of `GET path` on pilot's HTTP port.
async fn http_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    http_get(addr, path).await.0
}

/// `GET path` on pilot's HTTP port: status code and body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nhost: pilot\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Whether `/debug/sourcez` says synced, and its entry for `kind`.
async fn sourcez(addr: std::net::SocketAddr, kind: &str) -> (bool, Value) {
    let (code, body) = http_get(addr, "/debug/sourcez").await;
    assert_eq!(code, 200, "{body}");
    let report: Value = serde_json::from_str(&body).expect("JSON");
    let entry = report["kinds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("{kind} in {report}"));
    (report["synced"] == true, entry)
}
