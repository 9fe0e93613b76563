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
//! warming clusters get their endpoints (Istio's `forceEDSPush`); so is the
//! first EDS request of a stream that already sent clusters, whatever versions
//! the proxy says it holds. An
//! endpoint-only snapshot regenerates just the subscribed EDS clusters of the
//! hosts whose endpoints changed ([`Watch::affected`]), so its cost per
//! connection does not grow with the size of the mesh.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};

use envoy_types::pb::envoy::config::core::v3::Node;

use super::connection::{Conn, Protocol, Scope, StreamProtocol, cluster_host, set};
use super::{AdsError, PUSH_ORDER, parse_version, resource_version, type_index, version_string};
use crate::model::Snapshot;
use crate::xds::{CLUSTER, ENDPOINT, GenerateError, is_wildcard_type};

/// What the proxy watches of one type, and what it holds.
///
/// One hash table for both, not ordered sets and not two tables: an endpoint
/// push looks up a name's subscription and then the version the proxy holds,
/// on each of thousands of connections whose state is cold in the cache by
/// then. A hash lookup touches two or three cache lines where a B-tree search
/// compares against a dozen names, and the second lookup of the same name in
/// the same table finds those lines loaded. Orders are restored where they
/// show (generation, status).
#[derive(Debug, Default)]
struct Watch {
    /// Subscribed to everything (`*`; CDS and LDS only).
    wildcard: bool,
    /// Every name subscribed to or held.
    entries: HashMap<String, Entry>,
    /// How many entries are subscribed.
    subscribed: usize,
    nonce_sent: Option<String>,
    version_sent: Option<String>,
    /// The generator does not serve this type; stay silent.
    unsupported: bool,
    /// The subscribed names that are not Istio cluster names (an endpoint-only
    /// push regenerates them every time, as it cannot tell what they show).
    others: BTreeSet<String>,
}

/// One name of a [`Watch`].
#[derive(Debug, Default)]
struct Entry {
    /// Explicitly subscribed.
    subscribed: bool,
    /// The version of the resource the proxy holds ([`resource_version`];
    /// `Some(None)` for a version pilot did not write), `None` when it holds
    /// none.
    held: Option<Option<u64>>,
}

impl Watch {
    /// Subscribes to `name`; whether it is new.
    fn subscribe(&mut self, name: &str) -> bool {
        if cluster_host(name).is_none() {
            self.others.insert(name.to_string());
        }
        let entry = match self.entries.get_mut(name) {
            Some(e) => e,
            None => self.entries.entry(name.to_string()).or_default(),
        };
        let new = !entry.subscribed;
        entry.subscribed = true;
        self.subscribed += usize::from(new);
        new
    }

    /// Unsubscribes from `name`; whether it was subscribed.
    fn unsubscribe(&mut self, name: &str) -> bool {
        self.others.remove(name);
        let Some(entry) = self.entries.get_mut(name) else {
            return false;
        };
        let was = entry.subscribed;
        entry.subscribed = false;
        self.subscribed -= usize::from(was);
        if entry.held.is_none() {
            self.entries.remove(name);
        }
        was
    }

    fn is_subscribed(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.subscribed)
    }

    /// The subscribed names, in no order.
    fn names(&self) -> impl Iterator<Item = &String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.subscribed)
            .map(|(n, _)| n)
    }

    /// Whether the proxy holds `name`.
    fn holds(&self, name: &str) -> bool {
        self.entries.get(name).is_some_and(|e| e.held.is_some())
    }

    /// The names the proxy holds, in no order.
    fn held_names(&self) -> impl Iterator<Item = &String> {
        self.entries
            .iter()
            .filter(|(_, e)| e.held.is_some())
            .map(|(n, _)| n)
    }

    /// Notes that the proxy holds `name` at `version`.
    fn hold(&mut self, name: String, version: Option<u64>) {
        self.entries.entry(name).or_default().held = Some(version);
    }

    /// Notes that the proxy no longer holds `name`.
    fn release(&mut self, name: &str) {
        if let Some(entry) = self.entries.get_mut(name) {
            entry.held = None;
            if !entry.subscribed {
                self.entries.remove(name);
            }
        }
    }

    /// Forgets what the proxy holds beyond its explicit subscription (it left
    /// the wildcard).
    fn release_unsubscribed(&mut self) {
        self.entries.retain(|_, e| e.subscribed);
    }

    /// The subscribed names an endpoint-only change can affect, sorted: every
    /// name that is not an Istio cluster name, and the subscribed names among
    /// the changed hosts' possible cluster names
    /// ([`Snapshot::changed_cluster_names`], built once per snapshot for all
    /// connections). The intersection walks the smaller of the two sets, so the
    /// cost grows with neither the fleet nor the subscription.
    fn affected(&self, snapshot: &Snapshot) -> Vec<String> {
        let candidates = snapshot.changed_cluster_names();
        let mut out: Vec<String> = self.others.iter().cloned().collect();
        if candidates.len() <= self.subscribed {
            out.extend(candidates.iter().filter(|n| self.is_subscribed(n)).cloned());
        } else {
            out.extend(self.names().filter(|n| candidates.contains(*n)).cloned());
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The subscribed names, sorted (a full regeneration).
    fn sorted_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.names().cloned().collect();
        names.sort_unstable();
        names
    }
}

/// A connection's watches by type. The types pilot serves sit in fixed slots
/// ([`PUSH_ORDER`]'s), so a push finds its watch without comparing type URLs
/// against keys held elsewhere in memory (cold in the cache when thousands of
/// connections push one after another); any other type is kept by its URL.
#[derive(Debug, Default)]
struct Watches {
    served: [Option<Watch>; PUSH_ORDER.len()],
    other: BTreeMap<String, Watch>,
}

impl Watches {
    fn get(&self, type_url: &str) -> Option<&Watch> {
        match type_index(type_url) {
            Some(i) => self.served[i].as_ref(),
            None => self.other.get(type_url),
        }
    }

    fn get_mut(&mut self, type_url: &str) -> Option<&mut Watch> {
        match type_index(type_url) {
            Some(i) => self.served[i].as_mut(),
            None => self.other.get_mut(type_url),
        }
    }

    fn insert(&mut self, type_url: &str, watch: Watch) {
        match type_index(type_url) {
            Some(i) => self.served[i] = Some(watch),
            None => {
                self.other.insert(type_url.to_string(), watch);
            }
        }
    }

    /// The watched types in push order: the served ones in [`PUSH_ORDER`],
    /// then the others by URL.
    fn types(&self) -> Vec<String> {
        PUSH_ORDER
            .iter()
            .zip(&self.served)
            .filter(|(_, w)| w.is_some())
            .map(|(t, _)| (*t).to_string())
            .chain(self.other.keys().cloned())
            .collect()
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

pub(super) struct Delta {
    conn: Conn<DeltaDiscoveryResponse>,
    watches: Watches,
    /// Clusters were sent on this stream: Envoy may be warming them, and a
    /// warming cluster waits for a fresh `ClusterLoadAssignment` even if the
    /// proxy already holds one of the same version.
    clusters_sent: bool,
}

impl StreamProtocol for Delta {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;
    const PROTOCOL: Protocol = Protocol::Delta;

    fn node(req: &DeltaDiscoveryRequest) -> Option<Node> {
        req.node.clone()
    }

    fn new(conn: Conn<DeltaDiscoveryResponse>) -> Self {
        Delta {
            conn,
            watches: Watches::default(),
            clusters_sent: false,
        }
    }

    fn conn(&mut self) -> &mut Conn<DeltaDiscoveryResponse> {
        &mut self.conn
    }

    async fn handle(&mut self, req: DeltaDiscoveryRequest) -> Result<(), AdsError> {
        Delta::handle(self, req).await
    }

    async fn push(&mut self) -> Result<(), AdsError> {
        Delta::push(self).await
    }
}

impl Delta {
    async fn handle(&mut self, req: DeltaDiscoveryRequest) -> Result<(), AdsError> {
        let type_url = req.type_url.as_str();
        if type_url.is_empty() {
            return Err(AdsError::MissingType);
        }
        let count = req.resource_names_subscribe.len()
            + req.resource_names_unsubscribe.len()
            + req.initial_resource_versions.len();
        let max = self.conn.server.limits.max_resource_names;
        if count > max {
            return Err(AdsError::TooManyNames {
                type_url: type_url.to_string(),
                count,
                max,
            });
        }
        if let Some(error) = &req.error_detail {
            self.conn
                .nacked(type_url, &error.message, &req.response_nonce, "");
            return Ok(());
        }
        let wildcard_type = is_wildcard_type(type_url);
        let Some(watch) = self.watches.get_mut(type_url) else {
            let type_url = type_url.to_string();
            return self.new_watch(&type_url, req, wildcard_type).await;
        };
        if !req.response_nonce.is_empty() {
            if watch.nonce_sent.as_deref() != Some(req.response_nonce.as_str()) {
                self.conn
                    .expired(type_url, &req.response_nonce, watch.nonce_sent.as_deref());
                return Ok(());
            }
            let version = watch.version_sent.as_deref().unwrap_or_default();
            self.conn.acked(type_url, version, &req.response_nonce);
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
                changed |= watch.subscribe(name);
                // The proxy must get what it subscribes to, even if we think it
                // holds it: it may have dropped it and asked again.
                watch.release(name);
                fresh.insert(name.clone());
            }
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                if watch.wildcard {
                    watch.wildcard = false;
                    watch.release_unsubscribed();
                    changed = true;
                }
            } else {
                changed |= watch.unsubscribe(name);
                watch.release(name);
                fresh.remove(name);
            }
        }
        if changed || !fresh.is_empty() {
            self.conn.watching(type_url, watch.names(), watch.wildcard);
            let type_url = type_url.to_string();
            self.respond(&type_url, &fresh, Mode::Changes, None).await?;
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
                watch.subscribe(name);
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
                watch.subscribe(&name);
            }
            // The proxy holds it already; send only if it changed.
            fresh.remove(&name);
            watch.hold(name, parse_version(&version));
        }
        for name in &req.resource_names_unsubscribe {
            if name == "*" {
                watch.wildcard = false;
            } else {
                watch.unsubscribe(name);
                watch.release(name);
                fresh.remove(name);
            }
        }
        self.conn.watching(type_url, watch.names(), watch.wildcard);
        self.watches.insert(type_url, watch);
        // EDS opened after this stream sent clusters (a reconnecting Envoy
        // resends the versions it holds): every assignment, so the clusters
        // it is warming get theirs.
        let mode = if type_url == ENDPOINT && self.clusters_sent {
            Mode::Everything
        } else {
            Mode::Always
        };
        self.respond(type_url, &fresh, mode, None).await?;
        if type_url == CLUSTER && self.watches.get(ENDPOINT).is_some() {
            self.respond(ENDPOINT, &BTreeSet::new(), Mode::Everything, None)
                .await?;
        }
        Ok(())
    }

    /// Generates `type_url` and sends the difference to what the proxy holds,
    /// plus `fresh` names (just subscribed). With `only` (sorted), just those
    /// subscribed names are regenerated and compared (an endpoint-only push
    /// touches the clusters of the changed hosts and nothing else). Returns
    /// whether a response went out.
    async fn respond(
        &mut self,
        type_url: &str,
        fresh: &BTreeSet<String>,
        send: Mode,
        only: Option<Vec<String>>,
    ) -> Result<bool, AdsError> {
        let Some(watch) = self.watches.get_mut(type_url) else {
            return Ok(false);
        };
        if watch.unsupported {
            return Ok(false);
        }
        let started = Instant::now();
        let wildcard_type = is_wildcard_type(type_url);
        let partial = only.is_some();
        let names = only.unwrap_or_else(|| watch.sorted_names());
        let generated = match self.conn.generate(type_url, &names) {
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
                .filter(|r| watch.is_subscribed(&r.name))
                .collect()
        } else {
            generated
        };
        // What the proxy holds (or just asked for) that no longer exists. A
        // partial push has a few names and resources: compare them directly.
        let mut removed: Vec<String> = if partial && fresh.is_empty() {
            names
                .iter()
                .filter(|n| !generated.iter().any(|r| r.name == **n) && watch.holds(n))
                .cloned()
                .collect()
        } else {
            let current: HashSet<&str> = generated.iter().map(|r| r.name.as_str()).collect();
            let mut removed: Vec<String> = if partial {
                names
                    .iter()
                    .filter(|n| watch.holds(n) && !current.contains(n.as_str()))
                    .cloned()
                    .collect()
            } else {
                watch
                    .held_names()
                    .filter(|n| !current.contains(n.as_str()))
                    .cloned()
                    .collect()
            };
            removed.extend(
                fresh
                    .iter()
                    .filter(|n| !current.contains(n.as_str()))
                    .cloned(),
            );
            removed
        };
        removed.sort_unstable();
        removed.dedup();
        // The resources to send, recording what the proxy will hold with one
        // lookup each (nothing is recorded unless a response goes out: a
        // resource recorded here is always sent).
        let mut resources = Vec::with_capacity(generated.len());
        for r in generated {
            let version = resource_version(&r);
            let send_it = match watch.entries.get_mut(&r.name) {
                Some(Entry {
                    held: Some(held), ..
                }) => {
                    let differs = *held != Some(version);
                    if differs || send == Mode::Everything || fresh.contains(&r.name) {
                        *held = Some(version);
                        true
                    } else {
                        false
                    }
                }
                Some(entry) => {
                    entry.held = Some(Some(version));
                    true
                }
                None => {
                    watch.hold(r.name.clone(), Some(version));
                    true
                }
            };
            if send_it {
                resources.push(Resource {
                    name: r.name,
                    version: version_string(version),
                    resource: Some(r.resource),
                    ..Default::default()
                });
            }
        }
        if resources.is_empty() && removed.is_empty() && send == Mode::Changes {
            return Ok(false);
        }
        let version = self.conn.snapshot.version.to_string();
        let nonce = self.conn.nonce();
        for name in &removed {
            watch.release(name);
        }
        set(&mut watch.nonce_sent, &nonce);
        set(&mut watch.version_sent, &version);
        let count = resources.len();
        let response = DeltaDiscoveryResponse {
            system_version_info: version,
            resources,
            type_url: type_url.to_string(),
            removed_resources: removed,
            nonce,
            control_plane: self.conn.control_plane(),
            ..Default::default()
        };
        self.conn.send(response).await?;
        if type_url == CLUSTER && count > 0 {
            self.clusters_sent = true;
        }
        let (Some(version), Some(nonce)) = (&watch.version_sent, &watch.nonce_sent) else {
            return Ok(true);
        };
        self.conn.sent(type_url, version, nonce, count, started);
        Ok(true)
    }

    /// What a push of `scope` regenerates of `type_url`: `None` for nothing,
    /// `Some(None)` for every watched name, `Some(Some(names))` for just those
    /// (an endpoint-only push: the EDS clusters of the hosts whose endpoints
    /// changed).
    fn in_scope(&self, scope: Scope, type_url: &str) -> Option<Option<Vec<String>>> {
        match scope {
            Scope::Full => Some(None),
            Scope::Endpoints => {
                if type_url != ENDPOINT {
                    return None;
                }
                let watch = self.watches.get(type_url)?;
                let affected = watch.affected(&self.conn.snapshot);
                (!affected.is_empty()).then_some(Some(affected))
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
        let none = BTreeSet::new();
        // An endpoint-only push concerns EDS alone.
        if scope == Scope::Endpoints {
            if let Some(only) = self.in_scope(scope, ENDPOINT)
                && self.respond(ENDPOINT, &none, Mode::Changes, only).await?
            {
                self.conn.pushed(started, [ENDPOINT]);
            }
            return Ok(());
        }
        let mut pushed = Vec::new();
        for type_url in self.watches.types() {
            let Some(only) = self.in_scope(scope, &type_url) else {
                continue;
            };
            let send = if type_url == ENDPOINT && pushed.iter().any(|t| t == CLUSTER) {
                Mode::Everything
            } else {
                Mode::Changes
            };
            if self.respond(&type_url, &none, send, only).await? {
                pushed.push(type_url);
            }
        }
        self.conn.pushed(started, pushed.iter().map(String::as_str));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Protocol, Resolution, Service, ServicePort, ServiceSource};
    use std::sync::Arc;

    fn snapshot_with(hosts: &[&str], changed: &[&str]) -> Snapshot {
        let mut s = Snapshot::default();
        for host in hosts {
            s.services.insert(
                host.to_string(),
                Arc::new(Service {
                    hostname: host.to_string(),
                    namespace: "default".into(),
                    name: host.split('.').next().unwrap_or_default().into(),
                    ports: vec![ServicePort {
                        name: "http".into(),
                        port: 8080,
                        protocol: Protocol::Http,
                    }],
                    addresses: vec![],
                    selector: Default::default(),
                    resolution: Resolution::ClientSideLb,
                    mesh_external: false,
                    export_to: vec![],
                    source: ServiceSource::Kubernetes,
                }),
            );
        }
        s.endpoints_only = true;
        s.endpoints_changed = changed.iter().map(|h| h.to_string()).collect();
        s
    }

    #[test]
    fn endpoint_only_pushes_touch_the_changed_hosts_clusters_and_unknown_names() {
        let hosts: Vec<String> = (0..40)
            .map(|i| format!("s{i}.default.svc.cluster.local"))
            .collect();
        let host_refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let mut watch = Watch::default();
        for h in &hosts {
            watch.subscribe(&format!("outbound|8080||{h}"));
        }
        watch.subscribe("custom-name");
        watch.subscribe("outbound|9090||s1.default.svc.cluster.local");
        // Few hosts changed: candidate lookup.
        let s = snapshot_with(&host_refs, &["s1.default.svc.cluster.local"]);
        let affected: Vec<String> = watch.affected(&s).into_iter().collect();
        assert_eq!(
            affected,
            vec![
                "custom-name".to_string(),
                "outbound|8080||s1.default.svc.cluster.local".to_string()
            ]
        );
        // Many hosts changed: the same rule, whichever side is walked. A cluster
        // of a port the host does not have (9090) has no endpoints before or after.
        let many: Vec<&str> = host_refs[..10].to_vec();
        let s = snapshot_with(&host_refs, &many);
        let affected = watch.affected(&s);
        assert_eq!(affected.len(), 11, "{affected:?}");
        assert!(affected.iter().any(|n| n == "custom-name"));
        assert!(
            !affected
                .iter()
                .any(|n| n == "outbound|9090||s1.default.svc.cluster.local")
        );
        let mut narrow = Watch::default();
        narrow.subscribe("outbound|8080||s3.default.svc.cluster.local");
        narrow.subscribe("outbound|8080||s30.default.svc.cluster.local");
        let affected: Vec<String> = narrow.affected(&s).into_iter().collect();
        assert_eq!(
            affected,
            vec!["outbound|8080||s3.default.svc.cluster.local".to_string()]
        );
        // Unsubscribing forgets names that are not Istio cluster names.
        watch.unsubscribe("custom-name");
        let s = snapshot_with(&host_refs, &["s2.default.svc.cluster.local"]);
        assert_eq!(watch.affected(&s).len(), 1);
    }

    #[test]
    fn watches_keep_served_types_in_slots_and_list_them_in_push_order() {
        use crate::xds::{LISTENER, ROUTE};
        let mut watches = Watches::default();
        let custom = "type.googleapis.com/example.v1.Custom";
        for t in [ROUTE, custom, ENDPOINT, LISTENER, CLUSTER] {
            watches.insert(t, Watch::default());
        }
        assert!(watches.other.contains_key(custom));
        assert_eq!(watches.other.len(), 1, "served types are not kept by URL");
        assert_eq!(
            watches.types(),
            [CLUSTER, ENDPOINT, LISTENER, ROUTE, custom]
        );
        // A type URL built at run time finds the same slot as the constant.
        let eds = String::from(ENDPOINT);
        watches
            .get_mut(&eds)
            .expect("EDS watched")
            .subscribe("outbound|80||a.b");
        assert!(
            watches
                .get(ENDPOINT)
                .expect("EDS")
                .is_subscribed("outbound|80||a.b")
        );
        assert!(
            watches
                .get("type.googleapis.com/example.v1.Other")
                .is_none()
        );
    }

    #[test]
    fn a_watch_keeps_subscriptions_and_held_versions_in_one_table() {
        let mut w = Watch::default();
        let (a, b, c) = ("outbound|80||a.x", "outbound|80||b.x", "outbound|80||c.x");
        assert!(w.subscribe(a));
        assert!(!w.subscribe(a), "already subscribed");
        w.hold(a.to_string(), Some(1));
        // Held without a subscription: a wildcard type, or initial versions.
        w.hold(b.to_string(), None);
        assert_eq!(w.subscribed, 1);
        assert_eq!(w.sorted_names(), [a]);
        let mut held: Vec<&String> = w.held_names().collect();
        held.sort();
        assert_eq!(held, [a, b]);
        assert!(w.holds(b) && !w.is_subscribed(b));
        // Releasing keeps a subscribed name, drops a name only held.
        w.release(a);
        w.release(b);
        assert!(w.is_subscribed(a) && !w.holds(a));
        assert!(!w.entries.contains_key(b));
        // Unsubscribing keeps a held name until it is released.
        w.hold(a.to_string(), Some(2));
        assert!(w.unsubscribe(a));
        assert!(!w.unsubscribe(a), "no longer subscribed");
        assert_eq!(w.subscribed, 0);
        assert!(w.holds(a));
        assert!(w.names().next().is_none());
        // Leaving the wildcard forgets what is held but not subscribed.
        w.subscribe(c);
        w.hold(c.to_string(), Some(3));
        w.release_unsubscribed();
        assert!(!w.holds(a));
        assert!(w.holds(c) && w.is_subscribed(c));
        assert_eq!(w.subscribed, 1);
    }
}
