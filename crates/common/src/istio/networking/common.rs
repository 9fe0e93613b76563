//! Pieces shared by several networking kinds: string matches, destinations, port
//! selectors, header operations, ports and the label-based workload selector.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Istio's `StringMatch`: how a string is matched. A proto oneof, so exactly one branch
/// should be set; galley reports "exactly one of" when that is not the case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact string match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Prefix-based match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2-style regex-based match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// `PortSelector`: the number of a port used for matching or for routing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Valid port number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
}

/// `Destination`: the network-addressable service a request or connection is sent to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// The name of a service from the service registry (required).
    #[serde(default)]
    pub host: String,
    /// The name of a subset within the service, declared in a `DestinationRule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The port on the host being addressed; needed only when the service has several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,
}

/// `Headers`: header manipulation rules for requests and responses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Header manipulation rules to apply before forwarding a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<HeaderOperations>,
    /// Header manipulation rules to apply before returning a response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<HeaderOperations>,
}

/// `Headers.HeaderOperations`: set, append or remove headers.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite the headers specified by key with the given values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Append the given values to the headers specified by keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
    /// Remove the specified headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// The networking API's own `WorkloadSelector` (Sidecar, ServiceEntry, EnvoyFilter):
/// note its field is `labels`, not `matchLabels`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a pod or VM must carry for the configuration to apply to it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `Port`: a port of a Gateway server, a Sidecar listener (`SidecarPort`) or a
/// ServiceEntry (`ServicePort`). The three share Istio's field names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// A valid non-negative integer port number (0 when missing; galley reports it).
    #[serde(default)]
    pub number: u32,
    /// The protocol exposed on the port: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO,
    /// TCP or TLS.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Label assigned to the port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The port number on the endpoint where the traffic is received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u32>,
}

/// A listener's traffic capture mode (Sidecar ingress and egress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureMode {
    /// The default capture mode defined by the environment.
    #[default]
    Default,
    /// Capture traffic using iptables redirection.
    Iptables,
    /// No traffic capture: the application talks to the listener directly.
    None,
}
