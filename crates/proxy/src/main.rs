//! The `proxy` binary: Envoy-style flags in, bootstrap loaded and checked. The data
//! plane is not built yet, so after a good bootstrap it says so and exits 2.

use std::process::ExitCode;

use clap::Parser;
use proxy::bootstrap::Bootstrap;
use proxy::config::Config;

fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(err) = common::runtime::init_logging(&config.log_args()) {
        eprintln!("proxy: {err}");
        return ExitCode::FAILURE;
    }
    tracing::info!(?config, "starting proxy");
    let bootstrap = match Bootstrap::from_config(&config) {
        Ok(b) => b,
        Err(err) => {
            eprintln!("proxy: {err}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &bootstrap.warnings {
        tracing::warn!("{warning}");
    }
    let summary = bootstrap.summary();
    tracing::info!(workers = config.workers(), "bootstrap loaded: {summary}");
    eprintln!(
        "proxy: bootstrap ok ({summary}; {} warning(s)); the data plane is not built yet",
        bootstrap.warnings.len()
    );
    ExitCode::from(2)
}
