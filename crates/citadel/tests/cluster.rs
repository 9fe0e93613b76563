//! Citadel in cluster mode against the KUBECONFIG cluster (run by the kind suite:
//! `cargo test -p citadel --test cluster -- --ignored`).
//!
//! The test works in namespaces of its own (citadel's and a workload namespace)
//! and a ValidatingWebhookConfiguration of its own, and removes them at the end.
//! Like citadel itself, it publishes ConfigMap `istio-ca-root-cert` to every
//! namespace: run it on a test cluster, not one where Istio's CA owns that
//! ConfigMap.

mod support;

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::{Running, config};

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..120 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{what} did not happen within 60 s");
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster"]
async fn cluster_mode_keeps_root_configmaps_webhook_secrets_and_ca_bundles() {
    let client = kube::Client::try_default()
        .await
        .expect("a cluster in KUBECONFIG");
    let suffix = format!("{:x}", std::process::id());
    let (home, workload) = (
        format!("citadel-test-{suffix}"),
        format!("citadel-app-{suffix}"),
    );
    let vwc_name = format!("citadel-test-{suffix}");
    create_namespace(&client, &home).await;
    create_namespace(&client, &workload).await;
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let vwc = serde_json::from_value(json!({
        "metadata": {"name": vwc_name},
        "webhooks": [{
            "name": "validation.citadel-test.mizzen.invalid",
            "clientConfig": {"service": {"name": "galley", "namespace": home, "path": "/validate"}},
            "rules": [{"apiGroups": ["example.invalid"], "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["*"]}],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        }],
    }))
    .unwrap();
    vwcs.create(&PostParams::default(), &vwc).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.cluster.kubernetes = true;
    cfg.cluster.namespace = home.clone();
    cfg.cluster.webhook_certs = vec![
        format!("test-webhook-tls=galley.{home}.svc")
            .parse()
            .unwrap(),
    ];
    cfg.cluster.validating_webhooks = vec![vwc_name.clone()];
    cfg.cluster.mutating_webhooks = vec![];
    let running = Running::start(cfg.clone()).await;
    let root = running.root_pem();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &home);
    let stored = secrets.get("istio-ca-secret").await.unwrap();
    assert_eq!(stored.type_.as_deref(), Some("istio.io/ca-root"));
    assert_eq!(
        stored.data.unwrap()["ca-cert.pem"].0,
        root.as_bytes(),
        "the served root is the stored one"
    );

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &workload);
    let published = || async {
        let cm = cms.get_opt("istio-ca-root-cert").await.ok()??;
        (cm.data?.get("root-cert.pem")? == &root).then_some(())
    };
    eventually("the root ConfigMap in the workload namespace", published).await;
    cms.delete("istio-ca-root-cert", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted ConfigMap restored", published).await;

    let tls = eventually("the webhook Secret", || async {
        let s = secrets.get_opt("test-webhook-tls").await.ok()??;
        (s.type_.as_deref() == Some("kubernetes.io/tls")).then_some(s)
    })
    .await;
    let chain = String::from_utf8(tls.data.unwrap()["tls.crt"].0.clone()).unwrap();
    assert!(chain.ends_with(&root), "the chain ends at the root");

    eventually("caBundle patched", || async {
        let v = vwcs.get(&vwc_name).await.ok()?;
        let bundle = v.webhooks?[0].client_config.ca_bundle.clone()?;
        (bundle.0 == root.as_bytes()).then_some(())
    })
    .await;

    // A restart keeps the root.
    running.stop().await;
    let again = Running::start(cfg).await;
    assert_eq!(again.root_pem(), root, "the same root after a restart");
    again.stop().await;

    let nss: Api<Namespace> = Api::all(client.clone());
    for ns in [&home, &workload] {
        let _ = nss.delete(ns, &DeleteParams::default()).await;
    }
    let _ = vwcs.delete(&vwc_name, &DeleteParams::default()).await;
}
