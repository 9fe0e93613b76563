//! Incremental ADS (`DeltaAggregatedResources`), by Istio's rules (`delta.go`)
//! with per-resource versions: each resource's version is a hash of its
//! encoding, and the connection remembers, per type, the version the proxy holds
//! of every resource. A response carries only resources whose version differs
//! (or that the request just subscribed to), and `removed_resources` for those
//! the proxy holds that no longer exist, or that it just asked for and that do
//! not exist.
//!
//! The first request of a type opens the watch: `resource_names_subscribe`
//! (`*` or nothing means "all" for CDS and LDS) and `initial_resource_versions`
//! (what the proxy kept from an earlier stream, so unchanged resources are not
//! sent again). A NACK is recorded and not answered; a request with a nonce other
//! than the latest sent is stale and ignored; a request with the latest nonce is
//! an ACK; a request without a nonce changes the subscription. A CDS request,
//! and every push that changes clusters, is followed by all of EDS, so that
//! warming clusters get their endpoints (Istio's `forceEDSPush`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::connection::{Conn, Protocol, Scope, closed, fail, first_request};
use super::{AdsError, AdsServer, in_push_order, resource_version};
use crate::xds::{CLUSTER, ENDPOINT, GenerateError, is_wildcard_type};

type Tx = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

/// What the proxy watches of one type, and what it holds.
#[derive(Debug, Default)]
struct Watch {
    /// Subscribed to everything (`*`; CDS and LDS only).
    wildcard: bool,
    /// Explicitly subscribed names.
    names: BTreeSet<String>,
    /// The version of every resource the proxy holds, by name.
    held: HashMap<String, String>,
    nonce_sent: Option<String>,
    version_sent: Option<String>,
    /// The generator does not serve this type; stay silent.
    unsupported: bool,
}

/// Serves one delta stream to its end.
pub(super) async fn serve(
    server: AdsServer,
    mut requests: Streaming<DeltaDiscoveryRequest>,
    tx: Tx,
    peer: Option<SocketAddr>,
) {
    let first = match first_request(&server, &mut requests).await {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => return fail(&tx, &e).await,
    };
    let conn = match Conn::start(
        server,
        first.node.clone(),
        peer,
        Protocol::Delta,
        tx.clone(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, peer = ?peer, "ADS: refusing delta stream");
            return fail(&tx, &e).await;
        }
    };
    let mut stream = Delta {
        conn,
        watches: BTreeMap::new(),
    };
    if let Err(e) = stream.run(first, requests).await {
        if !matches!(e, AdsError::Closed | AdsError::ShuttingDown) {
            tracing::warn!(connection = %stream.conn.id, error = %e, "ADS: ending delta stream");
        }
        fail(&tx, &e).await;
    }
}

/// Which resources a response must carry beyond those whose version changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Only changes; nothing to send means no response.
    Changes,
    /// Changes, and a response even if empty (first request of a type).
    Always,
    /// Every resource, held or not (EDS after CDS).
    Everything,
}

struct Delta {
    conn: Conn<DeltaDiscoveryResponse>,
    watches: BTreeMap<String, Watch>,
}

impl Delta {
    async fn run(
        &mut self,
        first: DeltaDiscoveryRequest,
        mut requests: Streaming<DeltaDiscoveryRequest>,
    ) -> Result<(), AdsError> {
        self.handle(first).await?;
        let mut closing = self.conn.closing();
        let mut model_alive = true;
        loop {
            tokio::select! {
                biased;
                _ = closed(&mut closing) => return Err(AdsError::ShuttingDown),
                msg = requests.message() => match msg {
                    Ok(Some(req)) => self.handle(req).await?,
                    Ok(None) => return Ok(()),
                    Err(status) => {
                        tracing::debug!(connection = %self.conn.id, error = %status, "ADS: delta stream ended");
                        return Ok(());
                    }
                },
                changed = self.conn.versions.changed(), if model_alive => match changed {
                    Ok(()) => self.push().await?,
                    Err(_) => model_alive = false,
                },
            }
        }
    }

    async fn handle(&mut self, req: DeltaDiscoveryRequest) -> Result<(), AdsError> {
        let type_url = req.type_url.clone();
        if type_url.is_empty() {
            return Err(AdsError::MissingType);
        }
        let count = req.resource_names_subscribe.len()
            + req.resource_names_unsubscribe.len()
            + req.initial_resource_versions.len();
        let max = self.conn.server.limits.max_resource_names;
        if count > max {
            return Err(AdsError::TooManyNames {
                type_url,
                count,
                max,
            });
        }
        if let Some(error) = &req.error_detail {
            self.conn
                .nacked(&type_url, &error.message, &req.response_nonce, "");
            return Ok(());
        }
        let wildcard_type = is_wildcard_type(&type_url);
        let Some(watch) = self.watches.get_mut(&type_url) else {
            return self.new_watch(&type_url, req, wildcard_type).await;
        };
        if !req.response_nonce.is_empty() {
            if watch.nonce_sent.as_deref() != Some(req.response_nonce.as_str()) {
                self.conn
                    .expired(&type_url, &req.response_nonce, watch.nonce_sent.as_deref());
                return Ok(());
            }
            let version = watch.version_sent.clone().unwrap_or_default();
            self.conn.acked(&type_url, &version, &req.response_nonce);
        }
        let mut changed = false;
        let mut fresh = BTreeSet::new();
        for name in &req.resource_names_subscribe {
            if name == "*" {
                if wildcard_type && !watch.wildcard {
                    watch.wildcard = true;
                    changed = true;
                }
            } else {
                changed |= watch.names.insert(name.clone());
                // The proxy must get what it subscribes to, even if we think it
                // holds it: it may have dropped it and asked again.
                watch.held.remove(name);
                fresh.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                if watch.wildcard {
                    watch.wildcard = false;
                    let names = &watch.names;
                    watch.held.retain(|n, _| names.contains(n));
                    changed = true;
                }
            } else {
                changed |= watch.names.remove(name);
                watch.held.remove(name);
                fresh.remove(name);
            }
        }
        if changed || !fresh.is_empty() {
            self.conn.watching(&type_url, &watch.names, watch.wildcard);
            self.respond(&type_url, &fresh, Mode::Changes).await?;
        }
        Ok(())
    }

    async fn new_watch(
        &mut self,
        type_url: &str,
        req: DeltaDiscoveryRequest,
        wildcard_type: bool,
    ) -> Result<(), AdsError> {
        let mut watch = Watch::default();
        let mut fresh = BTreeSet::new();
        for name in &req.resource_names_subscribe {
            if name == "*" {
                watch.wildcard = wildcard_type;
            } else {
                watch.names.insert(name.clone());
                fresh.insert(name.clone());
            }
        }
        // "A client that never subscribed to any name is subscribed to *."
        if wildcard_type && req.resource_names_subscribe.is_empty() {
            watch.wildcard = true;
        }
        for (name, version) in req.initial_resource_versions {
            if name == "*" {
                continue;
            }
            if !wildcard_type {
                watch.names.insert(name.clone());
            }
            // The proxy holds it already; send only if it changed.
            fresh.remove(&name);
            watch.held.insert(name, version);
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                watch.wildcard = false;
            } else {
                watch.names.remove(name);
                watch.held.remove(name);
                fresh.remove(name);
            }
        }
        self.conn.watching(type_url, &watch.names, watch.wildcard);
        self.watches.insert(type_url.to_string(), watch);
        self.respond(type_url, &fresh, Mode::Always).await?;
        if type_url == CLUSTER && self.watches.contains_key(ENDPOINT) {
            self.respond(ENDPOINT, &BTreeSet::new(), Mode::Everything)
                .await?;
        }
        Ok(())
    }

    /// Generates `type_url` and sends the difference to what the proxy holds,
    /// plus `fresh` names (just subscribed). Returns whether a response went out.
    async fn respond(
        &mut self,
        type_url: &str,
        fresh: &BTreeSet<String>,
        send: Mode,
    ) -> Result<bool, AdsError> {
        let Some(watch) = self.watches.get_mut(type_url) else {
            return Ok(false);
        };
        if watch.unsupported {
            return Ok(false);
        }
        let started = Instant::now();
        let wildcard_type = is_wildcard_type(type_url);
        let generated = match self.conn.generate(type_url, &watch.names) {
            Ok(r) => r,
            Err(GenerateError::UnknownType(_)) => {
                tracing::warn!(connection = %self.conn.id, type_url, "ADS: proxy asked for a type pilot does not serve; ignoring it");
                watch.unsupported = true;
                return Ok(false);
            }
        };
        // With wildcard off, a wildcard type is limited to the names asked for.
        let generated: Vec<_> = if wildcard_type && !watch.wildcard {
            generated
                .into_iter()
                .filter(|r| watch.names.contains(&r.name))
                .collect()
        } else {
            generated
        };
        let mut current = BTreeSet::new();
        let mut resources = Vec::new();
        for r in generated {
            let version = resource_version(&r);
            current.insert(r.name.clone());
            let held = watch.held.get(&r.name);
            if send == Mode::Everything || fresh.contains(&r.name) || held != Some(&version) {
                resources.push(Resource {
                    name: r.name,
                    version,
                    resource: Some(r.resource),
                    ..Default::default()
                });
            }
        }
        let mut removed: BTreeSet<String> = watch
            .held
            .keys()
            .filter(|n| !current.contains(*n))
            .cloned()
            .collect();
        removed.extend(fresh.iter().filter(|n| !current.contains(*n)).cloned());
        if resources.is_empty() && removed.is_empty() && send == Mode::Changes {
            return Ok(false);
        }
        let version = self.conn.snapshot.version.to_string();
        let nonce = self.conn.nonce();
        let held: Vec<(String, String)> = resources
            .iter()
            .map(|r| (r.name.clone(), r.version.clone()))
            .collect();
        let count = resources.len();
        let response = DeltaDiscoveryResponse {
            system_version_info: version.clone(),
            resources,
            type_url: type_url.to_string(),
            removed_resources: removed.iter().cloned().collect(),
            nonce: nonce.clone(),
            control_plane: self.conn.control_plane(),
            ..Default::default()
        };
        self.conn.send(response).await?;
        for name in &removed {
            watch.held.remove(name);
        }
        watch.held.extend(held);
        watch.nonce_sent = Some(nonce.clone());
        watch.version_sent = Some(version.clone());
        self.conn.sent(type_url, &version, &nonce, count, started);
        Ok(true)
    }

    /// Whether a push of `scope` regenerates `type_url`.
    fn in_scope(&self, scope: Scope, type_url: &str) -> bool {
        match scope {
            Scope::Full => true,
            Scope::Endpoints => {
                type_url == ENDPOINT
                    && self
                        .watches
                        .get(type_url)
                        .is_some_and(|w| self.conn.endpoints_touch(&w.names))
            }
        }
    }

    /// A new snapshot: regenerate every watched type, in push order, and send the
    /// differences (all of EDS after clusters changed).
    async fn push(&mut self) -> Result<(), AdsError> {
        let started = Instant::now();
        let Some(scope) = self.conn.refresh() else {
            return Ok(());
        };
        let mut pushed = Vec::new();
        let none = BTreeSet::new();
        for type_url in in_push_order(self.watches.keys()) {
            if !self.in_scope(scope, &type_url) {
                continue;
            }
            let send = if type_url == ENDPOINT && pushed.iter().any(|t| t == CLUSTER) {
                Mode::Everything
            } else {
                Mode::Changes
            };
            if self.respond(&type_url, &none, send).await? {
                pushed.push(type_url);
            }
        }
        self.conn.pushed(started, &pushed);
        Ok(())
    }
}
