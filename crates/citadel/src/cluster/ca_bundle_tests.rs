//! `caBundle` patches against a scripted API server: the PATCH path and body for a
//! Validating and a Mutating configuration, and no write when already current.

use serde_json::{Value, json};

use super::*;
use crate::cluster::mock::{self, stored};

const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIBroot\n-----END CERTIFICATE-----\n";

fn b64(s: &str) -> Value {
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap()
}

/// Istio's validator configuration as the chart installs it: two webhooks, the
/// first with a stale bundle, the second with none.
fn validator(first_bundle: &str) -> Value {
    stored(
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "istio-validator-istio-system", "labels": {"app": "galley"}},
            "webhooks": [
                {
                    "name": "rev.validation.istio.io",
                    "clientConfig": {
                        "service": {"name": "galley", "namespace": "istio-system", "path": "/validate", "port": 443},
                        "caBundle": b64(first_bundle),
                    },
                    "rules": [{"apiGroups": ["security.istio.io", "networking.istio.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"], "scope": "*"}],
                    "failurePolicy": "Ignore",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "matchPolicy": "Equivalent",
                    "timeoutSeconds": 10,
                },
                {
                    "name": "validation.istio.io",
                    "clientConfig": {
                        "service": {"name": "galley", "namespace": "istio-system", "path": "/validate", "port": 443},
                    },
                    "rules": [{"apiGroups": ["telemetry.istio.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["*"], "scope": "*"}],
                    "failurePolicy": "Ignore",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "matchPolicy": "Equivalent",
                    "timeoutSeconds": 10,
                }
            ]
        }),
        "901",
    )
}

fn injector(bundle: Option<&str>) -> Value {
    let mut client_config = json!({
        "service": {"name": "injector", "namespace": "istio-system", "path": "/inject", "port": 443},
    });
    if let Some(b) = bundle {
        client_config["caBundle"] = b64(b);
    }
    stored(
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "istio-sidecar-injector"},
            "webhooks": [{
                "name": "namespace.sidecar-injector.istio.io",
                "clientConfig": client_config,
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "*"}],
                "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "reinvocationPolicy": "Never",
                "timeoutSeconds": 10,
            }]
        }),
        "902",
    )
}

#[tokio::test]
async fn validating_configuration_gets_the_root_in_each_webhook() {
    let config: ValidatingWebhookConfiguration =
        serde_json::from_value(validator("stale")).unwrap();
    let (client, mut api) = mock::pair();
    let run = tokio::spawn(async move {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
        ensure_bundle(&api, &config, ROOT).await
    });
    let patch = api
        .expect(
            "PATCH",
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/istio-validator-istio-system",
        )
        .await;
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/webhooks/0/name", "value": "rev.validation.istio.io"},
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": b64(ROOT)},
            {"op": "test", "path": "/webhooks/1/name", "value": "validation.istio.io"},
            {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64(ROOT)},
        ])
    );
    let mut patched = validator(ROOT);
    patched["webhooks"][1]["clientConfig"]["caBundle"] = b64(ROOT);
    patch.respond(200, patched);
    assert!(run.await.unwrap().unwrap(), "patched");
}

#[tokio::test]
async fn mutating_configuration_is_patched_only_where_the_bundle_differs() {
    let config: MutatingWebhookConfiguration = serde_json::from_value(injector(None)).unwrap();
    let (client, mut api) = mock::pair();
    let run = tokio::spawn(async move {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client);
        ensure_bundle(&api, &config, ROOT).await
    });
    let patch = api
        .expect(
            "PATCH",
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/istio-sidecar-injector",
        )
        .await;
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/webhooks/0/name", "value": "namespace.sidecar-injector.istio.io"},
            {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": b64(ROOT)},
        ])
    );
    patch.respond(200, injector(Some(ROOT)));
    assert!(run.await.unwrap().unwrap());

    // Current: no request at all.
    let current: MutatingWebhookConfiguration =
        serde_json::from_value(injector(Some(ROOT))).unwrap();
    assert_eq!(bundle_patch(&current, ROOT), None);
    let mut half: ValidatingWebhookConfiguration = serde_json::from_value(validator(ROOT)).unwrap();
    let ops = bundle_patch(&half, ROOT).unwrap();
    assert_eq!(
        ops.as_array().unwrap().len(),
        2,
        "only the second webhook: {ops}"
    );
    assert_eq!(ops[0]["path"], "/webhooks/1/name");
    half.webhooks.as_mut().unwrap()[1].client_config.ca_bundle =
        Some(ByteString(ROOT.as_bytes().to_vec()));
    assert_eq!(bundle_patch(&half, ROOT), None);
}

#[tokio::test]
async fn a_reset_bundle_is_patched_again_by_the_controller() {
    let (client, mut api) = mock::pair();
    let controller = tokio::spawn(run(
        client,
        ROOT.to_string(),
        vec!["istio-validator-istio-system".into()],
        vec![],
    ));
    let list_path = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
    let item_path = format!("{list_path}/istio-validator-istio-system");
    let mut fixed = validator(ROOT);
    fixed["webhooks"][1]["clientConfig"]["caBundle"] = b64(ROOT);
    let other = stored(
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
               "metadata": {"name": "someone-elses"}, "webhooks": []}),
        "903",
    );
    let mut watch = None;
    let mut patches = 0;
    // List (current + someone else's), then the watch; a helm upgrade resets it.
    while patches < 1 {
        let call = api.next().await;
        match (call.method.as_str(), call.query.contains("watch=true")) {
            ("GET", false) => {
                assert_eq!(call.path, list_path);
                call.respond(
                    200,
                    mock::list(
                        "admissionregistration.k8s.io/v1",
                        "ValidatingWebhookConfigurationList",
                        vec![fixed.clone(), other.clone()],
                        "950",
                    ),
                );
            }
            ("GET", true) => {
                let stream = call.stream();
                stream.event("MODIFIED", validator("reset by helm"));
                watch = Some(stream);
            }
            ("PATCH", _) => {
                assert_eq!(call.path, item_path, "only the named configuration");
                assert_eq!(call.body[1]["value"], b64(ROOT));
                assert_eq!(call.body.as_array().unwrap().len(), 4);
                patches += 1;
                call.respond(200, fixed.clone());
            }
            (m, _) => panic!("unexpected {m} {}", call.path),
        }
    }
    assert!(watch.is_some());
    api.expect_quiet(std::time::Duration::from_millis(100))
        .await;
    controller.abort();
}
