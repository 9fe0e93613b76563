//! The MutatingWebhookConfiguration entries that route pods to this injector,
//! as JSON the Helm chart and `mizzen install` copy: Istio's four webhooks
//! (`rev.namespace`, `rev.object`, and for the default revision `namespace`
//! and `object`), each with the namespace and object selectors that do the
//! namespace half of Istio's selection ([`crate::select::selected`] is the
//! same rule as code). [`matches`] evaluates the generated selectors the way
//! the API server does, so the unit tests check the JSON itself.
//!
//! Mizzen adds one requirement Istio's chart does not have: every
//! namespaceSelector excludes `kube-system`, `kube-public` and
//! `kube-node-lease` by their `kubernetes.io/metadata.name` label, so with
//! `failurePolicy: Fail` a stopped injector never blocks the system's pods.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::select::{IGNORED_NAMESPACES, INJECT_LABEL, NAMESPACE_LABEL, REVISION_LABEL};

/// The MutatingWebhookConfiguration's name: `istio-sidecar-injector`, or
/// `istio-sidecar-injector-<rev>` for a revision.
pub fn configuration_name(revision: &str) -> String {
    if revision == crate::options::DEFAULT_REVISION {
        "istio-sidecar-injector".into()
    } else {
        format!("istio-sidecar-injector-{revision}")
    }
}

/// Where the API server reaches the injector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRef {
    /// The Service's name (`injector`).
    pub name: String,
    /// Its namespace (`istio-system`).
    pub namespace: String,
    /// Its port (443, to container port 15017).
    pub port: u16,
}

impl Default for ServiceRef {
    fn default() -> ServiceRef {
        ServiceRef {
            name: "injector".into(),
            namespace: "istio-system".into(),
            port: 443,
        }
    }
}

fn expr(key: &str, operator: &str, values: &[&str]) -> Value {
    if values.is_empty() {
        json!({"key": key, "operator": operator})
    } else {
        json!({"key": key, "operator": operator, "values": values})
    }
}

/// The namespace requirement every webhook shares.
fn not_system() -> Value {
    expr("kubernetes.io/metadata.name", "NotIn", IGNORED_NAMESPACES)
}

/// The `webhooks` list of the revision's MutatingWebhookConfiguration.
/// `ca_bundle` is the base64 PEM bundle (citadel patches it in at run time;
/// `None` leaves the field out).
pub fn webhooks(revision: &str, service: &ServiceRef, ca_bundle: Option<&str>) -> Value {
    let opt_out = expr(INJECT_LABEL, "NotIn", &["false"]);
    let mut entries = vec![
        (
            "rev.namespace.sidecar-injector.istio.io",
            vec![
                expr(REVISION_LABEL, "In", &[revision]),
                expr(NAMESPACE_LABEL, "DoesNotExist", &[]),
                not_system(),
            ],
            vec![opt_out.clone()],
        ),
        (
            "rev.object.sidecar-injector.istio.io",
            vec![
                expr(REVISION_LABEL, "DoesNotExist", &[]),
                expr(NAMESPACE_LABEL, "DoesNotExist", &[]),
                not_system(),
            ],
            vec![opt_out.clone(), expr(REVISION_LABEL, "In", &[revision])],
        ),
    ];
    if revision == crate::options::DEFAULT_REVISION {
        entries.push((
            "namespace.sidecar-injector.istio.io",
            vec![expr(NAMESPACE_LABEL, "In", &["enabled"]), not_system()],
            vec![opt_out.clone()],
        ));
        entries.push((
            "object.sidecar-injector.istio.io",
            vec![
                expr(NAMESPACE_LABEL, "DoesNotExist", &[]),
                expr(REVISION_LABEL, "DoesNotExist", &[]),
                not_system(),
            ],
            vec![
                expr(INJECT_LABEL, "In", &["true"]),
                expr(REVISION_LABEL, "DoesNotExist", &[]),
            ],
        ));
    }
    let mut client = json!({"service": {
        "name": service.name,
        "namespace": service.namespace,
        "path": "/inject",
        "port": service.port,
    }});
    if let Some(ca) = ca_bundle {
        client["caBundle"] = json!(ca);
    }
    Value::Array(
        entries
            .into_iter()
            .map(|(name, ns, obj)| {
                json!({
                    "name": name,
                    "clientConfig": client,
                    "rules": [{
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                    }],
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "admissionReviewVersions": ["v1"],
                    "reinvocationPolicy": "Never",
                    "timeoutSeconds": 10,
                    "namespaceSelector": {"matchExpressions": ns},
                    "objectSelector": {"matchExpressions": obj},
                })
            })
            .collect(),
    )
}

/// The whole MutatingWebhookConfiguration of `revision`.
pub fn configuration(revision: &str, service: &ServiceRef, ca_bundle: Option<&str>) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {
            "name": configuration_name(revision),
            "labels": {"app": "sidecar-injector", REVISION_LABEL: revision},
        },
        "webhooks": webhooks(revision, service, ca_bundle),
    })
}

/// Whether a Kubernetes label selector (`matchLabels`, `matchExpressions`
/// with In, NotIn, Exists, DoesNotExist) matches `labels`.
pub fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| {
            m.iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        });
    let by_expr = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                let values: Vec<&str> = e["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let have = labels.get(key).map(String::as_str);
                match e["operator"].as_str() {
                    Some("In") => have.is_some_and(|h| values.contains(&h)),
                    Some("NotIn") => have.is_none_or(|h| !values.contains(&h)),
                    Some("Exists") => have.is_some(),
                    Some("DoesNotExist") => have.is_none(),
                    _ => false,
                }
            })
        });
    by_label && by_expr
}

/// Whether any webhook of `revision`'s configuration is called for a pod with
/// `pod_labels` in a namespace with `namespace_labels`.
pub fn matches(
    revision: &str,
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
) -> bool {
    let hooks = webhooks(revision, &ServiceRef::default(), None);
    hooks.as_array().into_iter().flatten().any(|h| {
        selector_matches(&h["namespaceSelector"], namespace_labels)
            && selector_matches(&h["objectSelector"], pod_labels)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_istios_shape() {
        let c = configuration("canary", &ServiceRef::default(), Some("Q0E="));
        assert_eq!(c["metadata"]["name"], "istio-sidecar-injector-canary");
        let hooks = c["webhooks"].as_array().unwrap();
        assert_eq!(hooks.len(), 2, "a revision has no istio-injection hooks");
        for h in hooks {
            assert_eq!(h["failurePolicy"], "Fail");
            assert_eq!(h["sideEffects"], "None");
            assert_eq!(h["admissionReviewVersions"], json!(["v1"]));
            assert_eq!(h["clientConfig"]["service"]["path"], "/inject");
            assert_eq!(h["clientConfig"]["caBundle"], "Q0E=");
        }
        let default = webhooks("default", &ServiceRef::default(), None);
        assert_eq!(default.as_array().unwrap().len(), 4);
        assert!(default[0]["clientConfig"].get("caBundle").is_none());
        assert_eq!(configuration_name("default"), "istio-sidecar-injector");
    }

    /// The default and a `canary` revision's configurations, as the Helm chart
    /// must render them (without the caBundle citadel patches in).
    #[test]
    fn configurations_to_copy() {
        insta::assert_yaml_snapshot!(
            "default",
            configuration("default", &ServiceRef::default(), None)
        );
        let canary = ServiceRef {
            name: "injector-canary".into(),
            ..ServiceRef::default()
        };
        insta::assert_yaml_snapshot!("canary", configuration("canary", &canary, None));
    }

    #[test]
    fn system_namespaces_are_never_sent() {
        let ns: BTreeMap<String, String> = [
            ("kubernetes.io/metadata.name", "kube-system"),
            ("istio-injection", "enabled"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert!(!matches("default", &ns, &BTreeMap::new()));
    }
}
