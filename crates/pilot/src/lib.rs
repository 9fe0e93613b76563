//! Pilot: Mizzen's control plane. It owns the mesh model — the service registry
//! (Kubernetes Services, Endpoints, EndpointSlices, Pods; ServiceEntries,
//! WorkloadEntries) and the Istio config that passed galley — and turns it into
//! Envoy xDS v3 for each connected proxy, served over ADS (SotW and delta). It does
//! not sign certificates (citadel) or carry traffic (the proxy).
//!
//! A config change travels: a source (files today, [`config`]) reports the current
//! resources → galley validates each; rejected ones keep their last good version →
//! [`registry`] derives services, endpoints and workloads → a new immutable
//! [`model::Snapshot`] is published (debounced) → each ADS connection ([`xds::ads`])
//! regenerates what its proxy subscribed to ([`xds::generate`]) and pushes the
//! difference. [`app::App`] assembles it with the debug and metrics endpoints.

pub mod app;
pub mod config;
pub mod debug;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod registry;
pub mod xds;
