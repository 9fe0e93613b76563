//! What `/debug/syncz` shows of the live ADS connections: per connection and
//! per type, the versions and nonces sent and ACKed and the last NACK
//! ([`ConnectionStatus`], [`TypeStatus`]), kept in [`Connections`], the
//! registry each connection joins for its life ([`Registration`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;

use super::short_type;
use crate::proxy::Proxy;

/// Which flavour of ADS a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// `StreamAggregatedResources` (state of the world).
    Sotw,
    /// `DeltaAggregatedResources` (incremental).
    Delta,
}

/// A moment, kept as the clock gave it and written as RFC 3339 (UTC) only when
/// shown: a connection stamps every response and ACK, `/debug/syncz` reads few.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(pub SystemTime);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Timestamp(SystemTime::now())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&rfc3339(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A NACK as the proxy sent it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NackStatus {
    /// `error_detail.message`: why the proxy refused the response.
    pub message: String,
    /// The nonce of the refused response.
    pub nonce: String,
    /// The version the proxy still runs (`version_info`; empty for delta).
    pub version: String,
    /// When the NACK arrived (RFC 3339, UTC).
    pub at: String,
}

/// The state of one xDS type on one connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeStatus {
    /// The type URL.
    pub type_url: String,
    /// Whether the proxy asked for everything of this type (CDS and LDS).
    pub wildcard: bool,
    /// How many resource names the proxy subscribed to.
    pub subscribed: usize,
    /// The subscribed names (kept for `/debug/config_dump`, not shown in syncz).
    #[serde(skip)]
    pub names: Vec<String>,
    /// `version_info` (SotW) or `system_version_info` (delta) of the last response.
    pub version_sent: Option<String>,
    /// Nonce of the last response.
    pub nonce_sent: Option<String>,
    /// When the last response was sent (RFC 3339, UTC).
    pub sent_at: Option<Timestamp>,
    /// Resources in the last response (for delta: changed ones only).
    pub resources_sent: usize,
    /// Responses sent for this type on this connection.
    pub pushes: u64,
    /// The version the proxy last ACKed.
    pub version_acked: Option<String>,
    /// The nonce the proxy last ACKed.
    pub nonce_acked: Option<String>,
    /// When the last ACK arrived (RFC 3339, UTC).
    pub acked_at: Option<Timestamp>,
    /// NACKs received for this type on this connection.
    pub rejects: u64,
    /// The most recent NACK, kept after later ACKs as history.
    pub last_nack: Option<NackStatus>,
}

/// What `/debug/syncz` shows for one connection.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionStatus {
    /// Unique per stream: `<node id>-<counter>`, as Istio's.
    pub connection_id: String,
    /// The Envoy node id.
    pub proxy_id: String,
    /// `sidecar` or `router`.
    pub proxy_type: String,
    /// The proxy's namespace.
    pub namespace: String,
    /// The remote address, when known.
    pub peer: Option<String>,
    /// The client certificate's SPIFFE identity, on the mTLS port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// SotW or delta.
    pub protocol: Protocol,
    /// When the stream was accepted (RFC 3339, UTC).
    pub connected_since: String,
    /// The snapshot version the connection last generated from.
    pub snapshot_version: u64,
    /// Per type, keyed by Istio's short name (`cds`, `eds`, `lds`, `rds`).
    pub types: BTreeMap<String, TypeStatus>,
    /// The identified proxy (for `/debug/config_dump`).
    #[serde(skip)]
    pub proxy: Proxy,
}

impl ConnectionStatus {
    /// The status of `type_url`, if the proxy watches it.
    pub fn type_status(&self, type_url: &str) -> Option<&TypeStatus> {
        self.types.get(short_type(type_url))
    }
}

type Shared = Arc<Mutex<ConnectionStatus>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The live ADS connections, by connection id. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    inner: Arc<Mutex<BTreeMap<String, Shared>>>,
}

impl Connections {
    /// How many streams are open.
    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    /// Whether no stream is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of every connection's status, ordered by connection id.
    pub fn list(&self) -> Vec<ConnectionStatus> {
        let shared: Vec<Shared> = lock(&self.inner).values().cloned().collect();
        shared.iter().map(|s| lock(s).clone()).collect()
    }

    /// The most recent connection of a proxy, found by its full node id, by
    /// `POD.NAMESPACE` (Istio's `proxyID`), or by connection id.
    pub fn find(&self, query: &str) -> Option<ConnectionStatus> {
        self.list()
            .into_iter()
            .filter(|c| {
                c.proxy_id == query
                    || c.connection_id == query
                    || format!("{}.{}", c.proxy.pod_name, c.proxy.namespace) == query
            })
            .max_by(|a, b| a.connected_since.cmp(&b.connected_since))
    }

    pub(super) fn register(&self, status: ConnectionStatus) -> Registration {
        let id = status.connection_id.clone();
        let shared = Arc::new(Mutex::new(status));
        lock(&self.inner).insert(id.clone(), shared.clone());
        Registration {
            connections: self.clone(),
            id,
            shared,
        }
    }
}

/// Removes its connection from [`Connections`] when dropped.
pub(super) struct Registration {
    connections: Connections,
    id: String,
    shared: Shared,
}

impl Registration {
    /// Changes the registered status.
    pub(super) fn update(&self, f: impl FnOnce(&mut ConnectionStatus)) {
        f(&mut lock(&self.shared));
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.connections.inner).remove(&self.id);
    }
}

pub use common::time::rfc3339_millis as rfc3339;
