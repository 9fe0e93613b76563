//! A sidecar's outbound route configuration for one port (named by the port
//! number, as Istio names it).
//!
//! VirtualServices bound to `mesh` come first, in config order: each claims
//! the services its hosts name (exact hosts, or the not yet claimed services a
//! wildcard host covers) that have an HTTP port equal to this one, and gets a
//! virtual host per claimed service with the service's domains, plus one per
//! host that is no service (`host`, `host:PORT`) — on port 80 only when it
//! claims no service at all, as Istio. A VirtualService whose rules produce no
//! route here claims nothing. Every unclaimed service on the port then gets
//! Istio's default route; last comes `allow_any` or `block_all`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use common::host;
use common::istio::networking::{OutboundTrafficMode, VirtualServiceSpec};
use envoy_types::pb::envoy::config::route::v3::{Route, RouteConfiguration, VirtualHost};

use super::scope::{MESH_GATEWAY, Scope, namespace};
use super::translate::{
    RouteContext, default_route, direct_route, hash_policy, passthrough_route,
    virtual_service_routes,
};
use super::util::{boolv, subset_key, u32v};
use super::{MAX_DIRECT_RESPONSE_BODY_BYTES, VirtualHosts};
use crate::model::{DOMAIN_SUFFIX, Service, fqdn};
use crate::proxy::Proxy;
use crate::xds::cluster::PASSTHROUGH_CLUSTER;
use crate::xds::cluster::policy::{consistent_hash, destination_rule};

/// The route configuration `PORT` of a sidecar.
pub fn route_config(scope: &Scope<'_>, port: u32) -> RouteConfiguration {
    let services: BTreeMap<&str, &Arc<Service>> =
        scope.services().map(|s| (s.hostname.as_str(), s)).collect();
    let has_http_port = |s: &Service| {
        s.ports
            .iter()
            .any(|p| p.port == port && p.protocol.is_http())
    };
    let ctx = RouteContext {
        snapshot: scope.snapshot,
        proxy: scope.proxy,
        listen_port: port,
        gateways: vec![MESH_GATEWAY.to_string()],
        tls: false,
    };
    let mut vhosts = VirtualHosts::default();
    let mut claimed: HashSet<String> = HashSet::new();
    for (resource, vs) in scope.mesh_virtual_services() {
        let (other_hosts, matched) = separate_hosts(vs, namespace(resource), &services, &claimed);
        let on_port: Vec<&Arc<Service>> = matched
            .iter()
            .copied()
            .filter(|s| has_http_port(s))
            .collect();
        let any_http = matched
            .iter()
            .any(|s| s.ports.iter().any(|p| p.protocol.is_http()));
        if on_port.is_empty() && (any_http || port != 80) {
            continue;
        }
        let routes = virtual_service_routes(&ctx, resource, vs);
        if routes.is_empty() {
            continue;
        }
        for svc in on_port {
            claimed.insert(svc.hostname.clone());
            vhosts.push(virtual_host(
                format!("{}:{port}", svc.hostname),
                service_domains(svc, port, scope.proxy),
                routes.clone(),
            ));
        }
        for h in other_hosts {
            vhosts.push(virtual_host(
                format!("{h}:{port}"),
                with_port(vec![h.clone()], port),
                routes.clone(),
            ));
        }
    }
    for svc in services.values().filter(|s| has_http_port(s)) {
        if claimed.contains(&svc.hostname) {
            continue;
        }
        let hash = destination_rule(scope.snapshot, scope.proxy, &svc.hostname)
            .and_then(|r| consistent_hash(r.spec, Some(port), None))
            .and_then(hash_policy);
        let cluster = subset_key("outbound", port, None, &svc.hostname);
        vhosts.push(virtual_host(
            format!("{}:{port}", svc.hostname),
            service_domains(svc, port, scope.proxy),
            vec![default_route(&cluster, hash)],
        ));
    }
    vhosts.push(match scope.outbound_mode() {
        OutboundTrafficMode::AllowAny => virtual_host(
            "allow_any".into(),
            vec!["*".into()],
            vec![passthrough_route("allow_any", PASSTHROUGH_CLUSTER)],
        ),
        OutboundTrafficMode::RegistryOnly => virtual_host(
            "block_all".into(),
            vec!["*".into()],
            vec![direct_route("block_all", 502)],
        ),
    });
    RouteConfiguration {
        name: port.to_string(),
        virtual_hosts: vhosts.into_vec(),
        validate_clusters: boolv(false),
        max_direct_response_body_size_bytes: u32v(MAX_DIRECT_RESPONSE_BODY_BYTES),
        ..Default::default()
    }
}

fn virtual_host(name: String, domains: Vec<String>, routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name,
        domains,
        routes,
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// Istio's `separateVSHostsAndServices`: the VirtualService's hosts that are
/// services (exact, or unclaimed services under a wildcard host), and the rest.
fn separate_hosts<'a>(
    vs: &VirtualServiceSpec,
    vs_namespace: &str,
    services: &BTreeMap<&str, &'a Arc<Service>>,
    claimed: &HashSet<String>,
) -> (Vec<String>, Vec<&'a Arc<Service>>) {
    let mut other = Vec::new();
    let mut matched: Vec<&'a Arc<Service>> = Vec::new();
    for h in &vs.hosts {
        let h = fqdn(h, vs_namespace);
        if !h.starts_with('*') {
            match services.get(h.as_str()) {
                Some(s) if !claimed.contains(&s.hostname) => matched.push(s),
                Some(_) => {}
                None => other.push(h),
            }
            continue;
        }
        let mut found = false;
        for (svc_host, svc) in services {
            if host::subset_of(svc_host, &h) {
                found = true;
                if !claimed.contains(*svc_host)
                    && !matched.iter().any(|m| m.hostname == svc.hostname)
                {
                    matched.push(svc);
                }
            }
        }
        if !found {
            other.push(h);
        }
    }
    (other, matched)
}

/// The domains of a service's virtual host (Istio's
/// `generateVirtualHostDomains`): the FQDN, the short forms a client in the
/// proxy's namespace (`name`, `name.ns`, `name.ns.svc`) or another namespace
/// (`name.ns`, `name.ns.svc`) may use, and the VIPs; each also with `:PORT`.
pub fn service_domains(svc: &Service, port: u32, proxy: &Proxy) -> Vec<String> {
    let mut names = vec![svc.hostname.clone()];
    if let Some(rest) = svc.hostname.strip_suffix(&format!(".{DOMAIN_SUFFIX}"))
        && let Some((name, ns)) = rest.split_once('.')
        && !ns.contains('.')
    {
        if ns == proxy.namespace {
            names.push(name.to_string());
        }
        names.push(format!("{name}.{ns}"));
        names.push(format!("{name}.{ns}.svc"));
    }
    for vip in &svc.addresses {
        if vip.is_empty() || vip == "0.0.0.0" || vip.contains('/') {
            continue;
        }
        names.push(vip.clone());
    }
    with_port(names, port)
}

/// Each name, then the name with `:PORT` (IPv6 addresses bracketed).
fn with_port(names: Vec<String>, port: u32) -> Vec<String> {
    names
        .into_iter()
        .flat_map(|n| {
            let with = if n.contains(':') {
                format!("[{n}]:{port}")
            } else {
                format!("{n}:{port}")
            };
            [n, with]
        })
        .collect()
}
