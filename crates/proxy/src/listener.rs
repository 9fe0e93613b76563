//! LDS listeners compiled for the data path: where a listener listens,
//! whether it hands connections to the listener of their original destination
//! (`use_original_dst`, the sidecar's 15001), and its filter chains, each
//! ending in an HTTP connection manager ([`Hcm`]) or a TCP proxy
//! ([`TcpProxy`]). [`ListenerConfig::select_chain`] picks the chain for a
//! connection with Envoy's filter chain matching order.
//!
//! A chain's `transport_socket` (`DownstreamTlsContext` with SDS secrets) is
//! compiled into [`crate::secrets::ServerTls`]; the TLS itself is terminated
//! when a connection picks the chain.
//!
//! Connection manager settings honoured (`listener::hcm`): codec, routes
//! (RDS or inline), the `jwt_authn`/`rbac`/`fault`/`cors`/`router`
//! filters, `server_name` and its transformation,
//! `use_remote_address` (the peer joins `x-forwarded-for`), WebSocket
//! upgrades, `request_timeout` (until the response headers),
//! `generate_request_id`, `stream_idle_timeout` (default 5 min, zero: none;
//! 408 before the response headers, a reset after; the route's
//! `idle_timeout` overrides it), and the path settings `normalize_path`
//! (default false), `merge_slashes` and `path_with_escaped_slashes_action`
//! (every action), applied before routing and to the forwarded `:path`
//! ([`crate::http::path`]).
//!
//! `tracing` is honoured with the `envoy.tracers.opentelemetry` provider
//! ([`crate::telemetry::span`]): `client_sampling`, `random_sampling`,
//! `overall_sampling`, `max_path_tag_length`, `no_context_propagation`,
//! literal, environment and request-header `custom_tags`, and
//! `OpenTelemetryConfig`'s `grpc_service.envoy_grpc` (a cluster reached over
//! plaintext HTTP/2), `grpc_service.timeout`, `service_name`,
//! `max_cache_size` and the resource/scope switches; the listener's
//! `traffic_direction` picks the span kind. Refused there: other
//! providers, `http_service`, `google_grpc`, custom exporters, resource
//! detectors, samplers, `spawn_upstream_span`, `verbose`, `operation`,
//! `upstream_operation`, metadata and formatted custom tags. Route
//! `decorator`s are ignored (span names are `ingress` / `egress HOST`).
//!
//! Authentication and authorization: the HTTP filters
//! `envoy.filters.http.jwt_authn` ([`crate::jwt`]) and
//! `envoy.filters.http.rbac` ([`crate::rbac`]), which must precede `fault`
//! and `cors` and run in their order before routing
//! ([`crate::http::auth`]); and `envoy.filters.network.rbac` filters ahead
//! of a chain's connection manager or TCP proxy, decided on the
//! connection's first bytes as Envoy does (denied: closed). Their
//! unimplemented fields are refused by path (see those modules).
//!
//! What the data path cannot carry is refused by [`compile`] with the field's
//! path, so the xDS client NACKs it and keeps the last good listener:
//! inline certificates, network filters other than network RBAC ahead of
//! the HTTP connection manager or the TCP proxy, HTTP filters other than
//! `jwt_authn`, `rbac`, `fault`, `cors` and `router` (unknown optional
//! ones are skipped), listener filters other than `tls_inspector`,
//! `original_dst` and `http_inspector`, and non-TCP listeners.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as TcpProxyProto, tcp_proxy,
};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::cluster::{HostAddr, duration, host_addr};
use crate::rbac::NetworkRbac;

pub(crate) mod hcm;

pub use hcm::{Codec, Hcm, RouteSource, Xfcc, XfccMode};

const HCM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const TCP_PROXY_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";

/// A compiled listener.
#[derive(Debug)]
pub struct ListenerConfig {
    /// The listener's name.
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// `bind_to_port` (default true): false for the per-port outbound
    /// listeners that only receive connections handed over from 15001.
    pub bind: bool,
    /// `use_original_dst`: hand each connection to the listener of its
    /// original destination.
    pub use_original_dst: bool,
    /// Whether the `original_dst` listener filter restores the destination.
    pub original_dst_filter: bool,
    /// `traffic_direction: INBOUND` (Istio's `virtualInbound`): its requests
    /// are reported as the destination's.
    pub inbound: bool,
    /// Whether connections are inspected for TLS (the `tls_inspector`
    /// listener filter, or chains matching on transport, SNI or ALPN), and
    /// how long to wait for the first bytes (`listener_filters_timeout`,
    /// default 15 s; past it the connection is plain text).
    pub inspect: Option<Duration>,
    /// The filter chains in order.
    pub chains: Vec<Arc<Chain>>,
    /// `default_filter_chain`.
    pub default_chain: Option<Arc<Chain>>,
    /// The resource it was compiled from.
    pub proto: Arc<Listener>,
}

/// One filter chain.
#[derive(Debug)]
pub struct Chain {
    /// The chain's name.
    pub name: String,
    matcher: ChainMatch,
    /// TLS termination (`transport_socket`), when the chain has it.
    pub tls: Option<crate::secrets::ServerTls>,
    /// `envoy.filters.network.rbac` filters ahead of the terminal one, in
    /// order (enforced on the connection's first bytes).
    pub rbac: Vec<Arc<NetworkRbac>>,
    /// What carries the connection.
    pub filter: NetworkFilter,
}

/// The terminal network filter of a chain.
#[derive(Debug)]
pub enum NetworkFilter {
    /// HTTP.
    Http(Arc<Hcm>),
    /// Opaque TCP.
    Tcp(Arc<TcpProxy>),
}

/// A compiled TCP proxy.
#[derive(Debug)]
pub struct TcpProxy {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// Clusters with weights (one cluster: weight 1).
    pub clusters: Vec<(String, u64)>,
    /// Sum of the weights.
    pub total: u64,
    /// `idle_timeout` (Envoy's default 1 h; zero disables).
    pub idle_timeout: Option<Duration>,
}

impl TcpProxy {
    /// The cluster for a connection drawing `random`.
    pub fn cluster(&self, random: u64) -> &str {
        let mut pick = random % self.total.max(1);
        for (name, w) in &self.clusters {
            if pick < *w {
                return name;
            }
            pick -= w;
        }
        &self.clusters[self.clusters.len() - 1].0
    }
}

/// What a connection offers to filter chain matching.
#[derive(Debug, Clone, Copy)]
pub struct ConnFacts<'a> {
    /// The (original) destination.
    pub dst: SocketAddr,
    /// The peer.
    pub src: SocketAddr,
    /// SNI, when TLS was detected.
    pub server_name: Option<&'a str>,
    /// `tls` or `raw_buffer`.
    pub transport: &'a str,
    /// ALPN protocols offered.
    pub alpn: &'a [String],
}

#[derive(Debug, Default)]
struct ChainMatch {
    port: Option<u16>,
    prefixes: Vec<(IpAddr, u8)>,
    server_names: Vec<String>,
    transport: Option<String>,
    alpn: Vec<String>,
    source_prefixes: Vec<(IpAddr, u8)>,
    source_ports: Vec<u16>,
}

impl ListenerConfig {
    /// The chain for a connection: Envoy's order (destination port, then
    /// destination IP by longest prefix, server name, transport protocol,
    /// application protocols, source IP, source port), each step keeping
    /// the most specific candidates; the default chain when none matches.
    pub fn select_chain(&self, facts: &ConnFacts<'_>) -> Option<&Arc<Chain>> {
        let mut cands: Vec<&Arc<Chain>> = self.chains.iter().collect();
        // Destination port.
        let exact: Vec<_> = cands
            .iter()
            .copied()
            .filter(|c| c.matcher.port == Some(facts.dst.port()))
            .collect();
        cands = if exact.is_empty() {
            cands
                .into_iter()
                .filter(|c| c.matcher.port.is_none())
                .collect()
        } else {
            exact
        };
        cands = by_prefix(cands, facts.dst.ip(), |c| &c.matcher.prefixes);
        // Server names: exact, then longest wildcard suffix, then none.
        if let Some(sni) = facts.server_name {
            let exact: Vec<_> = cands
                .iter()
                .copied()
                .filter(|c| {
                    c.matcher
                        .server_names
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(sni))
                })
                .collect();
            cands = if !exact.is_empty() {
                exact
            } else {
                let best = cands
                    .iter()
                    .flat_map(|c| c.matcher.server_names.iter())
                    .filter(|n| wildcard_matches(n, sni))
                    .map(|n| n.len())
                    .max();
                match best {
                    Some(len) => cands
                        .into_iter()
                        .filter(|c| {
                            c.matcher
                                .server_names
                                .iter()
                                .any(|n| n.len() == len && wildcard_matches(n, sni))
                        })
                        .collect(),
                    None => cands
                        .into_iter()
                        .filter(|c| c.matcher.server_names.is_empty())
                        .collect(),
                }
            };
        } else {
            cands.retain(|c| c.matcher.server_names.is_empty());
        }
        // Transport protocol.
        let exact: Vec<_> = cands
            .iter()
            .copied()
            .filter(|c| c.matcher.transport.as_deref() == Some(facts.transport))
            .collect();
        cands = if exact.is_empty() {
            cands
                .into_iter()
                .filter(|c| c.matcher.transport.is_none())
                .collect()
        } else {
            exact
        };
        // Application protocols.
        let exact: Vec<_> = cands
            .iter()
            .copied()
            .filter(|c| c.matcher.alpn.iter().any(|p| facts.alpn.contains(p)))
            .collect();
        cands = if exact.is_empty() {
            cands
                .into_iter()
                .filter(|c| c.matcher.alpn.is_empty())
                .collect()
        } else {
            exact
        };
        cands = by_prefix(cands, facts.src.ip(), |c| &c.matcher.source_prefixes);
        let exact: Vec<_> = cands
            .iter()
            .copied()
            .filter(|c| c.matcher.source_ports.contains(&facts.src.port()))
            .collect();
        cands = if exact.is_empty() {
            cands
                .into_iter()
                .filter(|c| c.matcher.source_ports.is_empty())
                .collect()
        } else {
            exact
        };
        cands.into_iter().next().or(self.default_chain.as_ref())
    }
}

fn by_prefix(
    cands: Vec<&Arc<Chain>>,
    ip: IpAddr,
    get: impl Fn(&Chain) -> &Vec<(IpAddr, u8)>,
) -> Vec<&Arc<Chain>> {
    let best = cands
        .iter()
        .flat_map(|c| get(c).iter())
        .filter(|(net, len)| in_range(ip, *net, *len))
        .map(|(_, len)| *len)
        .max();
    match best {
        Some(len) => cands
            .into_iter()
            .filter(|c| {
                get(c)
                    .iter()
                    .any(|(n, l)| *l == len && in_range(ip, *n, *l))
            })
            .collect(),
        None => cands.into_iter().filter(|c| get(c).is_empty()).collect(),
    }
}

/// Whether `ip` is inside `net/len` (an IPv4-mapped address counts as IPv4).
pub fn in_range(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

fn wildcard_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            name.len() > suffix.len()
                && name
                    .get(name.len() - suffix.len()..)
                    .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
        }
        None => false,
    }
}

/// The LDS [`Handler`](crate::xds::Handler): a listener that does not
/// [`compile`] is NACKed with every reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListenerValidator;

impl crate::xds::Handler<Listener> for ListenerValidator {
    fn validate(&self, _name: &str, resource: &Listener) -> Result<(), String> {
        compile(Arc::new(resource.clone()))
            .map(drop)
            .map_err(|errors| errors.join("; "))
    }
}

/// Compiles a listener; every refusal names its field path.
pub fn compile(proto: Arc<Listener>) -> Result<ListenerConfig, Vec<String>> {
    let mut errors = Vec::new();
    let addr = match proto.address.as_ref().and_then(host_addr) {
        Some(HostAddr::Ip(a)) => a,
        Some(other) => {
            errors.push(format!(
                "field `address`: {other} is not an IP socket address; only TCP listeners on IP addresses are supported"
            ));
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
        None => {
            errors.push("field `address`: missing or not a socket address with a port".into());
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
    };
    let mut original_dst_filter = false;
    let mut tls_inspector = false;
    for (i, lf) in proto.listener_filters.iter().enumerate() {
        let type_url = match &lf.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
            _ => "",
        };
        let name = lf.name.as_str();
        if name.contains("original_dst") || type_url.ends_with(".OriginalDst") {
            original_dst_filter = true;
        } else if name.contains("tls_inspector") || type_url.ends_with(".TlsInspector") {
            tls_inspector = true;
        } else if name.contains("http_inspector") || type_url.ends_with(".HttpInspector") {
            // SNI and ALPN are read when a chain asks for them.
        } else {
            errors.push(format!(
                "field `listener_filters[{i}]` ({name}): listener filter not supported"
            ));
        }
    }
    let mut chains = Vec::new();
    for (i, c) in proto.filter_chains.iter().enumerate() {
        match chain(c, proto.traffic_direction) {
            Ok(c) => chains.push(Arc::new(c)),
            Err(e) => errors.extend(
                e.into_iter()
                    .map(|e| format!("field `filter_chains[{i}]`.{e}")),
            ),
        }
    }
    let default_chain = match &proto.default_filter_chain {
        Some(c) => match chain(c, proto.traffic_direction) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                errors.extend(
                    e.into_iter()
                        .map(|e| format!("field `default_filter_chain`.{e}")),
                );
                None
            }
        },
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let matches_tls = chains.iter().chain(default_chain.iter()).any(|c| {
        c.matcher.transport.is_some()
            || !c.matcher.server_names.is_empty()
            || !c.matcher.alpn.is_empty()
    });
    let inspect = (tls_inspector || matches_tls).then(|| {
        proto
            .listener_filters_timeout
            .as_ref()
            .map(duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(Duration::from_secs(15))
    });
    Ok(ListenerConfig {
        inspect,
        name: proto.name.clone(),
        addr,
        bind: proto.bind_to_port.is_none_or(|b| b.value),
        use_original_dst: proto.use_original_dst.is_some_and(|b| b.value),
        original_dst_filter,
        inbound: proto.traffic_direction == 1,
        chains,
        default_chain,
        proto,
    })
}

fn ranges(list: &[CidrRange], field: &str) -> Result<Vec<(IpAddr, u8)>, String> {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let ip: IpAddr = r.address_prefix.parse().map_err(|_| {
                format!(
                    "filter_chain_match.{field}[{i}]: `{}` is not an IP address",
                    r.address_prefix
                )
            })?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = r.prefix_len.map(|v| v.value).unwrap_or(max);
            if len > max {
                return Err(format!(
                    "filter_chain_match.{field}[{i}]: prefix_len {len} > {max}"
                ));
            }
            Ok((ip, len as u8))
        })
        .collect()
}

fn chain_match(m: &FilterChainMatch) -> Result<ChainMatch, String> {
    if !m.direct_source_prefix_ranges.is_empty() || m.source_type != 0 {
        return Err(
            "filter_chain_match: direct_source_prefix_ranges and source_type not supported".into(),
        );
    }
    if !m.address_suffix.is_empty() || m.suffix_len.is_some() {
        return Err("filter_chain_match: address_suffix not supported".into());
    }
    Ok(ChainMatch {
        port: match m.destination_port {
            Some(p) => Some(u16::try_from(p.value).map_err(|_| {
                format!(
                    "filter_chain_match.destination_port: {} is not a port",
                    p.value
                )
            })?),
            None => None,
        },
        prefixes: ranges(&m.prefix_ranges, "prefix_ranges")?,
        server_names: m.server_names.clone(),
        transport: Some(m.transport_protocol.clone()).filter(|t| !t.is_empty()),
        alpn: m.application_protocols.clone(),
        source_prefixes: ranges(&m.source_prefix_ranges, "source_prefix_ranges")?,
        source_ports: m
            .source_ports
            .iter()
            .map(|p| u16::try_from(*p).unwrap_or(0))
            .collect(),
    })
}

fn chain(c: &FilterChain, direction: i32) -> Result<Chain, Vec<String>> {
    let mut errors = Vec::new();
    let matcher = match c.filter_chain_match.as_ref().map(chain_match) {
        Some(Ok(m)) => m,
        Some(Err(e)) => {
            errors.push(e);
            ChainMatch::default()
        }
        None => ChainMatch::default(),
    };
    let tls = match c.transport_socket.as_ref().map(|t| &t.config_type) {
        None => None,
        Some(Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any,
            ),
        )) => match crate::secrets::server_tls(any) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        Some(None) => {
            errors.push("transport_socket: typed_config missing".into());
            None
        }
    };
    let mut rbac = Vec::new();
    let filter = match c.filters.split_last() {
        None => {
            errors.push("filters: a chain needs an HTTP connection manager or a TCP proxy".into());
            None
        }
        Some((last, before)) => {
            for (i, f) in before.iter().enumerate() {
                match typed(f) {
                    Some(any) if any.type_url == crate::rbac::compile::NETWORK_RBAC_TYPE => {
                        match crate::rbac::network_filter(&any.value) {
                            Ok(r) => rbac.push(Arc::new(r)),
                            Err(e) => errors.extend(
                                e.into_iter()
                                    .map(|e| format!("filters[{i}] ({}): {e}", f.name)),
                            ),
                        }
                    }
                    _ => errors.push(format!(
                        "filters[{i}] ({}): only envoy.filters.network.rbac may precede the HTTP \
                         connection manager or the TCP proxy",
                        f.name
                    )),
                }
            }
            let n = before.len();
            match network_filter(last, direction) {
                Ok(f) => Some(f),
                Err(e) => {
                    errors.extend(e.into_iter().map(|e| format!("filters[{n}].{e}")));
                    None
                }
            }
        }
    };
    match filter {
        Some(filter) if errors.is_empty() => Ok(Chain {
            name: c.name.clone(),
            matcher,
            tls,
            rbac,
            filter,
        }),
        _ => Err(errors),
    }
}

fn typed(f: &Filter) -> Option<&Any> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => Some(any),
        _ => None,
    }
}

fn network_filter(f: &Filter, direction: i32) -> Result<NetworkFilter, Vec<String>> {
    let Some(any) = typed(f) else {
        return Err(vec![format!("typed_config ({}): missing", f.name)]);
    };
    match any.type_url.as_str() {
        HCM_TYPE => {
            let hcm = HttpConnectionManager::decode(any.value.as_slice())
                .map_err(|e| vec![format!("typed_config: {e}")])?;
            hcm::hcm_config(&hcm, direction)
                .map(|h| NetworkFilter::Http(Arc::new(h)))
                .map_err(|e| e.into_iter().map(|e| format!("typed_config.{e}")).collect())
        }
        TCP_PROXY_TYPE => {
            let tp = TcpProxyProto::decode(any.value.as_slice())
                .map_err(|e| vec![format!("typed_config: {e}")])?;
            tcp_config(&tp)
                .map(|t| NetworkFilter::Tcp(Arc::new(t)))
                .map_err(|e| vec![format!("typed_config.{e}")])
        }
        other => Err(vec![format!(
            "typed_config ({}, {other}): network filter not supported",
            f.name
        )]),
    }
}

fn tcp_config(tp: &TcpProxyProto) -> Result<TcpProxy, String> {
    let clusters: Vec<(String, u64)> = match &tp.cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => vec![(c.clone(), 1)],
        Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => w
            .clusters
            .iter()
            .filter(|c| c.weight > 0)
            .map(|c| (c.name.clone(), u64::from(c.weight)))
            .collect(),
        None => return Err("cluster_specifier: missing".into()),
    };
    if clusters.is_empty() {
        return Err("weighted_clusters: no cluster with a weight above zero".into());
    }
    if tp.tunneling_config.is_some() {
        return Err("tunneling_config: not supported".into());
    }
    Ok(TcpProxy {
        stat_prefix: tp.stat_prefix.clone(),
        total: clusters.iter().map(|(_, w)| w).sum(),
        clusters,
        idle_timeout: match &tp.idle_timeout {
            Some(d) => Some(duration(d)).filter(|d| !d.is_zero()),
            None => Some(Duration::from_secs(3600)),
        },
    })
}
