use envoy_types::pb::envoy::config::route::v3::{
    route::Action, route_action::ClusterSpecifier, virtual_host::TlsRequirementType,
};

use super::fixture::{bookinfo, route_config, router, sidecar};
use super::*;

const NETWORKING: &str = include_str!("../../../../../samples/bookinfo/networking.yaml");

fn productpage() -> Proxy {
    sidecar(
        "default",
        &[("app", "productpage"), ("version", "v1")],
        "10.1.0.10",
    )
}

fn vhost<'a>(rc: &'a RouteConfiguration, name: &str) -> &'a VirtualHost {
    rc.virtual_hosts
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no vhost {name}: {:?}",
                rc.virtual_hosts.iter().map(|v| &v.name).collect::<Vec<_>>()
            )
        })
}

fn cluster_of(r: &envoy_types::pb::envoy::config::route::v3::Route) -> String {
    match &r.action {
        Some(Action::Route(a)) => match &a.cluster_specifier {
            Some(ClusterSpecifier::Cluster(c)) => c.clone(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn sidecar_outbound_routes_per_port() {
    let snap = bookinfo(NETWORKING);
    let rc = route_config(&snap, &productpage(), "9080");
    assert_eq!(rc.name, "9080");
    let names: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "reviews.default.svc.cluster.local:9080",
            "ratings.default.svc.cluster.local:9080",
            "details.default.svc.cluster.local:9080",
            "productpage.default.svc.cluster.local:9080",
            "allow_any"
        ]
    );
    let details = vhost(&rc, "details.default.svc.cluster.local:9080");
    assert_eq!(
        details.domains,
        vec![
            "details.default.svc.cluster.local",
            "details.default.svc.cluster.local:9080",
            "details",
            "details:9080",
            "details.default",
            "details.default:9080",
            "details.default.svc",
            "details.default.svc:9080",
            "10.96.0.11",
            "10.96.0.11:9080"
        ]
    );
    assert_eq!(
        cluster_of(&details.routes[0]),
        "outbound|9080||details.default.svc.cluster.local"
    );
    let reviews = vhost(&rc, "reviews.default.svc.cluster.local:9080");
    assert_eq!(reviews.routes.len(), 2, "the VirtualService's rules");
    let any = vhost(&rc, "allow_any");
    assert_eq!(any.domains, vec!["*"]);
    assert_eq!(cluster_of(&any.routes[0]), "PassthroughCluster");
    // Unknown names and non-port names are left out.
    let proxy = productpage();
    let scope = Scope::new(&snap, &proxy);
    assert!(route_configuration(&scope, "http.8080").is_none());
}

#[test]
fn other_namespace_domains_and_registry_only() {
    let snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: other}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
"#,
    );
    let proxy = sidecar("other", &[("app", "x")], "10.2.0.1");
    let rc = route_config(&snap, &proxy, "9080");
    let details = vhost(&rc, "details.default.svc.cluster.local:9080");
    assert!(!details.domains.contains(&"details".to_string()));
    assert!(details.domains.contains(&"details.default".to_string()));
    let block = vhost(&rc, "block_all");
    assert!(
        matches!(block.routes[0].action, Some(Action::DirectResponse(ref d)) if d.status == 502)
    );
}

#[test]
fn gateway_http_routes() {
    let snap = bookinfo(NETWORKING);
    let gw = router("istio-system");
    let rc = route_config(&snap, &gw, "http.8080");
    assert_eq!(rc.virtual_hosts.len(), 1);
    let vh = &rc.virtual_hosts[0];
    assert_eq!(vh.name, "*:8080");
    assert_eq!(vh.domains, vec!["*"]);
    assert_eq!(vh.routes.len(), 5, "one route per match");
    assert!(
        vh.routes
            .iter()
            .all(|r| cluster_of(r) == "outbound|9080||productpage.default.svc.cluster.local")
    );
    assert!(rc.ignore_port_in_host_matching);
    // A sidecar's VirtualService (bound to mesh) is not on the gateway.
    assert!(!vh.routes.iter().any(|r| cluster_of(r).contains("reviews")));
    let scope = Scope::new(&snap, &gw);
    assert!(route_configuration(&scope, "http.9999").is_none());
    assert!(route_configuration(&scope, "9080").is_none());
}

#[test]
fn gateway_domains_are_the_host_intersection() {
    let snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["default/*.example.com", "./local.example.org"]
    tls: {httpsRedirect: true}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com, shop.other.com]
  gateways: [istio-system/gw]
  http:
  - route:
    - destination: {host: productpage}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all, namespace: default}
spec:
  hosts: ["*.example.com"]
  gateways: [istio-system/gw]
  http:
  - route:
    - destination: {host: details}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wrong-ns, namespace: other}
spec:
  hosts: [other.example.com]
  gateways: [istio-system/gw]
  http:
  - route:
    - destination: {host: details.default.svc.cluster.local}
"#,
    );
    let rc = route_config(&snap, &router("istio-system"), "http.8080");
    let names: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "shop.example.com:8080",
            "*.example.com:8080",
            "local.example.org:8080"
        ]
    );
    let shop = vhost(&rc, "shop.example.com:8080");
    assert_eq!(shop.domains, vec!["shop.example.com", "shop.example.com:*"]);
    assert_eq!(
        shop.require_tls,
        TlsRequirementType::All as i32,
        "httpsRedirect"
    );
    assert_eq!(
        vhost(&rc, "*.example.com:8080").domains,
        vec!["*.example.com"]
    );
    assert!(vhost(&rc, "local.example.org:8080").routes.is_empty());
}

#[test]
fn gateway_without_virtual_services_is_a_blackhole() {
    let snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
"#,
    );
    let rc = route_config(&snap, &router("istio-system"), "http.8080");
    assert_eq!(rc.virtual_hosts[0].name, "blackhole:8080");
    assert!(rc.virtual_hosts[0].routes.is_empty());
}

#[test]
fn https_route_names() {
    let mut snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: secure, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https-shop, protocol: HTTPS}
    hosts: ["*/shop.example.com"]
    tls: {mode: SIMPLE, credentialName: shop-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: default}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/secure]
  http:
  - route:
    - destination: {host: productpage}
"#,
    );
    snap.secrets
        .insert("istio-system/shop-cert".into(), super::fixture::secret());
    let rc = route_config(
        &snap,
        &router("istio-system"),
        "https.8443.https-shop.secure.istio-system",
    );
    assert_eq!(
        rc.virtual_hosts[0].domains,
        vec!["shop.example.com", "shop.example.com:*"]
    );
    let names = route_names(&snap, &router("istio-system"));
    assert!(
        names.contains(&"https.8443.https-shop.secure.istio-system".to_string()),
        "{names:?}"
    );
}

#[test]
fn virtual_hosts_dedupe_domains() {
    let mut v = VirtualHosts::default();
    v.push(VirtualHost {
        name: "a".into(),
        domains: vec!["x".into(), "Y".into()],
        ..Default::default()
    });
    v.push(VirtualHost {
        name: "a".into(),
        domains: vec!["y".into(), "z".into()],
        ..Default::default()
    });
    v.push(VirtualHost {
        name: "b".into(),
        domains: vec!["x".into()],
        ..Default::default()
    });
    let hosts = v.into_vec();
    assert_eq!(hosts.len(), 2);
    assert_eq!(hosts[1].name, "a_1");
    assert_eq!(hosts[1].domains, vec!["z"]);
}

#[test]
fn gateway_host_intersection() {
    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        gateway_intersection(&s(&["*"]), &s(&["a.com", "*"])),
        s(&["a.com", "*"])
    );
    assert_eq!(
        gateway_intersection(&s(&["*.example.com"]), &s(&["a.example.com", "b.org"])),
        s(&["a.example.com"])
    );
    assert_eq!(
        gateway_intersection(&s(&["a.example.com"]), &s(&["*.example.com"])),
        s(&["a.example.com"])
    );
    assert!(gateway_intersection(&s(&["a.com"]), &s(&["b.com"])).is_empty());
}
