//! Bookinfo in the local mesh, with real traffic through captured pods: the
//! control plane of `mizzen up --pods`, six bookinfo pods started as
//! `mizzen run` starts them, and requests from the host to productpage, whose
//! calls to details, reviews and ratings go by service name through its sidecar
//! (the app's outbound TCP captured to 15001) and arrive through the callee's
//! sidecar (inbound captured to 15006). The sample's VirtualServices and
//! DestinationRules (`samples/bookinfo/networking.yaml`, Istio's guide, loaded
//! unchanged) must take effect: `end-user: jason` → reviews v2 (which calls
//! ratings: black stars), everyone else → v1 75%, v3 25%. Every pod's sidecar
//! gets its certificate from citadel as its own service account.
//!
//! The same scenarios run with Mizzen's proxy as every sidecar, with Envoy
//! (and `proxy agent`) as every sidecar, and mixed: Mizzen's proxy on the
//! client side (productpage), Envoy on the servers (reviews, ratings, details).
//! Each test has its own bridge and subnet. See `e2e::LocalMesh` for what is
//! needed to run them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use e2e::{Answer, LocalMesh, envoy_bin, get, tally};
use mizzen::pod::SidecarKind;

fn sample(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/bookinfo/");
    std::fs::read_to_string(format!("{path}{name}")).expect("read the bookinfo sample")
}

fn config() -> Vec<(&'static str, String)> {
    vec![
        ("platform.yaml", sample("platform.yaml")),
        ("networking.yaml", sample("networking.yaml")),
    ]
}

fn served_by(json: &serde_json::Value) -> String {
    json["servedBy"]
        .as_str()
        .unwrap_or("no servedBy")
        .to_string()
}

/// Runs every scenario against a mesh whose pods get `sidecar(pod)`.
fn bookinfo_scenarios(bridge: &str, gateway: Ipv4Addr, sidecar: impl Fn(&str) -> SidecarKind) {
    let uses_envoy = ["productpage-v1", "reviews-v1", "ratings-v1", "details-v1"]
        .iter()
        .any(|p| sidecar(p) == SidecarKind::Envoy);
    let mut mesh = LocalMesh::start(bridge, gateway, &config());
    if uses_envoy {
        mesh = mesh.with_envoy(envoy_bin());
    }
    let productpage = SocketAddr::from((mesh.bookinfo(&sidecar), 9080));
    mesh.wait_for_endpoints("reviews.default.svc.cluster.local", 3);

    // details through the mesh.
    let details = get(productpage, "/api/v1/products/0", &[]);
    assert_eq!(details.status, 200, "{details:?}");
    assert_eq!(served_by(&details.json()), "details-v1", "{details:?}");

    // end-user: jason → reviews v2, which shows ratings' black stars.
    let jason: Vec<Answer> = (0..20)
        .map(|_| {
            get(
                productpage,
                "/api/v1/products/0/reviews",
                &[("end-user", "jason")],
            )
        })
        .collect();
    assert_eq!(
        tally(&jason, served_by),
        BTreeMap::from([("reviews-v2".to_string(), 20)]),
        "jason goes to reviews v2"
    );
    let reviews = jason[0].json();
    for review in reviews["reviews"].as_array().expect("reviews") {
        assert_eq!(review["rating"]["color"], "black", "{reviews}");
        assert!(review["rating"]["stars"].as_u64().is_some(), "{reviews}");
    }

    // Everyone else: v1 75 %, v3 25 %, never v2.
    let others: Vec<Answer> = (0..200)
        .map(|_| get(productpage, "/api/v1/products/0/reviews", &[]))
        .collect();
    let split = tally(&others, served_by);
    let v1 = split.get("reviews-v1").copied().unwrap_or(0);
    let v3 = split.get("reviews-v3").copied().unwrap_or(0);
    assert_eq!(v1 + v3, 200, "only v1 and v3: {split:?}");
    assert!((120..=180).contains(&v1), "about 75 % to v1: {split:?}");
    let stars = others
        .iter()
        .find(|a| served_by(&a.json()) == "reviews-v3")
        .map(|a| a.json()["reviews"][0]["rating"]["color"].clone());
    assert_eq!(stars, Some("red".into()), "v3 shows red stars");

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
fn bookinfo_routes_through_mizzens_proxy_sidecars() {
    bookinfo_scenarios("mze-proxy", Ipv4Addr::new(10, 201, 0, 1), |_| {
        SidecarKind::Proxy
    });
}

#[test]
fn bookinfo_routes_through_envoy_sidecars() {
    bookinfo_scenarios("mze-envoy", Ipv4Addr::new(10, 202, 0, 1), |_| {
        SidecarKind::Envoy
    });
}

#[test]
fn bookinfo_routes_with_a_proxy_client_and_envoy_servers() {
    bookinfo_scenarios("mze-mixed", Ipv4Addr::new(10, 203, 0, 1), |pod| {
        if pod.starts_with("productpage") {
            SidecarKind::Proxy
        } else {
            SidecarKind::Envoy
        }
    });
}
