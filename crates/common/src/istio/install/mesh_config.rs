//! `MeshConfig`: mesh-wide settings (istio/api `mesh/v1alpha1/config.proto`).
//!
//! Sub-objects that belong to other APIs (TCP keepalive, locality load balancing,
//! client TLS settings, retry policy) are kept as [`serde_json::Value`]; galley checks
//! them where it matters.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ExtensionProvider, ProxyConfig};
use crate::istio::types::Duration;

/// `MeshConfig`: settings for the whole mesh.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfig {
    /// Port Envoy listens on for captured outbound traffic (default 15001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_listen_port: Option<i32>,
    /// Port Envoy listens on for captured inbound traffic (default 15006).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_inbound_listen_port: Option<i32>,
    /// Port Envoy listens on for HTTP PROXY requests, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_http_port: Option<i32>,
    /// Upstream connection timeout (default 10s; at least 1ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<Duration>,
    /// Protocol sniffing timeout (0s disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_detection_timeout: Option<Duration>,
    /// TCP keepalive settings (`ConnectionPoolSettings.TCPSettings.TcpKeepalive`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<serde_json::Value>,
    /// Ingress class handled by Istio's ingress controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class: Option<String>,
    /// Kubernetes Service of the ingress controller (default `istio-ingressgateway`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_service: Option<String>,
    /// Which Ingress resources Istio handles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_controller_mode: Option<IngressControllerMode>,
    /// Gateway deployment used for Ingress (`istio: <value>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_selector: Option<String>,
    /// Generate trace spans and request IDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_tracing: Option<bool>,
    /// File for the proxy access log (e.g. `/dev/stdout`); empty disables it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_file: Option<String>,
    /// Format of the proxy access log; Envoy's default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_format: Option<String>,
    /// Encoding of the proxy access log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log_encoding: Option<AccessLogEncoding>,
    /// Enable Envoy's gRPC Access Log Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_envoy_access_log_service: Option<bool>,
    /// Disable Envoy's listener access logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_envoy_listener_log: Option<bool>,
    /// Default proxy configuration for sidecars and gateways.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_config: Option<ProxyConfig>,
    /// How sidecars handle traffic to unknown destinations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// How sidecars deliver inbound traffic to the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_traffic_policy: Option<InboundTrafficPolicy>,
    /// Configuration sources of the control plane.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_sources: Vec<ConfigSource>,
    /// Use mutual TLS automatically between sidecars (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_auto_mtls: Option<bool>,
    /// Trust domain of the mesh (default `cluster.local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_domain: Option<String>,
    /// Trust domains treated as equal to `trustDomain`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domain_aliases: Vec<String>,
    /// Extra root certificates for workload-to-workload traffic.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_certificates: Vec<CertificateData>,
    /// Default `exportTo` of services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_service_export_to: Vec<String>,
    /// Default `exportTo` of virtual services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_virtual_service_export_to: Vec<String>,
    /// Default `exportTo` of destination rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_destination_rule_export_to: Vec<String>,
    /// The administrative root namespace (default `istio-system`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_namespace: Option<String>,
    /// Locality load balancing settings (`LocalityLoadBalancerSetting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality_lb_setting: Option<serde_json::Value>,
    /// DNS refresh rate of `STRICT_DNS` clusters (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_refresh_rate: Option<Duration>,
    /// Default HTTP/1.1 to HTTP/2 upgrade policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Stat name pattern of inbound clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound_cluster_stat_name: Option<String>,
    /// Stat name pattern of outbound clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_cluster_stat_name: Option<String>,
    /// DNS certificates to provision; deprecated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<serde_json::Value>,
    /// Settings for selected services (e.g. cluster-local).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_settings: Vec<ServiceSettings>,
    /// Merge application metrics into the agent's (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_prometheus_merge: Option<bool>,
    /// Verify server certificates at the client by default; deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_certificate_at_client: Option<bool>,
    /// External CA istiod forwards CSRs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<MeshCa>,
    /// Extension providers (ext-authz, tracing, metrics and logging backends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extension_providers: Vec<ExtensionProvider>,
    /// Providers used when a resource does not name one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_providers: Option<DefaultProviders>,
    /// Namespaces Istio watches (Kubernetes label selectors, ORed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discovery_selectors: Vec<LabelSelector>,
    /// URL path normalization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_normalization: Option<ProxyPathNormalization>,
    /// Default HTTP retry policy (`HTTPRetry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_http_retry_policy: Option<serde_json::Value>,
    /// TLS settings of `ISTIO_MUTUAL` traffic.
    #[serde(default, rename = "meshMTLS", skip_serializing_if = "Option::is_none")]
    pub mesh_mtls: Option<TlsConfig>,
    /// TLS settings of all other TLS traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_defaults: Option<TlsConfig>,
    /// Compliance policy applied to all TLS settings (`fips-140-2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliance_policy: Option<String>,
    /// Service scope settings for ambient multicluster (`ServiceScopeConfigs` list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_scope_configs: Vec<serde_json::Value>,
}

/// `MeshConfig.IngressControllerMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IngressControllerMode {
    /// Unspecified.
    #[default]
    Unspecified,
    /// The ingress controller is off.
    Off,
    /// Handle Ingress resources without a class or with Istio's class.
    Default,
    /// Handle only Ingress resources with Istio's class.
    Strict,
}

/// `MeshConfig.AccessLogEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    /// Text lines (the default).
    #[default]
    Text,
    /// JSON objects.
    Json,
}

/// `MeshConfig.OutboundTrafficPolicy`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutboundTrafficPolicy {
    /// The policy mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<OutboundTrafficPolicyMode>,
}

/// `MeshConfig.OutboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicyMode {
    /// Only services in the registry (including ServiceEntries) are reachable.
    #[default]
    RegistryOnly,
    /// Unknown destinations are passed through.
    AllowAny,
}

/// `MeshConfig.InboundTrafficPolicy`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundTrafficPolicy {
    /// The policy mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<InboundTrafficPolicyMode>,
}

/// `MeshConfig.InboundTrafficPolicy.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InboundTrafficPolicyMode {
    /// Deliver to the pod IP, as without Istio.
    #[default]
    Passthrough,
    /// Deliver to localhost.
    Localhost,
}

/// `ConfigSource`: one configuration store of the control plane.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigSource {
    /// `xds://`, `k8s://` or `fs:///` address of the store.
    #[serde(default)]
    pub address: String,
    /// Client TLS settings (`ClientTLSSettings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_settings: Option<serde_json::Value>,
    /// Resource types subscribed from this source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribed_resources: Vec<ConfigResource>,
}

/// `Resource`: a resource type a config source provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConfigResource {
    /// Service entries generated by the platform registry.
    #[default]
    ServiceRegistry,
}

/// `MeshConfig.CertificateData`: an extra trust anchor (oneof `pem` /
/// `spiffeBundleUrl`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateData {
    /// PEM data of the certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// SPIFFE bundle endpoint URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_bundle_url: Option<String>,
    /// Kubernetes signers that use this anchor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_signers: Vec<String>,
    /// Trust domains this anchor belongs to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
}

/// `MeshConfig.H2UpgradePolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Keep HTTP/1.1.
    #[default]
    DoNotUpgrade,
    /// Upgrade to HTTP/2.
    Upgrade,
}

/// `MeshConfig.ServiceSettings`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSettings {
    /// The settings to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<ServiceSettingsSettings>,
    /// Hosts the settings apply to (DestinationRule host syntax).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// `MeshConfig.ServiceSettings.Settings`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSettingsSettings {
    /// Clients see only endpoints in their own cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_local: Option<bool>,
}

/// `MeshConfig.CA`: an external CA.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshCa {
    /// Address (`host:port`) of the CA implementing Istio's CA API; required.
    #[serde(default)]
    pub address: String,
    /// Client TLS settings (`ClientTLSSettings`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_settings: Option<serde_json::Value>,
    /// Timeout of forwarded CSRs (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_timeout: Option<Duration>,
    /// The CA is used by istiod (true) or by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istiod_side: Option<bool>,
}

/// `MeshConfig.DefaultProviders`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DefaultProviders {
    /// Default tracing providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tracing: Vec<String>,
    /// Default metrics providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// Default access logging providers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_logging: Vec<String>,
}

/// `MeshConfig.ProxyPathNormalization`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyPathNormalization {
    /// The normalization applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<NormalizationType>,
}

/// `MeshConfig.ProxyPathNormalization.NormalizationType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    /// `BASE`.
    #[default]
    Default,
    /// No normalization.
    None,
    /// RFC 3986 normalization.
    Base,
    /// `BASE` plus merging consecutive slashes.
    MergeSlashes,
    /// `MERGE_SLASHES` after decoding `%2F` and `%5C`.
    DecodeAndMergeSlashes,
}

/// `MeshConfig.TLSConfig`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    /// Minimum TLS version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_protocol_version: Option<TlsProtocol>,
    /// ECDH curves allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ecdh_curves: Vec<String>,
    /// Cipher suites allowed for TLS 1.0 to 1.2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cipher_suites: Vec<String>,
}

/// `MeshConfig.TLSConfig.TLSProtocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum TlsProtocol {
    /// Let the proxy choose.
    #[default]
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV12,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV13,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_common_mesh_settings() {
        let mc: MeshConfig = serde_json::from_value(json!({
            "accessLogFile": "/dev/stdout",
            "accessLogEncoding": "JSON",
            "accessLogFormat": "[%START_TIME%]",
            "enableTracing": true,
            "enableAutoMtls": false,
            "connectTimeout": "5s",
            "protocolDetectionTimeout": "0s",
            "tcpKeepalive": {"time": "7200s", "probes": 9},
            "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            "inboundTrafficPolicy": {"mode": "LOCALHOST"},
            "trustDomain": "example.org",
            "trustDomainAliases": ["old.example.org"],
            "rootNamespace": "istio-config",
            "ingressClass": "istio",
            "ingressControllerMode": "STRICT",
            "ingressService": "istio-ingressgateway",
            "ingressSelector": "ingressgateway",
            "localityLbSetting": {"enabled": true},
            "dnsRefreshRate": "30s",
            "h2UpgradePolicy": "UPGRADE",
            "discoverySelectors": [{"matchLabels": {"env": "prod"}},
                                   {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}],
            "defaultProviders": {"tracing": ["otel"], "metrics": ["prometheus"], "accessLogging": ["envoy"]},
            "extensionProviders": [{"name": "otel", "opentelemetry": {"service": "otel.observability.svc.cluster.local", "port": 4317}}],
            "caCertificates": [{"pem": "-----BEGIN CERTIFICATE-----", "trustDomains": ["a"]}],
            "ca": {"address": "ca.example.com:8932", "requestTimeout": "10s", "istiodSide": true},
            "pathNormalization": {"normalization": "MERGE_SLASHES"},
            "meshMTLS": {"minProtocolVersion": "TLSV1_3"},
            "tlsDefaults": {"ecdhCurves": ["P-256"], "cipherSuites": ["ECDHE-ECDSA-AES256-GCM-SHA384"]},
            "serviceSettings": [{"settings": {"clusterLocal": true}, "hosts": ["*.foo.svc.cluster.local"]}],
            "configSources": [{"address": "k8s://", "subscribedResources": ["SERVICE_REGISTRY"]}],
            "defaultHttpRetryPolicy": {"attempts": 3},
            "compliancePolicy": "fips-140-2",
            "proxyListenPort": 15001,
            "proxyInboundListenPort": 15006,
            "enablePrometheusMerge": true
        }))
        .unwrap();
        assert_eq!(mc.access_log_encoding, Some(AccessLogEncoding::Json));
        assert_eq!(
            mc.mesh_mtls.as_ref().unwrap().min_protocol_version,
            Some(TlsProtocol::TlsV13)
        );
        assert_eq!(mc.discovery_selectors.len(), 2);
        let back = serde_json::to_value(&mc).unwrap();
        assert_eq!(back["meshMTLS"]["minProtocolVersion"], "TLSV1_3");
        assert_eq!(serde_json::from_value::<MeshConfig>(back).unwrap(), mc);
    }

    #[test]
    fn refuses_unknown_and_removed_fields() {
        for bad in [
            json!({"mixerCheckServer": "x"}),
            json!({"outboundTrafficPolicy": {"mode": "VIRTUAL_SERVICE_ONLY"}}),
            json!({"meshMTLS": {"minProtocolVersion": "TLSV1_1"}}),
            json!({"connectTimeout": "ten seconds"}),
        ] {
            assert!(
                serde_json::from_value::<MeshConfig>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
