//! The `galley` binary: flags in, `App` out.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = galley::app::Config::parse();
    let log = common::runtime::init_logging(&config.log)?;
    tracing::info!(?config, "starting galley");
    let app = galley::app::App::build(config).await?.with_log_handle(log);
    app.run().await?;
    Ok(())
}
