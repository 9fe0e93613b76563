//! LDS: a sidecar's capture listeners ([`sidecar`]: `virtualOutbound` on
//! 15001, one `0.0.0.0_PORT` per outbound port, `virtualInbound` on 15006) or a
//! gateway's server listeners ([`gateway`]: one `0.0.0.0_PORT` per port of the
//! Gateways that select it, servers merged by [`servers`]).
//!
//! The network filters they share are built here: the HTTP connection manager
//! (RDS over ADS or an inline route table; HTTP filters fault, CORS, router,
//! router last, with the authentication and authorization filters of
//! [`crate::xds::authz`] ahead of them on inbound and gateway chains) and the
//! TCP proxy.

use common::istio::types::Duration as IstioDuration;
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds,
    http_connection_manager::{PathWithEscapedSlashesAction, RouteSpecifier, UpgradeConfig},
    http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy,
    tcp_proxy::{ClusterSpecifier, WeightedCluster, weighted_cluster::ClusterWeight},
};

use crate::model::Snapshot;
use crate::proxy::{Proxy, ProxyKind};
use crate::xds::route::scope::Scope;
use crate::xds::route::translate::{CORS_FILTER, FAULT_FILTER};
use crate::xds::route::util::{ads, any, boolv, istio_duration, u32v};
use crate::xds::{LISTENER, NamedResource};

mod gateway;
pub(crate) mod mtls;
pub mod servers;
mod sidecar;

/// Envoy's HTTP connection manager filter name.
pub const HCM_FILTER: &str = "envoy.filters.network.http_connection_manager";
/// Envoy's TCP proxy filter name.
pub const TCP_PROXY_FILTER: &str = "envoy.filters.network.tcp_proxy";
/// Envoy's router filter name.
pub const ROUTER_FILTER: &str = "envoy.filters.http.router";

/// The listeners of `proxy`, encoded.
pub fn generate(snapshot: &Snapshot, proxy: &Proxy) -> Vec<NamedResource> {
    listeners(snapshot, proxy)
        .into_iter()
        .map(|l| NamedResource::new(l.name.clone(), LISTENER, &l))
        .collect()
}

/// The listeners of `proxy`, in a stable order.
pub fn listeners(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Listener> {
    let scope = Scope::new(snapshot, proxy);
    match proxy.kind {
        ProxyKind::Sidecar => sidecar::listeners(&scope),
        ProxyKind::Router => gateway::listeners(&scope),
    }
}

/// The RDS names the proxy's listeners refer to, in listener order, once each.
pub fn rds_names(snapshot: &Snapshot, proxy: &Proxy) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in listeners(snapshot, proxy) {
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
                    continue;
                };
                if f.name != HCM_FILTER {
                    continue;
                }
                let Ok(hcm) = <HttpConnectionManager as prost::Message>::decode(a.value.as_slice())
                else {
                    continue;
                };
                if let Some(RouteSpecifier::Rds(rds)) = hcm.route_specifier
                    && !out.contains(&rds.route_config_name)
                {
                    out.push(rds.route_config_name);
                }
            }
        }
    }
    out
}

/// `BIND:PORT` as a listener address: an IP, or a Unix socket for
/// `unix://PATH`; `None` (and a warning) for anything else.
fn bind_address(
    bind: &str,
    port: u32,
) -> Option<envoy_types::pb::envoy::config::core::v3::Address> {
    if let Some(path) = bind.strip_prefix("unix://") {
        return Some(crate::xds::route::util::pipe_address(path));
    }
    if bind.parse::<std::net::IpAddr>().is_ok() {
        return Some(crate::xds::route::util::socket_address(bind, port));
    }
    tracing::warn!(
        bind,
        port,
        "listener bind is neither an IP nor unix://; listener left out"
    );
    None
}

/// Where an HTTP connection manager gets its routes.
#[derive(Debug, Clone)]
pub enum Routes {
    /// RDS over ADS, by name.
    Rds(String),
    /// An inline route table (inbound chains).
    Inline(Box<RouteConfiguration>),
}

/// The HTTP connection manager: `stat_prefix`, routes, HTTP filters
/// (`fault`, `cors` when `outbound`, then `router`), `use_remote_address` for
/// gateways (the edge), path normalization and websocket upgrades as Istio.
pub fn http_connection_manager(
    stat_prefix: &str,
    routes: Routes,
    edge: bool,
    outbound: bool,
) -> Filter {
    http_connection_manager_with(stat_prefix, routes, edge, outbound, Vec::new())
}

/// As [`http_connection_manager`], with `first` (authorization) ahead of the
/// other HTTP filters, as Istio orders them.
pub fn http_connection_manager_with(
    stat_prefix: &str,
    routes: Routes,
    edge: bool,
    outbound: bool,
    first: Vec<HttpFilter>,
) -> Filter {
    let mut http_filters = first;
    if outbound {
        http_filters.push(http_filter(FAULT_FILTER, any(&HttpFault::default())));
        http_filters.push(http_filter(CORS_FILTER, any(&Cors {})));
    }
    http_filters.push(http_filter(ROUTER_FILTER, any(&Router::default())));
    let route_specifier = match routes {
        Routes::Rds(name) => RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name,
        }),
        Routes::Inline(rc) => RouteSpecifier::RouteConfig(*rc),
    };
    let hcm = HttpConnectionManager {
        stat_prefix: stat_prefix.to_string(),
        route_specifier: Some(route_specifier),
        http_filters,
        use_remote_address: boolv(edge),
        normalize_path: boolv(true),
        path_with_escaped_slashes_action: PathWithEscapedSlashesAction::KeepUnchanged as i32,
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    network_filter(HCM_FILTER, any(&hcm))
}

/// An HTTP filter with a typed config.
pub(crate) fn http_filter(
    name: &str,
    config: envoy_types::pb::google::protobuf::Any,
) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// A network filter with a typed config.
pub(crate) fn network_filter(name: &str, config: envoy_types::pb::google::protobuf::Any) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

/// A TCP proxy to one cluster, or weighted over several (weights > 0).
pub fn tcp_proxy(
    stat_prefix: &str,
    clusters: &[(String, u32)],
    idle_timeout: Option<&IstioDuration>,
) -> Filter {
    let cluster_specifier = match clusters {
        [(one, _)] => ClusterSpecifier::Cluster(one.clone()),
        many => ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: many
                .iter()
                .map(|(name, weight)| ClusterWeight {
                    name: name.clone(),
                    weight: (*weight).max(1),
                    ..Default::default()
                })
                .collect(),
        }),
    };
    let proxy = TcpProxy {
        stat_prefix: stat_prefix.to_string(),
        cluster_specifier: Some(cluster_specifier),
        idle_timeout: idle_timeout.map(istio_duration),
        ..Default::default()
    };
    network_filter(TCP_PROXY_FILTER, any(&proxy))
}

/// A filter chain with one network filter.
pub fn chain(
    name: &str,
    filter_chain_match: Option<FilterChainMatch>,
    filter: Filter,
) -> FilterChain {
    FilterChain {
        name: name.to_string(),
        filter_chain_match,
        filters: vec![filter],
        ..Default::default()
    }
}

/// `envoy.filters.listener.tls_inspector` (SNI for `server_names` matches).
pub fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &TlsInspector::default(),
        ))),
        ..Default::default()
    }
}

/// `envoy.filters.listener.original_dst` (the pre-redirect destination).
pub fn original_dst() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.original_dst".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(
            &OriginalDst::default(),
        ))),
        ..Default::default()
    }
}

/// A CIDR range for an address (`/32` or `/128`) or a CIDR block; `None`
/// for anything else.
pub fn host_range(ip: &str) -> Option<CidrRange> {
    let (addr, len) = match ip.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u32>().ok()?)),
        None => (ip, None),
    };
    let parsed: std::net::IpAddr = addr.parse().ok()?;
    let max = if parsed.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(max);
    if len > max {
        return None;
    }
    Some(CidrRange {
        address_prefix: addr.to_string(),
        prefix_len: u32v(len),
    })
}

#[cfg(test)]
mod tests;
