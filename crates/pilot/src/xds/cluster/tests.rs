use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use prost::Message;

use super::*;
use crate::model::Resolution;
use crate::xds::route::fixture::{
    self, bookinfo, cluster, endpoint, router, service, sidecar, snapshot,
};

const REVIEWS: &str = "reviews.default.svc.cluster.local";

fn productpage() -> Proxy {
    sidecar(
        "default",
        &[("app", "productpage"), ("version", "v1")],
        "10.1.0.10",
    )
}

fn discovery(c: &Cluster) -> DiscoveryType {
    match c.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t).unwrap(),
        _ => panic!("no discovery type"),
    }
}

fn upstream_tls(c: &Cluster) -> UpstreamTlsContext {
    let ts = c.transport_socket.as_ref().expect("transport socket");
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(ConfigType::TypedConfig(a)) = &ts.config_type else {
        panic!("untyped transport socket")
    };
    assert_eq!(
        a.type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
    );
    UpstreamTlsContext::decode(a.value.as_slice()).unwrap()
}

#[test]
fn names_follow_istio() {
    let snap = bookinfo(include_str!(
        "../../../../../samples/bookinfo/networking.yaml"
    ));
    let names: Vec<String> = clusters(&snap, &productpage())
        .into_iter()
        .map(|c| c.name)
        .collect();
    for want in [
        "outbound|9080||details.default.svc.cluster.local",
        "outbound|9080||reviews.default.svc.cluster.local",
        "outbound|9080|v1|reviews.default.svc.cluster.local",
        "outbound|9080|v2|reviews.default.svc.cluster.local",
        "outbound|9080|v3|reviews.default.svc.cluster.local",
        "outbound|9080|v1|ratings.default.svc.cluster.local",
        "PassthroughCluster",
        "BlackHoleCluster",
        "inbound|9080||",
        "InboundPassthroughCluster",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "missing {want} in {names:?}"
        );
    }
    // Gateways have no inbound clusters.
    let gw: Vec<String> = clusters(&snap, &router("istio-system"))
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(!gw.iter().any(|n| n.starts_with("inbound|")));
    assert!(gw.contains(&"outbound|9080||productpage.default.svc.cluster.local".to_string()));
}

#[test]
fn eds_clusters_use_ads_and_istio_defaults() {
    let snap = bookinfo("");
    let all = clusters(&snap, &productpage());
    let c = cluster(&all, &format!("outbound|9080||{REVIEWS}"));
    assert_eq!(discovery(c), DiscoveryType::Eds);
    let eds = c.eds_cluster_config.as_ref().unwrap();
    assert_eq!(eds.service_name, c.name);
    assert!(matches!(
        eds.eds_config.as_ref().unwrap().config_source_specifier,
        Some(
            envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier::Ads(_)
        )
    ));
    assert_eq!(c.connect_timeout.unwrap().seconds, 10);
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
    assert_eq!(
        c.circuit_breakers.as_ref().unwrap().thresholds[0]
            .max_retries
            .unwrap()
            .value,
        u32::MAX
    );
    assert!(c.transport_socket.is_none(), "no auto mTLS");
    let inbound = cluster(&all, "inbound|9080||");
    assert_eq!(discovery(inbound), DiscoveryType::Static);
    let pass = cluster(&all, "PassthroughCluster");
    assert_eq!(discovery(pass), DiscoveryType::OriginalDst);
    assert_eq!(pass.lb_policy, LbPolicy::ClusterProvided as i32);
    let bh = cluster(&all, "BlackHoleCluster");
    assert_eq!(discovery(bh), DiscoveryType::Static);
    assert!(bh.load_assignment.is_none());
}

#[test]
fn destination_rule_policies_merge_per_subset_and_port() {
    let snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 2s}
      http: {http1MaxPendingRequests: 1, http2MaxRequests: 10, maxRequestsPerConnection: 1, maxRetries: 3, idleTimeout: 30s}
    outlierDetection: {consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50, minHealthPercent: 20}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {simple: RANDOM}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      loadBalancer:
        consistentHash:
          httpHeaderName: x-user
          maglev: {tableSize: 65537}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer:
        consistentHash: {useSourceIp: true}
"#,
    );
    let all = clusters(&snap, &productpage());
    let top = cluster(&all, &format!("outbound|9080||{REVIEWS}"));
    assert_eq!(top.lb_policy, LbPolicy::RoundRobin as i32);
    assert_eq!(top.connect_timeout.unwrap().seconds, 2);
    let t = &top.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.unwrap().value, 100);
    assert_eq!(t.max_pending_requests.unwrap().value, 1);
    assert_eq!(t.max_requests.unwrap().value, 10);
    assert_eq!(t.max_retries.unwrap().value, 3);
    let od = top.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx.unwrap().value, 5);
    assert_eq!(od.max_ejection_percent.unwrap().value, 50);
    assert_eq!(
        top.common_lb_config
            .as_ref()
            .unwrap()
            .healthy_panic_threshold
            .unwrap()
            .value,
        20.0
    );
    let opts = top
        .typed_extension_protocol_options
        .get(traffic::HTTP_PROTOCOL_OPTIONS)
        .expect("http protocol options");
    let opts =
        envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions::decode(
            opts.value.as_slice(),
        )
        .unwrap();
    let common = opts.common_http_protocol_options.unwrap();
    assert_eq!(common.max_requests_per_connection.unwrap().value, 1);
    assert_eq!(common.idle_timeout.unwrap().seconds, 30);

    let v1 = cluster(&all, &format!("outbound|9080|v1|{REVIEWS}"));
    assert_eq!(v1.lb_policy, LbPolicy::Random as i32);
    // The subset inherits what it does not set.
    assert_eq!(
        v1.circuit_breakers.as_ref().unwrap().thresholds[0]
            .max_connections
            .unwrap()
            .value,
        100
    );
    let v2 = cluster(&all, &format!("outbound|9080|v2|{REVIEWS}"));
    assert_eq!(v2.lb_policy, LbPolicy::Maglev as i32);
    assert!(
        matches!(v2.lb_config, Some(LbConfig::MaglevLbConfig(ref m)) if m.table_size.unwrap().value == 65537)
    );
    let v3 = cluster(&all, &format!("outbound|9080|v3|{REVIEWS}"));
    assert_eq!(v3.lb_policy, LbPolicy::RingHash as i32);
    assert!(
        matches!(v3.lb_config, Some(LbConfig::RingHashLbConfig(ref r)) if r.minimum_ring_size.unwrap().value == 1024)
    );
}

#[test]
fn resolutions_pick_the_discovery_type() {
    let mut dns = service("api", "default", "", &[("https", 443)]);
    dns.hostname = "api.example.com".into();
    dns.resolution = Resolution::Dns;
    let mut rr = service("rr", "default", "", &[("http", 80)]);
    rr.hostname = "rr.example.com".into();
    rr.resolution = Resolution::DnsRoundRobin;
    let mut none = service("pass", "default", "", &[("tcp", 3306)]);
    none.hostname = "db.example.com".into();
    none.resolution = Resolution::Passthrough;
    let snap = snapshot(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: direct, namespace: default}
spec:
  host: details
  trafficPolicy:
    loadBalancer: {simple: PASSTHROUGH}
"#,
        vec![
            (
                dns,
                vec![
                    endpoint("a.example.com", 443, &[]),
                    endpoint("b.example.com", 443, &[]),
                ],
            ),
            (
                rr,
                vec![
                    endpoint("x.example.com", 80, &[]),
                    endpoint("y.example.com", 80, &[]),
                ],
            ),
            (none, vec![]),
            (
                service("details", "default", "10.96.0.11", &[("http", 9080)]),
                vec![],
            ),
        ],
    );
    let all = clusters(&snap, &productpage());
    let c = cluster(&all, "outbound|443||api.example.com");
    assert_eq!(discovery(c), DiscoveryType::StrictDns);
    let la = c.load_assignment.as_ref().unwrap();
    assert_eq!(la.endpoints[0].lb_endpoints.len(), 2);
    let c = cluster(&all, "outbound|80||rr.example.com");
    assert_eq!(discovery(c), DiscoveryType::LogicalDns);
    assert_eq!(
        c.load_assignment.as_ref().unwrap().endpoints[0]
            .lb_endpoints
            .len(),
        1
    );
    let c = cluster(&all, "outbound|3306||db.example.com");
    assert_eq!(discovery(c), DiscoveryType::OriginalDst);
    assert_eq!(c.lb_policy, LbPolicy::ClusterProvided as i32);
    let c = cluster(&all, "outbound|9080||details.default.svc.cluster.local");
    assert_eq!(discovery(c), DiscoveryType::OriginalDst);
    assert!(c.eds_cluster_config.is_none());
}

#[test]
fn tls_modes() {
    let mut snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem, sni: reviews.example.com, subjectAltNames: [reviews.example.com]}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      tls: {mode: MUTUAL, credentialName: client-cred}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: details, namespace: default}
spec:
  host: details
  trafficPolicy:
    tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem}
"#,
    );
    snap.secrets
        .insert("default/client-cred".into(), fixture::secret());
    let all = clusters(&snap, &productpage());

    let ctx = upstream_tls(cluster(&all, &format!("outbound|9080|v1|{REVIEWS}")));
    assert_eq!(ctx.sni, format!("outbound_.9080_.v1_.{REVIEWS}"));
    let common = ctx.common_tls_context.unwrap();
    assert_eq!(common.tls_certificate_sds_secret_configs[0].name, "default");
    assert_eq!(common.alpn_protocols, vec!["istio-peer-exchange", "istio"]);
    let Some(ValidationContextType::CombinedValidationContext(v)) = common.validation_context_type
    else {
        panic!("combined validation context")
    };
    assert_eq!(
        v.validation_context_sds_secret_config.unwrap().name,
        "ROOTCA"
    );
    let sans = v
        .default_validation_context
        .unwrap()
        .match_typed_subject_alt_names;
    assert_eq!(sans.len(), 1, "one SPIFFE identity from the endpoints");

    let ctx = upstream_tls(cluster(&all, &format!("outbound|9080|v2|{REVIEWS}")));
    assert_eq!(ctx.sni, "reviews.example.com");
    let Some(ValidationContextType::ValidationContext(v)) =
        ctx.common_tls_context.unwrap().validation_context_type
    else {
        panic!("validation context")
    };
    assert!(v.trusted_ca.is_some());
    assert_eq!(v.match_typed_subject_alt_names.len(), 1);

    let ctx = upstream_tls(cluster(&all, &format!("outbound|9080|v3|{REVIEWS}")));
    let certs = ctx.common_tls_context.unwrap().tls_certificates;
    assert_eq!(certs.len(), 1, "credentialName inlined from the Secret");

    let ctx = upstream_tls(cluster(
        &all,
        "outbound|9080||details.default.svc.cluster.local",
    ));
    assert_eq!(ctx.common_tls_context.unwrap().tls_certificates.len(), 1);
    // No DestinationRule TLS, no transport socket.
    assert!(
        cluster(&all, "outbound|9080||ratings.default.svc.cluster.local")
            .transport_socket
            .is_none()
    );
}

#[test]
fn sidecar_egress_limits_clusters() {
    let mut snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress:
  - hosts: ["./reviews.default.svc.cluster.local", "istio-system/*"]
"#,
    );
    let other = service("istiod", "istio-system", "10.96.1.1", &[("grpc", 15010)]);
    let far = service("far", "other", "10.96.2.2", &[("http", 80)]);
    for s in [other, far] {
        snap.services.insert(s.hostname.clone(), Arc::new(s));
    }
    let names: Vec<String> = clusters(&snap, &productpage())
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(names.contains(&format!("outbound|9080||{REVIEWS}")));
    assert!(names.contains(&"outbound|15010||istiod.istio-system.svc.cluster.local".to_string()));
    assert!(
        !names
            .iter()
            .any(|n| n.contains("details") || n.contains("far.other"))
    );
    // A gateway is not scoped by the Sidecar.
    let gw: Vec<String> = clusters(&snap, &router("istio-system"))
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(gw.iter().any(|n| n.contains("details")));
}

#[test]
fn export_to_hides_services() {
    let mut snap = bookinfo("");
    let mut private = service("secret", "other", "10.96.3.3", &[("http", 80)]);
    private.export_to = vec![".".into()];
    snap.services
        .insert(private.hostname.clone(), Arc::new(private));
    let names: Vec<String> = clusters(&snap, &productpage())
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(!names.iter().any(|n| n.contains("secret.other")));
}

#[test]
fn grpc_ports_speak_http2_upstream() {
    let snap = snapshot(
        "",
        vec![(
            service("api", "default", "10.96.0.50", &[("grpc", 7070)]),
            vec![],
        )],
    );
    let all = clusters(&snap, &productpage());
    let c = cluster(&all, "outbound|7070||api.default.svc.cluster.local");
    let opts = c
        .typed_extension_protocol_options
        .get(traffic::HTTP_PROTOCOL_OPTIONS)
        .unwrap();
    let opts =
        envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions::decode(
            opts.value.as_slice(),
        )
        .unwrap();
    assert!(matches!(
        opts.upstream_protocol_options,
        Some(envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(ref e))
            if matches!(e.protocol_config, Some(envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_)))
    ));
}

#[test]
fn sidecar_ingress_listeners_define_inbound_clusters() {
    let snap = bookinfo(
        r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: pp, namespace: default}
spec:
  workloadSelector:
    labels: {app: productpage}
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
  - port: {number: 9443, protocol: TCP, name: tcp}
    defaultEndpoint: unix:///var/run/app.sock
"#,
    );
    let all = clusters(&snap, &productpage());
    let c = cluster(&all, "inbound|9080||");
    let la = c.load_assignment.as_ref().unwrap();
    let ep = &la.endpoints[0].lb_endpoints[0];
    let Some(envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier::Endpoint(
        e,
    )) = &ep.host_identifier
    else {
        panic!()
    };
    let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(sa)) =
        &e.address.as_ref().unwrap().address
    else {
        panic!()
    };
    assert_eq!(sa.address, "127.0.0.1");
    assert!(matches!(
        sa.port_specifier,
        Some(
            envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(
                8080
            )
        )
    ));
    assert!(all.iter().any(|c| c.name == "inbound|9443||"));
}

#[test]
fn locality_lb_config_as_istio_sets_it() {
    use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::LocalityConfigSpecifier;
    let dr = |lb: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  host: reviews\n  trafficPolicy:\n{lb}"
        )
    };
    let weighted = |yaml: &str| {
        let snap = bookinfo(yaml);
        let cs = clusters(&snap, &productpage());
        let c = cluster(&cs, "outbound|9080||reviews.default.svc.cluster.local");
        let common = c.common_lb_config.clone().unwrap_or_default();
        (
            matches!(
                common.locality_config_specifier,
                Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
            ),
            common.healthy_panic_threshold.map(|p| p.value),
        )
    };
    // Distribute: locality weights, Envoy's own panic threshold.
    let distribute = dr(
        "    loadBalancer:\n      localityLbSetting:\n        distribute:\n        - from: r1/z1/*\n          to: {\"r1/z1/*\": 80, \"r2/*\": 20}\n",
    );
    assert_eq!(weighted(&distribute), (true, None));
    // Default failover with outlier detection: priorities only.
    let od = dr("    outlierDetection: {consecutive5xxErrors: 1}\n");
    assert_eq!(weighted(&od), (false, Some(0.0)));
    // Explicit failover: locality weights too.
    let failover = dr(
        "    outlierDetection: {consecutive5xxErrors: 1}\n    loadBalancer:\n      localityLbSetting:\n        failover: [{from: r1, to: r2}]\n",
    );
    assert_eq!(weighted(&failover), (true, Some(0.0)));
    // Without a rule nothing changes.
    assert_eq!(weighted(""), (false, None));
}

#[test]
fn auto_mtls_sends_mtls_to_sidecars_and_plain_text_to_the_rest() {
    // No DestinationRule TLS: Istio's auto mTLS.
    let snap = bookinfo("");
    let all = clusters(&snap, &productpage());
    let c = cluster(&all, &format!("outbound|9080||{REVIEWS}"));
    assert!(c.transport_socket.is_none());
    let names: Vec<&str> = c
        .transport_socket_matches
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, ["tlsMode-istio", "tlsMode-disabled"]);
    let istio = &c.transport_socket_matches[0];
    let criteria = &istio.r#match.as_ref().unwrap().fields;
    assert_eq!(criteria.len(), 1);
    assert!(matches!(
        &criteria["tlsMode"].kind,
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(v)) if v == "istio"
    ));
    let socket = istio.transport_socket.as_ref().unwrap();
    let Some(ConfigType::TypedConfig(a)) = &socket.config_type else {
        panic!("typed")
    };
    let ctx = UpstreamTlsContext::decode(a.value.as_slice()).unwrap();
    assert_eq!(ctx.sni, format!("outbound_.9080_._.{REVIEWS}"));
    let disabled = &c.transport_socket_matches[1];
    assert!(disabled.r#match.as_ref().unwrap().fields.is_empty());
    assert_eq!(
        disabled.transport_socket.as_ref().unwrap().name,
        "envoy.transport_sockets.raw_buffer"
    );

    // A DestinationRule's TLS wins; DISABLE turns it off.
    let snap = bookinfo(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: DISABLE}
",
    );
    let all = clusters(&snap, &productpage());
    let c = cluster(&all, &format!("outbound|9080||{REVIEWS}"));
    assert!(c.transport_socket.is_none() && c.transport_socket_matches.is_empty());

    // The destination namespace's PeerAuthentication DISABLE: plain text.
    let snap = bookinfo(
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: DISABLE}
",
    );
    let all = clusters(&snap, &productpage());
    assert!(
        cluster(&all, &format!("outbound|9080||{REVIEWS}"))
            .transport_socket_matches
            .is_empty()
    );

    // No endpoint with a sidecar: nothing to do.
    let mut snap = bookinfo("");
    for eps in snap.endpoints.values_mut().flat_map(|p| p.values_mut()) {
        for e in eps {
            e.mesh_tls = false;
        }
    }
    let all = clusters(&snap, &productpage());
    assert!(
        cluster(&all, &format!("outbound|9080||{REVIEWS}"))
            .transport_socket_matches
            .is_empty()
    );
}

#[test]
fn clusters_encode_the_same_from_equal_snapshots() {
    // Two snapshots built apart (their hash maps seeded apart) must give the
    // same bytes, or a restarted pilot re-sends every cluster.
    let extra = include_str!("../../../../../samples/bookinfo/networking.yaml");
    let a = clusters(&bookinfo(extra), &productpage());
    let b = clusters(&bookinfo(extra), &productpage());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.name, y.name);
        assert_eq!(x.encode_to_vec(), y.encode_to_vec(), "{} differs", x.name);
    }
}
