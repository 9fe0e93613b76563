//! `mizzen install` and `mizzen uninstall`: istioctl's counterparts against the
//! current cluster (KUBECONFIG or in-cluster).
//!
//! Install: [`crate::manifest::plan`] and `render_all` → the namespace → each object
//! server-side applied in install order (field manager `mizzen`, forced, so a
//! second install is an upgrade) → wait until every Deployment of the release has
//! its replicas available, printing each as it becomes ready. Uninstall deletes,
//! by label, what an install of that revision created; `--purge` also removes
//! every revision, the CRDs and what citadel wrote (root ConfigMaps, webhook
//! certificates, the CA's own Secret).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::manifest::{self, InstallOptions};
use crate::{EXIT_OK, EXIT_USAGE};

/// The field manager of Mizzen's server-side applies.
pub const FIELD_MANAGER: &str = "mizzen";

/// Label on every object of the chart.
pub const PART_OF: &str = "app.kubernetes.io/part-of=mizzen";

/// Why an install or uninstall failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The manifests could not be produced.
    #[error(transparent)]
    Manifest(#[from] manifest::Error),
    /// No cluster to talk to.
    #[error(
        "cannot reach a Kubernetes cluster: {0}; set KUBECONFIG (or ~/.kube/config) to a cluster, e.g. `kind create cluster`"
    )]
    NoCluster(String),
    /// A rendered object of a kind Mizzen does not know how to apply (a bug).
    #[error("cannot apply a {0}: Mizzen has no API mapping for it")]
    UnknownKind(String),
    /// The API server refused a request.
    #[error("{action} {kind} {name}: {source}")]
    Api {
        /// What was being done.
        action: &'static str,
        /// The object's kind.
        kind: String,
        /// Its name.
        name: String,
        /// The API error.
        #[source]
        source: Box<kube::Error>,
    },
    /// Deployments not available in time.
    #[error(
        "not ready after {waited:?}: {pending}; see `kubectl -n {namespace} describe deployment <name>` and `kubectl -n {namespace} get pods`"
    )]
    NotReady {
        /// How long install waited.
        waited: Duration,
        /// The Deployments still short of replicas, with their counts.
        pending: String,
        /// Their namespace.
        namespace: String,
    },
    /// The user did not confirm.
    #[error("cancelled: nothing was changed")]
    Cancelled,
}

/// `mizzen install`.
#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// What to install.
    #[command(flatten)]
    pub options: InstallOptions,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "skip-confirmation")]
    pub yes: bool,
    /// How long to wait for the control plane's Deployments to become available.
    #[arg(long, default_value = "5m", value_parser = common::runtime::duration_flag)]
    pub readiness_timeout: Duration,
}

/// `mizzen uninstall`.
#[derive(Debug, Clone, Args)]
pub struct UninstallArgs {
    /// Remove this revision's control plane (default: the default revision).
    #[arg(short = 'r', long, conflicts_with = "purge")]
    pub revision: Option<String>,
    /// Remove every revision, the gateways, the CRDs (and so every Istio
    /// resource in the cluster), the root ConfigMaps and the CA's Secret.
    #[arg(long)]
    pub purge: bool,
    /// The control plane's namespace.
    #[arg(short = 'n', long = "istio-namespace", default_value = manifest::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "skip-confirmation")]
    pub yes: bool,
}

/// Runs `mizzen install`.
pub fn run_install(args: &InstallArgs, err: &mut dyn Write) -> u8 {
    let result = (|| {
        let plan = manifest::plan(&args.options)?;
        for w in &plan.warnings {
            let _ = writeln!(err, "Warning: {w}");
        }
        let objects = manifest::render_all(&plan)?;
        let summary = summary(&plan, &objects);
        let _ = writeln!(err, "{summary}");
        confirm(args.yes, "Proceed? (y/N) ", err)?;
        let runtime = crate::runtime("install").map_err(|e| Error::NoCluster(e.to_string()))?;
        runtime.block_on(async {
            let client = client().await?;
            install(
                &client,
                &plan.namespace,
                &objects,
                args.readiness_timeout,
                err,
            )
            .await
        })
    })();
    finish(result, err)
}

/// Runs `mizzen uninstall`.
pub fn run_uninstall(args: &UninstallArgs, err: &mut dyn Write) -> u8 {
    let result = (|| {
        let what = match (&args.revision, args.purge) {
            (_, true) => {
                "every Mizzen revision, the gateways, the CRDs and every Istio resource with them"
                    .to_string()
            }
            (Some(r), _) => format!("control-plane revision {r:?}"),
            (None, _) => "the default control-plane revision and the gateways".to_string(),
        };
        let _ = writeln!(
            err,
            "This removes {what} from namespace {}.",
            args.namespace
        );
        confirm(args.yes, "Proceed? (y/N) ", err)?;
        let runtime = crate::runtime("uninstall").map_err(|e| Error::NoCluster(e.to_string()))?;
        runtime.block_on(async {
            let client = client().await?;
            uninstall(
                &client,
                &args.namespace,
                args.revision.as_deref(),
                args.purge,
                err,
            )
            .await
        })
    })();
    finish(result, err)
}

fn finish(result: Result<(), Error>, err: &mut dyn Write) -> u8 {
    match result {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "Error: {e}");
            if matches!(e, Error::NotReady { .. }) {
                1
            } else {
                EXIT_USAGE
            }
        }
    }
}

async fn client() -> Result<kube::Client, Error> {
    kube::Client::try_default()
        .await
        .map_err(|e| Error::NoCluster(e.to_string()))
}

fn confirm(yes: bool, question: &str, err: &mut dyn Write) -> Result<(), Error> {
    use std::io::IsTerminal;
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        let _ = writeln!(err, "Not a terminal: pass -y to proceed without asking.");
        return Err(Error::Cancelled);
    }
    let _ = write!(err, "{question}");
    let _ = err.flush();
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::Cancelled)
    }
}

fn summary(plan: &manifest::Plan, objects: &[Value]) -> String {
    let deployments: Vec<&str> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    format!(
        "This installs Mizzen{} into namespace {}: {} ({} objects, CRDs included).",
        plan.revision
            .as_deref()
            .map(|r| format!(" revision {r}"))
            .unwrap_or_default(),
        plan.namespace,
        deployments.join(", "),
        objects.len()
    )
}

/// How to reach objects of a kind: its API resource and whether it is
/// namespaced. Only the kinds the chart renders.
pub fn api_resource(api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
    let (plural, namespaced) = match kind {
        "Namespace" => ("namespaces", false),
        "CustomResourceDefinition" => ("customresourcedefinitions", false),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "ValidatingWebhookConfiguration" => ("validatingwebhookconfigurations", false),
        "MutatingWebhookConfiguration" => ("mutatingwebhookconfigurations", false),
        "ServiceAccount" => ("serviceaccounts", true),
        "ConfigMap" => ("configmaps", true),
        "Secret" => ("secrets", true),
        "Service" => ("services", true),
        "Deployment" => ("deployments", true),
        "HorizontalPodAutoscaler" => ("horizontalpodautoscalers", true),
        "PodDisruptionBudget" => ("poddisruptionbudgets", true),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        _ => return None,
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Some((ApiResource::from_gvk_with_plural(&gvk, plural), namespaced))
}

fn api_for(
    client: &kube::Client,
    object: &Value,
    namespace: &str,
) -> Result<Api<DynamicObject>, Error> {
    let kind = object["kind"].as_str().unwrap_or("");
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    let (resource, namespaced) =
        api_resource(api_version, kind).ok_or_else(|| Error::UnknownKind(kind.to_string()))?;
    let ns = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or(namespace);
    Ok(if namespaced {
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    })
}

/// Applies `objects` (after the namespace) and waits for the Deployments.
pub async fn install(
    client: &kube::Client,
    namespace: &str,
    objects: &[Value],
    timeout: Duration,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}});
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let total = objects.len() + 1;
    let mut crds = 0;
    for (i, object) in std::iter::once(&ns).chain(objects).enumerate() {
        let kind = object["kind"].as_str().unwrap_or("").to_string();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let api = api_for(client, object, namespace)?;
        api.patch(&name, &params, &Patch::Apply(object))
            .await
            .map_err(|source| Error::Api {
                action: "applying",
                kind: kind.clone(),
                name: name.clone(),
                source: Box::new(source),
            })?;
        if kind == "CustomResourceDefinition" {
            crds += 1;
            continue;
        }
        if crds > 0 {
            let _ = writeln!(err, "✔ {crds} CustomResourceDefinitions applied");
            crds = 0;
        }
        let _ = writeln!(err, "[{}/{total}] {kind} {name} applied", i + 1);
    }
    let deployments: Vec<String> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    wait_ready(client, namespace, &deployments, timeout, err).await?;
    let _ = writeln!(
        err,
        "✔ Installation complete. Label a namespace for injection: kubectl label namespace default istio-injection=enabled"
    );
    Ok(())
}

/// Polls the Deployments until each has its replicas available.
async fn wait_ready(
    client: &kube::Client,
    namespace: &str,
    names: &[String],
    timeout: Duration,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        namespace,
        &api_resource("apps/v1", "Deployment")
            .map(|(r, _)| r)
            .ok_or_else(|| Error::UnknownKind("Deployment".into()))?,
    );
    let started = tokio::time::Instant::now();
    let mut ready: Vec<String> = Vec::new();
    loop {
        let list = api
            .list(&ListParams::default().labels(PART_OF))
            .await
            .map_err(|source| Error::Api {
                action: "listing",
                kind: "Deployment".into(),
                name: format!("in {namespace}"),
                source: Box::new(source),
            })?;
        let mut pending = Vec::new();
        for name in names {
            let Some(d) = list
                .items
                .iter()
                .find(|d| d.metadata.name.as_deref() == Some(name))
            else {
                pending.push(format!("{name} (not found)"));
                continue;
            };
            let status = d.data.get("status").cloned().unwrap_or(Value::Null);
            let want = d.data["spec"]["replicas"].as_i64().unwrap_or(1);
            let available = status["availableReplicas"].as_i64().unwrap_or(0);
            let generation_seen = status["observedGeneration"].as_i64() >= d.metadata.generation;
            if available >= want && generation_seen {
                if !ready.contains(name) {
                    let _ = writeln!(err, "✔ {name} ready ({available}/{want})");
                    ready.push(name.clone());
                }
            } else {
                pending.push(format!("{name} ({available}/{want} available)"));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(Error::NotReady {
                waited: timeout,
                pending: pending.join(", "),
                namespace: namespace.to_string(),
            });
        }
        tokio::time::sleep(Duration::from_secs(2).min(timeout)).await;
    }
}

/// The kinds an install creates, as (apiVersion, kind), in deletion order.
const INSTALLED_KINDS: &[(&str, &str)] = &[
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("apps/v1", "Deployment"),
    ("policy/v1", "PodDisruptionBudget"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("v1", "ServiceAccount"),
];

/// Deletes what an install of `revision` (or, with `purge`, of any revision)
/// created.
pub async fn uninstall(
    client: &kube::Client,
    namespace: &str,
    revision: Option<&str>,
    purge: bool,
    err: &mut dyn Write,
) -> Result<(), Error> {
    let selector = if purge {
        PART_OF.to_string()
    } else {
        format!("{PART_OF},istio.io/rev={}", revision.unwrap_or("default"))
    };
    let mut removed = 0;
    for (api_version, kind) in INSTALLED_KINDS {
        let Some((resource, namespaced)) = api_resource(api_version, kind) else {
            continue;
        };
        let api: Api<DynamicObject> = if namespaced {
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|source| Error::Api {
                action: "listing",
                kind: kind.to_string(),
                name: selector.clone(),
                source: Box::new(source),
            })?;
        for item in list.items {
            let name = item.metadata.name.unwrap_or_default();
            delete(&api, kind, &name).await?;
            let _ = writeln!(err, "✔ {kind} {name} removed");
            removed += 1;
        }
    }
    if purge {
        removed += purge_extras(client, namespace, err).await?;
    }
    let _ = writeln!(err, "✔ Uninstall complete: {removed} objects removed.");
    Ok(())
}

async fn delete(api: &Api<DynamicObject>, kind: &str, name: &str) -> Result<(), Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Api {
            action: "deleting",
            kind: kind.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        }),
    }
}

/// `--purge`: the CRDs, citadel's root ConfigMaps in every namespace, its
/// webhook certificates and CA Secret.
async fn purge_extras(
    client: &kube::Client,
    namespace: &str,
    err: &mut dyn Write,
) -> Result<usize, Error> {
    let mut removed = 0;
    let (crd, _) = api_resource("apiextensions.k8s.io/v1", "CustomResourceDefinition")
        .ok_or_else(|| Error::UnknownKind("CustomResourceDefinition".into()))?;
    let crds: Api<DynamicObject> = Api::all_with(client.clone(), &crd);
    for kind in common::resource::IstioKind::ALL {
        let name = format!("{}.{}", kind.plural(), kind.group());
        delete(&crds, "CustomResourceDefinition", &name).await?;
        removed += 1;
    }
    let _ = writeln!(err, "✔ {removed} CustomResourceDefinitions removed");
    let (cm, _) =
        api_resource("v1", "ConfigMap").ok_or_else(|| Error::UnknownKind("ConfigMap".into()))?;
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &cm);
    let roots = all
        .list(&ListParams::default().fields("metadata.name=istio-ca-root-cert"))
        .await
        .map_err(|source| Error::Api {
            action: "listing",
            kind: "ConfigMap".into(),
            name: "istio-ca-root-cert".into(),
            source: Box::new(source),
        })?;
    for item in roots.items {
        let ns = item.metadata.namespace.unwrap_or_default();
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &cm);
        delete(&api, "ConfigMap", "istio-ca-root-cert").await?;
        removed += 1;
    }
    let _ = writeln!(err, "✔ ConfigMaps istio-ca-root-cert removed");
    let (secret, _) =
        api_resource("v1", "Secret").ok_or_else(|| Error::UnknownKind("Secret".into()))?;
    let secrets: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &secret);
    let list = secrets
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::Api {
            action: "listing",
            kind: "Secret".into(),
            name: format!("in {namespace}"),
            source: Box::new(source),
        })?;
    for item in list.items {
        let name = item.metadata.name.unwrap_or_default();
        if name == "istio-ca-secret" || name.ends_with("-webhook-tls") {
            delete(&secrets, "Secret", &name).await?;
            let _ = writeln!(err, "✔ Secret {name} removed");
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests;
