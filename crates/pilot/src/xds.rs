//! Envoy xDS v3: what pilot generates for a proxy, and the ADS server that sends it.
//!
//! [`generate`] is the one entry point from the model to Envoy's types: for a
//! [`Proxy`] and a type URL it returns that proxy's resources built from one
//! [`Snapshot`], each generator in its own module (clusters, endpoints,
//! listeners, routes). [`authz`] turns AuthorizationPolicy and
//! RequestAuthentication into the RBAC and `jwt_authn` filters the listener
//! builders put on sidecar inbound and gateway chains. [`ads`] serves them
//! over `AggregatedDiscoveryService` (SotW and delta) with Istio's ACK/NACK
//! rules.

use envoy_types::pb::google::protobuf::Any;

use crate::model::Snapshot;
use crate::proxy::Proxy;

pub mod ads;
pub mod authz;
pub mod cluster;
pub mod endpoint;
pub mod listener;
pub mod route;

pub use common::envoy::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

/// Whether a type is requested by name (EDS, RDS, SDS) rather than as "all"
/// (CDS, LDS): an empty name list means "none" for the former, "all" for the latter.
pub fn is_wildcard_type(type_url: &str) -> bool {
    matches!(type_url, CLUSTER | LISTENER)
}

/// One generated resource: its xDS name and its encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedResource {
    /// The resource name (`outbound|9080|v1|reviews.default.svc.cluster.local`).
    pub name: String,
    /// The resource as `google.protobuf.Any`.
    pub resource: Any,
}

impl NamedResource {
    /// Encodes `message` under `type_url`.
    pub fn new(name: impl Into<String>, type_url: &str, message: &impl prost::Message) -> Self {
        NamedResource {
            name: name.into(),
            resource: Any {
                type_url: type_url.to_string(),
                value: message.encode_to_vec(),
            },
        }
    }
}

/// Why a type could not be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenerateError {
    /// The type URL is not one pilot serves.
    #[error("type {0:?} is not served; pilot serves CDS, EDS, LDS and RDS")]
    UnknownType(String),
}

/// The resources of `type_url` for `proxy` from `snapshot`. For EDS and RDS, only
/// the `names` asked for (unknown names are left out, as Envoy expects); for CDS
/// and LDS, everything the proxy should have.
pub fn generate(
    snapshot: &Snapshot,
    proxy: &Proxy,
    type_url: &str,
    names: &[String],
) -> Result<Vec<NamedResource>, GenerateError> {
    Ok(match type_url {
        CLUSTER => cluster::generate(snapshot, proxy),
        ENDPOINT => endpoint::generate(snapshot, proxy, names),
        LISTENER => listener::generate(snapshot, proxy),
        ROUTE => route::generate(snapshot, proxy, names),
        other => return Err(GenerateError::UnknownType(other.to_string())),
    })
}
