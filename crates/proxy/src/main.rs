//! The `proxy` binary: Envoy-style flags in, then [`proxy::app::App`] runs until
//! SIGTERM, Ctrl-C or `POST /quitquitquit` on the admin (or status) address. The bootstrap is
//! read by a child process of the same binary ([`proxy::bootstrap::isolated`]). The tokio
//! runtime gets `--concurrency` worker threads. `proxy init` instead installs the
//! traffic capture rules ([`proxy::init`]) and exits; `proxy agent` serves the
//! workload certificate to a stock Envoy over SDS ([`proxy::agent`]) until
//! SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use proxy::app::App;
use proxy::config::{Cli, Config};

fn main() -> ExitCode {
    match Cli::parse() {
        Cli::Run(config) => run(config),
        Cli::Init(config) => init(&config),
        Cli::Agent(config) => agent(config),
        Cli::Sidecar(config) => sidecar(&config),
        Cli::Wait(config) => wait(&config),
    }
}

/// `proxy sidecar`: the bootstrap from the pod, then the proxy. The bootstrap
/// reader (a child process with the same arguments) only derives the flags.
fn sidecar(config: &proxy::sidecar::Config) -> ExitCode {
    if !proxy::bootstrap::isolated::is_child()
        && let Err(err) = config.write_bootstrap(std::env::vars())
    {
        eprintln!("proxy sidecar: {err}");
        return ExitCode::FAILURE;
    }
    run(config.run_config())
}

/// `proxy wait`: 0 once ready, 1 with the reason on timeout.
fn wait(config: &proxy::sidecar::WaitConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("proxy wait: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(proxy::sidecar::wait(config)) {
        Ok(took) => {
            println!(
                "proxy wait: the sidecar is ready ({} after {took:.1?})",
                config.url
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("proxy wait: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `proxy agent`: serves SDS on its socket until SIGTERM or Ctrl-C.
fn agent(config: proxy::agent::Config) -> ExitCode {
    let _log = match common::runtime::init_logging(&config.log_args()) {
        Ok(log) => log,
        Err(err) => {
            eprintln!("proxy agent: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(?config, "starting proxy agent");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("proxy-agent")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("proxy agent: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(proxy::agent::run(
        config,
        common::runtime::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proxy agent: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `proxy init`: prints what it did (or the rules, with `--dry-run`).
fn init(config: &proxy::init::Config) -> ExitCode {
    match proxy::init::run(config) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("proxy init: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> ExitCode {
    if proxy::bootstrap::isolated::is_child() {
        return match proxy::bootstrap::isolated::report(&config, &mut std::io::stdout().lock()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("proxy: cannot write the bootstrap report: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let log = match common::runtime::init_logging(&config.log_args()) {
        Ok(log) => log,
        Err(err) => {
            eprintln!("proxy: {err}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(?config, "starting proxy");
    // One worker: a single-threaded runtime on the main thread (Envoy's one
    // event loop), without the work-stealing scheduler's cross-thread cost.
    let mut builder = if config.workers() == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.workers());
        b
    };
    let runtime = match builder.thread_name("proxy-worker").enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("proxy: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        // Read in a child process: Envoy's API descriptors never enter this one.
        let bootstrap = proxy::bootstrap::isolated::read(&config)?;
        App::with_bootstrap(config, bootstrap)
            .await?
            .with_log_handle(log)
            .run_until(common::runtime::shutdown_signal())
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proxy: {err}");
            ExitCode::FAILURE
        }
    }
}
