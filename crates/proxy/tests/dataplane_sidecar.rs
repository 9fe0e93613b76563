//! Pilot's sidecar suite (iptables capture in network namespaces) (`crates/pilot/tests/envoy_sidecar.rs`) run a second time with
//! Mizzen's proxy in Envoy's place: the same tests and bootstrap; the harness
//! picks the `proxy` binary when it is built into this crate
//! (`support::data_plane`).

#[path = "../../pilot/tests/envoy_sidecar.rs"]
mod suite;
