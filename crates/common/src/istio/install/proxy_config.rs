//! `ProxyConfig` (`meshConfig.defaultConfig`, or the `proxy.istio.io/config` pod
//! annotation) and its `Tracing` (istio/api `mesh/v1alpha1/proxy.proto`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::types::Duration;

/// `ProxyConfig`: settings of individual proxies.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfig {
    /// Directory of the generated proxy configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_path: Option<String>,
    /// Path of the proxy binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_path: Option<String>,
    /// Envoy `service_cluster` name (oneof `cluster_name`, with `tracingServiceName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cluster: Option<String>,
    /// Naming scheme of the `service_cluster` (oneof `cluster_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing_service_name: Option<TracingServiceName>,
    /// Connection drain time on hot restart (default 45s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_duration: Option<Duration>,
    /// Parent shutdown time on hot restart; deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_shutdown_duration: Option<Duration>,
    /// Address of the xDS server (e.g. `istiod.istio-system.svc:15012`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_address: Option<String>,
    /// Discovery refresh delay; deprecated and unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_refresh_delay: Option<Duration>,
    /// Zipkin address; deprecated, use `tracing.zipkin.address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin_address: Option<String>,
    /// Statsd UDP listener (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statsd_udp_address: Option<String>,
    /// Envoy metrics service address; deprecated, use `envoyMetricsService`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_metrics_service_address: Option<String>,
    /// Envoy admin port (default 15000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_admin_port: Option<i32>,
    /// Availability zone; deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// How the proxy authenticates to the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_auth_policy: Option<AuthenticationPolicy>,
    /// Custom proxy configuration file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_config_file: Option<String>,
    /// Maximum length of stat names (default 189).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stat_name_length: Option<i32>,
    /// Worker threads; 0 means all cores (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,
    /// Path of the bootstrap template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_bootstrap_template_path: Option<String>,
    /// How inbound traffic is redirected to the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interception_mode: Option<InboundInterceptionMode>,
    /// Tracing settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<Tracing>,
    /// SDS settings; deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sds: Option<serde_json::Value>,
    /// Envoy gRPC access log service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_access_log_service: Option<RemoteService>,
    /// Envoy metrics service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_metrics_service: Option<RemoteService>,
    /// Extra environment of the proxy; `ISTIO_META_*` entries go into node metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub proxy_metadata: BTreeMap<String, String>,
    /// Envoy runtime values set at bootstrap.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runtime_values: BTreeMap<String, String>,
    /// Agent status port (default 15020).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_port: Option<i32>,
    /// Extra tags extracted from Istio telemetry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_stat_tags: Vec<String>,
    /// Gateway network topology (`numTrustedProxies`, `forwardClientCertDetails`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_topology: Option<serde_json::Value>,
    /// Time allowed for connections to finish on shutdown (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_drain_duration: Option<Duration>,
    /// Mesh ID used in telemetry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_id: Option<String>,
    /// VM readiness probe (`ReadinessProbe` of WorkloadGroup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<serde_json::Value>,
    /// Extra Envoy stats to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_stats_matcher: Option<ProxyStatsMatcher>,
    /// Delay application start until the proxy is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_application_until_proxy_starts: Option<bool>,
    /// Extra root certificates (PEM) for workload-to-workload traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates_pem: Vec<String>,
    /// Proxy image details (`ProxyImage`, e.g. `imageType: distroless`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<serde_json::Value>,
    /// Private key provider (e.g. CryptoMB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_provider: Option<serde_json::Value>,
    /// Headers the proxy adds or forwards (`ProxyHeaders`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_headers: Option<serde_json::Value>,
    /// Access log file flush interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_flush_interval: Option<Duration>,
    /// Access log buffer size (KiB) before a flush.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_flush_min_size_kb: Option<u32>,
}

/// `ProxyConfig.TracingServiceName`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TracingServiceName {
    /// `app` label and namespace.
    #[default]
    AppLabelAndNamespace,
    /// Canonical name only.
    CanonicalNameOnly,
    /// Canonical name and namespace.
    CanonicalNameAndNamespace,
}

/// `AuthenticationPolicy`: proxy to control plane authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthenticationPolicy {
    /// Plaintext.
    #[default]
    None,
    /// Mutual TLS.
    MutualTls,
    /// Use the parent scope's policy.
    Inherit,
}

/// `ProxyConfig.InboundInterceptionMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundInterceptionMode {
    /// iptables `REDIRECT` (loses the source address).
    #[default]
    Redirect,
    /// iptables `TPROXY` (keeps addresses; needs `CAP_NET_ADMIN`).
    Tproxy,
    /// No redirection.
    None,
}

/// `RemoteService`: address of a remote service used by the proxy.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteService {
    /// Address (`host:port`).
    #[serde(default)]
    pub address: String,
    /// Client TLS settings (`ClientTLSSettings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_settings: Option<serde_json::Value>,
    /// TCP keepalive settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<serde_json::Value>,
}

/// `ProxyConfig.ProxyStatsMatcher`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyStatsMatcher {
    /// Stat name prefixes to include.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion_prefixes: Vec<String>,
    /// Stat name suffixes to include.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion_suffixes: Vec<String>,
    /// Stat name regexes to include.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inclusion_regexps: Vec<String>,
}

/// `Tracing`: the proxy's tracer (oneof `tracer`: zipkin, lightstep, datadog,
/// stackdriver, openCensusAgent) and sampling.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// Zipkin tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<TracingZipkin>,
    /// Lightstep tracer; deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightstep: Option<TracingLightstep>,
    /// Datadog tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<TracingDatadog>,
    /// Stackdriver tracer (debug and per-span limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stackdriver: Option<serde_json::Value>,
    /// OpenCensus agent tracer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_census_agent: Option<TracingOpenCensusAgent>,
    /// Custom tags added to every span, keyed by tag name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_tags: BTreeMap<String, TracingCustomTag>,
    /// Maximum length of the request path in the `HttpUrl` tag (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_path_tag_length: Option<u32>,
    /// Percentage of requests (0 to 100) sampled (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<f64>,
    /// Client TLS settings for the tracing service (`ClientTLSSettings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_settings: Option<serde_json::Value>,
}

/// `Tracing.Zipkin`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingZipkin {
    /// Address of the Zipkin service (e.g. `zipkin:9411`).
    #[serde(default)]
    pub address: String,
}

/// `Tracing.Lightstep`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingLightstep {
    /// Address of the Lightstep satellite pool.
    #[serde(default)]
    pub address: String,
    /// Lightstep access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

/// `Tracing.Datadog`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingDatadog {
    /// Address of the Datadog agent.
    #[serde(default)]
    pub address: String,
}

/// `Tracing.OpenCensusAgent`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingOpenCensusAgent {
    /// gRPC address of the agent.
    #[serde(default)]
    pub address: String,
    /// Context propagation headers (default `W3C_TRACE_CONTEXT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<TracingTraceContext>,
}

/// `Tracing.OpenCensusAgent.TraceContext`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum TracingTraceContext {
    /// Unspecified.
    #[default]
    #[serde(rename = "UNSPECIFIED")]
    Unspecified,
    /// W3C `traceparent`.
    #[serde(rename = "W3C_TRACE_CONTEXT")]
    W3cTraceContext,
    /// gRPC `grpc-trace-bin`.
    #[serde(rename = "GRPC_BIN")]
    GrpcBin,
    /// `X-Cloud-Trace-Context`.
    #[serde(rename = "CLOUD_TRACE_CONTEXT")]
    CloudTraceContext,
    /// Multi-header B3.
    #[serde(rename = "B3")]
    B3,
}

/// `Tracing.CustomTag` (oneof `type`: literal, environment, header).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingCustomTag {
    /// A fixed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<TracingLiteral>,
    /// From an environment variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<TracingEnvironment>,
    /// From a request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<TracingRequestHeader>,
}

/// `Tracing.Literal`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingLiteral {
    /// The value.
    #[serde(default)]
    pub value: String,
}

/// `Tracing.Environment`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingEnvironment {
    /// Name of the environment variable.
    #[serde(default)]
    pub name: String,
    /// Value used when the variable is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

/// `Tracing.RequestHeader`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TracingRequestHeader {
    /// Name of the header.
    #[serde(default)]
    pub name: String,
    /// Value used when the header is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_proxy_config() {
        let pc: ProxyConfig = serde_json::from_value(json!({
            "concurrency": 2,
            "discoveryAddress": "istiod.istio-system.svc:15012",
            "drainDuration": "45s",
            "terminationDrainDuration": "5s",
            "holdApplicationUntilProxyStarts": true,
            "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"},
            "runtimeValues": {"envoy.reloadable_features.x": "true"},
            "interceptionMode": "TPROXY",
            "controlPlaneAuthPolicy": "MUTUAL_TLS",
            "tracingServiceName": "CANONICAL_NAME_ONLY",
            "statusPort": 15020,
            "proxyStatsMatcher": {"inclusionRegexps": [".*circuit_breakers.*"]},
            "gatewayTopology": {"numTrustedProxies": 1},
            "image": {"imageType": "distroless"},
            "envoyAccessLogService": {"address": "als:15000"},
            "tracing": {
                "sampling": 10.0,
                "maxPathTagLength": 256,
                "zipkin": {"address": "zipkin.istio-system:9411"},
                "customTags": {"env": {"environment": {"name": "ENV", "defaultValue": "dev"}},
                               "lit": {"literal": {"value": "x"}},
                               "hdr": {"header": {"name": "x-h"}}}
            }
        }))
        .unwrap();
        assert_eq!(pc.concurrency, Some(2));
        assert_eq!(pc.interception_mode, Some(InboundInterceptionMode::Tproxy));
        let tracing = pc.tracing.as_ref().unwrap();
        assert_eq!(tracing.sampling, Some(10.0));
        assert_eq!(
            tracing.zipkin.as_ref().unwrap().address,
            "zipkin.istio-system:9411"
        );
        let back = serde_json::to_value(&pc).unwrap();
        assert_eq!(serde_json::from_value::<ProxyConfig>(back).unwrap(), pc);
    }

    #[test]
    fn refuses_unknown_fields_and_enums() {
        for bad in [
            json!({"tracing": {"zipkin": {"adress": "x"}}}),
            json!({"interceptionMode": "tproxy"}),
            json!({"tracing": {"openCensusAgent": {"address": "a", "context": ["B4"]}}}),
            json!({"terminationDrainDuration": 5}),
        ] {
            assert!(
                serde_json::from_value::<ProxyConfig>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
