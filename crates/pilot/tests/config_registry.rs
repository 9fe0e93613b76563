//! The file source and registry end to end, without the watcher: real directories
//! (the bookinfo sample and the fixtures under `tests/fixtures/config/`) loaded with
//! `ConfigController::reload_once` into a model snapshot.

use std::path::{Path, PathBuf};

use pilot::config::{ConfigController, ConfigOptions};
use pilot::model::{ModelHandle, Protocol, Resolution, ServiceSource, Snapshot};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config")
}

fn load(dir: &Path) -> std::sync::Arc<Snapshot> {
    let model = ModelHandle::default();
    let mut c = ConfigController::from_dir(dir, ConfigOptions::default());
    let reload = c.reload_once(&model).expect("the directory loads");
    assert_eq!(reload.published, Some(1));
    model.load()
}

/// Copies the YAML files of `from` (samples/bookinfo also holds the bookinfo
/// services' Rust sources).
fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

const BOOKINFO: [&str; 4] = ["productpage", "details", "reviews", "ratings"];

#[test]
fn bookinfo_loads_without_rejections() {
    let snap = load(&repo().join("samples/bookinfo"));
    assert!(snap.rejected.is_empty(), "{:#?}", snap.rejected);
    for name in BOOKINFO {
        let svc = &snap.services[&format!("{name}.default.svc.cluster.local")];
        assert_eq!(svc.ports.len(), 1);
        assert_eq!(
            (svc.ports[0].port, svc.ports[0].protocol),
            (9080, Protocol::Http)
        );
        assert_eq!(svc.selector["app"], name);
    }
    assert!(
        snap.services
            .contains_key("istio-ingressgateway.istio-system.svc.cluster.local")
    );
    assert_eq!(snap.services.len(), 5);
    assert_eq!(snap.virtual_services().count(), 3);
    assert_eq!(snap.destination_rules().count(), 2);
    assert_eq!(snap.gateways().count(), 1);
    // The sample has Deployments but no Pods: nothing to derive endpoints from.
    assert!(
        snap.endpoints
            .values()
            .flat_map(|p| p.values())
            .all(Vec::is_empty)
    );
}

#[test]
fn bookinfo_with_pods_yields_six_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("samples/bookinfo"), dir.path());
    copy_dir(&fixtures().join("bookinfo-pods"), dir.path());
    let snap = load(dir.path());
    assert!(snap.rejected.is_empty(), "{:#?}", snap.rejected);

    let mut total = 0;
    for name in BOOKINFO {
        let host = format!("{name}.default.svc.cluster.local");
        let eps = snap.endpoints_of(&host, 9080);
        assert!(
            eps.iter()
                .all(|e| e.healthy && e.mesh_tls && e.port == 9080),
            "{eps:#?}"
        );
        assert!(
            eps.iter()
                .all(|e| e.service_account == format!("bookinfo-{name}"))
        );
        total += eps.len();
    }
    assert_eq!(total, 6);
    let versions: Vec<&str> = snap
        .endpoints_of("reviews.default.svc.cluster.local", 9080)
        .iter()
        .map(|e| e.labels["version"].as_str())
        .collect();
    assert_eq!(versions, vec!["v1", "v2", "v3"]);
    assert_eq!(snap.workloads.len(), 6);
    let ip = "10.244.0.14".parse().unwrap();
    assert_eq!(snap.workloads[&ip].labels["version"], "v2");
}

#[test]
fn local_mesh_fixture() {
    let snap = load(&fixtures().join("local-mesh"));
    assert!(snap.rejected.is_empty(), "{:#?}", snap.rejected);

    // Hand-written Endpoints: one ready (with its pod's identity), one not.
    let echo = snap.endpoints_of("echo.demo.svc.cluster.local", 80);
    let got: Vec<(&str, u32, bool, bool)> = echo
        .iter()
        .map(|e| (e.address.as_str(), e.port, e.healthy, e.mesh_tls))
        .collect();
    assert_eq!(
        got,
        vec![
            ("127.0.0.11", 18080, true, true),
            ("127.0.0.12", 18080, false, false)
        ]
    );
    assert_eq!(echo[0].service_account, "echo");

    // EndpointSlice, gRPC by appProtocol.
    let api = &snap.services["api.demo.svc.cluster.local"];
    assert_eq!(api.ports[0].protocol, Protocol::Grpc);
    let healthy: Vec<bool> = snap
        .endpoints_of("api.demo.svc.cluster.local", 9000)
        .iter()
        .map(|e| e.healthy)
        .collect();
    assert_eq!(healthy, vec![true, false]);

    // DNS ServiceEntry: the host is the endpoint.
    let httpbin = &snap.services["httpbin.org"];
    assert_eq!(
        (httpbin.resolution, httpbin.mesh_external),
        (Resolution::Dns, true)
    );
    assert_eq!(
        snap.endpoints_of("httpbin.org", 443)[0].address,
        "httpbin.org"
    );

    // WorkloadEntries selected by a MESH_INTERNAL ServiceEntry.
    let legacy = &snap.services["legacy.demo.internal"];
    assert_eq!(
        legacy.source,
        ServiceSource::ServiceEntry("legacy.demo".into())
    );
    assert_eq!(legacy.addresses, vec!["240.240.0.1"]);
    let vms: Vec<(&str, u32, u32, &str)> = snap
        .endpoints_of("legacy.demo.internal", 8080)
        .iter()
        .map(|e| (e.address.as_str(), e.port, e.weight, e.locality.as_str()))
        .collect();
    assert_eq!(
        vms,
        vec![
            ("127.0.0.31", 18081, 1, "local/zone-a"),
            ("127.0.0.32", 8080, 3, "")
        ]
    );
    assert_eq!(
        snap.workloads[&"127.0.0.31".parse().unwrap()].name,
        "legacy-vm-1"
    );

    // The gateway's credential.
    let cert = &snap.secrets["istio-system/demo-cert"];
    assert!(cert.cert_chain.starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(cert.private_key.contains("PRIVATE KEY"));

    // Istio resources are in the config; Kubernetes objects are not.
    let kinds: Vec<&str> = snap.config.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "Gateway",
            "ServiceEntry",
            "ServiceEntry",
            "VirtualService",
            "WorkloadEntry",
            "WorkloadEntry"
        ]
    );
}

#[test]
fn a_missing_directory_is_an_error_that_says_what_to_do() {
    let model = ModelHandle::default();
    let mut c = ConfigController::from_dir("/nonexistent/mizzen-config", ConfigOptions::default());
    let err = c.reload_once(&model).unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/mizzen-config") && err.contains("--config-dir"),
        "{err}"
    );
    assert_eq!(model.load().version, 0);
}
