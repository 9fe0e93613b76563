//! The HTTP connection manager: serves one downstream connection (HTTP/1.1
//! with keep-alive and upgrades, or HTTP/2 by prior knowledge, per the
//! manager's codec), routes each request with the route table
//! ([`crate::route`]), runs the fault filter, answers redirects and direct
//! responses itself, and hands forwarded requests to the router
//! ([`router`]). Local replies carry Envoy's status codes and bodies.
//!
//! A request's way through: the path is normalised first ([`path`]:
//! `normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action`;
//! the result is both what is routed and what is forwarded, or a 400/307),
//! the `jwt_authn` and `rbac` filters run when configured ([`auth`]: a
//! 401/403 local reply), then [`handle`] routes and forwards it, raced against `request_timeout`
//! and the stream idle timeout ([`idle`]: 408 before the response headers,
//! a reset after); the response body is metered and watched for idleness.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::body::{Body, Metered, PendingLog, Recording};
use crate::cluster::Cluster;
use crate::http::idle::{Activity, IdleBody, IdleTimer, StreamActivity, TimerPool};
use crate::http::path::PathOutcome;
use crate::listener::{Codec, Hcm, RouteSource};
use crate::route::{AppendAction, FaultAbort, HeaderOps, Preflight, RequestView, SelectedAction};
use crate::server::DataPath;
use crate::telemetry::{Peer, Protocol, RequestKey, RequestSeries, Security};

pub mod auth;
pub mod idle;
pub mod path;
mod reply;
pub mod router;

use reply::{GRPC_STATUS, grpc_local_reply};
pub use reply::{ResponseFlags, flagged, local_reply};

/// One HTTP connection manager's counters, by its `stat_prefix` (they
/// outlive listener updates), under Envoy's `http.PREFIX.` names.
#[derive(Debug, Default)]
pub struct HttpStats {
    /// `downstream_cx_total`.
    pub cx_total: AtomicU64,
    /// `downstream_cx_active`.
    pub cx_active: AtomicU64,
    /// `downstream_rq_total`.
    pub rq_total: AtomicU64,
    /// `downstream_rq_1xx` .. `downstream_rq_5xx` (index 1..=5).
    pub rq_class: [AtomicU64; 6],
    /// `no_route`.
    pub no_route: AtomicU64,
    /// `rq_direct_response`.
    pub direct_response: AtomicU64,
    /// `rq_redirect`.
    pub redirect: AtomicU64,
    /// `fault.delays_injected`.
    pub delays_injected: AtomicU64,
    /// `fault.aborts_injected`.
    pub aborts_injected: AtomicU64,
    /// `downstream_rq_failed_path_normalization`.
    pub failed_path_normalization: AtomicU64,
    /// `downstream_rq_redirected_with_normalized_path`.
    pub redirected_with_normalized_path: AtomicU64,
    /// `downstream_rq_idle_timeout`.
    pub idle_timeout: AtomicU64,
    /// `jwt_authn.*` and `rbac.*`.
    pub auth: auth::AuthStats,
}

impl HttpStats {
    /// `(name, value)` pairs under `http.PREFIX.`; the second element of each
    /// is true for gauges.
    pub fn render(&self, prefix: &str, out: &mut Vec<(String, u64, bool)>) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut put = |stat: &str, v: u64, gauge: bool| {
            out.push((format!("http.{prefix}.{stat}"), v, gauge));
        };
        put("downstream_cx_total", get(&self.cx_total), false);
        put("downstream_cx_active", get(&self.cx_active), true);
        put("downstream_rq_total", get(&self.rq_total), false);
        for class in 1..=5 {
            put(
                &format!("downstream_rq_{class}xx"),
                get(&self.rq_class[class]),
                false,
            );
        }
        put("no_route", get(&self.no_route), false);
        put("rq_direct_response", get(&self.direct_response), false);
        put("rq_redirect", get(&self.redirect), false);
        put("fault.delays_injected", get(&self.delays_injected), false);
        put("fault.aborts_injected", get(&self.aborts_injected), false);
        put(
            "downstream_rq_failed_path_normalization",
            get(&self.failed_path_normalization),
            false,
        );
        put(
            "downstream_rq_redirected_with_normalized_path",
            get(&self.redirected_with_normalized_path),
            false,
        );
        put("downstream_rq_idle_timeout", get(&self.idle_timeout), false);
        self.auth.render(prefix, out);
    }

    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct Active<'a>(&'a AtomicU64);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the HTTP layer knows of the downstream connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer.
    pub peer: SocketAddr,
    /// The (original) destination.
    pub dst: SocketAddr,
    /// Whether the listener is inbound (`virtualInbound`).
    pub inbound: bool,
    /// The peer's SPIFFE id, when it presented a mesh certificate (mTLS).
    pub peer_identity: Option<String>,
    /// Whether the connection is TLS (terminated here).
    pub tls: bool,
    /// The peer's certificate (mTLS), for `x-forwarded-client-cert`.
    pub peer_cert: Option<Arc<crate::identity::tls::PeerCert>>,
    /// This side's identity when it presented the workload certificate
    /// (XFCC's `By=`).
    pub local_identity: Option<Arc<str>>,
    /// The SNI the client sent, when TLS was detected.
    pub sni: Option<Arc<str>>,
}

/// Serves HTTP on `io` until the peer closes it.
pub async fn serve<I>(io: I, conn: ConnInfo, hcm: Arc<Hcm>, path: Arc<DataPath>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let codec = hcm.codec;
    let stats = path.http_stats(&hcm.stat_prefix);
    HttpStats::count(&stats.cx_total);
    stats.cx_active.fetch_add(1, Ordering::Relaxed);
    let _active = Active(&stats.cx_active);
    if !hcm.auth.is_empty() {
        stats.auth.seen(&hcm.auth);
    }
    let ctx = Arc::new(ConnCtx {
        hcm,
        path,
        conn,
        stats: Arc::clone(&stats),
        series: Mutex::default(),
        timers: Arc::default(),
        route_timers: TimerPool::default(),
    });
    let svc = service_fn(move |req: Request<Incoming>| {
        let ctx = Arc::clone(&ctx);
        // Boxed: the request's future is large, and HTTP/2 moves it a few
        // times into a task of its own per stream.
        Box::pin(async move {
            let ConnCtx {
                hcm,
                path,
                conn,
                stats,
                series,
                timers,
                route_timers,
            } = &*ctx;
            HttpStats::count(&stats.rq_total);
            let start = Instant::now();
            // The stream idle clock starts with the request headers.
            let activity = Activity::new(start.into(), hcm.stream_idle_timeout);
            let mut req = req;
            let mut path_reply = normalize_path(&mut req, hcm, stats);
            // jwt_authn and RBAC, before routing.
            if path_reply.is_none() && !hcm.auth.is_empty() {
                let (mut parts, body) = req.into_parts();
                path_reply = auth::run(&mut parts, hcm, conn, &stats.auth);
                req = Request::from_parts(parts, body);
            }
            // Span reporting (`tracing`): the decision and the W3C context.
            let mut span = None;
            if let Some(tracing) = &hcm.tracing {
                let (mut parts, body) = req.into_parts();
                span = start_span(tracing, &mut parts, hcm, conn, path);
                req = Request::from_parts(parts, body);
            }
            let grpc = is_grpc(req.headers());
            let request_bytes = req
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let log = path.access_log.as_ref().map(|sink| {
                let h = |name: &str| {
                    req.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                };
                Box::new(PendingLog {
                    sink: Arc::clone(sink),
                    start_time: std::time::SystemTime::now(),
                    method: req.method().to_string(),
                    path: req
                        .uri()
                        .path_and_query()
                        .map_or("/", |p| p.as_str())
                        .to_string(),
                    protocol: if req.version() == http::Version::HTTP_2 {
                        "HTTP/2"
                    } else {
                        "HTTP/1.1"
                    },
                    authority: Some(authority(&req)).filter(|a| !a.is_empty()),
                    user_agent: h("user-agent"),
                    request_id: h("x-request-id"),
                    forwarded_for: h("x-forwarded-for"),
                    cluster: None,
                    upstream_time: None,
                    local: conn.dst,
                    remote: conn.peer,
                })
            });
            let http1 = req.version() != http::Version::HTTP_2;
            // The request body's frames count as activity; without a body
            // the activity is the stream's alone.
            let (req, activity) = if req.body().is_end_stream() {
                (req.map(Body::Incoming), StreamActivity::Local(activity))
            } else {
                let shared = Arc::new(activity);
                let req = req.map(|b| Body::Watched(b, Arc::clone(&shared)));
                (req, StreamActivity::Shared(shared))
            };
            // Envoy's request_timeout: the whole request, until the response
            // headers here.
            let mut request_timer = std::pin::pin!(
                hcm.request_timeout
                    .map(|limit| tokio::time::sleep_until((start + limit).into()))
            );
            let mut idle = IdleTimer::new(Arc::clone(timers));
            // The request's future lives in this block: `activity` is free
            // again after it.
            let raced = {
                let mut handled = std::pin::pin!(async {
                    match path_reply {
                        Some(resp) => (finish(hcm, resp, &[]), None),
                        None => handle(req, hcm, path, conn, stats, &activity, route_timers).await,
                    }
                });
                // The request first: a route's idle_timeout, set while it is
                // polled, is read by the idle timer right after.
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = handled.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    if let Some(timer) = request_timer.as_mut().as_pin_mut()
                        && timer.poll(cx).is_ready()
                    {
                        return Poll::Ready(Some((
                            flagged(local_reply(408, "request timeout"), "DT"),
                            None,
                        )));
                    }
                    idle.poll_expired(&activity, cx).map(|()| None)
                })
                .await
            };
            let (resp, cluster) = raced.unwrap_or_else(|| {
                // The stream idle timeout before the response headers.
                HttpStats::count(&stats.idle_timeout);
                let mut resp = local_reply(408, "stream timeout");
                if http1 {
                    // The request may be unread: the connection ends.
                    resp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                (finish(hcm, flagged(resp, "SI"), &[]), None)
            });
            // A gRPC caller gets its errors the gRPC way (Envoy's local
            // replies to gRPC requests).
            let resp = if grpc { grpc_local_reply(resp) } else { resp };
            let log = log.map(|mut l| {
                l.cluster = cluster.as_ref().map(|c| c.name.clone());
                l.upstream_time = resp
                    .headers()
                    .get("x-envoy-upstream-service-time")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .map(Duration::from_millis);
                l
            });
            let status = resp.status().as_u16();
            let class = (status / 100) as usize;
            if (1..=5).contains(&class) {
                HttpStats::count(&stats.rq_class[class]);
            }
            let flags = resp
                .extensions()
                .get::<ResponseFlags>()
                .map_or("-", |f| f.0);
            let grpc_status = resp
                .headers()
                .get(&GRPC_STATUS)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let series = {
                let mut cache = series.lock().unwrap_or_else(|p| p.into_inner());
                let same = |c: &SeriesCache| match (&c.cluster, &cluster) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                };
                match cache.as_ref() {
                    Some(c) if same(c) && c.grpc == grpc => Arc::clone(&c.series),
                    _ => {
                        let s = request_series(path, conn, cluster.as_deref(), grpc);
                        *cache = Some(SeriesCache {
                            cluster: cluster.clone(),
                            grpc,
                            series: Arc::clone(&s),
                        });
                        s
                    }
                }
            };
            let recording = Recording {
                series,
                status,
                grpc: grpc_status,
                flags,
                start,
                request_bytes,
                response_bytes: 0,
                log,
                span: span.map(|mut s| {
                    s.set_cluster(cluster.as_ref().map(|c| c.name.clone()));
                    s
                }),
            };
            let mut resp = resp;
            if conn.inbound && path.inbound_draining() {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // After the headers only a timeout can end the stream; none
            // stays none.
            let watch = activity.deadline().is_some().then_some((activity, idle));
            Ok::<_, Infallible>(
                resp.map(|b| IdleBody::new(Metered::new(b, Some(recording)), watch)),
            )
        })
    });
    let io = TokioIo::new(io);
    let result = match codec {
        Codec::Auto => {
            hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(io, svc)
                .await
        }
        Codec::Http1 => hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .with_upgrades()
            .await
            .map_err(Into::into),
        Codec::Http2 => hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await
            .map_err(Into::into),
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "downstream HTTP connection ended: {e}");
    }
}

/// Starts the span of a request on a connection manager with `tracing`.
fn start_span(
    tracing: &crate::telemetry::span::TracingConfig,
    parts: &mut http::request::Parts,
    hcm: &Hcm,
    conn: &ConnInfo,
    path: &Arc<DataPath>,
) -> Option<Box<crate::telemetry::span::ActiveSpan>> {
    let telemetry = &path.telemetry;
    let info = crate::telemetry::span::StartInfo {
        peer: conn.peer.ip(),
        // No address is internal by default (Envoy 1.40's
        // `internal_address_config`): `x-envoy-force-trace` is not honoured.
        internal: false,
        generate_request_id: hcm.generate_request_id,
        node_id: telemetry.node_id(),
        zone: telemetry.zone(),
        stats: telemetry.otlp_stats(),
    };
    tracing.start(parts, &info, || otlp_resolver(path))
}

/// Resolves the span collector's cluster in the current configuration: one
/// of its hosts, by the cluster's load balancer; plaintext only.
fn otlp_resolver(path: &Arc<DataPath>) -> crate::telemetry::otlp::Resolve {
    let path = Arc::downgrade(path);
    Arc::new(move |name: &str| {
        let path = path.upgrade().ok_or("the proxy is stopping")?;
        let dp = path.current();
        let cluster = dp
            .clusters
            .get(name)
            .ok_or_else(|| format!("cluster `{name}` (grpc_service.envoy_grpc) is not known"))?;
        if cluster.tls.is_some() {
            return Err(format!(
                "cluster `{name}`: transport_socket (TLS) to the span collector is not supported"
            ));
        }
        let host = cluster
            .pick(&crate::cluster::PickInput::default(), &|_| false)
            .map_err(|_| format!("cluster `{name}` has no healthy host"))?;
        match &host.addr {
            crate::cluster::HostAddr::Ip(a) => Ok(*a),
            other => Err(format!(
                "cluster `{name}`: host {other} is not an IP address"
            )),
        }
    })
}

/// What the requests of one downstream connection share: one reference
/// counted per request.
struct ConnCtx {
    hcm: Arc<Hcm>,
    path: Arc<DataPath>,
    conn: ConnInfo,
    stats: Arc<HttpStats>,
    /// The metric series of the last destination, reused while the
    /// connection's requests keep going there.
    series: Mutex<Option<SeriesCache>>,
    /// The stream idle timers between streams.
    timers: Arc<TimerPool>,
    /// The route timeouts' timers between streams.
    route_timers: TimerPool,
}

struct SeriesCache {
    cluster: Option<Arc<Cluster>>,
    grpc: bool,
    series: Arc<RequestSeries>,
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The metric series of requests on `conn` to `cluster`.
fn request_series(
    path: &DataPath,
    conn: &ConnInfo,
    cluster: Option<&Cluster>,
    grpc: bool,
) -> Arc<RequestSeries> {
    let telemetry = &path.telemetry;
    let (host, name, namespace) = cluster.map(|c| c.service.clone()).unwrap_or_default();
    telemetry.request_series(&RequestKey {
        reporter: telemetry.reporter(conn.inbound),
        peer: match &conn.peer_identity {
            Some(id) => Arc::new(Peer {
                principal: id.clone(),
                ..Peer::default()
            }),
            None => Peer::unknown(),
        },
        destination_service: host,
        destination_service_name: name,
        destination_service_namespace: namespace,
        request_protocol: if grpc { Protocol::Grpc } else { Protocol::Http },
        connection_security_policy: if conn.peer_identity.is_some() {
            Security::MutualTls
        } else {
            Security::None
        },
    })
}

/// Applies the connection manager's path settings to `req` in place (what is
/// routed is what is forwarded, as in Envoy); the local reply when the path
/// is refused (400) or redirected (307).
fn normalize_path<B>(req: &mut Request<B>, hcm: &Hcm, stats: &HttpStats) -> Option<Response<Body>> {
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let new = match hcm.paths.apply(path_and_query) {
        PathOutcome::Unchanged => return None,
        PathOutcome::Rewritten(p) => p,
        PathOutcome::Reject => {
            HttpStats::count(&stats.failed_path_normalization);
            return Some(local_reply(400, ""));
        }
        PathOutcome::Redirect(location) => {
            HttpStats::count(&stats.redirected_with_normalized_path);
            let mut resp = local_reply(307, "");
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return Some(resp);
        }
    };
    let mut parts = req.uri().clone().into_parts();
    let Ok(pq) = new.parse() else {
        HttpStats::count(&stats.failed_path_normalization);
        return Some(local_reply(400, ""));
    };
    parts.path_and_query = Some(pq);
    match http::Uri::from_parts(parts) {
        Ok(uri) => {
            *req.uri_mut() = uri;
            None
        }
        Err(_) => {
            HttpStats::count(&stats.failed_path_normalization);
            Some(local_reply(400, ""))
        }
    }
}

/// Handles one request. Not `async fn`: its arguments would be kept in the
/// future beside the locals they are moved to (rust-lang/rust#62958).
#[allow(clippy::manual_async_fn)]
fn handle(
    req: Request<Body>,
    hcm: &Hcm,
    path: &DataPath,
    conn: &ConnInfo,
    stats: &HttpStats,
    activity: &Activity,
    timers: &TimerPool,
) -> impl Future<Output = (Response<Body>, Option<Arc<Cluster>>)> {
    async move {
        let start = Instant::now();
        let dp = path.current();
        let table = match &hcm.routes {
            RouteSource::Rds(name) => match dp.routes.get(name) {
                Some(t) => Arc::clone(t),
                None => {
                    HttpStats::count(&stats.no_route);
                    return (finish(hcm, flagged(local_reply(404, ""), "NR"), &[]), None);
                }
            },
            RouteSource::Inline(t) => Arc::clone(t),
        };
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|v| v.to_str().ok())
            })
            .unwrap_or_default();
        let scheme = req.uri().scheme_str().unwrap_or("http");
        let random = fastrand::u64(..);
        let view = RequestView {
            authority,
            method: req.method().as_str(),
            path_and_query: req.uri().path_and_query().map_or("/", |p| p.as_str()),
            scheme,
            headers: req.headers(),
            random,
        };
        let Some(selected) = table.select(&view) else {
            HttpStats::count(&stats.no_route);
            return (finish(hcm, flagged(local_reply(404, ""), "NR"), &[]), None);
        };
        let ops = &selected.header_ops;
        // The route's idle_timeout replaces the connection manager's.
        if let Some(t) = selected.forward.and_then(|f| f.idle_timeout) {
            activity.set_timeout(Some(t).filter(|t| !t.is_zero()));
        }
        match selected.action {
            SelectedAction::Redirect(_) | SelectedAction::RequireTls => {
                HttpStats::count(&stats.redirect);
                let location = selected.redirect_location(&view).unwrap_or_default();
                let mut resp = local_reply(selected.response_status().unwrap_or(301), "");
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                return (finish(hcm, resp, ops), None);
            }
            SelectedAction::DirectResponse(d) => {
                HttpStats::count(&stats.direct_response);
                let mut resp = Response::new(d.body.clone().map_or(Body::Empty, Body::full));
                *resp.status_mut() = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
                if d.body.is_some() {
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                }
                return (finish(hcm, resp, ops), None);
            }
            SelectedAction::Cluster(_) => {}
        }
        if hcm.fault
            && let Some(fault) = selected.fault
        {
            if let Some((delay, fraction)) = fault.delay
                && fraction.hits(fastrand::u64(..))
            {
                HttpStats::count(&stats.delays_injected);
                tokio::time::sleep(delay).await;
            }
            if let Some((abort, fraction)) = fault.abort
                && fraction.hits(fastrand::u64(..))
            {
                HttpStats::count(&stats.aborts_injected);
                let resp = match abort {
                    FaultAbort::Http(status) => local_reply(status, "fault filter abort"),
                    FaultAbort::Grpc(code) => {
                        let mut r = local_reply(200, "");
                        r.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/grpc"),
                        );
                        r.headers_mut()
                            .insert("grpc-status", HeaderValue::from(code));
                        r.headers_mut().insert(
                            "grpc-message",
                            HeaderValue::from_static("fault filter abort"),
                        );
                        r
                    }
                };
                return (finish(hcm, flagged(resp, "FI"), ops), None);
            }
        }
        // CORS: a preflight the policy answers, or headers for the response.
        let mut cors_headers = Vec::new();
        if hcm.cors
            && let Some(cors) = selected.cors
        {
            let random = fastrand::u64(..);
            match cors.preflight(&view, random) {
                Preflight::Answer(headers) => {
                    let mut resp = local_reply(200, "");
                    add_headers(resp.headers_mut(), headers);
                    return (finish(hcm, resp, ops), None);
                }
                Preflight::Forward => {}
                Preflight::NotPreflight => cors_headers = cors.response_headers(&view, random),
            }
        }
        let hash_input = router::HashInput {
            hash: selected.hash(&view, Some(conn.peer.ip())),
            cookies: selected.cookies_to_set(&view, Some(conn.peer.ip())),
        };
        let new_path = selected.rewritten_path(view.path_and_query);
        let (mut resp, cluster) = router::forward(
            req, &selected, new_path, hash_input, hcm, &dp, conn, start, timers,
        )
        .await;
        add_headers(resp.headers_mut(), cors_headers);
        (finish(hcm, resp, ops), cluster)
    }
}

fn add_headers(headers: &mut HeaderMap, add: Vec<(&'static str, String)>) {
    for (name, value) in add {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// The request's authority: the URI's (HTTP/2, absolute form), else `Host`.
pub fn authority<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// The authority of request `parts` (see [`authority`]).
pub fn authority_of(parts: &http::request::Parts) -> String {
    parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// Applies the response header mutations and the `server` header.
fn finish(hcm: &Hcm, mut resp: Response<Body>, ops: &[&HeaderOps]) -> Response<Body> {
    let headers = resp.headers_mut();
    for op in ops {
        apply(headers, &op.response_remove, &op.response_add);
    }
    match (hcm.server_header, &hcm.server_value) {
        // OVERWRITE
        (0, Some(v)) => {
            headers.insert(header::SERVER, v.clone());
        }
        // APPEND_IF_ABSENT
        (1, Some(v)) if !headers.contains_key(header::SERVER) => {
            headers.insert(header::SERVER, v.clone());
        }
        _ => {}
    }
    resp
}

/// Removes then adds headers per one level's mutations.
pub fn apply(headers: &mut HeaderMap, remove: &[String], add: &[crate::route::HeaderAdd]) {
    for name in remove {
        headers.remove(name.as_str());
    }
    for h in add {
        if h.value.is_empty() && !h.keep_empty_value {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) else {
            continue;
        };
        match h.action {
            AppendAction::AppendIfExistsOrAdd => {
                headers.append(name, value);
            }
            AppendAction::AddIfAbsent => {
                if !headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
            AppendAction::OverwriteIfExistsOrAdd => {
                headers.insert(name, value);
            }
            AppendAction::OverwriteIfExists => {
                if headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
        }
    }
}

/// Milliseconds of `d`, for `x-envoy-*` headers.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
