//! The accepted configuration: the last good version of every resource, keyed by
//! (group, kind, namespace, name), and the rejections of the latest load.
//!
//! [`ConfigStore::apply`] takes the complete set a source currently holds and:
//! - validates each resource with galley (Istio kinds) and, for the Kubernetes
//!   objects pilot reads, checks that they decode ([`registry::kubernetes_problem`]);
//! - accepts the valid ones (reusing the previous `Arc` when nothing changed, so
//!   unchanged config compares equal by pointer);
//! - for a rejected version — a validation error, or a document that did not decode
//!   but whose kind and name can be read — records a [`Rejected`] with galley's
//!   messages (Istio's one-line format, with file:line) and keeps the last good
//!   version of that resource, if there was one;
//! - for a document that cannot be identified at all (a YAML syntax error), keeps
//!   every previously accepted resource of that file that the load did not supply;
//! - drops resources that are no longer in the set (a deleted file or document);
//! - refuses a second definition of the same resource (first in file order wins).
//!
//! Each rejected version is counted once (a rejection still present on the next
//! load is not counted again) and logged with `tracing::warn!`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::load::Loaded;
use common::resource::{Origin, Resource, split_api_version};
use galley::message::{Message, codes};

use crate::model::{Rejected, Snapshot};
use crate::registry;

/// Kinds without a namespace; their key's namespace is empty.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "GatewayClass",
    "IngressClass",
];

/// The identity of a resource across versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    /// API group (`networking.istio.io`; `""` for Kubernetes' core group).
    pub group: String,
    /// Kind (`VirtualService`).
    pub kind: String,
    /// Namespace (empty for cluster-scoped kinds).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ResourceKey {
    /// The key of `r` (whose namespace the store has already defaulted).
    pub fn of(r: &Resource) -> ResourceKey {
        ResourceKey {
            group: r.group().to_string(),
            kind: r.kind.clone(),
            namespace: r.meta.namespace.clone().unwrap_or_default(),
            name: r.name().to_string(),
        }
    }
}

impl fmt::Display for ResourceKey {
    /// `Kind name.namespace`, as Istio names resources in messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}.{}", self.kind, self.name, self.namespace)
        }
    }
}

/// A shared count of rejected resource versions (for a metric such as
/// `pilot_config_rejections_total`; not the xDS NACK count).
#[derive(Debug, Clone, Default)]
pub struct RejectionCounter(Arc<AtomicU64>);

impl RejectionCounter {
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// What one [`ConfigStore::apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Resources accepted after the load (including last good versions kept).
    pub accepted: usize,
    /// Resources that were not there before.
    pub added: usize,
    /// Resources whose accepted version changed.
    pub updated: usize,
    /// Resources no longer present.
    pub removed: usize,
    /// Rejections in this load.
    pub rejected: usize,
    /// Rejections not present in the previous load (these are counted and logged).
    pub new_rejections: usize,
    /// Rejected resources still served at their last good version.
    pub kept_last_good: usize,
}

/// The last good version of every resource, and the current rejections.
#[derive(Debug)]
pub struct ConfigStore {
    default_namespace: String,
    accepted: BTreeMap<ResourceKey, Arc<Resource>>,
    rejected: Vec<Rejected>,
    counter: RejectionCounter,
}

impl ConfigStore {
    /// An empty store; resources without a namespace go to `default_namespace`.
    pub fn new(default_namespace: impl Into<String>) -> Self {
        ConfigStore {
            default_namespace: default_namespace.into(),
            accepted: BTreeMap::new(),
            rejected: Vec::new(),
            counter: RejectionCounter::default(),
        }
    }

    /// The accepted resources in key order.
    pub fn accepted(&self) -> Vec<Arc<Resource>> {
        self.accepted.values().cloned().collect()
    }

    /// The accepted version of one resource.
    pub fn get(&self, key: &ResourceKey) -> Option<&Arc<Resource>> {
        self.accepted.get(key)
    }

    /// The rejections of the latest load.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// How many resource versions were rejected since the store was created.
    pub fn rejected_total(&self) -> u64 {
        self.counter.get()
    }

    /// A handle on the rejection count that stays valid while the store is used
    /// elsewhere.
    pub fn rejection_counter(&self) -> RejectionCounter {
        self.counter.clone()
    }

    /// The snapshot of the current state at `version` (see
    /// [`registry::build_snapshot`]).
    pub fn snapshot(&self, version: u64) -> Snapshot {
        registry::build_snapshot(self.accepted(), self.rejected.clone(), version)
    }

    /// Replaces the store's view with `loaded`, the complete set a source holds now,
    /// keeping the last good version of each rejected resource (see the module docs).
    pub fn apply(&mut self, loaded: Loaded) -> ApplyOutcome {
        let ns = self.default_namespace.clone();
        let mut next: BTreeMap<ResourceKey, Arc<Resource>> = BTreeMap::new();
        let mut first_seen: BTreeMap<ResourceKey, Origin> = BTreeMap::new();
        let mut rejected: Vec<Rejected> = Vec::new();
        let mut keep: BTreeSet<ResourceKey> = BTreeSet::new();
        let mut broken_files: BTreeSet<Arc<str>> = BTreeSet::new();

        for mut r in loaded.resources {
            if r.meta.namespace.as_deref().is_none_or(str::is_empty)
                && !CLUSTER_SCOPED.contains(&r.kind.as_str())
            {
                r.meta.namespace = Some(ns.clone());
            }
            let key = ResourceKey::of(&r);
            if let Some(first) = first_seen.get(&key) {
                let text = format!(
                    "Schema validation error: {key} is defined more than once; the definition at {first} is used, remove one of them"
                );
                rejected.push(Rejected {
                    resource: key.to_string(),
                    origin: r.origin.to_string(),
                    messages: vec![
                        Message::about(codes::SCHEMA_VALIDATION_ERROR, &r, &ns, None, text)
                            .to_string(),
                    ],
                });
                continue;
            }
            first_seen.insert(key.clone(), r.origin.clone());

            let mut errors: Vec<String> = galley::validate_messages(&r, &ns)
                .into_iter()
                .filter(Message::is_error)
                .map(|m| m.to_string())
                .collect();
            if let Some(problem) = registry::kubernetes_problem(&r) {
                let text = format!("Schema validation error: {problem}");
                errors.push(
                    Message::about(codes::SCHEMA_VALIDATION_ERROR, &r, &ns, None, text).to_string(),
                );
            }
            if errors.is_empty() {
                let arc = match self.accepted.get(&key) {
                    Some(old) if same_content(old, &r) => old.clone(),
                    _ => Arc::new(without_tree(r)),
                };
                next.insert(key, arc);
            } else {
                rejected.push(Rejected {
                    resource: key.to_string(),
                    origin: r.origin.to_string(),
                    messages: errors,
                });
                keep.insert(key);
            }
        }

        for e in &loaded.errors {
            let message = Message::from_decode_error(e, &ns).to_string();
            let key = match (&e.api_version, &e.kind, &e.name) {
                (Some(api_version), Some(kind), Some(name)) if !name.is_empty() => {
                    let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
                        String::new()
                    } else {
                        e.namespace
                            .clone()
                            .filter(|n| !n.is_empty())
                            .unwrap_or_else(|| ns.clone())
                    };
                    Some(ResourceKey {
                        group: split_api_version(api_version).0.to_string(),
                        kind: kind.clone(),
                        namespace,
                        name: name.clone(),
                    })
                }
                _ => None,
            };
            let resource = match &key {
                Some(k) => k.to_string(),
                None => e.kind.clone().unwrap_or_else(|| "document".into()),
            };
            match key {
                Some(k) => {
                    keep.insert(k);
                }
                None => {
                    broken_files.insert(e.origin.file.clone());
                }
            }
            rejected.push(Rejected {
                resource,
                origin: e.origin.to_string(),
                messages: vec![message],
            });
        }

        // Rejected versions never replace good state: keep what was accepted before.
        let mut kept: BTreeSet<String> = BTreeSet::new();
        for (key, old) in &self.accepted {
            if next.contains_key(key) {
                continue;
            }
            if keep.contains(key) || broken_files.contains(&old.origin.file) {
                next.insert(key.clone(), old.clone());
                kept.insert(key.to_string());
            }
        }
        let kept_last_good = kept.len();

        let previous: BTreeSet<(&str, &[String])> = self
            .rejected
            .iter()
            .map(|r| (r.resource.as_str(), r.messages.as_slice()))
            .collect();
        let mut new_rejections = 0;
        for r in &rejected {
            if previous.contains(&(r.resource.as_str(), r.messages.as_slice())) {
                continue;
            }
            new_rejections += 1;
            tracing::warn!(
                resource = %r.resource,
                origin = %r.origin,
                kept_last_good = kept.contains(&r.resource),
                "rejected config: {}",
                r.messages.join("; ")
            );
        }
        self.counter.add(new_rejections as u64);

        let added = next
            .keys()
            .filter(|k| !self.accepted.contains_key(*k))
            .count();
        let updated = next
            .iter()
            .filter(|(k, v)| {
                self.accepted
                    .get(*k)
                    .is_some_and(|old| !Arc::ptr_eq(old, v))
            })
            .count();
        let removed = self
            .accepted
            .keys()
            .filter(|k| !next.contains_key(*k))
            .count();
        let outcome = ApplyOutcome {
            accepted: next.len(),
            added,
            updated,
            removed,
            rejected: rejected.len(),
            new_rejections,
            kept_last_good,
        };
        self.accepted = next;
        self.rejected = rejected;
        outcome
    }
}

/// An accepted resource keeps no YAML tree: the tree only serves line numbers while
/// validating, and at 10,000 services it was the larger half of the store's memory.
fn without_tree(mut r: Resource) -> Resource {
    static EMPTY: std::sync::OnceLock<Arc<common::yaml::Node>> = std::sync::OnceLock::new();
    r.tree = EMPTY
        .get_or_init(|| {
            Arc::new(common::yaml::Node {
                line: 0,
                kind: common::yaml::NodeKind::Scalar(serde_json::Value::Null),
            })
        })
        .clone();
    r
}

/// Whether a newly loaded resource is the stored one (the tree aside, which the
/// store drops).
fn same_content(old: &Resource, new: &Resource) -> bool {
    old.api_version == new.api_version
        && old.kind == new.kind
        && old.meta == new.meta
        && old.body == new.body
        && old.origin == new.origin
}
