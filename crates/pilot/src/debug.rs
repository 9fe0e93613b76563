//! Pilot's debug endpoints on the HTTP port, beside `/metrics`, `/healthz`,
//! `/ready` and `/logging` from `common::runtime`:
//!
//! - `/debug/syncz`: every ADS connection — proxy, since when, and per type the
//!   versions and nonces sent and ACKed and the last NACK.
//! - `/debug/config_dump?proxyID=…`: what pilot generates for one connected proxy
//!   (node id, `POD.NAMESPACE` or connection id), rendered as a JSON summary per
//!   resource (Envoy's protobuf types have no JSON mapping here).
//! - `/debug/registryz`: services with their ports and endpoints.
//! - `/debug/configz`: accepted config resources and those rejected, with why;
//!   AuthorizationPolicies pilot applies only in part or not at all, with why
//!   (`authorization`, from [`crate::xds::authz::notes`]).
//! - `/debug/sourcez` (Kubernetes mode, [`source_router`]): each watched kind,
//!   whether it is listed, not served or still pending, at which apiVersion, and
//!   how many objects pilot holds.
//!
//! Everything is read from the published snapshot and the live connections; the
//! handlers never block a push.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use prost::Message;
use serde_json::{Value, json};

use crate::model::{ModelHandle, Resolution, ServiceSource, Snapshot};
use crate::proxy::Proxy;
use crate::xds::ads::{AdsServer, ConnectionStatus, Connections, Generator, short_type};
use crate::xds::{CLUSTER, ENDPOINT, LISTENER, NamedResource, ROUTE};

const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

/// What the debug handlers read.
#[derive(Clone)]
pub struct DebugState {
    /// The published snapshots.
    pub model: ModelHandle,
    /// The live ADS connections.
    pub connections: Connections,
    /// How resources are generated (the ADS server's generator).
    pub generator: Generator,
}

impl DebugState {
    /// The state behind `server`'s connections.
    pub fn from_server(server: &AdsServer) -> Self {
        DebugState {
            model: server.model().clone(),
            connections: server.connections(),
            generator: server.generator(),
        }
    }
}

/// `/debug/sourcez` for the Kubernetes source; merge into the admin router.
pub fn source_router(status: crate::config::kube::KubeStatus) -> Router {
    Router::new()
        .route("/debug/sourcez", get(sourcez))
        .with_state(status)
}

async fn sourcez(State(status): State<crate::config::kube::KubeStatus>) -> Json<Value> {
    let kinds = status.kinds();
    let synced = kinds.iter().all(|k| k.phase != "pending");
    Json(json!({"source": "kubernetes", "synced": synced, "kinds": kinds}))
}

/// The `/debug/*` routes; merge into the admin router.
pub fn router(state: DebugState) -> Router {
    Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/debug/config_dump", get(config_dump))
        .route("/debug/registryz", get(registryz))
        .route("/debug/configz", get(configz))
        .with_state(state)
}

async fn syncz(State(s): State<DebugState>) -> Json<Vec<ConnectionStatus>> {
    Json(s.connections.list())
}

fn error(status: StatusCode, message: String, connected: Vec<String>) -> Response {
    (
        status,
        Json(json!({ "error": message, "connected": connected })),
    )
        .into_response()
}

async fn config_dump(
    State(s): State<DebugState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let connected: Vec<String> = s
        .connections
        .list()
        .into_iter()
        .map(|c| c.proxy_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let Some(id) = q.get("proxyID").filter(|id| !id.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "name a proxy: /debug/config_dump?proxyID=<node id or POD.NAMESPACE>; connected proxies are listed below and on /debug/syncz".into(),
            connected,
        );
    };
    let Some(conn) = s.connections.find(id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "proxy {id:?} is not connected to this pilot; use a node id or POD.NAMESPACE from /debug/syncz"
            ),
            connected,
        );
    };
    let snapshot = s.model.load();
    Json(dump(&snapshot, &conn, &s.generator)).into_response()
}

/// The config dump of one connection, regenerated from `snapshot`.
pub fn dump(snapshot: &Snapshot, conn: &ConnectionStatus, generator: &Generator) -> Value {
    let proxy = &conn.proxy;
    let gen_type = |type_url: &str, names: &[String]| -> Value {
        match generator(snapshot, proxy, type_url, names) {
            Ok(resources) => json!({
                "type_url": type_url,
                "type": short_type(type_url),
                "count": resources.len(),
                "resources": resources.iter().map(summarize).collect::<Vec<_>>(),
            }),
            Err(e) => {
                json!({ "type_url": type_url, "type": short_type(type_url), "error": e.to_string() })
            }
        }
    };
    let names_of = |type_url: &str| -> Option<Vec<String>> {
        conn.type_status(type_url)
            .filter(|t| !t.names.is_empty())
            .map(|t| t.names.clone())
    };
    let clusters = generator(snapshot, proxy, CLUSTER, &[]).unwrap_or_default();
    let listeners = generator(snapshot, proxy, LISTENER, &[]).unwrap_or_default();
    let eds_names = names_of(ENDPOINT).unwrap_or_else(|| eds_names(&clusters));
    let rds_names = names_of(ROUTE).unwrap_or_else(|| rds_names(&listeners));
    json!({
        "connection_id": conn.connection_id,
        "proxy": proxy_json(proxy),
        "snapshot_version": snapshot.version,
        "types": [
            gen_type(CLUSTER, &[]),
            gen_type(ENDPOINT, &eds_names),
            gen_type(LISTENER, &[]),
            gen_type(ROUTE, &rds_names),
        ],
    })
}

fn proxy_json(p: &Proxy) -> Value {
    json!({
        "id": p.id,
        "type": p.kind.to_string(),
        "ips": p.ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "pod_name": p.pod_name,
        "namespace": p.namespace,
        "labels": p.labels,
        "service_account": p.service_account,
        "workload_name": p.workload_name,
        "cluster_id": p.cluster_id,
    })
}

/// The EDS names CDS implies: the service name (or cluster name) of every EDS
/// cluster.
fn eds_names(clusters: &[NamedResource]) -> Vec<String> {
    clusters
        .iter()
        .filter_map(|r| Cluster::decode(r.resource.value.as_slice()).ok())
        .filter(|c| {
            matches!(
                c.cluster_discovery_type,
                Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32
            )
        })
        .map(|c| match c.eds_cluster_config {
            Some(e) if !e.service_name.is_empty() => e.service_name,
            _ => c.name,
        })
        .collect()
}

/// The RDS names LDS implies: every HTTP connection manager's `rds` name.
fn rds_names(listeners: &[NamedResource]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for l in listeners
        .iter()
        .filter_map(|r| Listener::decode(r.resource.value.as_slice()).ok())
    {
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if any.type_url != HCM_TYPE {
                    continue;
                }
                if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
                {
                    names.insert(rds.route_config_name);
                }
            }
        }
    }
    names.into_iter().collect()
}

fn address(a: Option<&Address>) -> Value {
    match a.and_then(|a| a.address.as_ref()) {
        Some(AddressKind::SocketAddress(s)) => match &s.port_specifier {
            Some(PortSpecifier::PortValue(p)) => json!(format!("{}:{p}", s.address)),
            Some(PortSpecifier::NamedPort(p)) => json!(format!("{}:{p}", s.address)),
            None => json!(s.address),
        },
        Some(AddressKind::Pipe(p)) => json!(format!("unix:{}", p.path)),
        Some(AddressKind::EnvoyInternalAddress(_)) => json!("envoy-internal"),
        None => Value::Null,
    }
}

/// A JSON summary of one generated resource: the fields that matter when
/// debugging, per type; other types show their name and size.
pub fn summarize(r: &NamedResource) -> Value {
    let bytes = r.resource.value.as_slice();
    let decode_error =
        |e: prost::DecodeError| json!({ "name": r.name, "error": format!("cannot decode: {e}") });
    match r.resource.type_url.as_str() {
        CLUSTER => match Cluster::decode(bytes) {
            Ok(c) => {
                let kind = match &c.cluster_discovery_type {
                    Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
                        .map(|d| d.as_str_name().to_string())
                        .unwrap_or_else(|_| t.to_string()),
                    Some(ClusterDiscoveryType::ClusterType(c)) => c.name.clone(),
                    None => "STATIC".to_string(),
                };
                let lb = LbPolicy::try_from(c.lb_policy)
                    .map(|l| l.as_str_name().to_string())
                    .unwrap_or_else(|_| c.lb_policy.to_string());
                json!({
                    "name": c.name,
                    "type": kind,
                    "lb_policy": lb,
                    "eds_service_name": c.eds_cluster_config.map(|e| e.service_name),
                    "connect_timeout_ms": c.connect_timeout.map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000),
                    "tls": c.transport_socket.map(|t| t.name),
                    "load_assignment_endpoints": c.load_assignment.map(|l| l.endpoints.iter().map(|e| e.lb_endpoints.len()).sum::<usize>()),
                })
            }
            Err(e) => decode_error(e),
        },
        LISTENER => match Listener::decode(bytes) {
            Ok(l) => json!({
                "name": l.name,
                "address": address(l.address.as_ref()),
                "filter_chains": l.filter_chains.len(),
                "default_filter_chain": l.default_filter_chain.is_some(),
                "listener_filters": l.listener_filters.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
                "use_original_dst": l.use_original_dst.map(|b| b.value),
            }),
            Err(e) => decode_error(e),
        },
        ROUTE => match RouteConfiguration::decode(bytes) {
            Ok(rc) => json!({
                "name": rc.name,
                "virtual_hosts": rc.virtual_hosts.iter().map(|vh| json!({
                    "name": vh.name,
                    "domains": vh.domains,
                    "routes": vh.routes.len(),
                })).collect::<Vec<_>>(),
            }),
            Err(e) => decode_error(e),
        },
        ENDPOINT => match ClusterLoadAssignment::decode(bytes) {
            Ok(cla) => {
                let endpoints: Vec<Value> = cla
                    .endpoints
                    .iter()
                    .flat_map(|loc| {
                        let locality = loc
                            .locality
                            .as_ref()
                            .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone));
                        loc.lb_endpoints.iter().map(move |e| {
                            let addr = match &e.host_identifier {
                                Some(HostIdentifier::Endpoint(ep)) => address(ep.address.as_ref()),
                                Some(HostIdentifier::EndpointName(n)) => json!(n),
                                None => Value::Null,
                            };
                            json!({
                                "address": addr,
                                "weight": e.load_balancing_weight.map(|w| w.value),
                                "health_status": e.health_status,
                                "locality": locality,
                                "priority": loc.priority,
                            })
                        })
                    })
                    .collect();
                json!({ "cluster_name": cla.cluster_name, "endpoints": endpoints })
            }
            Err(e) => decode_error(e),
        },
        other => json!({ "name": r.name, "type_url": other, "bytes": bytes.len() }),
    }
}

async fn registryz(State(s): State<DebugState>) -> Json<Value> {
    Json(registry_json(&s.model.load()))
}

/// `/debug/registryz`: services, ports and endpoints of `snapshot`.
pub fn registry_json(snapshot: &Snapshot) -> Value {
    let services: Vec<Value> = snapshot
        .services
        .values()
        .map(|svc| {
            let endpoints: BTreeMap<String, Vec<Value>> = snapshot
                .endpoints
                .get(&svc.hostname)
                .map(|by_port| {
                    by_port
                        .iter()
                        .map(|(port, eps)| {
                            let list = eps
                                .iter()
                                .map(|e| {
                                    json!({
                                        "address": e.address,
                                        "port": e.port,
                                        "labels": e.labels,
                                        "namespace": e.namespace,
                                        "service_account": e.service_account,
                                        "workload_name": e.workload_name,
                                        "locality": e.locality,
                                        "weight": e.weight,
                                        "mesh_tls": e.mesh_tls,
                                        "healthy": e.healthy,
                                    })
                                })
                                .collect();
                            (port.to_string(), list)
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "hostname": svc.hostname,
                "name": svc.name,
                "namespace": svc.namespace,
                "source": match &svc.source {
                    ServiceSource::Kubernetes => "Kubernetes".to_string(),
                    ServiceSource::ServiceEntry(n) => format!("ServiceEntry {n}"),
                },
                "resolution": match svc.resolution {
                    Resolution::ClientSideLb => "ClientSideLB",
                    Resolution::Dns => "DNS",
                    Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
                    Resolution::Passthrough => "Passthrough",
                },
                "mesh_external": svc.mesh_external,
                "addresses": svc.addresses,
                "export_to": svc.export_to,
                "selector": svc.selector,
                "ports": svc.ports.iter().map(|p| json!({
                    "name": p.name,
                    "port": p.port,
                    "protocol": format!("{:?}", p.protocol).to_uppercase(),
                })).collect::<Vec<_>>(),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "version": snapshot.version, "services": services })
}

async fn configz(State(s): State<DebugState>) -> Json<Value> {
    Json(config_json(&s.model.load()))
}

/// `/debug/configz`: accepted resources (`Kind name.namespace` and where they
/// came from), rejected ones with galley's messages, and the
/// AuthorizationPolicies not applied as written (`authorization`: resource,
/// `applied`, messages).
pub fn config_json(snapshot: &Snapshot) -> Value {
    let resources: Vec<Value> = snapshot
        .config
        .iter()
        .map(|r| {
            let ns = r.namespace_or("default");
            json!({
                "id": format!("{} {}.{}", r.kind, r.name(), ns),
                "kind": r.kind,
                "api_version": r.api_version,
                "name": r.name(),
                "namespace": ns,
                "origin": r.origin.to_string(),
            })
        })
        .collect();
    let rejected: Vec<Value> = snapshot
        .rejected
        .iter()
        .map(|r| json!({ "resource": r.resource, "origin": r.origin, "messages": r.messages }))
        .collect();
    let authorization = crate::xds::authz::notes(snapshot);
    json!({
        "version": snapshot.version,
        "resources": resources,
        "rejected": rejected,
        "authorization": authorization,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Endpoint, Protocol, Service, ServicePort};
    use envoy_types::pb::envoy::config::core::v3::SocketAddress;
    use std::sync::Arc;

    #[test]
    fn summarizes_clusters_and_listeners() {
        let c = Cluster {
            name: "outbound|9080||reviews.default.svc.cluster.local".into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            lb_policy: LbPolicy::LeastRequest as i32,
            ..Default::default()
        };
        let v = summarize(&NamedResource::new(c.name.clone(), CLUSTER, &c));
        assert_eq!(v["type"], "EDS");
        assert_eq!(v["lb_policy"], "LEAST_REQUEST");
        assert_eq!(
            eds_names(&[NamedResource::new(c.name.clone(), CLUSTER, &c)]),
            vec![c.name.clone()]
        );
        let l = Listener {
            name: "0.0.0.0_8080".into(),
            address: Some(Address {
                address: Some(AddressKind::SocketAddress(SocketAddress {
                    address: "0.0.0.0".into(),
                    port_specifier: Some(PortSpecifier::PortValue(8080)),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        };
        let v = summarize(&NamedResource::new(l.name.clone(), LISTENER, &l));
        assert_eq!(v["address"], "0.0.0.0:8080");
        assert_eq!(v["filter_chains"], 0);
    }

    #[test]
    fn registry_lists_services_with_endpoints() {
        let mut snap = Snapshot {
            version: 3,
            ..Default::default()
        };
        let host = "reviews.default.svc.cluster.local".to_string();
        snap.services.insert(
            host.clone(),
            Arc::new(Service {
                hostname: host.clone(),
                namespace: "default".into(),
                name: "reviews".into(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 9080,
                    protocol: Protocol::Http,
                }],
                addresses: vec![],
                selector: Default::default(),
                resolution: Resolution::ClientSideLb,
                mesh_external: false,
                export_to: vec![],
                source: ServiceSource::Kubernetes,
            }),
        );
        snap.endpoints.entry(host).or_default().insert(
            9080,
            vec![Endpoint {
                address: "10.0.0.1".into(),
                port: 9080,
                labels: Default::default(),
                namespace: "default".into(),
                service_account: "default".into(),
                workload_name: "reviews-v1".into(),
                locality: String::new(),
                weight: 1,
                mesh_tls: true,
                healthy: true,
            }],
        );
        let v = registry_json(&snap);
        assert_eq!(v["services"][0]["ports"][0]["protocol"], "HTTP");
        assert_eq!(
            v["services"][0]["endpoints"]["9080"][0]["address"],
            "10.0.0.1"
        );
    }
}
