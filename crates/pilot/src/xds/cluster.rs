//! CDS: the clusters of one proxy, with Istio's names and defaults.
//!
//! For every service the proxy may reach ([`Scope::services`]: `exportTo` and
//! the Sidecar's egress hosts) and each of its ports, `outbound|PORT||HOST`,
//! plus `outbound|PORT|SUBSET|HOST` per subset of the DestinationRule that
//! applies ([`policy::destination_rule`]). The discovery type follows the
//! service's resolution: EDS over ADS for client-side load balancing,
//! STRICT_DNS / LOGICAL_DNS with an inline load assignment for DNS, and
//! ORIGINAL_DST for passthrough. The merged traffic policy for the port and
//! subset ([`policy::effective_policy`]) then sets connection pool limits,
//! outlier detection, load balancing and locality load balancing
//! ([`traffic`], [`locality`]) and upstream TLS ([`tls`]).
//!
//! Every proxy also gets `PassthroughCluster` (ORIGINAL_DST, for ALLOW_ANY) and
//! `BlackHoleCluster` (STATIC, no endpoints). Sidecars get an `inbound|PORT||`
//! cluster per inbound port (STATIC, to the application on 127.0.0.1:PORT or
//! the Sidecar ingress `defaultEndpoint`) and `InboundPassthroughCluster`
//! (ORIGINAL_DST, bound to 127.0.0.6 as Istio, so captured traffic is not
//! captured again).

use std::collections::BTreeSet;

use common::istio::networking::{ConnectionPoolSettings, Subset};
use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster,
    cluster::{ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy},
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, BindConfig, SocketAddress, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
    lb_endpoint::HostIdentifier,
};

use crate::model::{Endpoint, Protocol, Resolution, Service, ServicePort, Snapshot};
use crate::proxy::{Proxy, ProxyKind};
use crate::xds::endpoint::load_assignment;
use crate::xds::endpoint::locality::{self, LocalityLb};
use crate::xds::route::scope::{InboundEndpoint, InboundPort, Scope};
use crate::xds::route::util::{
    DEFAULT_CONNECT_TIMEOUT_SECS, ads, labels_match, pipe_address, seconds, socket_address,
    subset_key,
};
use crate::xds::{CLUSTER, NamedResource};

pub mod policy;
pub mod tls;
pub mod traffic;

/// Istio's cluster for traffic to unknown destinations under ALLOW_ANY.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's cluster that drops traffic (REGISTRY_ONLY, unmatched routes).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// Istio's cluster for inbound traffic to ports no service declares.
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
/// The source address Istio binds inbound passthrough connections to.
pub const INBOUND_PASSTHROUGH_BIND_IP: &str = "127.0.0.6";

/// The clusters of `proxy`, encoded.
pub fn generate(snapshot: &Snapshot, proxy: &Proxy) -> Vec<NamedResource> {
    clusters(snapshot, proxy)
        .into_iter()
        .map(|c| NamedResource::new(c.name.clone(), CLUSTER, &c))
        .collect()
}

/// The clusters of `proxy`, in a stable order (services by host, ports in
/// declaration order, subsets in rule order; then the special clusters).
pub fn clusters(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Cluster> {
    let scope = Scope::new(snapshot, proxy);
    let mut out = Vec::new();
    let mut names = BTreeSet::new();
    let mut push = |c: Cluster, out: &mut Vec<Cluster>| {
        if names.insert(c.name.clone()) {
            out.push(c);
        }
    };
    for service in scope.services() {
        let rule = policy::destination_rule(snapshot, proxy, &service.hostname);
        for port in &service.ports {
            push(outbound(&scope, service, port, rule, None), &mut out);
            for subset in rule.iter().flat_map(|r| r.spec.subsets.iter()) {
                if !subset.name.is_empty() {
                    push(
                        outbound(&scope, service, port, rule, Some(subset)),
                        &mut out,
                    );
                }
            }
        }
    }
    push(passthrough(), &mut out);
    push(blackhole(), &mut out);
    if proxy.kind == ProxyKind::Sidecar {
        let pool = scope
            .sidecar()
            .and_then(|s| s.inbound_connection_pool.as_ref());
        for port in scope.inbound_ports() {
            let port_pool = scope
                .sidecar()
                .and_then(|s| s.ingress.iter().find(|i| i.port.number == port.port))
                .and_then(|i| i.connection_pool.as_ref())
                .or(pool);
            push(inbound(&port, port_pool), &mut out);
        }
        push(inbound_passthrough(), &mut out);
    }
    out
}

fn base(name: String, discovery: DiscoveryType) -> Cluster {
    Cluster {
        name,
        connect_timeout: Some(seconds(DEFAULT_CONNECT_TIMEOUT_SECS)),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(discovery as i32)),
        ..Default::default()
    }
}

/// One outbound cluster for a service port, optionally a subset's.
fn outbound(
    scope: &Scope<'_>,
    service: &Service,
    port: &ServicePort,
    rule: Option<policy::Rule<'_>>,
    subset: Option<&Subset>,
) -> Cluster {
    let subset_name = subset.map(|s| s.name.as_str());
    let name = subset_key("outbound", port.port, subset_name, &service.hostname);
    let mut c = match service.resolution {
        Resolution::ClientSideLb => {
            let mut c = base(name.clone(), DiscoveryType::Eds);
            c.eds_cluster_config = Some(EdsClusterConfig {
                eds_config: Some(ads()),
                service_name: name,
            });
            c
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            let logical = service.resolution == Resolution::DnsRoundRobin;
            let mut c = base(
                name.clone(),
                if logical {
                    DiscoveryType::LogicalDns
                } else {
                    DiscoveryType::StrictDns
                },
            );
            c.dns_lookup_family = DnsLookupFamily::V4Only as i32;
            c.load_assignment = Some(dns_assignment(
                scope.snapshot,
                service,
                port,
                subset,
                &name,
                logical,
            ));
            c
        }
        Resolution::Passthrough => base(name, DiscoveryType::OriginalDst),
    };
    let policy = rule
        .map(|r| r.policy(port.port, subset_name))
        .unwrap_or_default();
    traffic::apply_connection_pool(&mut c, policy.connection_pool.as_ref(), port.protocol);
    traffic::apply_outlier_detection(&mut c, policy.outlier_detection.as_ref());
    traffic::apply_load_balancer(&mut c, policy.load_balancer.as_ref());
    if let Some(lb) = LocalityLb::from_policy(Some(&policy)) {
        traffic::apply_locality_lb(&mut c, lb);
        // DNS clusters carry their endpoints inline, so CDS applies the
        // proxy's priorities or weights (LOGICAL_DNS has one host: none).
        if lb.per_proxy()
            && service.resolution == Resolution::Dns
            && let Some(cla) = c.load_assignment.as_mut()
        {
            lb.apply(
                cla,
                None,
                &locality::parse(&scope.proxy.locality),
                &Default::default(),
            );
        }
    }
    let upstream = tls::Upstream {
        snapshot: scope.snapshot,
        proxy: scope.proxy,
        service,
        port: port.port,
        subset: subset_name,
        http2: matches!(port.protocol, Protocol::Http2 | Protocol::Grpc),
    };
    if let Some(settings) = &policy.tls {
        c.transport_socket = tls::upstream_transport_socket(settings, upstream);
    } else if tls::auto_mtls_applies(upstream) {
        c.transport_socket_matches = tls::auto_mtls_matches(upstream);
    }
    c
}

/// The inline endpoints of a DNS cluster: the registry's (the subset's when
/// one is given), else the service host itself; LOGICAL_DNS takes exactly one.
fn dns_assignment(
    snapshot: &Snapshot,
    service: &Service,
    port: &ServicePort,
    subset: Option<&Subset>,
    name: &str,
    logical: bool,
) -> ClusterLoadAssignment {
    let mut endpoints: Vec<&Endpoint> = snapshot
        .endpoints_of(&service.hostname, port.port)
        .iter()
        .filter(|e| subset.is_none_or(|s| labels_match(&s.labels, &e.labels)))
        .collect();
    if logical {
        endpoints.truncate(1);
    }
    if endpoints.is_empty() && subset.is_none() && !service.hostname.contains('*') {
        return single_endpoint(name, socket_address(&service.hostname, port.port));
    }
    let mut cla = load_assignment(name, endpoints);
    if logical {
        // LOGICAL_DNS takes one endpoint; locality weights do not apply.
        for locality in &mut cla.endpoints {
            locality.load_balancing_weight = None;
        }
    }
    cla
}

/// A load assignment with one endpoint at `address`.
fn single_endpoint(name: &str, address: Address) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                    address: Some(address),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `PassthroughCluster`: ORIGINAL_DST, speaking whatever the downstream spoke.
pub fn passthrough() -> Cluster {
    let mut c = base(PASSTHROUGH_CLUSTER.to_string(), DiscoveryType::OriginalDst);
    c.lb_policy = LbPolicy::ClusterProvided as i32;
    traffic::apply_connection_pool(&mut c, None, Protocol::Tcp);
    if let Some(options) =
        traffic::protocol_options(traffic::UpstreamProtocol::Downstream, None, None)
    {
        c.typed_extension_protocol_options
            .insert(traffic::HTTP_PROTOCOL_OPTIONS.to_string(), options);
    }
    c
}

/// `BlackHoleCluster`: STATIC with no endpoints; every connection fails.
pub fn blackhole() -> Cluster {
    let mut c = base(BLACKHOLE_CLUSTER.to_string(), DiscoveryType::Static);
    c.lb_policy = LbPolicy::RoundRobin as i32;
    c
}

/// `InboundPassthroughCluster`: ORIGINAL_DST from 127.0.0.6.
pub fn inbound_passthrough() -> Cluster {
    let mut c = base(
        INBOUND_PASSTHROUGH_CLUSTER.to_string(),
        DiscoveryType::OriginalDst,
    );
    c.lb_policy = LbPolicy::ClusterProvided as i32;
    c.upstream_bind_config = Some(BindConfig {
        source_address: Some(SocketAddress {
            address: INBOUND_PASSTHROUGH_BIND_IP.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(0)),
            ..Default::default()
        }),
        ..Default::default()
    });
    traffic::apply_connection_pool(&mut c, None, Protocol::Tcp);
    if let Some(options) =
        traffic::protocol_options(traffic::UpstreamProtocol::Downstream, None, None)
    {
        c.typed_extension_protocol_options
            .insert(traffic::HTTP_PROTOCOL_OPTIONS.to_string(), options);
    }
    c
}

/// The name of the inbound cluster for `port` (Istio ≥ 1.10: `inbound|PORT||`).
pub fn inbound_name(port: u32) -> String {
    format!("inbound|{port}||")
}

/// `inbound|PORT||`: STATIC to where the application listens.
fn inbound(port: &InboundPort, pool: Option<&ConnectionPoolSettings>) -> Cluster {
    let name = inbound_name(port.port);
    let mut c = base(name.clone(), DiscoveryType::Static);
    c.lb_policy = LbPolicy::RoundRobin as i32;
    let address = match &port.endpoint {
        InboundEndpoint::Socket(ip, p) => socket_address(ip, *p),
        InboundEndpoint::Unix(path) => pipe_address(path),
    };
    c.load_assignment = Some(single_endpoint(&name, address));
    traffic::apply_connection_pool(&mut c, pool, port.protocol);
    c
}

#[cfg(test)]
mod tests;
