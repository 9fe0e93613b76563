//! What every Mizzen service does the same way: structured logs whose level can be
//! changed while running, the HTTP endpoints Kubernetes and Prometheus expect
//! (`/healthz`, `/ready`, `/metrics`, `/logging`), and graceful shutdown on SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, reload};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging flags shared by every binary (`--log-format`, `--log-level`).
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "MIZZEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `galley=debug,info`); changeable at run
    /// time with `PUT /logging?level=...` on the HTTP port.
    #[arg(long, env = "MIZZEN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The level or filter did not parse.
    #[error(
        "invalid log level {0:?}: use error, warn, info, debug, trace or a filter like 'pilot=debug,info'"
    )]
    BadLevel(String),
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadySet,
}

/// Changes the log filter of a running process.
#[derive(Clone)]
pub struct LogHandle {
    handle: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
}

impl LogHandle {
    /// Replaces the active filter.
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        let filter = EnvFilter::try_new(level).map_err(|_| LogError::BadLevel(level.into()))?;
        self.handle.reload(filter).map_err(|_| LogError::AlreadySet)
    }

    /// The active filter, as text.
    pub fn level(&self) -> String {
        self.handle
            .with_current(|f| f.to_string())
            .unwrap_or_default()
    }
}

/// Installs the global log subscriber (stderr).
pub fn init_logging(args: &LogArgs) -> Result<LogHandle, LogError> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|_| LogError::BadLevel(args.log_level.clone()))?;
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .map_err(|_| LogError::AlreadySet)?;
    Ok(LogHandle { handle })
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// One stop signal fanned out to every server of a service: each server waits on
/// [`Stop::stopped`], and whoever decides the service must stop (SIGTERM, a failed
/// component) calls [`Stop::trigger`].
#[derive(Clone)]
pub struct Stop {
    tx: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop::new()
    }
}

impl Stop {
    /// A signal not yet triggered.
    pub fn new() -> Self {
        Stop {
            tx: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }

    /// Asks every server to stop (idempotent).
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether [`Stop::trigger`] has been called.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once [`Stop::trigger`] has been called.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }
}

/// State behind the admin endpoints.
#[derive(Clone)]
pub struct Admin {
    /// Set when the service can take traffic; `/ready` answers 503 until then.
    pub ready: Arc<AtomicBool>,
    /// Metrics served on `/metrics`.
    pub registry: Arc<Registry>,
    /// Where `/logging` changes the level; `None` when the caller manages logging.
    pub log: Option<LogHandle>,
    /// Text shown on `/debug/config` (the service's effective configuration).
    pub config_text: Arc<str>,
}

impl Admin {
    /// Admin state serving `registry`, not ready yet, showing `config` (pretty
    /// `Debug`) on `/debug/config`.
    pub fn new(registry: Registry, config: &impl std::fmt::Debug) -> Admin {
        Admin {
            ready: Arc::new(AtomicBool::new(false)),
            registry: Arc::new(registry),
            log: None,
            config_text: Arc::from(format!("{config:#?}\n")),
        }
    }

    /// Lets `/logging` change the level through `handle`.
    pub fn set_log_handle(&mut self, handle: LogHandle) {
        self.log = Some(handle);
    }

    /// Turns `/ready` to 200.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// The shutdown sequence every service shares, spawned: once `shutdown`
    /// resolves (SIGTERM, a test's signal) or `stop` is triggered by a failing
    /// component, `/ready` turns 503 so load balancers stop sending, `then` runs
    /// (ending long-lived streams), and `stop` is triggered so every server drains.
    pub fn stop_on(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        stop: &Stop,
        then: impl FnOnce() + Send + 'static,
    ) {
        let ready = self.ready.clone();
        let stop = stop.clone();
        let stopped = stop.stopped();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = stopped => {}
            }
            tracing::info!("shutting down: draining in-flight requests");
            ready.store(false, Ordering::Release);
            then();
            stop.trigger();
        });
    }
}

#[derive(serde::Deserialize)]
struct LevelQuery {
    level: Option<String>,
}

/// `/healthz`, `/ready`, `/metrics`, `/logging` (GET shows, PUT/POST `?level=` sets)
/// and `/debug/config`.
pub fn admin_router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/ready",
            get(|State(a): State<Admin>| async move {
                if a.ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .route("/metrics", get(metrics))
        .route("/logging", get(get_level).put(set_level).post(set_level))
        .route(
            "/debug/config",
            get(|State(a): State<Admin>| async move { a.config_text.to_string() }),
        )
        .with_state(admin)
}

async fn metrics(State(a): State<Admin>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &a.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn get_level(State(a): State<Admin>) -> impl IntoResponse {
    match &a.log {
        Some(h) => (StatusCode::OK, format!("{}\n", h.level())),
        None => (
            StatusCode::NOT_FOUND,
            "logging is not managed by this process\n".into(),
        ),
    }
}

async fn set_level(State(a): State<Admin>, Query(q): Query<LevelQuery>) -> impl IntoResponse {
    let (Some(h), Some(level)) = (&a.log, q.level) else {
        return (
            StatusCode::BAD_REQUEST,
            "use PUT /logging?level=debug (or a filter such as pilot=debug,info)\n".to_string(),
        );
    };
    match h.set_level(&level) {
        Ok(()) => (StatusCode::OK, format!("log level set to {level}\n")),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// Binds a TCP listener with a message that names the flag to change on failure.
pub async fn bind(addr: SocketAddr, flag: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} ({e}); choose another address with {flag}"),
        )
    })
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves; connections in
/// flight are given up to `drain` to finish.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt as _;

    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tasks.spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    router.clone().oneshot(req.map(axum::body::Body::new))
                });
            if let Err(e) = Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    // Let connections in flight finish, bounded.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Parses a command-line duration in Go's syntax (`90s`, `30m`, `24h`, `1h30m`), the
/// form Istio's flags use. For clap's `value_parser`.
pub fn duration_flag(s: &str) -> Result<std::time::Duration, String> {
    let nanos = crate::istio::types::parse_go_duration(s).map_err(|e| e.to_string())?;
    u64::try_from(nanos)
        .map(std::time::Duration::from_nanos)
        .map_err(|_| format!("{s:?} is too long a duration"))
}

/// The accepted connections of a bound gRPC listener, with `TCP_NODELAY` set on each.
///
/// tonic's `serve_with_incoming*` ignores the builder's `tcp_nodelay`, and without it
/// small responses wait out the peer's delayed ACK (40 ms on Linux) behind Nagle's
/// algorithm. Every gRPC server here serves through this.
pub fn grpc_incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
