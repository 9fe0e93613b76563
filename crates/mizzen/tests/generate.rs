//! `mizzen gen crds`: the committed `deploy/crds/` is what the types generate
//! (CI fails otherwise), and `--check` names what differs.

use std::path::Path;

mod support;

use support::{kubernetes_validate, mizzen};

#[test]
fn the_committed_crds_are_the_generated_ones() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    let files = mizzen::generate::crd_files().expect("the CRDs generate");
    let diffs = mizzen::generate::differences(&dir, &files);
    assert!(
        diffs.is_empty(),
        "deploy/crds is stale; run `just gen` and commit:\n{}",
        diffs.join("\n")
    );
}

#[test]
fn check_names_missing_stale_and_stray_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let (code, _, err) = mizzen(&["gen", "crds", "--out", out, "--check"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("networking.istio.io_virtualservices.yaml: missing"),
        "{err}"
    );
    assert!(err.contains("run `mizzen gen crds --out"), "{err}");

    let (code, written, _) = mizzen(&["gen", "crds", "--out", out]);
    assert_eq!(code, 0);
    assert_eq!(
        written.lines().count(),
        common::resource::IstioKind::ALL.len()
    );
    let (code, said, _) = mizzen(&["gen", "crds", "--out", out, "--check"]);
    assert_eq!(code, 0, "{said}");

    let dr = dir.path().join("networking.istio.io_destinationrules.yaml");
    let text = std::fs::read_to_string(&dr).unwrap();
    std::fs::write(&dr, text.replace("ISTIO_MUTUAL", "MUTUAL_ISTIO")).unwrap();
    std::fs::write(dir.path().join("old.yaml"), "kind: Gone\n").unwrap();
    let (code, _, err) = mizzen(&["gen", "crds", "--out", out, "--check"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("networking.istio.io_destinationrules.yaml: differs"),
        "{err}"
    );
    assert!(err.contains("old.yaml: not a generated CRD"), "{err}");
}

#[test]
fn the_crds_are_valid_kubernetes_objects() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    let files: Vec<_> = mizzen::generate::crd_files()
        .expect("the CRDs generate")
        .into_iter()
        .map(|(name, _)| dir.join(name))
        .collect();
    let paths: Vec<&Path> = files.iter().map(|f| f.as_path()).collect();
    let (ok, said) = kubernetes_validate(&paths);
    assert!(ok, "{said}");
    // The validator does refuse a broken CRD.
    let bad = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let broken = bad.path().join("broken.yaml");
    std::fs::write(&broken, text.replace("scope: Namespaced", "scope: 7")).unwrap();
    let (ok, said) = kubernetes_validate(&[&broken]);
    assert!(!ok, "a CRD with `scope: 7` passed: {said}");
}
