//! Reading a CDS `Cluster` (and its addresses) into the pieces a compiled
//! [`Cluster`](super::Cluster) is made of: discovery type, balancer settings,
//! HTTP protocol options, circuit breakers, TLS origination.

use super::*;

/// The EDS name of a cluster: `eds_cluster_config.service_name`, else its name.
pub fn eds_name(proto: &ClusterProto) -> Option<&str> {
    match proto.cluster_discovery_type {
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::Eds as i32 => Some(
            proto
                .eds_cluster_config
                .as_ref()
                .map(|c| c.service_name.as_str())
                .filter(|s| !s.is_empty())
                .unwrap_or(&proto.name),
        ),
        _ => None,
    }
}

pub(super) fn discovery(proto: &ClusterProto) -> Result<Discovery, String> {
    let t = match proto.cluster_discovery_type {
        None => DiscoveryType::Static,
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(t)
            .map_err(|_| format!("field `type`: unknown discovery type {t}"))?,
        Some(ClusterDiscoveryType::ClusterType(ref c)) => {
            return Err(format!(
                "field `cluster_type`: custom cluster type {} not supported",
                c.name
            ));
        }
    };
    Ok(match t {
        DiscoveryType::Static | DiscoveryType::Eds => Discovery::Static,
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns => Discovery::Dns,
        DiscoveryType::OriginalDst => Discovery::OriginalDst,
    })
}

pub(super) fn balancer_config(proto: &ClusterProto) -> Result<BalancerConfig, String> {
    let policy = LbPolicy::try_from(proto.lb_policy)
        .map_err(|_| format!("field `lb_policy`: unknown policy {}", proto.lb_policy))?;
    let policy = match policy {
        LbPolicy::RoundRobin | LbPolicy::ClusterProvided => Policy::RoundRobin,
        LbPolicy::Random => Policy::Random,
        LbPolicy::LeastRequest => Policy::LeastRequest {
            choice_count: match &proto.lb_config {
                Some(LbConfig::LeastRequestLbConfig(c)) => {
                    c.choice_count.map(|v| v.value).unwrap_or(2).max(2)
                }
                _ => 2,
            },
        },
        LbPolicy::RingHash => {
            let (min, max) = match &proto.lb_config {
                Some(LbConfig::RingHashLbConfig(c)) => (
                    c.minimum_ring_size.map(|v| v.value).unwrap_or(1024),
                    c.maximum_ring_size
                        .map(|v| v.value)
                        .unwrap_or(8 * 1024 * 1024),
                ),
                _ => (1024, 8 * 1024 * 1024),
            };
            Policy::RingHash {
                minimum_ring_size: min,
                maximum_ring_size: max,
            }
        }
        LbPolicy::Maglev => Policy::Maglev {
            table_size: match &proto.lb_config {
                Some(LbConfig::MaglevLbConfig(c)) => {
                    c.table_size.map(|v| v.value).unwrap_or(65_537)
                }
                _ => 65_537,
            },
        },
        LbPolicy::LoadBalancingPolicyConfig => {
            return Err(
                "field `load_balancing_policy`: typed load balancing policies not supported; \
                 use lb_policy"
                    .into(),
            );
        }
    };
    let common = proto.common_lb_config.as_ref();
    Ok(BalancerConfig {
        policy,
        panic_threshold: common
            .and_then(|c| c.healthy_panic_threshold.as_ref())
            .map(|p| p.value)
            .unwrap_or(50.0),
        locality_weighted: matches!(
            common.and_then(|c| c.locality_config_specifier.as_ref()),
            Some(common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(_))
        ),
    })
}

// The deprecated cluster-level fields are still honoured, as Envoy does.
#[allow(deprecated)]
pub(super) fn protocol_options(
    proto: &ClusterProto,
) -> Result<(UpstreamProtocol, Duration, Option<u32>), String> {
    let mut protocol = if proto.http2_protocol_options.is_some() {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Http1
    };
    let mut idle = Duration::from_secs(3600);
    let mut max_per_conn = proto.max_requests_per_connection.map(|v| v.value);
    if let Some(any) = proto
        .typed_extension_protocol_options
        .get(HTTP_PROTOCOL_OPTIONS)
    {
        let options = HttpProtocolOptions::decode(any.value.as_slice()).map_err(|e| {
            format!("field `typed_extension_protocol_options[{HTTP_PROTOCOL_OPTIONS}]`: {e}")
        })?;
        if let Some(common) = &options.common_http_protocol_options {
            if let Some(d) = &common.idle_timeout {
                idle = duration(d);
            }
            if let Some(v) = common.max_requests_per_connection {
                max_per_conn = Some(v.value);
            }
        }
        protocol = match options.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
                Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                    return Err("HTTP/3 upstreams not supported".into());
                }
                _ => UpstreamProtocol::Http1,
            },
            Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
                UpstreamProtocol::Downstream
            }
            Some(UpstreamProtocolOptions::AutoConfig(_)) => UpstreamProtocol::Downstream,
            None => protocol,
        };
    }
    Ok((protocol, idle, max_per_conn.filter(|v| *v > 0)))
}

pub(super) fn limits(proto: &ClusterProto) -> Limits {
    let mut l = Limits::default();
    let Some(t) = proto.circuit_breakers.as_ref().and_then(|cb| {
        cb.thresholds
            .iter()
            .find(|t| t.priority == 0)
            .or(cb.thresholds.first())
    }) else {
        return l;
    };
    let v = |f: &Option<envoy_types::pb::google::protobuf::UInt32Value>, d: u64| {
        f.map(|x| u64::from(x.value)).unwrap_or(d)
    };
    let circuit_breakers::Thresholds {
        max_connections,
        max_pending_requests,
        max_requests,
        max_retries,
        ..
    } = t;
    l.max_connections = v(max_connections, l.max_connections);
    l.max_pending_requests = v(max_pending_requests, l.max_pending_requests);
    l.max_requests = v(max_requests, l.max_requests);
    l.max_retries = v(max_retries, l.max_retries);
    l
}

/// The destination service of an Istio cluster name: for
/// `outbound|9080|v1|reviews.default.svc.cluster.local`, the host, `reviews`
/// and `default`.
pub fn service_of(cluster: &str) -> (String, String, String) {
    let mut parts = cluster.split('|');
    match (parts.next(), parts.nth(2)) {
        (Some("outbound"), Some(host)) if !host.is_empty() => {
            let mut labels = host.split('.');
            let name = labels.next().unwrap_or_default().to_string();
            let namespace = labels.next().unwrap_or_default().to_string();
            (host.to_string(), name, namespace)
        }
        _ => Default::default(),
    }
}

/// A host address from an Envoy `Address`.
pub fn host_addr(a: &Address) -> Option<HostAddr> {
    match a.address.as_ref()? {
        address::Address::SocketAddress(s) => {
            let port = match s.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => u16::try_from(p).ok()?,
                _ => return None,
            };
            Some(match s.address.parse::<IpAddr>() {
                Ok(ip) => HostAddr::Ip(SocketAddr::new(ip, port)),
                Err(_) => HostAddr::Name(s.address.clone(), port),
            })
        }
        address::Address::Pipe(p) => Some(HostAddr::Pipe(PathBuf::from(&p.path))),
        _ => None,
    }
}

pub(super) fn client_tls(
    proto: &ClusterProto,
) -> Result<Option<crate::secrets::ClientTls>, String> {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    match proto.transport_socket.as_ref().map(|t| &t.config_type) {
        None => Ok(None),
        Some(Some(ConfigType::TypedConfig(any))) => crate::secrets::client_tls(any).map(Some),
        Some(None) => Err("transport_socket: typed_config missing".into()),
    }
}

/// The cluster's `transport_socket_matches`, compiled.
pub(super) fn socket_matches(proto: &ClusterProto) -> Result<Vec<super::SocketMatch>, String> {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    proto
        .transport_socket_matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("transport_socket_matches[{i}] ({})", m.name);
            let tls = match m
                .transport_socket
                .as_ref()
                .map(|t| (&t.name, &t.config_type))
            {
                None => None,
                Some((_, Some(ConfigType::TypedConfig(any))))
                    if any.type_url.ends_with(".RawBuffer") =>
                {
                    None
                }
                Some((_, Some(ConfigType::TypedConfig(any)))) => {
                    Some(crate::secrets::client_tls(any).map_err(|e| format!("{at}: {e}"))?)
                }
                Some((name, None)) if name.contains("raw_buffer") => None,
                Some((_, None)) => {
                    return Err(format!("{at}: transport_socket: typed_config missing"));
                }
            };
            let criteria = m
                .r#match
                .as_ref()
                .map(|s| {
                    s.fields
                        .iter()
                        .map(|(k, v)| (k.clone(), struct_value(v)))
                        .collect()
                })
                .unwrap_or_default();
            Ok(super::SocketMatch {
                name: m.name.clone(),
                criteria,
                tls,
            })
        })
        .collect()
}

/// The first entry of `matches` whose criteria the endpoint's
/// `envoy.transport_socket_match` metadata meets, as Envoy picks it.
pub(super) fn select_socket(
    matches: &[super::SocketMatch],
    metadata: Option<&envoy_types::pb::envoy::config::core::v3::Metadata>,
) -> Option<usize> {
    if matches.is_empty() {
        return None;
    }
    let fields = metadata
        .and_then(|m| m.filter_metadata.get("envoy.transport_socket_match"))
        .map(|s| &s.fields);
    matches.iter().position(|m| {
        m.criteria.iter().all(|(k, v)| {
            fields
                .and_then(|f| f.get(k))
                .is_some_and(|actual| struct_value(actual) == *v)
        })
    })
}

/// A protobuf `Value` in a comparable form.
fn struct_value(v: &envoy_types::pb::google::protobuf::Value) -> String {
    use envoy_types::pb::google::protobuf::value::Kind;
    match &v.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        Some(Kind::BoolValue(b)) => b.to_string(),
        Some(Kind::NumberValue(n)) => n.to_string(),
        Some(Kind::NullValue(_)) | None => "null".into(),
        Some(other) => format!("{other:?}"),
    }
}

/// A protobuf duration as a std one (negative → zero).
pub fn duration(d: &envoy_types::pb::google::protobuf::Duration) -> Duration {
    Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)
}

#[cfg(test)]
mod socket_match_tests {
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

    use super::select_socket;
    use crate::cluster::SocketMatch;

    fn entry(name: &str, criteria: &[(&str, &str)]) -> SocketMatch {
        SocketMatch {
            name: name.into(),
            criteria: criteria
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tls: None,
        }
    }

    fn metadata(fields: &[(&str, &str)]) -> Metadata {
        let s = Struct {
            fields: fields
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value {
                            kind: Some(Kind::StringValue(v.to_string())),
                        },
                    )
                })
                .collect(),
        };
        Metadata {
            filter_metadata: [("envoy.transport_socket_match".to_string(), s)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn endpoints_pick_the_first_entry_their_metadata_meets() {
        // Istio's auto mTLS: mTLS for `tlsMode: istio`, plain text otherwise.
        let matches = [
            entry("tlsMode-istio", &[("tlsMode", "istio")]),
            entry("tlsMode-disabled", &[]),
        ];
        assert_eq!(
            select_socket(&matches, Some(&metadata(&[("tlsMode", "istio")]))),
            Some(0)
        );
        assert_eq!(
            select_socket(&matches, Some(&metadata(&[("tlsMode", "disabled")]))),
            Some(1)
        );
        assert_eq!(select_socket(&matches, None), Some(1));
        // No entry matches: the cluster's own transport socket.
        assert_eq!(select_socket(&matches[..1], None), None);
        assert_eq!(
            select_socket(&[], Some(&metadata(&[("tlsMode", "istio")]))),
            None
        );
    }
}
