//! A sidecar's listeners, as Istio lays them out for iptables capture:
//!
//! - `virtualOutbound` (0.0.0.0:15001, `use_original_dst`): hands each
//!   captured connection to the listener of its original destination port;
//!   what no listener takes goes to PassthroughCluster (ALLOW_ANY) or
//!   BlackHoleCluster (REGISTRY_ONLY). Connections to 15001 itself are dropped.
//! - `0.0.0.0_PORT` (`bind_to_port: false`) per port of the services the proxy
//!   sees: HTTP services share one connection manager with RDS `PORT`; TCP
//!   services get a chain per service matching its VIPs (TLS services: its
//!   host as SNI) with a TCP proxy to its cluster, or to the weighted
//!   destinations of the first `tcp`/`tls` rule of a VirtualService bound to
//!   `mesh` for it; without HTTP services, the catch-all chain goes to a TCP
//!   service without VIPs, else passthrough/blackhole.
//! - `virtualInbound` (0.0.0.0:15006, `original_dst` listener filter, and
//!   `tls_inspector` when a chain matches on the transport): chains per
//!   inbound port (HTTP: connection manager with an inline route to
//!   `inbound|PORT||`; TCP: TCP proxy), then InboundPassthroughCluster; mTLS,
//!   plaintext or both per the port's PeerAuthentication mode ([`mtls`]).
//!   The workload's AuthorizationPolicies and RequestAuthentications
//!   ([`authz`]) put HTTP filters before the router of each connection
//!   manager and network RBAC filters before each TCP proxy, passthrough
//!   included.
//!
//! Traffic that is not captured gets listeners bound to their ports, as
//! Istio lays them out: a Sidecar ingress listener with `captureMode: NONE`
//! gets a listener of its own (`BIND_PORT`, `bind` or `0.0.0.0`) with the
//! port's chains instead of a chain in virtualInbound; an egress listener with
//! a port gets `BIND_PORT` for the services of its hosts on that port (HTTP
//! routes from RDS `BIND:PORT`, or `PORT` on the wildcard address); one with
//! `captureMode: NONE` binds it (`bind` defaulting to `127.0.0.1`). A proxy
//! whose node says `INTERCEPTION_MODE: NONE` treats `captureMode: DEFAULT` as
//! `NONE` and gets neither virtualOutbound nor virtualInbound, and no inbound
//! listeners but its Sidecar's ingress ones. The catch-all egress listener
//! exposes every egress listener's hosts (Istio: only its own).

use std::collections::{BTreeMap, BTreeSet};

use common::host;
use common::istio::networking::{OutboundTrafficMode, RouteDestination};
use common::istio::security::MutualTlsMode;
use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};

use super::mtls::{self, InboundMtls};
use super::{
    Routes, bind_address, chain, host_range, http_connection_manager, http_connection_manager_with,
    original_dst, tcp_proxy, tls_inspector,
};
use crate::model::{Protocol, Service, fqdn};
use crate::proxy::Interception;
use crate::xds::authz;
use crate::xds::cluster::{
    BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER, inbound_name,
};
use crate::xds::route::scope::{EgressListener, MESH_GATEWAY, Scope, namespace, normalize_gateway};
use crate::xds::route::translate::inbound_route;
use crate::xds::route::util::{boolv, labels_match, socket_address, subset_key, u32v};

/// Istio's outbound capture port.
pub const OUTBOUND_PORT: u32 = 15001;
/// Istio's inbound capture port.
pub const INBOUND_PORT: u32 = 15006;

/// The sidecar's listeners.
pub fn listeners(scope: &Scope<'_>) -> Vec<Listener> {
    let (virtual_in, bound_in) = inbound(scope);
    let mut out = Vec::new();
    if scope.proxy.interception == Interception::Redirect {
        out.push(virtual_outbound(scope));
        out.push(virtual_in);
    }
    out.extend(bound_in);
    out.extend(outbound_listeners(scope));
    out
}

fn fallback_cluster(scope: &Scope<'_>) -> &'static str {
    match scope.outbound_mode() {
        OutboundTrafficMode::AllowAny => PASSTHROUGH_CLUSTER,
        OutboundTrafficMode::RegistryOnly => BLACKHOLE_CLUSTER,
    }
}

fn port_match(port: u32) -> Option<FilterChainMatch> {
    Some(FilterChainMatch {
        destination_port: u32v(port),
        ..Default::default()
    })
}

fn virtual_outbound(scope: &Scope<'_>) -> Listener {
    let fallback = fallback_cluster(scope);
    Listener {
        name: "virtualOutbound".into(),
        address: Some(socket_address("0.0.0.0", OUTBOUND_PORT)),
        use_original_dst: boolv(true),
        filter_chains: vec![
            chain(
                "virtualOutbound-blackhole",
                port_match(OUTBOUND_PORT),
                tcp_proxy(BLACKHOLE_CLUSTER, &[(BLACKHOLE_CLUSTER.into(), 1)], None),
            ),
            chain(
                "virtualOutbound-catchall-tcp",
                None,
                tcp_proxy(fallback, &[(fallback.into(), 1)], None),
            ),
        ],
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    }
}

/// The outbound ports of the services the sidecar sees, with those services.
fn outbound_ports<'a>(scope: &Scope<'a>) -> BTreeMap<u32, Vec<(&'a Service, Protocol)>> {
    let mut ports: BTreeMap<u32, Vec<(&'a Service, Protocol)>> = BTreeMap::new();
    for svc in scope.services() {
        for p in &svc.ports {
            if p.port == OUTBOUND_PORT || p.port == INBOUND_PORT || p.port == 0 {
                continue;
            }
            ports
                .entry(p.port)
                .or_default()
                .push((svc.as_ref(), p.protocol));
        }
    }
    ports
}

fn outbound_listeners(scope: &Scope<'_>) -> Vec<Listener> {
    let fallback = fallback_cluster(scope);
    let egress = scope.egress_listeners();
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    for listener in &egress {
        let through = scope.through(listener);
        let ports: Vec<(u32, Vec<(&Service, Protocol)>)> = match listener.port {
            // A listener with a port: the services of its hosts with that
            // port, understood with the listener's protocol.
            Some((port, protocol)) => {
                let services = through
                    .services()
                    .filter(|s| s.ports.iter().any(|p| p.port == port))
                    .map(|s| (s.as_ref(), protocol))
                    .collect();
                vec![(port, services)]
            }
            None => outbound_ports(&through).into_iter().collect(),
        };
        for (port, services) in ports {
            // A listener with a port comes first and wins its address.
            if !names.insert(listener.name(port)) {
                continue;
            }
            out.extend(outbound_listener(
                &through, listener, port, &services, fallback,
            ));
        }
    }
    out
}

/// One outbound listener of `listener` on `port` for `services`.
fn outbound_listener(
    scope: &Scope<'_>,
    listener: &EgressListener,
    port: u32,
    services: &[(&Service, Protocol)],
    fallback: &str,
) -> Option<Listener> {
    let name = listener.name(port);
    let stat_prefix = format!("outbound_{name}");
    let mut chains: Vec<FilterChain> = Vec::new();
    let mut seen: BTreeSet<(Vec<String>, Vec<String>)> = BTreeSet::new();
    let mut catch_all_tcp: Option<(String, Vec<(String, u32)>)> = None;
    let mut sni = false;
    let has_http = services.iter().any(|(_, p)| p.is_http());
    for (svc, protocol) in services.iter().filter(|(_, p)| !p.is_http()) {
        let clusters = l4_destinations(scope, svc, port, *protocol == Protocol::Tls)
            .unwrap_or_else(|| vec![(subset_key("outbound", port, None, &svc.hostname), 1)]);
        let chain_name = subset_key("outbound", port, None, &svc.hostname);
        let (ranges, names) = if *protocol == Protocol::Tls {
            (Vec::new(), vec![svc.hostname.clone()])
        } else {
            let ranges: Vec<String> = svc
                .addresses
                .iter()
                .filter(|a| host_range(a).is_some())
                .cloned()
                .collect();
            // A bound listener is reached at its own address, not the
            // service's: the first TCP service takes it.
            if ranges.is_empty() || listener.bind_to_port {
                if catch_all_tcp.is_none() {
                    catch_all_tcp = Some((chain_name, clusters));
                }
                continue;
            }
            (ranges, Vec::new())
        };
        if !seen.insert((ranges.clone(), names.clone())) {
            continue;
        }
        sni |= !names.is_empty();
        let m = FilterChainMatch {
            prefix_ranges: ranges.iter().filter_map(|r| host_range(r)).collect(),
            server_names: names,
            ..Default::default()
        };
        chains.push(chain(
            &chain_name,
            Some(m),
            tcp_proxy(&chain_name, &clusters, None),
        ));
    }
    let default = if has_http {
        chain(
            &name,
            None,
            http_connection_manager(
                &stat_prefix,
                Routes::Rds(listener.route_name(port)),
                false,
                true,
            ),
        )
    } else if let Some((chain_name, clusters)) = catch_all_tcp {
        chain(&chain_name, None, tcp_proxy(&chain_name, &clusters, None))
    } else {
        chain(
            &format!("{name}-catchall-tcp"),
            None,
            tcp_proxy(fallback, &[(fallback.into(), 1)], None),
        )
    };
    chains.push(default);
    Some(Listener {
        name,
        address: Some(bind_address(&listener.bind, port)?),
        bind_to_port: if listener.bind_to_port {
            None
        } else {
            boolv(false)
        },
        filter_chains: chains,
        listener_filters: if sni {
            vec![tls_inspector()]
        } else {
            Vec::new()
        },
        traffic_direction: TrafficDirection::Outbound as i32,
        ..Default::default()
    })
}

/// The weighted clusters of the first `tcp` (or `tls`, for TLS services) rule
/// of a VirtualService bound to `mesh` for `svc`, when one applies here.
fn l4_destinations(
    scope: &Scope<'_>,
    svc: &Service,
    port: u32,
    tls: bool,
) -> Option<Vec<(String, u32)>> {
    for (resource, vs) in scope.mesh_virtual_services() {
        let ns = namespace(resource);
        if !vs
            .hosts
            .iter()
            .any(|h| host::subset_of(&svc.hostname, &fqdn(h, ns)))
        {
            continue;
        }
        let applies =
            |port_m: Option<u32>, labels: &BTreeMap<String, String>, gateways: &[String]| {
                port_m.is_none_or(|p| p == port)
                    && labels_match(labels, &scope.proxy.labels)
                    && (gateways.is_empty()
                        || gateways
                            .iter()
                            .any(|g| normalize_gateway(g, ns) == MESH_GATEWAY))
            };
        let routes: Vec<&[RouteDestination]> = if tls {
            vs.tls
                .iter()
                .filter(|r| {
                    r.r#match.iter().any(|m| {
                        applies(m.port, &m.source_labels, &m.gateways)
                            && m.sni_hosts.iter().any(|h| host::overlap(&svc.hostname, h))
                    })
                })
                .map(|r| r.route.as_slice())
                .collect()
        } else {
            vs.tcp
                .iter()
                .filter(|r| {
                    r.r#match.is_empty()
                        || r.r#match
                            .iter()
                            .any(|m| applies(m.port, &m.source_labels, &m.gateways))
                })
                .map(|r| r.route.as_slice())
                .collect()
        };
        if let Some(route) = routes.into_iter().find(|r| !r.is_empty()) {
            return Some(l4_clusters(route, ns, port, scope));
        }
    }
    None
}

/// Clusters and weights of L4 route destinations (weight 0 left out unless
/// it is the only one).
pub fn l4_clusters(
    route: &[RouteDestination],
    ns: &str,
    listen_port: u32,
    scope: &Scope<'_>,
) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = route
        .iter()
        .filter(|d| route.len() == 1 || d.weight.unwrap_or(0) > 0)
        .map(|d| {
            let host = fqdn(&d.destination.host, ns);
            let port = d
                .destination
                .port
                .as_ref()
                .and_then(|p| p.number)
                .or_else(|| {
                    scope
                        .snapshot
                        .services
                        .get(&host)
                        .filter(|s| s.ports.len() == 1)
                        .map(|s| s.ports[0].port)
                })
                .unwrap_or(listen_port);
            (
                subset_key(
                    "outbound",
                    port,
                    d.destination.subset.as_deref().filter(|s| !s.is_empty()),
                    &host,
                ),
                d.weight.unwrap_or(0).max(1) as u32,
            )
        })
        .collect();
    if out.is_empty()
        && let Some(first) = route.first()
    {
        out.push((
            subset_key(
                "outbound",
                listen_port,
                None,
                &fqdn(&first.destination.host, ns),
            ),
            1,
        ));
    }
    out
}

/// virtualInbound, and a listener of its own for each inbound port bound to
/// its port (not captured).
fn inbound(scope: &Scope<'_>) -> (Listener, Vec<Listener>) {
    let mtls = InboundMtls::of(scope.snapshot, scope.proxy);
    let authz = authz::filters(scope.snapshot, scope.proxy);
    let with_tcp_authz = |terminal: envoy_types::pb::envoy::config::listener::v3::Filter| {
        let mut filters = authz.tcp.clone();
        filters.push(terminal);
        filters
    };
    let mut chains = vec![chain(
        "virtualInbound-blackhole",
        port_match(INBOUND_PORT),
        tcp_proxy(BLACKHOLE_CLUSTER, &[(BLACKHOLE_CLUSTER.into(), 1)], None),
    )];
    let mut covered = BTreeSet::from([INBOUND_PORT]);
    let mut plaintext_ports = BTreeSet::new();
    let mut bound = Vec::new();
    for p in scope.inbound_ports() {
        if !covered.insert(p.port) {
            continue;
        }
        let cluster = inbound_name(p.port);
        let stat_prefix = format!(
            "inbound_{}_{}",
            p.bind.as_deref().unwrap_or("0.0.0.0"),
            p.port
        );
        let filter = if p.protocol.is_http() {
            let rc = RouteConfiguration {
                name: cluster.clone(),
                virtual_hosts: vec![VirtualHost {
                    name: format!("inbound|http|{}", p.port),
                    domains: vec!["*".into()],
                    routes: vec![inbound_route(&cluster)],
                    ..Default::default()
                }],
                validate_clusters: boolv(false),
                ..Default::default()
            };
            vec![http_connection_manager_with(
                &stat_prefix,
                Routes::Inline(Box::new(rc)),
                false,
                false,
                authz.http.clone(),
            )]
        } else {
            with_tcp_authz(tcp_proxy(&cluster, &[(cluster.clone(), 1)], None))
        };
        let mode = mtls.port(p.port);
        if let Some(bind) = &p.bind {
            let own = mtls::chains(
                &format!("{bind}_{}", p.port),
                port_match(p.port),
                mode,
                p.protocol.is_http(),
                filter,
            );
            let inspect = mtls::needs_inspector(&own);
            let plaintext = if mode == MutualTlsMode::Disable {
                BTreeSet::from([p.port])
            } else {
                BTreeSet::new()
            };
            if let Some(address) = bind_address(bind, p.port) {
                bound.push(Listener {
                    name: format!("{bind}_{}", p.port),
                    address: Some(address),
                    listener_filters: if inspect {
                        vec![mtls::inspector(&plaintext)]
                    } else {
                        Vec::new()
                    },
                    continue_on_listener_filters_timeout: inspect,
                    filter_chains: own,
                    traffic_direction: TrafficDirection::Inbound as i32,
                    ..Default::default()
                });
            }
            continue;
        }
        if mode == MutualTlsMode::Disable {
            plaintext_ports.insert(p.port);
        }
        chains.extend(mtls::chains(
            &format!("0.0.0.0_{}", p.port),
            port_match(p.port),
            mode,
            p.protocol.is_http(),
            filter,
        ));
    }
    let passthrough = tcp_proxy(
        INBOUND_PASSTHROUGH_CLUSTER,
        &[(INBOUND_PASSTHROUGH_CLUSTER.into(), 1)],
        None,
    );
    // `portLevelMtls` on a port no inbound port covers still governs the
    // traffic passed through on it (Istio's `ForPassthrough`).
    for (port, mode) in mtls.ports.iter().filter(|(p, _)| !covered.contains(*p)) {
        if *mode == MutualTlsMode::Disable {
            plaintext_ports.insert(*port);
        }
        chains.extend(mtls::chains(
            &format!("virtualInbound-catchall-tcp_{port}"),
            port_match(*port),
            *mode,
            false,
            with_tcp_authz(passthrough.clone()),
        ));
    }
    chains.extend(mtls::chains(
        "virtualInbound-catchall-tcp",
        None,
        mtls.workload,
        false,
        with_tcp_authz(passthrough),
    ));
    let mut listener_filters = vec![original_dst()];
    let inspect = mtls::needs_inspector(&chains);
    if inspect {
        listener_filters.push(mtls::inspector(&plaintext_ports));
    }
    let virtual_inbound = Listener {
        name: "virtualInbound".into(),
        address: Some(socket_address("0.0.0.0", INBOUND_PORT)),
        listener_filters,
        // A client that sends nothing (server-first protocols) is matched
        // without the inspector's verdict once its timeout passes, as Istio.
        continue_on_listener_filters_timeout: inspect,
        filter_chains: chains,
        traffic_direction: TrafficDirection::Inbound as i32,
        ..Default::default()
    };
    (virtual_inbound, bound)
}
