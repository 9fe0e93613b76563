//! The `mizzen` binary as users run it: exit statuses, Istio's message format on
//! stdout, file and line in every message, JSON/YAML output, standard input.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::{mizzen_binary as mizzen, repo};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_seed_file_validates_with_exit_zero() {
    let dir = repo().join("testdata/corpus/seed");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 40, "the guide corpus has 40 examples");
    for f in files {
        let o = mizzen(&["validate", "-f", f.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{} should validate:\n{}{}",
            f.display(),
            stdout(&o),
            stderr(&o)
        );
        assert!(
            !stdout(&o).contains("Error ["),
            "{}: {}",
            f.display(),
            stdout(&o)
        );
    }
}

#[test]
fn broken_sample_fails_naming_file_line_resource_and_field() {
    let o = mizzen(&["validate", "-f", "samples/broken"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("Error [IST0106] (VirtualService reviews.default samples/broken/reviews.yaml:17) Schema validation error: spec.http[0].retries.perTryTimout: unknown field")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l
            .contains("(DestinationRule reviews.default samples/broken/reviews.yaml:28)")
            && l.contains("spec.trafficPolicy.loadBalancer.simple")
            && l.contains("did you mean \"RANDOM\"")),
        "{out}"
    );
    assert!(
        lines.iter().any(|l| l
            .contains("(VirtualService ratings.default samples/broken/reviews.yaml:42)")
            && l.contains("spec.http[0].timeout")
            && l.contains("at least 1ms")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("samples/broken/reviews.yaml:45")
                && l.contains("spec.http[0].retries.retryOn")
                && l.contains("\"sometimes\"")),
        "{out}"
    );
    assert!(
        stderr(&o).contains("✘ validated 3 resources (2 could not be decoded): 4 errors"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn json_and_yaml_output_carry_the_same_messages() {
    let o = mizzen(&["validate", "-f", "samples/broken", "-o", "json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let arr = v.as_array().unwrap();
    assert!(arr.len() >= 4, "{v}");
    let first = &arr[0];
    assert_eq!(first["code"], "IST0106");
    assert_eq!(first["level"], "Error");
    assert!(first["origin"]["line"].as_u64().unwrap() > 0);
    assert!(first["field"].as_str().unwrap().starts_with("spec."));
    assert!(
        first["documentationUrl"]
            .as_str()
            .unwrap()
            .ends_with("/ist0106/")
    );

    let y = mizzen(&["validate", "-f", "samples/broken", "-o", "yaml"]);
    let text = stdout(&y);
    assert!(text.contains("code: IST0106"), "{text}");
    assert_eq!(
        text.matches("code: IST0106").count(),
        arr.iter().filter(|m| m["code"] == "IST0106").count()
    );
}

#[test]
fn standard_input_is_read_with_dash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mizzen"))
        .args(["validate", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  servers:\n  - port: {number: 0, name: http, protocol: HTTP}\n    hosts: ['*']\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("(Gateway gw.default -:6)"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("spec.servers[0].port.number"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn analyze_bookinfo_is_clean_and_reports_missing_references() {
    let o = mizzen(&["analyze", "-f", "samples/bookinfo"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(!stdout(&o).contains("Error ["), "{}", stdout(&o));

    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("vs.yaml");
    std::fs::write(
        &f,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: bookinfo, namespace: default}\nspec:\n  hosts: ['*']\n  gateways: [bookinfo-gateway-bogus]\n  http:\n  - route:\n    - destination: {host: productpage}\n",
    )
    .unwrap();
    let o = mizzen(&[
        "analyze",
        "-f",
        "samples/bookinfo/platform.yaml",
        "-f",
        f.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(79), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(&format!(
            "Error [IST0101] (VirtualService bookinfo.default {}:6) Referenced gateway not found: \"bookinfo-gateway-bogus\"",
            f.display()
        )),
        "{}",
        stdout(&o)
    );

    // Suppressed, the error no longer fails the run.
    let o = mizzen(&[
        "analyze",
        "-f",
        "samples/bookinfo/platform.yaml",
        "-f",
        f.to_str().unwrap(),
        "--suppress",
        "IST0101=VirtualService bookinfo.*",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn usage_problems_exit_two_with_advice() {
    let o = mizzen(&["validate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-f FILE"), "{}", stderr(&o));
    let o = mizzen(&["analyze", "--use-kube=true", "-f", "samples/bookinfo"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not supported"), "{}", stderr(&o));
    let o = mizzen(&["validate", "-f", "does/not/exist.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("does/not/exist.yaml") && stdout(&o).contains("cannot read"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn list_analyzers_names_them() {
    let o = mizzen(&["analyze", "--list-analyzers"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).lines().count() >= 10, "{}", stdout(&o));
}
