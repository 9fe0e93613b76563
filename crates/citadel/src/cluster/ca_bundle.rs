//! The root as `caBundle` of the webhook configurations, so the API server trusts
//! the webhooks' serving certificates (which citadel issues, `super::webhook_cert`).
//!
//! One kube-runtime [`Controller`] per kind (ValidatingWebhookConfiguration,
//! MutatingWebhookConfiguration) sees every object of that kind and reconciles the
//! configured names: [`bundle_patch`] lists, for each webhook whose
//! `clientConfig.caBundle` is not the root, a JSON patch `test` of the webhook's
//! name at its index and an `add` of the bundle at
//! `/webhooks/<i>/clientConfig/caBundle` (base64, as the API expects). Nothing else
//! is touched, and a list reordered in between fails the `test` (422) instead of
//! patching the wrong webhook; the next event retries. A `helm upgrade` that
//! resets the bundle is a change the controller sees, and it patches again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use super::ClusterError;

/// Wait before retrying a configuration whose patch failed.
pub const RETRY: Duration = Duration::from_secs(5);

/// A webhook configuration kind: its webhooks' names and client configurations.
pub trait WebhookConfiguration:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The webhooks, in order: name and client configuration.
    fn webhooks(&self) -> Vec<(&str, &WebhookClientConfig)>;
}

impl WebhookConfiguration for ValidatingWebhookConfiguration {
    fn webhooks(&self) -> Vec<(&str, &WebhookClientConfig)> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| (w.name.as_str(), &w.client_config))
            .collect()
    }
}

impl WebhookConfiguration for MutatingWebhookConfiguration {
    fn webhooks(&self) -> Vec<(&str, &WebhookClientConfig)> {
        self.webhooks
            .iter()
            .flatten()
            .map(|w| (w.name.as_str(), &w.client_config))
            .collect()
    }
}

/// The JSON patch that gives every webhook of `config` the bundle `root_pem`;
/// `None` when each already has it.
pub fn bundle_patch(config: &impl WebhookConfiguration, root_pem: &str) -> Option<Value> {
    let want = root_pem.as_bytes();
    let encoded = serde_json::to_value(ByteString(want.to_vec())).ok()?;
    let ops: Vec<Value> = config
        .webhooks()
        .into_iter()
        .enumerate()
        .filter(|(_, (_, cc))| cc.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(want))
        .flat_map(|(i, (name, _))| {
            [
                json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": name}),
                json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}),
            ]
        })
        .collect();
    (!ops.is_empty()).then_some(Value::Array(ops))
}

/// Patches `config` (named `name`) when its bundles are not `root_pem`; `true` when
/// it patched.
pub async fn ensure_bundle<K: WebhookConfiguration>(
    api: &Api<K>,
    config: &K,
    root_pem: &str,
) -> Result<bool, ClusterError> {
    let Some(ops) = bundle_patch(config, root_pem) else {
        return Ok(false);
    };
    let name = config.name_any();
    let what = format!("patching caBundle of {} {name}", K::kind(&()));
    let patch: json_patch::Patch =
        serde_json::from_value(ops).map_err(|e| ClusterError::Encode(format!("{what}: {e}")))?;
    api.patch(&name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(ClusterError::api(what))?;
    Ok(true)
}

struct Context<K: WebhookConfiguration> {
    api: Api<K>,
    names: BTreeSet<String>,
    root_pem: String,
}

/// Keeps the bundles of the named configurations until the future is dropped.
pub async fn run(
    client: kube::Client,
    root_pem: String,
    validating: Vec<String>,
    mutating: Vec<String>,
) {
    let v =
        watch_kind::<ValidatingWebhookConfiguration>(client.clone(), root_pem.clone(), validating);
    let m = watch_kind::<MutatingWebhookConfiguration>(client, root_pem, mutating);
    futures::future::join(v, m).await;
}

async fn watch_kind<K: WebhookConfiguration>(
    client: kube::Client,
    root_pem: String,
    names: Vec<String>,
) {
    if names.is_empty() {
        return;
    }
    let api: Api<K> = Api::all(client);
    let context = Arc::new(Context {
        api: api.clone(),
        names: names.into_iter().collect(),
        root_pem,
    });
    Controller::new(api, watcher::Config::default())
        .run(reconcile::<K>, error_policy::<K>, context)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::warn!(error = %e, kind = %K::kind(&()), "caBundle patcher");
            }
        })
        .await;
}

async fn reconcile<K: WebhookConfiguration>(
    config: Arc<K>,
    ctx: Arc<Context<K>>,
) -> Result<Action, ClusterError> {
    let name = config.name_any();
    if !ctx.names.contains(&name) {
        return Ok(Action::await_change());
    }
    if ensure_bundle(&ctx.api, config.as_ref(), &ctx.root_pem).await? {
        tracing::info!(kind = %K::kind(&()), %name, "patched the root into caBundle");
    }
    Ok(Action::await_change())
}

fn error_policy<K: WebhookConfiguration>(
    config: Arc<K>,
    error: &ClusterError,
    _: Arc<Context<K>>,
) -> Action {
    tracing::warn!(kind = %K::kind(&()), name = %config.name_any(), %error, "could not patch caBundle; retrying");
    Action::requeue(RETRY)
}

#[cfg(test)]
#[path = "ca_bundle_tests.rs"]
mod tests;
