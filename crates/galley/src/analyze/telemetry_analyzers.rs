//! Telemetry checks: access logging without a provider (IST0157), several
//! Telemetries for the same workloads (IST0159, IST0160), and selectors that match
//! no workload (IST0101, as Istio reports it; only for namespaces whose workloads
//! are in the input).

use common::istio::telemetry::TelemetrySpec;
use common::path::Path;

use super::scoping::{self, Scoped, ScopedItem};
use super::service::mesh_config;
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

/// The Telemetries as a scoped kind: IST0160 and IST0159, selectors must match.
fn scoped<'a>(snap: &Snapshot<'a>) -> Scoped<'a> {
    Scoped {
        title: "Telemetries",
        multiple_defaults: codes::MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS,
        conflicting: codes::CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
        labels_path: Path::root("spec").field("selector").field("matchLabels"),
        items: snap
            .telemetries()
            .map(|(r, t)| {
                let labels = t.selector.as_ref().map(|s| &s.match_labels);
                ScopedItem {
                    resource: r,
                    labels,
                    default: !has_type_selector(t),
                }
            })
            .collect(),
    }
}

/// IST0160: more than one Telemetry without selector or target in a namespace.
struct DefaultSelectorAnalyzer;

impl Analyzer for DefaultSelectorAnalyzer {
    fn name(&self) -> &'static str {
        "telemetry.DefaultSelectorAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        scoping::multiple_defaults(snap, report, &scoped(snap));
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
        scoping::selectors(snap, report, &scoped(snap));
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
