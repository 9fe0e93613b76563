//! Mizzen's sidecar injector: the Kubernetes MutatingAdmissionWebhook (HTTPS
//! :15017, `POST /inject`) and the same injection offline (`mizzen kube-inject`).
//!
//! It owns which pods get a sidecar and what the sidecar looks like; it does
//! not run anything in the pod (the `proxy` binary does: `proxy init` in
//! `istio-init`, `proxy sidecar` in `istio-proxy`) and does not write its own
//! MutatingWebhookConfiguration (the Helm chart does, from
//! [`webhook_config`]; citadel patches its `caBundle`).
//!
//! A webhook request goes top-down through: [`app`] (TLS with certificates
//! re-read when citadel renews them, [`tls`]) → [`webhook`] (decode the
//! AdmissionReview) → [`select::required`] (host network, system namespaces,
//! already injected, opt-out) → [`template::inject`] (settings from
//! [`options::Values`] and the pod's annotations, [`annotations`]; the
//! containers and volumes) → a JSONPatch from the original pod to the injected
//! one, with a warning per Istio annotation that has no effect. `kube-inject`
//! ([`kube_inject`]) runs the same [`template::inject`] over the pod templates
//! of workload manifests.

pub mod annotations;
pub mod app;
pub mod kube_inject;
pub mod options;
pub mod select;
pub mod template;
pub mod tls;
pub mod version;
pub mod webhook;
pub mod webhook_config;

pub use options::{Options, Values};
pub use template::{inject, inject_with_warnings};

/// Why a pod could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An annotation's value is not usable.
    #[error("annotation {name}: {value:?} {reason}")]
    Annotation {
        /// The annotation.
        name: String,
        /// Its value.
        value: String,
        /// What is wrong and what to write.
        reason: String,
    },
    /// The pod has no `spec`.
    #[error("the pod has no spec; nothing to inject into")]
    NoSpec,
    /// The pod already has a container or volume the injection adds.
    #[error("{0}")]
    Conflict(String),
    /// The template produced an object Kubernetes' types refuse (a bug).
    #[error("the injection template produced an invalid object: {0}; please report it")]
    Template(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
