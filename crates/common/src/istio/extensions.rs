//! `extensions.istio.io`: the `WasmPlugin` kind (v1alpha1), which adds WebAssembly
//! filters to proxies (istio/api `extensions/v1alpha1/wasm.proto`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::types::{PolicyTargetReference, WorkloadSelector};

/// The spec of a `WasmPlugin`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmPluginSpec {
    /// Workloads the plugin applies to; the namespace (or mesh) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The single resource (a Gateway or Service) the plugin applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// The resources the plugin applies to; exclusive with `selector` and `targetRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Where the module comes from: `oci://`, `file://`, `http(s)://`, or a bare OCI
    /// reference (`ghcr.io/org/plugin:v1`); required.
    #[serde(default)]
    pub url: String,
    /// SHA256 checksum of the module or OCI image (64 lowercase hex characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When to fetch the module again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Name of a Secret in the same namespace holding OCI pull credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Public key to verify module signatures; deprecated and unused by Istio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_key: Option<String>,
    /// Configuration handed to the plugin (free-form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<serde_json::Value>,
    /// The plugin name in the Envoy configuration (formerly `rootID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    /// Where in the filter chain the plugin is injected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<PluginPhase>,
    /// Order among plugins of the same phase; higher runs first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// What happens when the plugin fails fatally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_strategy: Option<FailStrategy>,
    /// Configuration of the Wasm VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<VmConfig>,
    /// Which traffic the plugin applies to; all traffic when empty.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub match_: Vec<WasmPluginTrafficSelector>,
    /// HTTP or network filter (`HTTP` by default).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub plugin_type: Option<PluginType>,
}

/// `PullPolicy`: when to pull a Wasm module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// `IfNotPresent`, except `Always` for the `latest` tag.
    #[default]
    #[serde(rename = "UNSPECIFIED_POLICY")]
    UnspecifiedPolicy,
    /// Use the cached module if present.
    IfNotPresent,
    /// Pull on every change of the resource.
    Always,
}

/// `PluginPhase`: where in the filter chain the plugin goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginPhase {
    /// At the end of the chain, just before the router.
    #[default]
    UnspecifiedPhase,
    /// Before Istio's authentication filters.
    Authn,
    /// Before Istio's authorization filters, after authentication.
    Authz,
    /// Before Istio's stats filters, after authorization.
    Stats,
}

/// `FailStrategy`: behaviour on a fatal plugin error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailStrategy {
    /// Fail the request (the default).
    #[default]
    FailClose,
    /// Skip the plugin and carry on.
    FailOpen,
    /// Reload the VM and retry.
    FailReload,
}

/// `PluginType`: HTTP or network filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PluginType {
    /// Treated as `HTTP`.
    #[default]
    UnspecifiedPluginType,
    /// An HTTP filter.
    Http,
    /// A network (L4) filter.
    Network,
}

/// `VmConfig`: settings of the Wasm VM.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VmConfig {
    /// Environment variables injected into the VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// `EnvVar`: one VM environment variable.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    /// Name of the variable; required.
    #[serde(default)]
    pub name: String,
    /// Where the value comes from (`INLINE` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvValueSource>,
    /// The value, for `INLINE` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `EnvValueSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EnvValueSource {
    /// The value given in `value`.
    #[default]
    Inline,
    /// The value of the proxy's own environment variable of the same name.
    Host,
}

/// `WasmPlugin.TrafficSelector`: which traffic the plugin sees.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WasmPluginTrafficSelector {
    /// Traffic direction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
    /// Destination ports; all ports when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSelector>,
}

/// `istio.type.v1beta1.WorkloadMode`: traffic direction relative to the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    /// Unset; treated as `CLIENT_AND_SERVER`.
    #[default]
    Undefined,
    /// Outbound traffic.
    Client,
    /// Inbound traffic.
    Server,
    /// Both directions.
    ClientAndServer,
}

/// `istio.type.v1beta1.PortSelector`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Port number, 1 to 65535; required.
    #[serde(default)]
    pub number: u32,
}

/// `extensions.istio.io/v1alpha1` root types.
pub mod v1alpha1 {
    crate::istio::crd!(
        "extensions.istio.io",
        "v1alpha1",
        "WasmPlugin",
        "wasmplugins",
        WasmPluginSpec,
        super::WasmPluginSpec
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;
    use serde_json::json;

    fn decode(v: serde_json::Value) -> Result<WasmPluginSpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn decodes_a_full_example() {
        let spec = decode(json!({
            "selector": {"matchLabels": {"istio": "ingressgateway"}},
            "url": "oci://private-registry:5000/openid-connect/openid:latest",
            "sha256": "a".repeat(64),
            "imagePullPolicy": "IfNotPresent",
            "imagePullSecret": "private-registry-pull-secret",
            "verificationKey": "key",
            "phase": "AUTHN",
            "priority": 10,
            "failStrategy": "FAIL_OPEN",
            "pluginName": "openid",
            "pluginConfig": {"openid_server": "authn", "openid_realm": "ingress"},
            "vmConfig": {"env": [
                {"name": "POD_NAME", "valueFrom": "HOST"},
                {"name": "TRUST_DOMAIN", "value": "cluster.local"}
            ]},
            "match": [{"mode": "SERVER", "ports": [{"number": 8080}]}],
            "type": "HTTP"
        }))
        .unwrap();
        assert_eq!(spec.image_pull_policy, Some(PullPolicy::IfNotPresent));
        assert_eq!(spec.phase, Some(PluginPhase::Authn));
        assert_eq!(
            spec.vm_config.as_ref().unwrap().env[0].value_from,
            Some(EnvValueSource::Host)
        );
        assert_eq!(spec.match_[0].ports[0].number, 8080);
        assert_eq!(spec.plugin_type, Some(PluginType::Http));
        assert_eq!(
            spec.plugin_config.as_ref().unwrap()["openid_realm"],
            "ingress"
        );
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(back["imagePullPolicy"], "IfNotPresent");
        assert_eq!(back["type"], "HTTP");
        assert_eq!(decode(back).unwrap(), spec);
    }

    #[test]
    fn accepts_every_enum_spelling() {
        for p in ["UNSPECIFIED_POLICY", "IfNotPresent", "Always"] {
            assert!(
                decode(json!({"url": "x", "imagePullPolicy": p})).is_ok(),
                "{p}"
            );
        }
        for p in ["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"] {
            assert!(decode(json!({"url": "x", "phase": p})).is_ok(), "{p}");
        }
        for p in ["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"] {
            assert!(
                decode(json!({"url": "x", "failStrategy": p})).is_ok(),
                "{p}"
            );
        }
        for m in ["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"] {
            assert!(
                decode(json!({"url": "x", "match": [{"mode": m}]})).is_ok(),
                "{m}"
            );
        }
        for t in ["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"] {
            assert!(decode(json!({"url": "x", "type": t})).is_ok(), "{t}");
        }
    }

    #[test]
    fn refuses_unknown_fields_and_bad_enums() {
        let err = decode(json!({"url": "x", "rootID": "a"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `rootID`"), "{err}");
        let err = decode(json!({"url": "x", "phase": "AUTH"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `AUTH`"), "{err}");
        assert!(decode(json!({"url": "x", "imagePullPolicy": "ALWAYS"})).is_err());
        assert!(
            decode(json!({"url": "x", "vmConfig": {"env": [{"name": "a", "valueFrom": "ENV"}]}}))
                .is_err()
        );
        assert!(
            decode(json!({"url": "x", "match": [{"ports": [{"number": 80, "name": "http"}]}]}))
                .is_err()
        );
    }

    #[test]
    fn root_type_and_crd() {
        let p: v1alpha1::WasmPlugin = serde_json::from_value(json!({
            "apiVersion": "extensions.istio.io/v1alpha1",
            "kind": "WasmPlugin",
            "metadata": {"name": "custom-auth"},
            "spec": {"url": "oci://ghcr.io/istio-ecosystem/wasm-extensions/basic-auth:v0.1", "phase": "AUTHN"}
        }))
        .unwrap();
        assert_eq!(p.spec.0.phase, Some(PluginPhase::Authn));
        assert_eq!(
            v1alpha1::WasmPlugin::crd().metadata.name.as_deref(),
            Some("wasmplugins.extensions.istio.io")
        );
    }
}
