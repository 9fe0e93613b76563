//! Faults in the local mesh, under steady traffic through the ingress gateway
//! to productpage (and on to reviews and ratings, over auto mTLS): the
//! control-plane components run as their own processes, as `mizzen up` runs
//! them, so the test can crash and stop them one at a time.
//!
//! In order, with the same traffic running throughout and not one failed
//! request allowed:
//! 1. pilot is killed (SIGKILL) and restarted: the proxies keep their config
//!    while it is gone, reconnect, and converge on a change made afterwards;
//! 2. a bad config file is dropped in: pilot rejects it with galley's message
//!    and the routing stays as it was;
//! 3. citadel is stopped (SIGTERM) and restarted: certificates (40 s, so they
//!    rotate during the test) keep working while it is gone, renewal resumes
//!    when it is back, and the ledger still holds what it issued before;
//! 4. ten config changes a second for three seconds.
//!
//! Once with Mizzen's proxy as every sidecar and the gateway, once with Envoy.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use e2e::{ControlPlane, LocalMesh, Steady, envoy_bin, get};
use mizzen::demo::scenarios::{self, seed};
use mizzen::pod::SidecarKind;
use rustix::process::Signal;

fn config(seeds: &[(&str, &str)]) -> String {
    seeds
        .iter()
        .map(|(name, text)| format!("# {name}\n{}\n", text.trim_end()))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// 20 requests through the gateway; how many each reviews version served.
fn served(entry: SocketAddr) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for _ in 0..20 {
        let a = get(entry, "/api/v1/products/0/reviews", &[]);
        let key = if a.status == 200 {
            a.json()["servedBy"].as_str().unwrap_or("?").to_string()
        } else {
            format!("status {}", a.status)
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

fn faults(bridge: &str, gateway: Ipv4Addr, sidecar: SidecarKind) {
    let base = vec![
        ("platform.yaml", scenarios::BOOKINFO_PLATFORM.to_string()),
        ("networking.yaml", scenarios::base_networking()),
        (
            mizzen::demo::SCENARIO_FILE,
            config(&[
                seed::REVIEWS_JASON_SPLIT,
                seed::REVIEWS_SUBSETS,
                seed::RATINGS_SUBSETS,
            ]),
        ),
    ];
    let mut mesh = LocalMesh::start_with(
        bridge,
        gateway,
        &base,
        ControlPlane::Processes {
            citadel_args: vec!["--max-cert-ttl".into(), "40s".into()],
        },
    );
    if sidecar == SidecarKind::Envoy {
        mesh = mesh.with_envoy(envoy_bin());
    }
    let target = mesh.bookinfo(|_| sidecar);
    let entry = target.ingress.expect("the gateway");
    // One proxy per pod: the sidecars, the gateway.
    let proxies = target.pods.len();
    mesh.wait_for_proxies(proxies, Duration::from_secs(30));
    let traffic = Steady::start(entry, "/api/v1/products/0/reviews");
    std::thread::sleep(Duration::from_secs(1));

    // 1. pilot crashes and comes back.
    mesh.kill("pilot", Signal::KILL);
    std::thread::sleep(Duration::from_secs(3));
    mesh.restart("pilot");
    mesh.wait_for_proxies(proxies, Duration::from_secs(60));
    mesh.put_config(
        mizzen::demo::SCENARIO_FILE,
        &config(&[
            seed::REVIEWS_MIRROR,
            seed::REVIEWS_SUBSETS,
            seed::RATINGS_SUBSETS,
        ]),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = served(entry);
        if seen.get("reviews-v1") == Some(&20) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after pilot's restart, the change to all-v1 did not take effect: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // 2. A bad file: rejected, routing unchanged.
    mesh.put_config(
        "bad.yaml",
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-bad, namespace: default}
spec:
  hosts: [reviews]
  http:
  - rout:
    - destination: {host: reviews, subset: v3}
",
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let rejection = loop {
        let configz = mesh.configz();
        if let Some(r) = configz["rejected"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r.to_string().contains("reviews-bad"))
        {
            break r.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "bad.yaml was not rejected: {configz}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(rejection.contains("bad.yaml"), "{rejection}");
    assert!(
        rejection.contains("rout"),
        "galley names the field: {rejection}"
    );
    assert_eq!(
        served(entry).get("reviews-v1"),
        Some(&20),
        "routing unchanged"
    );

    // 3. citadel stops and comes back.
    let productpage = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage";
    let before = mesh.issued(productpage);
    assert!(!before.is_empty(), "productpage has a certificate");
    mesh.kill("citadel", Signal::TERM);
    std::thread::sleep(Duration::from_secs(8));
    mesh.restart("citadel");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = mesh.issued(productpage);
        if now.len() > before.len() && now.iter().any(|s| !before.contains(s)) {
            for serial in &before {
                assert!(now.contains(serial), "the ledger lost {serial}");
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal after citadel came back: before {before:?}, now {now:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // 4. Ten changes a second.
    let weights = [seed::REVIEWS_90_10, seed::REVIEWS_50_50];
    for i in 0..30 {
        mesh.put_config(
            mizzen::demo::SCENARIO_FILE,
            &config(&[weights[i % 2], seed::REVIEWS_SUBSETS, seed::RATINGS_SUBSETS]),
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));

    let (sent, failed) = traffic.finish();
    assert!(sent > 100, "only {sent} requests went out");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn faults_under_traffic_with_mizzens_proxy() {
    faults(
        "mzf-proxy",
        Ipv4Addr::new(10, 211, 0, 1),
        SidecarKind::Proxy,
    );
}

#[test]
fn faults_under_traffic_with_envoy() {
    faults(
        "mzf-envoy",
        Ipv4Addr::new(10, 212, 0, 1),
        SidecarKind::Envoy,
    );
}
