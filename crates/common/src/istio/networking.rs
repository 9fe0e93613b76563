//! `networking.istio.io`: traffic management (v1alpha3, v1beta1, v1).
//!
//! One spec type per kind, field for field with Istio's `networking/v1alpha3` protos
//! and CRDs (camelCase names): [`VirtualServiceSpec`], [`DestinationRuleSpec`],
//! [`GatewaySpec`], [`ServiceEntrySpec`], [`WorkloadEntrySpec`], [`WorkloadGroupSpec`],
//! [`SidecarSpec`], [`EnvoyFilterSpec`] and [`ProxyConfigSpec`]. The version modules
//! below declare the Kubernetes root types for each version Istio serves.
//!
//! Modelling rules, so later stages can report problems with a field path rather
//! than failing the decode:
//! - unknown fields are refused; enums accept exactly Istio's value names;
//! - a field Istio requires but proto3 would default (a host, a name, a port number)
//!   decodes to its empty value, and galley reports it as missing;
//! - a proto oneof is a struct with one `Option` per branch, checked by galley;
//! - wrapper types (`UInt32Value`, `BoolValue`, …) are plain `Option`s.

mod common;
mod connection_pool;
mod destination_rule;
mod envoy_filter;
mod gateway;
mod http_route;
mod load_balancer;
mod proxy_config;
mod service_entry;
mod sidecar;
mod virtual_service;
mod workload;

#[cfg(test)]
mod tests;

pub use common::*;
pub use connection_pool::*;
pub use destination_rule::*;
pub use envoy_filter::*;
pub use gateway::*;
pub use http_route::*;
pub use load_balancer::*;
pub use proxy_config::*;
pub use service_entry::*;
pub use sidecar::*;
pub use virtual_service::*;
pub use workload::*;

/// Kinds served at `networking.istio.io/v1alpha3` (EnvoyFilter is served only here).
pub mod v1alpha3 {
    crate::istio::crd!(
        "networking.istio.io",
        "v1alpha3",
        "VirtualService",
        "virtualservices",
        VirtualServiceSpec,
        super::VirtualServiceSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1alpha3",
        "DestinationRule",
        "destinationrules",
        DestinationRuleSpec,
        super::DestinationRuleSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1alpha3",
        "Gateway",
        "gateways",
        GatewaySpec,
        super::GatewaySpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1alpha3",
        "ServiceEntry",
        "serviceentries",
        ServiceEntrySpec,
        super::ServiceEntrySpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1alpha3",
        "Sidecar",
        "sidecars",
        SidecarSpec,
        super::SidecarSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1alpha3",
        "WorkloadEntry",
        "workloadentries",
        WorkloadEntrySpec,
        super::WorkloadEntrySpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1alpha3",
        "WorkloadGroup",
        "workloadgroups",
        WorkloadGroupSpec,
        super::WorkloadGroupSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1alpha3",
        "EnvoyFilter",
        "envoyfilters",
        EnvoyFilterSpec,
        super::EnvoyFilterSpec
    );
}

/// Kinds served at `networking.istio.io/v1beta1` (ProxyConfig is served only here).
pub mod v1beta1 {
    crate::istio::crd!(
        "networking.istio.io",
        "v1beta1",
        "VirtualService",
        "virtualservices",
        VirtualServiceSpec,
        super::VirtualServiceSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1beta1",
        "DestinationRule",
        "destinationrules",
        DestinationRuleSpec,
        super::DestinationRuleSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1beta1",
        "Gateway",
        "gateways",
        GatewaySpec,
        super::GatewaySpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1beta1",
        "ServiceEntry",
        "serviceentries",
        ServiceEntrySpec,
        super::ServiceEntrySpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1beta1",
        "Sidecar",
        "sidecars",
        SidecarSpec,
        super::SidecarSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1beta1",
        "WorkloadEntry",
        "workloadentries",
        WorkloadEntrySpec,
        super::WorkloadEntrySpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1beta1",
        "WorkloadGroup",
        "workloadgroups",
        WorkloadGroupSpec,
        super::WorkloadGroupSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1beta1",
        "ProxyConfig",
        "proxyconfigs",
        ProxyConfigSpec,
        super::ProxyConfigSpec
    );
}

/// Kinds served at `networking.istio.io/v1`.
pub mod v1 {
    crate::istio::crd!(
        "networking.istio.io",
        "v1",
        "VirtualService",
        "virtualservices",
        VirtualServiceSpec,
        super::VirtualServiceSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1",
        "DestinationRule",
        "destinationrules",
        DestinationRuleSpec,
        super::DestinationRuleSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1",
        "Gateway",
        "gateways",
        GatewaySpec,
        super::GatewaySpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1",
        "ServiceEntry",
        "serviceentries",
        ServiceEntrySpec,
        super::ServiceEntrySpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1",
        "Sidecar",
        "sidecars",
        SidecarSpec,
        super::SidecarSpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1",
        "WorkloadEntry",
        "workloadentries",
        WorkloadEntrySpec,
        super::WorkloadEntrySpec
    );
    crate::istio::crd!(
        "networking.istio.io",
        "v1",
        "WorkloadGroup",
        "workloadgroups",
        WorkloadGroupSpec,
        super::WorkloadGroupSpec
    );
}
