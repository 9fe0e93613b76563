//! `mizzen manifest generate` renders the Helm chart `deploy/charts/mizzen` the
//! way Helm does: for every profile, a revision and each of the seed's
//! IstioOperator files, the objects equal `helm template`'s with the same values,
//! and they are valid Kubernetes 1.35 objects (kubernetes-validate, offline).

mod support;

use std::path::PathBuf;

use mizzen::manifest::{InstallOptions, plan, render};
use serde_json::Value;
use support::{kubernetes_validate, mizzen, repo as root, tool};

fn chart() -> PathBuf {
    root().join("deploy/charts/mizzen")
}

/// A YAML stream's objects, in a canonical order, with YAML held in ConfigMap
/// data parsed (Helm's and Mizzen's YAML differ in quoting, not in content).
fn objects(stream: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in stream.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            if !current.trim().is_empty() {
                let v: Value = serde_saphyr::from_str(&current)
                    .unwrap_or_else(|e| panic!("not YAML ({e}):\n{current}"));
                if !v.is_null() {
                    docs.push(canonical(v));
                }
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs.sort_by_key(|o| {
        format!(
            "{}/{}/{}",
            o["kind"].as_str().unwrap_or(""),
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap_or("")
        )
    });
    docs
}

fn canonical(mut object: Value) -> Value {
    if object["kind"] == "ConfigMap"
        && let Some(Value::Object(data)) = object.get_mut("data")
    {
        for v in data.values_mut() {
            if let Some(text) = v.as_str()
                && let Ok(parsed @ Value::Object(_)) = serde_saphyr::from_str::<Value>(text)
            {
                *v = parsed;
            }
        }
    }
    object
}

/// The options' objects from Mizzen's renderer and from `helm template` with
/// the same values.
fn both(options: &InstallOptions) -> (Vec<Value>, Vec<Value>) {
    let plan = plan(options).unwrap_or_else(|e| panic!("{options:?}: {e}"));
    let ours = render(&plan).unwrap_or_else(|e| panic!("{options:?}: {e}"));
    let ours = objects(&mizzen::manifest::to_yaml_stream(&ours).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.json");
    std::fs::write(&values, serde_json::to_string(&plan.values).unwrap()).unwrap();
    let (ok, out, err) = tool(
        "helm",
        &[
            "template",
            "mizzen",
            chart().to_str().unwrap(),
            "--namespace",
            &plan.namespace,
            "-f",
            values.to_str().unwrap(),
        ],
    );
    assert!(ok, "helm template failed: {err}");
    (ours, objects(&out))
}

fn options(files: &[&str], sets: &[&str], revision: Option<&str>) -> InstallOptions {
    InstallOptions {
        files: files
            .iter()
            .map(|f| root().join("testdata/corpus/seed").join(f))
            .collect(),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        revision: revision.map(str::to_string),
    }
}

fn cases() -> Vec<(String, InstallOptions)> {
    let mut cases = Vec::new();
    for profile in ["default", "demo", "minimal", "production"] {
        cases.push((
            format!("profile {profile}"),
            options(&[], &[&format!("profile={profile}")], None),
        ));
    }
    cases.push(("revision canary".into(), options(&[], &[], Some("canary"))));
    for seed in [
        "01-istiooperator-istio-control-plane.yaml",
        "14-istiooperator-unnamed.yaml",
        "15-istiooperator-unnamed.yaml",
        "20-istiooperator-unnamed.yaml",
        "21-istiooperator-unnamed.yaml",
        "22-istiooperator-unnamed.yaml",
    ] {
        cases.push((seed.into(), options(&[seed], &[], None)));
    }
    cases
}

#[test]
fn mizzen_renders_the_chart_as_helm_does() {
    for (name, options) in cases() {
        let (ours, helms) = both(&options);
        assert!(!ours.is_empty(), "{name}: nothing rendered");
        assert_eq!(ours.len(), helms.len(), "{name}: object counts differ");
        for (a, b) in ours.iter().zip(&helms) {
            assert_eq!(
                a, b,
                "{name}: {} {} differs",
                a["kind"], a["metadata"]["name"]
            );
        }
    }
}

#[test]
fn helm_lints_the_chart_and_installs_the_generated_crds() {
    let (ok, out, err) = tool("helm", &["lint", chart().to_str().unwrap(), "--strict"]);
    assert!(ok, "helm lint:\n{out}{err}");
    let (ok, out, err) = tool(
        "helm",
        &["template", "m", chart().to_str().unwrap(), "--include-crds"],
    );
    assert!(ok, "{err}");
    let crds = objects(&out)
        .into_iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .count();
    assert_eq!(crds, common::resource::IstioKind::ALL.len());
}

#[test]
fn generated_manifests_are_valid_kubernetes_objects() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let seed01 = root().join("testdata/corpus/seed/01-istiooperator-istio-control-plane.yaml");
    let runs: Vec<Vec<String>> = vec![
        vec!["--set".into(), "profile=default".into()],
        vec!["--set".into(), "profile=demo".into()],
        vec!["--set".into(), "profile=minimal".into()],
        vec!["--set".into(), "profile=production".into()],
        vec!["--revision".into(), "canary".into()],
        vec!["-f".into(), seed01.display().to_string()],
    ];
    for (i, extra) in runs.iter().enumerate() {
        let mut args = vec!["manifest", "generate"];
        args.extend(extra.iter().map(String::as_str));
        let (code, out, err) = mizzen(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("kind: CustomResourceDefinition"), "CRDs first");
        let file = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&file, out).unwrap();
        files.push(file);
    }
    let paths: Vec<&std::path::Path> = files.iter().map(|f| f.as_path()).collect();
    let (ok, said) = kubernetes_validate(&paths);
    assert!(ok, "{said}");
    // And the validator does refuse a broken Deployment.
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    std::fs::write(
        &broken,
        text.replacen("containerPort: 15010", "containerPort: x15010", 1),
    )
    .unwrap();
    let (ok, _, _) = tool(
        "kubernetes-validate",
        &[
            "--strict",
            "-k",
            "1.35.0",
            "--quiet",
            broken.to_str().unwrap(),
        ],
    );
    assert!(!ok, "a port that is not a number must be refused");
}

#[test]
fn generate_prints_warnings_and_refusals() {
    let seed15 = root().join("testdata/corpus/seed/15-istiooperator-unnamed.yaml");
    let (code, out, err) = mizzen(&[
        "manifest",
        "generate",
        "--skip-crds",
        "-f",
        seed15.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("CustomResourceDefinition"));
    assert!(
        err.contains("Warning:") && err.contains("spec.meshConfig.defaultConfig.tracing"),
        "{err}"
    );
    let (code, _, err) = mizzen(&[
        "manifest",
        "generate",
        "--set",
        "components.ztunnel.enabled=true",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("spec.components.ztunnel.enabled: not supported by Mizzen"),
        "{err}"
    );
}
