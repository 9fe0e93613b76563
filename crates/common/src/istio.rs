//! Istio's configuration APIs as Rust types, one module per API group.
//!
//! Every kind has one spec type (`VirtualServiceSpec`, …) shared by all the versions
//! Istio serves, because Istio serves the same schema under each version. Each version
//! module (`networking::v1alpha3`, `networking::v1`, …) then declares the Kubernetes
//! root type for that version with kube's `CustomResource` derive, so CRDs and kube-rs
//! watchers exist per version while the rest of Mizzen works with the spec types.
//!
//! Decoding is strict, as Istio's schema validation is: every struct denies unknown
//! fields, enums accept only Istio's names, durations and percentages check their form.
//! Semantic rules (ranges, one-of fields, cross-field rules) live in galley.

pub mod extensions;
pub mod install;
pub mod networking;
pub mod security;
pub mod telemetry;
pub mod types;

/// Declares the Kubernetes root type of one Istio kind in one served version, as a
/// transparent newtype around the kind's shared spec type.
///
/// `crd!("networking.istio.io", "v1", "VirtualService", "virtualservices",
/// VirtualServiceSpec, super::VirtualServiceSpec);` declares `VirtualServiceSpec` (the
/// newtype) and `VirtualService` (the root object with `metadata` and `spec`).
macro_rules! crd {
    ($group:literal, $version:literal, $kind:literal, $plural:literal, $spec:ident, $inner:ty) => {
        #[doc = concat!("The spec of `", $kind, "` as served at `", $group, "/", $version, "`.")]
        #[derive(
            kube::CustomResource,
            serde::Serialize,
            serde::Deserialize,
            Clone,
            Debug,
            PartialEq,
            schemars::JsonSchema,
        )]
        #[kube(
                                                                            group = $group,
                                                                            version = $version,
                                                                            kind = $kind,
                                                                            plural = $plural,
                                                                            namespaced
                                                                        )]
        #[serde(transparent)]
        pub struct $spec(pub $inner);
    };
}
pub(crate) use crd;
