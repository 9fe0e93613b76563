//! The Kubernetes source (`--source kubernetes`): the API server's objects, kept
//! current by kube-rs watchers and reflector stores, handed to the config store
//! as the same [`Resource`]s files would give.
//!
//! It owns the watching and the conversion; services, endpoints and credentials
//! are derived by [`crate::registry`] exactly as in file mode, and galley
//! validates the Istio kinds the same way.
//!
//! The path of an object:
//! 1. [`KubeSource::watch`] spawns one task per [`WatchedKind`] (Services,
//!    EndpointSlices, Pods, Namespaces, ServiceAccounts, Secrets but Helm releases
//!    and service-account tokens, and every Istio kind but `IstioOperator`), all
//!    namespaces; [`reflect`] describes discovery, resumption and relists.
//! 2. Each task keeps its kind's [`Phase`]: pending until the first list, then
//!    serving its reflector store, or absent (a CRD not installed: warned about,
//!    looked up again every [`KubeOptions::recheck`]).
//! 3. [`ConfigSource::synced`] resolves once no kind is pending; the controller
//!    then loads, and after that every watch event that changes what pilot
//!    reads notifies the [`ChangeSignal`].
//! 4. [`ConfigSource::load`] turns every stored object (its JSON as the API
//!    server sent it, less what pilot never reads: `managedFields`, kubectl's
//!    last-applied copy, a Pod's container statuses and volumes) into a
//!    [`Resource`] through [`common::yaml::Node::from_json`] and
//!    [`common::resource::decode`], the admission webhook's path, with the origin
//!    `kubernetes:Kind/namespace/name`. Conversions are kept per object and
//!    resourceVersion, so a load converts only the objects that changed since
//!    the previous one.
//!
//! Endpoints objects are not watched: EndpointSlices carry the same addresses
//! (Istio reads slices too), and the registry prefers them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::load::Loaded;
use common::path::Path;
use common::resource::{DecodeError, Origin, Resource, decode};
use common::yaml::Node;
use futures::future::BoxFuture;
use kube::Client;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::Store;

use super::{ChangeSignal, ConfigSource, SourceError};
use crate::metrics::KubeEventMetrics;

pub mod kinds;
pub mod reflect;

#[cfg(test)]
mod tests;

pub use kinds::{SECRETS_FIELD_SELECTOR, WatchedKind};
use reflect::KindState;

/// Default interval between looks for a kind that is not served.
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(30);

/// How often a wait for the initial lists says which kinds it still waits for.
const SYNC_REPORT_EVERY: Duration = Duration::from_secs(10);

/// The Kubernetes source's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeOptions {
    /// How long after finding a kind not served (its CRD not installed, or a 404)
    /// it is looked up again.
    pub recheck: Duration,
    /// The kinds watched (default: [`WatchedKind::all`]).
    pub kinds: Vec<WatchedKind>,
}

impl Default for KubeOptions {
    fn default() -> Self {
        KubeOptions {
            recheck: DEFAULT_RECHECK,
            kinds: WatchedKind::all(),
        }
    }
}

/// Where one watched kind stands.
#[derive(Debug, Clone, Default)]
pub enum Phase {
    /// Neither listed nor found missing yet.
    #[default]
    Pending,
    /// Not served by the API server (for now): no objects.
    Absent,
    /// Listed: the store holds the kind's current objects, read at `resource`.
    Serving {
        /// The reflector's store.
        store: Store<DynamicObject>,
        /// The group/version/kind the objects were read at.
        resource: ApiResource,
    },
}

impl Phase {
    /// Whether the kind has a store.
    pub fn is_serving(&self) -> bool {
        matches!(self, Phase::Serving { .. })
    }
}

/// The Kubernetes API server as a config source, all namespaces.
pub struct KubeSource {
    client: Client,
    options: KubeOptions,
    kinds: Vec<Arc<KindState>>,
    tasks: tokio::task::JoinSet<()>,
    /// Whether [`ConfigSource::watch`] started the tasks.
    watching: bool,
    metrics: KubeEventMetrics,
    /// Each object's conversion as of its resourceVersion, so a load converts only
    /// what changed since the last one (pods change all the time; their JSON →
    /// [`Resource`] conversion was most of a load's cost).
    decoded: HashMap<ObjectKey, Decoded>,
}

/// An object's identity across versions: apiVersion, kind, namespace, name.
type ObjectKey = (String, String, Option<String>, String);

/// One object converted at one resourceVersion.
struct Decoded {
    resource_version: String,
    result: Result<Resource, Box<DecodeError>>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("options", &self.options)
            .field("watching", &self.watching)
            .finish_non_exhaustive()
    }
}

impl KubeSource {
    /// A source reading the cluster `client` talks to, with default options.
    pub fn new(client: Client) -> KubeSource {
        KubeSource::with_options(client, KubeOptions::default())
    }

    /// A source with explicit options.
    pub fn with_options(client: Client, options: KubeOptions) -> KubeSource {
        let kinds = options
            .kinds
            .iter()
            .cloned()
            .map(|k| Arc::new(KindState::new(k)))
            .collect();
        KubeSource {
            client,
            options,
            kinds,
            tasks: tokio::task::JoinSet::new(),
            watching: false,
            metrics: KubeEventMetrics::default(),
            decoded: HashMap::new(),
        }
    }

    /// Counts watch events into `metrics` (registered by the caller).
    pub fn with_metrics(mut self, metrics: KubeEventMetrics) -> KubeSource {
        self.metrics = metrics;
        self
    }

    /// A handle on each kind's state, for `/debug/sourcez`.
    pub fn status(&self) -> KubeStatus {
        KubeStatus {
            kinds: self.kinds.clone().into(),
        }
    }

    /// Each watched kind with its current phase.
    pub fn phases(&self) -> Vec<(&'static str, Phase)> {
        self.kinds
            .iter()
            .map(|k| (k.kind.kind, k.phase.borrow().clone()))
            .collect()
    }

    /// The kinds whose initial list has not completed (nor been found missing).
    fn pending(&self) -> Vec<&'static str> {
        self.kinds
            .iter()
            .filter(|k| matches!(*k.phase.borrow(), Phase::Pending))
            .map(|k| k.kind.kind)
            .collect()
    }
}

impl ConfigSource for KubeSource {
    fn describe(&self) -> String {
        "the Kubernetes API (all namespaces)".into()
    }

    fn load(&mut self) -> Result<Loaded, SourceError> {
        let pending = self.pending();
        if !pending.is_empty() {
            return Err(SourceError::NotSynced {
                pending: pending.join(", "),
            });
        }
        let mut out = Loaded::default();
        let mut decoded = HashMap::with_capacity(self.decoded.len());
        for state in &self.kinds {
            let Phase::Serving { store, resource } = state.phase.borrow().clone() else {
                continue;
            };
            let mut objects = store.state();
            objects.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            for object in objects {
                let key: ObjectKey = (
                    resource.api_version.clone(),
                    resource.kind.clone(),
                    object.metadata.namespace.clone(),
                    object.metadata.name.clone().unwrap_or_default(),
                );
                let version = object.metadata.resource_version.as_deref().unwrap_or("");
                let entry = match self.decoded.remove(&key) {
                    Some(d) if !version.is_empty() && d.resource_version == version => d,
                    _ => Decoded {
                        resource_version: version.to_string(),
                        result: to_resource(&object, &resource),
                    },
                };
                match &entry.result {
                    Ok(r) => out.resources.push(r.clone()),
                    Err(e) => out.errors.push((**e).clone()),
                }
                decoded.insert(key, entry);
            }
        }
        // Objects gone since the last load leave the cache with it.
        self.decoded = decoded;
        Ok(out)
    }

    fn watch(&mut self, signal: ChangeSignal) -> Result<(), SourceError> {
        if self.watching {
            return Ok(());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            SourceError::Other(
                format!("the Kubernetes source must be started inside a tokio runtime: {e}").into(),
            )
        })?;
        for state in &self.kinds {
            let task = reflect::run_kind(
                self.client.clone(),
                state.clone(),
                signal.clone(),
                self.options.clone(),
                self.metrics.clone(),
            );
            self.tasks.spawn_on(task, &runtime);
        }
        self.watching = true;
        tracing::info!(
            kinds = self.kinds.len(),
            "watching the Kubernetes API; pilot serves once every kind is listed"
        );
        Ok(())
    }

    fn synced(&mut self) -> BoxFuture<'static, Result<(), SourceError>> {
        if !self.watching {
            return Box::pin(std::future::ready(Err(SourceError::Other(
                "the Kubernetes source was asked to sync before it was watching; this is a bug"
                    .into(),
            ))));
        }
        let kinds: Vec<(&'static str, tokio::sync::watch::Receiver<Phase>)> = self
            .kinds
            .iter()
            .map(|k| (k.kind.kind, k.phase.subscribe()))
            .collect();
        Box::pin(wait_synced(kinds))
    }
}

/// Where each watched kind stands, readable while the source runs (cheap to
/// clone).
#[derive(Debug, Clone)]
pub struct KubeStatus {
    kinds: Arc<[Arc<KindState>]>,
}

/// One watched kind's state, as `/debug/sourcez` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KindStatus {
    /// The kind (`VirtualService`).
    pub kind: &'static str,
    /// `plural.group` (`virtualservices.networking.istio.io`).
    pub resource: String,
    /// `pending` (not listed yet), `absent` (not served) or `serving`.
    pub phase: &'static str,
    /// The apiVersion watched, while serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Objects in the store.
    pub objects: usize,
}

impl KubeStatus {
    /// Every watched kind, in watch order.
    pub fn kinds(&self) -> Vec<KindStatus> {
        self.kinds
            .iter()
            .map(|k| {
                let phase = k.phase.borrow();
                let (name, api_version, objects) = match &*phase {
                    Phase::Pending => ("pending", None, 0),
                    Phase::Absent => ("absent", None, 0),
                    Phase::Serving { store, resource } => {
                        ("serving", Some(resource.api_version.clone()), store.len())
                    }
                };
                KindStatus {
                    kind: k.kind.kind,
                    resource: k.kind.resource_name(),
                    phase: name,
                    api_version,
                    objects,
                }
            })
            .collect()
    }
}

/// Waits until no kind is pending, saying every [`SYNC_REPORT_EVERY`] which
/// ones it still waits for.
async fn wait_synced(
    mut kinds: Vec<(&'static str, tokio::sync::watch::Receiver<Phase>)>,
) -> Result<(), SourceError> {
    let started = tokio::time::Instant::now();
    let mut report = tokio::time::interval_at(started + SYNC_REPORT_EVERY, SYNC_REPORT_EVERY);
    let observers: Vec<_> = kinds.iter().map(|(k, rx)| (*k, rx.clone())).collect();
    for (kind, rx) in &mut kinds {
        loop {
            tokio::select! {
                ready = rx.wait_for(|p| !matches!(p, Phase::Pending)) => {
                    ready.map_err(|_| SourceError::Other(
                        format!("the Kubernetes source stopped before {kind} was listed").into(),
                    ))?;
                    break;
                }
                _ = report.tick() => {
                    let pending: Vec<&str> = kinds_pending(&observers);
                    tracing::info!(
                        waited = ?started.elapsed(),
                        pending = %pending.join(", "),
                        "waiting for the Kubernetes API's initial lists"
                    );
                }
            }
        }
    }
    tracing::info!(took = ?started.elapsed(), "Kubernetes API lists complete");
    Ok(())
}

fn kinds_pending(
    kinds: &[(&'static str, tokio::sync::watch::Receiver<Phase>)],
) -> Vec<&'static str> {
    kinds
        .iter()
        .filter(|(_, rx)| matches!(*rx.borrow(), Phase::Pending))
        .map(|(k, _)| *k)
        .collect()
}

/// The origin of an object read from the API: `kubernetes:Kind/namespace/name`
/// (`kubernetes:Kind/name` for cluster-scoped kinds), line 0.
pub fn origin(kind: &str, namespace: Option<&str>, name: &str) -> Origin {
    let file = match namespace {
        Some(ns) if !ns.is_empty() => format!("kubernetes:{kind}/{ns}/{name}"),
        _ => format!("kubernetes:{kind}/{name}"),
    };
    Origin {
        file: file.into(),
        line: 0,
    }
}

/// One stored object as a [`Resource`], decoded as galley's webhook decodes an
/// admission request's object.
pub fn to_resource(
    object: &DynamicObject,
    resource: &ApiResource,
) -> Result<Resource, Box<DecodeError>> {
    let name = object.metadata.name.as_deref().unwrap_or("");
    let origin = origin(&resource.kind, object.metadata.namespace.as_deref(), name);
    let mut value = serde_json::to_value(object).map_err(|e| {
        Box::new(DecodeError {
            origin: origin.clone(),
            line: 0,
            kind: Some(resource.kind.clone()),
            api_version: Some(resource.api_version.clone()),
            name: Some(name.to_string()),
            namespace: object.metadata.namespace.clone(),
            path: Path::empty(),
            message: format!("the object from the API server does not serialize: {e}"),
        })
    })?;
    if let Some(map) = value.as_object_mut() {
        // `managedFields` is dropped as objects enter the store; an object put
        // there another way still must not carry it.
        if let Some(meta) = map.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.remove("managedFields");
        }
        map.entry("apiVersion")
            .or_insert_with(|| resource.api_version.clone().into());
        map.entry("kind")
            .or_insert_with(|| resource.kind.clone().into());
    }
    decode(Node::from_json(&value), origin)
}
