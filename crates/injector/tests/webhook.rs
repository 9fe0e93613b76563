//! The injector service over real TLS, as the API server calls it: a
//! certificate signed by a test CA (rcgen, as citadel would issue it), an
//! AdmissionReview v1 recorded in the API server's shape for a ReplicaSet's
//! productpage pod, the JSONPatch decoded and applied to the pod and compared
//! with [`injector::inject`]'s output; opt-out, refusal, metrics, and the
//! certificate renewed on disk picked up without a restart.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use injector::app::{App, Config};
use injector::version::NativeSidecars;
use k8s_openapi::api::core::v1::Pod;
use rustls_pki_types::ServerName;
use serde_json::{Value, json};

const FIXTURE: &str = include_str!("fixtures/admission-productpage.json");

struct Ca {
    pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// Writes tls.crt and tls.key for the injector's Service names, signed by `ca`.
fn write_serving(dir: &Path, ca: &Ca) {
    let params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "injector.istio-system.svc".to_string(),
    ])
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    // Written aside and renamed in, as the kubelet swaps a Secret's files.
    std::fs::write(dir.join("tls.crt.new"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key.new"), key.serialize_pem()).unwrap();
    std::fs::rename(dir.join("tls.key.new"), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join("tls.crt.new"), dir.join("tls.crt")).unwrap();
}

struct Running {
    webhook: std::net::SocketAddr,
    http: std::net::SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), injector::app::Error>>,
}

async fn start(dir: &Path, native: NativeSidecars) -> Running {
    let config = Config {
        webhook_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        tls_cert_file: dir.join("tls.crt"),
        tls_key_file: dir.join("tls.key"),
        revision: None,
        hub: "docker.io/mizzen".into(),
        tag: "0.1.0".into(),
        proxy_image: None,
        discovery_address: "pilot.istio-system.svc:15010".into(),
        ca_address: "citadel.istio-system.svc:15012".into(),
        trust_domain: "cluster.local".into(),
        native_sidecars: native,
        values: None,
        log: common::runtime::LogArgs {
            log_format: common::runtime::LogFormat::Text,
            log_level: "warn".into(),
        },
    };
    let app = App::build(config).await.expect("the injector starts");
    let addrs = app.addrs();
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    Running {
        webhook: addrs.webhook,
        http: addrs.http,
        stop,
        task,
    }
}

/// POSTs `body` to `/inject` trusting only `ca_pem`; the HTTP status and body,
/// or the TLS error.
async fn post(r: &Running, ca_pem: &str, body: String) -> Result<(u16, Value), String> {
    common::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for c in common::tls::certs_from_pem(ca_pem.as_bytes(), "test CA").unwrap() {
        roots.add(c).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(r.webhook).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            ServerName::try_from("injector.istio-system.svc").unwrap(),
            tcp,
        )
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/inject")
        .header("host", "injector.istio-system.svc")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
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

/// The fixture with its pod changed by `edit`.
fn review(edit: impl FnOnce(&mut Value)) -> (String, Value) {
    let mut r: Value = serde_json::from_str(FIXTURE).unwrap();
    edit(&mut r["request"]["object"]);
    (r.to_string(), r["request"]["object"].clone())
}

/// Decodes standard base64 (as Go's encoding/json reads a `[]byte`).
fn unbase64(text: &str) -> Vec<u8> {
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(Value::String(text.to_string())).expect("base64");
    bytes.0
}

/// Applies the response's JSONPatch to `pod`.
fn patched(response: &Value, pod: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = unbase64(response["patch"].as_str().expect("a base64 patch"));
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("the patch applies to the pod as sent");
    out
}

async fn check_patch_equals_inject(r: &Running, ca_pem: &str, native: bool) {
    let (body, pod) = review(|_| {});
    let (status, reply) = post(r, ca_pem, body).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["apiVersion"], "admission.k8s.io/v1");
    let response = &reply["response"];
    assert_eq!(response["uid"], "4b9f7e0a-3c1d-4d7a-9a51-0f6f1f4c2e7b");
    assert_eq!(response["allowed"], true);
    // The unsupported Istio annotation is named, not silently dropped.
    let warnings = response["warnings"].as_array().expect("warnings");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("sidecar.istio.io/bootstrapOverride"),
        "{warnings:?}"
    );
    let after = patched(response, &pod);
    // What `inject` makes of the same pod (typed, as the API server stores it).
    let typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    let opts = injector::Options {
        native_sidecars: native,
        ..injector::Options::default()
    };
    let want = serde_json::to_value(injector::inject(&typed, &opts).unwrap()).unwrap();
    let got: Pod = serde_json::from_value(after.clone()).unwrap();
    assert_eq!(serde_json::to_value(got).unwrap(), want);
    // The patch left managedFields as they were.
    assert_eq!(
        after["metadata"]["managedFields"],
        pod["metadata"]["managedFields"]
    );
    let init: Vec<&str> = after["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    if native {
        assert_eq!(init, ["istio-init", "istio-proxy"]);
    } else {
        assert_eq!(init, ["istio-init"]);
        assert_eq!(after["spec"]["containers"][0]["name"], "istio-proxy");
    }
}

#[tokio::test]
async fn injects_over_tls_and_reloads_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = ca("citadel-1");
    write_serving(dir.path(), &first);
    let r = start(dir.path(), NativeSidecars::True).await;

    check_patch_equals_inject(&r, &first.pem, true).await;

    // Opted out: allowed, unchanged.
    let (body, _) = review(|pod| {
        pod["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false");
    });
    let (_, reply) = post(&r, &first.pem, body).await.unwrap();
    assert_eq!(reply["response"]["allowed"], true);
    assert!(reply["response"].get("patch").is_none(), "{reply}");

    // A bad annotation: refused, naming it.
    let (body, _) = review(|pod| {
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeOutboundIPRanges"] =
            json!("10.0.0.0/40");
    });
    let (_, reply) = post(&r, &first.pem, body).await.unwrap();
    assert_eq!(reply["response"]["allowed"], false);
    let message = reply["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("excludeOutboundIPRanges"), "{message}");

    // Not an AdmissionReview.
    let err = post(&r, &first.pem, "{}".into()).await.unwrap();
    assert_ne!(err.0, 200);

    let (status, metrics) = http_get(r.http, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("sidecar_injection_success_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sidecar_injection_skip_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sidecar_injection_failure_total 1"),
        "{metrics}"
    );
    assert_eq!(http_get(r.http, "/ready").await.0, 200);
    assert_eq!(http_get(r.http, "/healthz").await.0, 200);

    // Citadel renews the Secret with a new root: the next handshake has it.
    let second = ca("citadel-2");
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_serving(dir.path(), &second);
    check_patch_equals_inject(&r, &second.pem, true).await;
    let old = post(&r, &first.pem, "{}".into()).await.unwrap_err();
    assert!(old.contains("certificate"), "{old}");

    let _ = r.stop.send(());
    r.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn classic_sidecars_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("citadel");
    write_serving(dir.path(), &ca);
    let r = start(dir.path(), NativeSidecars::False).await;
    check_patch_equals_inject(&r, &ca.pem, false).await;
    let _ = r.stop.send(());
    r.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_missing_certificate_names_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        webhook_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        tls_cert_file: dir.path().join("tls.crt"),
        tls_key_file: dir.path().join("tls.key"),
        revision: Some("canary".into()),
        hub: "h".into(),
        tag: "t".into(),
        proxy_image: None,
        discovery_address: "p:1".into(),
        ca_address: "c:1".into(),
        trust_domain: "cluster.local".into(),
        native_sidecars: NativeSidecars::True,
        values: None,
        log: common::runtime::LogArgs {
            log_format: common::runtime::LogFormat::Text,
            log_level: "warn".into(),
        },
    };
    let err = App::build(config).await.err().expect("refused").to_string();
    assert!(
        err.contains("--tls-cert-file") && err.contains("tls.crt"),
        "{err}"
    );
}
