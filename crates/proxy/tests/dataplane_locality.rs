//! Pilot's locality load-balancing suite (`crates/pilot/tests/envoy_locality.rs`:
//! failover with outlier detection, `distribute` weights) run a second time with
//! Mizzen's proxy in Envoy's place: the same tests and bootstrap; the harness
//! picks the `proxy` binary when it is built into this crate
//! (`support::data_plane`).

#[path = "../../pilot/tests/envoy_locality.rs"]
mod suite;
