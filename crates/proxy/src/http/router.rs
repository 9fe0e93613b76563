//! The router: forwards a routed request to its cluster with the route's
//! policies: header mutations, path and host rewrites, the overall timeout
//! and per-try timeouts, retries (Envoy's `retry_on` conditions, back-off,
//! `previous_hosts`, the cluster's `max_retries` budget), request mirroring,
//! circuit breakers (`max_requests`: 503 `overflow`), outlier detection
//! outcomes, and WebSocket upgrades (the upgraded connection is spliced).
//!
//! A request body is buffered (up to [`RETRY_BUFFER_LIMIT`]) only when a
//! retry or a mirror may need to send it again; otherwise it streams, and a
//! request whose body was already sent is not retried.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body as _;

use super::idle::TimerPool;
use super::{ConnInfo, apply, flagged, local_reply, millis};
use crate::balance::Outcome;
use crate::body::Body;
use crate::cluster::{Cluster, Host, NoHost, PickInput, UpstreamProtocol};
use crate::dataplane::Dataplane;
use crate::listener::Hcm;
use crate::route::{HostRewrite, RetryPolicy, Selected, SelectedAction, SetCookie};
use crate::upstream::{self, UpstreamError};

/// The largest request body kept in memory so that it can be retried or
/// mirrored (Envoy's default `per_connection_buffer_limit_bytes`, 1 MiB).
pub const RETRY_BUFFER_LIMIT: u64 = 1024 * 1024;

/// What the route's hash policies made of a request.
#[derive(Debug, Default)]
pub struct HashInput {
    /// The request's hash, for ring hash and Maglev clusters.
    pub hash: Option<u64>,
    /// Cookies the hash policies generate (set only for hashing clusters).
    pub cookies: Vec<SetCookie>,
}

/// Hop-by-hop headers never forwarded (names, not strings: no parsing per
/// request).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

// Header names set or read on every request: constants, not strings parsed
// per request.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const X_ENVOY_EXPECTED_RQ_TIMEOUT_MS: HeaderName =
    HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

/// Forwards `req` as `selected` says and returns the response to send
/// downstream (the upstream's, or a local reply).
// Not `async fn`: its arguments would be kept in the future beside the
// locals they are moved to (rust-lang/rust#62958), and this future is part of
// every request's.
#[allow(clippy::manual_async_fn)]
#[allow(clippy::too_many_arguments)]
pub fn forward(
    req: Request<Body>,
    selected: &Selected<'_>,
    new_path: Option<String>,
    hash: HashInput,
    hcm: &Hcm,
    dp: &Dataplane,
    conn: &ConnInfo,
    start: Instant,
    timers: &TimerPool,
) -> impl Future<Output = (Response<Body>, Option<Arc<Cluster>>)> {
    async move {
        let SelectedAction::Cluster(name) = selected.action else {
            return (local_reply(500, ""), None);
        };
        let Some(cluster) = dp.clusters.get(name) else {
            return (flagged(local_reply(503, ""), "NC"), None);
        };
        let hashing = cluster.hashes();
        let mut resp = forward_to(
            req,
            selected,
            new_path,
            hash.hash.filter(|_| hashing),
            hcm,
            dp,
            conn,
            start,
            timers,
            cluster,
        )
        .await;
        if hashing {
            for c in hash.cookies {
                if let Ok(v) = HeaderValue::from_str(&c.header_value()) {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
            }
        }
        (resp, Some(Arc::clone(cluster)))
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_to<'a>(
    req: Request<Body>,
    selected: &'a Selected<'_>,
    new_path: Option<String>,
    hash: Option<u64>,
    hcm: &Hcm,
    dp: &'a Dataplane,
    conn: &'a ConnInfo,
    start: Instant,
    timers: &'a TimerPool,
    cluster: &'a Arc<Cluster>,
) -> impl Future<Output = Response<Body>> + use<'a> {
    // The request is taken apart before the future is made, so that the
    // future (moved a few times per request) does not keep it.
    let mut prep = prepare(req, selected, new_path, hcm, conn, cluster);
    async move {
        // Body: buffered when it may be sent more than once.
        let needs_copy = prep.retry.is_some() || !prep.mirrors.is_empty();
        let body = std::mem::replace(&mut prep.body, Body::Empty);
        let body = if body.is_end_stream() {
            Payload::Buffered(Bytes::new())
        } else if needs_copy
            && body
                .size_hint()
                .upper()
                .is_some_and(|n| n <= RETRY_BUFFER_LIMIT)
        {
            match body.collect().await {
                Ok(b) => Payload::Buffered(b.to_bytes()),
                Err(_) => return flagged(local_reply(400, "downstream body read failed"), "DPE"),
            }
        } else {
            Payload::Streaming(Some(body))
        };
        let http2 = prep.template.http2;
        for m in std::mem::take(&mut prep.mirrors) {
            if let (Some(shadow), Payload::Buffered(b)) = (dp.clusters.get(&m.cluster), &body) {
                let req = prep.template.build(Body::full(b.clone()), Some("-shadow"));
                let (shadow, input) = (
                    Arc::clone(shadow),
                    PickInput {
                        hash: None,
                        original_dst: Some(conn.dst),
                    },
                );
                tokio::spawn(async move {
                    if let Ok(host) = shadow.pick(&input, &|_| false) {
                        let _ = upstream::send(&shadow, &host, req, http2).await;
                    }
                });
            }
        }

        let timeout = prep.timeout;
        let upgrade = prep.upgrade;
        let attempt = Attempts {
            cluster,
            template: &mut prep.template,
            conn,
            hash,
            retry: prep.retry,
            per_try: prep.per_try,
        };
        let result = match timeout {
            Some(t) => {
                // A pooled timer: no timer registration per request.
                let mut timer = timers.lease((start + t).into());
                let mut run = std::pin::pin!(attempt.run(body));
                let raced = std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = run.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    timer.poll_expired(cx).map(|()| None)
                })
                .await;
                match raced {
                    Some(r) => r,
                    None => {
                        cluster.stats.rq_timeout.fetch_add(1, Ordering::Relaxed);
                        Err(flagged(local_reply(504, "upstream request timeout"), "UT"))
                    }
                }
            }
            None => attempt.run(body).await,
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(local) => return local,
        };
        cluster.stats.status(resp.status().as_u16());
        strip_hop_by_hop(resp.headers_mut(), upgrade);
        resp.headers_mut().insert(
            X_ENVOY_UPSTREAM_SERVICE_TIME,
            HeaderValue::from(millis(start.elapsed())),
        );
        if upgrade && resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
            splice_upgrade(&mut resp, prep.downstream_upgrade.take());
        }
        resp
    }
}

/// What [`forward_to`] makes of a request before sending it.
struct Prepared<'s> {
    template: Template,
    body: Body,
    timeout: Option<Duration>,
    retry: Option<&'s RetryPolicy>,
    per_try: Option<Duration>,
    mirrors: Vec<&'s crate::route::Mirror>,
    upgrade: bool,
    downstream_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// The upstream request's template from `req` and the route: hop-by-hop
/// headers out, Envoy's `x-forwarded-*`, `x-request-id`, trace and timeout
/// headers in, the route's header mutations, path and host rewrites.
fn prepare<'s>(
    mut req: Request<Body>,
    selected: &Selected<'s>,
    new_path: Option<String>,
    hcm: &Hcm,
    conn: &ConnInfo,
    cluster: &Cluster,
) -> Prepared<'s> {
    let forward = selected.forward;
    let upgrade = hcm.websocket && is_websocket(req.headers());
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();

    // Headers.
    // HTTP/2 has no connection-specific headers (its codec refuses them).
    if parts.version != Version::HTTP_2 {
        strip_hop_by_hop(&mut parts.headers, upgrade);
    }
    if hcm.use_remote_address {
        // The edge: the peer's address joins `x-forwarded-for` and is the
        // external address (Envoy's use_remote_address).
        let ip = conn.peer.ip().to_string();
        let xff = match parts
            .headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(existing) if !existing.is_empty() => format!("{existing}, {ip}"),
            _ => ip.clone(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert(X_FORWARDED_FOR, v);
        }
        if let Ok(v) = HeaderValue::from_str(&ip) {
            parts.headers.insert("x-envoy-external-address", v);
        }
    }
    if !parts.headers.contains_key(&X_FORWARDED_PROTO) {
        parts
            .headers
            .insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if hcm.generate_request_id
        && !parts.headers.contains_key(&X_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_bytes(&request_id())
    {
        parts.headers.insert(X_REQUEST_ID, v);
    }
    // Continue the caller's trace (B3 and W3C), as a child span; with
    // `tracing`, the connection manager already did (W3C only).
    if hcm.tracing.is_none() {
        crate::telemetry::propagate_trace(&mut parts.headers, false, || fastrand::u64(..));
    }
    let mut timeout = selected.timeout();
    if let Some(max) = forward.and_then(|f| f.grpc_timeout_header_max)
        && let Some(t) = parts.headers.get(&GRPC_TIMEOUT).and_then(grpc_timeout)
    {
        timeout = Some(if max.is_zero() { t } else { t.min(max) });
    }
    let retry = selected.retry;
    let per_try = retry.and_then(|r| r.per_try_timeout);
    if let Some(t) = per_try.or(timeout) {
        parts
            .headers
            .insert(X_ENVOY_EXPECTED_RQ_TIMEOUT_MS, HeaderValue::from(millis(t)));
    }
    for op in &selected.header_ops {
        apply(&mut parts.headers, &op.request_remove, &op.request_add);
    }
    // The authority changes only on a rewrite; otherwise the Host header (or
    // HTTP/2's :authority) goes up as it came.
    let rewritten_host = match forward.map(|f| &f.host_rewrite) {
        Some(HostRewrite::Literal(h)) => Some(h.clone()),
        _ => None,
    };
    let path = match new_path {
        Some(p) => p.parse().unwrap_or_else(|_| PathAndQuery::from_static("/")),
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let http2 = match cluster.protocol {
        UpstreamProtocol::Http1 => false,
        UpstreamProtocol::Http2 => true,
        UpstreamProtocol::Downstream => parts.version == Version::HTTP_2,
    } && !upgrade;

    let mirrors: Vec<&crate::route::Mirror> = forward
        .map(|f| {
            f.mirrors
                .iter()
                .filter(|m| m.fraction.is_none_or(|fr| fr.hits(fastrand::u64(..))))
                .collect()
        })
        .unwrap_or_default();
    let authority = match rewritten_host {
        Some(h) => Some(h),
        // No Host header (an HTTP/2 request) or an HTTP/2 upstream: name it.
        None if http2 || !parts.headers.contains_key(header::HOST) => {
            Some(super::authority_of(&parts))
        }
        None => None,
    };
    Prepared {
        template: Template {
            method: parts.method,
            path,
            authority,
            headers: parts.headers,
            http2,
        },
        body,
        timeout,
        retry,
        per_try,
        mirrors,
        upgrade,
        downstream_upgrade,
    }
}

fn is_websocket(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn strip_hop_by_hop(headers: &mut http::HeaderMap, upgrade: bool) {
    // Headers named in `Connection` are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        if !(upgrade && n == header::UPGRADE) {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        if upgrade && (h == header::UPGRADE || h == header::CONNECTION) {
            continue;
        }
        if h == header::TE
            && headers
                .get(header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            continue;
        }
        headers.remove(h);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Splices the downstream and upstream connections after a `101`.
fn splice_upgrade(resp: &mut Response<Body>, downstream: Option<hyper::upgrade::OnUpgrade>) {
    let (Some(down), Some(up)) = (
        downstream,
        resp.extensions_mut().remove::<hyper::upgrade::OnUpgrade>(),
    ) else {
        return;
    };
    tokio::spawn(async move {
        let (Ok(down), Ok(up)) = (down.await, up.await) else {
            return;
        };
        let mut down = hyper_util::rt::TokioIo::new(down);
        let mut up = hyper_util::rt::TokioIo::new(up);
        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
    });
}

/// A fresh `x-request-id` (a random UUID v4), written without the
/// formatting machinery: `{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}`.
fn request_id() -> [u8; 36] {
    fn hex(dst: &mut [u8], mut v: u64) {
        for d in dst.iter_mut().rev() {
            *d = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
        }
    }
    let a = fastrand::u64(..);
    let b = fastrand::u64(..);
    let mut id = [b'-'; 36];
    hex(&mut id[0..8], a >> 32);
    hex(&mut id[9..13], (a >> 16) & 0xffff);
    id[14] = b'4';
    hex(&mut id[15..18], a & 0x0fff);
    hex(&mut id[19..23], ((b >> 48) & 0x3fff) | 0x8000);
    hex(&mut id[24..36], b & 0xffff_ffff_ffff);
    id
}

/// `grpc-timeout` (`<digits><unit>`) as a duration.
fn grpc_timeout(v: &HeaderValue) -> Option<Duration> {
    let s = v.to_str().ok()?;
    let (digits, unit) = s.split_at(s.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The request body, kept for another attempt or streamed once.
enum Payload {
    Buffered(Bytes),
    Streaming(Option<Body>),
}

impl Payload {
    /// The body for the next attempt, or `None` when it was already sent.
    fn take(&mut self) -> Option<Body> {
        match self {
            Payload::Buffered(b) => Some(Body::full(b.clone())),
            Payload::Streaming(b) => b.take(),
        }
    }
}

/// What every attempt's request is made from.
struct Template {
    method: Method,
    /// The upstream path: rewritten, or the request's own.
    path: PathAndQuery,
    /// The authority to send when the request's `Host` does not go up as is
    /// (a rewrite, an HTTP/2 upstream, or an HTTP/2 request without `Host`).
    authority: Option<String>,
    headers: http::HeaderMap,
    http2: bool,
}

impl Template {
    /// The request, moving the headers out (for the last use).
    fn take(&mut self, body: Body) -> Request<Body> {
        let headers = std::mem::take(&mut self.headers);
        let authority = self.authority.take();
        self.assemble(body, headers, authority)
    }

    /// A copy of the request; `host_suffix` is appended to the authority
    /// (mirrors' `-shadow`).
    fn build(&self, body: Body, host_suffix: Option<&str>) -> Request<Body> {
        let authority = match host_suffix {
            Some(s) => {
                let base = match &self.authority {
                    Some(a) => a.clone(),
                    None => self
                        .headers
                        .get(header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string(),
                };
                Some(format!("{base}{s}"))
            }
            None => self.authority.clone(),
        };
        self.assemble(body, self.headers.clone(), authority)
    }

    fn assemble(
        &self,
        body: Body,
        headers: http::HeaderMap,
        authority: Option<String>,
    ) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = headers;
        if self.http2 {
            *req.version_mut() = Version::HTTP_2;
            let authority = authority.unwrap_or_default();
            *req.uri_mut() = Uri::builder()
                .scheme("http")
                .authority(authority.as_str())
                .path_and_query(self.path.clone())
                .build()
                .unwrap_or_else(|_| Uri::from_static("/"));
            req.headers_mut().remove(header::HOST);
        } else {
            *req.version_mut() = Version::HTTP_11;
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(self.path.clone());
            *req.uri_mut() = Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"));
            if let Some(a) = authority
                && let Ok(v) = HeaderValue::from_str(&a)
            {
                req.headers_mut().insert(header::HOST, v);
            }
        }
        req
    }
}

/// The attempts of one request.
struct Attempts<'a> {
    cluster: &'a Arc<Cluster>,
    template: &'a mut Template,
    conn: &'a ConnInfo,
    hash: Option<u64>,
    retry: Option<&'a RetryPolicy>,
    per_try: Option<Duration>,
}

/// How one attempt ended, for `retry_on`.
enum Attempt {
    Response(Response<Body>),
    Failed(UpstreamError),
    PerTryTimeout,
}

/// Releases the in-flight counters of an attempt.
struct InFlight<'a> {
    cluster: &'a Cluster,
    host: &'a Host,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.cluster.stats.rq_active.fetch_sub(1, Ordering::Relaxed);
        self.host.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Attempts<'_> {
    // Not `async fn`: see `forward`.
    #[allow(clippy::manual_async_fn)]
    fn run(
        self,
        mut body: Payload,
    ) -> impl Future<Output = Result<Response<Body>, Response<Body>>> {
        async move {
            let cluster = self.cluster;
            let max_attempts = 1 + self.retry.map_or(0, |r| r.num_retries);
            let mut tried: Vec<Arc<Host>> = Vec::new();
            let mut retrying = false;
            for n in 0..max_attempts {
                if n > 0 {
                    // Envoy's back-off: a random wait in [0, base × (2^n − 1)], capped.
                    let (base, max) = self.retry.map_or(
                        (Duration::from_millis(25), Duration::from_millis(250)),
                        |r| r.back_off,
                    );
                    let ceiling = base
                        .saturating_mul((1u32 << n.min(16)) - 1)
                        .min(max)
                        .as_millis() as u64;
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(0..=ceiling))).await;
                }
                let Some(req_body) = body.take() else { break };
                let avoid_previous = self.retry.is_some_and(|r| r.previous_hosts);
                let input = PickInput {
                    hash: self.hash,
                    original_dst: Some(self.conn.dst),
                };
                let host = match cluster.pick(&input, &|h| {
                    avoid_previous && tried.iter().any(|t| std::ptr::eq(&**t, h))
                }) {
                    Ok(h) => h,
                    Err(NoHost::Empty | NoHost::NoOriginalDst) => {
                        cluster.stats.no_healthy.fetch_add(1, Ordering::Relaxed);
                        return Err(flagged(local_reply(503, "no healthy upstream"), "UH"));
                    }
                };
                if cluster.stats.rq_active.load(Ordering::Relaxed) >= cluster.limits.max_requests {
                    cluster
                        .stats
                        .rq_pending_overflow
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(overflow());
                }
                cluster.stats.rq_total.fetch_add(1, Ordering::Relaxed);
                cluster.stats.rq_active.fetch_add(1, Ordering::Relaxed);
                host.active.fetch_add(1, Ordering::Relaxed);
                let in_flight = InFlight {
                    cluster,
                    host: &host,
                };
                // The last attempt takes the template's headers instead of a copy.
                let req = if n + 1 == max_attempts {
                    self.template.take(req_body)
                } else {
                    self.template.build(req_body, None)
                };
                let send = upstream::send(cluster, &host, req, self.template.http2);
                let outcome = match self.per_try {
                    Some(t) => match tokio::time::timeout(t, send).await {
                        Ok(Ok(r)) => Attempt::Response(r),
                        Ok(Err(e)) => Attempt::Failed(e),
                        Err(_) => {
                            cluster
                                .stats
                                .rq_per_try_timeout
                                .fetch_add(1, Ordering::Relaxed);
                            Attempt::PerTryTimeout
                        }
                    },
                    None => match send.await {
                        Ok(r) => Attempt::Response(r),
                        Err(e) => Attempt::Failed(e),
                    },
                };
                drop(in_flight);
                cluster.record(
                    &host,
                    match &outcome {
                        Attempt::Response(r) => Outcome::Response(r.status().as_u16()),
                        Attempt::Failed(UpstreamError::Reset(_)) => Outcome::Reset,
                        Attempt::Failed(UpstreamError::ConnectTimeout) => Outcome::Timeout,
                        Attempt::Failed(UpstreamError::Overflow) => Outcome::Response(503),
                        Attempt::Failed(_) => Outcome::ConnectFailure,
                        Attempt::PerTryTimeout => Outcome::Timeout,
                    },
                );
                if self.retry.is_some() {
                    tried.push(host);
                }
                let last = n + 1 == max_attempts;
                let retriable = !last && self.retry.is_some_and(|r| should_retry(r, &outcome));
                if retriable {
                    if retrying {
                        cluster.stats.rq_retry.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // The cluster's budget of concurrent retries.
                    let active = cluster.stats.rq_retry_active(1);
                    if active > cluster.limits.max_retries {
                        cluster.stats.rq_retry_active(-1);
                        cluster
                            .stats
                            .rq_retry_overflow
                            .fetch_add(1, Ordering::Relaxed);
                    } else {
                        retrying = true;
                        cluster.stats.rq_retry.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                }
                if retrying {
                    cluster.stats.rq_retry_active(-1);
                }
                return match outcome {
                    Attempt::Response(r) => Ok(r),
                    Attempt::Failed(UpstreamError::Overflow) => Err(overflow()),
                    Attempt::Failed(e) => Err(flagged(
                        local_reply(
                            503,
                            &format!(
                                "upstream connect error or disconnect/reset before headers. reset reason: {}",
                                e.reason()
                            ),
                        ),
                        e.flags(),
                    )),
                    Attempt::PerTryTimeout => {
                        Err(flagged(local_reply(504, "upstream request timeout"), "UT"))
                    }
                };
            }
            if retrying {
                cluster.stats.rq_retry_active(-1);
            }
            Err(flagged(
                local_reply(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                ),
                "UC",
            ))
        }
    }
}

fn overflow() -> Response<Body> {
    let mut r = flagged(
        local_reply(
            503,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow",
        ),
        "UO",
    );
    r.headers_mut()
        .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
    r
}

/// Whether `outcome` is retriable under `policy` (Envoy's `retry_on`).
fn should_retry(policy: &RetryPolicy, outcome: &Attempt) -> bool {
    let on = |c: &str| policy.retry_on.iter().any(|r| r == c);
    match outcome {
        Attempt::Response(r) => {
            let status = r.status().as_u16();
            if on("5xx") && status >= 500 {
                return true;
            }
            if on("gateway-error") && matches!(status, 502..=504) {
                return true;
            }
            if on("retriable-4xx") && status == 409 {
                return true;
            }
            if on("retriable-status-codes")
                && policy.retriable_status_codes.contains(&u32::from(status))
            {
                return true;
            }
            // gRPC status in the headers (a trailers-only response).
            let grpc = r
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok());
            match grpc {
                Some(1) => on("cancelled"),
                Some(4) => on("deadline-exceeded"),
                Some(8) => on("resource-exhausted"),
                Some(13) => on("internal"),
                Some(14) => on("unavailable"),
                _ => false,
            }
        }
        Attempt::Failed(UpstreamError::Overflow) => false,
        Attempt::Failed(UpstreamError::Reset(e)) => {
            on("5xx")
                || on("gateway-error")
                || on("reset")
                || (on("refused-stream") && is_refused_stream(e))
        }
        Attempt::Failed(_) => {
            on("connect-failure") || on("5xx") || on("gateway-error") || on("reset")
        }
        Attempt::PerTryTimeout => on("5xx") || on("gateway-error") || on("reset"),
    }
}

fn is_refused_stream(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(h2) = s.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_uuid_v4() {
        for _ in 0..100 {
            let id = request_id();
            let id = std::str::from_utf8(&id).expect("ASCII");
            for (i, c) in id.char_indices() {
                match i {
                    8 | 13 | 18 | 23 => assert_eq!(c, '-', "{id}"),
                    14 => assert_eq!(c, '4', "{id}"),
                    19 => assert!("89ab".contains(c), "{id}"),
                    _ => assert!(matches!(c, '0'..='9' | 'a'..='f'), "{id}"),
                }
            }
        }
    }
}
