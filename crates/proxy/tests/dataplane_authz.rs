//! Pilot's authorization suite (`crates/pilot/tests/envoy_authz.rs`) run a
//! second time with Mizzen's proxy in Envoy's place: AuthorizationPolicy as
//! RBAC filters and RequestAuthentication as `jwt_authn` on the gateway and
//! on a sidecar's inbound capture, with the same mesh, bootstrap and
//! expectations; the harness picks the `proxy` binary when it is built into
//! this crate (`support::data_plane`).

#[path = "../../pilot/tests/envoy_authz.rs"]
mod suite;
