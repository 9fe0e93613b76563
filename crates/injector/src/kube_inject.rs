//! `kube-inject`: the webhook's injection applied offline to Kubernetes
//! manifests (Istio's `istioctl kube-inject`).
//!
//! Each document of a YAML stream is read with its line; the pod templates of
//! Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs, and
//! bare Pods (also inside a `List`), go through [`crate::select::required`]
//! (so a template labelled `sidecar.istio.io/inject: "false"` stays as it is)
//! and [`crate::template::inject`]; every other document passes through
//! unchanged. Namespace labels are not known offline, so, as with istioctl,
//! every workload not opted out is injected.

use serde_json::{Value, json};

use crate::options::Options;

/// Why the manifests could not be injected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input is not YAML.
    #[error("{file}: {source}")]
    Yaml {
        /// The input's name.
        file: String,
        /// The parser's error.
        #[source]
        source: common::yaml::YamlError,
    },
    /// A workload's pod template cannot be injected.
    #[error("{file}:{line}: {kind} {name}: {reason}")]
    Workload {
        /// The input's name.
        file: String,
        /// The document's line.
        line: usize,
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The output could not be written as YAML.
    #[error("cannot write the output as YAML: {0}")]
    Encode(String),
}

/// What [`run`] did.
#[derive(Debug, Default)]
pub struct Report {
    /// The manifests, injected, as a multi-document YAML stream.
    pub output: String,
    /// `Kind/name` of every object whose pods got a sidecar.
    pub injected: Vec<String>,
    /// `Kind/name` and why, for workloads left alone.
    pub skipped: Vec<(String, String)>,
    /// Istio annotations with no effect, per workload.
    pub warnings: Vec<String>,
}

/// Where the pod template sits in a workload of `kind` (`None`: not a workload).
fn template_path(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Injects every workload of the YAML stream `text` (named `file` in errors).
pub fn run(text: &str, file: &str, opts: &Options) -> Result<Report, Error> {
    let docs = common::yaml::parse_bounded(text).map_err(|source| Error::Yaml {
        file: file.into(),
        source,
    })?;
    let mut report = Report::default();
    let mut out = Vec::new();
    for doc in docs {
        let Some(root) = doc.root else { continue };
        let mut value = root.to_json();
        inject_object(&mut value, doc.line, file, opts, &mut report)?;
        out.push(serde_saphyr::to_string(&value).map_err(|e| Error::Encode(e.to_string()))?);
    }
    report.output = out.join("---\n");
    Ok(report)
}

fn inject_object(
    value: &mut Value,
    line: usize,
    file: &str,
    opts: &Options,
    report: &mut Report,
) -> Result<(), Error> {
    let kind = value["kind"].as_str().unwrap_or_default().to_string();
    if kind == "List" {
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                inject_object(item, line, file, opts, report)?;
            }
        }
        return Ok(());
    }
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = value
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_string();
    let failed = |reason: String| Error::Workload {
        file: file.into(),
        line,
        kind: kind.clone(),
        name: name.clone(),
        reason,
    };
    let id = format!("{kind}/{name}");
    // The pod to inject: a bare Pod, or the template with the workload's name.
    let (pod_value, template) = if kind == "Pod" && value["apiVersion"] == "v1" {
        (value.clone(), None)
    } else if let Some(path) = template_path(&kind) {
        let Some(t) = value.pointer(path) else {
            return Err(failed(format!(
                "has no pod template at {}",
                path.replace('/', ".")
            )));
        };
        let mut meta = t.get("metadata").cloned().unwrap_or_else(|| json!({}));
        meta["name"] = json!(name);
        meta["namespace"] = json!(namespace);
        let spec = t.get("spec").cloned().unwrap_or(Value::Null);
        (
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}),
            Some(path),
        )
    } else {
        return Ok(());
    };
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod_value)
        .map_err(|e| failed(format!("the pod template is not a valid pod: {e}")))?;
    if let Err(skip) = crate::select::required(&pod, &namespace, &opts.values) {
        report.skipped.push((id, skip.to_string()));
        return Ok(());
    }
    let (injected, warnings) =
        crate::template::inject_with_warnings(&pod, opts).map_err(|e| failed(e.to_string()))?;
    report
        .warnings
        .extend(warnings.into_iter().map(|w| format!("{id}: {w}")));
    let mut injected =
        serde_json::to_value(&injected).map_err(|e| failed(format!("cannot encode: {e}")))?;
    match template {
        None => *value = injected,
        Some(path) => {
            if let Some(meta) = injected.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("name");
                meta.remove("namespace");
            }
            if let Some(t) = value.pointer_mut(path) {
                t["metadata"] = injected["metadata"].take();
                t["spec"] = injected["spec"].take();
            }
        }
    }
    report.injected.push(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_injected_and_the_rest_passes_through() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: nightly, namespace: jobs}\nspec:\n  schedule: '@daily'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: run, image: busybox}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: off}\nspec:\n  selector: {matchLabels: {app: off}}\n  template:\n    metadata:\n      labels: {app: off, sidecar.istio.io/inject: \"false\"}\n    spec:\n      containers: [{name: app, image: nginx}]\n";
        let report = run(text, "in.yaml", &Options::default()).unwrap();
        assert_eq!(report.injected, ["CronJob/nightly"]);
        assert_eq!(report.skipped.len(), 1);
        assert!(
            report.skipped[0].1.contains("false"),
            "{:?}",
            report.skipped
        );
        let docs: Vec<Value> = common::yaml::parse_stream(&report.output)
            .unwrap()
            .into_iter()
            .map(|d| d.root.unwrap().to_json())
            .collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["spec"]["ports"][0]["port"], 80);
        let t = &docs[1]["spec"]["jobTemplate"]["spec"]["template"];
        let inits: Vec<&str> = t["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(inits, ["istio-init", "istio-proxy"]);
        assert!(t["metadata"].get("name").is_none(), "no name in a template");
        assert_eq!(
            t["metadata"]["labels"]["service.istio.io/canonical-name"],
            "nightly"
        );
        assert!(
            docs[2]["spec"]["template"]["spec"]
                .get("initContainers")
                .is_none()
        );
    }

    #[test]
    fn errors_name_the_document() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {sidecar.istio.io/proxyCPU: lots}\nspec:\n  containers: [{name: a, image: b}]\n";
        let err = run(text, "in.yaml", &Options::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("in.yaml:5: Pod p: annotation sidecar.istio.io/proxyCPU"),
            "{err}"
        );
        let err = run("a: [", "in.yaml", &Options::default())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("in.yaml: line"), "{err}");
    }
}
