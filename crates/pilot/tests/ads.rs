//! The ADS server over a real TCP socket, driven by a tonic ADS client, with a
//! generator whose output is predictable from the snapshot (one cluster per
//! service, one load assignment per host), so these tests pin down the protocol —
//! ACK, NACK, stale nonces, subscriptions, pushes, delta diffs — independently of
//! pilot's real xDS generators. `/debug/*` and `/metrics` are read over HTTP. The
//! harness lives in `fixtures/ads/harness.rs`.

#[path = "fixtures/ads/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use harness::*;
use pilot::model::Snapshot;
use pilot::xds::ads::Limits;
use pilot::xds::{CLUSTER, ENDPOINT, LISTENER};
use serde_json::Value;

#[tokio::test]
async fn initial_cds_is_answered_and_the_ack_shows_in_syncz() {
    let p = start(bookinfo(1)).await;
    let mut s = Sotw::open(p.xds).await;
    let r = s.initial(CLUSTER, &[], true).await;
    assert_eq!(r.type_url, CLUSTER);
    assert_eq!(r.version_info, "1");
    assert!(!r.nonce.is_empty());
    assert_eq!(names_of(&r), set(&[REVIEWS, RATINGS]));
    s.ack(&r, &[]).await;
    let c = eventually_syncz(&p, |c| c["types"]["cds"]["nonce_acked"] == r.nonce.as_str()).await;
    assert_eq!(c["proxy_id"], NODE_ID);
    assert_eq!(c["protocol"], "sotw");
    assert_eq!(c["types"]["cds"]["version_sent"], "1");
    assert_eq!(c["types"]["cds"]["version_acked"], "1");
    assert_eq!(c["types"]["cds"]["resources_sent"], 2);
    assert!(c["connected_since"].as_str().unwrap().ends_with('Z'));
    s.quiet().await;
    assert!(metrics(&p).await.contains("pilot_xds 1"));
    assert!(
        metrics(&p)
            .await
            .contains("pilot_xds_pushes_total{type=\"cds\"} 1")
    );
}

#[tokio::test]
async fn nack_is_recorded_counted_and_not_answered() {
    let p = start(bookinfo(1)).await;
    let mut s = Sotw::open(p.xds).await;
    let r = s.initial(CLUSTER, &[], true).await;
    s.send(DiscoveryRequest {
        type_url: CLUSTER.into(),
        version_info: String::new(),
        response_nonce: r.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 3,
            message: "cluster reviews: bad lb policy".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    s.quiet().await;
    let c = eventually_syncz(&p, |c| !c["types"]["cds"]["last_nack"].is_null()).await;
    let nack = &c["types"]["cds"]["last_nack"];
    assert_eq!(nack["message"], "cluster reviews: bad lb policy");
    assert_eq!(nack["nonce"], r.nonce.as_str());
    assert!(nack["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(c["types"]["cds"]["rejects"], 1);
    assert!(c["types"]["cds"]["version_acked"].is_null());
    let m = metrics(&p).await;
    assert!(
        m.contains("pilot_total_xds_rejects_total{type=\"cds\"} 1"),
        "{m}"
    );
    // The same (rejected) content is not pushed again by an unrelated snapshot.
    p.model.publish(Snapshot {
        version: 2,
        ..bookinfo(2)
    });
    s.quiet().await;
}

#[tokio::test]
async fn stale_nonce_is_ignored() {
    let p = start(bookinfo(1)).await;
    let mut s = Sotw::open(p.xds).await;
    let r = s.initial(ENDPOINT, &[REVIEWS], true).await;
    assert_eq!(names_of(&r), set(&[REVIEWS]));
    // A new name, but with a nonce pilot never sent (or no longer the latest).
    s.send(DiscoveryRequest {
        type_url: ENDPOINT.into(),
        response_nonce: "not-the-latest".into(),
        resource_names: vec![REVIEWS.into(), RATINGS.into()],
        ..Default::default()
    })
    .await;
    s.quiet().await;
    assert!(
        metrics(&p)
            .await
            .contains("pilot_xds_expired_nonce_total{type=\"eds\"} 1")
    );
}

#[tokio::test]
async fn eds_subscribe_and_unsubscribe() {
    let p = start(bookinfo(1)).await;
    let mut s = Sotw::open(p.xds).await;
    let r = s.initial(ENDPOINT, &[REVIEWS], true).await;
    assert_eq!(names_of(&r), set(&[REVIEWS]));
    // ACK that subscribes to one more name: answered with the full new set.
    s.ack(&r, &[REVIEWS, RATINGS]).await;
    let r2 = s.recv().await;
    assert_eq!(names_of(&r2), set(&[REVIEWS, RATINGS]));
    assert_ne!(r2.nonce, r.nonce);
    // ACK that only drops a name: not answered.
    s.ack(&r2, &[RATINGS]).await;
    s.quiet().await;
    let c = eventually_syncz(&p, |c| c["types"]["eds"]["subscribed"] == 1).await;
    assert_eq!(c["types"]["eds"]["nonce_acked"], r2.nonce.as_str());
    // Empty names on a non-wildcard type: unsubscribe, nothing sent.
    s.ack(&r2, &[]).await;
    s.quiet().await;
    eventually_syncz(&p, |c| c["types"].get("eds").is_none()).await;
    // A later snapshot pushes nothing for EDS.
    p.model.publish(snapshot(
        2,
        &[(REVIEWS, 9080), (RATINGS, 9080)],
        &["10.1.0.2"],
    ));
    s.quiet().await;
}

#[tokio::test]
async fn a_new_snapshot_pushes_what_changed_in_order_and_measures_convergence() {
    let p = start(bookinfo(1)).await;
    let mut s = Sotw::open(p.xds).await;
    let cds = s.initial(CLUSTER, &[], true).await;
    s.ack(&cds, &[]).await;
    let eds = s.initial(ENDPOINT, &[REVIEWS, RATINGS], false).await;
    s.ack(&eds, &[REVIEWS, RATINGS]).await;
    let lds = s.initial(LISTENER, &[], false).await;
    s.ack(&lds, &[]).await;
    s.quiet().await;

    // A new service: CDS changes, so CDS then EDS (always after CDS); LDS is
    // unchanged and not sent.
    p.model.publish(snapshot(
        2,
        &[(REVIEWS, 9080), (RATINGS, 9080), (DETAILS, 9080)],
        &["10.1.0.1"],
    ));
    let first = s.recv().await;
    assert_eq!(first.type_url, CLUSTER);
    assert_eq!(first.version_info, "2");
    assert_eq!(names_of(&first), set(&[REVIEWS, RATINGS, DETAILS]));
    let second = s.recv().await;
    assert_eq!(second.type_url, ENDPOINT);
    s.quiet().await;
    s.ack(&first, &[]).await;
    s.ack(&second, &[REVIEWS, RATINGS]).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = metrics(&p).await;
        if m.contains("pilot_proxy_convergence_time_count 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An endpoint change: only EDS moves.
    p.model.publish(snapshot(
        3,
        &[(REVIEWS, 9080), (RATINGS, 9080), (DETAILS, 9080)],
        &["10.1.0.1", "10.1.0.7"],
    ));
    let third = s.recv().await;
    assert_eq!(third.type_url, ENDPOINT);
    assert_eq!(third.version_info, "3");
    s.quiet().await;
}

#[tokio::test]
async fn endpoint_only_snapshots_push_only_eds() {
    // CDS output carries the snapshot version, so without the hint every
    // snapshot would push CDS too.
    let p = start_with(bookinfo(1), generator(true), Limits::default()).await;
    let reviews = format!("outbound|9080||{REVIEWS}");
    let ratings = format!("outbound|9080||{RATINGS}");
    let mut s = Sotw::open(p.xds).await;
    let cds = s.initial(CLUSTER, &[], true).await;
    s.ack(&cds, &[]).await;
    let eds = s.initial(ENDPOINT, &[&reviews, &ratings], false).await;
    assert_eq!(eds.resources.len(), 2);
    s.ack(&eds, &[&reviews, &ratings]).await;
    s.quiet().await;

    let mut next = snapshot(
        2,
        &[(REVIEWS, 9080), (RATINGS, 9080)],
        &["10.1.0.1", "10.1.0.3"],
    );
    next.endpoints_only = true;
    next.endpoints_changed = set(&[REVIEWS, RATINGS]);
    p.model.publish(next);
    let r = s.recv().await;
    assert_eq!(r.type_url, ENDPOINT);
    s.quiet().await;

    // Endpoints of a host this proxy does not watch: nothing at all.
    s.ack(&r, &[&reviews]).await;
    s.quiet().await;
    let mut next = snapshot(
        3,
        &[(REVIEWS, 9080), (RATINGS, 9080)],
        &["10.1.0.1", "10.1.0.4"],
    );
    next.endpoints_only = true;
    next.endpoints_changed = set(&[RATINGS]);
    p.model.publish(next);
    s.quiet().await;

    // A full change pushes CDS again.
    p.model.publish(snapshot(
        4,
        &[(REVIEWS, 9080), (RATINGS, 9080)],
        &["10.1.0.1"],
    ));
    assert_eq!(s.recv().await.type_url, CLUSTER);
}

#[tokio::test]
async fn malformed_or_missing_nodes_are_refused() {
    let p = start(bookinfo(1)).await;
    for (node, needle) in [
        (None, "must carry `node`"),
        (node("not-an-istio-id"), "sidecar~IP~POD"),
        (
            node("waypoint~1.2.3.4~a.b~b.svc.cluster.local"),
            "use sidecar or router",
        ),
    ] {
        let mut s = Sotw::open(p.xds).await;
        s.send(DiscoveryRequest {
            node,
            type_url: CLUSTER.into(),
            ..Default::default()
        })
        .await;
        let err = tokio::time::timeout(WAIT, s.rx.message())
            .await
            .unwrap()
            .expect_err("stream must fail");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains(needle), "{}", err.message());
    }
    assert!(p.server.connections().is_empty());
}

#[tokio::test]
async fn requests_past_the_bounds_end_the_stream_with_a_clear_error() {
    let limits = Limits {
        max_resource_names: 3,
        ..Limits::default()
    };
    let p = start_with(bookinfo(1), generator(false), limits).await;
    let mut s = Sotw::open(p.xds).await;
    s.send(DiscoveryRequest {
        node: node(NODE_ID),
        type_url: ENDPOINT.into(),
        resource_names: (0..4).map(|i| format!("host-{i}")).collect(),
        ..Default::default()
    })
    .await;
    let err = tokio::time::timeout(WAIT, s.rx.message())
        .await
        .unwrap()
        .expect_err("stream must fail");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("at most 3"), "{}", err.message());
}

#[tokio::test]
async fn delta_sends_only_changes_and_removals() {
    let p = start(snapshot(
        1,
        &[(REVIEWS, 9080), (RATINGS, 9080), (DETAILS, 9080)],
        &["10.1.0.1"],
    ))
    .await;
    let mut d = Delta::open(p.xds).await;
    d.send(DeltaDiscoveryRequest {
        node: node(NODE_ID),
        type_url: CLUSTER.into(),
        resource_names_subscribe: vec!["*".into()],
        ..Default::default()
    })
    .await;
    let r = d.recv().await;
    assert_eq!(delta_names(&r), set(&[REVIEWS, RATINGS, DETAILS]));
    assert!(r.resources.iter().all(|x| x.version.len() == 16));
    assert!(r.removed_resources.is_empty());
    d.ack(&r).await;
    d.quiet().await;
    let c = eventually_syncz(&p, |c| c["types"]["cds"]["nonce_acked"] == r.nonce.as_str()).await;
    assert_eq!(c["protocol"], "delta");

    // reviews changes port, details disappears, ratings is untouched.
    p.model.publish(snapshot(
        2,
        &[(REVIEWS, 9090), (RATINGS, 9080)],
        &["10.1.0.1"],
    ));
    let r2 = d.recv().await;
    assert_eq!(r2.system_version_info, "2");
    assert_eq!(delta_names(&r2), set(&[REVIEWS]));
    assert_eq!(r2.removed_resources, vec![DETAILS.to_string()]);
    d.ack(&r2).await;
    d.quiet().await;

    // Nothing visible changes: nothing is sent.
    p.model.publish(snapshot(
        3,
        &[(REVIEWS, 9090), (RATINGS, 9080)],
        &["10.1.0.1"],
    ));
    d.quiet().await;
}

#[tokio::test]
async fn delta_eds_subscriptions_and_reconnect_with_initial_versions() {
    let p = start(bookinfo(1)).await;
    let mut d = Delta::open(p.xds).await;
    d.send(DeltaDiscoveryRequest {
        node: node(NODE_ID),
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec![REVIEWS.into(), "missing.default.svc.cluster.local".into()],
        ..Default::default()
    })
    .await;
    let r = d.recv().await;
    assert_eq!(delta_names(&r), set(&[REVIEWS]));
    // A subscribed name that does not exist is reported as removed.
    assert_eq!(
        r.removed_resources,
        vec!["missing.default.svc.cluster.local".to_string()]
    );
    let reviews_version = r.resources[0].version.clone();
    d.ack(&r).await;
    d.quiet().await;
    // Subscribe to one more (no nonce: a subscription change): only it is sent.
    d.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec![RATINGS.into()],
        ..Default::default()
    })
    .await;
    let r2 = d.recv().await;
    assert_eq!(delta_names(&r2), set(&[RATINGS]));
    d.ack(&r2).await;
    // Unsubscribing is not answered.
    d.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_unsubscribe: vec![RATINGS.into()],
        ..Default::default()
    })
    .await;
    d.quiet().await;
    // A stale nonce is ignored.
    d.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    })
    .await;
    d.quiet().await;
    drop(d);

    // Reconnect holding reviews at its current version and ratings at an old one:
    // only ratings is sent.
    let mut d = Delta::open(p.xds).await;
    let mut initial = HashMap::new();
    initial.insert(REVIEWS.to_string(), reviews_version);
    initial.insert(RATINGS.to_string(), "0000000000000000".to_string());
    d.send(DeltaDiscoveryRequest {
        node: node(NODE_ID),
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec![REVIEWS.into(), RATINGS.into()],
        initial_resource_versions: initial,
        ..Default::default()
    })
    .await;
    let r3 = d.recv().await;
    assert_eq!(delta_names(&r3), set(&[RATINGS]));
    assert!(r3.removed_resources.is_empty());
}

#[tokio::test]
async fn delta_nack_is_recorded_and_not_answered() {
    let p = start(bookinfo(1)).await;
    let mut d = Delta::open(p.xds).await;
    d.send(DeltaDiscoveryRequest {
        node: node(NODE_ID),
        type_url: CLUSTER.into(),
        ..Default::default()
    })
    .await;
    let r = d.recv().await;
    assert_eq!(delta_names(&r), set(&[REVIEWS, RATINGS]));
    d.send(DeltaDiscoveryRequest {
        type_url: CLUSTER.into(),
        response_nonce: r.nonce.clone(),
        error_detail: Some(RpcStatus {
            code: 13,
            message: "rejected".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await;
    d.quiet().await;
    let c = eventually_syncz(&p, |c| !c["types"]["cds"]["last_nack"].is_null()).await;
    assert_eq!(c["types"]["cds"]["last_nack"]["message"], "rejected");
    assert!(
        metrics(&p)
            .await
            .contains("pilot_total_xds_rejects_total{type=\"cds\"} 1")
    );
}

#[tokio::test]
async fn debug_endpoints_describe_proxies_registry_and_config() {
    let p = start(bookinfo(1)).await;
    let (status, body) = http_get(p.http, "/debug/config_dump?proxyID=nobody.default").await;
    assert_eq!(status, 404);
    assert!(body.contains("not connected"), "{body}");
    let (status, body) = http_get(p.http, "/debug/config_dump").await;
    assert_eq!(status, 400, "{body}");

    let mut s = Sotw::open(p.xds).await;
    let r = s.initial(CLUSTER, &[], true).await;
    s.ack(&r, &[]).await;
    eventually_syncz(&p, |c| !c["types"]["cds"]["nonce_acked"].is_null()).await;
    for id in ["app-1.default", NODE_ID] {
        let (status, body) = http_get(
            p.http,
            &format!("/debug/config_dump?proxyID={}", urlencode(id)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["proxy"]["id"], NODE_ID);
        assert_eq!(v["types"][0]["type"], "cds");
        assert_eq!(v["types"][0]["count"], 2);
        assert_eq!(v["types"][1]["type"], "eds");
        assert_eq!(v["types"][2]["resources"][0]["address"], "0.0.0.0:80");
    }

    let (status, body) = http_get(p.http, "/debug/registryz").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["services"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["services"][0]["endpoints"]["9080"][0]["address"],
        "10.1.0.1"
    );

    let (status, body) = http_get(p.http, "/debug/configz").await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["resources"].as_array().unwrap().is_empty());
    assert!(v["rejected"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn closing_the_server_ends_streams_with_unavailable() {
    let p = start(bookinfo(1)).await;
    let mut s = Sotw::open(p.xds).await;
    s.initial(CLUSTER, &[], true).await;
    assert_eq!(p.server.connections().len(), 1);
    p.server.close();
    let err = tokio::time::timeout(WAIT, s.rx.message())
        .await
        .unwrap()
        .expect_err("stream must end with a status");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !p.server.connections().is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn app_config(dir: &std::path::Path) -> pilot::app::Config {
    let mut c = pilot::app::Config::for_dir(dir);
    c.xds_addr = "127.0.0.1:0".parse().unwrap();
    c.http_addr = "127.0.0.1:0".parse().unwrap();
    c
}

#[tokio::test]
async fn the_app_refuses_bad_flags_and_an_unreadable_config_dir() {
    let missing = std::env::temp_dir().join("mizzen-pilot-no-such-dir");
    let err = pilot::app::App::build(app_config(&missing))
        .await
        .expect_err("a missing --config-dir must fail");
    assert!(err.to_string().contains("--config-dir"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let mut c = app_config(dir.path());
    c.debounce_after = "20s".parse().unwrap();
    let err = pilot::app::App::build(c).await.expect_err("after > max");
    assert!(err.to_string().contains("--debounce-max"), "{err}");
}

#[tokio::test]
async fn the_app_is_ready_serves_debug_endpoints_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let app = pilot::app::App::build(app_config(dir.path()))
        .await
        .unwrap();
    let addrs = app.addrs();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    while http_get(addrs.http, "/ready").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for path in [
        "/debug/syncz",
        "/debug/registryz",
        "/debug/configz",
        "/metrics",
    ] {
        let (status, body) = http_get(addrs.http, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let mut s = Sotw::open(addrs.xds).await;
    let r = s.initial(CLUSTER, &[], true).await;
    assert_eq!(r.version_info, "1");
    let _ = stop.send(());
    let err = tokio::time::timeout(WAIT, s.rx.message())
        .await
        .unwrap()
        .expect_err("shutdown ends the stream");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("drained in time")
        .unwrap()
        .unwrap();
}

/// A reconnecting Envoy that is sent changed clusters warms them and waits for
/// their endpoints: its first EDS request gets every assignment, even those
/// whose versions it says it holds (what a restarted pilot must do).
#[tokio::test]
async fn delta_eds_after_changed_clusters_on_a_new_stream_is_sent_whole() {
    let p = start(bookinfo(1)).await;
    let mut d = Delta::open(p.xds).await;
    d.send(DeltaDiscoveryRequest {
        node: node(NODE_ID),
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec![REVIEWS.into(), RATINGS.into()],
        ..Default::default()
    })
    .await;
    let eds = d.recv().await;
    let held: HashMap<String, String> = eds
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    assert_eq!(held.len(), 2);
    drop(d);

    // A new stream: CDS first, holding an outdated cluster, so clusters are
    // sent; then EDS, holding both assignments at their current versions.
    let mut d = Delta::open(p.xds).await;
    d.send(DeltaDiscoveryRequest {
        node: node(NODE_ID),
        type_url: CLUSTER.into(),
        initial_resource_versions: [(REVIEWS.to_string(), "0000000000000000".to_string())].into(),
        ..Default::default()
    })
    .await;
    let cds = d.recv().await;
    assert!(!cds.resources.is_empty(), "the outdated cluster is sent");
    d.send(DeltaDiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names_subscribe: vec![REVIEWS.into(), RATINGS.into()],
        initial_resource_versions: held,
        ..Default::default()
    })
    .await;
    let eds = d.recv().await;
    assert_eq!(
        delta_names(&eds),
        set(&[REVIEWS, RATINGS]),
        "warming clusters need their endpoints"
    );
}
