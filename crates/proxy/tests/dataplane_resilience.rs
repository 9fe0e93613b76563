//! Pilot's resilience suite (retries, timeouts, outlier detection, circuit breakers) (`crates/pilot/tests/envoy_resilience.rs`) run a second time with
//! Mizzen's proxy in Envoy's place: the same tests and bootstrap; the harness
//! picks the `proxy` binary when it is built into this crate
//! (`support::data_plane`).

#[path = "../../pilot/tests/envoy_resilience.rs"]
mod suite;
