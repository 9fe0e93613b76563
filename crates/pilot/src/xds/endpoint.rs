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
//!
//! Then Istio's locality load balancing ([`locality`]) rewrites the groups for
//! the proxy's locality: failover priorities when the cluster has outlier
//! detection, `distribute` weights when the rule sets them.

use std::borrow::Cow;
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

pub mod locality;

use locality::LocalityLb;

/// The load assignments of the EDS clusters named in `names`. Those of clusters
/// without a subset are built once per snapshot and shared
/// ([`Snapshot::shared_eds`]), keyed by the cluster name alone when they do not
/// depend on the proxy, and by name, DestinationRule and proxy locality (plus
/// the proxy's `failoverPriority` label values) when locality load balancing
/// rewrites them ([`shared_key`]); a subset's depends on the DestinationRule
/// the proxy sees, and is built for each.
pub fn generate(snapshot: &Snapshot, proxy: &Proxy, names: &[String]) -> Vec<NamedResource> {
    let build = |name: &str| {
        cluster_load_assignment(snapshot, proxy, name)
            .map(|cla| NamedResource::new(cla.cluster_name.clone(), ENDPOINT, &cla))
    };
    names
        .iter()
        .filter_map(|name| match parse_subset_key(name) {
            Some((port, None, host)) => {
                let key = shared_key(snapshot, proxy, name, host, port);
                let shared = snapshot.shared_eds.get_or_init(Default::default);
                let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(hit) = shared.get(key.as_ref()) {
                    return hit.clone();
                }
                let built = build(name);
                shared.insert(key.into_owned(), built.clone());
                built
            }
            _ => build(name),
        })
        .collect()
}

/// The shared-cache key of cluster `name` (no subset) for `proxy`: the name
/// when the assignment is the same for every proxy — no DestinationRule in
/// the snapshot has outlier detection or `distribute`, or the one that
/// applies turns neither on for this port — else the name, the rule, the
/// proxy's locality and, for `failoverPriority`, the proxy's values of those
/// labels, so proxies in one locality still share one assignment.
pub fn shared_key<'n>(
    snapshot: &Snapshot,
    proxy: &Proxy,
    name: &'n str,
    host: &str,
    port: u32,
) -> Cow<'n, str> {
    if !snapshot.has_locality_rules() {
        return Cow::Borrowed(name);
    }
    let Some(rule) = destination_rule(snapshot, proxy, host) else {
        return Cow::Borrowed(name);
    };
    let policy = rule.policy(port, None);
    let Some(lb) = LocalityLb::from_policy(Some(&policy)).filter(LocalityLb::per_proxy) else {
        return Cow::Borrowed(name);
    };
    let mut key = format!(
        "{name}\u{0}{}/{}\u{0}{}",
        rule.resource.namespace_or("default"),
        rule.resource.name(),
        proxy.locality
    );
    if lb.uses_labels() {
        let labels = proxy_labels(proxy);
        for l in &lb.setting.failover_priority {
            let k = l.split_once('=').map_or(l.as_str(), |(k, _)| k);
            key.push('\u{0}');
            key.push_str(labels.get(k).map_or("", String::as_str));
        }
    }
    Cow::Owned(key)
}

/// The proxy's labels with its topology labels, for `failoverPriority`.
fn proxy_labels(proxy: &Proxy) -> BTreeMap<String, String> {
    locality::proxy_labels(
        &proxy.labels,
        &locality::parse(&proxy.locality),
        &proxy.cluster_id,
    )
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
    let rule = destination_rule(snapshot, proxy, host);
    let selected: Vec<&Endpoint> = match subset {
        None => endpoints.iter().collect(),
        Some(subset) => match rule.and_then(|r| r.subset(subset)) {
            Some(s) => endpoints
                .iter()
                .filter(|e| labels_match(&s.labels, &e.labels))
                .collect(),
            None => Vec::new(),
        },
    };
    let groups = locality_groups(selected.into_iter().filter(|e| e.ip().is_some()));
    let mut cla = assignment_of_groups(name, &groups);
    let policy = rule.map(|r| r.policy(port, subset));
    if let Some(lb) = LocalityLb::from_policy(policy.as_ref()).filter(LocalityLb::per_proxy) {
        let members: Vec<Vec<&Endpoint>> = groups.into_iter().map(|(_, g)| g).collect();
        lb.apply(
            &mut cla,
            Some(&members),
            &locality::parse(&proxy.locality),
            &proxy_labels(proxy),
        );
    }
    Some(cla)
}

/// A load assignment for `endpoints`, grouped by locality in a stable order.
/// Also used inline by DNS clusters (whose addresses may be host names).
pub fn load_assignment<'a>(
    cluster_name: &str,
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
) -> ClusterLoadAssignment {
    assignment_of_groups(cluster_name, &locality_groups(endpoints))
}

/// `endpoints` grouped by locality (`region/zone/subzone`), in locality order.
fn locality_groups<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
) -> Vec<(&'a str, Vec<&'a Endpoint>)> {
    let mut by_locality: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
    for e in endpoints {
        by_locality.entry(e.locality.as_str()).or_default().push(e);
    }
    by_locality.into_iter().collect()
}

/// One `LocalityLbEndpoints` per group, weighted by the sum of its endpoints'.
fn assignment_of_groups(
    cluster_name: &str,
    groups: &[(&str, Vec<&Endpoint>)],
) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster_name.to_string(),
        endpoints: groups
            .iter()
            .map(|(locality, members)| {
                let lb_endpoints: Vec<LbEndpoint> =
                    members.iter().map(|e| lb_endpoint(e)).collect();
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
    (!s.is_empty()).then(|| locality::parse(s))
}

#[cfg(test)]
mod tests;
