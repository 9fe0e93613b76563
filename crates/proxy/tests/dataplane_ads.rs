//! Pilot's ADS suite (SotW and delta against pilot) (`crates/pilot/tests/envoy_ads.rs`) run a second time with
//! Mizzen's proxy in Envoy's place: the same tests and bootstrap; the harness
//! picks the `proxy` binary when it is built into this crate
//! (`support::data_plane`).

#[path = "../../pilot/tests/envoy_ads.rs"]
mod suite;
