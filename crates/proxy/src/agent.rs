//! `proxy agent`: istio-agent's SDS job for a stock Envoy sidecar. It gets the
//! workload certificate from the mesh CA and serves it to Envoy over SDS on a
//! Unix socket, where Istio's bootstrap points the `sds-grpc` cluster
//! (`/var/run/secrets/workload-spiffe-uds/socket`).
//!
//! It owns the agent's flags ([`Config`]), the socket, and the lifetime of the
//! [`CertManager`] and the [`sds::SdsServer`]; it does not start Envoy, write
//! its bootstrap, or proxy xDS (istio-agent's other jobs), and it does not
//! fetch or check certificates itself ([`crate::identity`] does).
//!
//! The path of a certificate: [`run`] builds a [`CertManager`] from the flags
//! (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`, the CA address,
//! root and token) → [`serve`] starts its renewal loop and binds the socket
//! (parent directories created, a stale socket removed) → each SDS stream
//! Envoy opens gets the `default` and `ROOTCA` secrets from the current
//! certificate, and every renewal is pushed ([`sds`]) → on stop, the streams
//! end, the server drains, the loop stops and the socket is removed.

pub mod sds;

use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::runtime::{LogArgs, LogFormat};
use tokio::net::UnixListener;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;

use crate::identity::{CertManager, IdentityConfig, TokenSource};
use crate::secrets::{ROOT_CA, WORKLOAD_CERT};

/// istio-agent's SDS socket, where Istio's sidecar bootstrap looks for it.
pub const DEFAULT_SDS_SOCKET: &str = "/var/run/secrets/workload-spiffe-uds/socket";

/// How long open SDS streams get to end after a stop, at most.
const DRAIN: Duration = Duration::from_secs(5);

/// Flags of `proxy agent` (named as the proxy's own CA flags, with
/// istio-agent's environment variables).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "agent",
    about = "Serve the workload certificate to a stock Envoy over SDS on a Unix socket, as \
             istio-agent does.",
    long_about = "Serve the workload certificate to a stock Envoy over SDS on a Unix socket, as \
                  istio-agent does.\n\n\
                  The certificate (spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT) comes \
                  from the mesh CA at --ca-addr, asked with the service account token, and is \
                  renewed at half its lifetime. Envoy gets it as the SDS secrets `default` \
                  (certificate chain and key) and `ROOTCA` (the mesh roots) from its `sds-grpc` \
                  cluster, a pipe to --sds-socket with HTTP/2 and `api_type: GRPC`; every \
                  renewal is pushed. Runs until SIGTERM or Ctrl-C."
)]
pub struct Config {
    /// The mesh CA (citadel, or istiod's CA) to get this workload's certificate
    /// from (`CA_ADDR`); e.g. `citadel.istio-system:15012` (`https://` is
    /// assumed).
    #[arg(long, env = "CA_ADDR", value_name = "HOST:PORT")]
    pub ca_addr: String,
    /// PEM roots that verify the CA's serving certificate.
    #[arg(
        long,
        env = "PROXY_CA_ROOT_CERT",
        value_name = "FILE",
        default_value = "/var/run/secrets/istio/root-cert.pem"
    )]
    pub ca_root_cert: PathBuf,
    /// The service account token sent to the CA (read on every request).
    #[arg(
        long,
        env = "PROXY_TOKEN_FILE",
        value_name = "FILE",
        default_value = "/var/run/secrets/tokens/istio-token"
    )]
    pub token_file: PathBuf,
    /// The trust domain of this workload's SPIFFE id.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// The workload's namespace (the pod's, from the downward API).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: String,
    /// The workload's service account.
    #[arg(long, env = "SERVICE_ACCOUNT", value_name = "NAME")]
    pub service_account: String,
    /// The Unix socket to serve SDS on; its directory is created, and a stale
    /// socket left there by an earlier run is removed.
    #[arg(long, env = "SDS_SOCKET", value_name = "PATH", default_value = DEFAULT_SDS_SOCKET)]
    pub sds_socket: PathBuf,
    /// Log level: Envoy's names (trace, debug, info, warning/warn, error, critical,
    /// off) or a tracing filter such as `proxy=debug,info`.
    #[arg(short = 'l', long, env = "MIZZEN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log output: `text` or `json`.
    #[arg(long, env = "MIZZEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Write the Envoy bootstrap for this workload here before serving, as
    /// istio-agent does: node `sidecar~POD_IP~POD.NAMESPACE~…` (or `router~`)
    /// with Istio's metadata, ADS to --xds-addr, `sds-grpc` to --sds-socket,
    /// admin on --admin-addr, the health port. Written whole (through a
    /// temporary file), so Envoy can start once it exists.
    #[arg(long, env = "BOOTSTRAP_OUT", value_name = "FILE", requires_all = ["pod_name", "pod_ip", "xds_addr"])]
    pub bootstrap_out: Option<PathBuf>,
    /// The pod's name (for --bootstrap-out).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The pod's IP (for --bootstrap-out).
    #[arg(long, env = "INSTANCE_IP", value_name = "IP")]
    pub pod_ip: Option<std::net::IpAddr>,
    /// A pod label, `KEY=VALUE` (for --bootstrap-out). Repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = key_value)]
    pub labels: Vec<(String, String)>,
    /// Pilot's ADS address, an IP and port (for --bootstrap-out).
    #[arg(long, env = "XDS_ADDR", value_name = "IP:PORT")]
    pub xds_addr: Option<std::net::SocketAddr>,
    /// The workload is a gateway (`router` node) rather than a sidecar.
    #[arg(long)]
    pub router: bool,
    /// Envoy's admin address (for --bootstrap-out).
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin_addr: std::net::SocketAddr,
    /// Istio's health port, served by Envoy from the bootstrap (for
    /// --bootstrap-out).
    #[arg(long, default_value_t = 15021)]
    pub health_port: u16,
    /// How the pod's traffic reaches Envoy (for --bootstrap-out): `redirect`
    /// (iptables capture, Istio's default) or `none` (no capture: pilot
    /// serves only the listeners the pod's Sidecar binds, and the health
    /// listener binds --pod-ip).
    #[arg(long, env = "INTERCEPTION_MODE", value_enum, default_value_t = InterceptionMode::Redirect, ignore_case = true)]
    pub interception_mode: InterceptionMode,
}

/// `--interception-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InterceptionMode {
    /// iptables capture.
    Redirect,
    /// No capture.
    None,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: write KEY=VALUE"))
}

impl Config {
    /// The identity asked for:
    /// `spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}`.
    pub fn spiffe_id(&self) -> String {
        format!(
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }

    /// The logging flags as the shared [`LogArgs`], with Envoy's level names
    /// translated to tracing's.
    pub fn log_args(&self) -> LogArgs {
        LogArgs {
            log_format: self.log_format,
            log_level: crate::config::tracing_level(&self.log_level),
        }
    }

    /// What the [`CertManager`] asks for: reads the CA root now.
    pub fn identity(&self) -> Result<IdentityConfig> {
        let root = std::fs::read(&self.ca_root_cert).map_err(|source| Error::CaRoot {
            path: self.ca_root_cert.clone(),
            source,
        })?;
        Ok(IdentityConfig::new(
            self.ca_addr.clone(),
            root,
            TokenSource::File(self.token_file.clone()),
            self.spiffe_id(),
        ))
    }
}

/// Why the agent could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA root file could not be read.
    #[error(
        "cannot read the CA root {path} (--ca-root-cert): {source}; mount the root that signed the CA's serving certificate there"
    )]
    CaRoot {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The socket could not be prepared or bound.
    #[error("cannot serve SDS on {path} (--sds-socket): {what}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The step that failed, and what to check.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The bootstrap could not be written.
    #[error("cannot write the bootstrap {path} (--bootstrap-out): {source}")]
    Bootstrap {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("the SDS server on {path} failed: {source}")]
    Serve {
        /// The socket path.
        path: PathBuf,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
}

/// The module's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs the agent of `config` until `stop` resolves: the certificate from the
/// CA, served over SDS on `--sds-socket`.
pub async fn run(config: Config, stop: impl Future<Output = ()>) -> Result<()> {
    if let Some(path) = &config.bootstrap_out {
        write_bootstrap(&config, path)?;
        tracing::info!(path = %path.display(), "wrote the Envoy bootstrap");
    }
    let identity = config.identity()?;
    let manager = Arc::new(CertManager::new(identity));
    serve(manager, &config.sds_socket, stop).await
}

/// The workload's Envoy bootstrap ([`common::bootstrap`]) as the flags
/// describe it, written to `path` through a temporary file and a rename.
pub fn write_bootstrap(config: &Config, path: &Path) -> Result<()> {
    let failed = |source| Error::Bootstrap {
        path: path.to_path_buf(),
        source,
    };
    let missing = |flag: &str| {
        failed(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{flag} is needed"),
        ))
    };
    let sidecar = common::bootstrap::Sidecar {
        pod: config
            .pod_name
            .clone()
            .ok_or_else(|| missing("--pod-name"))?,
        namespace: config.namespace.clone(),
        ip: config.pod_ip.ok_or_else(|| missing("--pod-ip"))?,
        labels: config.labels.iter().cloned().collect(),
        service_account: config.service_account.clone(),
        xds: config.xds_addr.ok_or_else(|| missing("--xds-addr"))?.into(),
        delta: true,
        admin: config.admin_addr,
        sds_socket: Some(config.sds_socket.clone()),
        router: config.router,
        health_port: Some(config.health_port),
        capture: config.interception_mode == InterceptionMode::Redirect,
        metadata: Default::default(),
    };
    let text = serde_json::to_string_pretty(&sidecar.bootstrap())
        .map_err(std::io::Error::other)
        .map_err(failed)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}

/// Keeps `manager`'s certificate fresh (its [`CertManager::run`] loop) and
/// serves it over SDS on the Unix socket `socket` until `stop` resolves; then
/// ends the streams, stops the loop and removes the socket.
pub async fn serve(
    manager: Arc<CertManager>,
    socket: &Path,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let listener = bind(socket)?;
    let (stopping, stopped) = watch::channel(false);
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let renewals = tokio::spawn(manager.clone().run(until_stopped(stopped.clone())));
    let sds = sds::SdsServer::new(&manager);
    let closer = sds.clone();
    tracing::info!(
        socket = %socket.display(),
        identity = manager.spiffe_id(),
        secrets = ?[WORKLOAD_CERT, ROOT_CA],
        "agent: serving SDS (api_type GRPC) to Envoy"
    );
    let shutdown = {
        let stopped = until_stopped(stopped);
        async move {
            stopped.await;
            closer.close();
        }
    };
    let server = tonic::transport::Server::builder()
        .add_service(sds.into_service())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown);
    tokio::pin!(server, stop);
    let result = tokio::select! {
        r = &mut server => r,
        () = &mut stop => {
            stopping.send_replace(true);
            match tokio::time::timeout(DRAIN, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(socket = %socket.display(), "agent: SDS connections still open after {DRAIN:?}; closing them");
                    Ok(())
                }
            }
        }
    };
    stopping.send_replace(true);
    let _ = renewals.await;
    if let Err(e) = std::fs::remove_file(socket)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(socket = %socket.display(), error = %e, "agent: cannot remove the SDS socket");
    }
    tracing::info!(socket = %socket.display(), "agent: stopped");
    result.map_err(|source| Error::Serve {
        path: socket.to_path_buf(),
        source,
    })
}

/// Creates the socket's directory, removes a stale socket, and binds.
fn bind(socket: &Path) -> Result<UnixListener> {
    let err = |what: &'static str| {
        move |source| Error::Socket {
            path: socket.to_path_buf(),
            what,
            source,
        }
    };
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err("cannot create its directory"))?;
    }
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!(socket = %socket.display(), "agent: removing the stale SDS socket of an earlier run");
            std::fs::remove_file(socket).map_err(err("cannot remove the stale socket"))?;
        }
        Ok(_) => {
            return Err(Error::Socket {
                path: socket.to_path_buf(),
                what: "the path exists and is not a socket; remove it or choose another path",
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err("cannot inspect the path")(e)),
    }
    UnixListener::bind(socket).map_err(err("cannot bind"))
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    use clap::{CommandFactory, Parser};
    use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
    use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
    use futures::future::BoxFuture;
    use hyper_util::rt::TokioIo;
    use tonic::transport::{Channel, Endpoint, Uri};

    use super::*;

    #[test]
    fn the_bootstrap_names_the_workload_and_points_sds_at_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pod/envoy.json");
        let config = Config::parse_from([
            "agent",
            "--ca-addr",
            "citadel:15012",
            "--namespace",
            "default",
            "--service-account",
            "bookinfo-reviews",
            "--sds-socket",
            "/run/pod/sds.sock",
            "--bootstrap-out",
            out.to_str().unwrap(),
            "--pod-name",
            "reviews-v2",
            "--pod-ip",
            "10.77.0.5",
            "--label",
            "app=reviews",
            "--label",
            "version=v2",
            "--xds-addr",
            "10.77.0.1:15010",
        ]);
        write_bootstrap(&config, &out).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(
            b["node"]["id"],
            "sidecar~10.77.0.5~reviews-v2.default~default.svc.cluster.local"
        );
        assert_eq!(b["node"]["metadata"]["LABELS"]["version"], "v2");
        assert_eq!(b["node"]["metadata"]["SERVICE_ACCOUNT"], "bookinfo-reviews");
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        let sds = clusters.iter().find(|c| c["name"] == "sds-grpc").unwrap();
        assert_eq!(
            sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
                ["path"],
            "/run/pod/sds.sock"
        );
        assert_eq!(
            b["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
            15021
        );
        // The pod's name, IP and pilot are needed.
        assert!(
            Config::try_parse_from([
                "agent",
                "--ca-addr",
                "c:1",
                "--namespace",
                "n",
                "--service-account",
                "s",
                "--bootstrap-out",
                "/tmp/x.json",
            ])
            .is_err()
        );
    }

    /// Connects every gRPC call to one Unix socket.
    #[derive(Clone)]
    struct Uds(PathBuf);

    impl tonic::codegen::Service<Uri> for Uds {
        type Response = TokioIo<tokio::net::UnixStream>;
        type Error = std::io::Error;
        type Future = BoxFuture<'static, std::io::Result<Self::Response>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Uri) -> Self::Future {
            let path = self.0.clone();
            Box::pin(async move { Ok(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) })
        }
    }

    async fn client(socket: &Path) -> SecretDiscoveryServiceClient<Channel> {
        let channel = Endpoint::from_static("http://sds.local")
            .connect_with_connector(Uds(socket.to_path_buf()))
            .await
            .unwrap();
        SecretDiscoveryServiceClient::new(channel)
    }

    #[test]
    fn flags_parse_with_istio_agent_defaults() {
        let config = Config::try_parse_from([
            "agent",
            "--ca-addr",
            "citadel.istio-system:15012",
            "--namespace",
            "default",
            "--service-account",
            "reviews",
            "-l",
            "warning",
        ])
        .unwrap();
        assert_eq!(
            config.spiffe_id(),
            "spiffe://cluster.local/ns/default/sa/reviews"
        );
        assert_eq!(config.sds_socket, PathBuf::from(DEFAULT_SDS_SOCKET));
        assert_eq!(
            config.token_file,
            PathBuf::from("/var/run/secrets/tokens/istio-token")
        );
        assert_eq!(config.log_args().log_level, "warn");
        for missing in ["--ca-addr", "--namespace", "--service-account"] {
            let mut args = vec![
                "agent",
                "--ca-addr",
                "c:1",
                "--namespace",
                "n",
                "--service-account",
                "s",
            ];
            let at = args.iter().position(|a| *a == missing).unwrap();
            args.drain(at..at + 2);
            assert!(Config::try_parse_from(&args).is_err(), "{missing} required");
        }
        Config::command().debug_assert();
    }

    #[test]
    fn a_missing_ca_root_names_the_flag() {
        let mut config = Config::try_parse_from([
            "agent",
            "--ca-addr",
            "c:1",
            "--namespace",
            "n",
            "--service-account",
            "s",
        ])
        .unwrap();
        config.ca_root_cert = PathBuf::from("/nonexistent/root-cert.pem");
        let err = config.identity().unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/root-cert.pem") && err.contains("--ca-root-cert"),
            "{err}"
        );
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("socket");
        std::fs::write(&file, "keep me").unwrap();
        let err = bind(&file).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    #[tokio::test]
    async fn serves_sds_on_the_socket_refuses_delta_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("nested/dir/socket");
        // A stale socket from an earlier run is replaced.
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let manager = sds::tests::manager();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let agent = tokio::spawn({
            let socket = socket.clone();
            async move {
                serve(manager, &socket, async move {
                    let _ = stopped.await;
                })
                .await
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut sds = loop {
            if tokio::net::UnixStream::connect(&socket).await.is_ok() {
                break client(&socket).await;
            }
            assert!(tokio::time::Instant::now() < deadline, "no socket");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };

        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(DiscoveryRequest {
            resource_names: vec![WORKLOAD_CERT.into(), ROOT_CA.into()],
            type_url: sds::SECRET_TYPE.into(),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut responses = sds
            .stream_secrets(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("secrets within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(first.resources.len(), 2);

        let delta = sds
            .delta_secrets(futures::stream::iter(Vec::<DeltaDiscoveryRequest>::new()))
            .await
            .unwrap_err();
        assert_eq!(delta.code(), tonic::Code::Unimplemented);
        assert!(delta.message().contains("api_type: GRPC"), "{delta:?}");

        stop.send(()).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(10), agent)
            .await
            .expect("the agent stops within 10 s")
            .unwrap();
        ended.unwrap();
        assert!(!socket.exists(), "the socket is removed");
        drop(tx);
    }
}
