//! Rules for `networking.istio.io` kinds, after Istio's
//! `pkg/config/validation` (validation.go, virtualservice.go, envoyfilter.go).
//!
//! Each entry point takes the decoded spec with the cursor at `spec`. Shapes that
//! decoding already enforces (unknown fields, enum names, duration syntax) are not
//! repeated here; these rules cover required fields, ranges, one-of choices and
//! cross-field constraints, with Istio's semantics and plain-words messages.
//! Cross-resource checks (unknown hosts, subsets, unreachable rules) belong to
//! `crate::analyze`.

mod connection_pool;
mod destination_rule;
mod envoy_filter;
mod gateway;
mod http_route;
mod load_balancer;
mod service_entry;
mod sidecar;
mod util;
mod virtual_service;

#[cfg(test)]
mod tests;

pub use destination_rule::destination_rule;
pub use envoy_filter::{envoy_filter, proxy_config};
pub use gateway::gateway;
pub use service_entry::{service_entry, workload_entry, workload_group};
pub use sidecar::sidecar;
pub use virtual_service::virtual_service;
