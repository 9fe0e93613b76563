//! Telemetry checks: access logging without a provider (IST0157), several
//! Telemetries for the same workloads (IST0159, IST0160), and selectors that match
//! no workload (IST0101, as Istio reports it; only for namespaces whose workloads
//! are in the input).

use std::collections::BTreeMap;

use common::istio::telemetry::TelemetrySpec;
use common::path::Path;
use common::resource::Resource;

use super::service::{go_list, has_workloads_in, mesh_config, selector_string};
use super::sidecar::matching_workloads;
use super::{Analyzer, Report, Snapshot};
use crate::message::codes;

pub(super) fn analyzers() -> Vec<Box<dyn Analyzer>> {
    vec![
        Box::new(ProviderAnalyzer),
        Box::new(DefaultSelectorAnalyzer),
        Box::new(SelectorAnalyzer),
    ]
}

/// IST0157: an `accessLogging` entry with no providers while the mesh sets no
/// default access log provider; Istio ignores it.
struct ProviderAnalyzer;

impl Analyzer for ProviderAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.ProviderAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let has_default = mesh_config(snap)
            .and_then(|mc| mc.default_providers)
            .is_some_and(|d| !d.access_logging.is_empty());
        if has_default {
            return;
        }
        for (r, t) in snap.telemetries() {
            for (i, logging) in t.access_logging.iter().enumerate() {
                if !logging.providers.is_empty() {
                    continue;
                }
                report.add(
                    codes::INVALID_TELEMETRY_PROVIDER,
                    r,
                    Some(Path::root("spec").field("accessLogging").index(i)),
                    format!(
                        "The Telemetry {} in namespace {:?} with empty providers will be ignored.",
                        r.name(),
                        snap.ns(r)
                    ),
                );
            }
        }
    }
}

/// Whether a Telemetry picks its workloads (by selector or target reference).
fn has_type_selector(t: &TelemetrySpec) -> bool {
    t.selector.is_some() || t.target_ref.is_some() || !t.target_refs.is_empty()
}

/// Names sorted, as Istio lists Telemetries.
fn sorted_names(list: &[&Resource]) -> Vec<String> {
    let mut names: Vec<String> = list.iter().map(|r| r.name().to_string()).collect();
    names.sort();
    names
}

/// IST0160: more than one Telemetry without selector or target in a namespace.
struct DefaultSelectorAnalyzer;

impl Analyzer for DefaultSelectorAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.DefaultSelectorAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let mut by_ns: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
        for (r, t) in snap.telemetries() {
            if !has_type_selector(t) {
                by_ns.entry(snap.ns(r)).or_default().push(r);
            }
        }
        for (ns, list) in by_ns.iter().filter(|(_, l)| l.len() > 1) {
            let names = sorted_names(list);
            for r in list {
                report.add(
                    codes::MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS,
                    r,
                    Some(Path::root("metadata").field("name")),
                    format!(
                        "The Telemetries {} in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
                        go_list(&names)
                    ),
                );
            }
        }
    }
}

/// IST0101 for a Telemetry selector matching no workload of its namespace; IST0159
/// for workloads selected by more than one Telemetry.
struct SelectorAnalyzer;

impl Analyzer for SelectorAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.SelectorAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let workloads = snap.workloads();
        let mut selected: BTreeMap<usize, Vec<&Resource>> = BTreeMap::new();
        for (r, t) in snap.telemetries() {
            let Some(labels) = t
                .selector
                .as_ref()
                .map(|s| &s.match_labels)
                .filter(|l| !l.is_empty())
            else {
                continue;
            };
            let ns = snap.ns(r);
            if !has_workloads_in(&workloads, ns) {
                continue;
            }
            let matching = matching_workloads(&workloads, ns, labels);
            if matching.is_empty() {
                let first = labels.keys().next().map(String::as_str).unwrap_or("");
                report.add(
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    Some(
                        Path::root("spec")
                            .field("selector")
                            .field("matchLabels")
                            .key(first),
                    ),
                    format!(
                        "Referenced selector not found: {:?}",
                        selector_string(labels)
                    ),
                );
            }
            for w in matching {
                selected.entry(w).or_default().push(r);
            }
        }
        for (w, list) in selected.iter().filter(|(_, l)| l.len() > 1) {
            let workload = &workloads[*w];
            let names = sorted_names(list);
            for r in list {
                report.add(
                    codes::CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
                    r,
                    Some(Path::root("metadata").field("name")),
                    format!(
                        "The Telemetries {} in namespace {:?} select the same workload pod {:?}, which can lead to undefined behavior.",
                        go_list(&names),
                        workload.namespace,
                        workload.resource.name()
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

    fn telemetry(name: &str, body: &str) -> String {
        format!(
            "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{body}"
        )
    }

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: productpage-v1-abc, namespace: default, labels: {app: productpage}}
spec: {containers: [{name: productpage, image: productpage}]}
"#;

    #[test]
    fn ist0157_access_logging_without_provider() {
        let yaml = telemetry(
            "logs",
            "  accessLogging:\n  - providers: [{name: envoy}]\n  - disabled: false\n",
        );
        expect_one(
            &yaml,
            codes::INVALID_TELEMETRY_PROVIDER,
            "Telemetry",
            "logs",
            Some("spec.accessLogging[1]"),
            "The Telemetry logs in namespace \"default\" with empty providers will be ignored.",
        );
        let with_default = format!(
            "{yaml}---\n{}",
            r#"apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    defaultProviders:
      accessLogging: [envoy]
"#
        );
        expect_none(&with_default, codes::INVALID_TELEMETRY_PROVIDER);
    }

    #[test]
    fn ist0160_two_namespace_wide_telemetries() {
        let yaml = format!(
            "{}{}{}",
            telemetry("tracing", "  tracing: [{randomSamplingPercentage: 10}]\n"),
            telemetry(
                "metrics",
                "  metrics: [{providers: [{name: prometheus}]}]\n"
            ),
            telemetry(
                "scoped",
                "  selector: {matchLabels: {app: productpage}}\n  tracing: [{randomSamplingPercentage: 1}]\n"
            ),
        );
        let found = messages(
            &yaml,
            codes::MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS,
        );
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].resource.as_ref().unwrap().name, "tracing");
        assert_eq!(
            found[0].text,
            "The Telemetries [metrics tracing] in namespace \"default\" have no workload selector, which can lead to undefined behavior."
        );
    }

    #[test]
    fn ist0159_telemetries_selecting_the_same_pod() {
        let yaml = format!(
            "{POD}{}{}",
            telemetry(
                "b-sampling",
                "  selector: {matchLabels: {app: productpage}}\n  tracing: [{randomSamplingPercentage: 1}]\n"
            ),
            telemetry(
                "a-metrics",
                "  selector: {matchLabels: {app: productpage}}\n  metrics: [{providers: [{name: prometheus}]}]\n"
            ),
        );
        let found = messages(&yaml, codes::CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].field.as_deref(), Some("metadata.name"));
        assert_eq!(
            found[0].text,
            "The Telemetries [a-metrics b-sampling] in namespace \"default\" select the same workload pod \"productpage-v1-abc\", which can lead to undefined behavior."
        );
    }

    #[test]
    fn ist0101_telemetry_selector_matches_nothing() {
        let t = telemetry(
            "reviews",
            "  selector: {matchLabels: {app: reviews}}\n  tracing: [{randomSamplingPercentage: 1}]\n",
        );
        expect_one(
            &format!("{POD}{t}"),
            codes::REFERENCED_RESOURCE_NOT_FOUND,
            "Telemetry",
            "reviews",
            Some("spec.selector.matchLabels.app"),
            "Referenced selector not found: \"app=reviews\"",
        );
        expect_none(&t, codes::REFERENCED_RESOURCE_NOT_FOUND);
        let ok = t.replace("app: reviews", "app: productpage");
        expect_none(&format!("{POD}{ok}"), codes::REFERENCED_RESOURCE_NOT_FOUND);
        expect_none(
            &format!("{POD}{ok}"),
            codes::CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
        );
    }
}
