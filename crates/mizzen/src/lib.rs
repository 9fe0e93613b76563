//! `mizzen`: the command users type, Istio's `istioctl` counterpart.
//!
//! It owns the command line: flags, output formats, exit statuses. The work is done
//! by the service libraries it composes (galley's checks, citadel's ledger) or, for
//! `proxy-status` and `proxy-config`, by pilot's debug API over HTTP. A
//! command runs top-down: [`cli`] parses flags → [`run`] dispatches → a command
//! module such as [`check`] or [`ca`] loads its inputs, asks the library, and prints.

pub mod ca;
pub mod check;
pub mod cli;
pub mod demo;
pub mod generate;
pub mod install;
pub mod kube_inject;
pub mod manifest;
pub mod pod;
pub mod proxy;
pub mod run;
pub mod table;
pub mod token;
pub mod up;

use std::io::Write;

use cli::{Cli, Command};

/// Exit status of a command that found no errors.
pub const EXIT_OK: u8 = 0;
/// Exit status of `validate` when the input has errors (as `istioctl validate`).
pub const EXIT_INVALID: u8 = 1;
/// Exit status of a usage problem (bad flag value, unreadable input).
pub const EXIT_USAGE: u8 = 2;
/// Exit status of `analyze` when messages reach `--failure-threshold` (as
/// `istioctl analyze`).
pub const EXIT_ANALYZE_ISSUES: u8 = 79;

/// The runtime of a long-running command (`up`, `run`, `demo`): two workers,
/// named after the command.
pub(crate) fn runtime(command: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name(format!("mizzen-{command}"))
        .build()
}

/// Runs a parsed command line, writing results to `out` and progress and summaries
/// to `err`; returns the exit status.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let result = match cli.command {
        Command::Validate(args) => check::validate(&args, out, err),
        Command::Analyze(args) => check::analyze(&args, out, err),
        Command::Ca(args) => return ca::run(&args, out, err),
        Command::Token(args) => return token::run(&args, out, err),
        Command::ProxyStatus(args) => return proxy::status(&args, out, err),
        Command::ProxyConfig(args) => return proxy::config(&args, out, err),
        Command::Up(args) => return up::run(&args, err),
        Command::Run(args) => return run::run(&args, err),
        Command::Demo(args) => return demo::run(&args, err),
        Command::Gen(args) => return generate::run(&args, out, err),
        Command::Manifest(args) => return manifest::run(&args, out, err),
        Command::Install(args) => return install::run_install(&args, err),
        Command::Uninstall(args) => return install::run_uninstall(&args, err),
        Command::KubeInject(args) => return kube_inject::run(&args, out, err),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "Error: {e}");
            EXIT_USAGE
        }
    }
}
