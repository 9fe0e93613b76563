//! JSON rendering of the generated xDS fields under review, for insta snapshots:
//! what is set, decoded from its typed config, with empty values pruned.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    self as core, address, config_source, data_source, grpc_service, socket_address,
    transport_socket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    self as route, RouteConfiguration, header_matcher, query_parameter_matcher, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf::{Any, Duration};
use prost::Message;
use serde_json::{Value as Json, json};

pub fn dur(d: &Option<Duration>) -> Json {
    match d {
        None => Json::Null,
        Some(d) if d.nanos == 0 => json!(format!("{}s", d.seconds)),
        Some(d) => json!(format!("{}s", d.seconds as f64 + f64::from(d.nanos) / 1e9)),
    }
}

pub fn addr(a: &Option<core::Address>) -> Json {
    match a.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => match sa.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => {
                json!(format!("{}:{p}", sa.address))
            }
            _ => json!(sa.address),
        },
        Some(address::Address::Pipe(p)) => json!(format!("unix://{}", p.path)),
        _ => Json::Null,
    }
}

pub fn fraction(f: &Option<FractionalPercent>) -> Json {
    f.as_ref()
        .map(|f| {
            let denominator = ["HUNDRED", "TEN_THOUSAND", "MILLION"]
                .get(f.denominator as usize)
                .copied()
                .unwrap_or("?");
            json!(format!("{}/{denominator}", f.numerator))
        })
        .unwrap_or(Json::Null)
}

pub fn string_match(m: &StringMatcher) -> Json {
    match &m.match_pattern {
        Some(string_matcher::MatchPattern::Exact(s)) => json!({"exact": s}),
        Some(string_matcher::MatchPattern::Prefix(s)) => json!({"prefix": s}),
        Some(string_matcher::MatchPattern::Suffix(s)) => json!({"suffix": s}),
        Some(string_matcher::MatchPattern::SafeRegex(r)) => json!({"regex": r.regex}),
        Some(string_matcher::MatchPattern::Contains(s)) => json!({"contains": s}),
        _ => json!("?"),
    }
}

/// Drops nulls, empty arrays/objects and `false` so snapshots show what is set.
pub fn prune(v: Json) -> Json {
    match v {
        Json::Object(m) => Json::Object(
            m.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| {
                    !(v.is_null()
                        || v == &Json::Bool(false)
                        || v.as_array().is_some_and(|a| a.is_empty())
                        || v.as_object().is_some_and(|o| o.is_empty())
                        || v.as_str() == Some(""))
                })
                .collect(),
        ),
        Json::Array(a) => Json::Array(a.into_iter().map(prune).collect()),
        other => other,
    }
}

pub fn decode_any<M: Message + Default>(a: &Any) -> M {
    M::decode(a.value.as_slice()).unwrap()
}

pub fn common_tls(c: &Option<CommonTlsContext>) -> Json {
    let Some(c) = c else { return Json::Null };
    let source = |d: &Option<core::DataSource>| match d.as_ref().and_then(|d| d.specifier.as_ref())
    {
        Some(data_source::Specifier::Filename(f)) => json!(format!("file:{f}")),
        Some(data_source::Specifier::InlineString(_)) => json!("inline"),
        _ => Json::Null,
    };
    let sans = |v: &[envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SubjectAltNameMatcher]| {
        v.iter()
            .map(|s| json!(format!("{}:{}", s.san_type, string_match(s.matcher.as_ref().unwrap())["exact"].as_str().unwrap_or("?"))))
            .collect::<Vec<_>>()
    };
    let validation = match &c.validation_context_type {
        Some(common_tls_context::ValidationContextType::ValidationContext(v)) => {
            json!({"trusted_ca": source(&v.trusted_ca), "sans": sans(&v.match_typed_subject_alt_names)})
        }
        Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) => json!({
            "sds": v.validation_context_sds_secret_config.as_ref().map(|s| s.name.clone()),
            "sans": v.default_validation_context.as_ref().map(|d| sans(&d.match_typed_subject_alt_names)),
        }),
        _ => Json::Null,
    };
    json!({
        "certificates": c.tls_certificates.iter().map(|t| json!([source(&t.certificate_chain), source(&t.private_key)])).collect::<Vec<_>>(),
        "sds_certificates": c.tls_certificate_sds_secret_configs.iter().map(|s| {
            let source = match s.sds_config.as_ref().and_then(|c| c.config_source_specifier.as_ref()) {
                Some(config_source::ConfigSourceSpecifier::Ads(_)) => "ads".to_string(),
                Some(config_source::ConfigSourceSpecifier::ApiConfigSource(a)) => match a.grpc_services.first().and_then(|g| g.target_specifier.as_ref()) {
                    Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) => e.cluster_name.clone(),
                    _ => "?".into(),
                },
                _ => "?".into(),
            };
            json!(format!("{}@{source}", s.name))
        }).collect::<Vec<_>>(),
        "validation": validation,
        "alpn": c.alpn_protocols,
        "tls_params": c.tls_params.as_ref().map(|p| json!([p.tls_minimum_protocol_version, p.tls_maximum_protocol_version])),
    })
}

pub fn transport(t: &Option<core::TransportSocket>) -> Json {
    let Some(t) = t else { return Json::Null };
    let Some(transport_socket::ConfigType::TypedConfig(a)) = &t.config_type else {
        return json!(t.name);
    };
    if a.type_url.ends_with("UpstreamTlsContext") {
        let u: UpstreamTlsContext = decode_any(a);
        json!({"upstream_tls": {"sni": u.sni, "common": common_tls(&u.common_tls_context)}})
    } else if a.type_url.ends_with("DownstreamTlsContext") {
        let d: DownstreamTlsContext = decode_any(a);
        json!({"downstream_tls": {
            "require_client_certificate": d.require_client_certificate.map(|b| b.value),
            "common": common_tls(&d.common_tls_context),
        }})
    } else {
        json!(a.type_url)
    }
}

pub fn render_cluster(c: &Cluster) -> Json {
    let discovery = match c.cluster_discovery_type {
        Some(cluster::ClusterDiscoveryType::Type(t)) => cluster::DiscoveryType::try_from(t)
            .map(|t| t.as_str_name().to_string())
            .unwrap_or_default(),
        _ => String::new(),
    };
    let thresholds = c.circuit_breakers.as_ref().and_then(|cb| cb.thresholds.first()).map(|t| {
        let v = |x: &Option<envoy_types::pb::google::protobuf::UInt32Value>| match x {
            Some(v) if v.value == u32::MAX => json!("max"),
            Some(v) => json!(v.value),
            None => Json::Null,
        };
        json!({"max_connections": v(&t.max_connections), "max_pending_requests": v(&t.max_pending_requests),
               "max_requests": v(&t.max_requests), "max_retries": v(&t.max_retries)})
    });
    let options = c.typed_extension_protocol_options.values().next().map(|a| {
        let o: HttpProtocolOptions = decode_any(a);
        let protocol = match &o.upstream_protocol_options {
            Some(http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match e.protocol_config {
                Some(http_protocol_options::explicit_http_config::ProtocolConfig::Http2ProtocolOptions(_)) => "http2",
                _ => "http1",
            },
            Some(http_protocol_options::UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => "downstream",
            _ => "?",
        };
        let common = o.common_http_protocol_options.as_ref().map(|h| json!({
            "idle_timeout": dur(&h.idle_timeout),
            "max_requests_per_connection": h.max_requests_per_connection.map(|v| v.value),
            "max_connection_duration": dur(&h.max_connection_duration),
        }));
        json!({"protocol": protocol, "common": common})
    });
    let outlier = c.outlier_detection.as_ref().map(|o| json!({
        "consecutive_5xx": o.consecutive_5xx.map(|v| v.value),
        "consecutive_gateway_failure": o.consecutive_gateway_failure.map(|v| v.value),
        "enforcing_consecutive_gateway_failure": o.enforcing_consecutive_gateway_failure.map(|v| v.value),
        "interval": dur(&o.interval),
        "base_ejection_time": dur(&o.base_ejection_time),
        "max_ejection_percent": o.max_ejection_percent.map(|v| v.value),
    }));
    let lb_config = match &c.lb_config {
        Some(cluster::LbConfig::RingHashLbConfig(r)) => {
            json!({"ring_hash_minimum": r.minimum_ring_size.map(|v| v.value)})
        }
        Some(cluster::LbConfig::MaglevLbConfig(m)) => {
            json!({"maglev_table_size": m.table_size.map(|v| v.value)})
        }
        _ => Json::Null,
    };
    prune(json!({
        "name": c.name,
        "type": discovery,
        "eds_service_name": c.eds_cluster_config.as_ref().map(|e| e.service_name.clone()),
        "connect_timeout": dur(&c.connect_timeout),
        "lb_policy": cluster::LbPolicy::try_from(c.lb_policy).map(|p| p.as_str_name()).unwrap_or("?"),
        "lb_config": lb_config,
        "circuit_breakers": thresholds,
        "outlier_detection": outlier,
        "healthy_panic_threshold": c.common_lb_config.as_ref().and_then(|l| l.healthy_panic_threshold).map(|p| p.value),
        "http_protocol_options": options,
        "transport_socket": transport(&c.transport_socket),
        "load_assignment": c.load_assignment.as_ref().map(render_cla),
        "upstream_bind": c.upstream_bind_config.as_ref().and_then(|b| b.source_address.as_ref()).map(|s| s.address.clone()),
        "tcp_keepalive": c.upstream_connection_options.as_ref().and_then(|u| u.tcp_keepalive.as_ref()).map(|k| json!([
            k.keepalive_probes.map(|v| v.value), k.keepalive_time.map(|v| v.value), k.keepalive_interval.map(|v| v.value)
        ])),
    }))
}

pub fn render_cla(cla: &ClusterLoadAssignment) -> Json {
    prune(json!({
        "cluster_name": cla.cluster_name,
        "localities": cla.endpoints.iter().map(|l| json!({
            "locality": l.locality.as_ref().map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone)),
            "weight": l.load_balancing_weight.map(|w| w.value),
            "endpoints": l.lb_endpoints.iter().map(|e| {
                let a = match &e.host_identifier {
                    Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => addr(&ep.address),
                    _ => Json::Null,
                };
                json!({
                    "address": a,
                    "health": core::HealthStatus::try_from(e.health_status).map(|h| h.as_str_name()).unwrap_or("?"),
                    "weight": e.load_balancing_weight.map(|w| w.value),
                    "tls_mode": e.metadata.as_ref().is_some_and(|m| m.filter_metadata.contains_key("envoy.transport_socket_match")),
                })
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
}

pub fn render_filter(f: &envoy_types::pb::envoy::config::listener::v3::Filter) -> Json {
    let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        return json!(f.name);
    };
    if a.type_url.ends_with("HttpConnectionManager") {
        let h: HttpConnectionManager = decode_any(a);
        let routes = match &h.route_specifier {
            Some(RouteSpecifier::Rds(r)) => json!({"rds": r.route_config_name}),
            Some(RouteSpecifier::RouteConfig(rc)) => json!({"inline": render_route_config(rc)}),
            _ => Json::Null,
        };
        json!({"http_connection_manager": {
            "stat_prefix": h.stat_prefix,
            "routes": routes,
            "http_filters": h.http_filters.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
            "use_remote_address": h.use_remote_address.map(|b| b.value),
            "normalize_path": h.normalize_path.map(|b| b.value),
            "upgrades": h.upgrade_configs.iter().map(|u| u.upgrade_type.clone()).collect::<Vec<_>>(),
        }})
    } else if a.type_url.ends_with("TcpProxy") {
        let t: TcpProxy = decode_any(a);
        let to = match &t.cluster_specifier {
            Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => json!(c),
            Some(tcp_proxy::ClusterSpecifier::WeightedClusters(w)) => json!(
                w.clusters
                    .iter()
                    .map(|c| json!([c.name, c.weight]))
                    .collect::<Vec<_>>()
            ),
            None => Json::Null,
        };
        json!({"tcp_proxy": {"stat_prefix": t.stat_prefix, "cluster": to}})
    } else {
        json!(a.type_url)
    }
}

pub fn render_listener(l: &Listener) -> Json {
    let chain = |c: &FilterChain| {
        let m = c.filter_chain_match.as_ref().map(|m| json!({
            "destination_port": m.destination_port.map(|p| p.value),
            "prefix_ranges": m.prefix_ranges.iter().map(|r| format!("{}/{}", r.address_prefix, r.prefix_len.map(|p| p.value).unwrap_or(0))).collect::<Vec<_>>(),
            "server_names": m.server_names,
        }));
        json!({
            "name": c.name,
            "match": m,
            "filters": c.filters.iter().map(render_filter).collect::<Vec<_>>(),
            "transport_socket": transport(&c.transport_socket),
        })
    };
    prune(json!({
        "name": l.name,
        "address": addr(&l.address),
        "bind_to_port": l.bind_to_port.map(|b| b.value).map(|b| if b { "true" } else { "false" }),
        "use_original_dst": l.use_original_dst.map(|b| b.value),
        "traffic_direction": core::TrafficDirection::try_from(l.traffic_direction).map(|d| d.as_str_name()).unwrap_or("?"),
        "listener_filters": l.listener_filters.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        "filter_chains": l.filter_chains.iter().map(chain).collect::<Vec<_>>(),
        "default_filter_chain": l.default_filter_chain.as_ref().map(chain),
    }))
}

pub fn render_route(r: &route::Route) -> Json {
    let m = r.r#match.as_ref().map(|m| {
        let path = match &m.path_specifier {
            Some(route_match::PathSpecifier::Prefix(p)) => json!({"prefix": p}),
            Some(route_match::PathSpecifier::Path(p)) => json!({"path": p}),
            Some(route_match::PathSpecifier::SafeRegex(r)) => json!({"regex": r.regex}),
            Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => json!({"path_separated_prefix": p}),
            _ => Json::Null,
        };
        json!({
            "path": path,
            "case_sensitive": m.case_sensitive.map(|b| b.value).filter(|b| !b).map(|_| "false"),
            "headers": m.headers.iter().map(|h| {
                let spec = match &h.header_match_specifier {
                    Some(header_matcher::HeaderMatchSpecifier::StringMatch(s)) => string_match(s),
                    Some(header_matcher::HeaderMatchSpecifier::PresentMatch(p)) => json!({"present": p}),
                    _ => json!("?"),
                };
                json!({"name": h.name, "match": spec, "invert": h.invert_match})
            }).collect::<Vec<_>>(),
            "query_parameters": m.query_parameters.iter().map(|q| {
                let spec = match &q.query_parameter_match_specifier {
                    Some(query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(s)) => string_match(s),
                    Some(query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(p)) => json!({"present": p}),
                    None => Json::Null,
                };
                json!({"name": q.name, "match": spec})
            }).collect::<Vec<_>>(),
        })
    });
    let action = match &r.action {
        Some(route::route::Action::Route(a)) => {
            let to = match &a.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(c)) => json!(c),
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => json!(w.clusters.iter().map(|c| json!({
                    "cluster": c.name,
                    "weight": c.weight.map(|w| w.value),
                    "request_headers_to_add": c.request_headers_to_add.iter().map(|h| h.header.as_ref().map(|h| format!("{}={}", h.key, h.value))).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()),
                _ => Json::Null,
            };
            let retry = a.retry_policy.as_ref().map(|p| json!({
                "num_retries": p.num_retries.map(|v| v.value),
                "retry_on": p.retry_on,
                "retriable_status_codes": p.retriable_status_codes,
                "per_try_timeout": dur(&p.per_try_timeout),
                "host_predicates": p.retry_host_predicate.iter().map(|h| h.name.clone()).collect::<Vec<_>>(),
            }));
            json!({"route": {
                "cluster": to,
                "timeout": dur(&a.timeout),
                "grpc_timeout_header_max": a.max_stream_duration.as_ref().map(|m| dur(&m.grpc_timeout_header_max)),
                "retry": retry,
                "prefix_rewrite": a.prefix_rewrite,
                "regex_rewrite": a.regex_rewrite.as_ref().map(|r| json!([r.pattern.as_ref().map(|p| p.regex.clone()), r.substitution])),
                "host_rewrite": match &a.host_rewrite_specifier {
                    Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => json!(h),
                    _ => Json::Null,
                },
                "hash_policy": a.hash_policy.iter().map(|h| format!("{:?}", h.policy_specifier)).collect::<Vec<_>>(),
                "mirrors": a.request_mirror_policies.iter().map(|m| json!([m.cluster, fraction(&m.runtime_fraction.as_ref().and_then(|f| f.default_value))])).collect::<Vec<_>>(),
            }})
        }
        Some(route::route::Action::Redirect(rd)) => json!({"redirect": {
            "host": rd.host_redirect,
            "path": format!("{:?}", rd.path_rewrite_specifier),
            "scheme": format!("{:?}", rd.scheme_rewrite_specifier),
            "port": rd.port_redirect,
            "code": route::redirect_action::RedirectResponseCode::try_from(rd.response_code).map(|c| c.as_str_name()).unwrap_or("?"),
        }}),
        Some(route::route::Action::DirectResponse(d)) => json!({"direct_response": {
            "status": d.status,
            "body": d.body.as_ref().and_then(|b| match &b.specifier {
                Some(data_source::Specifier::InlineString(s)) => Some(s.clone()),
                _ => None,
            }),
        }}),
        _ => Json::Null,
    };
    let per_filter: serde_json::Map<String, Json> = {
        let mut keys: Vec<&String> = r.typed_per_filter_config.keys().collect();
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let a = &r.typed_per_filter_config[k];
                let v = if a.type_url.ends_with("HTTPFault") {
                    let f: HttpFault = decode_any(a);
                    json!({
                        "delay": f.delay.as_ref().map(|d| json!([fraction(&d.percentage), format!("{:?}", d.fault_delay_secifier)])),
                        "abort": f.abort.as_ref().map(|ab| json!([fraction(&ab.percentage), match ab.error_type {
                            Some(fault_abort::ErrorType::HttpStatus(s)) => json!({"http": s}),
                            Some(fault_abort::ErrorType::GrpcStatus(s)) => json!({"grpc": s}),
                            _ => Json::Null,
                        }])),
                    })
                } else if a.type_url.ends_with("CorsPolicy") {
                    let c: CorsPolicy = decode_any(a);
                    json!({
                        "origins": c.allow_origin_string_match.iter().map(string_match).collect::<Vec<_>>(),
                        "methods": c.allow_methods, "headers": c.allow_headers, "expose": c.expose_headers,
                        "max_age": c.max_age, "credentials": c.allow_credentials.map(|b| b.value),
                    })
                } else {
                    json!(a.type_url)
                };
                (k.clone(), v)
            })
            .collect()
    };
    let headers = |v: &[core::HeaderValueOption]| {
        v.iter()
            .map(|h| {
                json!(format!(
                    "{}={} ({})",
                    h.header.as_ref().unwrap().key,
                    h.header.as_ref().unwrap().value,
                    h.append_action
                ))
            })
            .collect::<Vec<_>>()
    };
    prune(json!({
        "name": r.name,
        "match": m,
        "action": action,
        "per_filter": per_filter,
        "request_headers_to_add": headers(&r.request_headers_to_add),
        "request_headers_to_remove": r.request_headers_to_remove,
        "response_headers_to_add": headers(&r.response_headers_to_add),
    }))
}

pub fn render_route_config(rc: &RouteConfiguration) -> Json {
    prune(json!({
        "name": rc.name,
        "ignore_port_in_host_matching": rc.ignore_port_in_host_matching,
        "virtual_hosts": rc.virtual_hosts.iter().map(|v| json!({
            "name": v.name,
            "domains": v.domains,
            "require_tls": route::virtual_host::TlsRequirementType::try_from(v.require_tls)
                .ok()
                .filter(|t| *t != route::virtual_host::TlsRequirementType::None)
                .map(|t| t.as_str_name()),
            "routes": v.routes.iter().map(render_route).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
}
