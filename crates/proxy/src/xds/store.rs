//! What the client holds, published for the data plane: [`XdsState`] is one
//! immutable snapshot (the accepted resources by type, the warming ones, and
//! per type the versions, nonce and last NACK); [`XdsStore`] swaps it
//! atomically, counts generations, and tells when the first full config has
//! been applied. [`XdsStats`] are the client's counters for the admin `/stats`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use tokio::sync::watch;

/// A NACK the client sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Nack {
    /// The nonce of the refused response.
    pub nonce: String,
    /// The version the refused response carried (`version_info` or
    /// `system_version_info`).
    pub version_info: String,
    /// Each rejected resource and why, in response order.
    pub rejected: Vec<(String, String)>,
    /// The `error_detail.message` sent.
    pub message: String,
    /// When it was sent.
    pub at: SystemTime,
}

/// The client's view of one xDS type.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeState {
    /// The version of the last response applied without rejections (SotW
    /// `version_info`, delta `system_version_info`); sent back in SotW requests.
    pub version_info: String,
    /// Delta: the version of every resource held, sent back as
    /// `initial_resource_versions` after a reconnect.
    pub resource_versions: BTreeMap<String, String>,
    /// The nonce of the last response received.
    pub nonce: String,
    /// Responses ACKed.
    pub acks: u64,
    /// Responses NACKed.
    pub nacks: u64,
    /// The most recent NACK, kept after later ACKs (for `/config_dump`).
    pub last_nack: Option<Nack>,
    /// When the last response was applied.
    pub last_update: Option<SystemTime>,
}

impl TypeState {
    /// Whether any response of this type was received.
    pub fn responded(&self) -> bool {
        self.acks + self.nacks > 0
    }
}

/// One immutable snapshot of everything the client holds.
#[derive(Debug, Clone, Default)]
pub struct XdsState {
    /// Clusters in use (warm).
    pub clusters: BTreeMap<String, Arc<Cluster>>,
    /// Accepted clusters still waiting for their endpoints (new ones, or the
    /// replacement of a cluster in [`XdsState::clusters`], which stays in use
    /// meanwhile).
    pub warming_clusters: BTreeMap<String, Arc<Cluster>>,
    /// Endpoints by EDS name (`service_name` or cluster name).
    pub endpoints: BTreeMap<String, Arc<ClusterLoadAssignment>>,
    /// Listeners in use (warm).
    pub listeners: BTreeMap<String, Arc<Listener>>,
    /// Accepted listeners still waiting for their route configs.
    pub warming_listeners: BTreeMap<String, Arc<Listener>>,
    /// Route configurations by name.
    pub routes: BTreeMap<String, Arc<RouteConfiguration>>,
    /// Secrets by name.
    pub secrets: BTreeMap<String, Arc<Secret>>,
    /// Per type URL: versions, nonce, ACK/NACK history.
    pub types: BTreeMap<String, TypeState>,
    /// Whether the first full config (CDS with its EDS, LDS with its RDS) has
    /// been applied. Never turns false again.
    pub synced: bool,
}

impl XdsState {
    /// The state of `type_url` (empty if nothing was received).
    pub fn type_state(&self, type_url: &str) -> TypeState {
        self.types.get(type_url).cloned().unwrap_or_default()
    }
}

/// The client's counters. Plain atomics; `/stats` renders them.
#[derive(Debug, Default)]
pub struct XdsStats {
    /// ADS streams established.
    pub connects: AtomicU64,
    /// Connection attempts that failed before a stream was established.
    pub connect_failures: AtomicU64,
    /// Established streams that ended.
    pub disconnects: AtomicU64,
    /// Responses applied and ACKed.
    pub updates_accepted: AtomicU64,
    /// Responses NACKed (one or more resources rejected).
    pub updates_rejected: AtomicU64,
    /// Resources rejected, over all NACKs.
    pub resources_rejected: AtomicU64,
    /// Whether a stream is up now.
    pub connected: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl XdsStats {
    /// The last connection or stream error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_last_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

struct Inner {
    state: ArcSwap<XdsState>,
    generation: watch::Sender<u64>,
    synced: watch::Sender<bool>,
    stats: XdsStats,
}

/// The published snapshots. Cheap to clone; every clone sees the same store.
#[derive(Clone)]
pub struct XdsStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for XdsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsStore")
            .field("generation", &*self.inner.generation.borrow())
            .field("synced", &*self.inner.synced.borrow())
            .finish_non_exhaustive()
    }
}

impl Default for XdsStore {
    fn default() -> Self {
        Self::new()
    }
}

impl XdsStore {
    /// An empty store (generation 0, not synced).
    pub fn new() -> Self {
        XdsStore {
            inner: Arc::new(Inner {
                state: ArcSwap::from_pointee(XdsState::default()),
                generation: watch::channel(0).0,
                synced: watch::channel(false).0,
                stats: XdsStats::default(),
            }),
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<XdsState> {
        self.inner.state.load_full()
    }

    /// The generation counter: it changes after every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// The current generation (0 before the first publish).
    pub fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    /// Whether the first full config has been applied (for `/healthz/ready`).
    pub fn initial_sync_done(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Turns true once the first full config has been applied.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.inner.synced.subscribe()
    }

    /// The client's counters.
    pub fn stats(&self) -> &XdsStats {
        &self.inner.stats
    }

    /// Replaces the snapshot and bumps the generation.
    pub(crate) fn publish(&self, state: XdsState) {
        let synced = state.synced;
        self.inner.state.store(Arc::new(state));
        self.inner.generation.send_modify(|g| *g += 1);
        if synced {
            self.inner
                .synced
                .send_if_modified(|s| !std::mem::replace(s, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_bumps_the_generation_and_latches_synced() {
        let store = XdsStore::new();
        let mut generations = store.subscribe();
        let synced = store.synced();
        assert_eq!(store.generation(), 0);
        let mut state = XdsState::default();
        state
            .clusters
            .insert("a".into(), Arc::new(Cluster::default()));
        store.publish(state.clone());
        assert!(generations.has_changed().unwrap());
        assert_eq!(*generations.borrow_and_update(), 1);
        assert!(store.load().clusters.contains_key("a"));
        assert!(!store.initial_sync_done() && !*synced.borrow());
        state.synced = true;
        store.publish(state.clone());
        assert!(store.initial_sync_done() && *synced.borrow());
        state.synced = false;
        store.publish(state);
        assert!(store.initial_sync_done(), "never turns false again");
        assert_eq!(store.generation(), 3);
    }
}
