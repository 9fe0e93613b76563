//! The data path's view of the configuration: one immutable [`Dataplane`]
//! compiled from the xDS client's snapshot (plus the bootstrap's static
//! clusters and listeners) each time it changes. Unchanged resources are not
//! recompiled: a cluster keeps its hosts, pools and outlier state, a route
//! table and a listener their compiled form. Connections hold the `Arc` of
//! the snapshot they started with, so an update never cuts them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;

use crate::cluster::{ClusterSet, eds_name};
use crate::listener::{self, ListenerConfig};
use crate::route::RouteTable;
use crate::xds::XdsState;

/// Resources from the bootstrap's `static_resources`.
#[derive(Debug, Clone, Default)]
pub struct Statics {
    /// Static clusters.
    pub clusters: Vec<Arc<ClusterProto>>,
    /// Static listeners.
    pub listeners: Vec<Arc<Listener>>,
}

/// One compiled configuration.
#[derive(Debug, Default)]
pub struct Dataplane {
    /// Clusters by name.
    pub clusters: ClusterSet,
    /// Route tables by RDS name.
    pub routes: HashMap<String, Arc<RouteTable>>,
    route_sources: HashMap<String, Arc<RouteConfiguration>>,
    /// Listeners by name.
    pub listeners: HashMap<String, Arc<ListenerConfig>>,
    by_addr: HashMap<SocketAddr, String>,
    /// What failed to compile (already refused by the xDS validators, so
    /// normally empty; logged when not).
    pub errors: Vec<String>,
}

impl Dataplane {
    /// Compiles `state` and `statics`, reusing what `previous` compiled from
    /// the same resources.
    pub fn build(
        state: &XdsState,
        statics: &Statics,
        previous: &Dataplane,
        secrets: &Arc<crate::secrets::Secrets>,
    ) -> Dataplane {
        let mut errors = Vec::new();
        let clusters = statics
            .clusters
            .iter()
            .chain(state.clusters.values())
            .map(|c| {
                let cla = eds_name(c).and_then(|n| state.endpoints.get(n));
                (c, cla)
            });
        let (clusters, cluster_errors) =
            ClusterSet::build(clusters, Some(&previous.clusters), secrets);
        errors.extend(cluster_errors);

        let mut routes = HashMap::new();
        let mut route_sources = HashMap::new();
        for (name, rc) in &state.routes {
            let reused = previous
                .route_sources
                .get(name)
                .filter(|old| Arc::ptr_eq(old, rc))
                .and_then(|_| previous.routes.get(name));
            let table = match reused {
                Some(t) => Arc::clone(t),
                None => match crate::route::compile(rc) {
                    Ok(t) => Arc::new(t),
                    Err(e) => {
                        errors.push(format!("route {name}: {}", e.join("; ")));
                        continue;
                    }
                },
            };
            routes.insert(name.clone(), table);
            route_sources.insert(name.clone(), Arc::clone(rc));
        }

        let mut listeners = HashMap::new();
        let mut by_addr = HashMap::new();
        for proto in statics.listeners.iter().chain(state.listeners.values()) {
            let reused = previous
                .listeners
                .get(&proto.name)
                .filter(|old| Arc::ptr_eq(&old.proto, proto));
            let compiled = match reused {
                Some(l) => Arc::clone(l),
                None => match listener::compile(Arc::clone(proto)) {
                    Ok(l) => Arc::new(l),
                    Err(e) => {
                        errors.push(format!("listener {}: {}", proto.name, e.join("; ")));
                        continue;
                    }
                },
            };
            by_addr.insert(compiled.addr, compiled.name.clone());
            listeners.insert(compiled.name.clone(), compiled);
        }
        Dataplane {
            clusters,
            routes,
            route_sources,
            listeners,
            by_addr,
            errors,
        }
    }

    /// The listener a connection to `dst` belongs to: the one bound to that
    /// exact address, else the wildcard listener of its port.
    pub fn listener_for(&self, dst: SocketAddr) -> Option<&Arc<ListenerConfig>> {
        let wildcard = match dst.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        self.by_addr
            .get(&dst)
            .or_else(|| self.by_addr.get(&SocketAddr::new(wildcard, dst.port())))
            .and_then(|name| self.listeners.get(name))
    }
}
