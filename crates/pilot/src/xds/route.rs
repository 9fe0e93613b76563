//! RDS: the route configurations a proxy asks for by name.
//!
//! - Sidecars ask for one per outbound HTTP port, named by the port number
//!   (`9080`), or `BIND:PORT` for an egress listener bound to an address of
//!   its own (a Sidecar's `bind`, or `127.0.0.1` without capture), which sees
//!   that listener's hosts: a virtual host per service on that port, with the rules of the
//!   VirtualService bound to `mesh` for its host, else a default route to
//!   `outbound|PORT||HOST`; then `allow_any` (to PassthroughCluster) or
//!   `block_all` (502) for unknown hosts ([`sidecar`]).
//! - Gateways ask for `http.PORT` (the plain HTTP servers of a port) and
//!   `https.PORT.PORTNAME.GATEWAY.NAMESPACE` (one TLS-terminating server): a
//!   virtual host per host in both a server's hosts and a bound
//!   VirtualService's hosts ([`gateway`]).
//!
//! Routes themselves come from [`translate`]; what the proxy sees of the mesh
//! from [`scope`]. Names pilot does not know are left out, as Envoy expects.

use std::collections::HashSet;

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};

use crate::model::Snapshot;
use crate::proxy::{Proxy, ProxyKind};
use crate::xds::{NamedResource, ROUTE};

mod delegate;
#[cfg(test)]
pub(crate) mod fixture;
mod gateway;
mod policies;
pub mod scope;
mod sidecar;
pub mod translate;
pub mod util;

pub use gateway::intersection as gateway_intersection;
use scope::Scope;

/// Istio raises Envoy's 4 KiB direct-response body limit to 1 MiB, the size
/// its validation accepts.
pub const MAX_DIRECT_RESPONSE_BODY_BYTES: u32 = 1024 * 1024;

/// The route configurations named in `names`, encoded.
pub fn generate(snapshot: &Snapshot, proxy: &Proxy, names: &[String]) -> Vec<NamedResource> {
    let scope = Scope::new(snapshot, proxy);
    names
        .iter()
        .filter_map(|name| route_configuration(&scope, name))
        .map(|rc| NamedResource::new(rc.name.clone(), ROUTE, &rc))
        .collect()
}

/// The route configuration called `name`, if pilot serves one by that name to
/// this proxy.
pub fn route_configuration(scope: &Scope<'_>, name: &str) -> Option<RouteConfiguration> {
    match scope.proxy.kind {
        ProxyKind::Sidecar => {
            let valid = |p: &str| p.parse::<u32>().ok().filter(|p| *p > 0 && *p <= 65535);
            if let Some(port) = valid(name) {
                return Some(sidecar::route_config(scope, port));
            }
            // `BIND:PORT`: the routes of the egress listener bound there.
            let (_, port) = name.rsplit_once(':')?;
            let port = valid(port)?;
            let listener = scope
                .egress_listeners()
                .into_iter()
                .find(|l| l.port.is_none_or(|(p, _)| p == port) && l.route_name(port) == name)?;
            let mut rc = sidecar::route_config(&scope.through(&listener), port);
            rc.name = name.to_string();
            Some(rc)
        }
        ProxyKind::Router => gateway::route_config(scope, name),
    }
}

/// The names of the route configurations the proxy's listeners refer to
/// (what an Envoy would request after LDS).
pub fn route_names(snapshot: &Snapshot, proxy: &Proxy) -> Vec<String> {
    crate::xds::listener::rds_names(snapshot, proxy)
}

/// Virtual hosts of one route configuration, keeping Envoy's rules: a domain
/// (case-insensitive) appears once per route configuration, and virtual host
/// names are unique. A host whose domains are all taken is dropped.
#[derive(Debug, Default)]
pub(crate) struct VirtualHosts {
    hosts: Vec<VirtualHost>,
    domains: HashSet<String>,
    names: HashSet<String>,
}

impl VirtualHosts {
    /// Adds `vh`, minus the domains already used.
    pub(crate) fn push(&mut self, mut vh: VirtualHost) {
        vh.domains
            .retain(|d| self.domains.insert(d.to_ascii_lowercase()));
        if vh.domains.is_empty() {
            return;
        }
        if !self.names.insert(vh.name.clone()) {
            let mut i = 1;
            while !self.names.insert(format!("{}_{i}", vh.name)) {
                i += 1;
            }
            vh.name = format!("{}_{i}", vh.name);
        }
        self.hosts.push(vh);
    }

    /// The virtual hosts in insertion order.
    pub(crate) fn into_vec(self) -> Vec<VirtualHost> {
        self.hosts
    }
}

#[cfg(test)]
mod tests;
