//! Injector: Mizzen's sidecar injection. It will serve the Kubernetes mutating admission webhook (/inject) and kube-inject.
//!
//! Not built yet: this crate holds the place of the service in the workspace so the
//! layout of ARCHITECTURE.md is real. Its work is tracked by the project's issues.
