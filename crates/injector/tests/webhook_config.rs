//! The MutatingWebhookConfigurations `injector::webhook_config` writes for the
//! Helm chart are valid for Kubernetes 1.35 (`kubernetes-validate --strict`;
//! the test fails, saying to run scripts/setup, when it is not installed).

use injector::webhook_config::{ServiceRef, configuration};

#[test]
fn the_webhook_configurations_are_valid_kubernetes_objects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhooks.yaml");
    let canary = ServiceRef {
        name: "injector-canary".into(),
        ..ServiceRef::default()
    };
    let docs = [
        configuration("default", &ServiceRef::default(), Some("Q0EgYnVuZGxl")),
        configuration("canary", &canary, None),
    ]
    .map(|c| serde_json::to_string_pretty(&c).unwrap());
    std::fs::write(&file, docs.join("\n---\n")).unwrap();
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", "-k", "1.35.0", "--quiet"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "kubernetes-validate is not on PATH ({e}): run scripts/setup, or `python3 -m pip install 'kubernetes-validate==1.37.*'`"
            )
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
