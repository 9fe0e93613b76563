//! The `pilot` binary: flags in, `App` out.

use clap::Parser;

/// mimalloc, not glibc's malloc: pilot allocates and frees many small objects
/// per pushed proxy, on every worker thread (BENCHMARKS.md, "Pilot xDS").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = pilot::app::Config::parse();
    let log = common::runtime::init_logging(&config.log)?;
    tracing::info!(?config, "starting pilot");
    let app = pilot::app::App::build(config).await?.with_log_handle(log);
    app.run().await?;
    tracing::info!("pilot stopped");
    Ok(())
}
