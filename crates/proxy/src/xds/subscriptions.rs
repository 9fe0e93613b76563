//! Which names the held resources reference, as Envoy derives its
//! subscriptions: EDS for the clusters of type EDS
//! (`eds_cluster_config.service_name`, or else the cluster name), RDS for the
//! `route_config_name` of every HttpConnectionManager with `rds` in a
//! listener's filter chains, SDS for the secrets a transport socket's TLS
//! context fetches over ADS (`sds_config: { ads: {} }`; secrets fetched from
//! another SDS server, such as the istio-agent's `sds-grpc`, are not pilot's).
//!
//! The listener and transport-socket walks decode nested `Any`s; a nested
//! config that does not decode makes the resource unusable, so these return
//! the reason and the caller rejects the resource.

use std::collections::BTreeSet;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType as SocketConfig;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType as FilterConfig;
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, UpstreamTlsContext,
};
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// The `ClusterLoadAssignment` name an EDS cluster waits for; `None` for other
/// discovery types.
pub fn eds_name(cluster: &Cluster) -> Option<String> {
    let eds = DiscoveryType::Eds as i32;
    if cluster.cluster_discovery_type != Some(ClusterDiscoveryType::Type(eds)) {
        return None;
    }
    let service = cluster
        .eds_cluster_config
        .as_ref()
        .map(|c| c.service_name.as_str())
        .unwrap_or_default();
    Some(if service.is_empty() {
        cluster.name.clone()
    } else {
        service.to_string()
    })
}

/// The EDS names of `clusters`.
pub fn eds_names<'a>(clusters: impl IntoIterator<Item = &'a Cluster>) -> BTreeSet<String> {
    clusters.into_iter().filter_map(eds_name).collect()
}

fn decode<M: Message + Default + Name>(any: &Any, what: &str) -> Result<M, String> {
    M::decode(any.value.as_slice())
        .map_err(|e| format!("{what} {} does not decode: {e}", M::full_name()))
}

fn chains(listener: &Listener) -> impl Iterator<Item = &FilterChain> {
    listener
        .filter_chains
        .iter()
        .chain(listener.default_filter_chain.as_ref())
}

/// The route configs the listener's HttpConnectionManagers fetch over RDS.
pub fn listener_routes(listener: &Listener) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for chain in chains(listener) {
        for filter in &chain.filters {
            let Some(FilterConfig::TypedConfig(any)) = &filter.config_type else {
                continue;
            };
            if any.type_url != HttpConnectionManager::type_url() {
                continue;
            }
            let what = format!("filter {:?}:", filter.name);
            let hcm: HttpConnectionManager = decode(any, &what)?;
            if let Some(RouteSpecifier::Rds(rds)) = &hcm.route_specifier {
                if rds.route_config_name.is_empty() {
                    return Err(format!(
                        "filter {:?}: rds without route_config_name",
                        filter.name
                    ));
                }
                out.insert(rds.route_config_name.clone());
            }
        }
    }
    Ok(out)
}

/// The RDS names of `listeners`; listeners whose HCMs do not decode add none
/// (they were rejected when they arrived).
pub fn rds_names<'a>(listeners: impl IntoIterator<Item = &'a Listener>) -> BTreeSet<String> {
    listeners
        .into_iter()
        .filter_map(|l| listener_routes(l).ok())
        .flatten()
        .collect()
}

fn ads_secret(config: &SdsSecretConfig, out: &mut BTreeSet<String>) {
    let ads = config.sds_config.as_ref().is_some_and(|s| {
        matches!(
            s.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        )
    });
    if ads && !config.name.is_empty() {
        out.insert(config.name.clone());
    }
}

fn common_secrets(common: &CommonTlsContext, out: &mut BTreeSet<String>) {
    for c in &common.tls_certificate_sds_secret_configs {
        ads_secret(c, out);
    }
    match &common.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(c)) => ads_secret(c, out),
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            if let Some(c) = &c.validation_context_sds_secret_config {
                ads_secret(c, out);
            }
        }
        _ => {}
    }
}

/// The ADS secrets a transport socket's TLS context fetches.
pub fn socket_secrets(socket: &TransportSocket) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    let Some(SocketConfig::TypedConfig(any)) = &socket.config_type else {
        return Ok(out);
    };
    let what = format!("transport socket {:?}:", socket.name);
    let common = if any.type_url == UpstreamTlsContext::type_url() {
        decode::<UpstreamTlsContext>(any, &what)?.common_tls_context
    } else if any.type_url == DownstreamTlsContext::type_url() {
        decode::<DownstreamTlsContext>(any, &what)?.common_tls_context
    } else {
        None
    };
    if let Some(common) = &common {
        common_secrets(common, &mut out);
    }
    Ok(out)
}

/// The ADS secrets of a cluster's transport sockets (including the matches).
pub fn cluster_secrets(cluster: &Cluster) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    let sockets = cluster.transport_socket.iter().chain(
        cluster
            .transport_socket_matches
            .iter()
            .filter_map(|m| m.transport_socket.as_ref()),
    );
    for socket in sockets {
        out.extend(socket_secrets(socket)?);
    }
    Ok(out)
}

/// The ADS secrets of a listener's filter chains.
pub fn listener_secrets(listener: &Listener) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    for chain in chains(listener) {
        if let Some(socket) = &chain.transport_socket {
            out.extend(socket_secrets(socket)?);
        }
    }
    Ok(out)
}

/// The SDS names of `clusters` and `listeners`.
pub fn sds_names<'a>(
    clusters: impl IntoIterator<Item = &'a Cluster>,
    listeners: impl IntoIterator<Item = &'a Listener>,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for c in clusters {
        out.extend(cluster_secrets(c).unwrap_or_default());
    }
    for l in listeners {
        out.extend(listener_secrets(l).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        EdsClusterConfig, TransportSocketMatch,
    };
    use envoy_types::pb::envoy::config::core::v3::{
        AggregatedConfigSource, ApiConfigSource, ConfigSource,
    };
    use envoy_types::pb::envoy::config::listener::v3::Filter;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::CombinedCertificateValidationContext;

    fn any<M: Message + Name>(m: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }
    }

    fn cluster(name: &str, kind: DiscoveryType, service: Option<&str>) -> Cluster {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind as i32)),
            eds_cluster_config: service.map(|s| EdsClusterConfig {
                service_name: s.into(),
                eds_config: None,
            }),
            ..Default::default()
        }
    }

    fn hcm_filter(spec: RouteSpecifier) -> Filter {
        let hcm = HttpConnectionManager {
            stat_prefix: "x".into(),
            route_specifier: Some(spec),
            ..Default::default()
        };
        Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(FilterConfig::TypedConfig(any(&hcm))),
        }
    }

    fn rds(name: &str) -> RouteSpecifier {
        RouteSpecifier::Rds(Rds {
            route_config_name: name.into(),
            config_source: None,
        })
    }

    fn sds(name: &str, ads: bool) -> SdsSecretConfig {
        let spec = if ads {
            ConfigSourceSpecifier::Ads(AggregatedConfigSource {})
        } else {
            ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource::default())
        };
        SdsSecretConfig {
            name: name.into(),
            sds_config: Some(ConfigSource {
                config_source_specifier: Some(spec),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn eds_names_come_from_eds_clusters_service_name_or_name() {
        let clusters = [
            cluster("outbound|9080||a", DiscoveryType::Eds, Some("svc-a")),
            cluster("outbound|9080||b", DiscoveryType::Eds, None),
            cluster("outbound|9080||c", DiscoveryType::Eds, Some("")),
            cluster("dns", DiscoveryType::StrictDns, None),
            cluster("static", DiscoveryType::Static, Some("ignored")),
            Cluster {
                name: "no-type".into(),
                ..Default::default()
            },
        ];
        let names: Vec<String> = eds_names(&clusters).into_iter().collect();
        assert_eq!(names, ["outbound|9080||b", "outbound|9080||c", "svc-a"]);
    }

    #[test]
    fn rds_names_come_from_hcms_with_rds_in_every_chain() {
        let listener = Listener {
            name: "0.0.0.0_9080".into(),
            filter_chains: vec![
                FilterChain {
                    filters: vec![hcm_filter(rds("9080"))],
                    ..Default::default()
                },
                FilterChain {
                    filters: vec![
                        Filter {
                            name: "tcp".into(),
                            config_type: None,
                        },
                        hcm_filter(RouteSpecifier::RouteConfig(Default::default())),
                    ],
                    ..Default::default()
                },
            ],
            default_filter_chain: Some(FilterChain {
                filters: vec![hcm_filter(rds("default-routes"))],
                ..Default::default()
            }),
            ..Default::default()
        };
        let names: Vec<String> = rds_names([&listener]).into_iter().collect();
        assert_eq!(names, ["9080", "default-routes"]);
    }

    #[test]
    fn a_listener_whose_hcm_does_not_decode_is_unusable() {
        let listener = Listener {
            name: "bad".into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "hcm".into(),
                    config_type: Some(FilterConfig::TypedConfig(Any {
                        type_url: HttpConnectionManager::type_url(),
                        value: vec![0xff, 0xff, 0xff],
                    })),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = listener_routes(&listener).unwrap_err();
        assert!(err.contains("\"hcm\""), "{err}");
        assert!(rds_names([&listener]).is_empty());
    }

    #[test]
    fn sds_names_are_the_ads_secrets_of_tls_contexts() {
        let upstream = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: vec![
                    sds("kubernetes://cert", true),
                    sds("default", false),
                ],
                validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        validation_context_sds_secret_config: Some(sds(
                            "kubernetes://cert-cacert",
                            true,
                        )),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        };
        let downstream = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                validation_context_type: Some(
                    ValidationContextType::ValidationContextSdsSecretConfig(sds("gw-ca", true)),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let socket = |m: Any| TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(SocketConfig::TypedConfig(m)),
        };
        let cluster = Cluster {
            name: "c".into(),
            transport_socket_matches: vec![TransportSocketMatch {
                name: "tlsMode-istio".into(),
                transport_socket: Some(socket(any(&upstream))),
                ..Default::default()
            }],
            ..Default::default()
        };
        let listener = Listener {
            name: "l".into(),
            filter_chains: vec![FilterChain {
                transport_socket: Some(socket(any(&downstream))),
                ..Default::default()
            }],
            ..Default::default()
        };
        let names: Vec<String> = sds_names([&cluster], [&listener]).into_iter().collect();
        assert_eq!(
            names,
            ["gw-ca", "kubernetes://cert", "kubernetes://cert-cacert"]
        );
        let bad = Cluster {
            name: "bad".into(),
            transport_socket: Some(socket(Any {
                type_url: UpstreamTlsContext::type_url(),
                value: vec![0x0a, 0x05],
            })),
            ..Default::default()
        };
        assert!(cluster_secrets(&bad).is_err());
    }
}
