//! Envoy's admin interface, for what the proxy has so far: the endpoints
//! istio-agent, istioctl and operators use on the admin address (15000).
//!
//! It owns the HTTP routes and the server state they report; it reads the
//! bootstrap and the [`XdsStore`] snapshots and changes nothing in them. A
//! request goes: axum router ([`router`]) → one handler per path below, each
//! reading the shared [`Admin`] → text or JSON shaped as Envoy's.
//!
//! | path | method | answer |
//! | --- | --- | --- |
//! | `/ready` | GET | 200 `LIVE` once the first full xDS config is applied (at once without ADS) and, with `--ca-addr`, the first workload certificate is in, else 503 `PRE_INITIALIZING`; 503 `DRAINING` after `/healthcheck/fail` or once shutdown started |
//! | `/server_info` | GET | JSON: version, state, node, uptime, command line options (a subset) |
//! | `/config_dump` | GET | Envoy's `ConfigDump` JSON ([`config_dump`]) |
//! | `/clusters` | GET | every cluster's circuit breakers and every host's counters and health flags, Envoy's text lines ([`clusters`]) |
//! | `/stats` | GET | `name: value` lines ([`stats`]); `?format=json` and `?format=prometheus` too |
//! | `/stats/prometheus` | GET | the same stats in Prometheus text, `envoy_` prefixed |
//! | `/logging` | GET, POST | the active log filter; `POST ?level=debug` changes it (Envoy's level names accepted) |
//! | `/quitquitquit` | POST | starts shutdown, answers `OK` |
//! | `/healthcheck/fail`, `/healthcheck/ok` | POST | sets or clears the failed flag that turns `/ready` to `DRAINING` |
//! | `/`, `/help` | GET | the list of endpoints (also the body of every 404) |
//!
//! Not served yet: `/clusters?format=json`, `/listeners`, `/certs`, `/memory`, `/runtime`,
//! `/drain_listeners`, `/reset_counters`, `/stats?filter=` (they need the data
//! plane or are not used by Istio's tooling yet). Request bodies are limited to
//! [`MAX_BODY_BYTES`]; no endpoint reads one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::runtime::{LogHandle, Stop};

use crate::bootstrap::Bootstrap;
use crate::config::Config;
use crate::xds::XdsStore;

pub mod clusters;
pub mod config_dump;
pub mod stats;

/// The largest request body the admin server accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The endpoints served and what they do (Envoy's help texts).
pub const ENDPOINTS: &[(&str, &str)] = &[
    ("/", "Admin home page"),
    ("/clusters", "upstream cluster status"),
    ("/config_dump", "dump current Envoy configs"),
    (
        "/healthcheck/fail",
        "cause the server to fail health checks (POST)",
    ),
    (
        "/healthcheck/ok",
        "cause the server to pass health checks (POST)",
    ),
    ("/help", "print out list of admin commands"),
    (
        "/logging",
        "query/change logging levels (POST ?level=debug to change)",
    ),
    ("/quitquitquit", "exit the server (POST)"),
    (
        "/ready",
        "print server state, return 200 if LIVE, otherwise return 503",
    ),
    ("/server_info", "print server version/status information"),
    ("/stats", "print server stats"),
    (
        "/stats/prometheus",
        "print server stats in prometheus format",
    ),
];

/// Envoy's server states, numbered as its `server.state` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Serving with its full configuration.
    Live = 0,
    /// Health checks failed on purpose, or shutting down.
    Draining = 1,
    /// Waiting for the first full xDS configuration.
    PreInitializing = 2,
}

impl ServerState {
    /// Envoy's name (`LIVE`, `DRAINING`, `PRE_INITIALIZING`).
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
            ServerState::PreInitializing => "PRE_INITIALIZING",
        }
    }
}

/// What the admin endpoints read.
#[derive(Clone)]
pub struct Context {
    /// The proxy's flags (shown by `/server_info`).
    pub config: Config,
    /// The bootstrap (shown by `/config_dump`).
    pub bootstrap: Bootstrap,
    /// The xDS client's published snapshots and counters.
    pub store: XdsStore,
    /// Whether ADS is configured; without it the server is `LIVE` at once.
    pub ads: bool,
    /// Triggered by `/quitquitquit`.
    pub stop: Stop,
    /// Where `/logging` reads and changes the level, if logging is managed here.
    pub log: Option<LogHandle>,
    /// The data path (its clusters' and listeners' statistics).
    pub data_path: std::sync::Arc<crate::server::DataPath>,
    /// The workload identity (`--ca-addr`): the server is not `LIVE` before
    /// its first certificate, as Envoy's clusters naming SDS secrets stay
    /// warming (and the server initializing) until the secrets arrive.
    pub identity: Option<std::sync::Arc<crate::identity::CertManager>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .field("ads", &self.ads)
            .finish_non_exhaustive()
    }
}

struct Inner {
    context: Context,
    started: Instant,
    health_failed: AtomicBool,
    draining: AtomicBool,
}

/// The shared state behind the admin endpoints. Cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// Admin state over `context`, started now.
    pub fn new(context: Context) -> Admin {
        Admin {
            inner: Arc::new(Inner {
                context,
                started: Instant::now(),
                health_failed: AtomicBool::new(false),
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// What the endpoints read.
    pub fn context(&self) -> &Context {
        &self.inner.context
    }

    /// The server state: `DRAINING` after `/healthcheck/fail` or once shutdown
    /// started, `LIVE` once synced (or without ADS), `PRE_INITIALIZING` before.
    pub fn state(&self) -> ServerState {
        let inner = &self.inner;
        if inner.draining.load(Ordering::Acquire) || inner.health_failed.load(Ordering::Acquire) {
            ServerState::Draining
        } else if (!inner.context.ads || inner.context.store.initial_sync_done())
            && inner
                .context
                .identity
                .as_ref()
                .is_none_or(|id| id.current().is_some())
        {
            ServerState::Live
        } else {
            ServerState::PreInitializing
        }
    }

    /// Marks the server as shutting down (`/ready` answers 503 `DRAINING`).
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Seconds since the admin state was created.
    pub fn uptime_secs(&self) -> u64 {
        self.inner.started.elapsed().as_secs()
    }
}

/// Every admin endpoint, over `admin`.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/", get(help))
        .route("/help", get(help))
        .route("/ready", get(ready))
        .route("/server_info", get(server_info))
        .route("/config_dump", get(config_dump_handler))
        .route("/clusters", get(clusters_handler))
        .route("/stats", get(stats_handler))
        .route("/stats/prometheus", get(prometheus))
        .route("/logging", get(get_logging).post(set_logging))
        .route("/quitquitquit", post(quit))
        .route("/healthcheck/fail", post(healthcheck_fail))
        .route("/healthcheck/ok", post(healthcheck_ok))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(admin)
}

/// istio-agent's status port (15020): `/healthz/ready`, the merged
/// `/stats/prometheus` (Istio's metrics and the proxy's own), and
/// `POST /quitquitquit` from the pod itself (loopback peers only), which a
/// Job's app calls to end a classic sidecar. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn status_router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz/ready", get(healthz_ready))
        .route("/stats/prometheus", get(prometheus))
        .route("/quitquitquit", post(status_quit))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(admin)
}

/// Envoy's Prometheus port (15090): `/stats/prometheus`.
pub fn prometheus_router(admin: Admin) -> Router {
    Router::new()
        .route("/stats/prometheus", get(prometheus))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(admin)
}

/// istio-agent's `/quitquitquit`: only from the pod's own loopback.
async fn status_quit(
    State(a): State<Admin>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
) -> Response {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "/quitquitquit is accepted only from 127.0.0.1 or ::1 (inside the pod)\n",
        )
            .into_response();
    }
    quit(State(a)).await.into_response()
}

/// The sidecar's health port (15021): `/healthz/ready` only.
pub fn health_router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz/ready", get(healthz_ready))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(admin)
}

/// 200 once the first full configuration arrived and while not draining;
/// 503 otherwise (kubelet's readiness probe).
async fn healthz_ready(State(a): State<Admin>) -> Response {
    match a.state() {
        ServerState::Live => (StatusCode::OK, "").into_response(),
        state => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", state.name()),
        )
            .into_response(),
    }
}

fn help_text() -> String {
    ENDPOINTS
        .iter()
        .fold("admin commands are:\n".to_owned(), |acc, (path, what)| {
            format!("{acc}  {path}: {what}\n")
        })
}

async fn help() -> String {
    help_text()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        format!("invalid path. {}", help_text()),
    )
        .into_response()
}

async fn ready(State(a): State<Admin>) -> Response {
    let state = a.state();
    let status = if state == ServerState::Live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, format!("{}\n", state.name())).into_response()
}

fn json(value: &serde_json::Value) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            format!("{text}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn server_info(State(a): State<Admin>) -> Response {
    let c = a.context();
    let node = match common::envoy_json::to_json("envoy.config.core.v3.Node", &c.bootstrap.node) {
        Ok(node) => node,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    };
    let uptime = format!("{}s", a.uptime_secs());
    let cfg = &c.config;
    let info = serde_json::json!({
        "version": format!("mizzen-proxy/{}", env!("CARGO_PKG_VERSION")),
        "state": a.state().name(),
        "command_line_options": {
            "config_path": cfg.config_path.display().to_string(),
            "config_yaml": cfg.config_yaml.clone().unwrap_or_default(),
            "concurrency": cfg.workers(),
            "log_level": cfg.log_level,
            "service_cluster": cfg.service_cluster.clone().unwrap_or_default(),
            "service_node": cfg.service_node.clone().unwrap_or_default(),
            "drain_time": format!("{}s", cfg.drain_time_s),
            "parent_shutdown_time": format!("{}s", cfg.parent_shutdown_time_s),
        },
        "node": node,
        "uptime_current_epoch": uptime,
        "uptime_all_epochs": uptime,
    });
    json(&info)
}

#[derive(serde::Deserialize)]
struct ClustersQuery {
    format: Option<String>,
}

async fn clusters_handler(State(a): State<Admin>, Query(q): Query<ClustersQuery>) -> Response {
    match q.format.as_deref() {
        None | Some("text") => {
            let c = a.context();
            let statics: Vec<&str> = c
                .bootstrap
                .static_clusters
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            clusters::text(&c.data_path.current(), &statics).into_response()
        }
        Some(other) => (
            StatusCode::BAD_REQUEST,
            format!("/clusters?format={other} is not supported; use the text format\n"),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ConfigDumpQuery {
    resource: Option<String>,
    include_eds: Option<String>,
}

async fn config_dump_handler(State(a): State<Admin>, Query(q): Query<ConfigDumpQuery>) -> Response {
    let c = a.context();
    // Endpoints are always in the dump; `include_eds` changes nothing.
    let _ = q.include_eds;
    match config_dump::dump(&c.bootstrap, &c.store.load()) {
        Ok(dump) => match q.resource.as_deref() {
            None => json(&dump),
            Some(resource) => match config_dump::select_resource(&dump, resource) {
                Some(only) => json(&only),
                None => (
                    StatusCode::NOT_FOUND,
                    format!(
                        "no config dump field named {resource:?}: use a repeated field such as \
                         dynamic_active_clusters, dynamic_listeners or dynamic_route_configs\n"
                    ),
                )
                    .into_response(),
            },
        },
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct StatsQuery {
    format: Option<String>,
}

async fn stats_handler(State(a): State<Admin>, Query(q): Query<StatsQuery>) -> Response {
    let all = stats::collect(&a);
    match q.format.as_deref() {
        None | Some("text") => stats::text(&all).into_response(),
        Some("json") => json(&stats::json(&all)),
        Some("prometheus") => prometheus_response(&a, &all),
        Some(other) => (
            StatusCode::BAD_REQUEST,
            format!("unknown format {other:?}: use text, json or prometheus\n"),
        )
            .into_response(),
    }
}

/// Envoy's stats and Istio's standard metrics (`istio_requests_total`, ...),
/// in Prometheus text.
fn prometheus_response(a: &Admin, all: &[stats::Stat]) -> Response {
    let mut body = String::new();
    a.context().data_path.telemetry.render_prometheus(&mut body);
    body.push_str(&stats::prometheus(all));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        body,
    )
        .into_response()
}

async fn prometheus(State(a): State<Admin>) -> Response {
    prometheus_response(&a, &stats::collect(&a))
}

#[derive(serde::Deserialize)]
struct LevelQuery {
    level: Option<String>,
}

async fn get_logging(State(a): State<Admin>, Query(q): Query<LevelQuery>) -> Response {
    if q.level.is_some() {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "changing the level needs POST /logging?level=...\n",
        )
            .into_response();
    }
    match &a.context().log {
        Some(h) => (
            StatusCode::OK,
            format!("active loggers:\n  {}\n", h.level()),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "logging is not managed by this process\n",
        )
            .into_response(),
    }
}

async fn set_logging(State(a): State<Admin>, Query(q): Query<LevelQuery>) -> Response {
    let Some(h) = &a.context().log else {
        return (
            StatusCode::NOT_FOUND,
            "logging is not managed by this process\n",
        )
            .into_response();
    };
    let Some(level) = q.level else {
        return (
            StatusCode::OK,
            format!("active loggers:\n  {}\n", h.level()),
        )
            .into_response();
    };
    let filter = crate::config::tracing_level(&level);
    match h.set_level(&filter) {
        Ok(()) => {
            tracing::info!(level = %filter, "log level changed on the admin interface");
            (
                StatusCode::OK,
                format!("active loggers:\n  {}\n", h.level()),
            )
                .into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn quit(State(a): State<Admin>) -> &'static str {
    tracing::info!("POST /quitquitquit: shutting down");
    a.set_draining();
    a.context().stop.trigger();
    "OK\n"
}

async fn healthcheck_fail(State(a): State<Admin>) -> &'static str {
    a.inner.health_failed.store(true, Ordering::Release);
    "OK\n"
}

async fn healthcheck_ok(State(a): State<Admin>) -> &'static str {
    a.inner.health_failed.store(false, Ordering::Release);
    "OK\n"
}
