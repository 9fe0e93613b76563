//! What the mizzen integration tests share: the repository's root, the CLI run
//! in-process or as the built binary, and the external checkers (helm,
//! hadolint, shellcheck, kubernetes-validate) that scripts/setup installs.
//! Each test binary uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::Parser;
use mizzen::cli::Cli;

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `mizzen ARGS` in-process: exit status, stdout, stderr.
pub fn mizzen(args: &[&str]) -> (u8, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("mizzen").chain(args.iter().copied()))
        .expect("the flags parse");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = mizzen::run(cli, &mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Runs the built `mizzen` binary in the repository's root.
pub fn mizzen_binary(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mizzen"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("mizzen runs")
}

/// Runs a checker in the repository's root (with `MIZZEN_BIN`, this build's
/// CLI): whether it succeeded, stdout, stderr. Panics saying how to install it
/// when it is not on PATH: a missing tool fails the test, never skips it.
pub fn tool(name: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(name)
        .args(args)
        .current_dir(repo())
        .env("MIZZEN_BIN", env!("CARGO_BIN_EXE_mizzen"))
        .output()
        .unwrap_or_else(|e| {
            panic!("{name} is not on PATH ({e}): run scripts/setup, which installs it from PyPI")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `kubernetes-validate --strict` against Kubernetes 1.35's schemas: whether
/// every file passed, and what it said.
pub fn kubernetes_validate(files: &[&Path]) -> (bool, String) {
    let mut args = vec!["--strict", "-k", "1.35.0", "--quiet"];
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(names.iter().map(String::as_str));
    let (ok, out, err) = tool("kubernetes-validate", &args);
    (ok, format!("{out}{err}"))
}
