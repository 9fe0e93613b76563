//! The router: forwards a routed request to its cluster with the route's
//! policies: header mutations, path and host rewrites, the overall timeout
//! (until the response is complete, as Envoy's route timeout)
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
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Body as _;

use super::idle::TimerPool;
use super::{ConnInfo, flagged, local_reply, millis};
use crate::balance::Outcome;
use crate::body::Body;
use crate::cluster::{Cluster, Host, NoHost, PickInput};
use crate::dataplane::Dataplane;
use crate::listener::Hcm;
use crate::route::{RetryPolicy, Selected, SelectedAction, SetCookie};
use crate::upstream::{self, UpstreamError};

mod request;

use request::{Template, prepare, strip_hop_by_hop};

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

// Set on every response: a constant, not a string parsed per response.
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
        } else if let Some(t) = timeout
            && !resp.body().is_end_stream()
        {
            // The route timeout runs until the response is complete (Envoy's):
            // a body still streaming must end by then.
            let body = std::mem::replace(resp.body_mut(), Body::Empty);
            *resp.body_mut() = Body::deadline(body, start + t, Arc::clone(cluster));
        }
        resp
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
                        Attempt::Failed(
                            UpstreamError::Reset(_)
                            | UpstreamError::Closed(_)
                            | UpstreamError::Protocol(_),
                        ) => Outcome::Reset,
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
        Attempt::Failed(UpstreamError::Closed(_) | UpstreamError::Protocol(_)) => {
            on("5xx") || on("gateway-error") || on("reset")
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
