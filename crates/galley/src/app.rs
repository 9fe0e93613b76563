//! Galley as a service: configuration, listeners, and the run loop.
//!
//! `App::build` binds every listener (so a port conflict fails at start, naming the
//! flag) and prepares TLS (a certificate from files is reloaded when they change,
//! `common::tls::ReloadingCert`); `App::run` serves the gRPC validation API, the HTTPS
//! admission webhook and the HTTP admin endpoints until SIGTERM, then drains.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::runtime::{Admin, LogArgs, LogHandle, Stop, admin_router, bind};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::grpc::ValidationService;
use crate::metrics::Metrics;

/// Galley's flags; every one has an environment-variable twin.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "galley",
    version,
    about = "Mizzen's configuration validation service: a gRPC Validate API and a Kubernetes validating admission webhook."
)]
pub struct Config {
    /// Address of the gRPC validation API (mizzen.galley.v1.Validation).
    #[arg(long, env = "GALLEY_GRPC_ADDR", default_value = "0.0.0.0:15019")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTPS admission webhook (path /validate).
    #[arg(long, env = "GALLEY_WEBHOOK_ADDR", default_value = "0.0.0.0:15017")]
    pub webhook_addr: SocketAddr,
    /// Address of the HTTP admin endpoints: /metrics, /healthz, /ready, /logging, /debug/config.
    #[arg(long, env = "GALLEY_HTTP_ADDR", default_value = "0.0.0.0:15014")]
    pub http_addr: SocketAddr,
    /// PEM certificate chain for the webhook, re-read (with --tls-key-file) on the
    /// first handshake after either file changes, so a renewed certificate is
    /// served without a restart (in a cluster: the Secret citadel writes, mounted at
    /// /var/run/secrets/mizzen/webhook/tls.crt). Without it (and --tls-key-file), a
    /// self-signed certificate for --tls-hosts is generated at start.
    #[arg(long, env = "GALLEY_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for the webhook (in a cluster:
    /// /var/run/secrets/mizzen/webhook/tls.key).
    #[arg(long, env = "GALLEY_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Names for the generated self-signed webhook certificate (comma-separated).
    #[arg(
        long,
        env = "GALLEY_TLS_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,galley.istio-system.svc"
    )]
    pub tls_hosts: Vec<String>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Why galley could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(#[source] std::io::Error),
    /// The webhook's TLS material could not be used.
    #[error("webhook TLS: {0}")]
    Tls(#[from] common::tls::TlsError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(String),
}

/// A built, not yet running galley.
pub struct App {
    grpc: TcpListener,
    webhook: TcpListener,
    http: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    metrics: Metrics,
    admin: Admin,
}

/// The addresses a built app listens on (useful with port 0 in tests).
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// gRPC API.
    pub grpc: SocketAddr,
    /// HTTPS webhook.
    pub webhook: SocketAddr,
    /// HTTP admin.
    pub http: SocketAddr,
}

impl App {
    /// Binds the listeners and prepares TLS and metrics.
    pub async fn build(config: Config) -> Result<App, Error> {
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(c), Some(k)) => common::tls::server_config_from_files(c, k)?,
            _ => {
                let (cert, key) = common::tls::self_signed(&config.tls_hosts)?;
                tracing::warn!(hosts = ?config.tls_hosts, "no --tls-cert-file given: serving the webhook with a generated self-signed certificate");
                common::tls::server_config(cert.as_bytes(), key.as_bytes())?
            }
        };
        let grpc = bind(config.grpc_addr, "--grpc-addr")
            .await
            .map_err(Error::Bind)?;
        let webhook = bind(config.webhook_addr, "--webhook-addr")
            .await
            .map_err(Error::Bind)?;
        let http = bind(config.http_addr, "--http-addr")
            .await
            .map_err(Error::Bind)?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let admin = Admin::new(registry, &config);
        Ok(App {
            grpc,
            webhook,
            http,
            tls,
            metrics,
            admin,
        })
    }

    /// Lets `/logging` change the level through `handle`.
    pub fn with_log_handle(mut self, handle: LogHandle) -> Self {
        self.admin.set_log_handle(handle);
        self
    }

    /// Where the app listens.
    pub fn addrs(&self) -> Addrs {
        let a = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
        Addrs {
            grpc: a(&self.grpc),
            webhook: a(&self.webhook),
            http: a(&self.http),
        }
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(common::runtime::shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addrs = self.addrs();
        let stop = Stop::new();
        let stopped = || stop.stopped();
        let http = axum::serve(self.http, admin_router(self.admin.clone()))
            .with_graceful_shutdown(stopped());
        let webhook = common::runtime::serve_tls(
            self.webhook,
            self.tls.clone(),
            crate::webhook::router(self.metrics.clone()),
            stopped(),
        );
        let grpc = tonic::transport::Server::builder()
            .add_service(ValidationService::new(self.metrics.clone()).into_server())
            .serve_with_incoming_shutdown(common::runtime::grpc_incoming(self.grpc), stopped());
        tracing::info!(grpc = %addrs.grpc, webhook = %addrs.webhook, http = %addrs.http, "galley serving");
        self.admin.set_ready();
        self.admin.stop_on(shutdown, &stop, || {});
        let (h, w, g) = tokio::join!(http, webhook, grpc);
        h.map_err(|e| Error::Serve(format!("admin HTTP: {e}")))?;
        w.map_err(|e| Error::Serve(format!("webhook: {e}")))?;
        g.map_err(|e| Error::Serve(format!("gRPC: {e}")))?;
        Ok(())
    }
}
