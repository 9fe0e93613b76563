use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{address, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::DownstreamTlsContext;
use prost::Message;

use super::*;
use crate::xds::route::fixture::{bookinfo, listener, router, secret, service, sidecar};

const NETWORKING: &str = include_str!("../../../../../samples/bookinfo/networking.yaml");

fn productpage() -> Proxy {
    sidecar(
        "default",
        &[("app", "productpage"), ("version", "v1")],
        "10.1.0.10",
    )
}

fn hcm(f: &Filter) -> HttpConnectionManager {
    assert_eq!(f.name, HCM_FILTER);
    let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        panic!()
    };
    assert_eq!(
        a.type_url,
        "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
    );
    HttpConnectionManager::decode(a.value.as_slice()).unwrap()
}

fn tcp(f: &Filter) -> TcpProxy {
    assert_eq!(f.name, TCP_PROXY_FILTER);
    let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        panic!()
    };
    TcpProxy::decode(a.value.as_slice()).unwrap()
}

fn port_of(l: &Listener) -> u32 {
    match &l.address.as_ref().unwrap().address {
        Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
            Some(
                envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                    p,
                ),
            ) => p,
            _ => panic!(),
        },
        _ => panic!(),
    }
}

#[test]
fn sidecar_capture_listeners() {
    let snap = bookinfo(NETWORKING);
    let all = listeners(&snap, &productpage());
    let names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["virtualOutbound", "virtualInbound", "0.0.0.0_9080"]
    );

    let out = listener(&all, "virtualOutbound");
    assert_eq!(port_of(out), 15001);
    assert!(out.use_original_dst.unwrap().value);
    let catch_all = out
        .filter_chains
        .iter()
        .find(|c| c.filter_chain_match.is_none())
        .unwrap();
    assert_eq!(
        tcp(&catch_all.filters[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster("PassthroughCluster".into()))
    );

    let port = listener(&all, "0.0.0.0_9080");
    assert!(!port.bind_to_port.unwrap().value);
    let h = hcm(&port.filter_chains[0].filters[0]);
    assert_eq!(h.stat_prefix, "outbound_0.0.0.0_9080");
    assert!(
        matches!(h.route_specifier, Some(RouteSpecifier::Rds(ref r)) if r.route_config_name == "9080")
    );
    let filters: Vec<&str> = h.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(filters, vec![FAULT_FILTER, CORS_FILTER, ROUTER_FILTER]);
    assert!(!h.use_remote_address.unwrap().value);

    let inbound = listener(&all, "virtualInbound");
    assert_eq!(port_of(inbound), 15006);
    assert_eq!(
        inbound.listener_filters[0].name,
        "envoy.filters.listener.original_dst"
    );
    let app = inbound
        .filter_chains
        .iter()
        .find(|c| {
            c.filter_chain_match
                .as_ref()
                .and_then(|m| m.destination_port)
                .map(|p| p.value)
                == Some(9080)
        })
        .unwrap();
    let h = hcm(&app.filters[0]);
    let Some(RouteSpecifier::RouteConfig(rc)) = h.route_specifier else {
        panic!("inline routes")
    };
    assert_eq!(rc.name, "inbound|9080||");
    let last = inbound.filter_chains.last().unwrap();
    assert_eq!(
        tcp(&last.filters[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "InboundPassthroughCluster".into()
        ))
    );
    assert_eq!(rds_names(&snap, &productpage()), vec!["9080"]);
}

#[test]
fn tcp_services_match_their_vips_and_registry_only_blackholes() {
    let mut snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [mysql]
  tcp:
  - route:
    - destination: {host: mysql, subset: primary}
      weight: 80
    - destination: {host: mysql, subset: replica}
      weight: 20
"#,
    );
    for s in [
        service("mysql", "default", "10.96.5.5", &[("tcp", 3306)]),
        service("mysql-headless", "default", "", &[("tcp", 3306)]),
        service("redis", "default", "10.96.5.6", &[("redis", 6379)]),
    ] {
        snap.services.insert(s.hostname.clone(), Arc::new(s));
    }
    let all = listeners(&snap, &productpage());
    let l = listener(&all, "0.0.0.0_3306");
    assert_eq!(l.filter_chains.len(), 2);
    let vip = &l.filter_chains[0];
    let m = vip.filter_chain_match.as_ref().unwrap();
    assert_eq!(m.prefix_ranges[0].address_prefix, "10.96.5.5");
    assert_eq!(m.prefix_ranges[0].prefix_len.unwrap().value, 32);
    let Some(ClusterSpecifier::WeightedClusters(w)) = tcp(&vip.filters[0]).cluster_specifier else {
        panic!("weighted TCP route")
    };
    assert_eq!(
        w.clusters[0].name,
        "outbound|3306|primary|mysql.default.svc.cluster.local"
    );
    assert_eq!(w.clusters[0].weight, 80);
    // The headless service takes the rest of the port.
    assert_eq!(
        tcp(&l.filter_chains[1].filters[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|3306||mysql-headless.default.svc.cluster.local".into()
        ))
    );
    let redis = listener(&all, "0.0.0.0_6379");
    assert_eq!(
        tcp(&redis.filter_chains[1].filters[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster("BlackHoleCluster".into()))
    );
    let out = listener(&all, "virtualOutbound");
    assert_eq!(
        tcp(&out.filter_chains[1].filters[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster("BlackHoleCluster".into()))
    );
}

#[test]
fn gateway_http_listener() {
    let snap = bookinfo(NETWORKING);
    let all = listeners(&snap, &router("istio-system"));
    assert_eq!(all.len(), 1);
    let l = &all[0];
    assert_eq!(l.name, "0.0.0.0_8080");
    assert_eq!(port_of(l), 8080);
    assert!(l.bind_to_port.is_none());
    let h = hcm(&l.filter_chains[0].filters[0]);
    assert!(
        matches!(h.route_specifier, Some(RouteSpecifier::Rds(ref r)) if r.route_config_name == "http.8080")
    );
    assert!(h.use_remote_address.unwrap().value);
    assert_eq!(h.http_filters.last().unwrap().name, ROUTER_FILTER);
    // A proxy the Gateway does not select gets nothing.
    let mut other = router("istio-system");
    other.labels.clear();
    other.labels.insert("istio".into(), "egressgateway".into());
    assert!(listeners(&snap, &other).is_empty());
}

#[test]
fn gateway_tls_servers() {
    let mut snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: [shop.example.com]
    tls: {mode: SIMPLE, credentialName: shop-cert, minProtocolVersion: TLSV1_2}
  - port: {number: 8443, name: https-admin, protocol: HTTPS}
    hosts: [admin.example.com]
    tls: {mode: MUTUAL, credentialName: missing-cert}
  - port: {number: 8443, name: tls-pass, protocol: TLS}
    hosts: ["*.pass.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pass, namespace: default}
spec:
  hosts: ["*.pass.example.com"]
  gateways: [istio-system/edge]
  tls:
  - match:
    - sniHosts: [db.pass.example.com]
    route:
    - destination: {host: details, port: {number: 9080}}
"#,
    );
    snap.secrets
        .insert("istio-system/shop-cert".into(), secret());
    let all = listeners(&snap, &router("istio-system"));
    let l = listener(&all, "0.0.0.0_8443");
    assert_eq!(
        l.listener_filters[0].name,
        "envoy.filters.listener.tls_inspector"
    );
    assert_eq!(
        l.filter_chains.len(),
        2,
        "the server without its Secret is left out"
    );
    let https = &l.filter_chains[0];
    assert_eq!(
        https.filter_chain_match.as_ref().unwrap().server_names,
        vec!["shop.example.com"]
    );
    let h = hcm(&https.filters[0]);
    assert!(
        matches!(h.route_specifier, Some(RouteSpecifier::Rds(ref r)) if r.route_config_name == "https.8443.https.edge.istio-system")
    );
    let ts = https.transport_socket.as_ref().unwrap();
    let Some(transport_socket::ConfigType::TypedConfig(a)) = &ts.config_type else {
        panic!()
    };
    let ctx = DownstreamTlsContext::decode(a.value.as_slice()).unwrap();
    let common = ctx.common_tls_context.unwrap();
    assert_eq!(common.tls_certificates.len(), 1);
    assert_eq!(common.alpn_protocols, vec!["h2", "http/1.1"]);
    assert!(common.tls_params.is_some());
    let pass = &l.filter_chains[1];
    assert_eq!(
        pass.filter_chain_match.as_ref().unwrap().server_names,
        vec!["db.pass.example.com"]
    );
    assert!(pass.transport_socket.is_none());
    assert_eq!(
        tcp(&pass.filters[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080||details.default.svc.cluster.local".into()
        ))
    );
}

#[test]
fn host_ranges() {
    let r = host_range("10.0.0.1").unwrap();
    assert_eq!(
        (r.address_prefix.as_str(), r.prefix_len.unwrap().value),
        ("10.0.0.1", 32)
    );
    let r = host_range("240.0.0.0/16").unwrap();
    assert_eq!(
        (r.address_prefix.as_str(), r.prefix_len.unwrap().value),
        ("240.0.0.0", 16)
    );
    assert_eq!(
        host_range("fd00::1").unwrap().prefix_len.unwrap().value,
        128
    );
    assert!(host_range("example.com").is_none());
    assert!(host_range("10.0.0.0/40").is_none());
}

// ---------------------------------------------------------------------------
// Inbound mTLS from PeerAuthentication.

mod inbound_mtls;

#[test]
fn an_ingress_listener_with_capture_mode_none_binds_its_own_port() {
    let snap = bookinfo(&format!(
        "{NETWORKING}\n---\n{}",
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: pp, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    captureMode: NONE
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9090, protocol: TCP, name: tcp}
    defaultEndpoint: 127.0.0.1:9090
"#
    ));
    let all = listeners(&snap, &productpage());
    // 9080 has a listener of its own on the wildcard address (Istio's
    // default bind); 9090 stays a chain of virtualInbound.
    let own = listener(&all, "0.0.0.0_9080");
    assert_eq!(port_of(own), 9080);
    assert!(own.bind_to_port.is_none(), "bound to its port");
    assert!(
        own.listener_filters
            .iter()
            .all(|f| f.name != "envoy.filters.listener.original_dst")
    );
    let inbound = listener(&all, "virtualInbound");
    let ports: Vec<u32> = inbound
        .filter_chains
        .iter()
        .filter_map(|c| {
            c.filter_chain_match
                .as_ref()?
                .destination_port
                .map(|p| p.value)
        })
        .collect();
    assert!(ports.contains(&9090) && !ports.contains(&9080), "{ports:?}");
}

#[test]
fn a_proxy_that_captures_nothing_gets_bound_listeners_only() {
    let snap = bookinfo(&format!(
        "{NETWORKING}\n---\n{}",
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: pp, namespace: default}
spec:
  workloadSelector: {labels: {app: productpage}}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 10.1.0.10
    defaultEndpoint: 0.0.0.0:19080
  egress:
  - port: {number: 9080, protocol: HTTP, name: http}
    bind: 127.0.0.2
    hosts: ["./reviews.default.svc.cluster.local"]
  - hosts: ["./*"]
"#
    ));
    let mut proxy = productpage();
    proxy.interception = crate::proxy::Interception::None;
    let all = listeners(&snap, &proxy);
    let names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
    assert!(
        !names.contains(&"virtualOutbound") && !names.contains(&"virtualInbound"),
        "{names:?}"
    );
    // The ingress listener on the pod's address; the port-9080 egress
    // listener on its bind; the catch-all's other ports on 127.0.0.1.
    assert!(names.contains(&"10.1.0.10_9080"), "{names:?}");
    let egress = listener(&all, "127.0.0.2_9080");
    assert!(egress.bind_to_port.is_none());
    let Some(RouteSpecifier::Rds(rds)) = hcm(&egress.filter_chains[0].filters[0]).route_specifier
    else {
        panic!("RDS")
    };
    assert_eq!(rds.route_config_name, "127.0.0.2:9080");
    assert!(
        names.contains(&"127.0.0.1_9080"),
        "the catch-all's 9080 on its own bind: {names:?}"
    );
    // The egress listener's routes see only its hosts.
    let scope = Scope::new(&snap, &proxy);
    let rc = crate::xds::route::route_configuration(&scope, "127.0.0.2:9080").expect("routes");
    assert_eq!(rc.name, "127.0.0.2:9080");
    let hosts: Vec<&str> = rc.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
    assert!(
        hosts
            .iter()
            .any(|h| h.starts_with("reviews.default.svc.cluster.local"))
            && !hosts.iter().any(|h| h.starts_with("ratings.")),
        "{hosts:?}"
    );
    // The inbound listener forwards to the app at the pod's address.
    let clusters = crate::xds::cluster::clusters(&snap, &proxy);
    let inbound = clusters
        .iter()
        .find(|c| c.name == "inbound|9080||")
        .expect("inbound cluster");
    let text = format!("{:?}", inbound.load_assignment);
    assert!(
        text.contains("10.1.0.10") && text.contains("19080"),
        "{text}"
    );
}
