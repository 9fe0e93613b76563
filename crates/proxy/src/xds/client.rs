//! The ADS connection: one task that connects, subscribes, applies and
//! acknowledges, and reconnects with backoff when the stream ends.
//!
//! Per stream, as Envoy does: the node goes on the first request only; CDS is
//! requested first (wildcard), then EDS for the EDS names of the clusters held;
//! LDS (wildcard) once the first clusters are warm (or after
//! `initial_fetch_timeout`), then RDS and SDS for the names the listeners and
//! clusters reference. After each response: apply it ([`Working::apply`]),
//! drop the EDS/RDS/SDS resources nothing references any more, publish one
//! snapshot, ACK or NACK the response, then send the subscription changes it
//! caused (new names subscribed, vanished ones unsubscribed).
//!
//! Requests, delta: a first request per type carries `resource_names_subscribe`
//! (`*` for CDS and LDS) and `initial_resource_versions` for what is held (so a
//! reconnect resends only what changed); changes carry subscribe/unsubscribe
//! and no nonce (a nonce would make pilot judge them stale); an ACK is the
//! nonce alone, a NACK adds `error_detail` (google.rpc code 3). SotW: every
//! request carries the full `resource_names` of the type, the last accepted
//! `version_info` and the last nonce; a NACK repeats the last accepted version.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use super::apply::{Incoming, Update, Working};
use super::handler::Handlers;
use super::store::{XdsStats, XdsStore};
use super::{
    CLUSTER, ENDPOINT, Error, LISTENER, ROUTE, SECRET, TYPES, XdsConfig, is_wildcard_type,
    short_type,
};

/// The largest response accepted, in bytes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// How long a TCP/TLS connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The running client. Dropping it leaves the task running; call
/// [`XdsHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct XdsHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl XdsHandle {
    /// Ends the stream and the task, and waits for it.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }

    /// Whether the task has ended (it only ends on shutdown).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Starts the client: it runs until [`XdsHandle::shutdown`], publishing into
/// `store` and validating with `handlers`.
pub fn spawn(config: XdsConfig, store: XdsStore, handlers: Handlers) -> XdsHandle {
    let (stop, stopped) = watch::channel(false);
    let work = Working::new((*store.load()).clone(), config.initial_fetch_timeout);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let client = Client {
        config,
        store,
        handlers,
        work,
        lds_started: false,
        rng: seed | 1,
    };
    XdsHandle {
        stop,
        task: tokio::spawn(run(client, stopped)),
    }
}

struct Client {
    config: XdsConfig,
    store: XdsStore,
    handlers: Handlers,
    work: Working,
    /// LDS was requested once; later streams request it at once.
    lds_started: bool,
    rng: u64,
}

impl Client {
    fn random(&mut self) -> u64 {
        // xorshift64: jitter only, not cryptographic.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn stats(&self) -> &XdsStats {
        self.store.stats()
    }
}

async fn run(mut client: Client, mut stopped: watch::Receiver<bool>) {
    let mut attempt: u32 = 0;
    loop {
        let mut healthy = false;
        let result = tokio::select! {
            r = client.stream(&mut healthy) => r,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let stats = client.stats();
        if stats.connected.swap(false, Ordering::Relaxed) {
            XdsStats::add(&stats.disconnects, 1);
        }
        if healthy {
            attempt = 0;
        }
        let random = client.random();
        let delay = client.config.backoff.delay(attempt, random);
        attempt = attempt.saturating_add(1);
        let error = match result {
            Ok(()) => Error::Closed.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(endpoint = %client.config.endpoint, %error, retry_in = ?delay, "xDS: stream ended; reconnecting");
        client.stats().set_last_error(error);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
    }
}

/// Requests to pilot, by protocol.
enum Sender {
    Delta(mpsc::UnboundedSender<DeltaDiscoveryRequest>),
    Sotw(mpsc::UnboundedSender<DiscoveryRequest>),
}

/// What this stream asked for, of one type.
#[derive(Debug, Default)]
struct Sub {
    requested: bool,
    names: BTreeSet<String>,
    nonce: String,
}

/// One stream's bookkeeping.
struct Session {
    tx: Sender,
    node: Option<Node>,
    subs: BTreeMap<&'static str, Sub>,
    started: Instant,
}

fn nack_status(message: String) -> RpcStatus {
    RpcStatus {
        code: tonic::Code::InvalidArgument as i32,
        message,
        details: vec![],
    }
}

impl Session {
    fn sub(&mut self, type_url: &'static str) -> &mut Sub {
        self.subs.entry(type_url).or_default()
    }

    fn send_delta(&mut self, mut req: DeltaDiscoveryRequest) {
        req.node = self.node.take();
        if let Sender::Delta(tx) = &self.tx {
            let _ = tx.send(req);
        }
    }

    fn send_sotw(&mut self, mut req: DiscoveryRequest) {
        req.node = self.node.take();
        if let Sender::Sotw(tx) = &self.tx {
            let _ = tx.send(req);
        }
    }

    /// Brings the subscription of `type_url` to `desired` (`None`: wildcard).
    fn subscribe(
        &mut self,
        type_url: &'static str,
        desired: Option<BTreeSet<String>>,
        work: &Working,
    ) {
        let ts = work.state.types.get(type_url);
        let held_versions = ts.map(|t| t.resource_versions.clone()).unwrap_or_default();
        let version_info = ts.map(|t| t.version_info.clone()).unwrap_or_default();
        let delta = matches!(self.tx, Sender::Delta(_));
        let sub = self.sub(type_url);
        let (add, drop): (Vec<String>, Vec<String>) = match &desired {
            None if sub.requested => return,
            None => (vec!["*".to_string()], vec![]),
            Some(d) if !sub.requested && d.is_empty() => return,
            Some(d) if sub.requested && *d == sub.names => return,
            Some(d) => (
                d.difference(&sub.names).cloned().collect(),
                sub.names.difference(d).cloned().collect(),
            ),
        };
        let first = !sub.requested;
        sub.requested = true;
        sub.names = desired.clone().unwrap_or_default();
        let nonce = sub.nonce.clone();
        tracing::debug!(
            type_url = short_type(type_url),
            subscribe = add.len(),
            unsubscribe = drop.len(),
            "xDS: subscription"
        );
        if delta {
            let initial_resource_versions = if first {
                match &desired {
                    None => held_versions.into_iter().collect(),
                    Some(d) => held_versions
                        .into_iter()
                        .filter(|(n, _)| d.contains(n))
                        .collect(),
                }
            } else {
                Default::default()
            };
            self.send_delta(DeltaDiscoveryRequest {
                type_url: type_url.to_string(),
                resource_names_subscribe: add,
                resource_names_unsubscribe: drop,
                initial_resource_versions,
                ..Default::default()
            });
        } else {
            self.send_sotw(DiscoveryRequest {
                type_url: type_url.to_string(),
                version_info,
                resource_names: desired.unwrap_or_default().into_iter().collect(),
                response_nonce: nonce,
                ..Default::default()
            });
        }
    }

    /// ACKs (no `nack`) or NACKs the response `nonce` of `type_url`.
    fn acknowledge(
        &mut self,
        type_url: &'static str,
        nonce: &str,
        nack: Option<String>,
        work: &Working,
    ) {
        let version_info = work.state.type_state(type_url).version_info;
        let error_detail = nack.map(nack_status);
        match &self.tx {
            Sender::Delta(_) => self.send_delta(DeltaDiscoveryRequest {
                type_url: type_url.to_string(),
                response_nonce: nonce.to_string(),
                error_detail,
                ..Default::default()
            }),
            Sender::Sotw(_) => {
                let names = self.sub(type_url).names.iter().cloned().collect();
                self.send_sotw(DiscoveryRequest {
                    type_url: type_url.to_string(),
                    version_info,
                    resource_names: names,
                    response_nonce: nonce.to_string(),
                    error_detail,
                    ..Default::default()
                })
            }
        }
    }
}

fn known_type(type_url: &str) -> Option<&'static str> {
    TYPES.into_iter().find(|t| *t == type_url)
}

fn from_delta(r: DeltaDiscoveryResponse) -> Update {
    Update {
        type_url: r.type_url,
        version_info: r.system_version_info,
        nonce: r.nonce,
        resources: r
            .resources
            .into_iter()
            .map(|x| Incoming {
                name: x.name,
                version: x.version,
                resource: x.resource,
            })
            .collect(),
        removed: r.removed_resources,
        state_of_the_world: false,
    }
}

fn from_sotw(r: DiscoveryResponse) -> Update {
    Update {
        type_url: r.type_url,
        version_info: r.version_info,
        nonce: r.nonce,
        resources: r
            .resources
            .into_iter()
            .map(|any| Incoming {
                name: String::new(),
                version: String::new(),
                resource: Some(any),
            })
            .collect(),
        removed: vec![],
        state_of_the_world: true,
    }
}

impl Client {
    async fn connect(&self) -> Result<Channel, Error> {
        let endpoint = &self.config.endpoint;
        let bad = |source| Error::Endpoint {
            endpoint: endpoint.clone(),
            source,
        };
        let mut e = Endpoint::from_shared(endpoint.clone())
            .map_err(bad)?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = &self.config.tls {
            let tls = tls
                .client_config(self.config.identity.as_ref())
                .map_err(|reason| Error::Tls {
                    endpoint: endpoint.clone(),
                    reason,
                })?;
            e = e.tls_config(tls).map_err(bad)?;
        }
        e.connect().await.map_err(|source| Error::Connect {
            endpoint: endpoint.clone(),
            source,
        })
    }

    /// One stream, to its end. `healthy` turns true once a response arrived.
    async fn stream(&mut self, healthy: &mut bool) -> Result<(), Error> {
        let channel = match self.connect().await {
            Ok(c) => c,
            Err(e) => {
                XdsStats::add(&self.stats().connect_failures, 1);
                return Err(e);
            }
        };
        let mut ads = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        if self.config.delta {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut session = self.session(Sender::Delta(tx));
            self.sync(&mut session);
            let responses = ads
                .delta_aggregated_resources(UnboundedReceiverStream::new(rx))
                .await
                .map_err(Error::Stream)?
                .into_inner();
            self.serve(session, responses, from_delta, healthy).await
        } else {
            let (tx, rx) = mpsc::unbounded_channel();
            let mut session = self.session(Sender::Sotw(tx));
            self.sync(&mut session);
            let responses = ads
                .stream_aggregated_resources(UnboundedReceiverStream::new(rx))
                .await
                .map_err(Error::Stream)?
                .into_inner();
            self.serve(session, responses, from_sotw, healthy).await
        }
    }

    fn session(&self, tx: Sender) -> Session {
        Session {
            tx,
            node: Some(self.config.node.clone()),
            subs: BTreeMap::new(),
            started: Instant::now(),
        }
    }

    /// Reads an established stream's responses, and fires the warming timers.
    async fn serve<R>(
        &mut self,
        mut session: Session,
        mut responses: Streaming<R>,
        convert: fn(R) -> Update,
        healthy: &mut bool,
    ) -> Result<(), Error> {
        self.connected();
        loop {
            tokio::select! {
                msg = responses.message() => match msg.map_err(Error::Stream)? {
                    Some(r) => {
                        *healthy = true;
                        self.on_update(&mut session, convert(r));
                    }
                    None => return Err(Error::Closed),
                },
                _ = sleep_until(self.next_deadline(&session)) => self.on_timer(&mut session),
            }
        }
    }

    fn connected(&self) {
        let stats = self.stats();
        XdsStats::add(&stats.connects, 1);
        stats.connected.store(true, Ordering::Relaxed);
        tracing::info!(endpoint = %self.config.endpoint, node = %self.config.node.id, delta = self.config.delta, "xDS: stream established");
    }

    /// The next warming deadline, or the time LDS starts without warm clusters.
    fn next_deadline(&self, session: &Session) -> Option<Instant> {
        let cds = self.work.state.type_state(CLUSTER).responded();
        let lds = (!self.lds_started && !cds)
            .then(|| session.started + self.config.initial_fetch_timeout);
        [self.work.next_deadline(), lds].into_iter().flatten().min()
    }

    fn on_timer(&mut self, session: &mut Session) {
        for (type_url, name) in self.work.expire(Instant::now()) {
            tracing::warn!(type_url = short_type(type_url), name, timeout = ?self.config.initial_fetch_timeout, "xDS: still waiting for what it references; using it anyway");
        }
        self.prune();
        self.store.publish(self.work.state.clone());
        self.sync(session);
    }

    fn on_update(&mut self, session: &mut Session, update: Update) {
        let Some(type_url) = known_type(&update.type_url) else {
            tracing::warn!(type_url = %update.type_url, "xDS: response of a type never subscribed to; ignoring it");
            return;
        };
        session.sub(type_url).nonce = update.nonce.clone();
        let out = self.work.apply(&update, &self.handlers, Instant::now());
        let stats = self.store.stats();
        let nack = out.nack_message();
        match &nack {
            None => {
                XdsStats::add(&stats.updates_accepted, 1);
                tracing::debug!(type_url = short_type(type_url), version = %update.version_info, accepted = out.accepted.len(), removed = out.removed.len(), "xDS: applied");
            }
            Some(message) => {
                XdsStats::add(&stats.updates_rejected, 1);
                XdsStats::add(&stats.resources_rejected, out.rejected.len() as u64);
                tracing::warn!(type_url = short_type(type_url), version = %update.version_info, nonce = %update.nonce, accepted = out.accepted.len(), rejected = out.rejected.len(), %message, "xDS: rejecting resources (NACK); keeping their last good version");
            }
        }
        // Publish first: what is ACKed (and what the new subscriptions follow
        // from) is in the store by then.
        self.prune();
        self.store.publish(self.work.state.clone());
        session.acknowledge(type_url, &update.nonce, nack, &self.work);
        self.sync(session);
    }

    /// Sends the subscriptions the held resources call for, in Envoy's order.
    fn sync(&mut self, session: &mut Session) {
        session.subscribe(CLUSTER, None, &self.work);
        self.named(session, ENDPOINT);
        let cds = self.work.state.type_state(CLUSTER).responded();
        // Without any CDS answer, LDS starts after `initial_fetch_timeout`; with
        // one, it waits for warming (bounded by the same timeout per cluster).
        let lds_due = !cds && session.started.elapsed() >= self.config.initial_fetch_timeout;
        if !self.lds_started && ((cds && self.work.state.warming_clusters.is_empty()) || lds_due) {
            self.lds_started = true;
        }
        if self.lds_started {
            session.subscribe(LISTENER, None, &self.work);
        }
        self.named(session, ROUTE);
        self.named(session, SECRET);
    }

    fn named(&mut self, session: &mut Session, type_url: &'static str) {
        debug_assert!(!is_wildcard_type(type_url));
        let desired = self.work.desired(type_url);
        session.subscribe(type_url, Some(desired), &self.work);
    }

    /// Drops the EDS, RDS and SDS resources nothing references any more.
    fn prune(&mut self) {
        for type_url in [ENDPOINT, ROUTE, SECRET] {
            let desired = self.work.desired(type_url);
            self.work.prune(type_url, &desired);
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
