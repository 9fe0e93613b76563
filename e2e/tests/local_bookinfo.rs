//! Bookinfo in the local mesh, with real traffic through captured pods: the
//! control plane of `mizzen up --pods`, six bookinfo pods started as
//! `mizzen run` starts them, and requests from the host to productpage, whose
//! calls to details, reviews and ratings go by service name through its sidecar
//! (the app's outbound TCP captured to 15001) and arrive through the callee's
//! sidecar (inbound captured to 15006).
//!
//! Every scenario `mizzen demo` walks through runs here too, from the same
//! code ([`mizzen::demo::scenarios`]): the seed's YAML applied unchanged, the
//! sidecars' ACKs awaited, real traffic sent, each expectation checked. Also:
//! details answers through the mesh, and every pod's sidecar got its
//! certificate from citadel as its own service account.
//!
//! The same runs with Mizzen's proxy as every sidecar, with Envoy (beside
//! `proxy agent`) as every sidecar, and mixed: Mizzen's proxy on the client
//! side (productpage), Envoy on the servers. Each test has its own bridge and
//! subnet. See `e2e::LocalMesh` for what is needed to run them.

use std::net::Ipv4Addr;

use e2e::{LocalMesh, envoy_bin, get};
use mizzen::demo::scenarios;
use mizzen::pod::SidecarKind;

/// Runs every scenario against a mesh whose pods get `sidecar(pod)`.
fn bookinfo_scenarios(bridge: &str, gateway: Ipv4Addr, sidecar: impl Fn(&str) -> SidecarKind) {
    let uses_envoy = mizzen::demo::BOOKINFO_PODS
        .iter()
        .any(|(pod, ..)| sidecar(pod) == SidecarKind::Envoy);
    let config = vec![
        ("platform.yaml", scenarios::BOOKINFO_PLATFORM.to_string()),
        ("networking.yaml", scenarios::base_networking()),
    ];
    let mut mesh = LocalMesh::start(bridge, gateway, &config);
    if uses_envoy {
        mesh = mesh.with_envoy(envoy_bin());
    }
    let target = mesh.bookinfo(&sidecar);
    mesh.wait_for_endpoints("reviews.default.svc.cluster.local", 3);

    let details = get(target.productpage, "/api/v1/products/0", &[]);
    assert_eq!(details.status, 200, "{details:?}");
    assert_eq!(details.json()["servedBy"], "details-v1", "{details:?}");

    for scenario in scenarios::all() {
        let report = mesh.scenario(&scenario, &target);
        assert!(
            report.passed(),
            "scenario: {}\n{}",
            report.title,
            report.table()
        );
    }

    // Every sidecar got its certificate as its pod's service account, asked
    // for with that account's token.
    for sa in [
        "bookinfo-productpage",
        "bookinfo-details",
        "bookinfo-reviews",
        "bookinfo-ratings",
    ] {
        let records = mesh.ledger(&format!("spiffe://cluster.local/ns/default/sa/{sa}"));
        assert!(!records.is_empty(), "no certificate for {sa}");
        let token = format!("system:serviceaccount:default:{sa}");
        assert!(
            records.iter().any(|r| r["requester"] == token.as_str()),
            "{sa}'s certificate was not asked for with its own token: {records:?}"
        );
    }
}

#[test]
fn bookinfo_scenarios_through_mizzens_proxy_sidecars() {
    bookinfo_scenarios("mze-proxy", Ipv4Addr::new(10, 201, 0, 1), |_| {
        SidecarKind::Proxy
    });
}

#[test]
fn bookinfo_scenarios_through_envoy_sidecars() {
    bookinfo_scenarios("mze-envoy", Ipv4Addr::new(10, 202, 0, 1), |_| {
        SidecarKind::Envoy
    });
}

#[test]
fn bookinfo_scenarios_with_a_proxy_client_and_envoy_servers() {
    bookinfo_scenarios("mze-mixed", Ipv4Addr::new(10, 203, 0, 1), |pod| {
        if pod.starts_with("productpage") {
            SidecarKind::Proxy
        } else {
            SidecarKind::Envoy
        }
    });
}
