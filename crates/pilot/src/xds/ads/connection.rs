//! One ADS connection's bookkeeping, shared by the SotW and delta loops: who the
//! proxy is, the snapshot it is being served from, sending with shutdown in
//! mind, and recording into its per-type status for `/debug/syncz`
//! ([`super::status`]). Convergence (`pilot_proxy_convergence_time`) is measured
//! here: from the moment a connection sees a new snapshot to the proxy ACKing
//! every type pushed for it.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::config::core::v3::{ControlPlane, Node};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Status, Streaming};

use super::outbox::Outbox;
use super::status::Registration;
pub use super::status::{
    ConnectionStatus, Connections, NackStatus, Protocol, Timestamp, TypeStatus, rfc3339,
};
use super::{AdsError, AdsServer, PUSH_ORDER, Peer, short_type, type_index};
use crate::metrics::PushMetrics;
use crate::model::Snapshot;
use crate::proxy::Proxy;
use crate::xds::{GenerateError, NamedResource};

/// What a push regenerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Every watched type.
    Full,
    /// EDS only, for clusters of hosts whose endpoints changed (Istio's
    /// incremental EDS push).
    Endpoints,
}

/// The host of an Istio cluster name (`outbound|9080|v1|reviews.default.svc.cluster.local`).
pub(super) fn cluster_host(name: &str) -> Option<&str> {
    let mut parts = name.split('|');
    let (_dir, _port, _subset, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || host.is_empty() {
        return None;
    }
    Some(host)
}

/// Types pushed for one snapshot and not yet ACKed.
#[derive(Debug)]
struct Pending {
    start: Instant,
    /// Bit `i`: [`PUSH_ORDER`]`[i]` (every type the generator serves).
    types: u8,
}

/// The bit of `type_url` in [`Pending::types`] (none for a type pilot does not
/// generate, which is never pushed).
fn type_bit(type_url: &str) -> u8 {
    type_index(type_url).map_or(0, |i| 1 << i)
}

/// The request messages of one ADS call, whatever carries them: tonic's
/// [`Streaming`] on the mTLS port, [`super::transport`]'s on the plaintext one.
pub(crate) trait Requests<T>: Send {
    /// The next request; `Ok(None)` when the proxy closed its side.
    fn message(&mut self) -> impl std::future::Future<Output = Result<Option<T>, Status>> + Send;
}

impl<T: Send + 'static> Requests<T> for Streaming<T> {
    async fn message(&mut self) -> Result<Option<T>, Status> {
        Streaming::message(self).await
    }
}

/// Reads the first request of a stream, bounded in time. `Ok(None)`: the proxy
/// went away first.
pub(super) async fn first_request<T>(
    server: &AdsServer,
    requests: &mut impl Requests<T>,
) -> Result<Option<T>, AdsError> {
    let limit = server.limits.first_request_timeout;
    match tokio::time::timeout(limit, requests.message()).await {
        Ok(Ok(Some(r))) => Ok(Some(r)),
        Ok(Ok(None)) => Ok(None),
        Ok(Err(status)) if super::bad_request(&status) => Err(AdsError::BadRequest(status)),
        Ok(Err(status)) => {
            tracing::debug!(error = %status, "ADS stream failed before its first request");
            Ok(None)
        }
        Err(_) => Err(AdsError::NoFirstRequest(limit)),
    }
}

/// Resolves once `closing` turns true (pilot is shutting down).
pub(super) async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// One ADS stream protocol (SotW or delta): how it applies a request and how it
/// pushes a new snapshot. [`serve`] and [`drive`] run what both share.
pub(super) trait StreamProtocol: Sized {
    /// The request message.
    type Req;
    /// The response message.
    type Resp;
    /// Which protocol, for `/debug/syncz` and logs.
    const PROTOCOL: Protocol;
    /// The node a request carries (required on the first).
    fn node(req: &Self::Req) -> Option<Node>;
    /// A fresh stream state on an identified connection.
    fn new(conn: Conn<Self::Resp>) -> Self;
    /// The stream's connection.
    fn conn(&mut self) -> &mut Conn<Self::Resp>;
    /// Applies one request.
    async fn handle(&mut self, req: Self::Req) -> Result<(), AdsError>;
    /// Pushes what a newly published snapshot changed.
    async fn push(&mut self) -> Result<(), AdsError>;
}

/// Serves one stream to its end: reads the first request, identifies the proxy,
/// then [`drive`]s the protocol; a failure ends the stream with its status.
pub(super) async fn serve<S: StreamProtocol, Q: Requests<S::Req>>(
    server: AdsServer,
    mut requests: Q,
    tx: Outbox<Result<S::Resp, Status>>,
    peer: Peer,
) {
    let first = match first_request(&server, &mut requests).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => return fail(&tx, &e).await,
    };
    let conn = match Conn::start(
        server,
        S::node(&first),
        peer.clone(),
        S::PROTOCOL,
        tx.clone(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, peer = ?peer.addr, identity = ?peer.identity.as_ref().map(ToString::to_string), protocol = ?S::PROTOCOL, "ADS: refusing stream");
            return fail(&tx, &e).await;
        }
    };
    let mut stream = S::new(conn);
    if let Err(e) = drive(&mut stream, first, requests).await {
        if !matches!(e, AdsError::Closed | AdsError::ShuttingDown) {
            tracing::warn!(connection = %stream.conn().id, error = %e, "ADS: ending stream");
        }
        fail(&tx, &e).await;
    }
}

/// Runs an identified stream: the first request, then requests and published
/// snapshots as they come, until the proxy leaves (`Ok`) or pilot shuts down.
async fn drive<S: StreamProtocol>(
    s: &mut S,
    first: S::Req,
    mut requests: impl Requests<S::Req>,
) -> Result<(), AdsError> {
    s.handle(first).await?;
    let mut closing = s.conn().closing();
    // One shutdown future for the stream's life, not one per loop turn; and
    // one registration for new snapshots, kept while requests come and go
    // (a `changed()` future per turn would leave and rejoin the model's
    // waiter list, shared by every connection, on each ACK).
    let mut shutdown = pin!(closed(&mut closing));
    let mut versions = WatchStream::from_changes(s.conn().versions.clone());
    let mut model_alive = true;
    loop {
        tokio::select! {
            biased;
            () = shutdown.as_mut() => return Err(AdsError::ShuttingDown),
            msg = requests.message() => match msg {
                Ok(Some(req)) => s.handle(req).await?,
                Ok(None) => return Ok(()),
                Err(status) if super::bad_request(&status) => {
                    return Err(AdsError::BadRequest(status));
                }
                Err(status) => {
                    tracing::debug!(connection = %s.conn().id, error = %status, "ADS: stream ended");
                    return Ok(());
                }
            },
            changed = versions.next(), if model_alive => match changed {
                Some(_) => {
                    s.push().await?;
                    s.conn().wave_done();
                }
                None => model_alive = false,
            },
        }
    }
}

/// Ends a stream with `error`, unless the proxy already went away.
pub(super) async fn fail<R>(tx: &Outbox<Result<R, Status>>, error: &AdsError) {
    if matches!(error, AdsError::Closed) {
        return;
    }
    tx.send(Err(Status::from(error))).await;
}

/// One identified, registered connection.
pub(super) struct Conn<R> {
    /// The server (model, generator, metrics, limits).
    pub server: AdsServer,
    /// The proxy as its node describes it; completed again on every snapshot.
    base: Proxy,
    /// Who the proxy is, completed from [`Conn::snapshot`].
    pub proxy: Proxy,
    /// The snapshot every response is generated from until the next push.
    pub snapshot: Arc<Snapshot>,
    /// New snapshot versions.
    pub versions: watch::Receiver<u64>,
    /// The connection id.
    pub id: String,
    tx: Outbox<Result<R, Status>>,
    closing: watch::Receiver<bool>,
    pending: Option<Pending>,
    /// The last snapshot version reported to the push wave.
    wave_reported: u64,
    registration: Registration,
    /// Push metrics of the served types by [`PUSH_ORDER`] slot, and of any
    /// other type by URL, each looked up once.
    push_metrics: [Option<PushMetrics>; PUSH_ORDER.len()],
    other_metrics: Vec<(String, PushMetrics)>,
}

impl<R> Conn<R> {
    /// Identifies the proxy from the first request's node, waits (bounded) for
    /// pilot's first snapshot, and registers the connection.
    pub async fn start(
        server: AdsServer,
        node: Option<Node>,
        peer: Peer,
        protocol: Protocol,
        tx: Outbox<Result<R, Status>>,
    ) -> Result<Self, AdsError> {
        let node = node
            .filter(|n| !n.id.is_empty())
            .ok_or(AdsError::MissingNode)?;
        let base = Proxy::from_node(&node).map_err(AdsError::BadNode)?;
        if let Some(identity) = &peer.identity
            && identity.namespace != base.namespace
        {
            return Err(AdsError::Unauthorized {
                identity: identity.to_string(),
                proxy: base.id.clone(),
                namespace: base.namespace.clone(),
            });
        }
        let mut versions = server.model.subscribe();
        let mut closing = server.closing.subscribe();
        if *closing.borrow() {
            return Err(AdsError::ShuttingDown);
        }
        if server.model.load().version == 0 {
            let wait =
                tokio::time::timeout(server.limits.ready_timeout, versions.wait_for(|v| *v > 0));
            tokio::select! {
                r = wait => match r {
                    Ok(Ok(_)) => {}
                    _ => return Err(AdsError::NotReady),
                },
                _ = closed(&mut closing) => return Err(AdsError::ShuttingDown),
            }
        }
        versions.borrow_and_update();
        let snapshot = server.model.load();
        let proxy = complete(&base, &snapshot);
        let id = server.next_connection_id(&proxy.id);
        let status = ConnectionStatus {
            connection_id: id.clone(),
            proxy_id: proxy.id.clone(),
            proxy_type: proxy.kind.to_string(),
            namespace: proxy.namespace.clone(),
            peer: peer.addr.map(|p| p.to_string()),
            identity: peer.identity.as_ref().map(ToString::to_string),
            protocol,
            connected_since: rfc3339(SystemTime::now()),
            snapshot_version: snapshot.version,
            types: BTreeMap::new(),
            proxy: proxy.clone(),
        };
        let registration = server.connections.register(status);
        server.metrics.connected.inc();
        tracing::info!(connection = %id, ?protocol, peer = ?peer.addr, identity = ?peer.identity.as_ref().map(ToString::to_string), "ADS: new connection");
        Ok(Conn {
            server,
            base,
            proxy,
            snapshot,
            versions,
            id,
            tx,
            closing,
            pending: None,
            wave_reported: 0,
            registration,
            push_metrics: Default::default(),
            other_metrics: Vec::new(),
        })
    }

    /// Tells the push wave that this connection is done with its snapshot.
    pub fn wave_done(&mut self) {
        let version = self.snapshot.version;
        if version != self.wave_reported {
            self.wave_reported = version;
            self.server.wave.done(version);
        }
    }

    /// A receiver that turns true when pilot shuts down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.clone()
    }

    /// Moves to the latest published snapshot, re-deriving the proxy from it.
    /// Returns what the push must cover, or `None` when there is nothing newer.
    pub fn refresh(&mut self) -> Option<Scope> {
        let latest = self.server.model.load();
        if latest.version == self.snapshot.version {
            return None;
        }
        if latest.endpoints_only {
            let connections = &self.server.connections;
            self.server.wave.begin(latest.version, || connections.len());
        }
        // The proxy is derived from its node and the registry's workload at its
        // IPs; when that workload is the same, so is the proxy.
        let proxy = if self.base.workload_in(&latest) == self.base.workload_in(&self.snapshot) {
            None
        } else {
            Some(complete(&self.base, &latest)).filter(|p| *p != self.proxy)
        };
        // The fast path holds only when this connection saw the snapshot right
        // before (none was skipped) and the proxy itself did not change.
        let same = proxy.is_none();
        let scope = if latest.endpoints_only && latest.version == self.snapshot.version + 1 && same
        {
            Scope::Endpoints
        } else {
            Scope::Full
        };
        let version = latest.version;
        self.snapshot = latest;
        match proxy {
            None => self.with_status(|s| s.snapshot_version = version),
            Some(proxy) => {
                self.proxy = proxy;
                let proxy = self.proxy.clone();
                self.with_status(|s| {
                    s.snapshot_version = version;
                    s.proxy = proxy;
                });
            }
        }
        Some(scope)
    }

    /// Whether an endpoint-only change can affect EDS `names`: some name is a
    /// cluster of a host whose endpoints changed (names that are not Istio
    /// cluster names count as affected).
    pub fn endpoints_touch(&self, names: &BTreeSet<String>) -> bool {
        names.iter().any(|n| match cluster_host(n) {
            Some(host) => self.snapshot.endpoints_changed.contains(host),
            None => true,
        })
    }

    /// The resources of `type_url` for this proxy from the current snapshot.
    pub fn generate(
        &self,
        type_url: &str,
        names: &[String],
    ) -> Result<Vec<NamedResource>, GenerateError> {
        (self.server.generator)(&self.snapshot, &self.proxy, type_url, names)
    }

    /// A nonce no other response of this process carries.
    pub fn nonce(&self) -> String {
        self.server.nonces.next()
    }

    /// Identifies pilot to Envoy (`control_plane` in responses).
    pub fn control_plane(&self) -> Option<ControlPlane> {
        Some(ControlPlane {
            identifier: concat!("mizzen-pilot/", env!("CARGO_PKG_VERSION")).to_string(),
        })
    }

    /// Queues one response; fails when pilot is stopping. (When the proxy goes
    /// away, HTTP/2 drops the response stream and this loop with it.)
    pub async fn send(&self, response: R) -> Result<(), AdsError> {
        let Err(response) = self.tx.try_send(Ok(response)) else {
            return Ok(());
        };
        // The queue is full: wait for the proxy to read, or for shutdown.
        let mut closing = self.closing.clone();
        tokio::select! {
            () = self.tx.send(response) => Ok(()),
            _ = closed(&mut closing) => Err(AdsError::ShuttingDown),
        }
    }

    fn with_status(&self, f: impl FnOnce(&mut ConnectionStatus)) {
        self.registration.update(f);
    }

    fn with_type(&self, type_url: &str, f: impl FnOnce(&mut TypeStatus)) {
        self.with_status(|s| {
            let short = short_type(type_url);
            if let Some(t) = s.types.get_mut(short) {
                return f(t);
            }
            let mut t = TypeStatus {
                type_url: type_url.to_string(),
                ..TypeStatus::default()
            };
            f(&mut t);
            s.types.insert(short.to_string(), t);
        });
    }

    /// Records the proxy's subscription to `type_url` (`names` in any order).
    pub fn watching<'a>(
        &self,
        type_url: &str,
        names: impl Iterator<Item = &'a String>,
        wildcard: bool,
    ) {
        let mut names: Vec<String> = names.cloned().collect();
        names.sort_unstable();
        self.with_type(type_url, |t| {
            t.wildcard = wildcard;
            t.subscribed = names.len();
            t.names = names;
        });
    }

    /// Forgets `type_url` (the proxy unsubscribed).
    pub fn unwatch(&mut self, type_url: &str) {
        self.with_status(|s| {
            s.types.remove(short_type(type_url));
        });
        self.settle(type_url);
    }

    /// Records a response sent and counts it.
    pub fn sent(
        &mut self,
        type_url: &str,
        version: &str,
        nonce: &str,
        resources: usize,
        started: Instant,
    ) {
        let seconds = started.elapsed().as_secs_f64();
        let metrics = &self.server.metrics;
        match type_index(type_url) {
            Some(i) => self.push_metrics[i]
                .get_or_insert_with(|| metrics.push_metrics(type_url))
                .record(seconds),
            None => match self.other_metrics.iter().find(|(t, _)| t == type_url) {
                Some((_, m)) => m.record(seconds),
                None => {
                    let m = metrics.push_metrics(type_url);
                    m.record(seconds);
                    self.other_metrics.push((type_url.to_string(), m));
                }
            },
        }
        let now = Timestamp::now();
        self.with_type(type_url, |t| {
            set(&mut t.version_sent, version);
            set(&mut t.nonce_sent, nonce);
            t.sent_at = Some(now);
            t.resources_sent = resources;
            t.pushes += 1;
        });
        tracing::debug!(connection = %self.id, r#type = short_type(type_url), version, nonce, resources, "ADS: sent");
    }

    /// Records an ACK of the latest response of `type_url`.
    pub fn acked(&mut self, type_url: &str, version: &str, nonce: &str) {
        let now = Timestamp::now();
        self.with_type(type_url, |t| {
            set(&mut t.version_acked, version);
            set(&mut t.nonce_acked, nonce);
            t.acked_at = Some(now);
        });
        tracing::trace!(connection = %self.id, r#type = short_type(type_url), version, nonce, "ADS: ACK");
        self.settle(type_url);
    }

    /// Records a NACK: kept in the status, counted, logged; never answered.
    pub fn nacked(&mut self, type_url: &str, message: &str, nonce: &str, version: &str) {
        self.server.metrics.record_reject(type_url);
        tracing::warn!(
            connection = %self.id,
            r#type = short_type(type_url),
            nonce,
            version,
            error = message,
            "ADS: proxy rejected the configuration (NACK); keeping its last accepted version"
        );
        let nack = NackStatus {
            message: message.to_string(),
            nonce: nonce.to_string(),
            version: version.to_string(),
            at: rfc3339(SystemTime::now()),
        };
        self.with_type(type_url, |t| {
            t.rejects += 1;
            t.last_nack = Some(nack);
        });
        // A rejected push never converges; stop timing it.
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.types & type_bit(type_url) != 0)
        {
            self.pending = None;
        }
    }

    /// Counts a request ignored for its stale nonce.
    pub fn expired(&self, type_url: &str, nonce: &str, latest: Option<&str>) {
        self.server.metrics.record_expired_nonce(type_url);
        tracing::debug!(connection = %self.id, r#type = short_type(type_url), nonce, latest, "ADS: stale nonce ignored");
    }

    /// Starts (or extends) convergence timing for the types just pushed.
    pub fn pushed<'a>(&mut self, started: Instant, types: impl IntoIterator<Item = &'a str>) {
        let bits = types.into_iter().fold(0, |bits, t| bits | type_bit(t));
        if bits == 0 {
            return;
        }
        let pending = self.pending.get_or_insert(Pending {
            start: started,
            types: 0,
        });
        pending.types |= bits;
    }

    fn settle(&mut self, type_url: &str) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        p.types &= !type_bit(type_url);
        if p.types == 0 {
            let seconds = p.start.elapsed().as_secs_f64();
            self.server.metrics.convergence.observe(seconds);
            tracing::debug!(connection = %self.id, seconds, "ADS: proxy converged");
            self.pending = None;
        }
    }
}

impl<R> Drop for Conn<R> {
    fn drop(&mut self) {
        self.server.metrics.connected.dec();
        tracing::info!(connection = %self.id, "ADS: connection closed");
    }
}

/// Sets `slot` to `value`, reusing its allocation.
pub(super) fn set(slot: &mut Option<String>, value: &str) {
    match slot {
        Some(s) => {
            s.clear();
            s.push_str(value);
        }
        None => *slot = Some(value.to_string()),
    }
}

fn complete(base: &Proxy, snapshot: &Snapshot) -> Proxy {
    let mut proxy = base.clone();
    proxy.complete_from(snapshot);
    proxy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_hosts() {
        assert_eq!(
            cluster_host("outbound|9080|v1|reviews.default.svc.cluster.local"),
            Some("reviews.default.svc.cluster.local")
        );
        assert_eq!(cluster_host("outbound|9080||a.b"), Some("a.b"));
        assert_eq!(cluster_host("BlackHoleCluster"), None);
        assert_eq!(cluster_host("a|b|c|"), None);
    }
}
