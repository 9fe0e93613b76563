//! `Sidecar`: the ingress and egress listeners of the proxies of a set of workloads,
//! narrowing what they see of the mesh and how they accept traffic.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{CaptureMode, Destination, Port, WorkloadSelector};
use super::connection_pool::ConnectionPoolSettings;
use super::gateway::ServerTlsSettings;

/// The spec of a `Sidecar`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    /// The workloads this Sidecar applies to; all in the namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Listeners for inbound traffic to the workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress: Vec<IstioIngressListener>,
    /// Listeners for outbound traffic from the workload, and the hosts it may reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<IstioEgressListener>,
    /// Connection pool settings of all inbound listeners without their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// How outbound traffic to unknown destinations is handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// `IstioIngressListener`: an inbound listener of the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioIngressListener {
    /// The port of the listener (required).
    #[serde(default)]
    pub port: Port,
    /// The IP (IPv4 or IPv6) the listener binds to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic reaches the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Where traffic is forwarded: `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`,
    /// `[::]:PORT` or `unix:///path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint: Option<String>,
    /// TLS termination for traffic from outside the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTlsSettings>,
    /// Connection pool limits of this listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// `IstioEgressListener`: an outbound listener and the hosts it exposes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioEgressListener {
    /// The port of the listener; the catch-all listener when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// The IP or Unix domain socket the listener binds to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// How traffic reaches the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture_mode: Option<CaptureMode>,
    /// Hosts exposed, as `namespace/dnsName` (`./*`, `istio-system/*`, `*/foo.com`)
    /// (required).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// `OutboundTrafficPolicy`: the sidecar's handling of traffic to unknown hosts.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// REGISTRY_ONLY or ALLOW_ANY.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficMode>,
    /// Send ALLOW_ANY traffic through this egress proxy instead of passthrough.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_proxy: Option<Destination>,
}

/// `OutboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficMode {
    /// Only hosts in the service registry are reachable.
    RegistryOnly,
    /// Unknown hosts are passed through (the default).
    #[default]
    AllowAny,
}
