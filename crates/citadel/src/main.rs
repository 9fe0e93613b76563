//! The `citadel` binary: flags in, `App` out.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = citadel::app::Config::parse();
    let log = common::runtime::init_logging(&config.log)?;
    tracing::info!(?config, "starting citadel");
    let app = citadel::app::App::build(config).await?.with_log_handle(log);
    app.run().await?;
    Ok(())
}
