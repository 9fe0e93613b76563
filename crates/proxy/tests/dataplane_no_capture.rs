//! pilot's no-capture sidecar test (`crates/pilot/tests/envoy_no_capture.rs`)
//! with Mizzen's proxy as the data plane: the same bound listeners, the same
//! routing, no 15001 or 15006.

#[path = "../../pilot/tests/envoy_no_capture.rs"]
mod no_capture;
