//! Pilot's routing conformance suite (`crates/pilot/tests/envoy_conformance.rs`)
//! run a second time with Mizzen's proxy in Envoy's place: the same tests,
//! the same mesh, the same bootstrap; the harness picks the `proxy` binary
//! when it is built into this crate (`support::data_plane`).

#[path = "../../pilot/tests/envoy_conformance.rs"]
mod suite;
