//! Galley as a running service, in-process through `App::build`: the gRPC Validate
//! API, the HTTPS admission webhook, metrics, readiness and graceful shutdown, over
//! real sockets and real TLS.

use std::sync::Arc;

use common::pb::galley::v1 as pb;
use galley::app::{App, Config};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustls_pki_types::ServerName;

struct Running {
    addrs: galley::app::Addrs,
    cert_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), galley::app::Error>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::tls::self_signed(&["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &key).unwrap();
    let config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        webhook_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        tls_cert_file: Some(dir.path().join("tls.crt")),
        tls_key_file: Some(dir.path().join("tls.key")),
        tls_hosts: vec![],
        log: common::runtime::LogArgs {
            log_format: common::runtime::LogFormat::Text,
            log_level: "info".into(),
        },
    };
    let app = App::build(config).await.expect("galley builds");
    let addrs = app.addrs();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    Running {
        addrs,
        cert_pem: cert,
        stop: Some(tx),
        task,
        _dir: dir,
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn https_post(r: &Running, path: &str, body: String) -> (u16, String) {
    common::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in common::tls::certs_from_pem(r.cert_pem.as_bytes(), "test cert").unwrap() {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = tokio::net::TcpStream::connect(r.addrs.webhook)
        .await
        .unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the webhook");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn review(object: serde_json::Value) -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "7f0b2891-916f-4ed6-b7cd-27bff1815a8c",
            "kind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
            "resource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "requestKind": {"group": "networking.istio.io", "version": "v1", "kind": "VirtualService"},
            "requestResource": {"group": "networking.istio.io", "version": "v1", "resource": "virtualservices"},
            "name": "reviews",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "admin"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
    .to_string()
}

fn virtual_service(timeout: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "hosts": ["reviews"],
            "http": [{"route": [{"destination": {"host": "reviews"}}], "timeout": timeout}]
        }
    })
}

#[tokio::test]
async fn webhook_allows_valid_and_denies_invalid_with_field_path() {
    let r = start().await;

    let (status, body) = https_post(&r, "/validate", review(virtual_service("10s"))).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response"]["allowed"], true, "{body}");
    assert_eq!(v["response"]["uid"], "7f0b2891-916f-4ed6-b7cd-27bff1815a8c");

    let (_, body) = https_post(&r, "/validate", review(virtual_service("0s"))).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response"]["allowed"], false, "{body}");
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("spec.http[0].timeout"), "{msg}");

    let mut unknown = virtual_service("10s");
    unknown["spec"]["htpp"] = serde_json::json!([]);
    let (_, body) = https_post(&r, "/validate", review(unknown)).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["response"]["allowed"], false, "{body}");
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("spec.htpp") && msg.contains("did you mean \"http\""),
        "{msg}"
    );

    let (status, body) = https_post(&r, "/validate", "not json".into()).await;
    assert_eq!(status, 400, "{body}");

    let (_, metrics) = http_get(r.addrs.http, "/metrics").await;
    assert!(
        metrics.contains("galley_validation_passed_total{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("galley_validation_failed_total{group=\"networking.istio.io\",version=\"v1\",resource=\"virtualservices\",reason=\"invalid_resource\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"decode_error\"} 1"), "{metrics}");
    stop(r).await;
}

#[tokio::test]
async fn grpc_validate_reports_messages_and_validity() {
    let r = start().await;
    let mut client =
        pb::validation_client::ValidationClient::connect(format!("http://{}", r.addrs.grpc))
            .await
            .unwrap();
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    retries: {attempts: -1}\n";
    let resp = client
        .validate(pb::ValidateRequest {
            yaml: yaml.into(),
            source_name: "vs.yaml".into(),
            default_namespace: "prod".into(),
            analyze: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!resp.valid);
    assert_eq!(resp.resources, 1);
    let m = &resp.messages[0];
    assert_eq!(m.code, "IST0106");
    assert_eq!(m.namespace, "prod");
    assert_eq!(m.field_path, "spec.http[0].retries.attempts");
    assert_eq!(m.line, 9);
    assert!(
        m.formatted
            .starts_with("Error [IST0106] (VirtualService reviews.prod vs.yaml:9)"),
        "{}",
        m.formatted
    );

    let ok = client
        .validate(pb::ValidateRequest {
            yaml: "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec: {host: reviews}\n".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ok.valid, "{:?}", ok.messages);
    stop(r).await;
}

#[tokio::test]
async fn ready_and_health_then_graceful_stop() {
    let r = start().await;
    let (status, _) = http_get(r.addrs.http, "/healthz").await;
    assert_eq!(status, 200);
    // Readiness flips on once serving starts.
    let mut ready = 0;
    for _ in 0..50 {
        ready = http_get(r.addrs.http, "/ready").await.0;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(ready, 200);
    let (status, body) = http_get(r.addrs.http, "/debug/config").await;
    assert_eq!(status, 200);
    assert!(body.contains("webhook_addr"), "{body}");
    stop(r).await;
}

async fn stop(mut r: Running) {
    let _ = r.stop.take().unwrap().send(());
    let res = tokio::time::timeout(std::time::Duration::from_secs(15), r.task)
        .await
        .expect("galley stops within 15s after shutdown")
        .expect("galley task did not panic");
    res.expect("galley exits cleanly");
}
