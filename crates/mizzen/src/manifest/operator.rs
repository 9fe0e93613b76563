//! IstioOperator → the chart's values: what `-f istio-operator.yaml` and
//! istioctl-style `--set spec.path=value` mean for `deploy/charts/mizzen`.
//!
//! The overlay is Istio's `IstioOperator` spec (`profile`, `hub`, `tag`,
//! `revision`, `meshConfig`, `components`, `values`). Every field either takes
//! effect through a chart value or is refused with its path; `meshConfig` fields
//! Mizzen keeps in the mesh ConfigMap without acting on them are reported as
//! warnings, so nothing is dropped silently.

use serde_json::{Map, Value, json};

/// Profiles and what they install (`--set profile=NAME`).
pub const PROFILES: &[(&str, &str)] = &[
    (
        "default",
        "the control plane and an ingress gateway (Istio's default)",
    ),
    (
        "demo",
        "everything, small resources, access logs to stdout, an egress gateway too",
    ),
    ("minimal", "the control plane only, no gateways"),
    (
        "production",
        "two replicas of every service with PodDisruptionBudgets, pilot and the ingress gateway autoscaled",
    ),
];

/// What the overlay asked for that Mizzen cannot do, and what it only keeps.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Refused fields: `spec.path: why`.
    pub errors: Vec<(String, String)>,
    /// Fields kept but not acted on: `spec.path: what happens`.
    pub warnings: Vec<(String, String)>,
}

/// Applies the IstioOperator `spec` to `values` (the chart's values with the
/// profile already merged) and returns the release namespace it names, if any.
pub fn apply(
    spec: &Map<String, Value>,
    values: &mut Value,
    outcome: &mut Outcome,
) -> Option<String> {
    let mut namespace = None;
    for (key, v) in spec {
        let path = format!("spec.{key}");
        match key.as_str() {
            "profile" => {}
            "hub" => set(values, &["global", "hub"], v.clone()),
            "tag" => set(values, &["global", "tag"], Value::String(scalar_text(v))),
            "revision" => set(values, &["revision"], Value::String(scalar_text(v))),
            "namespace" => namespace = v.as_str().map(str::to_string),
            "meshConfig" => mesh_config(v, values, outcome),
            "components" => components(v, values, outcome),
            "values" => helm_values(v, values, outcome),
            _ => refuse(outcome, path, "not supported by Mizzen"),
        }
    }
    namespace
}

fn refuse(outcome: &mut Outcome, path: impl Into<String>, why: impl Into<String>) {
    outcome.errors.push((path.into(), why.into()));
}

fn warn(outcome: &mut Outcome, path: impl Into<String>, what: impl Into<String>) {
    outcome.warnings.push((path.into(), what.into()));
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Sets `values.<path>`, creating maps on the way.
pub fn set(values: &mut Value, path: &[&str], v: Value) {
    let mut at = values;
    for (i, field) in path.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else { return };
        if i + 1 == path.len() {
            map.insert(field.to_string(), v);
            return;
        }
        at = map.entry(field.to_string()).or_insert_with(|| json!({}));
    }
}

fn mesh_config(mesh: &Value, values: &mut Value, outcome: &mut Outcome) {
    let Some(mesh) = mesh.as_object() else {
        return refuse(outcome, "spec.meshConfig", "must be a map");
    };
    for (key, v) in mesh {
        // Every field is kept in the mesh ConfigMap `istio`, as Istio keeps it.
        set(values, &["meshConfig", key], v.clone());
        let path = format!("spec.meshConfig.{key}");
        match key.as_str() {
            "accessLogFile" => set(values, &["global", "proxy", "accessLogFile"], v.clone()),
            "trustDomain" => set(values, &["global", "trustDomain"], v.clone()),
            "defaultConfig" => default_config(v, values, outcome),
            "enableTracing" if v == &Value::Bool(false) => {}
            "enableTracing" => warn(
                outcome,
                path,
                "not applied: Mizzen's proxy traces through a Telemetry resource with an OpenTelemetry provider, not through meshConfig",
            ),
            _ => warn(
                outcome,
                path,
                "kept in the mesh ConfigMap; Mizzen's pilot does not act on it",
            ),
        }
    }
}

fn default_config(config: &Value, values: &mut Value, outcome: &mut Outcome) {
    let Some(config) = config.as_object() else {
        return refuse(outcome, "spec.meshConfig.defaultConfig", "must be a map");
    };
    for (key, v) in config {
        let path = format!("spec.meshConfig.defaultConfig.{key}");
        match key.as_str() {
            "concurrency" => set(values, &["global", "proxy", "concurrency"], v.clone()),
            "holdApplicationUntilProxyStarts" => set(
                values,
                &["global", "proxy", "holdApplicationUntilProxyStarts"],
                v.clone(),
            ),
            "proxyMetadata" => {
                let Some(entries) = v.as_object() else {
                    refuse(outcome, path, "must be a map of strings");
                    continue;
                };
                for (name, value) in entries {
                    set(
                        values,
                        &["global", "proxy", "proxyMetadata", name],
                        Value::String(scalar_text(value)),
                    );
                }
            }
            "tracing" => warn(
                outcome,
                path,
                "not applied: Mizzen's proxy exports traces over OTLP, configured by a Telemetry resource; Zipkin/Lightstep/Datadog tracers are not supported",
            ),
            _ => warn(
                outcome,
                path,
                "kept in the mesh ConfigMap; the sidecar does not act on it",
            ),
        }
    }
}

fn components(components: &Value, values: &mut Value, outcome: &mut Outcome) {
    let Some(components) = components.as_object() else {
        return refuse(outcome, "spec.components", "must be a map");
    };
    for (key, v) in components {
        let path = format!("spec.components.{key}");
        match key.as_str() {
            "base" => {
                if v.get("enabled") == Some(&Value::Bool(false)) {
                    refuse(
                        outcome,
                        format!("{path}.enabled"),
                        "the CRDs (base) are always installed by Mizzen",
                    );
                }
            }
            "pilot" => component(&path, v, "pilot", values, outcome),
            "ingressGateways" | "egressGateways" => gateways(&path, key, v, values, outcome),
            "cni" | "ztunnel" | "istiodRemote" | "cniWindows" | "ztunnelWindows" => {
                if v.get("enabled") == Some(&Value::Bool(true)) {
                    refuse(
                        outcome,
                        format!("{path}.enabled"),
                        "not supported by Mizzen",
                    );
                }
            }
            _ => refuse(outcome, path, "unknown component"),
        }
    }
}

fn component(path: &str, spec: &Value, name: &str, values: &mut Value, outcome: &mut Outcome) {
    let Some(spec) = spec.as_object() else {
        return refuse(outcome, path, "must be a map");
    };
    for (key, v) in spec {
        match key.as_str() {
            "enabled" => set(values, &[name, "enabled"], v.clone()),
            "k8s" => {
                if let Some(target) = values.get_mut(name) {
                    k8s(&format!("{path}.k8s"), v, target, true, outcome);
                }
            }
            _ => refuse(outcome, format!("{path}.{key}"), "not supported by Mizzen"),
        }
    }
}

fn gateways(path: &str, kind: &str, list: &Value, values: &mut Value, outcome: &mut Outcome) {
    let Some(list) = list.as_array() else {
        return refuse(outcome, path, "must be a list");
    };
    for (i, gw) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(name) = gw.get("name").and_then(Value::as_str) else {
            refuse(outcome, format!("{at}.name"), "every gateway needs a name");
            continue;
        };
        let Some(Value::Array(entries)) = values.get_mut(kind) else {
            continue;
        };
        let index = match entries.iter().position(|e| e.get("name") == gw.get("name")) {
            Some(index) => index,
            None => {
                let mut entry = crate::manifest::chart_gateway(kind);
                set(&mut entry, &["name"], json!(name));
                set(&mut entry, &["labels", "app"], json!(name));
                entries.push(entry);
                entries.len() - 1
            }
        };
        let entry = &mut entries[index];
        for (key, v) in gw.as_object().into_iter().flatten() {
            match key.as_str() {
                "name" => {}
                "enabled" => set(entry, &["enabled"], v.clone()),
                "label" => {
                    for (k, l) in v.as_object().into_iter().flatten() {
                        set(entry, &["labels", k], l.clone());
                    }
                }
                "k8s" => k8s(&format!("{at}.k8s"), v, entry, false, outcome),
                _ => refuse(outcome, format!("{at}.{key}"), "not supported by Mizzen"),
            }
        }
    }
}

/// `components.<c>.k8s`: the Kubernetes settings Mizzen's chart exposes.
fn k8s(path: &str, spec: &Value, target: &mut Value, control_plane: bool, outcome: &mut Outcome) {
    let Some(spec) = spec.as_object() else {
        return refuse(outcome, path, "must be a map");
    };
    for (key, v) in spec {
        let at = format!("{path}.{key}");
        match key.as_str() {
            "resources" => set(target, &["resources"], v.clone()),
            "replicaCount" => set(target, &["replicaCount"], v.clone()),
            "env" if control_plane => set(target, &["env"], v.clone()),
            "podDisruptionBudget" if control_plane => {
                set(target, &["podDisruptionBudget"], json!(true));
                if v.get("minAvailable").is_some_and(|m| m != &json!(1)) {
                    warn(
                        outcome,
                        at,
                        "Mizzen's PodDisruptionBudget keeps minAvailable: 1",
                    );
                }
            }
            "hpaSpec" => hpa(&at, v, target, outcome),
            "service" if !control_plane => match v.get("type") {
                Some(t) if v.as_object().is_some_and(|m| m.len() == 1) => {
                    set(target, &["serviceType"], t.clone());
                }
                _ => refuse(outcome, at, "only service.type is supported"),
            },
            _ => refuse(outcome, at, "not supported by Mizzen"),
        }
    }
}

/// `hpaSpec`: min/max replicas and a CPU utilisation target, in autoscaling/v2
/// or Istio's older v2beta1 spelling (`targetAverageUtilization`).
fn hpa(path: &str, spec: &Value, target: &mut Value, outcome: &mut Outcome) {
    set(target, &["autoscaleEnabled"], json!(true));
    for (key, v) in spec.as_object().into_iter().flatten() {
        match key.as_str() {
            "minReplicas" => set(target, &["autoscaleMin"], v.clone()),
            "maxReplicas" => set(target, &["autoscaleMax"], v.clone()),
            "metrics" => {
                let cpu = v.as_array().into_iter().flatten().find_map(|m| {
                    let resource = m.get("resource")?;
                    if resource.get("name")? != "cpu" {
                        return None;
                    }
                    resource
                        .get("targetAverageUtilization")
                        .or_else(|| resource.get("target")?.get("averageUtilization"))
                        .cloned()
                });
                match cpu {
                    Some(cpu) => set(target, &["cpuTargetUtilization"], cpu),
                    None => refuse(
                        outcome,
                        format!("{path}.metrics"),
                        "only a cpu Resource metric with a utilization target is supported",
                    ),
                }
            }
            "scaleTargetRef" => {}
            _ => refuse(outcome, format!("{path}.{key}"), "not supported by Mizzen"),
        }
    }
}

/// `spec.values`: Istio's Helm values, where Mizzen has a counterpart.
fn helm_values(spec: &Value, values: &mut Value, outcome: &mut Outcome) {
    let Some(spec) = spec.as_object() else {
        return refuse(outcome, "spec.values", "must be a map");
    };
    for (key, v) in spec {
        let path = format!("spec.values.{key}");
        match key.as_str() {
            "global" => global(v, values, outcome),
            "revision" => set(values, &["revision"], v.clone()),
            _ => refuse(outcome, path, "not supported by Mizzen"),
        }
    }
}

fn global(spec: &Value, values: &mut Value, outcome: &mut Outcome) {
    for (key, v) in spec.as_object().into_iter().flatten() {
        let path = format!("spec.values.global.{key}");
        match key.as_str() {
            "hub" | "imagePullPolicy" | "caAddress" | "meshID" => {
                set(values, &["global", key], v.clone());
            }
            "tag" => set(values, &["global", "tag"], Value::String(scalar_text(v))),
            "pilotCertProvider" if v == "istiod" => {}
            "pilotCertProvider" => refuse(
                outcome,
                path,
                "only istiod (Mizzen's citadel signs pilot's and the webhooks' certificates)",
            ),
            "jwtPolicy" if v == "third-party-jwt" => {}
            "jwtPolicy" => refuse(
                outcome,
                path,
                "only third-party-jwt (projected ServiceAccount tokens with audience istio-ca)",
            ),
            "logging" => match v.get("level").and_then(Value::as_str) {
                // Istio's "default:info" or "all:debug".
                Some(level) => {
                    let level = level.rsplit(':').next().unwrap_or(level);
                    set(values, &["global", "logLevel"], json!(level));
                }
                None => refuse(outcome, path, "only logging.level is supported"),
            },
            "proxy" => {
                for (field, f) in v.as_object().into_iter().flatten() {
                    match field.as_str() {
                        "resources" | "logLevel" | "holdApplicationUntilProxyStarts" => {
                            set(values, &["global", "proxy", field], f.clone());
                        }
                        "componentLogLevel" => warn(
                            outcome,
                            format!("{path}.{field}"),
                            "not applied: the sidecar has one log level (logLevel)",
                        ),
                        _ => refuse(
                            outcome,
                            format!("{path}.{field}"),
                            "not supported by Mizzen",
                        ),
                    }
                }
            }
            _ => refuse(outcome, path, "not supported by Mizzen"),
        }
    }
}

/// Parses istioctl's `--set path=value` into an IstioOperator spec overlay:
/// `true`/`false` and integers are typed, everything else is a string.
pub fn parse_set(set_arg: &str) -> Result<(Vec<String>, Value), String> {
    let Some((path, raw)) = set_arg.split_once('=') else {
        return Err(format!(
            "--set {set_arg:?}: expected PATH=VALUE, e.g. --set profile=demo"
        ));
    };
    let path: Vec<String> = path
        .trim()
        .trim_start_matches("spec.")
        .split('.')
        .map(str::to_string)
        .collect();
    if path.iter().any(|p| p.is_empty() || p.contains('[')) {
        return Err(format!(
            "--set {set_arg:?}: the path must be dotted field names (lists are set with -f FILE)"
        ));
    }
    let value = match raw {
        "true" => json!(true),
        "false" => json!(false),
        _ => match raw.parse::<i64>() {
            Ok(n) if !raw.starts_with('0') || raw == "0" => json!(n),
            _ => json!(raw),
        },
    };
    Ok((path, value))
}
