//! `MeshConfig.ExtensionProvider`: named backends for external authorization,
//! tracing, metrics and access logging (istio/api `mesh/v1alpha1/config.proto`).
//!
//! The provider kind is a proto oneof, so [`ExtensionProvider`] has one optional field
//! per kind and galley checks that exactly one is set.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::types::Duration;

/// `ExtensionProvider`: a name and exactly one provider configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionProvider {
    /// Unique name the provider is referred to by; required.
    #[serde(default)]
    pub name: String,
    /// Envoy ext_authz over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<EnvoyExternalAuthorizationHttpProvider>,
    /// Envoy ext_authz over gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_grpc: Option<EnvoyExternalAuthorizationGrpcProvider>,
    /// Zipkin tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinTracingProvider>,
    /// Lightstep tracing; deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lightstep: Option<LightstepTracingProvider>,
    /// Datadog tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datadog: Option<DatadogTracingProvider>,
    /// Stackdriver tracing and logging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stackdriver: Option<serde_json::Value>,
    /// OpenCensus agent tracing; deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opencensus: Option<serde_json::Value>,
    /// Apache SkyWalking tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skywalking: Option<SkyWalkingTracingProvider>,
    /// OpenTelemetry tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetryTracingProvider>,
    /// Prometheus metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusMetricsProvider>,
    /// Envoy access log to a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_file_access_log: Option<EnvoyFileAccessLogProvider>,
    /// Envoy gRPC access log service for HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_http_als: Option<EnvoyHttpGrpcV3LogProvider>,
    /// Envoy gRPC access log service for TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_tcp_als: Option<EnvoyTcpGrpcV3LogProvider>,
    /// Envoy OpenTelemetry access log service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_otel_als: Option<EnvoyOpenTelemetryLogProvider>,
}

impl ExtensionProvider {
    /// The names of the provider kinds that are set (the oneof is valid when exactly one).
    pub fn kinds(&self) -> Vec<&'static str> {
        let set = [
            ("envoyExtAuthzHttp", self.envoy_ext_authz_http.is_some()),
            ("envoyExtAuthzGrpc", self.envoy_ext_authz_grpc.is_some()),
            ("zipkin", self.zipkin.is_some()),
            ("lightstep", self.lightstep.is_some()),
            ("datadog", self.datadog.is_some()),
            ("stackdriver", self.stackdriver.is_some()),
            ("opencensus", self.opencensus.is_some()),
            ("skywalking", self.skywalking.is_some()),
            ("opentelemetry", self.opentelemetry.is_some()),
            ("prometheus", self.prometheus.is_some()),
            ("envoyFileAccessLog", self.envoy_file_access_log.is_some()),
            ("envoyHttpAls", self.envoy_http_als.is_some()),
            ("envoyTcpAls", self.envoy_tcp_als.is_some()),
            ("envoyOtelAls", self.envoy_otel_als.is_some()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(n, _)| n)
            .collect()
    }
}

/// `EnvoyExternalAuthorizationRequestBody`: buffering of the request body for ext_authz.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyExternalAuthorizationRequestBody {
    /// Maximum body size held in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<u32>,
    /// Send a partial body instead of answering 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_partial_message: Option<bool>,
    /// Send the body as raw bytes (gRPC only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_as_bytes: Option<bool>,
}

/// `EnvoyExternalAuthorizationHttpProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyExternalAuthorizationHttpProvider {
    /// Service (`[<namespace>/]<hostname>`) of the authorizer; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// Timeout of the check (default 600s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Prefix added to the path of the check request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Allow the request when the authorizer fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    /// HTTP status returned on authorizer errors (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    /// Headers sent to the authorizer; deprecated, use `includeRequestHeadersInCheck`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_headers_in_check: Vec<String>,
    /// Client request headers sent to the authorizer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_request_headers_in_check: Vec<String>,
    /// Fixed headers added to the check request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub include_additional_headers_in_check: BTreeMap<String, String>,
    /// Include the request body in the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<EnvoyExternalAuthorizationRequestBody>,
    /// Authorizer headers forwarded upstream on allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_upstream_on_allow: Vec<String>,
    /// Authorizer headers forwarded downstream on deny.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_deny: Vec<String>,
    /// Authorizer headers forwarded downstream on allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// `EnvoyExternalAuthorizationGrpcProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyExternalAuthorizationGrpcProvider {
    /// Service (`[<namespace>/]<hostname>`) of the authorizer; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// Timeout of the check (default 600s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Allow the request when the authorizer fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_open: Option<bool>,
    /// HTTP status returned on authorizer errors (default 403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_on_error: Option<String>,
    /// Include the request body in the check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_request_body_in_check: Option<EnvoyExternalAuthorizationRequestBody>,
}

/// `ZipkinTracingProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ZipkinTracingProvider {
    /// Service of the Zipkin collector; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// Maximum length of the path tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    /// Use 64-bit trace IDs instead of 128-bit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_64bit_trace_id: Option<bool>,
    /// Collector endpoint path (default `/api/v2/spans`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `LightstepTracingProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LightstepTracingProvider {
    /// Service of the Lightstep collector; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// Lightstep access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Maximum length of the path tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
}

/// `DatadogTracingProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatadogTracingProvider {
    /// Service of the Datadog agent; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// Maximum length of the path tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
}

/// `SkyWalkingTracingProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SkyWalkingTracingProvider {
    /// Service of the SkyWalking receiver; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// SkyWalking OAP access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

/// `OpenTelemetryTracingProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenTelemetryTracingProvider {
    /// Service receiving OTLP traces; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// Maximum length of the path tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tag_length: Option<u32>,
    /// Export over HTTP instead of gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpService>,
    /// gRPC export settings (`timeout`, `initialMetadata`); exclusive with `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<serde_json::Value>,
    /// Resource detectors (`environment`, `dynatrace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_detectors: Option<serde_json::Value>,
    /// Dynatrace sampler settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dynatrace_sampler: Option<serde_json::Value>,
}

/// `HttpService`: an HTTP endpoint of a provider.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpService {
    /// Path on the service; required.
    #[serde(default)]
    pub path: String,
    /// Request timeout (default 3s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Headers added to each request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeader>,
}

/// `HttpHeader`: a header name and value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// Header name; required.
    #[serde(default)]
    pub name: String,
    /// Header value; required.
    #[serde(default)]
    pub value: String,
}

/// `PrometheusMetricsProvider`: no settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusMetricsProvider {}

/// `EnvoyFileAccessLogProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyFileAccessLogProvider {
    /// File to write to (default `/dev/stdout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Log format (oneof `text` / `labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// `LogFormat` of file and OpenTelemetry access logs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFormat {
    /// Text format with Envoy command operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// JSON format: an object of command operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<serde_json::Value>,
}

/// `EnvoyHttpGrpcV3LogProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyHttpGrpcV3LogProvider {
    /// Service of the access log service; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// Name of the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_name: Option<String>,
    /// Filter state objects to log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_state_objects_to_log: Vec<String>,
    /// Request headers to log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_request_headers_to_log: Vec<String>,
    /// Response headers to log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_response_headers_to_log: Vec<String>,
    /// Response trailers to log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_response_trailers_to_log: Vec<String>,
}

/// `EnvoyTcpGrpcV3LogProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyTcpGrpcV3LogProvider {
    /// Service of the access log service; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// Name of the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_name: Option<String>,
    /// Filter state objects to log.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filter_state_objects_to_log: Vec<String>,
}

/// `EnvoyOpenTelemetryLogProvider`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvoyOpenTelemetryLogProvider {
    /// Service of the OTLP logs collector; required.
    #[serde(default)]
    pub service: String,
    /// Port of the service; required.
    #[serde(default)]
    pub port: u32,
    /// Name of the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_name: Option<String>,
    /// Body text and attributes of log records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_each_provider_kind() {
        let providers: Vec<ExtensionProvider> = serde_json::from_value(json!([
            {"name": "authz-http", "envoyExtAuthzHttp": {
                "service": "ext-authz.foo.svc.cluster.local", "port": 8000, "timeout": "2s",
                "pathPrefix": "/check", "failOpen": true, "statusOnError": "503",
                "includeRequestHeadersInCheck": ["x-ext-authz"],
                "includeAdditionalHeadersInCheck": {"x-extra": "1"},
                "includeRequestBodyInCheck": {"maxRequestBytes": 1024, "allowPartialMessage": true},
                "headersToUpstreamOnAllow": ["x-user"], "headersToDownstreamOnDeny": ["x-reason"],
                "headersToDownstreamOnAllow": ["x-ok"]}},
            {"name": "authz-grpc", "envoyExtAuthzGrpc": {"service": "ext-authz.foo.svc.cluster.local", "port": 9000}},
            {"name": "zipkin", "zipkin": {"service": "zipkin.istio-system.svc.cluster.local", "port": 9411, "maxTagLength": 56, "enable64bitTraceId": true}},
            {"name": "dd", "datadog": {"service": "datadog.default.svc.cluster.local", "port": 8126}},
            {"name": "sw", "skywalking": {"service": "sw.default.svc.cluster.local", "port": 11800, "accessToken": "t"}},
            {"name": "otel", "opentelemetry": {"service": "otel.default.svc.cluster.local", "port": 4318,
                "http": {"path": "/v1/traces", "timeout": "10s", "headers": [{"name": "a", "value": "b"}]},
                "resourceDetectors": {"environment": {}}}},
            {"name": "prometheus", "prometheus": {}},
            {"name": "envoy", "envoyFileAccessLog": {"path": "/dev/stdout", "logFormat": {"labels": {"status": "%RESPONSE_CODE%"}}}},
            {"name": "als", "envoyHttpAls": {"service": "als.default.svc.cluster.local", "port": 9000, "logName": "http"}},
            {"name": "tcp-als", "envoyTcpAls": {"service": "als.default.svc.cluster.local", "port": 9000}},
            {"name": "otel-als", "envoyOtelAls": {"service": "otel.default.svc.cluster.local", "port": 4317, "logFormat": {"text": "%REQ(:path)%"}}}
        ]))
        .unwrap();
        assert!(providers.iter().all(|p| p.kinds().len() == 1));
        assert_eq!(providers[2].kinds(), ["zipkin"]);
        assert_eq!(
            providers[0]
                .envoy_ext_authz_http
                .as_ref()
                .unwrap()
                .timeout
                .as_ref()
                .unwrap()
                .as_str(),
            "2s"
        );
    }

    #[test]
    fn refuses_unknown_provider_kinds_and_fields() {
        for bad in [
            json!({"name": "x", "jaeger": {"service": "j", "port": 1}}),
            json!({"name": "x", "prometheus": {"port": 9090}}),
            json!({"name": "x", "envoyExtAuthzGrpc": {"service": "a", "port": 1, "timeout": "1 s"}}),
        ] {
            assert!(
                serde_json::from_value::<ExtensionProvider>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
