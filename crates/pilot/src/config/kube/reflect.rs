//! One task per watched kind: discovery, then a kube-rs watcher feeding a reflector
//! store, until the kind stops being served.
//!
//! [`run_kind`] loops:
//! 1. [`discover`] the kind's API resource. A kind that is not served (its CRD is
//!    not installed) becomes [`Phase::Absent`] with one warning, and is looked up
//!    again every [`KubeOptions::recheck`], so installing the CRDs later works
//!    without a restart. An error asking (say, 403) leaves the phase as it was and
//!    retries with backoff: pilot never serves without a kind that may exist.
//! 2. `reflect` lists and watches it in all namespaces (`watcher` →
//!    `default_backoff` → `reflector`). Lists read the API server's watch cache
//!    (`resourceVersion=0`, as client-go's informers do for their first list;
//!    client-go reads etcd for a relist after 410, pilot keeps to the cache so
//!    that many pilots relisting at once do not all reach etcd). After a
//!    watch error or a closed stream the watcher resumes from the last
//!    resourceVersion it saw (an event's or a BOOKMARK's), after a backoff; only a
//!    `410 Gone` (the version left the API server's window) makes it list again,
//!    and while that relist runs the store keeps serving the previous objects: the
//!    reflector swaps the new list in when it completes (`InitDone`).
//! 3. The first completed list makes the kind [`Phase::Serving`]; every event after
//!    it is counted ([`KubeEventMetrics`]: add, update, or updatesame when nothing
//!    pilot keeps changed) and, but for updatesame, notifies the [`ChangeSignal`],
//!    as every completed relist does.
//! 4. A 404 while listing or watching means the kind went away (its CRD was
//!    deleted): the kind becomes absent and the loop returns to discovery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, TypeMeta};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use tokio::sync::watch;

use super::kinds::{Discovery, WatchedKind, discover};
use super::{KubeOptions, Phase};
use crate::config::ChangeSignal;
use crate::metrics::KubeEventMetrics;

/// One watched kind's shared state: what it is and where its objects are.
#[derive(Debug)]
pub struct KindState {
    /// The kind.
    pub kind: WatchedKind,
    /// Its phase; `load` reads it, the kind's task writes it.
    pub phase: watch::Sender<Phase>,
}

impl KindState {
    /// A kind not yet discovered or listed.
    pub fn new(kind: WatchedKind) -> KindState {
        KindState {
            kind,
            phase: watch::Sender::new(Phase::Pending),
        }
    }

    /// Marks the kind as not served, telling the controller when objects vanish.
    fn set_absent(&self, signal: &ChangeSignal) {
        let was_serving = self.phase.send_replace(Phase::Absent).is_serving();
        if was_serving {
            signal.notify();
        }
    }
}

/// Keeps `state` current for as long as the task runs (it is aborted when the
/// source is dropped).
pub async fn run_kind(
    client: Client,
    state: Arc<KindState>,
    signal: ChangeSignal,
    options: KubeOptions,
    metrics: KubeEventMetrics,
) {
    let kind = state.kind.kind;
    let mut reported_missing = false;
    let mut failures = 0u32;
    loop {
        let resource = match discover(&client, &state.kind).await {
            Discovery::Found(resource) => resource,
            Discovery::Missing(why) => {
                if !reported_missing {
                    tracing::warn!(
                        kind,
                        reason = %why,
                        recheck = ?options.recheck,
                        "kind not served by the API server; pilot runs without it and looks again periodically"
                    );
                    reported_missing = true;
                } else {
                    tracing::debug!(kind, reason = %why, "kind still not served");
                }
                state.set_absent(&signal);
                tokio::time::sleep(options.recheck).await;
                continue;
            }
            Discovery::Failed(e) => {
                failures += 1;
                let wait = discovery_backoff(failures);
                tracing::warn!(
                    kind,
                    crd = %state.kind.resource_name(),
                    error = %e,
                    retry_in = ?wait,
                    "cannot look up the kind's CustomResourceDefinition; check that pilot may get customresourcedefinitions (apiextensions.k8s.io)"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        failures = 0;
        if reported_missing {
            tracing::info!(kind, version = %resource.version, "kind is now served; watching it");
        }
        let gone = reflect(&client, &state, resource, &signal, &metrics).await;
        tracing::warn!(
            kind,
            reason = %gone,
            "the API server no longer serves the kind (404); dropping its objects and looking it up again"
        );
        reported_missing = true;
        state.set_absent(&signal);
        tokio::time::sleep(options.recheck).await;
    }
}

/// Exponential backoff for failed CRD lookups: 1 s doubling to 30 s.
fn discovery_backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// Lists and watches `resource` into a reflector store until the API server says
/// the resource does not exist (the returned text says so). Other errors are
/// logged and the watcher recovers by itself (see the module docs).
async fn reflect(
    client: &Client,
    state: &KindState,
    resource: ApiResource,
    signal: &ChangeSignal,
    metrics: &KubeEventMetrics,
) -> String {
    let kind = state.kind.kind;
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let writer = Writer::new(resource.clone());
    let store = writer.as_reader();
    let mut config = watcher::Config::default().any_semantic();
    // Unpaged: a resourceVersion=0 list is served whole from the watch cache.
    config.page_size = None;
    if let Some(fields) = state.kind.field_selector {
        config = config.fields(fields);
    }
    let types = TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    };
    let (added, updated, same, deleted) = (
        metrics.counter(kind, "add"),
        metrics.counter(kind, "update"),
        metrics.counter(kind, "updatesame"),
        metrics.counter(kind, "delete"),
    );
    let (held, dyntype) = (store.clone(), resource.clone());
    // Set for an update that changes nothing pilot reads (after `tidy`, only the
    // resourceVersion moved: a kubelet status report, say); read when the
    // reflector yields that same event, which it does in order, on this task.
    let unchanged = Arc::new(AtomicBool::new(false));
    let seen_unchanged = unchanged.clone();
    // Counted before the reflector applies the event, so the store still holds
    // the previous version.
    let events = watcher::watcher(api, config)
        .modify(move |o: &mut DynamicObject| tidy(o, &types))
        .default_backoff()
        // The store keys objects by name (and would panic on one without).
        .filter(move |event| std::future::ready(named(kind, event)))
        .map(move |event| {
            let mut same_content = false;
            match &event {
                Ok(Event::Apply(o)) => {
                    match held.get(&ObjectRef::from_obj_with(o, dyntype.clone())) {
                        Some(old) if same_but_version(&old, o) => {
                            same_content = true;
                            same.inc()
                        }
                        Some(_) => updated.inc(),
                        None => added.inc(),
                    };
                }
                Ok(Event::Delete(_)) => {
                    deleted.inc();
                }
                _ => {}
            }
            unchanged.store(same_content, Ordering::Relaxed);
            event
        });
    let mut events = std::pin::pin!(reflector(writer, events));
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::InitDone) => {
                tracing::debug!(kind, objects = store.len(), "listed");
                state.phase.send_if_modified(|p| {
                    if p.is_serving() {
                        return false;
                    }
                    *p = Phase::Serving {
                        store: store.clone(),
                        resource: resource.clone(),
                    };
                    true
                });
                signal.notify();
            }
            Ok(Event::Apply(_)) if seen_unchanged.load(Ordering::Relaxed) => {}
            Ok(Event::Apply(_) | Event::Delete(_)) => signal.notify(),
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(e) => {
                if let Some(gone) = not_found(kind, e) {
                    return gone;
                }
            }
        }
    }
    // The watcher's stream never ends; should it, the loop starts over.
    "the watch stream ended".into()
}

/// Whether the event's object has a name; an object without one (never sent by
/// a conforming API server) is logged and left out.
fn named(kind: &str, event: &watcher::Result<Event<DynamicObject>>) -> bool {
    let object = match event {
        Ok(Event::Apply(o) | Event::Delete(o) | Event::InitApply(o)) => o,
        _ => return true,
    };
    let ok = object
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| !n.is_empty());
    if !ok {
        tracing::warn!(kind, namespace = ?object.metadata.namespace, "ignoring an object without metadata.name from the API server");
    }
    ok
}

/// Logs a watcher error, or describes a 404 (the resource is gone).
fn not_found(kind: &str, error: watcher::Error) -> Option<String> {
    let api_error = match &error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
        watcher::Error::WatchError(s) => Some(s.as_ref()),
        _ => None,
    };
    match api_error {
        Some(status) if status.is_not_found() => return Some(error.to_string()),
        Some(status) if status.code == 410 => {
            tracing::info!(
                kind,
                error = %error,
                "watch resourceVersion expired (410 Gone); listing again, the current objects stay served until the list completes"
            );
        }
        Some(status) if status.is_forbidden() => {
            tracing::warn!(
                kind,
                error = %error,
                "the API server refused pilot (403); grant its service account list and watch on this resource (see the README's RBAC); retrying with backoff"
            );
        }
        _ => {
            tracing::warn!(
                kind,
                error = %error,
                "Kubernetes watch failed; retrying with backoff from the last resourceVersion seen"
            );
        }
    }
    None
}

/// Drops what pilot never reads and names the object's type (list items of
/// built-in kinds come without `apiVersion` and `kind`). Of every object:
/// `managedFields` (often half its metadata) and kubectl's
/// `last-applied-configuration` annotation (a second copy of the object). Of a
/// Pod, as Istio's `StripPodUnusedFields` does: container statuses, volumes, and
/// each container's all but its name and ports. The registry reads a Pod's
/// labels, annotations, IPs, phase, `Ready` condition, service account, host
/// network and its containers' names and ports; those stay.
pub(crate) fn tidy(object: &mut DynamicObject, types: &TypeMeta) {
    object.metadata.managed_fields = None;
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            object.metadata.annotations = None;
        }
    }
    if object.types.as_ref().is_none_or(|t| t.kind.is_empty()) {
        object.types = Some(types.clone());
    }
    if types.kind == "Pod" && types.api_version == "v1" {
        trim_pod(&mut object.data);
    }
}

/// kubectl's copy of the applied object.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The fields of a container pilot keeps.
const CONTAINER_FIELDS: &[&str] = &["name", "ports"];

fn trim_pod(data: &mut serde_json::Value) {
    if let Some(spec) = data.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.remove("volumes");
        for list in ["containers", "initContainers", "ephemeralContainers"] {
            for container in spec
                .get_mut(list)
                .and_then(|c| c.as_array_mut())
                .into_iter()
                .flatten()
            {
                if let Some(fields) = container.as_object_mut() {
                    fields.retain(|k, _| CONTAINER_FIELDS.contains(&k.as_str()));
                }
            }
        }
    }
    if let Some(status) = data.get_mut("status").and_then(|s| s.as_object_mut()) {
        for noisy in [
            "containerStatuses",
            "initContainerStatuses",
            "ephemeralContainerStatuses",
            "resourceClaimStatuses",
        ] {
            status.remove(noisy);
        }
    }
}

/// Whether `new` differs from `old` in its resourceVersion only.
fn same_but_version(old: &DynamicObject, new: &DynamicObject) -> bool {
    old.data == new.data
        && old.types == new.types
        && ObjectMeta {
            resource_version: None,
            ..old.metadata.clone()
        } == ObjectMeta {
            resource_version: None,
            ..new.metadata.clone()
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_backoff_doubles_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=8).map(|n| discovery_backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
