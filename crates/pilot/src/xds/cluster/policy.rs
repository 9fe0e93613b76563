//! DestinationRules as a proxy sees them: which rule applies to a host, and the
//! traffic policy in effect for one port and subset, merged in Istio's order
//! (top level, then its `portLevelSettings` for the port, then the subset's
//! policy, then the subset's `portLevelSettings`; a matching port-level entry
//! replaces load balancer, connection pool, outlier detection and TLS together,
//! as Istio's `MergeTrafficPolicy` does).

use common::host;
use common::istio::networking::{
    ConsistentHashLb, DestinationRuleSpec, PortTrafficPolicy, Subset, TrafficPolicy,
};
use common::resource::Resource;

use crate::model::{Snapshot, fqdn};
use crate::proxy::Proxy;
use crate::xds::route::scope::{ROOT_NAMESPACE, exported_to, namespace};
use crate::xds::route::util::labels_match;

/// One DestinationRule and its namespace.
#[derive(Debug, Clone, Copy)]
pub struct Rule<'a> {
    /// The resource (name, namespace).
    pub resource: &'a Resource,
    /// Its spec.
    pub spec: &'a DestinationRuleSpec,
}

impl<'a> Rule<'a> {
    /// The subset called `name`.
    pub fn subset(&self, name: &str) -> Option<&'a Subset> {
        self.spec.subsets.iter().find(|s| s.name == name)
    }

    /// The policy in effect for `port` and `subset`.
    pub fn policy(&self, port: u32, subset: Option<&str>) -> TrafficPolicy {
        effective_policy(self.spec, port, subset)
    }
}

/// Namespace, selector, exactness, specificity, config order: lower wins.
type RuleRank = (u8, u8, u8, usize, usize);

/// The DestinationRule that applies to `hostname` for `proxy`, as Istio chooses
/// it: the proxy's namespace first, then the service's, then the root
/// namespace; within one, a rule with a matching workload selector, then an
/// exact host, then the most specific wildcard, then config order.
pub fn destination_rule<'a>(
    snapshot: &'a Snapshot,
    proxy: &Proxy,
    hostname: &str,
) -> Option<Rule<'a>> {
    let service_ns = snapshot
        .services
        .get(hostname)
        .map(|s| s.namespace.as_str());
    let mut best: Option<(RuleRank, Rule<'a>)> = None;
    for (index, resource, spec) in snapshot.destination_rules_for(hostname) {
        let ns = namespace(resource);
        let ns_rank = if ns == proxy.namespace {
            0
        } else if Some(ns) == service_ns {
            1
        } else if ns == ROOT_NAMESPACE {
            2
        } else {
            continue;
        };
        if !exported_to(&spec.export_to, ns, &proxy.namespace) {
            continue;
        }
        let selector_rank = match &spec.workload_selector {
            Some(sel) if !sel.match_labels.is_empty() => {
                if ns != proxy.namespace || !labels_match(&sel.match_labels, &proxy.labels) {
                    continue;
                }
                0
            }
            _ => 1,
        };
        let rule_host = fqdn(&spec.host, ns);
        let host_rank = if rule_host == hostname {
            0
        } else if host::subset_of(hostname, &rule_host) {
            1
        } else {
            continue;
        };
        let key = (
            ns_rank,
            selector_rank,
            host_rank,
            usize::MAX - rule_host.len(),
            index,
        );
        if best.as_ref().is_none_or(|(k, _)| key < *k) {
            best = Some((key, Rule { resource, spec }));
        }
    }
    best.map(|(_, r)| r)
}

/// The merged traffic policy for one port and (optionally) one subset.
pub fn effective_policy(
    spec: &DestinationRuleSpec,
    port: u32,
    subset: Option<&str>,
) -> TrafficPolicy {
    let mut merged = spec
        .traffic_policy
        .as_ref()
        .map(|p| with_port_level(p, port))
        .unwrap_or_default();
    let subset_policy = subset
        .and_then(|name| spec.subsets.iter().find(|s| s.name == name))
        .and_then(|s| s.traffic_policy.as_ref());
    if let Some(sp) = subset_policy {
        if sp.connection_pool.is_some() {
            merged.connection_pool = sp.connection_pool.clone();
        }
        if sp.outlier_detection.is_some() {
            merged.outlier_detection = sp.outlier_detection.clone();
        }
        if sp.load_balancer.is_some() {
            merged.load_balancer = sp.load_balancer.clone();
        }
        if sp.tls.is_some() {
            merged.tls = sp.tls.clone();
        }
        if sp.tunnel.is_some() {
            merged.tunnel = sp.tunnel.clone();
        }
        if sp.proxy_protocol.is_some() {
            merged.proxy_protocol = sp.proxy_protocol.clone();
        }
        if let Some(pls) = port_level(&sp.port_level_settings, port) {
            replace_with_port_level(&mut merged, pls);
        }
    }
    merged
}

fn with_port_level(policy: &TrafficPolicy, port: u32) -> TrafficPolicy {
    let mut out = TrafficPolicy {
        port_level_settings: Vec::new(),
        ..policy.clone()
    };
    if let Some(pls) = port_level(&policy.port_level_settings, port) {
        replace_with_port_level(&mut out, pls);
    }
    out
}

fn port_level(settings: &[PortTrafficPolicy], port: u32) -> Option<&PortTrafficPolicy> {
    settings
        .iter()
        .find(|p| p.port.as_ref().and_then(|s| s.number) == Some(port))
}

/// Per Istio's docs, port-level policies do not inherit: unset fields fall back
/// to defaults, not to the enclosing policy.
fn replace_with_port_level(policy: &mut TrafficPolicy, pls: &PortTrafficPolicy) {
    policy.connection_pool = pls.connection_pool.clone();
    policy.outlier_detection = pls.outlier_detection.clone();
    policy.load_balancer = pls.load_balancer.clone();
    policy.tls = pls.tls.clone();
}

/// The consistent-hash settings for a route destination (Istio's
/// `hashForHTTPDestination`): the subset's port-level, then the subset's, then
/// the top level's port-level for the destination's explicit port, then the
/// top level's. For a service's default route, pass the service port.
pub fn consistent_hash<'a>(
    spec: &'a DestinationRuleSpec,
    port: Option<u32>,
    subset: Option<&str>,
) -> Option<&'a ConsistentHashLb> {
    let hash_of = |pls: &'a [PortTrafficPolicy]| {
        port.and_then(|p| port_level(pls, p))
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.consistent_hash.as_ref())
    };
    let top = spec.traffic_policy.as_ref();
    let top_hash = top
        .and_then(|p| p.load_balancer.as_ref())
        .and_then(|lb| lb.consistent_hash.as_ref());
    let top_pls = top.and_then(|p| hash_of(&p.port_level_settings));
    let subset_policy = subset
        .and_then(|name| spec.subsets.iter().find(|s| s.name == name))
        .and_then(|s| s.traffic_policy.as_ref());
    let subset_hash = subset_policy
        .and_then(|p| p.load_balancer.as_ref())
        .and_then(|lb| lb.consistent_hash.as_ref());
    let subset_pls = subset_policy.and_then(|p| hash_of(&p.port_level_settings));
    subset_pls.or(subset_hash).or(top_pls).or(top_hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::istio::networking::{
        ConnectionPoolSettings, LoadBalancerSettings, PortSelector, SimpleLb, TcpSettings,
    };

    fn lb(simple: SimpleLb) -> Option<LoadBalancerSettings> {
        Some(LoadBalancerSettings {
            simple: Some(simple),
            ..Default::default()
        })
    }

    fn pool(max: i32) -> Option<ConnectionPoolSettings> {
        Some(ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                max_connections: Some(max),
                ..Default::default()
            }),
            http: None,
        })
    }

    #[test]
    fn merge_order_is_istios() {
        let spec = DestinationRuleSpec {
            host: "reviews".into(),
            traffic_policy: Some(TrafficPolicy {
                load_balancer: lb(SimpleLb::RoundRobin),
                connection_pool: pool(10),
                port_level_settings: vec![PortTrafficPolicy {
                    port: Some(PortSelector { number: Some(9080) }),
                    load_balancer: lb(SimpleLb::Random),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            subsets: vec![Subset {
                name: "v2".into(),
                labels: Default::default(),
                traffic_policy: Some(TrafficPolicy {
                    connection_pool: pool(5),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        // Other port: top level as is.
        let p = effective_policy(&spec, 8080, None);
        assert_eq!(p.load_balancer, lb(SimpleLb::RoundRobin));
        assert_eq!(p.connection_pool, pool(10));
        // Port level replaces all four fields, even the ones it leaves unset.
        let p = effective_policy(&spec, 9080, None);
        assert_eq!(p.load_balancer, lb(SimpleLb::Random));
        assert_eq!(p.connection_pool, None);
        // The subset overrides what it sets and keeps the rest.
        let p = effective_policy(&spec, 8080, Some("v2"));
        assert_eq!(p.load_balancer, lb(SimpleLb::RoundRobin));
        assert_eq!(p.connection_pool, pool(5));
        let p = effective_policy(&spec, 9080, Some("v2"));
        assert_eq!(p.load_balancer, lb(SimpleLb::Random));
        assert_eq!(p.connection_pool, pool(5));
    }
}
