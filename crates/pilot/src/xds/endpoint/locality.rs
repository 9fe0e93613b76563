//! Istio's locality load balancing (`pilot/pkg/networking/core/loadbalancer`):
//! which `localityLbSetting` is in effect for a cluster, and how it rewrites a
//! load assignment for one proxy's locality.
//!
//! The setting is the DestinationRule's (port and subset merged), else the
//! mesh-wide default, which is Istio's `enabled: true`; `enabled: false` in the
//! rule turns it off. Then, exactly as Istio's `ApplyLocalityLoadBalancer`:
//! - `distribute` (for proxies in a `from` locality): each locality group gets
//!   `load_balancing_weight` from the `to` entry it matches, split over the
//!   groups one wildcard matches in proportion to their own weights, rounded
//!   up; groups no entry matches lose their endpoints;
//! - otherwise, only when the cluster has outlier detection (without it Envoy
//!   never drops to a lower priority): `failoverPriority` labels split each
//!   group by how many of the labels an endpoint shares with the proxy, then
//!   the locality priorities follow — same region/zone/subzone 0, same
//!   region/zone 1, same region 2, others 3, and with `failover` a region
//!   other than the `to` of the proxy's region's entry 4 — and the priorities
//!   are renumbered 0..N without gaps.
//!
//! This module owns the computation only; [`super::generate`] decides which
//! load assignments depend on the proxy, and CDS ([`crate::xds::cluster`])
//! applies the same setting to DNS clusters' inline endpoints and sets
//! `locality_weighted_lb_config`.

use std::collections::{BTreeMap, BTreeSet};

use common::istio::networking::{LocalityDistribute, LocalityLoadBalancerSetting, TrafficPolicy};
use envoy_types::pb::envoy::config::core::v3::Locality;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LocalityLbEndpoints};

use crate::model::Endpoint;
use crate::xds::route::util::u32v;

/// Node label with a workload's region (Kubernetes topology).
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
/// Node label with a workload's zone (Kubernetes topology).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Istio's subzone label.
pub const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// Istio's cluster label, part of a proxy's labels for `failoverPriority`.
pub const CLUSTER_LABEL: &str = "topology.istio.io/cluster";
/// Istio's locality override label (`region.zone.subzone`, dots for slashes).
pub const LOCALITY_LABEL: &str = "topology.istio.io/locality";
/// The older name of [`LOCALITY_LABEL`].
pub const LEGACY_LOCALITY_LABEL: &str = "istio-locality";

/// The mesh-wide setting: Istio's default `meshConfig.localityLbSetting`
/// (`enabled: true`, nothing else). Mizzen reads no MeshConfig.
pub static MESH_DEFAULT: LocalityLoadBalancerSetting = LocalityLoadBalancerSetting {
    distribute: Vec::new(),
    failover: Vec::new(),
    failover_priority: Vec::new(),
    enabled: Some(true),
};

/// The locality load balancing in effect for one cluster.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalityLb<'a> {
    /// The setting (the rule's, else [`MESH_DEFAULT`]).
    pub setting: &'a LocalityLoadBalancerSetting,
    /// Whether failover applies: the cluster has outlier detection.
    pub failover: bool,
}

impl<'a> LocalityLb<'a> {
    /// The setting for a cluster with merged traffic policy `policy` (`None`
    /// without a DestinationRule); `None` when the rule disables it.
    pub fn from_policy(policy: Option<&'a TrafficPolicy>) -> Option<LocalityLb<'a>> {
        let rule = policy
            .and_then(|p| p.load_balancer.as_ref())
            .and_then(|lb| lb.locality_lb_setting.as_ref());
        let setting = match rule {
            Some(s) if s.enabled == Some(false) => return None,
            Some(s) => s,
            None if MESH_DEFAULT.enabled == Some(false) => return None,
            None => &MESH_DEFAULT,
        };
        Some(LocalityLb {
            setting,
            failover: policy.is_some_and(|p| p.outlier_detection.is_some()),
        })
    }

    /// Whether the load assignment depends on the proxy: `distribute`, or
    /// failover (outlier detection set).
    pub fn per_proxy(&self) -> bool {
        !self.setting.distribute.is_empty() || self.failover
    }

    /// Whether `failoverPriority` labels take part (then the assignment
    /// depends on the proxy's values of those labels too).
    pub fn uses_labels(&self) -> bool {
        self.setting.distribute.is_empty()
            && self.failover
            && !self.setting.failover_priority.is_empty()
    }

    /// Whether the cluster gets `common_lb_config.locality_weighted_lb_config`,
    /// as Istio sets it: with `distribute`, or with failover and explicit
    /// `failover` / `failoverPriority` entries.
    pub fn weighted_config(&self) -> bool {
        !self.setting.distribute.is_empty()
            || (self.failover
                && (!self.setting.failover.is_empty()
                    || !self.setting.failover_priority.is_empty()))
    }

    /// Rewrites `cla` for a proxy at `proxy` with `proxy_labels`. `groups`
    /// are the registry endpoints of each of `cla.endpoints` (same order);
    /// without them (DNS clusters, as in Istio) `failoverPriority` is skipped.
    pub fn apply(
        &self,
        cla: &mut ClusterLoadAssignment,
        groups: Option<&[Vec<&Endpoint>]>,
        proxy: &Locality,
        proxy_labels: &BTreeMap<String, String>,
    ) {
        let s = self.setting;
        if !s.distribute.is_empty() {
            apply_weights(cla, proxy, &s.distribute);
        } else if self.failover {
            if s.failover_priority.is_empty() {
                apply_failover(cla, proxy, &s.failover);
            } else {
                if let Some(groups) = groups {
                    apply_failover_priority(cla, groups, proxy_labels, &s.failover_priority);
                }
                if !s.failover.is_empty() {
                    apply_failover(cla, proxy, &s.failover);
                }
            }
        }
    }
}

/// `region/zone/subzone` (any suffix may be missing) as an Envoy locality.
pub fn parse(s: &str) -> Locality {
    let mut parts = s.splitn(3, '/');
    Locality {
        region: parts.next().unwrap_or_default().to_string(),
        zone: parts.next().unwrap_or_default().to_string(),
        sub_zone: parts.next().unwrap_or_default().to_string(),
    }
}

/// The locality a workload's labels give, as Istio reads a proxy's: the
/// topology labels (region, zone, subzone) when any is set, else the
/// `topology.istio.io/locality` / `istio-locality` label (`.` for `/`).
/// Empty when none is set.
pub fn from_labels(labels: &BTreeMap<String, String>) -> String {
    let get = |k: &str| labels.get(k).map(String::as_str);
    match (get(REGION_LABEL), get(ZONE_LABEL), get(SUBZONE_LABEL)) {
        (None, None, None) => label_override(labels).unwrap_or_default(),
        (r, z, s) => join(r.unwrap_or(""), z.unwrap_or(""), s.unwrap_or("")),
    }
}

/// The `topology.istio.io/locality` (else `istio-locality`) label of a pod or
/// workload, with `.` turned into `/` (Kubernetes label values have no `/`).
pub fn label_override(labels: &BTreeMap<String, String>) -> Option<String> {
    labels
        .get(LOCALITY_LABEL)
        .or_else(|| labels.get(LEGACY_LOCALITY_LABEL))
        .filter(|v| !v.is_empty())
        .map(|v| v.replace('.', "/"))
}

/// `region/zone/subzone` without trailing empty parts (Istio's
/// `LocalityToString`); empty for an empty region.
pub fn join(region: &str, zone: &str, subzone: &str) -> String {
    if region.is_empty() && zone.is_empty() && subzone.is_empty() {
        return String::new();
    }
    let mut out = region.to_string();
    if !zone.is_empty() || !subzone.is_empty() {
        out.push('/');
        out.push_str(zone);
    }
    if !subzone.is_empty() {
        out.push('/');
        out.push_str(subzone);
    }
    out
}

/// Istio's `LocalityMatch`: whether `locality` is in `rule`
/// (`region[/zone[/subzone]]`, `*` for any; a missing part matches all).
pub fn matches(locality: Option<&Locality>, rule: &str) -> bool {
    let mut parts = rule.splitn(3, '/');
    let (region, zone, subzone) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let field = |f: fn(&Locality) -> &str| locality.map(f).unwrap_or("");
    (region == "*" || field(|l| &l.region) == region)
        && (zone.is_empty() || zone == "*" || field(|l| &l.zone) == zone)
        && (subzone.is_empty() || subzone == "*" || field(|l| &l.sub_zone) == subzone)
}

/// Istio's `LbPriority`: 0 same region/zone/subzone, 1 same region/zone, 2
/// same region, 3 otherwise (a missing locality is all empty).
pub fn lb_priority(proxy: &Locality, endpoints: Option<&Locality>) -> u32 {
    let field = |f: fn(&Locality) -> &str| endpoints.map(f).unwrap_or("");
    if proxy.region != field(|l| &l.region) {
        3
    } else if proxy.zone != field(|l| &l.zone) {
        2
    } else if proxy.sub_zone != field(|l| &l.sub_zone) {
        1
    } else {
        0
    }
}

fn group_weight(group: &LocalityLbEndpoints) -> u64 {
    group
        .load_balancing_weight
        .map_or(1, |w| u64::from(w.value))
}

/// `distribute`: the first entry whose `from` holds the proxy sets the
/// weights; `to` entries claim groups in key order (Istio's map order is
/// random, so overlapping `to` keys are ambiguous there).
fn apply_weights(cla: &mut ClusterLoadAssignment, proxy: &Locality, rules: &[LocalityDistribute]) {
    let Some(rule) = rules
        .iter()
        .find(|d| matches(Some(proxy), d.from.as_deref().unwrap_or("")))
    else {
        return;
    };
    let mut unclaimed: BTreeSet<usize> = (0..cla.endpoints.len()).collect();
    for (to, weight) in &rule.to {
        let claimed: Vec<usize> = unclaimed
            .iter()
            .copied()
            .filter(|&i| matches(cla.endpoints[i].locality.as_ref(), to))
            .collect();
        let total: u64 = claimed
            .iter()
            .map(|&i| group_weight(&cla.endpoints[i]))
            .sum();
        for &i in &claimed {
            unclaimed.remove(&i);
            let share = group_weight(&cla.endpoints[i]) * u64::from(*weight);
            let w = share.div_ceil(total.max(1));
            if w > 0 {
                cla.endpoints[i].load_balancing_weight = u32v(u32::try_from(w).unwrap_or(u32::MAX));
            }
        }
    }
    for i in unclaimed {
        cla.endpoints[i].lb_endpoints.clear();
    }
}

/// Locality failover priorities, on top of any priorities already set
/// (`failoverPriority`), renumbered without gaps.
fn apply_failover(
    cla: &mut ClusterLoadAssignment,
    proxy: &Locality,
    failover: &[common::istio::networking::LocalityFailover],
) {
    for group in &mut cla.endpoints {
        let mut p = lb_priority(proxy, group.locality.as_ref());
        if p == 3
            && let Some(f) = failover
                .iter()
                .find(|f| f.from.as_deref().unwrap_or("") == proxy.region)
        {
            let region = group.locality.as_ref().map_or("", |l| l.region.as_str());
            if region != f.to.as_deref().unwrap_or("") {
                p = 4;
            }
        }
        group.priority = group.priority * 5 + p;
    }
    renumber(&mut cla.endpoints);
}

/// Splits each group by the number of `labels` (in order) an endpoint shares
/// with the proxy: all → 0, first mismatch at label j of n → n − j.
/// `label=value` compares against `value` instead of the proxy's label.
fn apply_failover_priority(
    cla: &mut ClusterLoadAssignment,
    groups: &[Vec<&Endpoint>],
    proxy_labels: &BTreeMap<String, String>,
    labels: &[String],
) {
    if proxy_labels.is_empty() || groups.len() != cla.endpoints.len() {
        return;
    }
    let wanted: Vec<(&str, Option<&str>)> = labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (l.as_str(), None),
        })
        .collect();
    let mut out = Vec::new();
    for (group, endpoints) in cla.endpoints.iter().zip(groups) {
        let locality = group.locality.clone().unwrap_or_default();
        let mut by_priority: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, e) in endpoints.iter().enumerate() {
            let mismatch = wanted.iter().position(|(k, value)| {
                let want = value.or_else(|| proxy_labels.get(*k).map(String::as_str));
                want != endpoint_label(e, &locality, k).as_deref()
            });
            let p = mismatch.map_or(0, |j| (wanted.len() - j) as u32);
            by_priority.entry(p).or_default().push(i);
        }
        for (p, members) in by_priority {
            let lb_endpoints: Vec<_> = members
                .iter()
                .filter_map(|&i| group.lb_endpoints.get(i).cloned())
                .collect();
            let weight: u32 = lb_endpoints
                .iter()
                .map(|e| e.load_balancing_weight.map_or(1, |w| w.value))
                .fold(0, u32::saturating_add);
            out.push(LocalityLbEndpoints {
                lb_endpoints,
                load_balancing_weight: u32v(weight.max(1)),
                priority: p,
                ..group.clone()
            });
        }
    }
    cla.endpoints = out;
    renumber(&mut cla.endpoints);
}

/// An endpoint's label as Istio sees it: its own, else the topology labels
/// its locality implies (Istio adds them to every endpoint).
fn endpoint_label(e: &Endpoint, locality: &Locality, key: &str) -> Option<String> {
    if let Some(v) = e.labels.get(key) {
        return Some(v.clone());
    }
    let v = match key {
        REGION_LABEL => &locality.region,
        ZONE_LABEL => &locality.zone,
        SUBZONE_LABEL => &locality.sub_zone,
        _ => return None,
    };
    (!v.is_empty()).then(|| v.clone())
}

/// A proxy's labels as Istio sees them for `failoverPriority`: its own plus
/// the topology labels of its locality and its cluster.
pub fn proxy_labels(
    labels: &BTreeMap<String, String>,
    locality: &Locality,
    cluster_id: &str,
) -> BTreeMap<String, String> {
    let mut out = labels.clone();
    for (k, v) in [
        (REGION_LABEL, &locality.region),
        (ZONE_LABEL, &locality.zone),
        (SUBZONE_LABEL, &locality.sub_zone),
    ] {
        if !v.is_empty() {
            out.entry(k.to_string()).or_insert_with(|| v.clone());
        }
    }
    if !cluster_id.is_empty() {
        out.entry(CLUSTER_LABEL.to_string())
            .or_insert_with(|| cluster_id.to_string());
    }
    out
}

/// Renumbers priorities to 0..N in order, without gaps (Envoy requires it).
fn renumber(groups: &mut [LocalityLbEndpoints]) {
    let used: BTreeSet<u32> = groups.iter().map(|g| g.priority).collect();
    let rank: BTreeMap<u32, u32> = used.into_iter().zip(0..).collect();
    for g in groups {
        g.priority = rank[&g.priority];
    }
}

#[cfg(test)]
mod tests;
