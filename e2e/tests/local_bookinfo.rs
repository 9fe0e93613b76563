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

    // Every sidecar got its certificate as its pod's service account.
    let key_dir = mesh.state_dir().join("citadel");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let cli = <mizzen::cli::Cli as clap::Parser>::parse_from([
        "mizzen",
        "ca",
        "list",
        "-o",
        "json",
        "--key-dir",
        &key_dir.display().to_string(),
    ]);
    assert_eq!(
        mizzen::run(cli, &mut out, &mut err),
        0,
        "{}",
        String::from_utf8_lossy(&err)
    );
    let ledger = String::from_utf8_lossy(&out);
    for sa in [
        "bookinfo-productpage",
        "bookinfo-details",
        "bookinfo-reviews",
        "bookinfo-ratings",
    ] {
        assert!(
            ledger.contains(&format!("\"spiffe://cluster.local/ns/default/sa/{sa}\"")),
            "no certificate for {sa}:\n{ledger}"
        );
        assert!(
            ledger.contains(&format!("system:serviceaccount:default:{sa}")),
            "{sa}'s certificate was not asked for with its own token:\n{ledger}"
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
