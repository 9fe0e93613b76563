//! The table of invalid configurations: every file under `testdata/invalid/` is one
//! case, whose header lines say what must be reported:
//!
//! ```text
//! # expect: IST0106 spec.http[0].timeout "must be at least 1ms"
//! ```
//!
//! Each expectation needs a message with that code, that field path and a text
//! containing the fragment, pointing at a line inside the file. Files are checked
//! with analysis on, so IST01xx cases live in the same table.

use std::path::{Path, PathBuf};

use galley::CheckOptions;

struct Expect {
    code: String,
    path: String,
    fragment: String,
}

fn parse_expectations(text: &str, file: &Path) -> Vec<Expect> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let (code, rest) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}: bad expect line", file.display()));
            let (path, rest) = rest
                .split_once(' ')
                .unwrap_or_else(|| panic!("{}: bad expect line", file.display()));
            let fragment = rest.trim();
            let fragment = fragment
                .strip_prefix('"')
                .and_then(|f| f.strip_suffix('"'))
                .unwrap_or(fragment)
                .replace("\\\"", "\"");
            Expect {
                code: code.into(),
                path: if path == "-" {
                    String::new()
                } else {
                    path.into()
                },
                fragment,
            }
        })
        .collect()
}

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_invalid_case_is_reported_with_code_path_and_reason() {
    let files = cases();
    let mut failures = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let expects = parse_expectations(&text, file);
        assert!(
            !expects.is_empty(),
            "{} has no '# expect:' line",
            file.display()
        );
        let loaded = common::load::load_str(&text, &file.display().to_string());
        for r in &loaded.resources {
            kinds.insert(r.kind.clone());
        }
        for e in &loaded.errors {
            if let Some(k) = &e.kind {
                kinds.insert(k.clone());
            }
        }
        let outcome = galley::check(
            &loaded,
            &CheckOptions {
                analyze: true,
                ..Default::default()
            },
        );
        let lines = text.lines().count();
        for x in &expects {
            let found = outcome.messages.iter().any(|m| {
                m.code == x.code
                    && m.field.clone().unwrap_or_default() == x.path
                    && m.text.contains(&x.fragment)
                    && m.origin
                        .as_ref()
                        .is_some_and(|o| o.line >= 1 && o.line <= lines)
            });
            if !found {
                failures.push(format!(
                    "{}: expected {} at {:?} containing {:?}; got:\n  {}",
                    file.display(),
                    x.code,
                    x.path,
                    x.fragment,
                    outcome
                        .messages
                        .iter()
                        .map(|m| format!("{m}  [field {:?}]", m.field))
                        .collect::<Vec<_>>()
                        .join("\n  ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        files.len() >= 60,
        "the table has {} cases; it needs at least 60",
        files.len()
    );
    for kind in [
        "VirtualService",
        "DestinationRule",
        "Gateway",
        "ServiceEntry",
        "WorkloadEntry",
        "WorkloadGroup",
        "Sidecar",
        "EnvoyFilter",
        "ProxyConfig",
        "PeerAuthentication",
        "RequestAuthentication",
        "AuthorizationPolicy",
        "Telemetry",
        "WasmPlugin",
        "IstioOperator",
    ] {
        assert!(kinds.contains(kind), "no invalid case covers {kind}");
    }
}

#[test]
fn valid_versions_of_the_cases_pass() {
    // Guard against a case passing because everything fails: the seed corpus is clean.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/corpus/seed");
    let loaded = common::load::load_path(&dir);
    let outcome = galley::check(&loaded, &CheckOptions::default());
    let errors: Vec<String> = outcome
        .messages
        .iter()
        .filter(|m| m.is_error())
        .map(|m| m.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(outcome.resources, 40);
}
