//! The proxy as a service: bootstrap in, ADS client and admin listener out.
//!
//! [`App::build`] loads the bootstrap ([`Bootstrap::from_config`]), logs its
//! warnings, turns `dynamic_resources.ads_config` into an [`XdsConfig`] (pilot's
//! mTLS port when the ADS cluster has a TLS transport socket, see
//! [`crate::xds::tls`]; a Unix socket is refused) and binds
//! the admin listener at `admin.address`, so a bad file or a port conflict fails
//! at start with the field to change. [`App::run_until`] then starts the xDS
//! client (which keeps the last good config in the [`XdsStore`]) and serves
//! Envoy's admin endpoints ([`crate::admin`]) until the shutdown future resolves
//! or `POST /quitquitquit` is called; the server then reports `DRAINING`, the
//! xDS client is stopped and the admin server drains, bounded by
//! [`DRAIN_TIMEOUT`]. Without `ads_config` the proxy runs on its static
//! resources only and is `LIVE` at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::runtime::{LogHandle, Stop};
use tokio::net::TcpListener;

use crate::admin::{self, Admin};
use crate::bootstrap::{AdsTarget, Bootstrap, BootstrapError, Endpoint};
use crate::config::Config;
use crate::dataplane::Statics;
use crate::identity::{CertManager, IdentityConfig, TokenSource};
use crate::secrets::Secrets;
use crate::server::{self, DataPath};
use crate::xds::tls::XdsTls;
use crate::xds::{self, Handlers, XdsConfig, XdsStore};

/// How long the admin server may take to finish in-flight requests at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the proxy could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bootstrap file could not be read or is refused.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The ADS cluster's endpoint is a Unix domain socket.
    #[error(
        "bootstrap field `static_resources.clusters[{cluster}].load_assignment`: the ADS server \
         is the unix socket {}; unix socket ADS not supported yet: point the ADS cluster at \
         pilot's TCP address (socket_address, e.g. port 15010)",
        path.display()
    )]
    AdsPipe {
        /// The ADS cluster's name.
        cluster: String,
        /// The socket path.
        path: std::path::PathBuf,
    },
    /// The ADS cluster's TLS settings cannot be honoured.
    #[error(
        "bootstrap field `static_resources.clusters[{cluster}].transport_socket.typed_config.{reason}"
    )]
    AdsTls {
        /// The ADS cluster's name.
        cluster: String,
        /// The field under the `UpstreamTlsContext` and what is wrong with it.
        reason: String,
    },
    /// The admin listener could not be bound.
    #[error(
        "cannot listen on {addr} for the admin interface (bootstrap field `admin.address`): \
         {source}; choose another address or port there, or free this one"
    )]
    AdminBind {
        /// The address from the bootstrap.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A status listener could not be bound.
    #[error("cannot listen on {addr} ({flag}): {source}; choose another address or free this one")]
    StatusBind {
        /// The address.
        addr: SocketAddr,
        /// The flag that asked for it.
        flag: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The access log file cannot be opened.
    #[error("cannot open the access log {} (--access-log): {source}", path.display())]
    AccessLog {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The workload identity cannot be set up from the flags.
    #[error("{0}")]
    Identity(String),
    /// The admin server failed while running.
    #[error("the admin server on {addr} failed: {source}")]
    AdminServe {
        /// The admin address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A built, not yet running proxy.
pub struct App {
    config: Config,
    bootstrap: Bootstrap,
    xds: Option<XdsConfig>,
    handlers: Handlers,
    store: XdsStore,
    data_path: Arc<DataPath>,
    identity: Option<Arc<CertManager>>,
    admin_listener: Option<TcpListener>,
    status_listener: Option<TcpListener>,
    health_listener: Option<TcpListener>,
    prometheus_listener: Option<TcpListener>,
    log: Option<LogHandle>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("config", &self.config)
            .field("admin", &self.addrs().admin)
            .field("ads", &self.xds.as_ref().map(|x| &x.endpoint))
            .finish_non_exhaustive()
    }
}

/// The addresses a built app listens on (useful with port 0 in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addrs {
    /// The admin listener, when the bootstrap has `admin.address`.
    pub admin: Option<SocketAddr>,
    /// The status listener (`--status-addr`).
    pub status: Option<SocketAddr>,
    /// The readiness listener (`--health-addr`).
    pub health: Option<SocketAddr>,
}

impl App {
    /// Loads the bootstrap `config` names, prepares the ADS client and binds the
    /// admin listener.
    pub async fn build(config: Config) -> Result<App, Error> {
        let bootstrap = Bootstrap::from_config(&config)?;
        App::with_bootstrap(config, bootstrap).await
    }

    /// [`App::build`] with the bootstrap already read (by the `proxy` binary, in a
    /// child process: [`crate::bootstrap::isolated`]).
    pub async fn with_bootstrap(config: Config, bootstrap: Bootstrap) -> Result<App, Error> {
        for warning in &bootstrap.warnings {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            workers = config.workers(),
            "bootstrap loaded: {}",
            bootstrap.summary()
        );
        let identity = identity(&config, &bootstrap)?;
        let xds = match &bootstrap.ads {
            Some(ads) => Some(xds_config(ads, &bootstrap, identity.as_ref())?),
            None => {
                tracing::info!(
                    "no dynamic_resources.ads_config in the bootstrap: running on static resources only"
                );
                None
            }
        };
        let admin_listener = match bootstrap.admin {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::AdminBind { addr, source })?,
            ),
            None => {
                tracing::info!("no admin.address in the bootstrap: the admin interface is off");
                None
            }
        };
        let statics = Statics {
            clusters: bootstrap
                .static_clusters
                .iter()
                .cloned()
                .map(Arc::new)
                .collect(),
            listeners: bootstrap
                .static_listeners
                .iter()
                .cloned()
                .map(Arc::new)
                .collect(),
        };
        let status_listener = bind_status(config.status_addr, "--status-addr").await?;
        let health_listener = bind_status(config.health_addr, "--health-addr").await?;
        let prometheus_listener = bind_status(config.prometheus_addr, "--prometheus-addr").await?;
        let telemetry = crate::telemetry::Telemetry::from_node(&bootstrap.node);
        let access_log = match &config.access_log {
            None => None,
            Some(path) => Some(Arc::new(crate::body::AccessLogSink::open(path).map_err(
                |e| Error::AccessLog {
                    path: path.clone(),
                    source: e,
                },
            )?)),
        };
        Ok(App {
            config,
            bootstrap,
            xds,
            // Resources the data path cannot carry are NACKed with the field
            // at fault; the last good version stays.
            handlers: Handlers {
                clusters: Arc::new(crate::cluster::ClusterValidator),
                listeners: Arc::new(crate::listener::ListenerValidator),
                routes: Arc::new(crate::route::RouteValidator),
                ..Handlers::default()
            },
            store: XdsStore::new(),
            data_path: DataPath::with_access_log(
                statics,
                telemetry,
                Arc::new(Secrets::new(identity.clone())),
                access_log,
            ),
            identity,
            admin_listener,
            status_listener,
            health_listener,
            prometheus_listener,
            log: None,
        })
    }

    /// Lets `POST /logging` change the level through `handle`.
    pub fn with_log_handle(mut self, handle: LogHandle) -> Self {
        self.log = Some(handle);
        self
    }

    /// Replaces the xDS validation handlers (the data plane's checks).
    pub fn with_handlers(mut self, handlers: Handlers) -> Self {
        self.handlers = handlers;
        self
    }

    /// Where the app listens.
    pub fn addrs(&self) -> Addrs {
        Addrs {
            admin: self
                .admin_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok()),
            status: self
                .status_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok()),
            health: self
                .health_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok()),
        }
    }

    /// The store the xDS client publishes into (read-only use by embedders).
    pub fn store(&self) -> XdsStore {
        self.store.clone()
    }

    /// The data path (its current configuration and bound listeners).
    pub fn data_path(&self) -> Arc<DataPath> {
        Arc::clone(&self.data_path)
    }

    /// The ADS client's settings, when the bootstrap configures ADS.
    pub fn xds_config(&self) -> Option<&XdsConfig> {
        self.xds.as_ref()
    }

    /// Runs until `shutdown` resolves or `POST /quitquitquit` is called, then
    /// stops the xDS client and drains the admin server (at most
    /// [`DRAIN_TIMEOUT`]).
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let stop = Stop::new();
        let addr = self.addrs().admin;
        let admin_address_path = self.config.admin_address_path.clone();
        let termination_drain = Duration::from_secs(
            self.config
                .termination_drain_s
                .min(self.config.drain_time_s),
        );
        let final_drain =
            DRAIN_TIMEOUT.min(Duration::from_secs(self.config.parent_shutdown_time_s));
        let admin = Admin::new(admin::Context {
            config: self.config,
            bootstrap: self.bootstrap,
            store: self.store.clone(),
            ads: self.xds.is_some(),
            stop: stop.clone(),
            log: self.log,
            data_path: Arc::clone(&self.data_path),
            identity: self.identity.clone(),
        });
        let client = self
            .xds
            .map(|config| xds::spawn(config, self.store.clone(), self.handlers));
        if let Some(identity) = &self.identity {
            let identity = Arc::clone(identity);
            let stopped = stop.clone();
            tokio::spawn(async move { identity.run(stopped.stopped()).await });
        }
        let data_path = tokio::spawn(server::run(
            Arc::clone(&self.data_path),
            self.store.clone(),
            stop.clone(),
        ));
        let mut server = self.admin_listener.map(|listener| {
            let router = admin::router(admin.clone());
            tokio::spawn(
                axum::serve(listener, router)
                    .with_graceful_shutdown(stop.stopped())
                    .into_future(),
            )
        });
        if let Some(addr) = addr {
            tracing::info!(%addr, "admin interface listening");
        }
        if let (Some(addr), Some(file)) = (addr, &admin_address_path)
            && let Err(e) = std::fs::write(file, addr.to_string())
        {
            tracing::error!(
                file = %file.display(),
                "cannot write the admin address (--admin-address-path): {e}"
            );
        }
        for (listener, router) in [
            (self.status_listener, admin::status_router(admin.clone())),
            (self.health_listener, admin::health_router(admin.clone())),
            (
                self.prometheus_listener,
                admin::prometheus_router(admin.clone()),
            ),
        ] {
            if let Some(listener) = listener {
                if let Ok(addr) = listener.local_addr() {
                    tracing::info!(%addr, "status endpoint listening");
                }
                // The peer's address lets the status port's /quitquitquit
                // accept only the pod's own loopback.
                tokio::spawn(
                    axum::serve(
                        listener,
                        router.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(stop.stopped())
                    .into_future(),
                );
            }
        }
        let mut failure = None;
        let mut server_ended = false;
        let mut drain = false;
        tokio::select! {
            _ = shutdown => {
                tracing::info!("shutdown requested");
                drain = true;
            }
            _ = stop.stopped() => tracing::info!("shutdown requested on the admin interface"),
            result = async {
                match server.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            } => {
                server_ended = true;
                match result {
                    // `/quitquitquit` stopped it: the admin server ended first.
                    Ok(Ok(())) if stop.is_triggered() => {
                        tracing::info!("shutdown requested on the admin interface");
                    }
                    Ok(Ok(())) => failure = Some(std::io::Error::other("stopped unexpectedly")),
                    Ok(Err(e)) => failure = Some(e),
                    Err(e) => failure = Some(std::io::Error::other(e)),
                }
            }
        }
        if server_ended {
            server = None;
        }
        admin.set_draining();
        if drain && self.data_path.drain_inbound() && !termination_drain.is_zero() {
            // istio-agent's graceful termination: inbound stops taking new
            // connections and readiness fails, outbound keeps working.
            tracing::info!(?termination_drain, "draining inbound listeners");
            tokio::select! {
                () = tokio::time::sleep(termination_drain) => {}
                () = stop.stopped() => {}
            }
        }
        stop.trigger();
        if let Some(client) = client {
            client.shutdown().await;
        }
        let _ = data_path.await;
        if let Some(task) = server
            && tokio::time::timeout(final_drain, task).await.is_err()
        {
            tracing::warn!(timeout = ?final_drain, "admin drain took too long; stopping anyway");
        }
        match (failure, addr) {
            (Some(source), Some(addr)) => Err(Error::AdminServe { addr, source }),
            _ => {
                tracing::info!("proxy stopped");
                Ok(())
            }
        }
    }
}

async fn bind_status(
    addr: Option<SocketAddr>,
    flag: &'static str,
) -> Result<Option<TcpListener>, Error> {
    match addr {
        None => Ok(None),
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .map_err(|source| Error::StatusBind { addr, flag, source }),
    }
}

/// The workload identity when `--ca-addr` is given: the SPIFFE id from the
/// node's `NAMESPACE` and `SERVICE_ACCOUNT` metadata.
fn identity(config: &Config, bootstrap: &Bootstrap) -> Result<Option<Arc<CertManager>>, Error> {
    let Some(ca_addr) = &config.ca_addr else {
        return Ok(None);
    };
    let meta = |key: &str| {
        bootstrap
            .node
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get(key))
            .and_then(|v| match &v.kind {
                Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => {
                    Some(s.clone())
                }
                _ => None,
            })
    };
    let (Some(ns), Some(sa)) = (meta("NAMESPACE"), meta("SERVICE_ACCOUNT")) else {
        return Err(Error::Identity(
            "--ca-addr needs the workload's namespace and service account: set node.metadata \
             NAMESPACE and SERVICE_ACCOUNT in the bootstrap"
                .into(),
        ));
    };
    let root = std::fs::read(&config.ca_root_cert).map_err(|e| {
        Error::Identity(format!(
            "cannot read the CA root {} (--ca-root-cert): {e}",
            config.ca_root_cert.display()
        ))
    })?;
    let spiffe = format!("spiffe://{}/ns/{ns}/sa/{sa}", config.trust_domain);
    let identity = IdentityConfig::new(
        ca_addr.clone(),
        root,
        TokenSource::File(config.token_file.clone()),
        spiffe,
    );
    Ok(Some(Arc::new(CertManager::new(identity))))
}

/// The ADS client's settings from the bootstrap's ADS target and node.
fn xds_config(
    ads: &AdsTarget,
    bootstrap: &Bootstrap,
    identity: Option<&Arc<CertManager>>,
) -> Result<XdsConfig, Error> {
    let tls = match &ads.tls {
        None => None,
        Some(ctx) => {
            let host = match &ads.address {
                Endpoint::Tcp { host, .. } => host.as_str(),
                Endpoint::Pipe(_) => "",
            };
            let refused = |reason: String| Error::AdsTls {
                cluster: ads.cluster.clone(),
                reason,
            };
            let tls = XdsTls::from_context(ctx, host).map_err(refused)?;
            if tls.needs_workload() && identity.is_none() {
                return Err(refused(
                    "common_tls_context: names the workload certificate (SDS default/ROOTCA), \
                     which the proxy has only with --ca-addr; add it, or use certificate files"
                        .into(),
                ));
            }
            Some(tls)
        }
    };
    let endpoint = match &ads.address {
        Endpoint::Tcp { .. } if tls.is_some() => format!("https://{}", ads.address),
        Endpoint::Tcp { .. } => format!("http://{}", ads.address),
        Endpoint::Pipe(path) => {
            return Err(Error::AdsPipe {
                cluster: ads.cluster.clone(),
                path: path.clone(),
            });
        }
    };
    let mut config = XdsConfig::new(endpoint, bootstrap.node.clone());
    config.delta = ads.delta;
    config.tls = tls;
    config.identity = identity.cloned();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn target(address: Endpoint) -> AdsTarget {
        AdsTarget {
            cluster: "xds-grpc".into(),
            address,
            tls: None,
            delta: false,
            set_node_on_first_message_only: true,
        }
    }

    fn bootstrap() -> Bootstrap {
        Bootstrap::from_proto("test", Default::default(), &Default::default())
            .expect("an empty bootstrap is valid")
    }

    #[test]
    fn tcp_ads_becomes_an_http_endpoint() {
        let ads = target(Endpoint::Tcp {
            host: "::1".into(),
            port: 15010,
        });
        let config = xds_config(&ads, &bootstrap(), None).expect("maps");
        assert_eq!(config.endpoint, "http://[::1]:15010");
        assert!(!config.delta);
        let ads = target(Endpoint::Tcp {
            host: "istiod.istio-system.svc".into(),
            port: 15010,
        });
        assert_eq!(
            xds_config(&ads, &bootstrap(), None).expect("maps").endpoint,
            "http://istiod.istio-system.svc:15010"
        );
    }

    #[test]
    fn pipe_and_unverified_tls_ads_are_refused_with_the_field() {
        let err = xds_config(
            &target(Endpoint::Pipe(PathBuf::from("./etc/istio/proxy/XDS"))),
            &bootstrap(),
            None,
        )
        .expect_err("pipe refused");
        assert!(
            err.to_string()
                .contains("unix socket ADS not supported yet")
        );
        let mut ads = target(Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 15012,
        });
        ads.tls = Some(Default::default());
        let err = xds_config(&ads, &bootstrap(), None).expect_err("unverified TLS refused");
        let text = err.to_string();
        assert!(
            text.contains("transport_socket.typed_config.common_tls_context")
                && text.contains("must be verified"),
            "{text}"
        );
    }
}
