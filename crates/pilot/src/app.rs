//! Pilot as a service: flags, listeners and the run loop.
//!
//! [`App::build`] binds the xDS and HTTP listeners (a port conflict fails at
//! start, naming the flag), registers the metrics and picks the config source
//! (`--source`). With files it loads the config directory once, so that an
//! unreadable `--config-dir` fails fast and the first snapshot is published
//! before any proxy connects; with Kubernetes it builds the API client (in-cluster
//! or `KUBECONFIG`), and the first snapshot follows the API server's initial lists. [`App::run_until`] then
//! serves, side by side: the ADS gRPC service ([`crate::xds::ads`]) on
//! `--xds-addr` (plaintext) and, given a certificate, on `--xds-tls-addr` over
//! mTLS (client certificates from the mesh CA required, each stream limited to
//! proxies of the certificate's namespace); the admin endpoints (`/healthz`, `/ready`, `/metrics`,
//! `/logging`, `/debug/config`) and pilot's `/debug/*` ([`crate::debug`]) on
//! `--http-addr`; and the config controller ([`crate::config`]) that watches the
//! source, debounces and publishes new snapshots. `/ready` turns true with the
//! first published snapshot (in Kubernetes mode: once every watched kind is
//! listed). On shutdown `/ready` turns
//! false, ADS streams are ended with `UNAVAILABLE` (proxies reconnect
//! elsewhere), and the servers drain, bounded by [`DRAIN_TIMEOUT`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use common::istio::types::Duration;
use common::runtime::{Admin, LogArgs, LogHandle, Stop, admin_router, bind};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::config::{
    ConfigController, ConfigError, ConfigOptions, ConfigSource, FileSource, KubeSource,
};
use crate::debug::{self, DebugState};
use crate::metrics::{KubeEventMetrics, Metrics};
use crate::model::ModelHandle;
use crate::xds::ads::{AdsServer, Limits};

/// How long in-flight work may take to finish after shutdown is asked for.
pub const DRAIN_TIMEOUT: StdDuration = StdDuration::from_secs(10);

/// Pilot's flags; every one has an environment-variable twin.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "pilot",
    version,
    about = "Mizzen's control plane: turns Istio config and the service registry into Envoy xDS, served over ADS (SotW and delta)."
)]
pub struct Config {
    /// Where config and the service registry come from: `files` (--config-dir) or
    /// `kubernetes` (the API server, all namespaces: Services, EndpointSlices, Pods,
    /// Namespaces, ServiceAccounts, Secrets and Istio's CRDs; the client comes from
    /// the pod's service account, or KUBECONFIG / ~/.kube/config outside a cluster).
    #[arg(long, env = "PILOT_SOURCE", value_enum, default_value_t = SourceKind::Files)]
    pub source: SourceKind,
    /// Directory of YAML to serve (Istio resources; Kubernetes Service, Endpoints,
    /// EndpointSlice, Pod, Namespace, ServiceAccount, Secret; ServiceEntry,
    /// WorkloadEntry), read recursively and watched for changes. A single file
    /// works too. Several (repeated or comma-separated) are served as one set.
    /// Required with --source files; refused with --source kubernetes.
    #[arg(
        long,
        env = "PILOT_CONFIG_DIR",
        value_delimiter = ',',
        required_if_eq("source", "files")
    )]
    pub config_dir: Vec<PathBuf>,
    /// Address of the plaintext ADS gRPC server
    /// (envoy.service.discovery.v3.AggregatedDiscoveryService).
    #[arg(long, env = "PILOT_XDS_ADDR", default_value = "0.0.0.0:15010")]
    pub xds_addr: SocketAddr,
    /// Address of ADS over mTLS (Istio's 15012), served when --tls-cert-file,
    /// --tls-key-file and --tls-client-ca-file are given. Proxies must present a
    /// certificate from the mesh CA; each gets configuration only for proxies of its
    /// certificate's namespace.
    #[arg(long, env = "PILOT_XDS_TLS_ADDR", default_value = "0.0.0.0:15012")]
    pub xds_tls_addr: SocketAddr,
    /// PEM certificate chain pilot serves on --xds-tls-addr (e.g. one citadel signed).
    #[arg(long, env = "PILOT_TLS_CERT_FILE", requires_all = ["tls_key_file", "tls_client_ca_file"])]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file.
    #[arg(long, env = "PILOT_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM roots that proxies' client certificates must chain to (citadel's
    /// <key-dir>/root-cert.pem).
    #[arg(long, env = "PILOT_TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Address of the HTTP endpoints: /metrics, /healthz, /ready, /logging,
    /// /debug/config, /debug/syncz, /debug/config_dump, /debug/registryz, /debug/configz
    /// (and /debug/sourcez with --source kubernetes).
    #[arg(long, env = "PILOT_HTTP_ADDR", default_value = "0.0.0.0:15014")]
    pub http_addr: SocketAddr,
    /// Quiet period before a config change is applied (Istio's PILOT_DEBOUNCE_AFTER).
    #[arg(long, env = "PILOT_DEBOUNCE_AFTER", default_value = "100ms")]
    pub debounce_after: Duration,
    /// Longest a config change waits while others keep coming (PILOT_DEBOUNCE_MAX).
    #[arg(long, env = "PILOT_DEBOUNCE_MAX", default_value = "10s")]
    pub debounce_max: Duration,
    /// Largest xDS gRPC message accepted or sent, in bytes.
    #[arg(long, env = "PILOT_XDS_MAX_MESSAGE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub xds_max_message_bytes: usize,
    /// Most resource names one xDS request may carry.
    #[arg(long, env = "PILOT_XDS_MAX_RESOURCE_NAMES", default_value_t = 100_000)]
    pub xds_max_resource_names: usize,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Where pilot reads config and the service registry from (`--source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    /// Directories of YAML (`--config-dir`), watched for changes.
    Files,
    /// The Kubernetes API server, watched in all namespaces.
    Kubernetes,
}

impl Config {
    /// The config paths, for logs (`a, b`).
    pub fn dirs(&self) -> String {
        let dirs: Vec<String> = self
            .config_dir
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(", ")
    }

    /// Flags for serving `config_dir` with every other flag at its default.
    pub fn for_dir(config_dir: impl Into<PathBuf>) -> Config {
        Config {
            source: SourceKind::Files,
            config_dir: vec![config_dir.into()],
            xds_addr: SocketAddr::from(([0, 0, 0, 0], 15010)),
            xds_tls_addr: SocketAddr::from(([0, 0, 0, 0], 15012)),
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            http_addr: SocketAddr::from(([0, 0, 0, 0], 15014)),
            debounce_after: Duration::from_std(crate::config::DEFAULT_DEBOUNCE_AFTER),
            debounce_max: Duration::from_std(crate::config::DEFAULT_DEBOUNCE_MAX),
            xds_max_message_bytes: 16 * 1024 * 1024,
            xds_max_resource_names: 100_000,
            log: LogArgs {
                log_format: common::runtime::LogFormat::Text,
                log_level: "info".into(),
            },
        }
    }
}

/// Why pilot could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(#[source] std::io::Error),
    /// Flags that contradict each other.
    #[error("invalid flags: {0}")]
    Flags(String),
    /// The config source could not be read or stopped working.
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    /// No Kubernetes client could be configured for `--source kubernetes`.
    #[error(
        "--source kubernetes: cannot configure a Kubernetes client: {0}; run pilot in a pod (its service account is used) or set KUBECONFIG to a kubeconfig file, or use --source files"
    )]
    Kube(String),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(String),
}

/// A built, not yet running pilot.
pub struct App {
    config: Config,
    xds: TcpListener,
    xds_tls: Option<(TcpListener, tonic::transport::ServerTlsConfig)>,
    http: TcpListener,
    model: ModelHandle,
    ads: AdsServer,
    controller: ConfigController<Box<dyn ConfigSource>>,
    /// The Kubernetes source's per-kind state (`/debug/sourcez`), in that mode.
    kube_status: Option<crate::config::kube::KubeStatus>,
    admin: Admin,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .field("addrs", &self.addrs())
            .finish_non_exhaustive()
    }
}

/// The addresses a built app listens on (useful with port 0 in tests).
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// ADS gRPC, plaintext.
    pub xds: SocketAddr,
    /// ADS gRPC over mTLS, when a certificate was given.
    pub xds_tls: Option<SocketAddr>,
    /// HTTP metrics and debug.
    pub http: SocketAddr,
}

impl App {
    /// Binds the listeners, registers the metrics and picks the source: with
    /// `--source files` publishes the first snapshot from `--config-dir`; with
    /// `--source kubernetes` builds the client (in-cluster config or KUBECONFIG).
    pub async fn build(config: Config) -> Result<App, Error> {
        check_source_flags(&config)?;
        let client = match config.source {
            SourceKind::Files => None,
            SourceKind::Kubernetes => Some(
                kube::Client::try_default()
                    .await
                    .map_err(|e| Error::Kube(e.to_string()))?,
            ),
        };
        App::build_with_source(config, client).await
    }

    /// [`App::build`] with `--source kubernetes` reading through `client` (a mock
    /// API server in tests, or a client an embedder configured).
    pub async fn build_with_kube_client(
        config: Config,
        client: kube::Client,
    ) -> Result<App, Error> {
        check_source_flags(&config)?;
        if config.source != SourceKind::Kubernetes {
            return Err(Error::Flags(
                "a Kubernetes client was given, but --source is not kubernetes".into(),
            ));
        }
        App::build_with_source(config, Some(client)).await
    }

    /// Builds the app reading `--config-dir`, or the cluster of `client`.
    async fn build_with_source(config: Config, client: Option<kube::Client>) -> Result<App, Error> {
        let (after, max) = (config.debounce_after.as_std(), config.debounce_max.as_std());
        if after > max {
            return Err(Error::Flags(format!(
                "--debounce-after ({}) is longer than --debounce-max ({}); make it shorter",
                config.debounce_after, config.debounce_max
            )));
        }
        if config.xds_max_message_bytes < 4096 || config.xds_max_resource_names == 0 {
            return Err(Error::Flags(
                "--xds-max-message-bytes must be at least 4096 and --xds-max-resource-names at least 1".into(),
            ));
        }
        let tls = xds_tls_config(&config)?;
        let xds = bind(config.xds_addr, "--xds-addr")
            .await
            .map_err(Error::Bind)?;
        let xds_tls = match &tls {
            Some(_) => Some(
                bind(config.xds_tls_addr, "--xds-tls-addr")
                    .await
                    .map_err(Error::Bind)?,
            ),
            None => None,
        };
        let http = bind(config.http_addr, "--http-addr")
            .await
            .map_err(Error::Bind)?;
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let options = ConfigOptions {
            debounce_after: after,
            debounce_max: max,
            ..ConfigOptions::default()
        };
        let mut kube_status = None;
        let source: Box<dyn ConfigSource> = match client {
            None => Box::new(FileSource::many(config.config_dir.clone())),
            Some(client) => {
                let source =
                    KubeSource::new(client).with_metrics(KubeEventMetrics::register(&mut registry));
                kube_status = Some(source.status());
                Box::new(source)
            }
        };
        let controller = ConfigController::new(source, options);
        crate::metrics::register_config_rejections(&mut registry, controller.rejection_counter());
        let model = ModelHandle::default();
        let controller = match config.source {
            SourceKind::Files => {
                // Load once now: an unreadable directory fails here, and proxies
                // that connect right after start get the real config.
                let first = model.clone();
                let (controller, loaded) = tokio::task::spawn_blocking(move || {
                    let mut controller = controller;
                    let loaded = controller.reload_once(&first);
                    (controller, loaded)
                })
                .await
                .map_err(|e| Error::Config(ConfigError::ReloadPanicked(e.to_string())))?;
                let reload = loaded?;
                tracing::info!(
                    dir = %config.dirs(),
                    version = ?reload.published,
                    accepted = reload.outcome.accepted,
                    "loaded config"
                );
                controller
            }
            // The API server's lists arrive once the controller runs (it waits
            // for all of them); /ready follows the first snapshot.
            SourceKind::Kubernetes => controller,
        };
        let limits = Limits {
            max_resource_names: config.xds_max_resource_names,
            max_message_bytes: config.xds_max_message_bytes,
            ..Limits::default()
        };
        let ads = AdsServer::new(model.clone(), metrics).with_limits(limits);
        let admin = Admin::new(registry, &config);
        Ok(App {
            config,
            xds,
            xds_tls: xds_tls.zip(tls),
            http,
            model,
            ads,
            controller,
            kube_status,
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
            xds: a(&self.xds),
            xds_tls: self.xds_tls.as_ref().map(|(l, _)| a(l)),
            http: a(&self.http),
        }
    }

    /// The model pilot publishes to (read-only use in tests and embedders).
    pub fn model(&self) -> ModelHandle {
        self.model.clone()
    }

    /// The ADS server (its live connections, for embedders).
    pub fn ads(&self) -> &AdsServer {
        &self.ads
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(common::runtime::shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then drains (at most [`DRAIN_TIMEOUT`]).
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addrs = self.addrs();
        let stop = Stop::new();
        let stopped = || stop.stopped();
        let mut router = admin_router(self.admin.clone())
            .merge(debug::router(DebugState::from_server(&self.ads)));
        if let Some(status) = self.kube_status.clone() {
            router = router.merge(debug::source_router(status));
        }
        let http = axum::serve(self.http, router).with_graceful_shutdown(stopped());
        // The plaintext port runs pilot's own ADS transport; the mTLS port tonic's.
        let grpc = async {
            crate::xds::ads::transport::serve(
                self.xds,
                self.ads.clone(),
                crate::xds::ads::transport::Http2::default(),
                stopped(),
            )
            .await;
            Ok::<(), tonic::transport::Error>(())
        };
        let grpc_tls = match self.xds_tls {
            Some((listener, tls)) => {
                let server = grpc_builder()
                    .tls_config(tls)
                    .map_err(|e| Error::Serve(format!("--xds-tls-addr TLS: {e}")))?
                    .add_service(self.ads.clone().requiring_identity().into_service())
                    .serve_with_incoming_shutdown(
                        common::runtime::grpc_incoming(listener),
                        stopped(),
                    );
                futures::future::Either::Left(server)
            }
            None => futures::future::Either::Right(async { Ok(()) }),
        };
        let grpc = async {
            let (plain, tls) = tokio::join!(grpc, grpc_tls);
            plain.and(tls)
        };
        let config_stop = stop.clone();
        let controller = self.controller;
        let source = controller.describe_source();
        let model = self.model.clone();
        let config_stopped = stopped();
        let config = async move {
            let result = controller.run(model, config_stopped).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, "config source failed; shutting down");
                config_stop.trigger();
            }
            result
        };

        // Ready once a snapshot is published (with files build published the first
        // one; with Kubernetes it follows the initial lists).
        let admin = self.admin.clone();
        let mut versions = self.model.subscribe();
        tokio::spawn(async move {
            if versions.wait_for(|v| *v > 0).await.is_ok() {
                admin.set_ready();
            }
        });
        tracing::info!(xds = %addrs.xds, xds_tls = ?addrs.xds_tls, http = %addrs.http, source = %source, "pilot serving");

        // On shutdown ADS streams end with UNAVAILABLE, so proxies reconnect elsewhere.
        let ads = self.ads.clone();
        self.admin.stop_on(shutdown, &stop, move || ads.close());

        let drain = stopped();
        let http = async {
            let r = http.await;
            tracing::debug!("HTTP server stopped");
            r
        };
        let grpc = async {
            let r = grpc.await;
            tracing::debug!("ADS server stopped");
            r
        };
        let config = async {
            let r = config.await;
            tracing::debug!("config controller stopped");
            r
        };
        let all = async { tokio::join!(http, grpc, config) };
        let (h, g, c) = tokio::select! {
            r = all => r,
            _ = async {
                drain.await;
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "drain took too long; stopping anyway");
                return Ok(());
            }
        };
        h.map_err(|e| Error::Serve(format!("HTTP: {e}")))?;
        g.map_err(|e| Error::Serve(format!("ADS gRPC: {e}")))?;
        c?;
        Ok(())
    }
}

/// `--config-dir` goes with `--source files` only.
fn check_source_flags(config: &Config) -> Result<(), Error> {
    match config.source {
        SourceKind::Files if config.config_dir.is_empty() => Err(Error::Flags(
            "--source files needs --config-dir (PILOT_CONFIG_DIR): the directory of YAML to serve"
                .into(),
        )),
        SourceKind::Kubernetes if !config.config_dir.is_empty() => Err(Error::Flags(format!(
            "--config-dir ({}) cannot be used with --source kubernetes, which reads the API server; drop --config-dir (and PILOT_CONFIG_DIR), or use --source files",
            config.dirs()
        ))),
        _ => Ok(()),
    }
}

/// The gRPC server settings both xDS ports share.
fn grpc_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(StdDuration::from_secs(30)))
        .http2_keepalive_timeout(Some(StdDuration::from_secs(10)))
        .initial_connection_window_size(Some(4 << 20))
        .initial_stream_window_size(Some(1 << 20))
        .max_concurrent_streams(Some(128))
}

/// The mTLS port's TLS settings from `--tls-cert-file`, `--tls-key-file` and
/// `--tls-client-ca-file`, or `None` when none is given (the port is then off).
fn xds_tls_config(config: &Config) -> Result<Option<tonic::transport::ServerTlsConfig>, Error> {
    let (Some(cert), Some(key), Some(ca)) = (
        &config.tls_cert_file,
        &config.tls_key_file,
        &config.tls_client_ca_file,
    ) else {
        tracing::info!("no --tls-cert-file: xDS over mTLS (--xds-tls-addr) is off");
        return Ok(None);
    };
    let read = |path: &PathBuf, flag: &str| {
        std::fs::read(path).map_err(|e| Error::Flags(format!("{flag} {}: {e}", path.display())))
    };
    let (cert_pem, key_pem, ca_pem) = (
        read(cert, "--tls-cert-file")?,
        read(key, "--tls-key-file")?,
        read(ca, "--tls-client-ca-file")?,
    );
    // Check the material here, so a bad file fails the start with its flag.
    common::tls::server_config(&cert_pem, &key_pem)
        .map_err(|e| Error::Flags(format!("--tls-cert-file/--tls-key-file: {e}")))?;
    common::tls::certs_from_pem(&ca_pem, "--tls-client-ca-file")
        .map_err(|e| Error::Flags(e.to_string()))?;
    Ok(Some(
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert_pem, key_pem))
            .client_ca_root(tonic::transport::Certificate::from_pem(ca_pem)),
    ))
}
