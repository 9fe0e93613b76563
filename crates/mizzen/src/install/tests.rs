//! install/uninstall against a mock API server (tower-test): the requests made,
//! in order, and what is printed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::manifest::{InstallOptions, plan, render_all};

/// A request the mock saw: method, path with query, body.
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A client whose API server answers with `answer(method, path, body)`.
fn mock(
    answer: impl Fn(&str, &str, &Value) -> (StatusCode, Value) + Send + 'static,
) -> (kube::Client, Seen) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().to_string();
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let bytes = request
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (status, reply) = answer(&method, &path, &body);
            log.lock().unwrap().push((method, path, body));
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn deployment_list(available: i64) -> Value {
    let items: Vec<Value> = [
        "pilot",
        "citadel",
        "galley",
        "injector",
        "istio-ingressgateway",
    ]
    .iter()
    .map(|name| {
        json!({
            "metadata": {"name": name, "namespace": "istio-system", "generation": 1},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "availableReplicas": available},
        })
    })
    .collect();
    json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {"resourceVersion": "7"}, "items": items})
}

fn status_404() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

#[tokio::test]
async fn install_applies_in_order_then_waits_for_every_deployment() {
    let plan = plan(&InstallOptions::default()).unwrap();
    let objects = render_all(&plan).unwrap();
    let (client, seen) = mock(|method, path, body| match method {
        "PATCH" => (StatusCode::OK, body.clone()),
        "GET" if path.starts_with("/apis/apps/v1/namespaces/istio-system/deployments") => {
            (StatusCode::OK, deployment_list(1))
        }
        _ => (StatusCode::NOT_FOUND, status_404()),
    });
    let mut out = Vec::new();
    install(
        &client,
        "istio-system",
        &objects,
        Duration::from_secs(5),
        &mut out,
    )
    .await
    .unwrap();
    let seen = seen.lock().unwrap();
    let patches: Vec<&(String, String, Value)> =
        seen.iter().filter(|(m, _, _)| m == "PATCH").collect();
    assert_eq!(patches.len(), objects.len() + 1);
    assert_eq!(
        patches[0].1,
        "/api/v1/namespaces/istio-system?&force=true&fieldManager=mizzen"
    );
    assert!(
        patches[1]
            .1
            .starts_with("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"),
        "CRDs right after the namespace: {}",
        patches[1].1
    );
    let pilot = patches
        .iter()
        .find(|(_, p, _)| p.starts_with("/apis/apps/v1/namespaces/istio-system/deployments/pilot?"))
        .expect("pilot's Deployment applied");
    assert_eq!(pilot.2["kind"], "Deployment");
    let webhook = patches
        .iter()
        .position(|(_, p, _)| p.contains("mutatingwebhookconfigurations/istio-sidecar-injector"))
        .unwrap();
    let deployment = patches
        .iter()
        .position(|(_, p, _)| p.contains("/deployments/"))
        .unwrap();
    assert!(deployment < webhook, "webhooks last");
    assert_eq!(seen.last().unwrap().0, "GET", "then waits");
    let said = String::from_utf8(out).unwrap();
    assert!(
        said.contains("✔ 15 CustomResourceDefinitions applied"),
        "{said}"
    );
    assert!(said.contains("✔ pilot ready (1/1)"), "{said}");
    assert!(said.contains("Installation complete"), "{said}");
}

#[tokio::test]
async fn install_names_the_deployments_that_never_became_available() {
    let plan = plan(&InstallOptions::default()).unwrap();
    let objects: Vec<Value> = render_all(&plan)
        .unwrap()
        .into_iter()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    let (client, _) = mock(|method, _, body| match method {
        "PATCH" => (StatusCode::OK, body.clone()),
        _ => (StatusCode::OK, deployment_list(0)),
    });
    let mut out = Vec::new();
    let e = install(&client, "istio-system", &objects, Duration::ZERO, &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("pilot (0/1 available)"), "{e}");
    assert!(
        e.contains("kubectl -n istio-system describe deployment"),
        "{e}"
    );
}

#[tokio::test]
async fn install_reports_an_api_refusal_with_the_object() {
    let plan = plan(&InstallOptions::default()).unwrap();
    let objects = render_all(&plan).unwrap();
    let (client, _) = mock(|method, path, body| {
        if method == "PATCH" && path.contains("/clusterroles/") {
            let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403, "message": "clusterroles is forbidden"});
            (StatusCode::FORBIDDEN, forbidden)
        } else {
            (StatusCode::OK, body.clone())
        }
    });
    let mut out = Vec::new();
    let e = install(&client, "istio-system", &objects, Duration::ZERO, &mut out)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("applying ClusterRole mizzen-"), "{e}");
    assert!(e.contains("forbidden"), "{e}");
}

#[tokio::test]
async fn uninstall_deletes_the_revision_by_label() {
    let (client, seen) = mock(|method, path, _| match method {
        "GET" if path.starts_with("/apis/apps/v1/namespaces/istio-system/deployments") => (
            StatusCode::OK,
            json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": [
                {"metadata": {"name": "pilot-canary", "namespace": "istio-system"}}
            ]}),
        ),
        "GET" => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
        ),
        "DELETE" => (
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        _ => (StatusCode::NOT_FOUND, status_404()),
    });
    let mut out = Vec::new();
    uninstall(&client, "istio-system", Some("canary"), false, &mut out)
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    let lists: Vec<&String> = seen
        .iter()
        .filter(|(m, _, _)| m == "GET")
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(lists.len(), INSTALLED_KINDS.len());
    assert!(
        lists.iter().all(|p| p.contains(
            "labelSelector=app.kubernetes.io%2Fpart-of%3Dmizzen%2Cistio.io%2Frev%3Dcanary"
        )),
        "{lists:?}"
    );
    let deletes: Vec<&String> = seen
        .iter()
        .filter(|(m, _, _)| m == "DELETE")
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(deletes.len(), 1);
    assert!(
        deletes[0].starts_with("/apis/apps/v1/namespaces/istio-system/deployments/pilot-canary")
    );
    assert!(
        String::from_utf8(out)
            .unwrap()
            .contains("1 objects removed")
    );
}

#[tokio::test]
async fn purge_removes_crds_root_configmaps_and_ca_secrets_tolerating_missing_ones() {
    let (client, seen) = mock(|method, path, _| match method {
        "GET" if path.starts_with("/api/v1/configmaps") => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "ConfigMapList", "metadata": {}, "items": [
                {"metadata": {"name": "istio-ca-root-cert", "namespace": "default"}}
            ]}),
        ),
        "GET" if path.starts_with("/api/v1/namespaces/istio-system/secrets") => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "SecretList", "metadata": {}, "items": [
                {"metadata": {"name": "istio-ca-secret", "namespace": "istio-system"}},
                {"metadata": {"name": "galley-webhook-tls", "namespace": "istio-system"}},
                {"metadata": {"name": "someone-elses", "namespace": "istio-system"}}
            ]}),
        ),
        "GET" => (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
        ),
        "DELETE" if path.contains("customresourcedefinitions/virtualservices") => {
            (StatusCode::NOT_FOUND, status_404())
        }
        "DELETE" => (
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        _ => (StatusCode::NOT_FOUND, status_404()),
    });
    let mut out = Vec::new();
    uninstall(&client, "istio-system", None, true, &mut out)
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    let deletes: Vec<&String> = seen
        .iter()
        .filter(|(m, _, _)| m == "DELETE")
        .map(|(_, p, _)| p)
        .collect();
    let crds = deletes
        .iter()
        .filter(|p| p.contains("customresourcedefinitions"))
        .count();
    assert_eq!(crds, common::resource::IstioKind::ALL.len());
    assert!(
        deletes
            .iter()
            .any(|p| p.starts_with("/api/v1/namespaces/default/configmaps/istio-ca-root-cert"))
    );
    assert!(
        deletes
            .iter()
            .any(|p| p.contains("/secrets/istio-ca-secret"))
    );
    assert!(
        deletes
            .iter()
            .any(|p| p.contains("/secrets/galley-webhook-tls"))
    );
    assert!(!deletes.iter().any(|p| p.contains("someone-elses")));
    let lists: Vec<&String> = seen
        .iter()
        .filter(|(m, _, _)| m == "GET")
        .map(|(_, p, _)| p)
        .collect();
    assert!(
        lists[0].contains("labelSelector=app.kubernetes.io%2Fpart-of%3Dmizzen&")
            || lists[0].ends_with("labelSelector=app.kubernetes.io%2Fpart-of%3Dmizzen"),
        "{}",
        lists[0]
    );
}
