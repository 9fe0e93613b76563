//! `ServiceEntry`: adds entries to Istio's service registry, for services outside the
//! mesh or mesh services not known to the platform.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Port, WorkloadSelector};
use super::workload::WorkloadEntrySpec;

/// The spec of a `ServiceEntry`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntrySpec {
    /// The hosts of the service (required): DNS names, optionally with a wildcard prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Virtual IP addresses or CIDR blocks of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The ports of the service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// Whether the service is outside the mesh or part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How the proxy resolves the service's endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Endpoints of the service; exclusive with `workloadSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Selects pods and WorkloadEntries as endpoints (MESH_INTERNAL only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces to which this service is exported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_to: Vec<String>,
    /// Subject alternate names the server certificate must match.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subject_alt_names: Vec<String>,
}

/// `ServiceEntry.Location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh: mTLS is not used and policies apply on the client side only.
    #[default]
    MeshExternal,
    /// Part of the mesh (for example VMs added manually).
    MeshInternal,
}

/// `ServiceEntry.Resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// The connection is forwarded to the IP address it was addressed to.
    #[default]
    None,
    /// Use the static IP addresses given in `endpoints`.
    Static,
    /// Resolve names asynchronously, using all returned IPs.
    Dns,
    /// Resolve names asynchronously, using the first IP returned.
    DnsRoundRobin,
    /// Resolve names dynamically per request (wildcard hosts allowed).
    DynamicDns,
}
