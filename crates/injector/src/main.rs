//! The `injector` binary: flags in, `App` out.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = injector::app::Config::parse();
    let log = common::runtime::init_logging(&config.log)?;
    tracing::info!(?config, "starting injector");
    let app = injector::app::App::build(config)
        .await?
        .with_log_handle(log);
    app.run().await?;
    Ok(())
}
