//! A response, resource by resource: decode, validate, apply what is accepted,
//! keep the last good version of what is not, and warm clusters and listeners
//! until what they reference has arrived.
//!
//! Rejection is per resource for both protocols, as Envoy does for CDS and LDS
//! and as the xDS NACK semantics settle it (envoyproxy/envoy#32880: "apply `foo`,
//! not `bar`"; gRPC A46): accepted resources of a partly rejected response are
//! applied, a rejected one keeps its previous version (or stays absent), and
//! the response is NACKed with every `name: reason`. The type's accepted
//! `version_info` does not move on a NACK.
//!
//! Warming, like Envoy's: an EDS cluster is used once the
//! `ClusterLoadAssignment` of its EDS name is held (an update of a cluster in
//! use keeps the old one serving meanwhile); a listener once every route config
//! its HttpConnectionManagers name over RDS is held. Either is used anyway when
//! [`Working::timeout`] passes (Envoy's `initial_fetch_timeout`). A delta
//! removal of an EDS or RDS name is read as "exists, but empty", as Envoy's EDS
//! and RDS subscriptions do, so what waits on it stops waiting.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

use super::handler::{Handler, Handlers};
use super::store::{Nack, XdsState};
use super::subscriptions::{
    cluster_secrets, eds_name, eds_names, listener_routes, listener_secrets, rds_names, sds_names,
};
use super::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, is_wildcard_type};

/// One resource of a response.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// Delta: `Resource.name`; SotW: empty (the name is read from the resource).
    pub name: String,
    /// Delta: `Resource.version`; SotW: empty.
    pub version: String,
    /// The resource; `None` (delta without a body) is rejected.
    pub resource: Option<Any>,
}

/// A response, protocol aside.
#[derive(Debug, Clone)]
pub struct Update {
    /// The type of the response.
    pub type_url: String,
    /// `version_info` (SotW) or `system_version_info` (delta).
    pub version_info: String,
    /// The response nonce.
    pub nonce: String,
    /// The resources carried.
    pub resources: Vec<Incoming>,
    /// Delta: `removed_resources`.
    pub removed: Vec<String>,
    /// SotW: the response is the whole set of a wildcard type; what it lacks is removed.
    pub state_of_the_world: bool,
}

/// What applying an update did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Names applied (added or replaced).
    pub accepted: Vec<String>,
    /// Names removed.
    pub removed: Vec<String>,
    /// Each rejected resource and why.
    pub rejected: Vec<(String, String)>,
}

impl Outcome {
    /// The NACK's `error_detail.message`, if anything was rejected.
    pub fn nack_message(&self) -> Option<String> {
        if self.rejected.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .rejected
            .iter()
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect();
        Some(parts.join("; "))
    }
}

enum Decoded {
    Cluster(Arc<Cluster>),
    Endpoint(Arc<ClusterLoadAssignment>),
    Listener(Arc<Listener>),
    Route(Arc<RouteConfiguration>),
    Secret(Arc<Secret>),
}

fn decode_as<T: Message + Default + Name>(any: &Any) -> Result<Arc<T>, String> {
    T::decode(any.value.as_slice())
        .map(Arc::new)
        .map_err(|e| format!("does not decode as {}: {e}", T::full_name()))
}

fn check<T>(handler: &dyn Handler<T>, name: &str, r: &T) -> Result<(), String> {
    handler.validate(name, r)
}

/// Decodes and validates one resource: `Ok((name, resource))` or `Err((name, reason))`.
fn decode(
    type_url: &str,
    inc: &Incoming,
    position: usize,
    handlers: &Handlers,
) -> Result<(String, Decoded), (String, String)> {
    let label = if inc.name.is_empty() {
        format!("resource #{position}")
    } else {
        inc.name.clone()
    };
    let Some(any) = &inc.resource else {
        return Err((label, "resource has no body".into()));
    };
    if any.type_url != type_url {
        return Err((
            label,
            format!("type {} in a {type_url} response", any.type_url),
        ));
    }
    let decoded = match type_url {
        CLUSTER => decode_as::<Cluster>(any).map(Decoded::Cluster),
        ENDPOINT => decode_as::<ClusterLoadAssignment>(any).map(Decoded::Endpoint),
        LISTENER => decode_as::<Listener>(any).map(Decoded::Listener),
        ROUTE => decode_as::<RouteConfiguration>(any).map(Decoded::Route),
        SECRET => decode_as::<Secret>(any).map(Decoded::Secret),
        other => Err(format!("type {other} is not supported")),
    }
    .map_err(|e| (label.clone(), e))?;
    let inner = match &decoded {
        Decoded::Cluster(c) => &c.name,
        Decoded::Endpoint(c) => &c.cluster_name,
        Decoded::Listener(l) => &l.name,
        Decoded::Route(r) => &r.name,
        Decoded::Secret(s) => &s.name,
    };
    let name = if inc.name.is_empty() {
        inner.clone()
    } else {
        if !inner.is_empty() && *inner != inc.name {
            return Err((label, format!("the resource inside is named {inner:?}")));
        }
        inc.name.clone()
    };
    if name.is_empty() {
        return Err((label, "resource has no name".into()));
    }
    let verdict = match &decoded {
        Decoded::Cluster(c) => cluster_secrets(c)
            .map(drop)
            .and_then(|()| check(handlers.clusters.as_ref(), &name, c)),
        Decoded::Endpoint(c) => check(handlers.endpoints.as_ref(), &name, c),
        Decoded::Listener(l) => listener_routes(l)
            .and_then(|_| listener_secrets(l))
            .map(drop)
            .and_then(|()| check(handlers.listeners.as_ref(), &name, l)),
        Decoded::Route(r) => check(handlers.routes.as_ref(), &name, r),
        Decoded::Secret(s) => check(handlers.secrets.as_ref(), &name, s),
    };
    verdict.map_err(|e| (name.clone(), e))?;
    Ok((name, decoded))
}

/// The client's working copy of the state, with the warming deadlines.
#[derive(Debug, Clone)]
pub struct Working {
    /// What is published next.
    pub state: XdsState,
    /// How long a cluster or listener may warm.
    pub timeout: Duration,
    /// Warming deadlines by (type, name).
    deadlines: BTreeMap<(&'static str, String), Instant>,
}

impl Working {
    /// Starts from `state` (what the store holds).
    pub fn new(state: XdsState, timeout: Duration) -> Self {
        Working {
            state,
            timeout,
            deadlines: BTreeMap::new(),
        }
    }

    /// Applies `update`; see the module header for the rules.
    pub fn apply(&mut self, update: &Update, handlers: &Handlers, now: Instant) -> Outcome {
        let type_url = update.type_url.as_str();
        let mut out = Outcome::default();
        let mut accepted = Vec::new();
        let mut unnamed_reject = false;
        let mut seen = BTreeSet::new();
        for (i, inc) in update.resources.iter().enumerate() {
            match decode(type_url, inc, i, handlers) {
                Ok((name, _)) if !seen.insert(name.clone()) => {
                    // As Envoy: the first of duplicates stands, the others are refused.
                    out.rejected
                        .push((name, "duplicate resource in one response".into()));
                }
                Ok((name, r)) => accepted.push((name, inc.version.clone(), r)),
                Err((name, reason)) => {
                    unnamed_reject |= inc.name.is_empty() && name.starts_with("resource #");
                    out.rejected.push((name, reason));
                }
            }
        }
        let mut removed: BTreeSet<String> = update.removed.iter().cloned().collect();
        if update.state_of_the_world && is_wildcard_type(type_url) && !unnamed_reject {
            let keep: BTreeSet<&String> = accepted
                .iter()
                .map(|(n, _, _)| n)
                .chain(out.rejected.iter().map(|(n, _)| n))
                .collect();
            removed.extend(
                self.held(type_url)
                    .into_iter()
                    .filter(|n| !keep.contains(n)),
            );
        }
        let versions = &mut self
            .state
            .types
            .entry(type_url.to_string())
            .or_default()
            .resource_versions;
        for (name, version, _) in &accepted {
            if !version.is_empty() {
                versions.insert(name.clone(), version.clone());
            }
        }
        for name in &removed {
            versions.remove(name);
        }
        for (name, _, r) in accepted {
            self.insert(name.clone(), r, now);
            out.accepted.push(name);
        }
        for name in removed {
            if self.remove(type_url, &name) {
                out.removed.push(name);
            }
        }
        self.promote();
        let ts = self.state.types.entry(type_url.to_string()).or_default();
        ts.nonce = update.nonce.clone();
        ts.last_update = Some(SystemTime::now());
        match out.nack_message() {
            None => {
                ts.version_info = update.version_info.clone();
                ts.acks += 1;
            }
            Some(message) => {
                ts.nacks += 1;
                ts.last_nack = Some(Nack {
                    nonce: update.nonce.clone(),
                    version_info: update.version_info.clone(),
                    rejected: out.rejected.clone(),
                    message,
                    at: SystemTime::now(),
                });
            }
        }
        self.check_synced();
        out
    }

    /// Names held of a type (warming included).
    fn held(&self, type_url: &str) -> Vec<String> {
        let s = &self.state;
        let keys: Vec<&String> = match type_url {
            CLUSTER => s.clusters.keys().chain(s.warming_clusters.keys()).collect(),
            ENDPOINT => s.endpoints.keys().collect(),
            LISTENER => s
                .listeners
                .keys()
                .chain(s.warming_listeners.keys())
                .collect(),
            ROUTE => s.routes.keys().collect(),
            SECRET => s.secrets.keys().collect(),
            _ => Vec::new(),
        };
        let set: BTreeSet<String> = keys.into_iter().cloned().collect();
        set.into_iter().collect()
    }

    fn insert(&mut self, name: String, r: Decoded, now: Instant) {
        let deadline = now + self.timeout;
        let s = &mut self.state;
        match r {
            Decoded::Cluster(c) => {
                let ready = eds_name(&c).is_none_or(|n| s.endpoints.contains_key(&n));
                if ready {
                    s.warming_clusters.remove(&name);
                    self.deadlines.remove(&(CLUSTER, name.clone()));
                    s.clusters.insert(name, c);
                } else {
                    self.deadlines
                        .entry((CLUSTER, name.clone()))
                        .or_insert(deadline);
                    s.warming_clusters.insert(name, c);
                }
            }
            Decoded::Listener(l) => {
                let ready = listener_routes(&l)
                    .map(|names| names.iter().all(|n| s.routes.contains_key(n)))
                    .unwrap_or(true);
                if ready {
                    s.warming_listeners.remove(&name);
                    self.deadlines.remove(&(LISTENER, name.clone()));
                    s.listeners.insert(name, l);
                } else {
                    self.deadlines
                        .entry((LISTENER, name.clone()))
                        .or_insert(deadline);
                    s.warming_listeners.insert(name, l);
                }
            }
            Decoded::Endpoint(c) => {
                s.endpoints.insert(name, c);
            }
            Decoded::Route(r) => {
                s.routes.insert(name, r);
            }
            Decoded::Secret(x) => {
                s.secrets.insert(name, x);
            }
        }
    }

    /// Removes `name` of `type_url`; whether anything was held.
    fn remove(&mut self, type_url: &str, name: &str) -> bool {
        let s = &mut self.state;
        match type_url {
            CLUSTER => {
                self.deadlines.remove(&(CLUSTER, name.to_string()));
                let a = s.clusters.remove(name).is_some();
                s.warming_clusters.remove(name).is_some() || a
            }
            LISTENER => {
                self.deadlines.remove(&(LISTENER, name.to_string()));
                let a = s.listeners.remove(name).is_some();
                s.warming_listeners.remove(name).is_some() || a
            }
            ENDPOINT => {
                let empty = ClusterLoadAssignment {
                    cluster_name: name.to_string(),
                    ..Default::default()
                };
                s.endpoints.insert(name.to_string(), Arc::new(empty));
                true
            }
            ROUTE => {
                let empty = RouteConfiguration {
                    name: name.to_string(),
                    ..Default::default()
                };
                s.routes.insert(name.to_string(), Arc::new(empty));
                true
            }
            SECRET => s.secrets.remove(name).is_some(),
            _ => false,
        }
    }

    /// Moves warm clusters and listeners into use.
    fn promote(&mut self) {
        let s = &mut self.state;
        let ready: Vec<String> = s
            .warming_clusters
            .iter()
            .filter(|(_, c)| eds_name(c).is_none_or(|n| s.endpoints.contains_key(&n)))
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            self.activate(CLUSTER, &name);
        }
        let s = &self.state;
        let ready: Vec<String> = s
            .warming_listeners
            .iter()
            .filter(|(_, l)| {
                listener_routes(l)
                    .map(|names| names.iter().all(|n| s.routes.contains_key(n)))
                    .unwrap_or(true)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in ready {
            self.activate(LISTENER, &name);
        }
    }

    fn activate(&mut self, type_url: &'static str, name: &str) {
        self.deadlines.remove(&(type_url, name.to_string()));
        let s = &mut self.state;
        if type_url == CLUSTER {
            if let Some(c) = s.warming_clusters.remove(name) {
                s.clusters.insert(name.to_string(), c);
            }
        } else if let Some(l) = s.warming_listeners.remove(name) {
            s.listeners.insert(name.to_string(), l);
        }
    }

    /// The earliest warming deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Uses what warmed past its deadline; returns the (type, name)s moved.
    pub fn expire(&mut self, now: Instant) -> Vec<(&'static str, String)> {
        let due: Vec<(&'static str, String)> = self
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (t, name) in &due {
            self.activate(t, name);
        }
        if !due.is_empty() {
            self.check_synced();
        }
        due
    }

    /// The names the held clusters and listeners reference, of a named type
    /// (EDS, RDS, SDS).
    pub fn desired(&self, type_url: &str) -> BTreeSet<String> {
        let s = &self.state;
        let clusters = || {
            s.clusters
                .values()
                .chain(s.warming_clusters.values())
                .map(AsRef::as_ref)
        };
        let listeners = || {
            s.listeners
                .values()
                .chain(s.warming_listeners.values())
                .map(AsRef::as_ref)
        };
        match type_url {
            ENDPOINT => eds_names(clusters()),
            ROUTE => rds_names(listeners()),
            SECRET => sds_names(clusters(), listeners()),
            _ => BTreeSet::new(),
        }
    }

    /// Drops EDS, RDS and SDS resources no longer referenced (`desired`, of
    /// `type_url`); returns whether anything was dropped.
    pub fn prune(&mut self, type_url: &str, desired: &BTreeSet<String>) -> bool {
        let s = &mut self.state;
        let before;
        let after;
        match type_url {
            ENDPOINT => {
                before = s.endpoints.len();
                s.endpoints.retain(|n, _| desired.contains(n));
                after = s.endpoints.len();
            }
            ROUTE => {
                before = s.routes.len();
                s.routes.retain(|n, _| desired.contains(n));
                after = s.routes.len();
            }
            SECRET => {
                before = s.secrets.len();
                s.secrets.retain(|n, _| desired.contains(n));
                after = s.secrets.len();
            }
            _ => return false,
        }
        if let Some(ts) = s.types.get_mut(type_url) {
            ts.resource_versions.retain(|n, _| desired.contains(n));
        }
        before != after
    }

    /// Marks the state synced once CDS and LDS answered and nothing warms.
    fn check_synced(&mut self) {
        let s = &mut self.state;
        if s.synced {
            return;
        }
        let answered = |t: &str| s.types.get(t).is_some_and(|ts| ts.responded());
        if answered(CLUSTER)
            && answered(LISTENER)
            && s.warming_clusters.is_empty()
            && s.warming_listeners.is_empty()
        {
            s.synced = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::cluster::{
        ClusterDiscoveryType, DiscoveryType,
    };

    fn any<M: Message + Name>(m: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }
    }

    fn eds_cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            ..Default::default()
        }
    }

    fn update(type_url: &str, nonce: &str, resources: Vec<Incoming>, sotw: bool) -> Update {
        Update {
            type_url: type_url.into(),
            version_info: nonce.into(),
            nonce: nonce.into(),
            resources,
            removed: vec![],
            state_of_the_world: sotw,
        }
    }

    fn inc(any: Any) -> Incoming {
        Incoming {
            name: String::new(),
            version: String::new(),
            resource: Some(any),
        }
    }

    #[test]
    fn clusters_warm_until_their_endpoints_arrive_or_time_out() {
        let mut w = Working::new(XdsState::default(), Duration::from_secs(15));
        let h = Handlers::default();
        let t0 = Instant::now();
        let u = update(
            CLUSTER,
            "1",
            vec![inc(any(&eds_cluster("a"))), inc(any(&eds_cluster("b")))],
            true,
        );
        let out = w.apply(&u, &h, t0);
        assert!(out.rejected.is_empty());
        assert_eq!(w.state.warming_clusters.len(), 2);
        assert!(w.state.clusters.is_empty());
        assert_eq!(w.desired(ENDPOINT).len(), 2);
        let cla = ClusterLoadAssignment {
            cluster_name: "a".into(),
            ..Default::default()
        };
        w.apply(&update(ENDPOINT, "2", vec![inc(any(&cla))], true), &h, t0);
        assert!(w.state.clusters.contains_key("a"));
        assert!(w.state.warming_clusters.contains_key("b"));
        assert!(w.expire(t0 + Duration::from_secs(14)).is_empty());
        assert_eq!(
            w.expire(t0 + Duration::from_secs(15)),
            vec![(CLUSTER, "b".to_string())]
        );
        assert_eq!(w.state.clusters.len(), 2);
        assert!(w.next_deadline().is_none());
    }

    #[test]
    fn sotw_rejects_per_resource_keeps_last_good_and_removes_what_is_missing() {
        let mut w = Working::new(XdsState::default(), Duration::from_secs(15));
        let h = Handlers::default();
        let now = Instant::now();
        let static_cluster = |name: &str, ms: i64| Cluster {
            name: name.into(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 0,
                nanos: (ms * 1_000_000) as i32,
            }),
            ..Default::default()
        };
        let first = vec![
            inc(any(&static_cluster("a", 1))),
            inc(any(&static_cluster("b", 1))),
            inc(any(&static_cluster("gone", 1))),
        ];
        w.apply(&update(CLUSTER, "v1", first, true), &h, now);
        assert_eq!(w.state.clusters.len(), 3);
        let mut garbage = any(&static_cluster("b", 2));
        garbage.value = vec![0xff; 4];
        let second = vec![inc(any(&static_cluster("a", 2))), inc(garbage)];
        let out = w.apply(&update(CLUSTER, "v2", second, true), &h, now);
        // The undecodable one has no name: nothing is removed for lack of it.
        assert_eq!(out.rejected.len(), 1);
        assert!(out.rejected[0].0.starts_with("resource #1"));
        assert!(out.removed.is_empty());
        assert_eq!(
            w.state.clusters["a"].connect_timeout.unwrap().nanos,
            2_000_000
        );
        assert_eq!(
            w.state.clusters["b"].connect_timeout.unwrap().nanos,
            1_000_000
        );
        assert_eq!(w.state.type_state(CLUSTER).version_info, "v1");
        assert_eq!(w.state.type_state(CLUSTER).last_nack.unwrap().nonce, "v2");
        let third = vec![
            inc(any(&static_cluster("a", 3))),
            inc(any(&static_cluster("b", 3))),
        ];
        let out = w.apply(&update(CLUSTER, "v3", third, true), &h, now);
        assert_eq!(out.removed, vec!["gone".to_string()]);
        assert_eq!(w.state.type_state(CLUSTER).version_info, "v3");
    }

    #[test]
    fn wrong_type_and_name_mismatch_are_rejected_with_reasons() {
        let mut w = Working::new(XdsState::default(), Duration::from_secs(15));
        let h = Handlers::default();
        let listener = Listener {
            name: "l".into(),
            ..Default::default()
        };
        let u = Update {
            type_url: CLUSTER.into(),
            version_info: "1".into(),
            nonce: "n".into(),
            resources: vec![
                Incoming {
                    name: "l".into(),
                    version: "1".into(),
                    resource: Some(any(&listener)),
                },
                Incoming {
                    name: "x".into(),
                    version: "1".into(),
                    resource: Some(any(&eds_cluster("y"))),
                },
                Incoming {
                    name: "z".into(),
                    version: "1".into(),
                    resource: None,
                },
            ],
            removed: vec![],
            state_of_the_world: false,
        };
        let out = w.apply(&u, &h, Instant::now());
        assert_eq!(out.rejected.len(), 3);
        let msg = out.nack_message().unwrap();
        assert!(
            msg.contains("l: type type.googleapis.com/envoy.config.listener.v3.Listener"),
            "{msg}"
        );
        assert!(
            msg.contains("x: the resource inside is named \"y\""),
            "{msg}"
        );
        assert!(msg.contains("z: resource has no body"), "{msg}");
        assert!(w.state.type_state(CLUSTER).resource_versions.is_empty());
    }

    #[test]
    fn duplicates_in_one_response_are_refused_after_the_first() {
        let mut w = Working::new(XdsState::default(), Duration::from_secs(15));
        let mut second = eds_cluster("a");
        second.alt_stat_name = "second".into();
        let u = update(
            CLUSTER,
            "1",
            vec![inc(any(&eds_cluster("a"))), inc(any(&second))],
            true,
        );
        let out = w.apply(&u, &Handlers::default(), Instant::now());
        assert_eq!(out.accepted, ["a"]);
        assert_eq!(
            out.rejected,
            [(
                "a".to_string(),
                "duplicate resource in one response".to_string()
            )]
        );
        assert!(w.state.warming_clusters["a"].alt_stat_name.is_empty());
    }

    #[test]
    fn delta_eds_removal_reads_as_empty_and_prune_drops_unreferenced() {
        let mut w = Working::new(XdsState::default(), Duration::from_secs(15));
        let h = Handlers::default();
        let now = Instant::now();
        let u = Update {
            type_url: CLUSTER.into(),
            version_info: "1".into(),
            nonce: "1".into(),
            resources: vec![Incoming {
                name: "a".into(),
                version: "h1".into(),
                resource: Some(any(&eds_cluster("a"))),
            }],
            removed: vec![],
            state_of_the_world: false,
        };
        w.apply(&u, &h, now);
        assert_eq!(w.state.type_state(CLUSTER).resource_versions["a"], "h1");
        let mut r = update(ENDPOINT, "2", vec![], false);
        r.removed = vec!["a".into()];
        w.apply(&r, &h, now);
        assert!(w.state.clusters.contains_key("a"));
        assert!(w.state.endpoints["a"].endpoints.is_empty());
        let mut gone = update(CLUSTER, "3", vec![], false);
        gone.removed = vec!["a".into()];
        let out = w.apply(&gone, &h, now);
        assert_eq!(out.removed, vec!["a".to_string()]);
        let desired = w.desired(ENDPOINT);
        assert!(desired.is_empty());
        assert!(w.prune(ENDPOINT, &desired));
        assert!(w.state.endpoints.is_empty());
    }
}
