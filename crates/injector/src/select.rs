//! Which pods get a sidecar: Istio's selection semantics (`injectRequired` in
//! istio/istio `pkg/kube/inject/inject.go`, with the webhook's selectors).
//!
//! Two halves, as in Istio. The API server only calls an injector whose
//! MutatingWebhookConfiguration selectors match the pod and its namespace
//! ([`crate::webhook_config`] writes them; [`selected`] is the same rule as
//! code, so tests check one against the other). The injector then re-checks
//! what it can see in the AdmissionRequest — the pod and its namespace's name,
//! not the namespace's labels — with [`required`]: host-network pods, the
//! Kubernetes system namespaces, already injected pods (the status annotation,
//! or an `istio-proxy` container of their own, as a gateway has) and pod-level
//! opt-out are skipped.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::options::Values;

/// Namespaces never injected (Istio's `IgnoredNamespaces`).
pub const IGNORED_NAMESPACES: &[&str] = &["kube-system", "kube-public", "kube-node-lease"];
/// Pod label (and legacy annotation) opting a pod in or out.
pub const INJECT_LABEL: &str = "sidecar.istio.io/inject";
/// Namespace label turning injection on or off for the default revision.
pub const NAMESPACE_LABEL: &str = "istio-injection";
/// Namespace or pod label choosing a revision.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// Annotation an injected pod carries.
pub const STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

/// Why a pod is left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// `spec.hostNetwork: true`.
    HostNetwork,
    /// One of [`IGNORED_NAMESPACES`].
    SystemNamespace(String),
    /// The pod already has `sidecar.istio.io/status`.
    AlreadyInjected,
    /// The pod already runs its own `istio-proxy` container (a gateway, or a
    /// pod injected by hand).
    HasProxy,
    /// `sidecar.istio.io/inject` is not a true value.
    OptedOut(String),
    /// The pod's labels match `sidecarInjectorWebhook.neverInjectSelector[i]`.
    NeverInjectSelector(usize),
    /// `global.proxy.autoInject: disabled` and the pod did not ask.
    PolicyDisabled,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::HostNetwork => f.write_str("the pod uses the host network"),
            Skip::SystemNamespace(ns) => write!(f, "namespace {ns} is never injected"),
            Skip::AlreadyInjected => write!(f, "the pod already has {STATUS_ANNOTATION}"),
            Skip::HasProxy => f.write_str(
                "the pod already has an istio-proxy container (a gateway, or injected by hand)",
            ),
            Skip::OptedOut(v) => write!(f, "{INJECT_LABEL} is {v:?}"),
            Skip::NeverInjectSelector(i) => write!(
                f,
                "the pod's labels match sidecarInjectorWebhook.neverInjectSelector[{i}]"
            ),
            Skip::PolicyDisabled => write!(
                f,
                "global.proxy.autoInject is disabled and the pod has no {INJECT_LABEL}: \"true\""
            ),
        }
    }
}

/// The injector's own check of a pod in `namespace` (Istio's `injectRequired`).
///
/// A pod's `sidecar.istio.io/inject` label (or, without it, the legacy
/// annotation) decides when set: a YAML true value injects, anything else
/// opts out. Without one, the values' `neverInjectSelector` (skip), then
/// `alwaysInjectSelector` (inject), then the policy `global.proxy.autoInject`
/// (`enabled` by default: the webhook was called, so inject) decide.
pub fn required(pod: &Pod, namespace: &str, values: &Values) -> Result<(), Skip> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Err(Skip::HostNetwork);
    }
    if IGNORED_NAMESPACES.contains(&namespace) {
        return Err(Skip::SystemNamespace(namespace.into()));
    }
    let meta = &pod.metadata;
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STATUS_ANNOTATION))
    {
        return Err(Skip::AlreadyInjected);
    }
    let has_proxy = pod.spec.iter().any(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == crate::template::PROXY_CONTAINER)
    });
    if has_proxy {
        return Err(Skip::HasProxy);
    }
    // The label is the current API; it wins over the legacy annotation.
    let choice = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(INJECT_LABEL))
        .or_else(|| meta.annotations.as_ref().and_then(|a| a.get(INJECT_LABEL)));
    match choice.map(|v| v.to_ascii_lowercase()) {
        // YAML 1.1's true values, as Istio reads them.
        Some(v) if matches!(v.as_str(), "y" | "yes" | "true" | "on") => Ok(()),
        Some(v) if !v.is_empty() => Err(Skip::OptedOut(v)),
        _ => {
            let empty = BTreeMap::new();
            let labels = meta.labels.as_ref().unwrap_or(&empty);
            let matching = |selectors: &[serde_json::Value]| {
                selectors
                    .iter()
                    .position(|s| crate::webhook_config::selector_matches(s, labels))
            };
            if let Some(i) = matching(&values.never_inject_selector) {
                return Err(Skip::NeverInjectSelector(i));
            }
            if matching(&values.always_inject_selector).is_some() || values.auto_inject {
                Ok(())
            } else {
                Err(Skip::PolicyDisabled)
            }
        }
    }
}

/// Whether the API server calls the injector of `revision` for a pod with
/// `pod_labels` in a namespace with `namespace_labels`: the rule the
/// selectors of [`crate::webhook_config::webhooks`] implement.
///
/// - namespace `istio-injection=enabled`: the default revision;
///   `istio-injection=disabled` (or any other value): nobody;
/// - else namespace `istio.io/rev=R`: revision R;
/// - else pod `istio.io/rev=R`: revision R; pod `sidecar.istio.io/inject=true`
///   without `istio.io/rev`: the default revision;
/// - a pod labelled `sidecar.istio.io/inject=false` is never sent.
pub fn selected(
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
    revision: &str,
) -> bool {
    let default = revision == crate::options::DEFAULT_REVISION;
    if pod_labels.get(INJECT_LABEL).map(String::as_str) == Some("false") {
        return false;
    }
    if let Some(v) = namespace_labels.get(NAMESPACE_LABEL) {
        return default && v == "enabled";
    }
    if let Some(rev) = namespace_labels.get(REVISION_LABEL) {
        return rev == revision;
    }
    if let Some(rev) = pod_labels.get(REVISION_LABEL) {
        return rev == revision;
    }
    default && pod_labels.get(INJECT_LABEL).map(String::as_str) == Some("true")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// Label or annotation pairs of one case.
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    /// What [`required`] answers.
    type Decision = Result<(), Skip>;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The whole matrix: namespace labels × pod labels × injector revision.
    #[test]
    fn selection_matrix() {
        let en = ("istio-injection", "enabled");
        let dis = ("istio-injection", "disabled");
        let rev_c = ("istio.io/rev", "canary");
        let rev_d = ("istio.io/rev", "default");
        let yes = ("sidecar.istio.io/inject", "true");
        let no = ("sidecar.istio.io/inject", "false");
        #[rustfmt::skip]
        let cases: &[(Pairs<'_>, Pairs<'_>, &str, bool)] = &[
            // namespace, pod, injector revision, injected
            (&[], &[], "default", false),
            (&[en], &[], "default", true),
            (&[en], &[], "canary", false),
            (&[en], &[no], "default", false),
            (&[en], &[yes], "default", true),
            (&[en], &[rev_c], "default", true),
            (&[en], &[rev_c], "canary", false),
            (&[dis], &[], "default", false),
            (&[dis], &[yes], "default", false),
            (&[dis], &[rev_c], "canary", false),
            (&[rev_c], &[], "canary", true),
            (&[rev_c], &[], "default", false),
            (&[rev_c], &[no], "canary", false),
            (&[rev_d], &[], "default", true),
            (&[rev_c], &[rev_d], "default", false),
            (&[rev_c], &[rev_d], "canary", true),
            (&[en, rev_c], &[], "default", true),
            (&[en, rev_c], &[], "canary", false),
            (&[], &[yes], "default", true),
            (&[], &[yes], "canary", false),
            (&[], &[rev_c], "canary", true),
            (&[], &[rev_c], "default", false),
            (&[], &[rev_c, yes], "default", false),
            (&[], &[rev_d], "default", true),
            (&[], &[no], "default", false),
            (&[], &[rev_c, no], "canary", false),
        ];
        for (ns, pod, rev, want) in cases {
            let (ns, pod) = (labels(ns), labels(pod));
            assert_eq!(
                selected(&ns, &pod, rev),
                *want,
                "namespace {ns:?}, pod {pod:?}, injector {rev}"
            );
            assert_eq!(
                crate::webhook_config::matches(rev, &ns, &pod),
                *want,
                "the webhook selectors disagree: namespace {ns:?}, pod {pod:?}, injector {rev}"
            );
        }
    }

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)], host_network: bool) -> Pod {
        let map = |p: &[(&str, &str)]| {
            (!p.is_empty()).then(|| {
                p.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
        };
        Pod {
            metadata: ObjectMeta {
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            spec: Some(PodSpec {
                host_network: host_network.then_some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_injector_rechecks_what_it_sees() {
        let inject = "sidecar.istio.io/inject";
        #[rustfmt::skip]
        let cases: &[(Pairs<'_>, Pairs<'_>, bool, &str, Decision)] = &[
            (&[], &[], false, "default", Ok(())),
            (&[], &[], true, "default", Err(Skip::HostNetwork)),
            (&[], &[], false, "kube-system", Err(Skip::SystemNamespace("kube-system".into()))),
            (&[], &[], false, "kube-public", Err(Skip::SystemNamespace("kube-public".into()))),
            (&[], &[], false, "kube-node-lease", Err(Skip::SystemNamespace("kube-node-lease".into()))),
            (&[], &[(STATUS_ANNOTATION, "{}")], false, "default", Err(Skip::AlreadyInjected)),
            (&[(inject, "false")], &[], false, "default", Err(Skip::OptedOut("false".into()))),
            (&[(inject, "True")], &[], false, "default", Ok(())),
            (&[(inject, "yes")], &[], false, "default", Ok(())),
            (&[(inject, "on")], &[], false, "default", Ok(())),
            (&[(inject, "no")], &[], false, "default", Err(Skip::OptedOut("no".into()))),
            // The legacy annotation, and the label winning over it.
            (&[], &[(inject, "false")], false, "default", Err(Skip::OptedOut("false".into()))),
            (&[(inject, "true")], &[(inject, "false")], false, "default", Ok(())),
            (&[(inject, "false")], &[(inject, "true")], false, "default", Err(Skip::OptedOut("false".into()))),
        ];
        let mut gateway = pod(&[], &[], false);
        if let Some(spec) = gateway.spec.as_mut() {
            spec.containers.push(k8s_openapi::api::core::v1::Container {
                name: "istio-proxy".into(),
                ..Default::default()
            });
        }
        let values = Values::default();
        assert_eq!(
            required(&gateway, "istio-system", &values),
            Err(Skip::HasProxy)
        );
        for (labels, annotations, host, ns, want) in cases {
            assert_eq!(
                &required(&pod(labels, annotations, *host), ns, &values),
                want,
                "labels {labels:?} annotations {annotations:?} hostNetwork {host} in {ns}"
            );
        }
    }

    #[test]
    fn never_and_always_selectors_and_the_policy() {
        let values = Values {
            never_inject_selector: vec![
                serde_json::json!({"matchLabels": {"openshift.io/build.name": "b"}}),
            ],
            always_inject_selector: vec![
                serde_json::json!({"matchExpressions": [{"key": "mesh", "operator": "Exists"}]}),
            ],
            auto_inject: false,
            ..Values::default()
        };
        let inject = "sidecar.istio.io/inject";
        #[rustfmt::skip]
        let cases: &[(Pairs<'_>, Decision)] = &[
            (&[], Err(Skip::PolicyDisabled)),
            (&[(inject, "")], Err(Skip::PolicyDisabled)),
            (&[("mesh", "yes")], Ok(())),
            (&[("openshift.io/build.name", "b")], Err(Skip::NeverInjectSelector(0))),
            (&[("openshift.io/build.name", "b"), ("mesh", "1")], Err(Skip::NeverInjectSelector(0))),
            // The pod's own choice wins over both selectors and the policy.
            (&[("openshift.io/build.name", "b"), (inject, "true")], Ok(())),
            (&[("mesh", "1"), (inject, "false")], Err(Skip::OptedOut("false".into()))),
        ];
        for (labels, want) in cases {
            assert_eq!(
                &required(&pod(labels, &[], false), "default", &values),
                want,
                "{labels:?}"
            );
        }
        assert!(Skip::PolicyDisabled.to_string().contains("autoInject"));
    }
}
