//! Rules for `install.istio.io` `IstioOperator`, after istio/istio
//! `operator/pkg/apis/validation/validation.go` (hub, tag, revision, component
//! names, values, service ports, autoscaling) and, for `meshConfig`,
//! `pkg/config/validation/agent/validation.go` (see [`mesh_config`]).
//!
//! Differences from Istio: an unknown `profile` is a warning (Istio fails later when
//! rendering); gateway names must be set and unique (Istio skips empty names); the
//! old `hpaSpec` form `targetAverageUtilization` is accepted with a warning, where
//! Istio 1.24+ refuses it.

mod mesh_config;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::OnceLock;

use common::istio::install::{
    ComponentSpec, GatewayComponentSpec, IstioComponentSpec, IstioOperatorSpec,
    KubernetesResourcesSpec,
};
use serde_json::Value;

use super::checks;
use super::field::{Field, ResourceCtx};

/// Istio's built-in installation profiles.
pub const PROFILES: &[&str] = &[
    "ambient",
    "default",
    "demo",
    "empty",
    "minimal",
    "openshift",
    "openshift-ambient",
    "preview",
    "remote",
    "stable",
];

/// `IstioOperator` rules; `f` is at `spec`.
pub fn istio_operator(spec: &IstioOperatorSpec, _r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    if let Some(p) = &spec.profile {
        profile(&mut f.at("profile"), p);
    }
    if let Some(h) = &spec.hub {
        hub(&mut f.at("hub"), h);
    }
    if let Some(t) = &spec.tag {
        tag(&mut f.at("tag"), t);
    }
    if let Some(ns) = &spec.namespace {
        checks::dns1123_label(&mut f.at("namespace"), ns);
    }
    if let Some(rev) = &spec.revision
        && !rev.is_empty()
        && !dns_label(rev)
    {
        f.at("revision").error(format!(
                "invalid revision specified: {rev:?}; a revision is a DNS label such as 1-22-0 or canary"
            ));
    }
    if let Some(cv) = &spec.compatibility_version {
        let ok = cv
            .split_once('.')
            .is_some_and(|(a, b)| is_number(a) && is_number(b));
        if !ok {
            f.at("compatibilityVersion").error(format!(
                "must be a major.minor version such as 1.23; got {cv:?}"
            ));
        }
    }
    if let Some(mc) = &spec.mesh_config {
        mesh_config::mesh_config(&mut f.at("meshConfig"), mc);
    }
    let values = spec.values.as_ref();
    if let Some(c) = &spec.components {
        components(&mut f.at("components"), c, values);
    }
    if let Some(v) = values {
        helm_values(&mut f.at("values"), v);
    }
}

fn dns_label(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

fn profile(f: &mut Field<'_>, p: &str) {
    let path_like = p.contains('/') || p.ends_with(".yaml") || p.ends_with(".yml");
    if !path_like && !PROFILES.contains(&p) {
        f.warn(format!(
            "unknown profile {p:?}; Istio's profiles are {} (or give a path to a profile file)",
            PROFILES.join(", ")
        ));
    }
}

fn regex(cell: &'static OnceLock<regex::Regex>, pattern: &str) -> &'static regex::Regex {
    cell.get_or_init(|| regex::Regex::new(pattern).expect("static regex"))
}

/// An image repository root (`docker.io/istio`, `localhost:5000/istio`): an optional
/// registry host, then lower-case path components.
fn hub(f: &mut Field<'_>, h: &str) {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = regex(
        &RE,
        r"^([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]+)?)(/[a-z0-9]+([._]|__|-+)?[a-z0-9]*)*$",
    );
    let components_ok = h
        .split('/')
        .skip(1)
        .all(|c| !c.is_empty() && !c.ends_with(['.', '_', '-']));
    if h.is_empty() || !re.is_match(h) || !components_ok {
        f.error(format!(
            "bad hub {h:?}: use an image repository such as docker.io/istio or gcr.io/my-project (lower-case path)"
        ));
    }
}

/// An image tag: a string (Istio also takes a number) of word characters, `.` and `-`.
fn tag(f: &mut Field<'_>, t: &Value) {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = regex(&RE, r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$");
    let text = match t {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => {
            f.error(format!("bad tag {other}: a tag is a string such as 1.22.0"));
            return;
        }
    };
    if !re.is_match(&text) {
        f.error(format!(
            "bad tag {text:?}: use letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-')"
        ));
    }
}

fn bool_at(v: Option<&Value>, path: &[&str]) -> bool {
    let mut cur = v;
    for p in path {
        cur = cur.and_then(|c| c.get(*p));
    }
    cur.and_then(Value::as_bool).unwrap_or(false)
}

fn components(f: &mut Field<'_>, c: &IstioComponentSpec, values: Option<&Value>) {
    if let Some(b) = &c.base
        && let Some(k) = &b.k8s
    {
        k8s(&mut f.at("base").at("k8s"), k);
    }
    let singles = [
        ("pilot", &c.pilot),
        ("cni", &c.cni),
        ("cni-windows", &c.cni_windows),
        ("ztunnel", &c.ztunnel),
        ("ztunnel-windows", &c.ztunnel_windows),
        ("istiodRemote", &c.istiod_remote),
    ];
    for (name, comp) in singles {
        if let Some(comp) = comp {
            component(&mut f.at(name), comp);
        }
    }
    if bool_at(values, &["pilot", "autoscaleEnabled"]) {
        let replicas = c.pilot.as_ref().and_then(|p| p.k8s.as_ref()?.replica_count);
        if replicas.is_some_and(|r| r > 1) {
            f.at("pilot").at("k8s").at("replicaCount").warn(
                "components.pilot.k8s.replicaCount should not be set when values.pilot.autoscaleEnabled is true; the autoscaler sets the replicas",
            );
        }
    }
    let mut names: HashMap<&str, String> = HashMap::new();
    for (list, gw_name, kind) in [
        (
            "ingressGateways",
            "istio-ingressgateway",
            &c.ingress_gateways,
        ),
        ("egressGateways", "istio-egressgateway", &c.egress_gateways),
    ] {
        let autoscale = bool_at(values, &["gateways", gw_name, "autoscaleEnabled"]);
        let run_as_root = bool_at(values, &["gateways", gw_name, "runAsRoot"]);
        for (i, gw) in kind.iter().enumerate() {
            let mut gl = f.at(list);
            let mut gf = gl.index(i);
            gateway(&mut gf, gw, gw_name, run_as_root);
            if !gw.name.is_empty() {
                let here = gf.path().to_string();
                if let Some(first) = names.insert(gw.name.as_str(), here) {
                    gf.at("name").error(format!(
                        "duplicate gateway name {:?} (also at {first}); each gateway needs its own name",
                        gw.name
                    ));
                }
            }
            if autoscale
                && gw
                    .k8s
                    .as_ref()
                    .and_then(|k| k.replica_count)
                    .is_some_and(|r| r != 0)
            {
                gf.at("k8s").at("replicaCount").warn(format!(
                    "replicaCount should not be set when values.gateways.{gw_name}.autoscaleEnabled is true; the autoscaler sets the replicas"
                ));
            }
        }
    }
}

fn component(f: &mut Field<'_>, c: &ComponentSpec) {
    if let Some(ns) = &c.namespace {
        checks::dns1123_label(&mut f.at("namespace"), ns);
    }
    if let Some(h) = &c.hub {
        hub(&mut f.at("hub"), h);
    }
    if let Some(t) = &c.tag {
        tag(&mut f.at("tag"), t);
    }
    if let Some(k) = &c.k8s {
        k8s(&mut f.at("k8s"), k);
    }
}

fn gateway(f: &mut Field<'_>, gw: &GatewayComponentSpec, values_name: &str, run_as_root: bool) {
    let name_ok = !gw.name.is_empty()
        && gw.name.len() <= 254
        && gw
            .name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    if gw.name.is_empty() {
        f.at("name")
            .error("is required: name the gateway deployment, e.g. istio-ingressgateway");
    } else if !name_ok {
        f.at("name").error(format!(
            "invalid gateway name {:?}: use lower-case letters, digits, '.' and '-'",
            gw.name
        ));
    }
    if let Some(ns) = &gw.namespace {
        checks::dns1123_label(&mut f.at("namespace"), ns);
    }
    if let Some(h) = &gw.hub {
        hub(&mut f.at("hub"), h);
    }
    if let Some(t) = &gw.tag {
        tag(&mut f.at("tag"), t);
    }
    checks::labels(&mut f.at("label"), &gw.label);
    if let Some(k) = &gw.k8s {
        k8s(&mut f.at("k8s"), k);
        if !run_as_root {
            root_ports(&mut f.at("k8s").at("service"), k, &gw.name, values_name);
        }
    }
}

/// Gateways run as non-root, so a target port below 1024 cannot be bound.
fn root_ports(f: &mut Field<'_>, k: &KubernetesResourcesSpec, gw: &str, values_name: &str) {
    let Some(ports) = k.service.as_ref().and_then(|s| s.get("ports")?.as_array()) else {
        return;
    };
    for (i, p) in ports.iter().enumerate() {
        let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
        let target = match p.get("targetPort") {
            Some(Value::String(_)) => continue,
            Some(v) => v.as_i64().unwrap_or(0),
            None => 0,
        };
        if target == 0 && port > 1024 {
            continue;
        }
        if target < 1024 {
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            f.at("ports").index(i).at("targetPort").error(format!(
                "port {name}/{port} in gateway {gw} invalid: targetPort is set to {target}, which requires root; set targetPort above 1024 or configure values.gateways.{values_name}.runAsRoot=true"
            ));
        }
    }
}

const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];

fn k8s(f: &mut Field<'_>, k: &KubernetesResourcesSpec) {
    if let Some(p) = &k.image_pull_policy
        && !PULL_POLICIES.contains(&p.as_str())
    {
        f.at("imagePullPolicy").error(format!(
            "must be one of {}; got {p:?}",
            PULL_POLICIES.join(", ")
        ));
    }
    for (i, e) in k.env.iter().enumerate() {
        let named = e
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !named {
            f.at("env")
                .index(i)
                .at("name")
                .error("is required: each env entry is {name: ..., value: ...} or {name: ..., valueFrom: ...}");
        }
    }
    checks::labels(&mut f.at("nodeSelector"), &k.node_selector);
    if let Some(r) = &k.resources {
        resources(&mut f.at("resources"), r);
    }
    if let Some(h) = &k.hpa_spec {
        hpa_spec(&mut f.at("hpaSpec"), h);
    }
}

fn resources(f: &mut Field<'_>, r: &Value) {
    let Some(obj) = r.as_object() else {
        f.error("must be an object with limits and/or requests");
        return;
    };
    for key in obj.keys() {
        if !matches!(key.as_str(), "limits" | "requests" | "claims") {
            f.at(key).error(format!(
                "unknown field {key:?}; resources take limits, requests and claims"
            ));
        }
    }
}

fn hpa_spec(f: &mut Field<'_>, h: &Value) {
    let min = h.get("minReplicas").and_then(Value::as_i64);
    let max = h.get("maxReplicas").and_then(Value::as_i64);
    if let Some(max) = max {
        if max < 1 {
            f.at("maxReplicas")
                .error(format!("must be at least 1; got {max}"));
        }
        if let Some(min) = min
            && min > max
        {
            f.at("minReplicas").error(format!(
                "minReplicas {min} is greater than maxReplicas {max}"
            ));
        }
    }
    let Some(metrics) = h.get("metrics").and_then(Value::as_array) else {
        return;
    };
    for (i, m) in metrics.iter().enumerate() {
        if let Some(u) = m
            .get("resource")
            .and_then(|r| r.get("targetAverageUtilization"))
        {
            f.at("metrics")
                .index(i)
                .at("resource")
                .at("targetAverageUtilization")
                .warn(format!(
                    "targetAverageUtilization is the old autoscaling/v2beta1 form; write target: {{type: Utilization, averageUtilization: {u}}}"
                ));
        }
    }
}

/// The few Helm values Istio's operator validates itself.
fn helm_values(f: &mut Field<'_>, v: &Value) {
    if !v.is_object() {
        f.error("values must be an object of Helm values");
        return;
    }
    let proxy = v.get("global").and_then(|g| g.get("proxy"));
    let mut pf = f.at("global");
    let mut pf = pf.at("proxy");
    for key in ["includeIPRanges", "excludeIPRanges"] {
        if let Some(x) = proxy.and_then(|p| p.get(key)) {
            string_list(&mut pf.at(key), x, |s| {
                s.parse::<ipnet::IpNet>()
                    .err()
                    .map(|_| format!("{s:?} is not a CIDR block such as 10.0.0.0/8"))
            });
        }
    }
    for key in ["includeInboundPorts", "excludeInboundPorts"] {
        if let Some(x) = proxy.and_then(|p| p.get(key)) {
            string_list(&mut pf.at(key), x, |s| match s.parse::<u32>() {
                Ok(p) if p <= 65535 => None,
                _ => Some(format!("{s:?} is not a port number from 0 to 65535")),
            });
        }
    }
}

/// A comma-separated list (or `*`, or empty) whose items pass `check`.
fn string_list(f: &mut Field<'_>, v: &Value, check: impl Fn(&str) -> Option<String>) {
    let Some(s) = v.as_str() else {
        f.error(format!("must be a comma-separated string; got {v}"));
        return;
    };
    if s == "*" || s.is_empty() {
        return;
    }
    for item in s.split(',') {
        if let Some(why) = check(item.trim()) {
            f.error(why);
            return;
        }
    }
}
