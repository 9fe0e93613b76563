use envoy_types::pb::envoy::config::core::v3::{HealthStatus, address};

use super::*;
use crate::model::Resolution;
use crate::xds::route::fixture::{bookinfo, endpoint, service, sidecar, snapshot};

const DR: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
"#;

fn proxy() -> Proxy {
    sidecar("default", &[("app", "productpage")], "10.1.0.10")
}

fn ips(cla: &ClusterLoadAssignment) -> Vec<String> {
    cla.endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| match &e.host_identifier {
            Some(HostIdentifier::Endpoint(ep)) => match &ep.address.as_ref().unwrap().address {
                Some(address::Address::SocketAddress(sa)) => sa.address.clone(),
                _ => panic!(),
            },
            _ => panic!(),
        })
        .collect()
}

#[test]
fn subsets_filter_endpoints_by_labels() {
    let snap = bookinfo(DR);
    let all = cluster_load_assignment(
        &snap,
        &proxy(),
        "outbound|9080||reviews.default.svc.cluster.local",
    )
    .unwrap();
    assert_eq!(ips(&all), vec!["10.1.0.21", "10.1.0.22", "10.1.0.23"]);
    let v2 = cluster_load_assignment(
        &snap,
        &proxy(),
        "outbound|9080|v2|reviews.default.svc.cluster.local",
    )
    .unwrap();
    assert_eq!(ips(&v2), vec!["10.1.0.22"]);
    assert_eq!(
        v2.cluster_name,
        "outbound|9080|v2|reviews.default.svc.cluster.local"
    );
    // An unknown subset has no endpoints; names that are no EDS cluster are left out.
    let v9 = cluster_load_assignment(
        &snap,
        &proxy(),
        "outbound|9080|v9|reviews.default.svc.cluster.local",
    )
    .unwrap();
    assert!(ips(&v9).is_empty());
    let names = vec![
        "outbound|9080|v1|reviews.default.svc.cluster.local".to_string(),
        "outbound|9080||nope.default.svc.cluster.local".to_string(),
        "inbound|9080||".to_string(),
    ];
    let got = generate(&snap, &proxy(), &names);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name, names[0]);
    assert_eq!(
        got[0].resource.type_url,
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    );
}

#[test]
fn health_weights_and_localities() {
    let mut a = endpoint("10.0.0.1", 8080, &[]);
    a.locality = "us-east1/us-east1-b/rack1".into();
    a.weight = 3;
    let mut b = endpoint("10.0.0.2", 8080, &[]);
    b.healthy = false;
    b.mesh_tls = false;
    let hostname_ep = endpoint("not-an-ip.example.com", 8080, &[]);
    let snap = snapshot(
        "",
        vec![(
            service("api", "default", "10.96.0.9", &[("http", 80)]),
            vec![a, b, hostname_ep],
        )],
    );
    let cla = cluster_load_assignment(
        &snap,
        &proxy(),
        "outbound|80||api.default.svc.cluster.local",
    )
    .unwrap();
    assert_eq!(cla.endpoints.len(), 2, "two localities: none and us-east1");
    let none = &cla.endpoints[0];
    assert!(none.locality.is_none());
    assert_eq!(
        none.lb_endpoints.len(),
        1,
        "the host-name endpoint is left out"
    );
    assert_eq!(
        none.lb_endpoints[0].health_status,
        HealthStatus::Unhealthy as i32
    );
    assert!(none.lb_endpoints[0].metadata.is_none());
    let east = &cla.endpoints[1];
    let loc = east.locality.as_ref().unwrap();
    assert_eq!(
        (
            loc.region.as_str(),
            loc.zone.as_str(),
            loc.sub_zone.as_str()
        ),
        ("us-east1", "us-east1-b", "rack1")
    );
    assert_eq!(
        east.lb_endpoints[0].health_status,
        HealthStatus::Healthy as i32
    );
    assert_eq!(east.lb_endpoints[0].load_balancing_weight.unwrap().value, 3);
    assert_eq!(east.load_balancing_weight.unwrap().value, 3);
    assert!(east.lb_endpoints[0].metadata.is_some(), "tlsMode: istio");
}

#[test]
fn dns_services_are_not_served_over_eds() {
    let mut svc = service("ext", "default", "", &[("http", 80)]);
    svc.hostname = "ext.example.com".into();
    svc.resolution = Resolution::Dns;
    let snap = snapshot("", vec![(svc, vec![endpoint("ext.example.com", 80, &[])])]);
    assert!(cluster_load_assignment(&snap, &proxy(), "outbound|80||ext.example.com").is_none());
}

const OUTLIERS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
"#;

fn located(ip: &str, locality: &str) -> Endpoint {
    let mut e = endpoint(ip, 8080, &[]);
    e.locality = locality.into();
    e
}

fn at(locality: &str) -> Proxy {
    let mut p = proxy();
    p.locality = locality.into();
    p
}

fn priorities(snap: &Snapshot, p: &Proxy) -> Vec<(String, u32)> {
    let name = "outbound|80||api.default.svc.cluster.local".to_string();
    let got = generate(snap, p, &[name]);
    let cla = <ClusterLoadAssignment as prost::Message>::decode(got[0].resource.value.as_slice())
        .unwrap();
    cla.endpoints
        .iter()
        .map(|g| (g.locality.clone().unwrap_or_default().region, g.priority))
        .collect()
}

fn cached(snap: &Snapshot) -> usize {
    snap.shared_eds
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .len()
}

#[test]
fn locality_failover_is_per_proxy_locality_and_still_shared() {
    let eps = || vec![located("10.0.0.1", "r1/z1"), located("10.0.0.2", "r2/z1")];
    let svc = || service("api", "default", "10.96.0.9", &[("http", 80)]);
    let snap = snapshot(OUTLIERS, vec![(svc(), eps())]);
    assert!(snap.has_locality_rules());
    let r1 = vec![("r1".to_string(), 0), ("r2".to_string(), 1)];
    let r2 = vec![("r1".to_string(), 1), ("r2".to_string(), 0)];
    assert_eq!(priorities(&snap, &at("r1/z1")), r1);
    assert_eq!(priorities(&snap, &at("r2/z1")), r2);
    // A second proxy in r1 reuses the first one's assignment.
    assert_eq!(priorities(&snap, &at("r1/z1")), r1);
    assert_eq!(cached(&snap), 2, "one entry per proxy locality");

    // Without outlier detection, one assignment for everybody at priority 0.
    let plain = snapshot("", vec![(svc(), eps())]);
    assert!(!plain.has_locality_rules());
    let flat = vec![("r1".to_string(), 0), ("r2".to_string(), 0)];
    assert_eq!(priorities(&plain, &at("r1/z1")), flat);
    assert_eq!(priorities(&plain, &at("r2/z1")), flat);
    assert_eq!(cached(&plain), 1);

    // `enabled: false` turns failover off even with outlier detection.
    let off = OUTLIERS.replace(
        "outlierDetection: {consecutive5xxErrors: 1}",
        "outlierDetection: {consecutive5xxErrors: 1}\n    loadBalancer: {localityLbSetting: {enabled: false}}",
    );
    let off = snapshot(&off, vec![(svc(), eps())]);
    assert_eq!(priorities(&off, &at("r2/z1")), flat);
    assert_eq!(priorities(&off, &at("r1/z1")), flat);
    assert_eq!(cached(&off), 1);
}
