//! `bookinfo SERVICE`: runs one of bookinfo's services (see the library).

use std::net::SocketAddr;

use clap::Parser;

use bookinfo::{App, Config, Service};

/// Runs one of Istio's bookinfo services: productpage, details, reviews
/// (v1, v2, v3) or ratings. Every answer names the service and version that
/// served it in `x-served-by`.
#[derive(Debug, Parser)]
#[command(name = "bookinfo", version)]
struct Args {
    /// The service to run.
    #[arg(value_enum)]
    service: Service,
    /// Version label; for reviews it picks the behaviour (v1: no ratings,
    /// v2: black stars, v3: red stars).
    #[arg(
        long = "service-version",
        env = "SERVICE_VERSION",
        default_value = "v1"
    )]
    service_version: String,
    /// Address to listen on.
    #[arg(long, env = "BOOKINFO_LISTEN", default_value = "0.0.0.0:9080")]
    listen: SocketAddr,
    /// Base URL of details (productpage calls it).
    #[arg(long, env = "DETAILS_URL", default_value = "http://details:9080")]
    details: String,
    /// Base URL of reviews (productpage calls it).
    #[arg(long, env = "REVIEWS_URL", default_value = "http://reviews:9080")]
    reviews: String,
    /// Base URL of ratings (reviews v2 and v3 and productpage's API call it).
    #[arg(long, env = "RATINGS_URL", default_value = "http://ratings:9080")]
    ratings: String,
    /// Be a broken instance: answer every request (but /metrics and /health)
    /// with this status, e.g. 503.
    #[arg(long, env = "BOOKINFO_FAIL_WITH", value_name = "STATUS", value_parser = clap::value_parser!(u16).range(400..600))]
    fail_with: Option<u16>,
    /// Be a slow instance: hold every request (but /metrics and /health) this
    /// long before answering, in Go's syntax: 7s, 500ms.
    #[arg(long, env = "BOOKINFO_DELAY", value_name = "DURATION", value_parser = common::runtime::duration_flag)]
    delay: Option<std::time::Duration>,
    /// Connect every upstream call to this IP (at the URL's port), keeping
    /// the URL's host in the request, as `curl --connect-to` does: for a
    /// sidecar that captures nothing and listens there (`mizzen run
    /// --no-capture`).
    #[arg(long, env = "BOOKINFO_CONNECT_TO", value_name = "IP")]
    connect_to: Option<std::net::IpAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = Config::new(args.service, &args.service_version, args.listen);
    config.details = args.details;
    config.reviews = args.reviews;
    config.ratings = args.ratings;
    config.fail_with = args.fail_with;
    config.delay = args.delay;
    config.connect_to = args.connect_to;
    let served_by = config.served_by();
    let app = App::build(config).await?;
    tracing::info!(addr = %app.addr(), service = %served_by, "bookinfo: serving");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    app.run_until(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    })
    .await?;
    Ok(())
}
