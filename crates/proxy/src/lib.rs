//! Proxy: Mizzen's data plane. It will consume the same xDS a stock Envoy does and carry HTTP/1.1, HTTP/2, gRPC and TCP with Istio's routing, resilience, mTLS, authorization and telemetry.
//!
//! Not built yet: this crate holds the place of the service in the workspace so the
//! layout of ARCHITECTURE.md is real. Its work is tracked by the project's issues.
