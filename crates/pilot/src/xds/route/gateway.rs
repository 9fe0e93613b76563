//! A gateway's route configurations: `http.PORT` for the plain HTTP servers of
//! a port, `https.PORT.PORTNAME.GATEWAY.NAMESPACE` for one TLS-terminating
//! server (Istio's `BuildGatewayHTTPRouteConfig`).
//!
//! For each server, each VirtualService bound to its Gateway contributes a
//! virtual host per host in both the server's hosts (those open to the
//! VirtualService's namespace) and the VirtualService's hosts, the more
//! specific of each overlapping pair (Istio's `Intersection`). Routes of later
//! VirtualServices for the same host are appended. Domains are the host and,
//! except for wildcards, `host:*`; the configuration also ignores the port in
//! host matching (Istio's `ignore_port_in_host_matching`). `httpsRedirect`
//! servers require TLS on their hosts. With no virtual host at all, a `*`
//! host without routes answers 404, as Istio's blackhole.

use std::collections::HashMap;

use common::host;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, VirtualHost, virtual_host::TlsRequirementType,
};

use super::scope::{Scope, namespace};
use super::translate::{RouteContext, virtual_service_routes};
use super::util::{boolv, u32v};
use super::{MAX_DIRECT_RESPONSE_BODY_BYTES, VirtualHosts};
use crate::model::fqdn;
use crate::xds::listener::servers::{GatewayServer, ServerKind, port_servers};

/// The route configuration `name` of a gateway, if it names one of its servers.
pub fn route_config(scope: &Scope<'_>, name: &str) -> Option<RouteConfiguration> {
    let groups = port_servers(scope);
    let (port, servers): (u32, Vec<GatewayServer<'_>>) =
        if let Some(rest) = name.strip_prefix("http.") {
            let (port, bind) = rest.split_once('.').unwrap_or((rest, "0.0.0.0"));
            let port: u32 = port.parse().ok()?;
            let group = groups
                .into_iter()
                .find(|g| g.port == port && g.bind == bind)?;
            let servers: Vec<_> = group
                .servers
                .into_iter()
                .filter(|s| s.kind == ServerKind::Http)
                .collect();
            (port, servers)
        } else if name.starts_with("https.") {
            let server = groups
                .into_iter()
                .flat_map(|g| g.servers)
                .find(|s| s.kind == ServerKind::Https && s.https_route_name() == name)?;
            (server.server.port.number, vec![server])
        } else {
            return None;
        };
    if servers.is_empty() {
        return None;
    }
    Some(RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: virtual_hosts(scope, port, &servers),
        validate_clusters: boolv(false),
        ignore_port_in_host_matching: true,
        max_direct_response_body_size_bytes: u32v(MAX_DIRECT_RESPONSE_BODY_BYTES),
        ..Default::default()
    })
}

fn virtual_hosts(scope: &Scope<'_>, port: u32, servers: &[GatewayServer<'_>]) -> Vec<VirtualHost> {
    let mut by_host: Vec<(String, VirtualHost)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for server in servers {
        let gateway = server.gateway_key();
        let redirect = server
            .server
            .tls
            .as_ref()
            .is_some_and(|t| t.https_redirect == Some(true));
        let ctx = RouteContext {
            snapshot: scope.snapshot,
            proxy: scope.proxy,
            listen_port: port,
            gateways: vec![gateway.clone()],
            tls: server.kind == ServerKind::Https,
        };
        for (resource, vs) in scope.gateway_virtual_services(&gateway) {
            let vs_ns = namespace(resource);
            let vs_hosts: Vec<String> = vs.hosts.iter().map(|h| fqdn(h, vs_ns)).collect();
            let hosts = intersection(&server.hosts_for_namespace(vs_ns), &vs_hosts);
            if hosts.is_empty() {
                continue;
            }
            let routes = virtual_service_routes(&ctx, resource, vs);
            if routes.is_empty() {
                continue;
            }
            for h in hosts {
                if let Some(&i) = index.get(&h) {
                    by_host[i].1.routes.extend(routes.iter().cloned());
                    continue;
                }
                index.insert(h.clone(), by_host.len());
                by_host.push((h.clone(), new_host(&h, port, routes.clone(), redirect)));
            }
        }
        if redirect {
            for h in server.plain_hosts() {
                if let Some(&i) = index.get(&h) {
                    by_host[i].1.require_tls = TlsRequirementType::All as i32;
                    continue;
                }
                index.insert(h.clone(), by_host.len());
                by_host.push((h.clone(), new_host(&h, port, Vec::new(), true)));
            }
        }
    }
    if by_host.is_empty() {
        return vec![VirtualHost {
            name: format!("blackhole:{port}"),
            domains: vec!["*".into()],
            ..Default::default()
        }];
    }
    let mut out = VirtualHosts::default();
    for (_, vh) in by_host {
        out.push(vh);
    }
    out.into_vec()
}

fn new_host(
    h: &str,
    port: u32,
    routes: Vec<envoy_types::pb::envoy::config::route::v3::Route>,
    redirect: bool,
) -> VirtualHost {
    let mut domains = vec![h.to_string()];
    if !h.contains('*') {
        domains.push(format!("{h}:*"));
    }
    VirtualHost {
        name: format!("{h}:{port}"),
        domains,
        routes,
        include_request_attempt_count: true,
        require_tls: if redirect {
            TlsRequirementType::All as i32
        } else {
            TlsRequirementType::None as i32
        },
        ..Default::default()
    }
}

/// Istio's `Names.Intersection`: for each overlapping pair, the more specific
/// host, once, in the order of `a`.
pub fn intersection(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in a {
        for y in b {
            let pick = if host::subset_of(x, y) {
                x
            } else if host::subset_of(y, x) {
                y
            } else {
                continue;
            };
            if !out.contains(pick) {
                out.push(pick.clone());
            }
        }
    }
    out
}
