//! The root published to every namespace: ConfigMap `istio-ca-root-cert`, key
//! `root-cert.pem`, labelled `istio.io/config: "true"`, as Istio's namespace
//! controller keeps it.
//!
//! A kube-runtime [`Controller`] over Namespaces reconciles each namespace: skipped
//! when Istio skips it (`kube-system`, `kube-public`, `kube-node-lease`,
//! `local-path-storage`) or when it is terminating; otherwise
//! [`ensure_root_configmap`] reads the ConfigMap and creates it when missing,
//! merge-patches its key and label when they differ (other keys and labels are left
//! alone), and does nothing when it is current. The controller also watches the
//! ConfigMaps of that name, so deleting or editing one reconciles its namespace and
//! puts it back. Failed reconciles retry after [`RETRY`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use super::{ClusterError, status_code};

/// The ConfigMap's name (Istio's).
pub const ROOT_CONFIGMAP: &str = "istio-ca-root-cert";
/// The ConfigMap's key holding the PEM roots.
pub const ROOT_KEY: &str = "root-cert.pem";
/// The label Istio puts on the ConfigMap.
pub const CONFIG_LABEL: &str = "istio.io/config";
/// Namespaces Istio never publishes to (`inject.IgnoredNamespaces`).
pub const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];
/// Namespaces reconciled at once (each is one GET, and a write when needed).
pub const CONCURRENCY: u16 = 16;
/// Wait before retrying a namespace whose reconcile failed.
pub const RETRY: Duration = Duration::from_secs(5);

/// What [`ensure_root_configmap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The ConfigMap was current.
    Unchanged,
    /// It was missing and was created.
    Created,
    /// Its key or label differed and was patched.
    Patched,
}

/// Whether the root is published to `namespace`.
pub fn publishes_to(namespace: &str) -> bool {
    !IGNORED_NAMESPACES.contains(&namespace)
}

struct Context {
    client: kube::Client,
    root_pem: String,
}

/// Keeps the ConfigMap in every namespace until the future is dropped.
pub async fn run(client: kube::Client, root_pem: String) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let configmaps: Api<ConfigMap> = Api::all(client.clone());
    let context = Arc::new(Context { client, root_pem });
    Controller::new(namespaces, watcher::Config::default())
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .watches(
            configmaps,
            watcher::Config::default().fields(&format!("metadata.name={ROOT_CONFIGMAP}")),
            |cm: ConfigMap| {
                cm.metadata
                    .namespace
                    .map(|ns| ObjectRef::<Namespace>::new(&ns))
            },
        )
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(error = %e, "root certificate publisher");
            }
        })
        .await;
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, ClusterError> {
    let Some(name) = ns.metadata.name.as_deref() else {
        return Ok(Action::await_change());
    };
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if !publishes_to(name) || terminating {
        return Ok(Action::await_change());
    }
    let outcome = ensure_root_configmap(&ctx.client, name, &ctx.root_pem).await?;
    if outcome != Outcome::Unchanged {
        tracing::info!(
            namespace = name,
            ?outcome,
            "published the root as ConfigMap {ROOT_CONFIGMAP}"
        );
    }
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, error: &ClusterError, _: Arc<Context>) -> Action {
    tracing::warn!(namespace = ns.metadata.name.as_deref().unwrap_or_default(), %error, "could not publish the root; retrying");
    Action::requeue(RETRY)
}

/// Makes ConfigMap `istio-ca-root-cert` in `namespace` hold `root_pem` and the label.
pub async fn ensure_root_configmap(
    client: &kube::Client,
    namespace: &str,
    root_pem: &str,
) -> Result<Outcome, ClusterError> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let what = |verb: &str| format!("{verb} ConfigMap {namespace}/{ROOT_CONFIGMAP}");
    let current = api
        .get_opt(ROOT_CONFIGMAP)
        .await
        .map_err(ClusterError::api(what("reading")))?;
    match current {
        Some(cm) if is_current(&cm, root_pem) => Ok(Outcome::Unchanged),
        Some(_) => patch(&api, root_pem, &what("patching")).await,
        None => match api
            .create(&PostParams::default(), &root_configmap(namespace, root_pem))
            .await
        {
            Ok(_) => Ok(Outcome::Created),
            // Another replica created it in between: make sure it is ours.
            Err(e) if status_code(&e) == Some(409) => {
                patch(&api, root_pem, &what("patching")).await
            }
            Err(e) => Err(ClusterError::api(what("creating"))(e)),
        },
    }
}

async fn patch(api: &Api<ConfigMap>, root_pem: &str, what: &str) -> Result<Outcome, ClusterError> {
    let body = json!({
        "metadata": {"labels": {CONFIG_LABEL: "true"}},
        "data": {ROOT_KEY: root_pem},
    });
    api.patch(
        ROOT_CONFIGMAP,
        &PatchParams::default(),
        &Patch::Merge(&body),
    )
    .await
    .map_err(ClusterError::api(what))?;
    Ok(Outcome::Patched)
}

fn is_current(cm: &ConfigMap, root_pem: &str) -> bool {
    let data = cm.data.as_ref().and_then(|d| d.get(ROOT_KEY));
    let label = cm
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONFIG_LABEL));
    data.map(String::as_str) == Some(root_pem) && label.map(String::as_str) == Some("true")
}

/// The ConfigMap as created.
pub fn root_configmap(namespace: &str, root_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(CONFIG_LABEL.into(), "true".into())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(ROOT_KEY.into(), root_pem.into())])),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "root_cert_tests.rs"]
mod tests;
