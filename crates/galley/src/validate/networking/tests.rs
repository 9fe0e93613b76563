//! Rule tests: for each rule, a resource that breaks it and the exact field path
//! and message fragment expected; realistic resources that must pass; and the
//! guide's seed examples, which must pass too.

mod destination_rule;
mod gateway;
mod misc;
mod service_entry;
mod sidecar;
mod virtual_service;

use crate::validate::test_support::findings;
use crate::validate::{Finding, Level};

/// A whole resource of `kind` (at the version that serves it) around a spec
/// written as YAML (flow style is handy: `{hosts: [a], http: [...]}`).
fn resource(kind: &str, spec: &str) -> String {
    let version = match kind {
        "EnvoyFilter" => "v1alpha3",
        "ProxyConfig" => "v1beta1",
        _ => "v1",
    };
    format!(
        "apiVersion: networking.istio.io/{version}\nkind: {kind}\nmetadata:\n  name: test\n  namespace: default\nspec: {spec}\n"
    )
}

fn run(kind: &str, spec: &str) -> Vec<Finding> {
    findings(&resource(kind, spec))
}

fn listed(found: &[Finding]) -> String {
    found
        .iter()
        .map(|f| format!("  {:?} {}: {}", f.level, f.path, f.message))
        .collect::<Vec<_>>()
        .join("\n")
}

fn expect(kind: &str, spec: &str, level: Level, path: &str, fragment: &str) {
    let found = run(kind, spec);
    assert!(
        found.iter().any(|f| f.level == level
            && f.path.to_string() == path
            && f.message.contains(fragment)),
        "expected {level:?} at {path} containing {fragment:?} for {kind} {spec}\nfound:\n{}",
        listed(&found)
    );
}

/// Asserts an error at `path` whose message contains `fragment`.
fn error(kind: &str, spec: &str, path: &str, fragment: &str) {
    expect(kind, spec, Level::Error, path, fragment);
}

/// Asserts a warning at `path` whose message contains `fragment`.
fn warning(kind: &str, spec: &str, path: &str, fragment: &str) {
    expect(kind, spec, Level::Warning, path, fragment);
}

/// Asserts that the resource has no errors (warnings are allowed).
fn valid(kind: &str, spec: &str) {
    let found = run(kind, spec);
    let errors: Vec<Finding> = found
        .into_iter()
        .filter(|f| f.level == Level::Error)
        .collect();
    assert!(
        errors.is_empty(),
        "expected {kind} {spec} to be valid\nfound:\n{}",
        listed(&errors)
    );
}

/// Every networking example of the guide passes validation without errors.
#[test]
fn seed_examples_have_no_errors() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/corpus/seed");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the seed corpus is missing at {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut checked = 0;
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        let loaded = common::load::load_str(&text, &path.display().to_string());
        for r in loaded
            .resources
            .iter()
            .filter(|r| r.group() == "networking.istio.io")
        {
            let errors: Vec<Finding> = crate::validate::validate(r, "default")
                .into_iter()
                .filter(|f| f.level == Level::Error)
                .collect();
            assert!(
                errors.is_empty(),
                "{}:\n{}",
                path.display(),
                listed(&errors)
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 21,
        "only {checked} networking seed examples were checked"
    );
}

/// Seed 09's deprecated `consecutiveErrors` passes with a warning naming the fix.
#[test]
fn deprecated_consecutive_errors_warns() {
    warning(
        "DestinationRule",
        "{host: reviews, trafficPolicy: {outlierDetection: {consecutiveErrors: 5, interval: 1s}}}",
        "spec.trafficPolicy.outlierDetection.consecutiveErrors",
        "use consecutive5xxErrors",
    );
}
