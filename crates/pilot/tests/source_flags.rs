//! The `pilot` binary's choice of config source (`--source files|kubernetes`):
//! what it refuses and what it says, run as a user runs it. The Kubernetes
//! source itself is tested against a fake API server in
//! `src/config/kube/tests.rs`.

use std::process::{Command, Output};

fn pilot(args: &[&str], env: &[(&str, &str)]) -> Output {
    let home = tempfile::tempdir().expect("temp home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pilot"));
    cmd.args(args)
        .args(["--xds-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        // No cluster: no in-cluster variables, no ~/.kube/config.
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env_remove("KUBECONFIG")
        .env_remove("PILOT_SOURCE")
        .env_remove("PILOT_CONFIG_DIR")
        .env("HOME", home.path())
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("pilot runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn kubernetes_without_a_cluster_says_what_to_set() {
    let out = pilot(
        &["--source", "kubernetes"],
        &[("KUBECONFIG", "/nonexistent/kubeconfig")],
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot configure a Kubernetes client"),
        "{err}"
    );
    assert!(err.contains("set KUBECONFIG"), "{err}");
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
}

#[test]
fn kubernetes_refuses_a_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_str().unwrap();
    let out = pilot(&["--config-dir", dir], &[("PILOT_SOURCE", "kubernetes")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot be used with --source kubernetes"),
        "{err}"
    );
}

#[test]
fn files_need_a_config_dir() {
    let out = pilot(&[], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("--source files needs --config-dir"), "{err}");

    let out = pilot(&["--source", "files"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--config-dir"), "{}", stderr(&out));
}

#[test]
fn help_documents_the_source() {
    let out = pilot(&["--help"], &[]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--source <SOURCE>",
        "PILOT_SOURCE",
        "kubernetes",
        "KUBECONFIG",
    ] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
}
