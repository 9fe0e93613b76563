//! Small builders shared by the four generators: `Any` packing, durations,
//! wrappers, addresses, config sources and string matchers, so each generator
//! reads as the Envoy structure it produces.

use std::collections::BTreeMap;

use common::istio::networking::StringMatch;
use envoy_types::pb::envoy::config::core::v3::Address;
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiConfigSource, ApiVersion, ConfigSource, GrpcService, Metadata, Pipe,
    SocketAddress, address,
    api_config_source::ApiType,
    config_source,
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SdsSecretConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{
    Any, BoolValue, Duration, Struct, UInt32Value, Value, value::Kind,
};

/// Istio's default `connectTimeout` (meshConfig `connectTimeout: 10s`).
pub const DEFAULT_CONNECT_TIMEOUT_SECS: i64 = 10;

/// The cluster Istio's bootstrap defines for the node agent's SDS server
/// (workload certificate `default` and trust bundle `ROOTCA`).
pub const SDS_CLUSTER: &str = "sds-grpc";

/// Packs a message as `google.protobuf.Any` under its v3 type URL.
pub fn any<M: prost::Message + prost::Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// A protobuf duration from a std one.
pub fn duration(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf duration from an Istio one.
pub fn istio_duration(d: &common::istio::types::Duration) -> Duration {
    duration(d.as_std())
}

/// Whole seconds.
pub fn seconds(s: i64) -> Duration {
    Duration {
        seconds: s,
        nanos: 0,
    }
}

/// `google.protobuf.UInt32Value`.
pub fn u32v(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

/// `google.protobuf.BoolValue`.
pub fn boolv(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

/// A positive `i32` from Istio's API as `u32`; zero and negatives are "unset",
/// as Istio reads them.
pub fn positive(v: Option<i32>) -> Option<u32> {
    v.filter(|v| *v > 0).map(|v| v as u32)
}

/// The ADS config source Istio puts on EDS clusters and RDS references:
/// `{ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}`.
pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        initial_fetch_timeout: Some(seconds(0)),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

/// An SDS secret served by the node agent over the `sds-grpc` bootstrap cluster,
/// as Istio's `ConstructSdsSecretConfig`. Pilot does not serve these: the
/// proxy's agent (citadel client) does. An Envoy without a static `sds-grpc`
/// cluster in its bootstrap rejects clusters and listeners that use them.
pub fn sds_grpc(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    set_node_on_first_message_only: true,
                    transport_api_version: ApiVersion::V3 as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                            cluster_name: SDS_CLUSTER.to_string(),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            resource_api_version: ApiVersion::V3 as i32,
            ..Default::default()
        }),
    }
}

/// An SDS secret fetched over ADS (Istio's `kubernetes://NAME` credentials).
pub fn sds_ads(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_string(),
        sds_config: Some(ads()),
    }
}

/// A TCP socket address.
pub fn socket_address(ip: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// A Unix domain socket address.
pub fn pipe_address(path: &str) -> Address {
    Address {
        address: Some(address::Address::Pipe(Pipe {
            path: path.to_string(),
            mode: 0,
        })),
    }
}

/// Envoy's `StringMatcher` for Istio's `StringMatch`; `None` when no branch is set.
pub fn string_matcher(m: &StringMatch) -> Option<StringMatcher> {
    let pattern = if let Some(exact) = &m.exact {
        string_matcher::MatchPattern::Exact(exact.clone())
    } else if let Some(prefix) = &m.prefix {
        string_matcher::MatchPattern::Prefix(prefix.clone())
    } else if let Some(regex) = &m.regex {
        string_matcher::MatchPattern::SafeRegex(regex_matcher(regex))
    } else {
        return None;
    };
    Some(StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    })
}

/// An exact `StringMatcher`.
pub fn exact_matcher(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.to_string())),
        ignore_case: false,
    }
}

/// A RE2 `RegexMatcher` (Envoy's default engine).
pub fn regex_matcher(regex: &str) -> RegexMatcher {
    RegexMatcher {
        regex: regex.to_string(),
        ..Default::default()
    }
}

/// A percentage (0–100, fractions allowed) as parts per million, as Istio's
/// `translatePercentToFractionalPercent`.
pub fn percent_million(value: f64) -> FractionalPercent {
    FractionalPercent {
        numerator: (value.clamp(0.0, 100.0) * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// A whole percentage (Istio's deprecated integer percent fields).
pub fn percent_hundred(value: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: value.min(100),
        denominator: DenominatorType::Hundred as i32,
    }
}

/// Filter metadata `{filter: {key: value, …}}` with string values.
pub fn string_metadata(filter: &str, fields: &[(&str, &str)]) -> Metadata {
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
        filter_metadata: [(filter.to_string(), s)].into_iter().collect(),
        ..Default::default()
    }
}

/// Whether `labels` carries every key/value of `selector` (an empty selector
/// selects everything, as Kubernetes and Istio read it).
pub fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Istio's cluster name (`BuildSubsetKey`): `outbound|9080|v1|reviews.default.svc.cluster.local`.
pub fn subset_key(direction: &str, port: u32, subset: Option<&str>, host: &str) -> String {
    format!("{direction}|{port}|{}|{host}", subset.unwrap_or(""))
}

/// Parses an outbound cluster name back into `(port, subset, host)`.
pub fn parse_subset_key(name: &str) -> Option<(u32, Option<&str>, &str)> {
    let mut parts = name.splitn(4, '|');
    if parts.next()? != "outbound" {
        return None;
    }
    let port = parts.next()?.parse().ok()?;
    let subset = parts.next()?;
    let host = parts.next()?;
    Some((port, (!subset.is_empty()).then_some(subset), host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_round_trip() {
        let n = subset_key(
            "outbound",
            9080,
            Some("v1"),
            "reviews.default.svc.cluster.local",
        );
        assert_eq!(n, "outbound|9080|v1|reviews.default.svc.cluster.local");
        assert_eq!(
            parse_subset_key(&n),
            Some((9080, Some("v1"), "reviews.default.svc.cluster.local"))
        );
        assert_eq!(
            parse_subset_key("outbound|80||a.com"),
            Some((80, None, "a.com"))
        );
        assert_eq!(parse_subset_key("inbound|80||"), None);
        assert_eq!(parse_subset_key("PassthroughCluster"), None);
    }

    #[test]
    fn percentages_like_istio() {
        assert_eq!(percent_million(25.0).numerator, 250_000);
        assert_eq!(percent_million(0.1).numerator, 1_000);
        assert_eq!(percent_million(100.0).numerator, 1_000_000);
        assert_eq!(percent_hundred(50).numerator, 50);
    }
}
