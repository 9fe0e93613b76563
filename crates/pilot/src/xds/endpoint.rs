//! EDS: one `ClusterLoadAssignment` per requested EDS cluster
//! (`outbound|PORT|SUBSET|HOST` of a service resolved client-side).
//!
//! The endpoints are the registry's for the host and service port; a subset
//! cluster keeps those whose labels carry the subset's labels (from the
//! DestinationRule the proxy sees; an unknown subset has no endpoints, as in
//! Istio). Ready endpoints are HEALTHY, not-ready ones UNHEALTHY; endpoints are
//! grouped by locality (`region/zone/subzone`) with their weights, and those
//! with a mesh proxy carry `tlsMode: istio` transport-socket-match metadata.
//! Endpoints that are not IP addresses cannot be sent over EDS and are left out.
//! Names that are not EDS clusters of known services are left out, as Envoy
//! expects.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};

use crate::model::{Endpoint, Resolution, Snapshot};
use crate::proxy::Proxy;
use crate::xds::cluster::policy::destination_rule;
use crate::xds::route::util::{
    labels_match, parse_subset_key, socket_address, string_metadata, u32v,
};
use crate::xds::{ENDPOINT, NamedResource};

/// The load assignments of the EDS clusters named in `names`. Those of clusters
/// without a subset do not depend on the proxy: they are built once per
/// snapshot and shared ([`Snapshot::shared_eds`]); a subset's depends on the
/// DestinationRule the proxy sees, and is built for each.
pub fn generate(snapshot: &Snapshot, proxy: &Proxy, names: &[String]) -> Vec<NamedResource> {
    let build = |name: &str| {
        cluster_load_assignment(snapshot, proxy, name)
            .map(|cla| NamedResource::new(cla.cluster_name.clone(), ENDPOINT, &cla))
    };
    names
        .iter()
        .filter_map(|name| match parse_subset_key(name) {
            Some((_, None, _)) => {
                let shared = snapshot.shared_eds.get_or_init(Default::default);
                let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
                shared
                    .entry(name.clone())
                    .or_insert_with(|| build(name))
                    .clone()
            }
            _ => build(name),
        })
        .collect()
}

/// The load assignment of one outbound EDS cluster, or `None` when the name is
/// not one.
pub fn cluster_load_assignment(
    snapshot: &Snapshot,
    proxy: &Proxy,
    name: &str,
) -> Option<ClusterLoadAssignment> {
    let (port, subset, host) = parse_subset_key(name)?;
    let service = snapshot.services.get(host)?;
    if service.resolution != Resolution::ClientSideLb {
        return None;
    }
    let endpoints = snapshot.endpoints_of(host, port);
    let selected: Vec<&Endpoint> = match subset {
        None => endpoints.iter().collect(),
        Some(subset) => {
            match destination_rule(snapshot, proxy, host).and_then(|r| r.subset(subset)) {
                Some(s) => endpoints
                    .iter()
                    .filter(|e| labels_match(&s.labels, &e.labels))
                    .collect(),
                None => Vec::new(),
            }
        }
    };
    Some(load_assignment(
        name,
        selected.into_iter().filter(|e| e.ip().is_some()),
    ))
}

/// A load assignment for `endpoints`, grouped by locality in a stable order.
/// Also used inline by DNS clusters (whose addresses may be host names).
pub fn load_assignment<'a>(
    cluster_name: &str,
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
) -> ClusterLoadAssignment {
    let mut by_locality: BTreeMap<&str, Vec<LbEndpoint>> = BTreeMap::new();
    for e in endpoints {
        by_locality
            .entry(e.locality.as_str())
            .or_default()
            .push(lb_endpoint(e));
    }
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: by_locality
            .into_iter()
            .map(|(locality, lb_endpoints)| {
                let weight: u32 = lb_endpoints
                    .iter()
                    .map(|e| e.load_balancing_weight.map_or(1, |w| w.value))
                    .fold(0u32, u32::saturating_add);
                LocalityLbEndpoints {
                    locality: parse_locality(locality),
                    lb_endpoints,
                    load_balancing_weight: u32v(weight.max(1)),
                    ..Default::default()
                }
            })
            .collect(),
        ..Default::default()
    }
}

fn lb_endpoint(e: &Endpoint) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
            address: Some(socket_address(&e.address, e.port)),
            ..Default::default()
        })),
        health_status: if e.healthy {
            HealthStatus::Healthy
        } else {
            HealthStatus::Unhealthy
        } as i32,
        load_balancing_weight: u32v(e.weight.max(1)),
        metadata: e
            .mesh_tls
            .then(|| string_metadata("envoy.transport_socket_match", &[("tlsMode", "istio")])),
    }
}

/// `region/zone/subzone` as an Envoy locality; `None` when empty.
fn parse_locality(s: &str) -> Option<Locality> {
    if s.is_empty() {
        return None;
    }
    let mut parts = s.splitn(3, '/');
    Some(Locality {
        region: parts.next().unwrap_or_default().to_string(),
        zone: parts.next().unwrap_or_default().to_string(),
        sub_zone: parts.next().unwrap_or_default().to_string(),
    })
}

#[cfg(test)]
mod tests;
