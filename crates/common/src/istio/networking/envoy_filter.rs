//! `EnvoyFilter`: patches applied to the Envoy configuration Istio generates
//! (listeners, filter chains, filters, routes, clusters, bootstrap).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::WorkloadSelector;
use crate::istio::types::PolicyTargetReference;

/// The spec of an `EnvoyFilter`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFilterSpec {
    /// The workloads the patches apply to; all in the namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<WorkloadSelector>,
    /// The resources (Gateways, Services) the patches apply to; exclusive with
    /// `workloadSelector`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The patches, each with its match conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_patches: Vec<EnvoyConfigObjectPatch>,
    /// Order of this patch set within a context; lower applies first (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

/// `EnvoyConfigObjectPatch`: where a patch applies, which objects it matches, and
/// the patch itself.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectPatch {
    /// The kind of Envoy object patched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_to: Option<ApplyTo>,
    /// Which objects are patched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#match: Option<EnvoyConfigObjectMatch>,
    /// The operation and value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Patch>,
}

/// `EnvoyFilter.ApplyTo`: the kind of Envoy object a patch applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplyTo {
    /// Not set; refused by validation.
    #[default]
    Invalid,
    /// A listener.
    Listener,
    /// A filter chain of a listener.
    FilterChain,
    /// A network filter of a filter chain.
    NetworkFilter,
    /// An HTTP filter of the HTTP connection manager.
    HttpFilter,
    /// A route configuration (RDS).
    RouteConfiguration,
    /// A virtual host of a route configuration.
    VirtualHost,
    /// A route of a virtual host.
    HttpRoute,
    /// A cluster.
    Cluster,
    /// An extension configuration served over ECDS.
    ExtensionConfig,
    /// The proxy's bootstrap configuration.
    Bootstrap,
    /// A listener filter.
    ListenerFilter,
}

/// `EnvoyConfigObjectMatch`; `listener`, `routeConfiguration`, `cluster` and
/// `waypoint` are a proto oneof.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyConfigObjectMatch {
    /// The generation context: sidecar inbound/outbound, gateway, waypoint, or any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<PatchContext>,
    /// Match on properties of the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyMatch>,
    /// Match on listener attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<ListenerMatch>,
    /// Match on route configuration attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_configuration: Option<RouteConfigurationMatch>,
    /// Match on cluster attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterMatch>,
    /// Match on waypoint attributes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waypoint: Option<WaypointMatch>,
}

/// `EnvoyFilter.PatchContext`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PatchContext {
    /// All listeners, routes and clusters, in sidecars and gateways.
    #[default]
    Any,
    /// The inbound listener/route/cluster of a sidecar.
    SidecarInbound,
    /// The outbound listener/route/cluster of a sidecar.
    SidecarOutbound,
    /// Listeners, routes and clusters of a gateway.
    Gateway,
    /// Listeners, routes and clusters of a waypoint.
    Waypoint,
}

/// `EnvoyFilter.ProxyMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyMatch {
    /// RE2 regex on the proxy's Istio version (`^1\.2.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_version: Option<String>,
    /// Node metadata entries the proxy must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `EnvoyFilter.ListenerMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerMatch {
    /// The service or gateway port the traffic is sent to or received on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    /// Port name (not implemented by Istio; hidden in its docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// Match a specific filter chain of the listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_chain: Option<FilterChainMatch>,
    /// Match a specific listener filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener_filter: Option<String>,
    /// Match a listener by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.ListenerMatch.FilterChainMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterChainMatch {
    /// The name assigned to the filter chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The SNI of the filter chain's match condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// `tls` or `raw_buffer` (SIDECAR_INBOUND only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport_protocol: Option<String>,
    /// Comma-separated application protocols (`h2`, `http/1.1`, …; sidecars only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_protocols: Option<String>,
    /// Match a specific filter of the chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterMatch>,
    /// The destination port of the filter chain's match condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u32>,
}

/// `EnvoyFilter.ListenerMatch.FilterMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterMatch {
    /// The filter name (`envoy.filters.network.http_connection_manager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A filter within this filter (an HTTP filter of the HTTP connection manager).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_filter: Option<SubFilterMatch>,
}

/// `EnvoyFilter.ListenerMatch.SubFilterMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubFilterMatch {
    /// The filter name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.RouteConfigurationMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteConfigurationMatch {
    /// The service or gateway server port the route configuration was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    /// The gateway server port name (GATEWAY context only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// The `namespace/name` of the Istio Gateway (GATEWAY context only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Match a virtual host of the route configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost: Option<VirtualHostMatch>,
    /// The route configuration name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.RouteConfigurationMatch.VirtualHostMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualHostMatch {
    /// The virtual host name (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A domain name of the virtual host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_name: Option<String>,
    /// Match a route of the virtual host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RouteMatch>,
}

/// `EnvoyFilter.RouteConfigurationMatch.RouteMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    /// The route name (`default` or the VirtualService's HTTP route name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Match a route by its action type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RouteAction>,
}

/// `EnvoyFilter.RouteConfigurationMatch.RouteMatch.Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RouteAction {
    /// Any action.
    #[default]
    Any,
    /// Routes that forward traffic.
    Route,
    /// Routes that redirect.
    Redirect,
    /// Routes that send a direct response.
    DirectResponse,
}

/// `EnvoyFilter.ClusterMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterMatch {
    /// The service port the cluster was made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
    /// The fully qualified service name of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The subset of the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// The exact cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.WaypointMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointMatch {
    /// Match a specific filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterMatch>,
    /// Match a specific route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<WaypointRouteMatch>,
    /// The service port to match on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_number: Option<u32>,
}

/// `EnvoyFilter.WaypointMatch.RouteMatch`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointRouteMatch {
    /// The route name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `EnvoyFilter.Patch`: the operation and the value it uses.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patch {
    /// How the patch is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
    /// The Envoy configuration (JSON) being added, merged or replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    /// Where an added HTTP filter goes relative to Istio's own (ADD only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_class: Option<FilterClass>,
}

/// `EnvoyFilter.Patch.Operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// Not set; refused by validation.
    #[default]
    Invalid,
    /// Merge the value into the matched object (protobuf merge semantics).
    Merge,
    /// Add the value to a list.
    Add,
    /// Remove the matched object.
    Remove,
    /// Insert before the matched object in a list.
    InsertBefore,
    /// Insert after the matched object in a list.
    InsertAfter,
    /// Insert first in a list.
    InsertFirst,
    /// Replace the matched object.
    Replace,
    /// Merge, replacing lists instead of appending to them.
    MergeAndReplaceList,
}

/// `EnvoyFilter.Patch.FilterClass`: where an HTTP filter is placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FilterClass {
    /// Placed by the patch's operation.
    #[default]
    Unspecified,
    /// After Istio's authentication filters.
    Authn,
    /// After Istio's authorization filters.
    Authz,
    /// Before Istio's stats filters.
    Stats,
}
