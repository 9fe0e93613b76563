//! Pilot: Mizzen's control plane. It will own the service registry (files or Kubernetes) and the translation of Istio config into Envoy xDS v3, served over ADS (SotW and delta).
//!
//! Not built yet: this crate holds the place of the service in the workspace so the
//! layout of ARCHITECTURE.md is real. Its work is tracked by the project's issues.
