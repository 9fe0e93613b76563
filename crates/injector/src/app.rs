//! The injector as a service: configuration, listeners, and the run loop.
//!
//! `App::build` reads the values file, decides native sidecars
//! (`--native-sidecars auto` asks the API server once, [`crate::version`]),
//! loads the webhook certificate ([`crate::tls::ReloadingCert`]) and binds
//! both listeners, so a bad file or a port conflict fails at start naming the
//! flag; `App::run` serves the HTTPS webhook and the HTTP admin endpoints
//! (`/healthz`, `/ready`, `/metrics`, `/logging`, `/debug/config`) until
//! SIGTERM, then drains.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use common::runtime::{Admin, LogArgs, LogHandle, Stop, admin_router, bind};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::options::{self, Options, Values};
use crate::version::NativeSidecars;
use crate::webhook::Metrics;

/// The injector's flags; every one has an environment-variable twin.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "injector",
    version,
    about = "Mizzen's sidecar injector: a Kubernetes mutating admission webhook (POST /inject) \
             that adds istio-init and istio-proxy to pods, with Istio's selection and annotations."
)]
pub struct Config {
    /// Address of the HTTPS admission webhook (path /inject).
    #[arg(long, env = "INJECTOR_WEBHOOK_ADDR", default_value = "0.0.0.0:15017")]
    pub webhook_addr: SocketAddr,
    /// Address of the HTTP admin endpoints: /healthz, /ready, /metrics,
    /// /logging, /debug/config.
    #[arg(long, env = "INJECTOR_HTTP_ADDR", default_value = "0.0.0.0:15014")]
    pub http_addr: SocketAddr,
    /// PEM certificate chain of the webhook; re-read when it changes (citadel
    /// renews the Secret injector-webhook-tls mounted here).
    #[arg(
        long,
        env = "INJECTOR_TLS_CERT_FILE",
        default_value = "/var/run/secrets/mizzen/webhook/tls.crt"
    )]
    pub tls_cert_file: PathBuf,
    /// PEM private key of the webhook; re-read with the certificate.
    #[arg(
        long,
        env = "INJECTOR_TLS_KEY_FILE",
        default_value = "/var/run/secrets/mizzen/webhook/tls.key"
    )]
    pub tls_key_file: PathBuf,
    /// This injector's revision (Istio's `istio.io/rev`); without it, the
    /// default revision. It is written into each pod's sidecar.istio.io/status.
    #[arg(long, env = "INJECTOR_REVISION")]
    pub revision: Option<String>,
    /// Registry of Mizzen's images; the sidecar image is <hub>/proxy:<tag>.
    #[arg(long, env = "INJECTOR_HUB", default_value = options::DEFAULT_HUB)]
    pub hub: String,
    /// Tag of Mizzen's images.
    #[arg(long, env = "INJECTOR_TAG", default_value = options::DEFAULT_TAG)]
    pub tag: String,
    /// The sidecar image in full, instead of --hub and --tag.
    #[arg(long, env = "INJECTOR_PROXY_IMAGE", conflicts_with_all = ["hub", "tag"])]
    pub proxy_image: Option<String>,
    /// Pilot's ADS address as sidecars dial it (a DNS name and port).
    #[arg(long, env = "INJECTOR_DISCOVERY_ADDRESS", default_value = options::DEFAULT_DISCOVERY_ADDRESS)]
    pub discovery_address: String,
    /// Citadel's address as sidecars dial it.
    #[arg(long, env = "INJECTOR_CA_ADDRESS", default_value = options::DEFAULT_CA_ADDRESS)]
    pub ca_address: String,
    /// The mesh's trust domain.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Native sidecars (Kubernetes >= 1.28): `auto` asks the API server's
    /// version once at start (in-cluster config or kubeconfig) and uses
    /// native sidecars when none is reachable, saying so.
    #[arg(long, env = "INJECTOR_NATIVE_SIDECARS", value_enum, default_value_t = NativeSidecars::Auto)]
    pub native_sidecars: NativeSidecars,
    /// Helm-style values (Istio's values.global.proxy.* and
    /// meshConfig.defaultConfig.*) with the mesh-wide sidecar defaults.
    #[arg(long, env = "INJECTOR_VALUES", value_name = "FILE")]
    pub values: Option<PathBuf>,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Why the injector could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(#[source] std::io::Error),
    /// The webhook's certificate could not be used.
    #[error(
        "webhook TLS (--tls-cert-file, --tls-key-file): {0}; in a cluster citadel writes the \
         Secret injector-webhook-tls mounted there"
    )]
    Tls(#[from] common::tls::TlsError),
    /// The values file was refused.
    #[error(transparent)]
    Values(#[from] options::ValuesError),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(String),
}

/// A built, not yet running injector.
pub struct App {
    webhook: TcpListener,
    http: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    options: Arc<Options>,
    metrics: Metrics,
    admin: Admin,
}

/// The addresses a built app listens on (useful with port 0 in tests).
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// HTTPS webhook.
    pub webhook: SocketAddr,
    /// HTTP admin.
    pub http: SocketAddr,
}

impl Config {
    /// The injection options of these flags, with `native` decided and
    /// `values` read.
    pub fn options(&self, native: bool, values: Values) -> Options {
        Options {
            revision: self
                .revision
                .clone()
                .unwrap_or_else(|| options::DEFAULT_REVISION.into()),
            proxy_image: self
                .proxy_image
                .clone()
                .unwrap_or_else(|| options::image(&self.hub, &self.tag)),
            discovery_address: self.discovery_address.clone(),
            ca_address: self.ca_address.clone(),
            trust_domain: self.trust_domain.clone(),
            native_sidecars: native,
            values,
        }
    }
}

impl App {
    /// Reads the values and certificate, decides native sidecars, binds.
    pub async fn build(config: Config) -> Result<App, Error> {
        let values = match &config.values {
            None => Values::default(),
            Some(path) => {
                let (values, warnings) = Values::from_file(path)?;
                for w in warnings {
                    tracing::warn!("{w}");
                }
                values
            }
        };
        let client = if config.native_sidecars == NativeSidecars::Auto {
            kube::Client::try_default().await.map_err(|e| e.to_string())
        } else {
            Err(String::new())
        };
        let native = crate::version::resolve(config.native_sidecars, client).await;
        let options = Arc::new(config.options(native, values));
        let tls = crate::tls::ReloadingCert::new(&config.tls_cert_file, &config.tls_key_file)?
            .server_config();
        let webhook = bind(config.webhook_addr, "--webhook-addr")
            .await
            .map_err(Error::Bind)?;
        let http = bind(config.http_addr, "--http-addr")
            .await
            .map_err(Error::Bind)?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let admin = Admin::new(registry, &(&config, &options));
        Ok(App {
            webhook,
            http,
            tls,
            options,
            metrics,
            admin,
        })
    }

    /// Lets `/logging` change the level through `handle`.
    pub fn with_log_handle(mut self, handle: LogHandle) -> Self {
        self.admin.set_log_handle(handle);
        self
    }

    /// The injection options in effect.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Where the app listens.
    pub fn addrs(&self) -> Addrs {
        let a = |l: &TcpListener| l.local_addr().expect("bound listener has an address");
        Addrs {
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
        let http = axum::serve(self.http, admin_router(self.admin.clone()))
            .with_graceful_shutdown(stop.stopped());
        let webhook = common::runtime::serve_tls(
            self.webhook,
            self.tls.clone(),
            crate::webhook::router(self.options.clone(), self.metrics.clone()),
            stop.stopped(),
        );
        tracing::info!(webhook = %addrs.webhook, http = %addrs.http, revision = %self.options.revision, native_sidecars = self.options.native_sidecars, "injector serving");
        self.admin.set_ready();
        self.admin.stop_on(shutdown, &stop, || {});
        let (h, w) = tokio::join!(http, webhook);
        h.map_err(|e| Error::Serve(format!("admin HTTP: {e}")))?;
        w.map_err(|e| Error::Serve(format!("webhook: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn flags_have_the_contracts_defaults() {
        Config::command().debug_assert();
        let c = Config::try_parse_from(["injector"]).unwrap();
        assert_eq!(c.webhook_addr.port(), 15017);
        assert_eq!(c.http_addr.port(), 15014);
        assert_eq!(
            c.tls_cert_file,
            PathBuf::from("/var/run/secrets/mizzen/webhook/tls.crt")
        );
        assert_eq!(c.native_sidecars, NativeSidecars::Auto);
        let o = c.options(true, Values::default());
        assert_eq!(o.revision, "default");
        assert_eq!(
            o.proxy_image,
            format!("docker.io/mizzen/proxy:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(o.discovery_address, "pilot.istio-system.svc:15010");
        assert_eq!(o.ca_address, "citadel.istio-system.svc:15012");
        let c = Config::try_parse_from([
            "injector",
            "--revision",
            "canary",
            "--proxy-image",
            "reg.example/p:1",
            "--native-sidecars",
            "false",
        ])
        .unwrap();
        let o = c.options(false, Values::default());
        assert_eq!(
            (o.revision.as_str(), o.proxy_image.as_str()),
            ("canary", "reg.example/p:1")
        );
        let err = Config::try_parse_from(["injector", "--proxy-image", "a", "--hub", "b"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--hub"), "{err}");
    }
}
