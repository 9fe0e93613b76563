//! Citadel as a service: flags, start-up and the run loop.
//!
//! `App::build` sets the CA up ([`crate::ca`]), opens the ledger, assembles the
//! authenticators, issues citadel's own serving certificate and binds both listeners,
//! so every start-up problem (a key that does not match, a ledger URL that does not
//! open, a port in use) fails before anything is served and names its flag or file.
//! `App::run_until` serves the CA over TLS (client certificates optional, verified
//! against the roots) and the admin HTTP endpoints until shutdown, then drains and
//! flushes the ledger. With `--kubernetes` the CA's material comes from the cluster
//! and the cluster controllers ([`crate::cluster`]) run beside the servers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::runtime::{Admin, LogArgs, LogHandle, Stop, admin_router, bind, duration_flag};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity as TlsIdentity, ServerTlsConfig};

use crate::auth::Authenticators;
use crate::auth::client_cert::ClientCertAuthenticator;
use crate::auth::jwks::{JwksSource, UrlOptions};
use crate::auth::jwt::JwtAuthenticator;
use crate::auth::token_review::TokenReviewAuthenticator;
use crate::ca::{Ca, CaConfig, KeyAlgorithm};
use crate::cluster::{self, Cluster, ClusterConfig, ClusterError, WebhookCert};
use crate::grpc::CaService;
use crate::ledger::Ledger;
use crate::local_issuer::{self, LocalIssuer};
use crate::metrics::Metrics;

/// Citadel's flags; every one has an environment-variable twin.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "citadel",
    version,
    about = "Mizzen's certificate authority: signs workload CSRs for authenticated callers over Istio's CA gRPC API (istio.v1.auth.IstioCertificateService) and records every issuance."
)]
pub struct Config {
    /// Address of the CA gRPC API, served over TLS.
    #[arg(long, env = "CITADEL_GRPC_ADDR", default_value = "0.0.0.0:15012")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP admin endpoints: /metrics, /healthz, /ready, /logging, /debug/config.
    #[arg(long, env = "CITADEL_HTTP_ADDR", default_value = "0.0.0.0:15014")]
    pub http_addr: SocketAddr,
    /// The mesh's trust domain: identities are spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
    #[arg(long, env = "CITADEL_TRUST_DOMAIN", default_value = common::spiffe::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Directory of the self-signed root (root-key.pem, root-cert.pem), the local
    /// token issuer's key and JWKS, and the default SQLite ledger. The root
    /// certificate is always readable at <key-dir>/root-cert.pem.
    #[arg(long, env = "CITADEL_KEY_DIR", default_value = ".mizzen/citadel")]
    pub key_dir: PathBuf,
    /// Istio's plug-in CA directory (ca-cert.pem, ca-key.pem, root-cert.pem,
    /// cert-chain.pem): citadel then signs as that intermediate.
    #[arg(long, env = "CITADEL_CACERTS_DIR")]
    pub cacerts_dir: Option<PathBuf>,
    /// Algorithm of the root key created on first start.
    #[arg(
        long,
        env = "CITADEL_KEY_ALGORITHM",
        value_enum,
        default_value = "ecdsa-p256"
    )]
    pub key_algorithm: KeyAlgorithm,
    /// JWKS that verifies callers' bearer tokens: a file path or an http(s) URL.
    /// Without it citadel runs in local mode and trusts the tokens of
    /// `mizzen token create` (the issuer key in --key-dir).
    #[arg(long, env = "CITADEL_JWKS", requires = "jwt_issuer")]
    pub jwks: Option<String>,
    /// PEM roots that verify an https --jwks URL instead of the system's (in a
    /// cluster: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt).
    #[arg(long, env = "CITADEL_JWKS_CA_FILE", requires = "jwks")]
    pub jwks_ca_file: Option<PathBuf>,
    /// A file whose content is sent as a bearer token when fetching a --jwks URL,
    /// re-read on every fetch (in a cluster: the service-account token, to read
    /// https://kubernetes.default.svc/openid/v1/jwks).
    #[arg(long, env = "CITADEL_JWKS_TOKEN_FILE", requires = "jwks")]
    pub jwks_token_file: Option<PathBuf>,
    /// Required `iss` of bearer tokens verified with --jwks (local mode: mizzen-local).
    #[arg(long, env = "CITADEL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required audience of bearer tokens.
    #[arg(long, env = "CITADEL_JWT_AUDIENCE", default_value = "istio-ca")]
    pub jwt_audience: String,
    /// Also authenticate bearer tokens with the Kubernetes TokenReview API (in-cluster
    /// configuration or KUBECONFIG).
    #[arg(long, env = "CITADEL_TOKEN_REVIEW")]
    pub token_review: bool,
    /// Ledger database URL: sqlite:PATH or postgres://… (default: SQLite at
    /// <key-dir>/ledger.db).
    #[arg(long, env = "CITADEL_DB_URL")]
    pub db_url: Option<String>,
    /// Longest lifetime of a workload certificate; longer requests are capped.
    #[arg(long, env = "CITADEL_MAX_CERT_TTL", default_value = "24h", value_parser = duration_flag)]
    pub max_cert_ttl: Duration,
    /// Lifetime of a workload certificate when the request names none.
    #[arg(long, env = "CITADEL_DEFAULT_CERT_TTL", default_value = "24h", value_parser = duration_flag)]
    pub default_cert_ttl: Duration,
    /// Lifetime of a root created on first start.
    #[arg(long, env = "CITADEL_ROOT_TTL", default_value = "87600h", value_parser = duration_flag)]
    pub root_ttl: Duration,
    /// Names and IPs in citadel's own serving certificate (comma-separated).
    #[arg(
        long,
        env = "CITADEL_SERVING_HOSTS",
        value_delimiter = ',',
        default_value = "localhost,127.0.0.1,::1,citadel,citadel.istio-system.svc,istiod.istio-system.svc"
    )]
    pub serving_hosts: Vec<String>,
    /// Kubernetes cluster mode.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Flags of cluster mode.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Run in a Kubernetes cluster (in-cluster service account, or KUBECONFIG): the
    /// CA comes from Secret `cacerts` or `istio-ca-secret` in --namespace (created
    /// on first start), the root is published as ConfigMap `istio-ca-root-cert` in
    /// every namespace, webhook serving certificates are issued into Secrets and
    /// the root is patched into the webhook configurations' caBundle. Bearer tokens
    /// are checked with TokenReview (as --token-review), and with --jwks only when
    /// it is given; the local token issuer is off.
    #[arg(long, env = "CITADEL_KUBERNETES")]
    pub kubernetes: bool,
    /// Citadel's namespace in cluster mode: where `cacerts`, `istio-ca-secret` and
    /// the webhook Secrets live.
    #[arg(long, env = "POD_NAMESPACE", default_value = cluster::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// A webhook serving certificate to keep, SECRET=DNS[,DNS…]: a kubernetes.io/tls
    /// Secret in --namespace (tls.crt, tls.key) for those names, renewed at 2/3 of
    /// its lifetime or when missing, invalid or from another CA. Repeat the flag
    /// (the variable separates entries with ';'); the chart passes
    /// galley-webhook-tls=galley.istio-system.svc and
    /// injector-webhook-tls=injector.istio-system.svc.
    #[arg(
        long = "webhook-cert",
        env = "CITADEL_WEBHOOK_CERTS",
        value_delimiter = ';',
        requires = "kubernetes"
    )]
    pub webhook_certs: Vec<WebhookCert>,
    /// Lifetime of a webhook serving certificate.
    #[arg(long, env = "CITADEL_WEBHOOK_CERT_TTL", default_value = "2160h", value_parser = duration_flag, requires = "kubernetes")]
    pub webhook_cert_ttl: Duration,
    /// A ValidatingWebhookConfiguration whose webhooks get the root as caBundle,
    /// patched again whenever it is reset (repeat the flag, or separate with ',';
    /// the chart passes istio-validator-istio-system, with a revision R
    /// istio-validator-R-istio-system).
    #[arg(
        long = "validating-webhook",
        env = "CITADEL_VALIDATING_WEBHOOKS",
        value_delimiter = ',',
        requires = "kubernetes"
    )]
    pub validating_webhooks: Vec<String>,
    /// A MutatingWebhookConfiguration whose webhooks get the root as caBundle
    /// (repeat the flag, or separate with ','; the chart passes
    /// istio-sidecar-injector, with a revision R istio-sidecar-injector-R).
    #[arg(
        long = "mutating-webhook",
        env = "CITADEL_MUTATING_WEBHOOKS",
        value_delimiter = ',',
        requires = "kubernetes"
    )]
    pub mutating_webhooks: Vec<String>,
}

impl Default for ClusterArgs {
    /// Cluster mode off; the other fields at their flags' defaults.
    fn default() -> Self {
        ClusterArgs {
            kubernetes: false,
            namespace: cluster::DEFAULT_NAMESPACE.into(),
            webhook_certs: Vec::new(),
            webhook_cert_ttl: Duration::from_secs(2160 * 3600),
            validating_webhooks: Vec::new(),
            mutating_webhooks: Vec::new(),
        }
    }
}

impl ClusterArgs {
    /// What the cluster controllers keep.
    pub fn cluster_config(&self) -> ClusterConfig {
        ClusterConfig {
            namespace: self.namespace.clone(),
            webhook_certs: self.webhook_certs.clone(),
            webhook_cert_ttl: self.webhook_cert_ttl,
            validating_webhooks: self.validating_webhooks.clone(),
            mutating_webhooks: self.mutating_webhooks.clone(),
        }
    }
}

/// Why citadel could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA's keys or certificates are unusable.
    #[error("CA: {0}")]
    Ca(#[from] crate::ca::CaError),
    /// The ledger could not be opened.
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    /// The local token issuer could not be set up.
    #[error("local token issuer: {0}")]
    LocalIssuer(#[from] local_issuer::LocalIssuerError),
    /// The JWKS could not be loaded.
    #[error("--jwks: {0}")]
    Jwks(#[from] crate::auth::jwks::JwksError),
    /// Cluster mode could not start.
    #[error("cluster mode: {0}")]
    Cluster(#[from] ClusterError),
    /// No Kubernetes client for --token-review.
    #[error("--token-review needs a Kubernetes client (in-cluster or KUBECONFIG): {0}")]
    Kube(String),
    /// Flags that do not fit together.
    #[error("invalid flags: {0}")]
    Flags(String),
    /// A listener could not be bound.
    #[error("{0}")]
    Bind(#[source] std::io::Error),
    /// Serving failed.
    #[error("serving failed: {0}")]
    Serve(String),
}

/// Where a built app listens.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    /// The CA gRPC API (TLS).
    pub grpc: SocketAddr,
    /// HTTP admin.
    pub http: SocketAddr,
}

/// A built, not yet serving citadel.
pub struct App {
    ca: Arc<Ca>,
    cluster: Option<Cluster>,
    service: CaService,
    ledger: Ledger,
    tls: ServerTlsConfig,
    grpc: TcpListener,
    http: TcpListener,
    admin: Admin,
}

impl App {
    /// Sets up the CA, ledger, authenticators and TLS, and binds the listeners.
    pub async fn build(config: Config) -> Result<App, Error> {
        let client = match config.cluster.kubernetes {
            true => Some(cluster::connect().await?),
            false => None,
        };
        Self::build_with(config, client).await
    }

    /// [`App::build`] in cluster mode through `client` (whatever
    /// `--kubernetes` says), e.g. a client of a test's API server.
    pub async fn build_in_cluster(config: Config, client: kube::Client) -> Result<App, Error> {
        Self::build_with(config, Some(client)).await
    }

    async fn build_with(config: Config, client: Option<kube::Client>) -> Result<App, Error> {
        common::tls::install_crypto_provider();
        let ca_config = CaConfig {
            key_dir: config.key_dir.clone(),
            cacerts_dir: config.cacerts_dir.clone(),
            key_algorithm: config.key_algorithm,
            trust_domain: config.trust_domain.clone(),
            root_ttl: config.root_ttl,
            max_ttl: config.max_cert_ttl,
            default_ttl: config.default_cert_ttl.min(config.max_cert_ttl),
        };
        // In a cluster the CA comes from its Secrets, unless --cacerts-dir names
        // the plug-in files (e.g. the `cacerts` Secret mounted as a volume).
        let ca = Arc::new(match (&client, &config.cacerts_dir) {
            (Some(client), None) => {
                let ca = cluster::ca_secret::load_ca(
                    client.clone(),
                    &config.cluster.namespace,
                    &ca_config,
                )
                .await?;
                ca.write_root(&config.key_dir)?;
                ca
            }
            _ => Ca::load_or_create(&ca_config)?,
        });
        let db_url = config
            .db_url
            .clone()
            .unwrap_or_else(|| Ledger::default_url(&config.key_dir));
        let ledger = Ledger::open(&db_url).await?;
        let auth = authenticators(&config, &ca, client.as_ref()).await?;
        let cluster =
            client.map(|client| Cluster::new(client, ca.clone(), config.cluster.cluster_config()));

        let (chain, key) = ca.serving_cert(
            &config.serving_hosts,
            config
                .max_cert_ttl
                .max(Duration::from_secs(365 * 24 * 3600)),
        )?;
        let tls = ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(chain, key))
            .client_ca_root(Certificate::from_pem(ca.roots().concat()))
            .client_auth_optional(true);

        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        metrics.root_cert_expiry_timestamp.set(ca.root_not_after());
        let grpc = bind(config.grpc_addr, "--grpc-addr")
            .await
            .map_err(Error::Bind)?;
        let http = bind(config.http_addr, "--http-addr")
            .await
            .map_err(Error::Bind)?;
        tracing::info!(
            mode = ?ca.mode(),
            trust_domain = %config.trust_domain,
            ledger = ledger.backend(),
            authenticators = ?auth.names(),
            "CA ready"
        );
        let service = CaService::new(ca.clone(), auth, ledger.clone(), metrics);
        let admin = Admin::new(registry, &config);
        Ok(App {
            ca,
            cluster,
            service,
            ledger,
            tls,
            grpc,
            http,
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
            http: a(&self.http),
        }
    }

    /// The CA (roots, trust domain) of this app.
    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    /// Serves until SIGTERM or Ctrl-C.
    pub async fn run(self) -> Result<(), Error> {
        self.run_until(common::runtime::shutdown_signal()).await
    }

    /// Serves until `shutdown` resolves, then drains in-flight requests and flushes
    /// the ledger.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addrs = self.addrs();
        let stop = Stop::new();
        let http = axum::serve(self.http, admin_router(self.admin.clone()))
            .with_graceful_shutdown(stop.stopped());
        let grpc = tonic::transport::Server::builder()
            .tls_config(self.tls)
            .map_err(|e| Error::Serve(format!("TLS: {e}")))?
            .add_service(self.service.trust_bundle_server())
            .add_service(self.service.clone().into_server())
            .serve_with_incoming_shutdown(
                common::runtime::grpc_incoming(self.grpc),
                stop.stopped(),
            );
        let controllers = {
            let stopped = stop.stopped();
            let cluster = self.cluster;
            async move {
                if let Some(cluster) = cluster {
                    cluster.run(stopped).await;
                }
            }
        };
        tracing::info!(grpc = %addrs.grpc, http = %addrs.http, "citadel serving");
        self.admin.set_ready();
        self.admin.stop_on(shutdown, &stop, || {});
        let (h, g, ()) = tokio::join!(http, grpc, controllers);
        self.ledger.close().await;
        h.map_err(|e| Error::Serve(format!("admin HTTP: {e}")))?;
        g.map_err(|e| Error::Serve(format!("gRPC: {e}")))?;
        Ok(())
    }
}

/// Client certificates first (renewal), then bearer tokens: JWT, then TokenReview.
/// In cluster mode (`client` given) TokenReview is always on and the local token
/// issuer is off: JWTs are checked only against a --jwks.
async fn authenticators(
    config: &Config,
    ca: &Ca,
    client: Option<&kube::Client>,
) -> Result<Authenticators, Error> {
    let td = config.trust_domain.clone();
    let mut auth = Authenticators::new().with(Arc::new(ClientCertAuthenticator::new(
        td.clone(),
        ca.root_ders(),
    )));
    let jwt = match (&config.jwks, &config.jwt_issuer) {
        (Some(jwks), Some(issuer)) => {
            let source = if jwks.starts_with("http://") || jwks.starts_with("https://") {
                JwksSource::Url(
                    jwks.clone(),
                    UrlOptions {
                        ca_file: config.jwks_ca_file.clone(),
                        token_file: config.jwks_token_file.clone(),
                    },
                )
            } else if config.jwks_ca_file.is_some() || config.jwks_token_file.is_some() {
                return Err(Error::Flags(format!(
                    "--jwks-ca-file and --jwks-token-file apply to a --jwks URL, but {jwks:?} is a file; drop them or give an http(s) URL"
                )));
            } else {
                JwksSource::File(PathBuf::from(jwks))
            };
            Some(
                JwtAuthenticator::new(
                    source,
                    issuer.clone(),
                    config.jwt_audience.clone(),
                    td.clone(),
                )
                .await?,
            )
        }
        _ if client.is_some() => None,
        _ => {
            let issuer = LocalIssuer::load_or_create(&config.key_dir)?;
            tracing::info!(jwks = %issuer.jwks_path().display(), "local mode: trusting tokens from `mizzen token create`");
            let issuer_name = config
                .jwt_issuer
                .clone()
                .unwrap_or_else(|| local_issuer::ISSUER.to_string());
            Some(
                JwtAuthenticator::new(
                    JwksSource::File(issuer.jwks_path()),
                    issuer_name,
                    config.jwt_audience.clone(),
                    td.clone(),
                )
                .await?,
            )
        }
    };
    if let Some(jwt) = jwt {
        auth = auth.with(Arc::new(jwt));
    }
    let client = match client {
        Some(client) => Some(client.clone()),
        None if config.token_review => Some(
            kube::Client::try_default()
                .await
                .map_err(|e| Error::Kube(e.to_string()))?,
        ),
        None => None,
    };
    if let Some(client) = client {
        auth = auth.with(Arc::new(TokenReviewAuthenticator::new(
            client,
            vec![config.jwt_audience.clone()],
            td,
        )));
    }
    Ok(auth)
}

#[cfg(test)]
#[path = "app_cluster_tests.rs"]
mod cluster_tests;

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn cluster_flags_parse_and_need_kubernetes() {
        let c = Config::try_parse_from(["citadel"]).unwrap();
        assert!(!c.cluster.kubernetes);
        assert!(c.cluster.webhook_certs.is_empty());

        let c = Config::try_parse_from([
            "citadel",
            "--kubernetes",
            "--namespace",
            "mesh",
            "--webhook-cert",
            "galley-webhook-tls=galley.mesh.svc",
            "--webhook-cert",
            "injector-webhook-tls=injector.mesh.svc,injector.mesh",
            "--validating-webhook",
            "istio-validator-mesh",
            "--mutating-webhook",
            "istio-sidecar-injector",
            "--webhook-cert-ttl",
            "720h",
        ])
        .unwrap();
        let cluster = c.cluster.cluster_config();
        assert_eq!(cluster.namespace, "mesh");
        assert_eq!(cluster.webhook_certs.len(), 2);
        assert_eq!(
            cluster.webhook_certs[1].hosts,
            ["injector.mesh.svc", "injector.mesh"]
        );
        assert_eq!(cluster.validating_webhooks, ["istio-validator-mesh"]);
        assert_eq!(cluster.mutating_webhooks, ["istio-sidecar-injector"]);
        assert_eq!(cluster.webhook_cert_ttl, Duration::from_secs(720 * 3600));

        for args in [
            &["citadel", "--webhook-cert", "a=a.svc"][..],
            &["citadel", "--validating-webhook", "x"][..],
        ] {
            let err = Config::try_parse_from(args).unwrap_err().to_string();
            assert!(err.contains("--kubernetes"), "{err}");
        }
        let err = Config::try_parse_from(["citadel", "--kubernetes", "--webhook-cert", "nodns"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SECRET=DNS"), "{err}");
    }
}
