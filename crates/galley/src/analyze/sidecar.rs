//! Workload selectors: Sidecars, and the security and extension policies that pick
//! workloads by label.
//!
//! Sidecars: at most one per namespace without a selector (IST0111), no workload
//! picked by two of them (IST0110), and a selector must match a workload
//! (IST0101, as Istio reports it). AuthorizationPolicy, PeerAuthentication,
//! RequestAuthentication and WasmPlugin selectors must match a workload (IST0127).
//!
//! Selector-matches-nothing checks only run for namespaces whose workloads (Pods,
//! Deployments, …, WorkloadEntries) are part of the input: for a config-only input
//! nothing is known about which labels exist, and every selector would be reported.
//! Likewise, namespaces named by Sidecar egress hosts and AuthorizationPolicy
//! sources must exist (IST0101) only when the input lists Namespaces.

use common::istio::types::WorkloadSelector;
use common::path::Path;
use common::resource::Resource;

use super::scoping::{self, Scoped, ScopedItem};
use super::service::{has_workloads_in, root_namespace, selector_string};
use super::{Analyzer, Report, Snapshot, selects};
use crate::message::codes;

pub(super) fn analyzers() -> Vec<Box<dyn Analyzer>> {
    vec![
        Box::new(DefaultSelectorAnalyzer),
        Box::new(SelectorAnalyzer),
        Box::new(PolicySelectorAnalyzer),
        Box::new(NamespaceReferenceAnalyzer),
    ]
}

/// The Sidecars as a scoped kind: IST0111 and IST0110, selectors must match.
fn scoped<'a>(snap: &Snapshot<'a>) -> Scoped<'a> {
    Scoped {
        title: "Sidecars",
        multiple_defaults: codes::MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
        conflicting: codes::CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
        labels_path: Path::root("spec").field("workloadSelector").field("labels"),
        items: snap
            .sidecars()
            .map(|(r, sc)| {
                let labels = sc.workload_selector.as_ref().map(|s| &s.labels);
                ScopedItem {
                    resource: r,
                    labels,
                    default: sc.workload_selector.is_none(),
                }
            })
            .collect(),
    }
}

/// IST0111: more than one Sidecar without `workloadSelector` in a namespace.
struct DefaultSelectorAnalyzer;

impl Analyzer for DefaultSelectorAnalyzer {
    fn name(&self) -> &'static str {
        "sidecar.DefaultSelectorAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        scoping::multiple_defaults(snap, report, &scoped(snap));
    }
}

/// IST0101 for a Sidecar selector matching no workload of its namespace; IST0110
/// for workloads selected by more than one Sidecar.
struct SelectorAnalyzer;

impl Analyzer for SelectorAnalyzer {
    fn name(&self) -> &'static str {
        "sidecar.SelectorAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        scoping::selectors(snap, report, &scoped(snap));
    }
}

/// IST0127: an AuthorizationPolicy, PeerAuthentication, RequestAuthentication or
/// WasmPlugin whose `selector.matchLabels` match no workload. A policy in the root
/// namespace applies mesh-wide, so its selector is matched against every namespace.
/// (Istio checks AuthorizationPolicies only; the other kinds fail the same way.)
struct PolicySelectorAnalyzer;

impl Analyzer for PolicySelectorAnalyzer {
    fn name(&self) -> &'static str {
        "auth.NoMatchingWorkloadsAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let workloads = snap.workloads();
        let root = root_namespace(snap);
        let mut policies: Vec<(&Resource, Option<&WorkloadSelector>)> = Vec::new();
        policies.extend(
            snap.authorization_policies()
                .map(|(r, p)| (r, p.selector.as_ref())),
        );
        policies.extend(
            snap.peer_authentications()
                .map(|(r, p)| (r, p.selector.as_ref())),
        );
        policies.extend(
            snap.request_authentications()
                .map(|(r, p)| (r, p.selector.as_ref())),
        );
        policies.extend(snap.wasm_plugins().map(|(r, p)| (r, p.selector.as_ref())));
        for (r, selector) in policies {
            let Some(labels) = selector.map(|s| &s.match_labels).filter(|l| !l.is_empty()) else {
                continue;
            };
            let ns = snap.ns(r);
            // A root-namespace policy may select workloads anywhere; it is judged
            // when the root namespace's own workloads (the gateways, usually) are
            // part of the input.
            let mesh_wide = ns == root;
            if !has_workloads_in(&workloads, ns) {
                continue;
            }
            let matched = workloads
                .iter()
                .any(|w| (mesh_wide || w.namespace == ns) && selects(labels, &w.labels));
            if matched {
                continue;
            }
            let first = labels.keys().next().map(String::as_str).unwrap_or("");
            report.add(
                codes::NO_MATCHING_WORKLOADS_FOUND,
                r,
                Some(
                    Path::root("spec")
                        .field("selector")
                        .field("matchLabels")
                        .key(first),
                ),
                format!(
                    "No matching workloads for this resource with the following labels: {}",
                    selector_string(labels)
                ),
            );
        }
    }
}

/// IST0101 for namespaces that Sidecar egress hosts (`ns/host`) or
/// AuthorizationPolicy sources (`namespaces`, `notNamespaces`, with `*` prefix or
/// suffix wildcards) name but that do not exist. The namespaces known are the
/// input's Namespace objects and the namespaces of its resources; the check runs
/// only when the input has at least one Namespace object.
struct NamespaceReferenceAnalyzer;

impl Analyzer for NamespaceReferenceAnalyzer {
    fn name(&self) -> &'static str {
        "namespace.ReferenceAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let mut known: Vec<&str> = snap.kube("", "Namespace").map(|(r, _)| r.name()).collect();
        if known.is_empty() {
            return;
        }
        known.extend(
            snap.all()
                .filter(|r| r.kind != "Namespace")
                .map(|r| snap.ns(r)),
        );
        let missing = |pattern: &str| !known.iter().any(|ns| namespace_matches(ns, pattern));
        let not_found = |report: &mut Report<'_>, r: &Resource, path: Path, ns: &str| {
            report.add(
                codes::REFERENCED_RESOURCE_NOT_FOUND,
                r,
                Some(path),
                format!("Referenced namespace not found: {ns:?}"),
            );
        };
        for (r, sc) in snap.sidecars() {
            for (i, egress) in sc.egress.iter().enumerate() {
                for (j, host) in egress.hosts.iter().enumerate() {
                    let Some((ns, _)) = host.split_once('/') else {
                        continue;
                    };
                    if !matches!(ns, "*" | "." | "~") && missing(ns) {
                        let path = Path::root("spec")
                            .field("egress")
                            .index(i)
                            .field("hosts")
                            .index(j);
                        not_found(report, r, path, ns);
                    }
                }
            }
        }
        for (r, ap) in snap.authorization_policies() {
            for (i, rule) in ap.rules.iter().enumerate() {
                for (j, from) in rule.from.iter().enumerate() {
                    let Some(source) = &from.source else { continue };
                    for (field, list) in [
                        ("namespaces", &source.namespaces),
                        ("notNamespaces", &source.not_namespaces),
                    ] {
                        for (k, ns) in list.iter().enumerate() {
                            if missing(ns) {
                                let path = Path::root("spec")
                                    .field("rules")
                                    .index(i)
                                    .field("from")
                                    .index(j)
                                    .field("source")
                                    .field(field)
                                    .index(k);
                                not_found(report, r, path, ns);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Istio's namespace pattern: `*`, `*suffix`, `prefix*`, or a name (any case).
fn namespace_matches(ns: &str, pattern: &str) -> bool {
    if pattern == "*" {
        true
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        ns.ends_with(suffix)
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        ns.starts_with(prefix)
    } else {
        ns.eq_ignore_ascii_case(pattern)
    }
}

#[cfg(test)]
mod tests {
    use super::super::service::test_support::*;
    use super::*;

    const WORKLOADS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings-v1, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  template:
    metadata: {labels: {app: ratings, version: v1}}
    spec: {containers: [{name: ratings, image: ratings}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: default, labels: {app: reviews, version: v2}}
spec: {containers: [{name: reviews, image: reviews}]}
"#;

    fn sidecar(name: &str, selector: Option<&str>) -> String {
        let sel = selector
            .map(|s| format!("  workloadSelector:\n    labels: {{{s}}}\n"))
            .unwrap_or_default();
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{sel}  egress: [{{hosts: [\"./*\"]}}]\n"
        )
    }

    #[test]
    fn ist0111_two_sidecars_without_selector() {
        let yaml = format!("{}{}", sidecar("default", None), sidecar("second", None));
        let found = messages(&yaml, codes::MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS);
        assert_eq!(found.len(), 2, "{found:#?}");
        for m in &found {
            assert_eq!(m.field.as_deref(), Some("metadata.name"));
            assert_eq!(
                m.text,
                "The Sidecars [default second] in namespace \"default\" have no workload selector, which can lead to undefined behavior."
            );
        }
        expect_none(
            &format!(
                "{}{}",
                sidecar("default", None),
                sidecar("ratings", Some("app: ratings"))
            ),
            codes::MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
        );
    }

    #[test]
    fn ist0110_sidecars_selecting_the_same_workload() {
        let yaml = format!(
            "{WORKLOADS}{}{}",
            sidecar("by-app", Some("app: ratings")),
            sidecar("by-version", Some("version: v1"))
        );
        let found = messages(&yaml, codes::CONFLICTING_SIDECAR_WORKLOAD_SELECTORS);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[1].resource.as_ref().unwrap().name, "by-version");
        assert_eq!(
            found[0].text,
            "The Sidecars [by-app by-version] in namespace \"default\" select the same workload pod \"ratings-v1\", which can lead to undefined behavior."
        );
        let distinct = format!(
            "{WORKLOADS}{}{}",
            sidecar("ratings", Some("app: ratings")),
            sidecar("reviews", Some("app: reviews"))
        );
        expect_none(&distinct, codes::CONFLICTING_SIDECAR_WORKLOAD_SELECTORS);
        expect_none(&distinct, codes::REFERENCED_RESOURCE_NOT_FOUND);
    }

    #[test]
    fn ist0101_sidecar_selector_matches_nothing() {
        let yaml = format!("{WORKLOADS}{}", sidecar("details", Some("app: details")));
        expect_one(
            &yaml,
            codes::REFERENCED_RESOURCE_NOT_FOUND,
            "Sidecar",
            "details",
            Some("spec.workloadSelector.labels.app"),
            "Referenced selector not found: \"app=details\"",
        );
        // Config-only input: no workloads in the namespace, no judgement.
        expect_none(
            &sidecar("details", Some("app: details")),
            codes::REFERENCED_RESOURCE_NOT_FOUND,
        );
    }

    const POLICIES: &str = r#"
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings-viewer, namespace: default}
spec:
  selector:
    matchLabels: {app: ratings, version: v2}
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-strict, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh-jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules: [{issuer: "https://issuer.example.com"}]
"#;

    #[test]
    fn ist0127_policy_selector_matches_no_workload() {
        let yaml = format!("{WORKLOADS}{POLICIES}");
        let m = expect_one(
            &yaml,
            codes::NO_MATCHING_WORKLOADS_FOUND,
            "AuthorizationPolicy",
            "ratings-viewer",
            Some("spec.selector.matchLabels.app"),
            "No matching workloads for this resource with the following labels: app=ratings,version=v2",
        );
        assert_eq!(m.origin.unwrap().line, 22);
    }

    #[test]
    fn ist0127_not_reported_without_workloads_in_namespace() {
        expect_none(POLICIES, codes::NO_MATCHING_WORKLOADS_FOUND);
        // The mesh-wide policy is judged once istio-system's workloads are given.
        let gateway_pod = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: gw, namespace: istio-system, labels: {istio: ingressgateway}}\nspec: {containers: [{name: istio-proxy, image: proxyv2}]}\n";
        let mesh = POLICIES
            .replace("version: v2", "version: v1")
            .replace("app: reviews}}\n  jwtRules", "app: details}}\n  jwtRules");
        let found = messages(
            &format!("{WORKLOADS}{mesh}{gateway_pod}"),
            codes::NO_MATCHING_WORKLOADS_FOUND,
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].resource.as_ref().unwrap().name, "mesh-jwt");
        assert_eq!(
            found[0].text,
            "No matching workloads for this resource with the following labels: app=details"
        );
        let reviews = format!(
            "{WORKLOADS}{}{gateway_pod}",
            POLICIES.replace("version: v2", "version: v1")
        );
        expect_none(&reviews, codes::NO_MATCHING_WORKLOADS_FOUND);
        let fixed = format!(
            "{WORKLOADS}{}",
            POLICIES.replace("version: v2", "version: v1")
        );
        expect_none(&fixed, codes::NO_MATCHING_WORKLOADS_FOUND);
    }

    #[test]
    fn ist0101_namespace_references() {
        let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: frontend}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: frontend}
spec:
  egress:
  - hosts: ["./*", "istio-system/*", "backend/*", "*/api.example.com"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: frontend}
spec:
  rules:
  - from:
    - source: {namespaces: [front*, "*-system"], notNamespaces: [legacy]}
"#;
        let found = messages(yaml, codes::REFERENCED_RESOURCE_NOT_FOUND);
        let got: Vec<(&str, Option<&str>, &str)> = found
            .iter()
            .map(|m| {
                (
                    m.resource.as_ref().unwrap().kind.as_str(),
                    m.field.as_deref(),
                    m.text.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "Sidecar",
                    Some("spec.egress[0].hosts[1]"),
                    "Referenced namespace not found: \"istio-system\""
                ),
                (
                    "Sidecar",
                    Some("spec.egress[0].hosts[2]"),
                    "Referenced namespace not found: \"backend\""
                ),
                (
                    "AuthorizationPolicy",
                    Some("spec.rules[0].from[0].source.namespaces[1]"),
                    "Referenced namespace not found: \"*-system\""
                ),
                (
                    "AuthorizationPolicy",
                    Some("spec.rules[0].from[0].source.notNamespaces[0]"),
                    "Referenced namespace not found: \"legacy\""
                ),
            ]
        );
        // Without Namespace objects the input says nothing about which exist.
        let config_only = yaml.replacen(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: frontend}\n---\n",
            "",
            1,
        );
        expect_none(&config_only, codes::REFERENCED_RESOURCE_NOT_FOUND);
    }
}
