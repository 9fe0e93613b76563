use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use prost::Message;
use serde_json::json;

use super::*;

const CLUSTER: &str = "envoy.config.cluster.v3.Cluster";
const LISTENER: &str = "envoy.config.listener.v3.Listener";
const HTTP_OPTIONS: &str =
    "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";

fn xds_cluster() -> serde_json::Value {
    json!({
        "name": "xds-grpc",
        "type": "STRICT_DNS",
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": HTTP_OPTIONS,
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "connection_keepalive": { "interval": "30s", "timeout": "10s" }
                    }
                }
            }
        },
        "max_requests_per_connection": 1,
        "load_assignment": {
            "cluster_name": "xds-grpc",
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": { "socket_address": {
                        "address": "127.0.0.1", "port_value": 15010
                    } } }
                }]
            }]
        }
    })
}

#[test]
fn pool_has_the_roots_and_their_any_types() {
    for name in [
        "envoy.config.bootstrap.v3.Bootstrap",
        "envoy.service.discovery.v3.DeltaDiscoveryRequest",
        CLUSTER,
        LISTENER,
        "envoy.extensions.filters.http.router.v3.Router",
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
    ] {
        assert!(pool().get_message_by_name(name).is_some(), "{name}");
    }
}

#[test]
fn cluster_with_typed_extension_protocol_options_round_trips() {
    let input = xds_cluster();
    let cluster: Cluster = from_json(CLUSTER, &input).expect("decodes");
    assert_eq!(cluster.name, "xds-grpc");
    assert_eq!(cluster.connect_timeout.as_ref().map(|d| d.seconds), Some(1));
    let any = &cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(any.type_url, HTTP_OPTIONS);
    let options = HttpProtocolOptions::decode(any.value.as_slice()).expect("payload decodes");
    assert!(options.upstream_protocol_options.is_some());

    let back = to_json(CLUSTER, &cluster).expect("encodes");
    assert_eq!(back, input);
    let again: Cluster = from_json(CLUSTER, &back).expect("decodes again");
    assert_eq!(again, cluster);
}

#[test]
fn listener_with_hcm_typed_config_round_trips() {
    let input = json!({
        "name": "virtualInbound",
        "address": { "socket_address": { "address": "0.0.0.0", "port_value": 15006 } },
        "filter_chains": [{
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": HCM,
                    "stat_prefix": "inbound_0.0.0.0_15006",
                    "rds": {
                        "config_source": { "ads": {}, "resource_api_version": "V3" },
                        "route_config_name": "inbound|8080||"
                    },
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                        }
                    }]
                }
            }]
        }]
    });
    let listener: Listener = from_json(LISTENER, &input).expect("decodes");
    let filter = &listener.filter_chains[0].filters[0];
    let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(any)) =
        &filter.config_type
    else {
        panic!("typed_config expected: {filter:?}");
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("payload decodes");
    assert_eq!(hcm.stat_prefix, "inbound_0.0.0.0_15006");
    assert_eq!(hcm.http_filters.len(), 1);

    let back = to_json(LISTENER, &listener).expect("encodes");
    assert_eq!(back, input);
}

#[test]
fn camel_case_names_are_read_too() {
    let cluster: Cluster = from_json(
        CLUSTER,
        &json!({ "name": "a", "connectTimeout": "0.25s", "lbPolicy": "LEAST_REQUEST" }),
    )
    .expect("decodes");
    assert_eq!(cluster.connect_timeout.map(|d| d.nanos), Some(250_000_000));
}

#[test]
fn unknown_field_is_named_with_its_path() {
    let mut input = xds_cluster();
    input["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["adress"] = json!({});
    let err = from_json::<Cluster>(CLUSTER, &input).expect_err("refused");
    assert_eq!(
        err.path(),
        "load_assignment.endpoints[0].lb_endpoints[0].endpoint.adress"
    );
    let text = err.to_string();
    assert!(text.contains(CLUSTER), "{text}");
    assert!(text.contains("unknown field"), "{text}");
}

#[test]
fn unknown_field_inside_an_any_is_named_with_its_path() {
    let mut input = xds_cluster();
    input["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
        ["explicit_http_config"]["http3_protocol_optionz"] = json!({});
    let err = from_json::<Cluster>(CLUSTER, &input).expect_err("refused");
    assert_eq!(
        err.path(),
        "typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"]\
         .explicit_http_config.http3_protocol_optionz",
        "{err}"
    );
}

#[test]
fn wrong_type_is_named_with_its_path() {
    let mut input = xds_cluster();
    input["connect_timeout"] = json!(true);
    let err = from_json::<Cluster>(CLUSTER, &input).expect_err("refused");
    assert_eq!(err.path(), "connect_timeout", "{err}");
    let text = err.to_string();
    assert!(text.contains("field `connect_timeout`"), "{text}");

    let mut input = xds_cluster();
    input["lb_policy"] = json!("ROUND_ROBINN");
    let err = from_json::<Cluster>(CLUSTER, &input).expect_err("refused");
    assert_eq!(err.path(), "lb_policy", "{err}");
}

#[test]
fn unknown_any_type_is_refused() {
    let input = json!({
        "name": "a",
        "typed_extension_protocol_options": {
            "x": { "@type": "type.googleapis.com/example.NotThere" }
        }
    });
    let err = from_json::<Cluster>(CLUSTER, &input).expect_err("refused");
    assert!(err.to_string().contains("example.NotThere"), "{err}");
}

#[test]
fn unknown_message_type_is_refused() {
    let err = from_json::<Cluster>("envoy.Nope", &json!({})).expect_err("refused");
    assert!(matches!(err, EnvoyJsonError::UnknownType(_)));
}
