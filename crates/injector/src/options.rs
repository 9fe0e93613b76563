//! What an injection needs besides the pod: the injector's revision, the proxy
//! image, where the sidecar finds pilot and citadel, whether to use native
//! sidecars, and the mesh-wide defaults of a Helm-style values file
//! ([`Values`], the keys of Istio's `values.global.proxy` and
//! `meshConfig.defaultConfig` that shape the sidecar).
//!
//! Values files are shared with the whole chart, so keys outside the two
//! sections are not this module's business; keys inside them that Mizzen does
//! not honour are reported by [`Values::from_yaml`] (the injector logs them at
//! start), never silently dropped.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Default hub of Mizzen's images.
pub const DEFAULT_HUB: &str = "docker.io/mizzen";
/// Default tag of Mizzen's images: this build's version.
pub const DEFAULT_TAG: &str = env!("CARGO_PKG_VERSION");
/// Where sidecars find pilot's plaintext ADS.
pub const DEFAULT_DISCOVERY_ADDRESS: &str = "pilot.istio-system.svc:15010";
/// Where sidecars find citadel.
pub const DEFAULT_CA_ADDRESS: &str = "citadel.istio-system.svc:15012";
/// The revision of an injector started without `--revision`.
pub const DEFAULT_REVISION: &str = "default";

/// Everything an injection needs besides the pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// This injector's revision (`default` without `--revision`).
    pub revision: String,
    /// The sidecar's image (`<hub>/proxy:<tag>`).
    pub proxy_image: String,
    /// Pilot's ADS address as the sidecar dials it (a DNS name works).
    pub discovery_address: String,
    /// Citadel's address as the sidecar dials it.
    pub ca_address: String,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// `istio-proxy` as a native sidecar (an init container with
    /// `restartPolicy: Always`, Kubernetes ≥ 1.28) rather than a container;
    /// a pod's `sidecar.istio.io/nativeSidecar` annotation overrides it.
    pub native_sidecars: bool,
    /// Mesh-wide defaults.
    pub values: Values,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            revision: DEFAULT_REVISION.into(),
            proxy_image: image(DEFAULT_HUB, DEFAULT_TAG),
            discovery_address: DEFAULT_DISCOVERY_ADDRESS.into(),
            ca_address: DEFAULT_CA_ADDRESS.into(),
            trust_domain: "cluster.local".into(),
            native_sidecars: true,
            values: Values::default(),
        }
    }
}

/// `<hub>/proxy:<tag>`, the contract's image name.
pub fn image(hub: &str, tag: &str) -> String {
    format!("{}/proxy:{tag}", hub.trim_end_matches('/'))
}

/// CPU and memory as Kubernetes quantities (`100m`, `128Mi`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuMemory {
    /// CPU.
    pub cpu: Option<String>,
    /// Memory.
    pub memory: Option<String>,
}

/// The sidecar's requests and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Requests (Istio: 100m, 128Mi).
    pub requests: CpuMemory,
    /// Limits (Istio: 2000m, 1024Mi).
    pub limits: CpuMemory,
}

impl Default for Resources {
    fn default() -> Resources {
        Resources {
            requests: CpuMemory {
                cpu: Some("100m".into()),
                memory: Some("128Mi".into()),
            },
            limits: CpuMemory {
                cpu: Some("2000m".into()),
                memory: Some("1024Mi".into()),
            },
        }
    }
}

/// The mesh-wide sidecar defaults (Istio's values and `meshConfig.defaultConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    /// `global.proxy.resources`.
    pub resources: Resources,
    /// `global.proxy.holdApplicationUntilProxyStarts` or
    /// `meshConfig.defaultConfig.holdApplicationUntilProxyStarts`. On by
    /// default in Mizzen (Istio: off), so apps start with a ready sidecar.
    pub hold_application_until_proxy_starts: bool,
    /// `global.proxy.logLevel` (Istio: `warning`).
    pub log_level: String,
    /// `meshConfig.defaultConfig.concurrency` (Istio's sidecar default: 2).
    pub concurrency: u32,
    /// `meshConfig.defaultConfig.proxyMetadata`: environment of the sidecar.
    pub proxy_metadata: BTreeMap<String, String>,
    /// `meshConfig.accessLogFile`: where every sidecar writes its access log
    /// (`/dev/stdout`), none when empty.
    pub access_log_file: Option<String>,
    /// `global.proxy.includeIPRanges` (default `*`).
    pub include_ip_ranges: String,
    /// `global.proxy.excludeIPRanges`.
    pub exclude_ip_ranges: String,
    /// `global.proxy.includeInboundPorts` (default `*`).
    pub include_inbound_ports: String,
    /// `global.proxy.excludeInboundPorts`.
    pub exclude_inbound_ports: String,
    /// `global.proxy.excludeOutboundPorts`.
    pub exclude_outbound_ports: String,
    /// `global.proxy.statusPort` (15020).
    pub status_port: u16,
    /// `global.proxy.autoInject`: `enabled` (true, the default) injects every
    /// pod the webhook is called for unless it opts out; `disabled` only pods
    /// labelled `sidecar.istio.io/inject: "true"` (or matching
    /// `alwaysInjectSelector`).
    pub auto_inject: bool,
    /// `sidecarInjectorWebhook.neverInjectSelector`: label selectors of pods
    /// never injected unless they ask.
    pub never_inject_selector: Vec<Value>,
    /// `sidecarInjectorWebhook.alwaysInjectSelector`: label selectors of pods
    /// injected whatever the policy, unless they opt out.
    pub always_inject_selector: Vec<Value>,
    /// `sidecarInjectorWebhook.injectedAnnotations`: added to every injected pod.
    pub injected_annotations: BTreeMap<String, String>,
}

impl Default for Values {
    fn default() -> Values {
        Values {
            resources: Resources::default(),
            hold_application_until_proxy_starts: true,
            log_level: "warning".into(),
            concurrency: 2,
            proxy_metadata: BTreeMap::new(),
            access_log_file: None,
            include_ip_ranges: "*".into(),
            exclude_ip_ranges: String::new(),
            include_inbound_ports: "*".into(),
            exclude_inbound_ports: String::new(),
            exclude_outbound_ports: String::new(),
            status_port: 15020,
            auto_inject: true,
            never_inject_selector: Vec::new(),
            always_inject_selector: Vec::new(),
            injected_annotations: BTreeMap::new(),
        }
    }
}

/// Why a values file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    /// The file could not be read.
    #[error("cannot read the values file {path} (--values): {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("the values file {path} (--values) is not YAML: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// The parser's message.
        reason: String,
    },
    /// A key has the wrong type.
    #[error("the values file {path} (--values): `{key}` {reason}")]
    Field {
        /// The file.
        path: String,
        /// The dotted key.
        key: String,
        /// What is expected.
        reason: String,
    },
}

/// Keys of `global.proxy` the injector honours.
const PROXY_KEYS: &[&str] = &[
    "resources",
    "holdApplicationUntilProxyStarts",
    "logLevel",
    "includeIPRanges",
    "excludeIPRanges",
    "includeInboundPorts",
    "excludeInboundPorts",
    "excludeOutboundPorts",
    "statusPort",
    "autoInject",
];
/// Keys of `sidecarInjectorWebhook` the injector honours.
const WEBHOOK_KEYS: &[&str] = &[
    "neverInjectSelector",
    "alwaysInjectSelector",
    "injectedAnnotations",
];
/// Keys of `meshConfig.defaultConfig` the injector honours.
const DEFAULT_CONFIG_KEYS: &[&str] = &[
    "holdApplicationUntilProxyStarts",
    "concurrency",
    "proxyMetadata",
];

impl Values {
    /// Reads a values file; see [`Values::from_yaml`].
    pub fn from_file(path: &Path) -> Result<(Values, Vec<String>), ValuesError> {
        let text = std::fs::read_to_string(path).map_err(|source| ValuesError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Values::from_yaml(&text, &path.display().to_string())
    }

    /// The values of a Helm-style values document (`global.proxy.*`,
    /// `meshConfig.defaultConfig.*`; an IstioOperator's `spec.values` and
    /// `spec.meshConfig` work too), and one sentence per key in those sections
    /// that Mizzen does not honour.
    pub fn from_yaml(text: &str, path: &str) -> Result<(Values, Vec<String>), ValuesError> {
        let doc: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_saphyr::from_str(text).map_err(|e| ValuesError::Syntax {
                path: path.into(),
                reason: e.to_string(),
            })?
        };
        // An IstioOperator: values and meshConfig sit under spec.
        let (values, mesh) = match doc.get("spec") {
            Some(spec) if doc.get("kind").and_then(Value::as_str) == Some("IstioOperator") => {
                (spec.get("values"), spec.get("meshConfig"))
            }
            _ => (Some(&doc), doc.get("meshConfig")),
        };
        let field = |key: &str, reason: &str| ValuesError::Field {
            path: path.into(),
            key: key.into(),
            reason: reason.into(),
        };
        let mut out = Values::default();
        let mut ignored = Vec::new();
        if let Some(proxy) = values.and_then(|v| v.pointer("/global/proxy")) {
            let Some(map) = proxy.as_object() else {
                return Err(field("global.proxy", "must be a mapping"));
            };
            for (key, v) in map {
                let k = format!("global.proxy.{key}");
                match key.as_str() {
                    "resources" => out.resources = resources(v).map_err(|r| field(&k, &r))?,
                    "holdApplicationUntilProxyStarts" => {
                        out.hold_application_until_proxy_starts = v
                            .as_bool()
                            .ok_or_else(|| field(&k, "must be true or false"))?;
                    }
                    "logLevel" => out.log_level = string(v).map_err(|r| field(&k, &r))?,
                    "includeIPRanges" => {
                        out.include_ip_ranges = string(v).map_err(|r| field(&k, &r))?
                    }
                    "excludeIPRanges" => {
                        out.exclude_ip_ranges = string(v).map_err(|r| field(&k, &r))?
                    }
                    "includeInboundPorts" => {
                        out.include_inbound_ports = string(v).map_err(|r| field(&k, &r))?;
                    }
                    "excludeInboundPorts" => {
                        out.exclude_inbound_ports = string(v).map_err(|r| field(&k, &r))?;
                    }
                    "excludeOutboundPorts" => {
                        out.exclude_outbound_ports = string(v).map_err(|r| field(&k, &r))?;
                    }
                    "statusPort" => {
                        out.status_port = v
                            .as_u64()
                            .and_then(|p| u16::try_from(p).ok())
                            .ok_or_else(|| field(&k, "must be a port number (0 turns it off)"))?;
                    }
                    "autoInject" => {
                        out.auto_inject = match v.as_str() {
                            Some("enabled") => true,
                            Some("disabled") => false,
                            _ => return Err(field(&k, "must be enabled or disabled")),
                        };
                    }
                    _ => ignored.push(k),
                }
            }
        }
        if let Some(webhook) = values.and_then(|v| v.get("sidecarInjectorWebhook")) {
            let Some(map) = webhook.as_object() else {
                return Err(field("sidecarInjectorWebhook", "must be a mapping"));
            };
            for (key, v) in map {
                let k = format!("sidecarInjectorWebhook.{key}");
                match key.as_str() {
                    "neverInjectSelector" => {
                        out.never_inject_selector = selectors(v).map_err(|r| field(&k, &r))?;
                    }
                    "alwaysInjectSelector" => {
                        out.always_inject_selector = selectors(v).map_err(|r| field(&k, &r))?;
                    }
                    "injectedAnnotations" => {
                        out.injected_annotations = string_map(v).map_err(|r| field(&k, &r))?;
                    }
                    _ => ignored.push(k),
                }
            }
        }
        if let Some(init) = values
            .and_then(|v| v.pointer("/global/proxy_init"))
            .and_then(Value::as_object)
        {
            ignored.extend(init.keys().map(|key| format!("global.proxy_init.{key}")));
        }
        if let Some(file) = mesh.and_then(|m| m.get("accessLogFile")) {
            let file = string(file).map_err(|r| field("meshConfig.accessLogFile", &r))?;
            out.access_log_file = (!file.is_empty()).then_some(file);
        }
        if let Some(defaults) = mesh.and_then(|m| m.get("defaultConfig")) {
            let Some(map) = defaults.as_object() else {
                return Err(field("meshConfig.defaultConfig", "must be a mapping"));
            };
            for (key, v) in map {
                let k = format!("meshConfig.defaultConfig.{key}");
                match key.as_str() {
                    "holdApplicationUntilProxyStarts" => {
                        out.hold_application_until_proxy_starts = v
                            .as_bool()
                            .ok_or_else(|| field(&k, "must be true or false"))?;
                    }
                    "concurrency" => {
                        out.concurrency = v
                            .as_u64()
                            .and_then(|c| u32::try_from(c).ok())
                            .ok_or_else(|| field(&k, "must be a whole number"))?;
                    }
                    "proxyMetadata" => {
                        out.proxy_metadata = string_map(v).map_err(|r| field(&k, &r))?;
                    }
                    _ => ignored.push(k),
                }
            }
        }
        let warnings = ignored
            .into_iter()
            .map(|k| {
                format!(
                    "{path}: `{k}` is not honoured by Mizzen's injector and has no effect (it \
                     reads global.proxy.{{{}}}, sidecarInjectorWebhook.{{{}}} and \
                     meshConfig.defaultConfig.{{{}}})",
                    PROXY_KEYS.join(","),
                    WEBHOOK_KEYS.join(","),
                    DEFAULT_CONFIG_KEYS.join(",")
                )
            })
            .collect();
        Ok((out, warnings))
    }
}

/// A string, or a number written as one (`1`), as Helm renders it.
fn string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err("must be a string".into()),
    }
}

/// A mapping of strings.
pub(crate) fn string_map(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let Some(map) = v.as_object() else {
        return Err("must be a mapping of strings".into());
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
            _ => Err(format!("`{k}` must be a string")),
        })
        .collect()
}

/// A list of Kubernetes label selectors (`matchLabels`, `matchExpressions`
/// with In, NotIn, Exists, DoesNotExist).
fn selectors(v: &Value) -> Result<Vec<Value>, String> {
    let Some(list) = v.as_array() else {
        return Err("must be a list of label selectors".into());
    };
    for (i, s) in list.iter().enumerate() {
        let Some(map) = s.as_object() else {
            return Err(format!("[{i}] must be a label selector mapping"));
        };
        for (key, part) in map {
            match key.as_str() {
                "matchLabels" => {
                    string_map(part).map_err(|r| format!("[{i}].matchLabels {r}"))?;
                }
                "matchExpressions" => {
                    for (j, e) in part.as_array().into_iter().flatten().enumerate() {
                        let op = e.get("operator").and_then(Value::as_str);
                        let values_ok = e.get("values").is_none_or(|v| {
                            v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
                        });
                        if e.get("key").and_then(Value::as_str).is_none()
                            || !matches!(op, Some("In" | "NotIn" | "Exists" | "DoesNotExist"))
                            || !values_ok
                        {
                            return Err(format!(
                                "[{i}].matchExpressions[{j}] needs a key, an operator (In, NotIn, \
                                 Exists, DoesNotExist) and string values"
                            ));
                        }
                    }
                }
                other => return Err(format!("[{i}].{other} is not a label selector field")),
            }
        }
    }
    Ok(list.clone())
}

fn resources(v: &Value) -> Result<Resources, String> {
    let part = |name: &str| -> Result<CpuMemory, String> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(CpuMemory::default()),
            Some(p) => Ok(CpuMemory {
                cpu: p.get("cpu").map(string).transpose()?,
                memory: p.get("memory").map(string).transpose()?,
            }),
        }
    };
    if !v.is_object() {
        return Err("must be a mapping with requests and limits".into());
    }
    Ok(Resources {
        requests: part("requests")?,
        limits: part("limits")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_istio_values_and_names_what_it_ignores() {
        let (v, warnings) = Values::from_yaml(
            "global:\n  hub: x\n  proxy:\n    resources:\n      requests: {cpu: 50m, memory: 64Mi}\n      limits: {cpu: 1, memory: 512Mi}\n    holdApplicationUntilProxyStarts: false\n    logLevel: debug\n    privileged: true\nmeshConfig:\n  defaultConfig:\n    concurrency: 4\n    proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}\n    tracing: {}\n",
            "values.yaml",
        )
        .unwrap();
        assert_eq!(v.resources.requests.cpu.as_deref(), Some("50m"));
        assert_eq!(v.resources.limits.cpu.as_deref(), Some("1"));
        assert!(!v.hold_application_until_proxy_starts);
        assert_eq!(v.log_level, "debug");
        assert_eq!(v.concurrency, 4);
        assert_eq!(v.proxy_metadata["ISTIO_META_DNS_CAPTURE"], "true");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("global.proxy.privileged"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("meshConfig.defaultConfig.tracing"));
    }

    #[test]
    fn reads_the_mesh_access_log_file() {
        let (v, warnings) =
            Values::from_yaml("meshConfig:\n  accessLogFile: /dev/stdout\n", "v.yaml").unwrap();
        assert_eq!(v.access_log_file.as_deref(), Some("/dev/stdout"));
        assert!(warnings.is_empty(), "{warnings:?}");
        let (v, _) = Values::from_yaml("meshConfig:\n  accessLogFile: \"\"\n", "v.yaml").unwrap();
        assert_eq!(v.access_log_file, None);
        let e = Values::from_yaml("meshConfig:\n  accessLogFile: [a]\n", "v.yaml").unwrap_err();
        assert!(e.to_string().contains("meshConfig.accessLogFile"), "{e}");
    }

    #[test]
    fn reads_the_injection_policy_and_selectors() {
        let (v, warnings) = Values::from_yaml(
            "global:\n  proxy: {autoInject: disabled}\n  proxy_init: {image: proxyv2}\nsidecarInjectorWebhook:\n  neverInjectSelector:\n  - matchExpressions: [{key: openshift.io/build.name, operator: Exists}]\n  alwaysInjectSelector:\n  - matchLabels: {mesh: \"on\"}\n  injectedAnnotations: {team: mesh}\n  rewriteAppHTTPProbe: true\n",
            "values.yaml",
        )
        .unwrap();
        assert!(!v.auto_inject);
        assert_eq!(v.never_inject_selector.len(), 1);
        assert_eq!(v.always_inject_selector[0]["matchLabels"]["mesh"], "on");
        assert_eq!(v.injected_annotations["team"], "mesh");
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].contains("sidecarInjectorWebhook.rewriteAppHTTPProbe"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].contains("global.proxy_init.image"),
            "{warnings:?}"
        );
        for bad in [
            "sidecarInjectorWebhook: {neverInjectSelector: {a: b}}",
            "sidecarInjectorWebhook: {neverInjectSelector: [{matchExpressions: [{key: a, operator: Near}]}]}",
            "sidecarInjectorWebhook: {alwaysInjectSelector: [{labels: {a: b}}]}",
            "global: {proxy: {autoInject: sometimes}}",
        ] {
            let err = Values::from_yaml(bad, "v.yaml").unwrap_err().to_string();
            assert!(err.contains("v.yaml"), "{bad}: {err}");
        }
    }

    #[test]
    fn reads_an_istio_operator_and_refuses_bad_types() {
        let (v, _) = Values::from_yaml(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  meshConfig:\n    defaultConfig:\n      holdApplicationUntilProxyStarts: false\n",
            "op.yaml",
        )
        .unwrap();
        assert!(!v.hold_application_until_proxy_starts);
        let err = Values::from_yaml(
            "meshConfig:\n  defaultConfig:\n    concurrency: lots\n",
            "v.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("meshConfig.defaultConfig.concurrency") && err.contains("v.yaml"),
            "{err}"
        );
        assert_eq!(Values::from_yaml("", "e").unwrap().0, Values::default());
    }
}
