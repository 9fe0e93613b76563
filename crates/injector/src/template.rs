//! The injection itself: [`inject`] turns a pod into the pod with Istio's
//! `istio-init` and `istio-proxy`, for both the webhook and `kube-inject`.
//!
//! The containers and volumes are written below as Istio's template writes them
//! (JSON that reads like the YAML), then typed as k8s-openapi objects.
//! `istio-init` runs `proxy init` (Istio's istio-iptables flags); `istio-proxy`
//! runs `proxy sidecar`, which builds its bootstrap from the downward API and
//! gets its certificate from citadel. As a native sidecar (an init container
//! with `restartPolicy: Always`, Kubernetes ≥ 1.28) its startup probe holds the
//! app containers until it is ready, and the kubelet stops it once they exit,
//! so Jobs complete. As a classic sidecar it is the first container with a
//! `postStart` hook (`proxy wait`) when holdApplicationUntilProxyStarts is on
//! (Mizzen's default); a Job's app then ends it with
//! `POST http://127.0.0.1:15020/quitquitquit`, as with Istio.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, Volume};
use serde_json::{Value, json};

use crate::Error;
use crate::annotations::{Interception, Settings};
use crate::options::Options;
use crate::select::STATUS_ANNOTATION;

/// The init container that installs the capture rules.
pub const INIT_CONTAINER: &str = "istio-init";
/// The sidecar container.
pub const PROXY_CONTAINER: &str = "istio-proxy";
/// The proxy's binary in its image.
pub const PROXY_BINARY: &str = "/usr/local/bin/proxy";
/// Istio's sidecar uid and gid.
pub const PROXY_UID: i64 = 1337;
/// The sidecar's readiness port.
pub const HEALTH_PORT: u16 = 15021;
/// Envoy's Prometheus port.
pub const PROMETHEUS_PORT: u16 = 15090;
/// The volumes the injection adds, in order.
pub const VOLUMES: &[&str] = &[
    "istio-envoy",
    "istio-podinfo",
    "istio-token",
    "istiod-ca-cert",
];

/// Labels and annotations whose values Istio derives, kept when already set.
const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
const CANONICAL_NAME: &str = "service.istio.io/canonical-name";
const CANONICAL_REVISION: &str = "service.istio.io/canonical-revision";
const DEFAULT_CONTAINER: &str = "kubectl.kubernetes.io/default-container";

/// The pod with the sidecar injected.
pub fn inject(pod: &Pod, opts: &Options) -> Result<Pod, Error> {
    inject_with_warnings(pod, opts).map(|(p, _)| p)
}

/// [`inject`], with one warning per Istio annotation that has no effect.
pub fn inject_with_warnings(pod: &Pod, opts: &Options) -> Result<(Pod, Vec<String>), Error> {
    let empty = BTreeMap::new();
    let annotations = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    let (settings, warnings) = Settings::from_pod(annotations, opts)?;
    let mut out = pod.clone();
    let spec = out.spec.as_mut().ok_or(Error::NoSpec)?;
    let taken = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.as_str())
        .find(|n| [INIT_CONTAINER, PROXY_CONTAINER].contains(n));
    if let Some(name) = taken {
        return Err(Error::Conflict(format!(
            "the pod already has a container named {name}; Mizzen does not merge a pod's own \
             {name} into the injected one (Istio's custom template overrides): rename it, or \
             opt the pod out with the label sidecar.istio.io/inject=false"
        )));
    }
    if let Some(volume) = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| VOLUMES.contains(&v.name.as_str()))
    {
        return Err(Error::Conflict(format!(
            "the pod already has a volume named {}, which the injection adds; rename it",
            volume.name
        )));
    }
    let first_app = spec.containers.first().map(|c| c.name.clone());
    let proxy = typed::<Container>(proxy_container(&settings, opts))?;
    let mut init = Vec::new();
    if settings.interception == Interception::Redirect {
        init.push(typed::<Container>(init_container(&settings))?);
    }
    let mut status_init = init.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let mut status_containers = Vec::new();
    if settings.native {
        status_init.push(PROXY_CONTAINER.into());
        init.push(proxy);
    } else {
        status_containers.push(PROXY_CONTAINER.to_string());
        if settings.hold {
            spec.containers.insert(0, proxy);
        } else {
            spec.containers.push(proxy);
        }
    }
    let mut inits = init;
    inits.extend(spec.init_containers.take().unwrap_or_default());
    spec.init_containers = Some(inits);
    let mut volumes = spec.volumes.take().unwrap_or_default();
    for v in volumes_json() {
        volumes.push(typed::<Volume>(v)?);
    }
    spec.volumes = Some(volumes);

    let meta = &mut out.metadata;
    let (name, revision) = canonical(pod);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels
        .entry(TLS_MODE_LABEL.into())
        .or_insert_with(|| "istio".into());
    labels.entry(CANONICAL_NAME.into()).or_insert(name);
    labels.entry(CANONICAL_REVISION.into()).or_insert(revision);
    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    let status = json!({
        "initContainers": status_init,
        "containers": status_containers,
        "volumes": VOLUMES,
        "imagePullSecrets": null,
        "revision": opts.revision,
    });
    annotations.insert(STATUS_ANNOTATION.into(), status.to_string());
    if let Some(app) = first_app {
        annotations.entry(DEFAULT_CONTAINER.into()).or_insert(app);
    }
    for (k, v) in &opts.values.injected_annotations {
        annotations.insert(k.clone(), v.clone());
    }
    Ok((out, warnings))
}

fn typed<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| Error::Template(e.to_string()))
}

/// `proxy init` with Istio's istio-iptables flags.
fn init_container(s: &Settings) -> Value {
    let mut exclude_inbound = format!("{PROMETHEUS_PORT},{HEALTH_PORT}");
    if s.status_port != 0 {
        exclude_inbound.push_str(&format!(",{}", s.status_port));
    }
    if !s.exclude_inbound_ports.is_empty() {
        exclude_inbound.push(',');
        exclude_inbound.push_str(&s.exclude_inbound_ports);
    }
    let mut args: Vec<String> = [
        "init",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        &s.include_outbound_ip_ranges,
        "-x",
        &s.exclude_outbound_ip_ranges,
        "-b",
        &s.include_inbound_ports,
        "-d",
        &exclude_inbound,
    ]
    .map(String::from)
    .into();
    if !s.include_outbound_ports.is_empty() {
        args.extend(["-q".into(), s.include_outbound_ports.clone()]);
    }
    if !s.exclude_outbound_ports.is_empty() {
        args.extend(["-o".into(), s.exclude_outbound_ports.clone()]);
    }
    json!({
        "name": INIT_CONTAINER,
        "image": s.proxy_image,
        "command": [PROXY_BINARY],
        "args": args,
        "resources": resources(s),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": false,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "runAsUser": 0,
        },
    })
}

fn resources(s: &Settings) -> Value {
    let part = |p: &crate::options::CpuMemory| {
        let mut m = serde_json::Map::new();
        if let Some(cpu) = &p.cpu {
            m.insert("cpu".into(), json!(cpu));
        }
        if let Some(memory) = &p.memory {
            m.insert("memory".into(), json!(memory));
        }
        Value::Object(m)
    };
    let mut r = serde_json::Map::new();
    let limits = part(&s.resources.limits);
    if limits.as_object().is_some_and(|m| !m.is_empty()) {
        r.insert("limits".into(), limits);
    }
    let requests = part(&s.resources.requests);
    if requests.as_object().is_some_and(|m| !m.is_empty()) {
        r.insert("requests".into(), requests);
    }
    Value::Object(r)
}

fn field_env(name: &str, path: &str) -> Value {
    json!({"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}})
}

/// `proxy sidecar` and what it reads.
fn proxy_container(s: &Settings, opts: &Options) -> Value {
    let mut args: Vec<String> = vec![
        "sidecar".into(),
        "--discovery-address".into(),
        opts.discovery_address.clone(),
        "--ca-address".into(),
        opts.ca_address.clone(),
        "--trust-domain".into(),
        opts.trust_domain.clone(),
        "--concurrency".into(),
        s.concurrency.to_string(),
        "--log-level".into(),
        s.log_level.clone(),
        "--status-port".into(),
        s.status_port.to_string(),
    ];
    if s.interception == Interception::None {
        args.extend(["--interception-mode".into(), "NONE".into()]);
    }
    if let Some(file) = &opts.values.access_log_file {
        args.extend(["--access-log".into(), file.clone()]);
    }
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        field_env("INSTANCE_IP", "status.podIP"),
        field_env("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ];
    for (k, v) in &s.proxy_metadata {
        env.push(json!({"name": k, "value": v}));
    }
    let mut ports = vec![
        json!({"containerPort": PROMETHEUS_PORT, "name": "http-envoy-prom", "protocol": "TCP"}),
    ];
    if s.status_port != 0 {
        ports.push(
            json!({"containerPort": s.status_port, "name": "http-status", "protocol": "TCP"}),
        );
    }
    ports.push(json!({"containerPort": HEALTH_PORT, "name": "http-health", "protocol": "TCP"}));
    let probe = |period: i32, failures: i32, delay: i32| {
        json!({
            "httpGet": {"path": "/healthz/ready", "port": HEALTH_PORT, "scheme": "HTTP"},
            "initialDelaySeconds": delay,
            "periodSeconds": period,
            "timeoutSeconds": 3,
            "failureThreshold": failures,
        })
    };
    let mut c = json!({
        "name": PROXY_CONTAINER,
        "image": s.proxy_image,
        "command": [PROXY_BINARY],
        "args": args,
        "env": env,
        "ports": ports,
        "readinessProbe": probe(s.readiness_period, s.readiness_failure_threshold, s.readiness_initial_delay),
        // Istio's startup probe: up to 10 minutes for the first config.
        "startupProbe": probe(1, 600, 0),
        "resources": resources(s),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "runAsUser": PROXY_UID,
        },
        "volumeMounts": [
            {"name": "istio-envoy", "mountPath": "/etc/istio/proxy"},
            {"name": "istio-podinfo", "mountPath": "/etc/istio/pod"},
            {"name": "istio-token", "mountPath": "/var/run/secrets/tokens"},
            {"name": "istiod-ca-cert", "mountPath": "/var/run/secrets/istio"},
        ],
    });
    if s.native {
        c["restartPolicy"] = json!("Always");
    } else if s.hold {
        c["lifecycle"] = json!({"postStart": {"exec": {"command": [PROXY_BINARY, "wait"]}}});
    }
    c
}

fn volumes_json() -> [Value; 4] {
    [
        json!({"name": "istio-envoy", "emptyDir": {"medium": "Memory"}}),
        json!({"name": "istio-podinfo", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
            {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        ]}}),
        json!({"name": "istio-token", "projected": {"sources": [{"serviceAccountToken": {
            "audience": "istio-ca",
            "expirationSeconds": 43200,
            "path": "istio-token",
        }}]}}),
        json!({"name": "istiod-ca-cert", "configMap": {"name": "istio-ca-root-cert"}}),
    ]
}

/// Istio's canonical service name and revision: the pod's own labels
/// (`service.istio.io/canonical-*`, `app.kubernetes.io/name|version`,
/// `app`/`version`), else the workload's name and `latest`.
fn canonical(pod: &Pod) -> (String, String) {
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let name = first(&[CANONICAL_NAME, "app.kubernetes.io/name", "app"])
        .unwrap_or_else(|| workload_name(pod));
    let revision = first(&[CANONICAL_REVISION, "app.kubernetes.io/version", "version"])
        .unwrap_or_else(|| "latest".into());
    (name, revision)
}

/// The name of the workload a pod belongs to: its controller (a ReplicaSet's
/// pod-template hash removed, giving the Deployment), else its generateName
/// or name.
pub fn workload_name(pod: &Pod) -> String {
    let meta = &pod.metadata;
    let hash = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"))
        .map(|h| format!("-{h}"));
    let strip = |name: &str| match &hash {
        Some(h) => name.strip_suffix(h.as_str()).unwrap_or(name).to_string(),
        None => name.to_string(),
    };
    if let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        return strip(&owner.name);
    }
    if let Some(g) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
        return strip(g.trim_end_matches('-'));
    }
    meta.name.clone().unwrap_or_default()
}

#[cfg(test)]
#[path = "template/tests.rs"]
mod tests;
