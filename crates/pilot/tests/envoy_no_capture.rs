//! A sidecar without traffic capture (Istio's `INTERCEPTION_MODE: NONE`, what
//! a pod gets when iptables cannot be used): pilot lays out only the listeners
//! a Sidecar resource names, each bound to its own address, and no 15001 or
//! 15006. Everything runs on loopback addresses (127.0.31.x), no root needed.
//!
//! productpage's data plane (a stock Envoy 1.40 here, Mizzen's proxy when this
//! file runs as the proxy crate's `dataplane_no_capture`) gets:
//! - the egress listener on 127.0.31.3:9080, where the app sends its calls
//!   with the service in `Host`; the seed's VirtualService (02) and
//!   DestinationRule (03) route them: `end-user: jason` → reviews v2, else
//!   v1/v3;
//! - the ingress listener on the pod's 127.0.31.2:9080, forwarding to the app
//!   on 127.0.31.2 at its own port (`defaultEndpoint: 0.0.0.0:PORT`).

#[path = "support/envoy.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::{Client, Envoy, Upstream, WAIT, stat_u64, stats};

const MESH: &str = include_str!("fixtures/conformance/sidecar-mesh.yaml");
const SIDECAR: &str = include_str!("fixtures/conformance/no-capture-sidecar.yaml");
const SEED_VS: &str = include_str!("../../../testdata/corpus/seed/02-virtualservice-reviews.yaml");
const SEED_DR: &str = include_str!("../../../testdata/corpus/seed/03-destinationrule-reviews.yaml");
const POD_IP: &str = "127.0.31.2";
const EGRESS_IP: &str = "127.0.31.3";

fn bootstrap(xds: std::net::SocketAddr) -> String {
    let id = format!("sidecar~{POD_IP}~productpage-v1.default~default.svc.cluster.local");
    let metadata = format!(
        "    NAMESPACE: default\n    LABELS:\n      app: productpage\n      version: v1\n    INSTANCE_IPS: {POD_IP}\n    WORKLOAD_NAME: productpage-v1\n    INTERCEPTION_MODE: NONE\n"
    );
    let node = support::BootstrapNode {
        id: &id,
        cluster: "productpage.default",
        metadata: &metadata,
    };
    support::istio_bootstrap(&node, xds, false, "127.0.0.1", 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_without_capture_serves_the_sidecars_bound_listeners() {
    support::envoy_binary();
    let app = Upstream::start(POD_IP, "productpage-app").await;
    let mut values = vec![
        ("POD_IP".to_string(), POD_IP.to_string()),
        ("EGRESS_IP".to_string(), EGRESS_IP.to_string()),
        ("APP_PORT".to_string(), app.port.to_string()),
    ];
    let mut upstreams = BTreeMap::new();
    for (name, ip, ip_key, port_key) in [
        ("reviews-v1", "127.0.31.11", "V1_IP", "REVIEWS_V1_PORT"),
        ("reviews-v2", "127.0.31.12", "V2_IP", "REVIEWS_V2_PORT"),
        ("reviews-v3", "127.0.31.13", "V3_IP", "REVIEWS_V3_PORT"),
    ] {
        let up = Upstream::start(ip, name).await;
        values.push((ip_key.to_string(), ip.to_string()));
        values.push((port_key.to_string(), up.port.to_string()));
        upstreams.insert(name, up);
    }
    let fill = |text: &str| {
        let out = values.iter().fold(text.to_string(), |t, (k, v)| {
            t.replace(&format!("{{{{{k}}}}}"), v)
        });
        assert!(!out.contains("{{"), "unfilled placeholder:\n{out}");
        out
    };

    let config_dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("mesh.yaml", fill(MESH)),
        ("sidecar.yaml", fill(SIDECAR)),
        ("02-virtualservice-reviews.yaml", SEED_VS.to_string()),
        ("03-destinationrule-reviews.yaml", SEED_DR.to_string()),
    ] {
        std::fs::write(config_dir.path().join(file), text).unwrap();
    }
    let (addrs, _pilot) = support::serve_config(config_dir.path(), "127.0.0.1").await;

    let dir = tempfile::tempdir().unwrap();
    let mut envoy = Envoy::spawn(dir.path(), &bootstrap(addrs.xds), None);
    let admin = envoy.admin().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let s = stats(admin).await;
        if stat_u64(&s, "listener_manager.lds.update_success") >= 1
            && stat_u64(&s, "listener_manager.total_listeners_active") >= 2
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar did not get its listeners within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, dump) = support::admin_get(admin, "/config_dump?resource=dynamic_listeners")
        .await
        .unwrap();
    for name in ["127.0.31.3_9080", "127.0.31.2_9080"] {
        assert!(dump.contains(name), "no listener {name}: {dump}");
    }
    for name in ["virtualOutbound", "virtualInbound", "0.0.0.0_9080"] {
        assert!(
            !dump.contains(name),
            "{name} in a sidecar that captures nothing: {dump}"
        );
    }

    // Outbound: the app's calls to the egress listener, routed by Host.
    let mut client = Client::new(format!("{EGRESS_IP}:9080").parse().unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        let r = client
            .get(
                "/reviews/0",
                &[("host", "reviews:9080"), ("end-user", "jason")],
            )
            .await;
        if r.as_ref()
            .is_ok_and(|r| r.header("x-upstream") == Some("reviews-v2"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jason never reached reviews-v2 through {EGRESS_IP}:9080: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        let r = client
            .get(
                "/reviews/0",
                &[("host", "reviews:9080"), ("end-user", "jason")],
            )
            .await
            .expect("an answer");
        *served
            .entry(r.header("x-upstream").unwrap_or("none").to_string())
            .or_default() += 1;
    }
    assert_eq!(served, BTreeMap::from([("reviews-v2".to_string(), 20)]));
    let mut others: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..40 {
        let r = client
            .get("/reviews/0", &[("host", "reviews")])
            .await
            .expect("an answer");
        assert_eq!(r.status, 200, "{r:?}");
        *others
            .entry(r.header("x-upstream").unwrap_or("none").to_string())
            .or_default() += 1;
    }
    assert!(
        others
            .keys()
            .all(|k| k == "reviews-v1" || k == "reviews-v3"),
        "everyone else goes to v1 and v3: {others:?}"
    );
    assert!(others.contains_key("reviews-v1"), "{others:?}");

    // Inbound: the pod's address, forwarded to the app.
    let mut inbound = Client::new(format!("{POD_IP}:9080").parse().unwrap());
    let r = inbound
        .get("/productpage", &[("host", "productpage:9080")])
        .await
        .expect("an answer through the ingress listener");
    assert_eq!(
        (r.status, r.header("x-upstream")),
        (200, Some("productpage-app")),
        "{r:?}"
    );
    assert_eq!(app.hits(), 1);
    drop(upstreams);
}
