//! Pilot's ADS-over-mTLS suite (`crates/pilot/tests/xds_mtls.rs`) run a second
//! time with Mizzen's proxy in Envoy's place: the same tests and bootstrap (the
//! `xds-grpc` cluster with an `UpstreamTlsContext` naming certificate files);
//! the harness picks the `proxy` binary when it is built into this crate
//! (`support::data_plane`).

#[path = "../../pilot/tests/xds_mtls.rs"]
mod suite;
