//! Istio's annotations and labels on Kubernetes objects.
//!
//! Annotations in Istio's domains (`*.istio.io/…`) must be ones Istio defines
//! (IST0108) and sit on the kind they are meant for (IST0107); checked on
//! Namespaces, Services, Pods and Deployments, like Istio. Namespaces given in the
//! input should say whether they take sidecar injection (IST0102), and Pods in an
//! injected namespace should have their proxy (IST0103).

use common::path::Path;
use common::resource::Resource;
use serde_json::Value;

use super::{Analyzer, Report, Snapshot};
use crate::message::codes;

pub(super) fn analyzers() -> Vec<Box<dyn Analyzer>> {
    vec![Box::new(K8sAnnotationAnalyzer), Box::new(InjectionAnalyzer)]
}

/// Where an annotation may be applied.
#[derive(Clone, Copy)]
enum Target {
    /// Any kind of resource.
    Any,
    /// Only these kinds.
    Kinds(&'static [&'static str]),
}

const POD: Target = Target::Kinds(&["Pod"]);
const SERVICE: Target = Target::Kinds(&["Service"]);

/// Istio's annotations (istio/api `annotation/annotations.yaml`) and where they
/// apply.
const ANNOTATIONS: &[(&str, Target)] = &[
    ("alpha.istio.io/canonical-serviceaccounts", SERVICE),
    ("alpha.istio.io/identity", POD),
    ("alpha.istio.io/kubernetes-serviceaccounts", SERVICE),
    ("ambient.istio.io/bypass-inbound-capture", POD),
    ("ambient.istio.io/dns-capture", POD),
    ("ambient.istio.io/redirection", POD),
    ("galley.istio.io/analyze-suppress", Target::Any),
    ("inject.istio.io/templates", POD),
    ("install.operator.istio.io/chart-owner", Target::Any),
    ("install.operator.istio.io/owner-generation", Target::Any),
    ("install.operator.istio.io/version", Target::Any),
    ("istio.io/dry-run", Target::Kinds(&["AuthorizationPolicy"])),
    ("kubernetes.io/ingress.class", Target::Kinds(&["Ingress"])),
    (
        "networking.istio.io/address-type",
        Target::Kinds(&["Gateway"]),
    ),
    ("networking.istio.io/exportTo", SERVICE),
    (
        "networking.istio.io/service-type",
        Target::Kinds(&["Gateway"]),
    ),
    ("networking.istio.io/traffic-distribution", SERVICE),
    ("prometheus.istio.io/merge-metrics", POD),
    ("proxy.istio.io/config", POD),
    ("proxy.istio.io/overrides", POD),
    ("readiness.status.sidecar.istio.io/applicationPorts", POD),
    ("readiness.status.sidecar.istio.io/failureThreshold", POD),
    ("readiness.status.sidecar.istio.io/initialDelaySeconds", POD),
    ("readiness.status.sidecar.istio.io/periodSeconds", POD),
    ("sidecar.istio.io/agentLogLevel", POD),
    ("sidecar.istio.io/bootstrapOverride", POD),
    ("sidecar.istio.io/componentLogLevel", POD),
    ("sidecar.istio.io/controlPlaneAuthPolicy", POD),
    ("sidecar.istio.io/discoveryAddress", POD),
    ("sidecar.istio.io/enableCoreDump", POD),
    ("sidecar.istio.io/extraStatTags", POD),
    ("sidecar.istio.io/inject", POD),
    ("sidecar.istio.io/interceptionMode", POD),
    ("sidecar.istio.io/logLevel", POD),
    ("sidecar.istio.io/nativeSidecar", POD),
    ("sidecar.istio.io/proxyCPU", POD),
    ("sidecar.istio.io/proxyCPULimit", POD),
    ("sidecar.istio.io/proxyImage", POD),
    ("sidecar.istio.io/proxyImageType", POD),
    ("sidecar.istio.io/proxyMemory", POD),
    ("sidecar.istio.io/proxyMemoryLimit", POD),
    ("sidecar.istio.io/rewriteAppHTTPProbers", POD),
    ("sidecar.istio.io/statsCompression", POD),
    ("sidecar.istio.io/statsFlushInterval", POD),
    ("sidecar.istio.io/statsHistogramBuckets", POD),
    ("sidecar.istio.io/statsInclusionPrefixes", POD),
    ("sidecar.istio.io/statsInclusionRegexps", POD),
    ("sidecar.istio.io/statsInclusionSuffixes", POD),
    ("sidecar.istio.io/status", POD),
    ("sidecar.istio.io/userVolume", POD),
    ("sidecar.istio.io/userVolumeMount", POD),
    ("status.sidecar.istio.io/port", POD),
    ("topology.istio.io/controlPlaneClusters", Target::Any),
    ("traffic.sidecar.istio.io/excludeInboundPorts", POD),
    ("traffic.sidecar.istio.io/excludeInterfaces", POD),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", POD),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", POD),
    ("traffic.sidecar.istio.io/includeInboundPorts", POD),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", POD),
    ("traffic.sidecar.istio.io/includeOutboundPorts", POD),
    ("traffic.sidecar.istio.io/kubevirtInterfaces", POD),
];

/// Whether an annotation is in Istio's namespace (and so must be one Istio knows).
fn istio_annotation(name: &str) -> bool {
    name == "kubernetes.io/ingress.class"
        || name
            .split_once('/')
            .is_some_and(|(prefix, _)| prefix.ends_with("istio.io"))
}

/// IST0108 for unknown Istio annotations; IST0107 for ones on the wrong kind.
struct K8sAnnotationAnalyzer;

impl Analyzer for K8sAnnotationAnalyzer {
    fn name(&self) -> &'static str {
        "annotations.K8sAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        for (group, kind) in [
            ("", "Namespace"),
            ("", "Service"),
            ("", "Pod"),
            ("apps", "Deployment"),
        ] {
            for (r, _) in snap.kube(group, kind) {
                check_annotations(report, r, kind);
            }
        }
    }
}

fn check_annotations(report: &mut Report<'_>, r: &Resource, kind: &str) {
    let Some(annotations) = &r.meta.annotations else {
        return;
    };
    for name in annotations.keys().filter(|a| istio_annotation(a)) {
        let at = Some(Path::root("metadata").field("annotations").key(name));
        match ANNOTATIONS.iter().find(|(n, _)| n == name) {
            None => report.add(
                codes::UNKNOWN_ANNOTATION,
                r,
                at,
                format!("Unknown annotation: {name}"),
            ),
            Some((_, Target::Kinds(kinds))) if !kinds.contains(&kind) => report.add(
                codes::MISPLACED_ANNOTATION,
                r,
                at,
                format!(
                    "Misplaced annotation: {name} can only be applied to {}",
                    kinds.join(", ")
                ),
            ),
            Some(_) => {}
        }
    }
}

/// IST0102 for Namespaces that neither enable nor disable injection (and are not
/// in ambient mode); IST0103 for Pods without an `istio-proxy` container in
/// namespaces that enable it.
struct InjectionAnalyzer;

impl Analyzer for InjectionAnalyzer {
    fn name(&self) -> &'static str {
        "injection.Analyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let mut injected: Vec<&str> = Vec::new();
        for (r, _) in snap.kube("", "Namespace") {
            let ns = r.name();
            if matches!(
                ns,
                "istio-system"
                    | "kube-system"
                    | "kube-public"
                    | "kube-node-lease"
                    | "local-path-storage"
            ) {
                continue;
            }
            let label = |k: &str| {
                r.meta
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .map(String::as_str)
            };
            let legacy = label("istio-injection");
            let revision = label("istio.io/rev");
            if label("istio.io/dataplane-mode") == Some("ambient") {
                continue;
            }
            match (legacy, revision) {
                (None, None) => report.add(
                    codes::NAMESPACE_NOT_INJECTED,
                    r,
                    Some(Path::root("metadata").field("name")),
                    format!(
                        "The namespace is not enabled for Istio injection. Run 'kubectl label namespace {ns} istio-injection=enabled' to enable it, or 'kubectl label namespace {ns} istio-injection=disabled' to explicitly mark it as not needing injection."
                    ),
                ),
                (Some("enabled"), _) | (None, Some(_)) => injected.push(ns),
                _ => {}
            }
        }
        for (r, pod) in snap.kube("", "Pod") {
            let ns = snap.ns(r);
            if !injected.contains(&ns) {
                continue;
            }
            let opt_out = r
                .meta
                .labels
                .as_ref()
                .and_then(|l| l.get("sidecar.istio.io/inject"))
                .or_else(|| {
                    r.meta
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("sidecar.istio.io/inject"))
                });
            if opt_out.is_some_and(|v| v.eq_ignore_ascii_case("false"))
                || pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true))
            {
                continue;
            }
            let has_proxy = ["/spec/containers", "/spec/initContainers"]
                .iter()
                .any(|p| {
                    pod.pointer(p).and_then(Value::as_array).is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.get("name") == Some(&Value::from("istio-proxy")))
                    })
                });
            if !has_proxy {
                report.add(
                    codes::POD_MISSING_PROXY,
                    r,
                    Some(Path::root("spec").field("containers")),
                    format!(
                        "The pod {ns}/{} is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
                        r.name()
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::service::test_support::*;
    use super::*;

    const ANNOTATED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews
  namespace: default
  annotations:
    sidecar.istio.io/inject: "false"
    sidecar.istio.io/proxyCPUs: "100m"
    example.com/owner: team-a
spec:
  selector: {matchLabels: {app: reviews}}
  template:
    metadata:
      labels: {app: reviews}
      annotations: {sidecar.istio.io/proxyCPU: "100m"}
    spec: {containers: [{name: reviews, image: reviews}]}
"#;

    #[test]
    fn ist0108_unknown_istio_annotation() {
        expect_one(
            ANNOTATED,
            codes::UNKNOWN_ANNOTATION,
            "Deployment",
            "reviews",
            Some("metadata.annotations[\"sidecar.istio.io/proxyCPUs\"]"),
            "Unknown annotation: sidecar.istio.io/proxyCPUs",
        );
    }

    #[test]
    fn ist0107_misplaced_annotation() {
        let m = expect_one(
            ANNOTATED,
            codes::MISPLACED_ANNOTATION,
            "Deployment",
            "reviews",
            Some("metadata.annotations[\"sidecar.istio.io/inject\"]"),
            "Misplaced annotation: sidecar.istio.io/inject can only be applied to Pod",
        );
        assert_eq!(m.origin.unwrap().line, 8);
    }

    #[test]
    fn well_placed_annotations_pass() {
        let yaml = r#"
apiVersion: v1
kind: Pod
metadata:
  name: reviews
  annotations: {sidecar.istio.io/inject: "true", proxy.istio.io/config: "{}", galley.istio.io/analyze-suppress: IST0103}
spec: {containers: [{name: reviews, image: reviews}]}
---
apiVersion: v1
kind: Service
metadata:
  name: reviews
  annotations: {networking.istio.io/exportTo: "."}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
"#;
        expect_none(yaml, codes::UNKNOWN_ANNOTATION);
        expect_none(yaml, codes::MISPLACED_ANNOTATION);
    }

    const NAMESPACES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: canary, labels: {istio.io/rev: canary}}
---
apiVersion: v1
kind: Namespace
metadata: {name: opted-out, labels: {istio-injection: disabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: old, namespace: mesh}
spec: {containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: injected, namespace: mesh}
spec: {containers: [{name: app, image: app}, {name: istio-proxy, image: proxyv2}]}
---
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: mesh, labels: {sidecar.istio.io/inject: "false"}}
spec: {containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: opted-out}
spec: {containers: [{name: app, image: app}]}
"#;

    #[test]
    fn ist0102_namespace_without_injection_label() {
        expect_one(
            NAMESPACES,
            codes::NAMESPACE_NOT_INJECTED,
            "Namespace",
            "plain",
            Some("metadata.name"),
            "The namespace is not enabled for Istio injection. Run 'kubectl label namespace plain istio-injection=enabled' to enable it, or 'kubectl label namespace plain istio-injection=disabled' to explicitly mark it as not needing injection.",
        );
    }

    #[test]
    fn ist0103_pod_missing_proxy_in_injected_namespace() {
        expect_one(
            NAMESPACES,
            codes::POD_MISSING_PROXY,
            "Pod",
            "old",
            Some("spec.containers"),
            "The pod mesh/old is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
        );
    }
}
