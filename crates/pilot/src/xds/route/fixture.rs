//! Test fixtures for the generators: snapshots built by hand (services,
//! endpoints, Istio config from YAML) and Istio-style proxies.

use std::collections::BTreeMap;
use std::sync::Arc;

use common::resource::Resource;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use crate::model::{
    DOMAIN_SUFFIX, Endpoint, Protocol, Resolution, Service, ServicePort, ServiceSource, Snapshot,
    TlsSecret,
};
use crate::proxy::{Proxy, ProxyKind};

/// Istio resources from YAML (panics on a decoding error).
pub fn resources(yaml: &str) -> Vec<Arc<Resource>> {
    let loaded = common::load::load_str(yaml, "test.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    loaded.resources.into_iter().map(Arc::new).collect()
}

/// A Kubernetes service `name.ns` selecting `app: name`, with a VIP.
pub fn service(name: &str, ns: &str, vip: &str, ports: &[(&str, u32)]) -> Service {
    Service {
        hostname: format!("{name}.{ns}.{DOMAIN_SUFFIX}"),
        namespace: ns.into(),
        name: name.into(),
        ports: ports
            .iter()
            .map(|(n, p)| ServicePort {
                name: n.to_string(),
                port: *p,
                protocol: Protocol::from_name(n),
            })
            .collect(),
        addresses: if vip.is_empty() {
            Vec::new()
        } else {
            vec![vip.into()]
        },
        selector: [("app".to_string(), name.to_string())]
            .into_iter()
            .collect(),
        resolution: Resolution::ClientSideLb,
        mesh_external: false,
        export_to: Vec::new(),
        source: ServiceSource::Kubernetes,
    }
}

/// An endpoint with labels.
pub fn endpoint(ip: &str, port: u32, labels: &[(&str, &str)]) -> Endpoint {
    Endpoint {
        address: ip.into(),
        port,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        namespace: "default".into(),
        service_account: "default".into(),
        workload_name: format!("pod-{ip}"),
        locality: String::new(),
        weight: 1,
        mesh_tls: true,
        healthy: true,
    }
}

/// A snapshot of `services` (with their endpoints by port) and Istio config.
pub fn snapshot(yaml: &str, services: Vec<(Service, Vec<Endpoint>)>) -> Snapshot {
    let mut s = Snapshot {
        version: 1,
        config: if yaml.trim().is_empty() {
            Vec::new()
        } else {
            resources(yaml)
        },
        ..Default::default()
    };
    for (svc, eps) in services {
        let mut by_port: BTreeMap<u32, Vec<Endpoint>> = BTreeMap::new();
        for p in &svc.ports {
            by_port.insert(
                p.port,
                eps.iter()
                    .map(|e| Endpoint {
                        port: e.port,
                        ..e.clone()
                    })
                    .collect(),
            );
        }
        s.endpoints.insert(svc.hostname.clone(), by_port);
        s.services.insert(svc.hostname.clone(), Arc::new(svc));
    }
    s
}

/// Bookinfo's four services (ports 9080) with endpoints per version, plus
/// `extra` Istio config.
pub fn bookinfo(extra: &str) -> Snapshot {
    let v = |ip: &str, app: &str, version: &str| {
        endpoint(ip, 9080, &[("app", app), ("version", version)])
    };
    snapshot(
        extra,
        vec![
            (
                service("productpage", "default", "10.96.0.10", &[("http", 9080)]),
                vec![v("10.1.0.10", "productpage", "v1")],
            ),
            (
                service("details", "default", "10.96.0.11", &[("http", 9080)]),
                vec![v("10.1.0.11", "details", "v1")],
            ),
            (
                service("reviews", "default", "10.96.0.12", &[("http", 9080)]),
                vec![
                    v("10.1.0.21", "reviews", "v1"),
                    v("10.1.0.22", "reviews", "v2"),
                    v("10.1.0.23", "reviews", "v3"),
                ],
            ),
            (
                service("ratings", "default", "10.96.0.13", &[("http", 9080)]),
                vec![v("10.1.0.31", "ratings", "v1")],
            ),
        ],
    )
}

/// A sidecar proxy in `ns` with `labels` at `ip`.
pub fn sidecar(ns: &str, labels: &[(&str, &str)], ip: &str) -> Proxy {
    Proxy {
        id: format!("sidecar~{ip}~pod.{ns}~{ns}.svc.cluster.local"),
        kind: ProxyKind::Sidecar,
        ips: vec![ip.parse().unwrap()],
        pod_name: "pod".into(),
        namespace: ns.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        service_account: "default".into(),
        workload_name: String::new(),
        cluster_id: "Kubernetes".into(),
        locality: String::new(),
        interception: crate::proxy::Interception::Redirect,
    }
}

/// A gateway proxy labelled `istio: ingressgateway` in `ns`.
pub fn router(ns: &str) -> Proxy {
    Proxy {
        kind: ProxyKind::Router,
        id: format!("router~10.1.9.9~gw.{ns}~{ns}.svc.cluster.local"),
        ..sidecar(ns, &[("istio", "ingressgateway")], "10.1.9.9")
    }
}

/// A self-signed certificate secret with placeholder PEM (not parsed).
pub fn secret() -> TlsSecret {
    TlsSecret {
        cert_chain: "-----BEGIN CERTIFICATE-----\nCERT\n-----END CERTIFICATE-----\n".into(),
        private_key: "-----BEGIN PRIVATE KEY-----\nKEY\n-----END PRIVATE KEY-----\n".into(),
        ca_cert: None,
    }
}

/// The cluster called `name`.
pub fn cluster<'a>(clusters: &'a [Cluster], name: &str) -> &'a Cluster {
    clusters.iter().find(|c| c.name == name).unwrap_or_else(|| {
        panic!(
            "no cluster {name}; have {:?}",
            clusters.iter().map(|c| &c.name).collect::<Vec<_>>()
        )
    })
}

/// The listener called `name`.
pub fn listener<'a>(listeners: &'a [Listener], name: &str) -> &'a Listener {
    listeners
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no listener {name}; have {:?}",
                listeners.iter().map(|l| &l.name).collect::<Vec<_>>()
            )
        })
}

/// The route configuration `name` for `proxy`.
pub fn route_config(snapshot: &Snapshot, proxy: &Proxy, name: &str) -> RouteConfiguration {
    let scope = super::scope::Scope::new(snapshot, proxy);
    super::route_configuration(&scope, name)
        .unwrap_or_else(|| panic!("no route configuration {name}"))
}
