//! The validation seam: one [`Handler`] per resource type decides, resource by
//! resource, whether the data plane can apply it (ztunnel's `Handler<T>`). A
//! rejection keeps the last good version of that resource and becomes part of
//! the NACK, as `name: reason`.

use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;

/// Decides whether one decoded resource of type `T` can be applied.
pub trait Handler<T>: Send + Sync {
    /// `Ok` to apply `resource` (named `name`), or the reason it cannot be,
    /// written for the operator reading the NACK in pilot's `/debug/syncz`.
    fn validate(&self, name: &str, resource: &T) -> Result<(), String>;
}

/// Accepts every resource that decodes (the default for every type).
#[derive(Debug, Clone, Copy, Default)]
pub struct AcceptAll;

impl<T> Handler<T> for AcceptAll {
    fn validate(&self, _name: &str, _resource: &T) -> Result<(), String> {
        Ok(())
    }
}

/// Any closure `Fn(&str, &T) -> Result<(), String>` is a handler.
impl<T, F> Handler<T> for F
where
    F: Fn(&str, &T) -> Result<(), String> + Send + Sync,
{
    fn validate(&self, name: &str, resource: &T) -> Result<(), String> {
        self(name, resource)
    }
}

/// The handlers of the five types, [`AcceptAll`] unless replaced.
#[derive(Clone)]
pub struct Handlers {
    /// CDS.
    pub clusters: Arc<dyn Handler<Cluster>>,
    /// EDS.
    pub endpoints: Arc<dyn Handler<ClusterLoadAssignment>>,
    /// LDS.
    pub listeners: Arc<dyn Handler<Listener>>,
    /// RDS.
    pub routes: Arc<dyn Handler<RouteConfiguration>>,
    /// SDS.
    pub secrets: Arc<dyn Handler<Secret>>,
}

impl Default for Handlers {
    fn default() -> Self {
        Handlers {
            clusters: Arc::new(AcceptAll),
            endpoints: Arc::new(AcceptAll),
            listeners: Arc::new(AcceptAll),
            routes: Arc::new(AcceptAll),
            secrets: Arc::new(AcceptAll),
        }
    }
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers").finish_non_exhaustive()
    }
}
