//! The root ConfigMap against a scripted API server: one namespace's reconcile, and
//! the controller over a namespace list and watch streams.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::*;
use crate::cluster::mock::{self, Call, WatchStream, list, not_found, stored};

const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----\n";

fn cm_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps/{ROOT_CONFIGMAP}")
}

fn configmap_json(ns: &str, root: &str, labels: Value, rv: &str) -> Value {
    stored(
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": ROOT_CONFIGMAP, "namespace": ns, "labels": labels},
            "data": {ROOT_KEY: root},
        }),
        rv,
    )
}

fn namespace_json(name: &str, phase: &str) -> Value {
    stored(
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": phase},
        }),
        "100",
    )
}

fn assert_create(call: &Call, ns: &str) {
    assert_eq!(call.path, format!("/api/v1/namespaces/{ns}/configmaps"));
    assert_eq!(call.body["metadata"]["name"], ROOT_CONFIGMAP);
    assert_eq!(call.body["metadata"]["namespace"], ns);
    assert_eq!(
        call.body["metadata"]["labels"],
        json!({"istio.io/config": "true"})
    );
    assert_eq!(call.body["data"], json!({"root-cert.pem": ROOT}));
}

#[tokio::test]
async fn missing_configmap_is_created() {
    let (client, mut api) = mock::pair();
    let run = tokio::spawn(async move { ensure_root_configmap(&client, "bookinfo", ROOT).await });
    api.expect("GET", &cm_path("bookinfo"))
        .await
        .respond(404, not_found("configmaps", ROOT_CONFIGMAP));
    let create = api
        .expect("POST", "/api/v1/namespaces/bookinfo/configmaps")
        .await;
    assert_create(&create, "bookinfo");
    let answer = configmap_json("bookinfo", ROOT, json!({"istio.io/config": "true"}), "7");
    create.respond(201, answer);
    assert_eq!(run.await.unwrap().unwrap(), Outcome::Created);
}

#[tokio::test]
async fn current_configmap_is_left_alone() {
    let (client, mut api) = mock::pair();
    let run = tokio::spawn(async move { ensure_root_configmap(&client, "default", ROOT).await });
    api.expect("GET", &cm_path("default")).await.respond(
        200,
        configmap_json("default", ROOT, json!({"istio.io/config": "true"}), "7"),
    );
    assert_eq!(run.await.unwrap().unwrap(), Outcome::Unchanged);
    api.expect_quiet(std::time::Duration::from_millis(50)).await;
}

#[tokio::test]
async fn edited_configmap_is_merge_patched_back() {
    let (client, mut api) = mock::pair();
    let run = tokio::spawn(async move { ensure_root_configmap(&client, "default", ROOT).await });
    api.expect("GET", &cm_path("default")).await.respond(
        200,
        configmap_json("default", "tampered", json!({"team": "a"}), "8"),
    );
    let patch = api.expect("PATCH", &cm_path("default")).await;
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(
        patch.body,
        json!({"metadata": {"labels": {"istio.io/config": "true"}}, "data": {"root-cert.pem": ROOT}}),
        "only our key and label; the team label stays"
    );
    patch.respond(
        200,
        configmap_json(
            "default",
            ROOT,
            json!({"team": "a", "istio.io/config": "true"}),
            "9",
        ),
    );
    assert_eq!(run.await.unwrap().unwrap(), Outcome::Patched);
}

#[test]
fn istios_ignored_namespaces_are_skipped() {
    for ns in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "local-path-storage",
    ] {
        assert!(!publishes_to(ns), "{ns}");
    }
    for ns in ["default", "istio-system", "bookinfo"] {
        assert!(publishes_to(ns), "{ns}");
    }
}

/// Answers the controller's lists and watches; hands every other call to the test.
struct Router {
    calls: mpsc::UnboundedReceiver<Call>,
    watches: mpsc::UnboundedReceiver<(String, WatchStream)>,
}

fn route(mut api: mock::ApiServer, namespaces: Vec<Value>, configmaps: Vec<Value>) -> Router {
    let (call_tx, calls) = mpsc::unbounded_channel();
    let (watch_tx, watches) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let call = api.next().await;
            let watching = call.query.split('&').any(|q| q == "watch=true");
            match (call.method.as_str(), call.path.as_str(), watching) {
                ("GET", "/api/v1/namespaces" | "/api/v1/configmaps", true) => {
                    let path = call.path.clone();
                    let _ = watch_tx.send((path, call.stream()));
                }
                ("GET", "/api/v1/namespaces", false) => {
                    call.respond(200, list("v1", "NamespaceList", namespaces.clone(), "200"))
                }
                ("GET", "/api/v1/configmaps", false) => {
                    assert!(
                        call.query
                            .contains("fieldSelector=metadata.name%3Distio-ca-root-cert"),
                        "ConfigMaps are watched by name: {}",
                        call.query
                    );
                    call.respond(200, list("v1", "ConfigMapList", configmaps.clone(), "200"))
                }
                _ => {
                    let _ = call_tx.send(call);
                }
            }
        }
    });
    Router { calls, watches }
}

impl Router {
    async fn call(&mut self) -> Call {
        tokio::time::timeout(std::time::Duration::from_secs(5), self.calls.recv())
            .await
            .expect("a call within 5 s")
            .expect("router running")
    }

    async fn watch(&mut self, path: &str) -> WatchStream {
        loop {
            let (p, stream) =
                tokio::time::timeout(std::time::Duration::from_secs(5), self.watches.recv())
                    .await
                    .expect("a watch within 5 s")
                    .expect("router running");
            if p == path {
                return stream;
            }
        }
    }
}

#[tokio::test]
async fn controller_publishes_to_listed_namespaces_and_restores_deleted_and_edited_ones() {
    let (client, api) = mock::pair();
    let namespaces = vec![
        namespace_json("default", "Active"),
        namespace_json("kube-system", "Active"),
        namespace_json("local-path-storage", "Active"),
        namespace_json("bookinfo", "Active"),
        namespace_json("leaving", "Terminating"),
    ];
    let current = configmap_json("default", ROOT, json!({"istio.io/config": "true"}), "10");
    let mut router = route(api, namespaces, vec![current.clone()]);
    let controller = tokio::spawn(run(client, ROOT.to_string()));

    // Startup: one GET per published namespace; only bookinfo's is missing.
    let mut seen = BTreeSet::new();
    let mut created = false;
    while !(seen.len() == 2 && created) {
        let call = router.call().await;
        match call.method.as_str() {
            "GET" => {
                seen.insert(call.path.clone());
                if call.path == cm_path("default") {
                    call.respond(200, current.clone());
                } else {
                    call.respond(404, not_found("configmaps", ROOT_CONFIGMAP));
                }
            }
            "POST" => {
                assert_create(&call, "bookinfo");
                created = true;
                let made =
                    configmap_json("bookinfo", ROOT, json!({"istio.io/config": "true"}), "11");
                call.respond(201, made);
            }
            other => panic!("unexpected {other} {}", call.path),
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from([cm_path("bookinfo"), cm_path("default")]),
        "kube-system, local-path-storage and the terminating namespace are skipped"
    );

    // Someone deletes default's ConfigMap: it is created again.
    let cms = router.watch("/api/v1/configmaps").await;
    cms.event("DELETED", current.clone());
    let get = router.call().await;
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        ("GET", cm_path("default").as_str())
    );
    get.respond(404, not_found("configmaps", ROOT_CONFIGMAP));
    let create = router.call().await;
    assert_eq!(create.method, "POST");
    assert_create(&create, "default");
    create.respond(
        201,
        configmap_json("default", ROOT, json!({"istio.io/config": "true"}), "12"),
    );

    // Someone edits bookinfo's: it is patched back.
    let edited = configmap_json("bookinfo", "edited", json!({}), "13");
    cms.event("MODIFIED", edited.clone());
    let get = router.call().await;
    assert_eq!(get.path, cm_path("bookinfo"));
    get.respond(200, edited);
    let patch = router.call().await;
    assert_eq!(
        (patch.method.as_str(), patch.path.as_str()),
        ("PATCH", cm_path("bookinfo").as_str())
    );
    assert_eq!(patch.body["data"], json!({"root-cert.pem": ROOT}));
    patch.respond(
        200,
        configmap_json("bookinfo", ROOT, json!({"istio.io/config": "true"}), "14"),
    );

    // A new namespace gets one too.
    let nss = router.watch("/api/v1/namespaces").await;
    nss.event("ADDED", namespace_json("reviews", "Active"));
    let get = router.call().await;
    assert_eq!(get.path, cm_path("reviews"));
    get.respond(404, not_found("configmaps", ROOT_CONFIGMAP));
    let create = router.call().await;
    assert_create(&create, "reviews");
    controller.abort();
}
