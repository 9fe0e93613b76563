//! Checks shared by the kinds that pick workloads by selector and allow one
//! namespace-wide default (Sidecar and Telemetry): at most one default per
//! namespace, no workload picked by two of them, and a selector must match a
//! workload (IST0101, as Istio reports it; only for namespaces whose workloads are
//! in the input).

use std::collections::BTreeMap;

use common::path::Path;
use common::resource::Resource;

use super::service::{go_list, has_workloads_in, selector_string};
use super::{Report, Snapshot, Workload, selects};
use crate::message::Code;

/// One scoped kind's resources and how its messages read.
pub(super) struct Scoped<'a> {
    /// The plural in Istio's messages: `Sidecars`, `Telemetries`.
    pub title: &'static str,
    /// The code for several defaults in one namespace (IST0111, IST0160).
    pub multiple_defaults: Code,
    /// The code for a workload picked twice (IST0110, IST0159).
    pub conflicting: Code,
    /// Where the selector's labels sit: `spec.workloadSelector.labels`, …
    pub labels_path: Path,
    /// The resources of the kind.
    pub items: Vec<ScopedItem<'a>>,
}

/// One resource of a scoped kind.
pub(super) struct ScopedItem<'a> {
    /// The resource.
    pub resource: &'a Resource,
    /// Its selector's labels, if it has a selector.
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// Whether it is a namespace default: it picks workloads by nothing (no
    /// selector, no target reference).
    pub default: bool,
}

/// Names sorted, as Istio lists them.
fn sorted_names(list: &[&Resource]) -> Vec<String> {
    let mut names: Vec<String> = list.iter().map(|r| r.name().to_string()).collect();
    names.sort();
    names
}

/// Several defaults in one namespace.
pub(super) fn multiple_defaults(snap: &Snapshot<'_>, report: &mut Report<'_>, s: &Scoped<'_>) {
    let mut by_ns: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for item in s.items.iter().filter(|i| i.default) {
        by_ns
            .entry(snap.ns(item.resource))
            .or_default()
            .push(item.resource);
    }
    for (ns, list) in by_ns.iter().filter(|(_, l)| l.len() > 1) {
        let names = sorted_names(list);
        for r in list {
            report.add(
                s.multiple_defaults,
                r,
                Some(Path::root("metadata").field("name")),
                format!(
                    "The {} {} in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
                    s.title,
                    go_list(&names)
                ),
            );
        }
    }
}

/// Selectors that match nothing, and workloads picked by more than one selector.
pub(super) fn selectors(snap: &Snapshot<'_>, report: &mut Report<'_>, s: &Scoped<'_>) {
    let workloads = snap.workloads();
    // Workload index → the resources selecting it.
    let mut selected: BTreeMap<usize, Vec<&Resource>> = BTreeMap::new();
    for item in &s.items {
        let r = item.resource;
        let Some(labels) = item.labels.filter(|l| !l.is_empty()) else {
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
                crate::message::codes::REFERENCED_RESOURCE_NOT_FOUND,
                r,
                Some(s.labels_path.clone().key(first)),
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
                s.conflicting,
                r,
                Some(Path::root("metadata").field("name")),
                format!(
                    "The {} {} in namespace {:?} select the same workload pod {:?}, which can lead to undefined behavior.",
                    s.title,
                    go_list(&names),
                    workload.namespace,
                    workload.resource.name()
                ),
            );
        }
    }
}

/// Indexes of the workloads in `ns` whose labels carry `selector`.
pub(super) fn matching_workloads(
    workloads: &[Workload<'_>],
    ns: &str,
    selector: &BTreeMap<String, String>,
) -> Vec<usize> {
    workloads
        .iter()
        .enumerate()
        .filter(|(_, w)| w.namespace == ns && selects(selector, &w.labels))
        .map(|(i, _)| i)
        .collect()
}
