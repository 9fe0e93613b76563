//! A DestinationRule's `loadBalancer`: the simple algorithms, consistent hashing,
//! locality and zone-aware settings, and slow-start warmup.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::types::Duration;

/// `LoadBalancerSettings`; `simple` and `consistentHash` are a proto oneof.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// A standard load balancing algorithm that needs no tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simple: Option<SimpleLb>,
    /// Consistent-hash load balancing, for soft session affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Locality load balancing settings; overrides the mesh-wide ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// Zone-aware load balancing settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone_aware_lb_setting: Option<ZoneAwareLoadBalancerSetting>,
    /// Deprecated: use `warmup`. Slow-start duration for new endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_duration_secs: Option<Duration>,
    /// Slow-start warmup of new endpoints (ROUND_ROBIN and LEAST_REQUEST only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<WarmupConfiguration>,
}

/// `LoadBalancerSettings.SimpleLB`: the standard load balancing algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// No algorithm chosen: Istio picks its default (LEAST_REQUEST).
    #[default]
    Unspecified,
    /// Deprecated: use LEAST_REQUEST.
    LeastConn,
    /// Pick a healthy host at random.
    Random,
    /// Forward to the address the caller asked for, without load balancing.
    Passthrough,
    /// Basic round robin.
    RoundRobin,
    /// Pick the less loaded of two random hosts.
    LeastRequest,
}

/// `LoadBalancerSettings.ConsistentHashLB`. The hash key (`httpHeaderName`,
/// `httpCookie`, `useSourceIp`, `httpQueryParameterName`) is a proto oneof, and so is
/// the algorithm (`ringHash`, `maglev`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHashLb {
    /// Hash based on a specific HTTP header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_header_name: Option<String>,
    /// Hash based on an HTTP cookie, generated if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_cookie: Option<HttpCookie>,
    /// Hash based on the source IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_source_ip: Option<bool>,
    /// Hash based on a specific HTTP query parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_query_parameter_name: Option<String>,
    /// Ring/modulo hash algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_hash: Option<RingHash>,
    /// Maglev hash algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maglev: Option<MagLev>,
    /// Deprecated: use `ringHash.minimumRingSize`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.HTTPCookie`: the cookie used as the hash key.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Name of the cookie (required).
    #[serde(default)]
    pub name: String,
    /// Path to set for the cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Lifetime of the cookie; a session cookie when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Additional attributes of the cookie.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<CookieAttribute>,
}

/// `ConsistentHashLB.HTTPCookie.Attribute`: one extra cookie attribute.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CookieAttribute {
    /// The name of the attribute (required).
    #[serde(default)]
    pub name: String,
    /// The optional value of the attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `ConsistentHashLB.RingHash`: ring hash settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// The minimum number of virtual nodes on the ring (1024 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.MagLev`: Maglev settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MagLev {
    /// The lookup table size; should be a prime number (65537 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_size: Option<u64>,
}

/// `LocalityLoadBalancerSetting`; `distribute`, `failover` and `failoverPriority`
/// are mutually exclusive (with a special case for failover plus failoverPriority).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLoadBalancerSetting {
    /// Weighted distribution of traffic across localities, per source locality.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribute: Vec<LocalityDistribute>,
    /// Region to fail over to when the local region is unhealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Ordered labels that sort endpoints for priority-based load balancing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Enable locality load balancing; overrides the mesh-wide setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// `LocalityLoadBalancerSetting.Distribute`: weights for traffic from one locality.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Originating locality, `/`-separated (`region/zone/sub_zone`), `*` allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Upstream localities and their weights, which must sum to 100.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub to: BTreeMap<String, u32>,
}

/// `LocalityLoadBalancerSetting.Failover`: a region and the region to fail over to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Originating region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Destination region when endpoints in `from` are unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// `ZoneAwareLoadBalancerSetting`: Envoy's zone-aware routing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZoneAwareLoadBalancerSetting {
    /// Enable zone-aware load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Region to fail over to when the local region is unhealthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<LocalityFailover>,
    /// Ordered labels that sort endpoints for priority-based load balancing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover_priority: Vec<String>,
    /// Minimum hosts in the local region's cluster for zone awareness to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_cluster_size: Option<u32>,
}

/// `WarmupConfiguration`: how new endpoints ramp up their share of traffic.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmupConfiguration {
    /// Duration of the warmup window (required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Duration>,
    /// Minimum share of traffic (0–100) a warming endpoint gets; 10 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_percent: Option<f64>,
    /// Speed of the ramp-up (1.0 is linear); at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggression: Option<f64>,
}
