//! `install.istio.io`: the `IstioOperator` kind (v1alpha1), the installation
//! description `istioctl install` and `mizzen install` read (istio/istio
//! `operator/pkg/apis/types.go`).
//!
//! The well-known fields are typed and strict. Kubernetes sub-objects (affinity,
//! resources, probes, volumes, …) and the Helm pass-through `values` /
//! `unvalidatedValues` stay as [`serde_json::Value`]: Istio checks `values` loosely
//! and accepts older Kubernetes shapes there (e.g. `hpaSpec.metrics[].resource.
//! targetAverageUtilization`). `meshConfig` is typed in [`MeshConfig`].

mod extension_provider;
mod mesh_config;
mod proxy_config;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use extension_provider::{
    DatadogTracingProvider, EnvoyExternalAuthorizationGrpcProvider,
    EnvoyExternalAuthorizationHttpProvider, EnvoyExternalAuthorizationRequestBody,
    EnvoyFileAccessLogProvider, EnvoyHttpGrpcV3LogProvider, EnvoyOpenTelemetryLogProvider,
    EnvoyTcpGrpcV3LogProvider, ExtensionProvider, HttpHeader, HttpService,
    LightstepTracingProvider, LogFormat, OpenTelemetryTracingProvider, PrometheusMetricsProvider,
    SkyWalkingTracingProvider, ZipkinTracingProvider,
};
pub use mesh_config::{
    AccessLogEncoding, CertificateData, ConfigResource, ConfigSource, DefaultProviders,
    H2UpgradePolicy, InboundTrafficPolicy, InboundTrafficPolicyMode, IngressControllerMode, MeshCa,
    MeshConfig, NormalizationType, OutboundTrafficPolicy, OutboundTrafficPolicyMode,
    ProxyPathNormalization, ServiceSettings, ServiceSettingsSettings, TlsConfig, TlsProtocol,
};
pub use proxy_config::{
    AuthenticationPolicy, InboundInterceptionMode, ProxyConfig, ProxyStatsMatcher, RemoteService,
    TracingServiceName,
};
pub use proxy_config::{
    Tracing, TracingCustomTag, TracingDatadog, TracingEnvironment, TracingLightstep,
    TracingLiteral, TracingOpenCensusAgent, TracingRequestHeader, TracingTraceContext,
    TracingZipkin,
};

/// The spec of an `IstioOperator`: a customization of an installation profile.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioOperatorSpec {
    /// Profile name (`default`, `demo`, `minimal`, …) or path; `default` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Path of the install package (charts and profiles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_package_path: Option<String>,
    /// Root of the container image paths, e.g. `docker.io/istio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// Image tag; a string, though Istio also accepts a number (`tag: 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<serde_json::Value>,
    /// Namespace for control plane resources; the resource's own when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Revision this installation belongs to (a DNS label such as `1-22-0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Behave like an older version (`major.minor`, e.g. `1.23`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility_version: Option<String>,
    /// Mesh-wide configuration used by the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_config: Option<MeshConfig>,
    /// Per-component enablement and Kubernetes settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<IstioComponentSpec>,
    /// Overrides of the Helm `values.yaml` (validated loosely by Istio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
    /// Unvalidated Helm overrides for custom templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unvalidated_values: Option<serde_json::Value>,
}

/// `IstioComponentSpec`: the components of an installation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IstioComponentSpec {
    /// CRDs and cluster roles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseComponentSpec>,
    /// istiod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pilot: Option<ComponentSpec>,
    /// The CNI node agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni: Option<ComponentSpec>,
    /// The CNI node agent for Windows nodes.
    #[serde(
        default,
        rename = "cni-windows",
        skip_serializing_if = "Option::is_none"
    )]
    pub cni_windows: Option<ComponentSpec>,
    /// The ambient node proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ztunnel: Option<ComponentSpec>,
    /// The ambient node proxy for Windows nodes.
    #[serde(
        default,
        rename = "ztunnel-windows",
        skip_serializing_if = "Option::is_none"
    )]
    pub ztunnel_windows: Option<ComponentSpec>,
    /// Remote cluster settings when the control plane is external.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istiod_remote: Option<ComponentSpec>,
    /// Ingress gateways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ingress_gateways: Vec<GatewayComponentSpec>,
    /// Egress gateways.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_gateways: Vec<GatewayComponentSpec>,
}

/// `BaseComponentSpec`: the base component has no image of its own.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BaseComponentSpec {
    /// Whether the component is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Kubernetes resource settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<KubernetesResourcesSpec>,
}

/// `ComponentSpec`: a control plane or node component.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ComponentSpec {
    /// Whether the component is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Namespace of the component.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Image hub, overriding the top-level `hub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// Image tag (string or number), overriding the top-level `tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<serde_json::Value>,
    /// Kubernetes resource settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<KubernetesResourcesSpec>,
}

/// `GatewayComponentSpec`: an ingress or egress gateway deployment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayComponentSpec {
    /// Name of the gateway deployment (e.g. `istio-ingressgateway`); required.
    #[serde(default)]
    pub name: String,
    /// Whether the gateway is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Namespace of the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Image hub, overriding the top-level `hub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// Image tag (string or number), overriding the top-level `tag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<serde_json::Value>,
    /// Labels of the gateway pods (e.g. `istio: ingressgateway`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label: BTreeMap<String, String>,
    /// Kubernetes resource settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k8s: Option<KubernetesResourcesSpec>,
}

/// `KubernetesResourcesSpec`: Kubernetes settings common to all components. The
/// Kubernetes objects keep their upstream shape as JSON values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesResourcesSpec {
    /// Pod affinity (`core/v1 Affinity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<serde_json::Value>,
    /// Container environment variables (`core/v1 EnvVar` list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<serde_json::Value>,
    /// HorizontalPodAutoscaler spec (autoscaling v2, or the older v2beta1 shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa_spec: Option<serde_json::Value>,
    /// Container image pull policy (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Pod node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// PodDisruptionBudget spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_disruption_budget: Option<serde_json::Value>,
    /// Pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Pod priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Container readiness probe (`core/v1 Probe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<serde_json::Value>,
    /// Deployment replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_count: Option<u32>,
    /// Container resources (`core/v1 ResourceRequirements`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<serde_json::Value>,
    /// Service spec (`core/v1 ServiceSpec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<serde_json::Value>,
    /// Deployment strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<serde_json::Value>,
    /// Pod tolerations (`core/v1 Toleration` list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<serde_json::Value>,
    /// Service annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_annotations: BTreeMap<String, String>,
    /// Pod security context (`core/v1 PodSecurityContext`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<serde_json::Value>,
    /// Pod volumes (`core/v1 Volume` list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<serde_json::Value>,
    /// Container volume mounts (`core/v1 VolumeMount` list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<serde_json::Value>,
    /// Patches applied to rendered resources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overlays: Vec<K8sObjectOverlay>,
}

/// `KubernetesOverlay`: patches for one rendered resource.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sObjectOverlay {
    /// API version of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the resource (its namespace is the component's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Patches to apply, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patches: Vec<K8sObjectOverlayPatch>,
}

/// `Patch`: one overlay patch.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sObjectOverlayPatch {
    /// Path such as `spec.template.spec.containers.[name:istio-proxy].args`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Value to add or replace; unset to delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// `install.istio.io/v1alpha1` root types.
pub mod v1alpha1 {
    crate::istio::crd!(
        "install.istio.io",
        "v1alpha1",
        "IstioOperator",
        "istiooperators",
        IstioOperatorSpec,
        super::IstioOperatorSpec
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    fn decode(v: serde_json::Value) -> Result<IstioOperatorSpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn decodes_a_full_example() {
        let k8s = json!({
            "env": [{"name": "PILOT_TRACE_SAMPLING", "value": "100"}],
            "replicaCount": 2,
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "podAnnotations": {"a": "b"},
            "priorityClassName": "system-cluster-critical",
            "imagePullPolicy": "IfNotPresent",
            "affinity": {"nodeAffinity": {}},
            "tolerations": [{"key": "k", "operator": "Exists"}],
            "strategy": {"rollingUpdate": {"maxSurge": "100%"}},
            "podDisruptionBudget": {"minAvailable": 1},
            "readinessProbe": {"periodSeconds": 3},
            "securityContext": {"runAsUser": 1337},
            "volumes": [{"name": "v", "emptyDir": {}}],
            "volumeMounts": [{"name": "v", "mountPath": "/v"}],
            "serviceAnnotations": {"x": "y"},
            "service": {"type": "ClusterIP"},
            "overlays": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "istiod",
                          "patches": [{"path": "spec.replicas", "value": 3}]}]
        });
        let ingress = json!({"name": "istio-ingressgateway", "enabled": true,
                             "label": {"istio": "ingressgateway"},
                             "k8s": {"service": {"ports": [{"port": 80}]}}});
        let egress = json!({"name": "istio-egressgateway", "enabled": true, "namespace": "egress"});
        let components = json!({
            "base": {"enabled": true},
            "pilot": {"enabled": true, "hub": "docker.io/istio", "tag": 1, "k8s": k8s},
            "cni": {"enabled": true, "namespace": "kube-system"},
            "ztunnel": {"enabled": false},
            "ingressGateways": [ingress],
            "egressGateways": [egress]
        });
        let spec = decode(json!({
            "profile": "default",
            "installPackagePath": "/tmp/istio/manifests",
            "hub": "gcr.io/istio-testing",
            "tag": "latest",
            "namespace": "istio-system",
            "revision": "1-22-0",
            "compatibilityVersion": "1.23",
            "meshConfig": {"accessLogFile": "/dev/stdout", "enableTracing": true},
            "components": components,
            "values": {"global": {"proxy": {"resources": {"requests": {"cpu": "100m"}}}}},
            "unvalidatedValues": {"custom": {"thing": true}}
        }))
        .unwrap();
        let comps = spec.components.as_ref().unwrap();
        assert_eq!(comps.pilot.as_ref().unwrap().tag, Some(json!(1)));
        assert_eq!(
            comps
                .pilot
                .as_ref()
                .unwrap()
                .k8s
                .as_ref()
                .unwrap()
                .replica_count,
            Some(2)
        );
        assert_eq!(comps.ingress_gateways[0].label["istio"], "ingressgateway");
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(decode(back).unwrap(), spec);
    }

    #[test]
    fn decodes_the_seed_operators() {
        // Seeds 01, 14, 15, 20, 21 and 22 of the user guide corpus.
        let seeds = [
            json!({"profile": "default",
                   "components": {"egressGateways": [{"name": "istio-egressgateway", "enabled": true}]},
                   "meshConfig": {"accessLogFile": "/dev/stdout", "enableTracing": true},
                   "values": {"global": {"proxy": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                                                 "limits": {"cpu": "500m", "memory": "256Mi"}}}}}}),
            json!({"components": {"pilot": {"k8s": {"env": [{"name": "PILOT_CERT_PROVIDER", "value": "istiod"}]}}},
                   "values": {"global": {"caAddress": "istiod.istio-system.svc:15012", "pilotCertProvider": "istiod",
                                         "jwtPolicy": "third-party-jwt", "meshID": "mesh1"}}}),
            json!({"meshConfig": {"enableTracing": true, "defaultConfig": {"tracing": {
                   "sampling": 100, "zipkin": {"address": "zipkin.istio-system:9411"}}}}}),
            json!({"components": {"pilot": {"k8s": {
                   "resources": {"requests": {"cpu": "500m", "memory": "2048Mi"}, "limits": {"cpu": "1000m", "memory": "4096Mi"}},
                   "hpaSpec": {"minReplicas": 2, "maxReplicas": 5, "metrics": [{"type": "Resource",
                       "resource": {"name": "cpu", "targetAverageUtilization": 80}}]}}}}}),
            json!({"meshConfig": {"defaultConfig": {"concurrency": 2, "proxyMetadata": {"ISTIO_META_HTTP10": "1"}}},
                   "values": {"global": {"proxy": {"resources": {"limits": {"memory": "1024Mi"}}}}}}),
            json!({"meshConfig": {"defaultConfig": {"proxyMetadata": {"ISTIO_META_ENABLE_ALPN": "false"}}}}),
        ];
        for (i, seed) in seeds.into_iter().enumerate() {
            decode(seed).unwrap_or_else(|e| panic!("seed #{i}: {e}"));
        }
    }

    #[test]
    fn refuses_unknown_fields_bad_enums_and_bad_durations() {
        let err = decode(json!({"components": {"pilot": {"k8s": {"replicas": 2}}}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `replicas`"), "{err}");
        let err = decode(json!({"meshConfig": {"accessLogEncoding": "XML"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `XML`"), "{err}");
        let err = decode(json!({"meshConfig": {"defaultConfig": {"drainDuration": "45"}}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
        assert!(decode(json!({"meshConfig": {"defaultConfig": {"concurency": 2}}})).is_err());
        assert!(decode(json!({"addonComponents": {}})).is_err());
    }

    #[test]
    fn root_type_and_crd() {
        let op: v1alpha1::IstioOperator = serde_json::from_value(json!({
            "apiVersion": "install.istio.io/v1alpha1",
            "kind": "IstioOperator",
            "metadata": {"name": "istio-control-plane", "namespace": "istio-system"},
            "spec": {"profile": "demo"}
        }))
        .unwrap();
        assert_eq!(op.spec.0.profile.as_deref(), Some("demo"));
        assert_eq!(
            v1alpha1::IstioOperator::crd().metadata.name.as_deref(),
            Some("istiooperators.install.istio.io")
        );
    }
}
