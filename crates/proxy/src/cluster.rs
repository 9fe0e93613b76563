//! Upstream clusters as the data path uses them: a CDS `Cluster` and its
//! endpoints (EDS, or the inline `load_assignment`) compiled into a
//! [`Cluster`] that picks hosts ([`Cluster::pick`]), keeps one connection pool
//! per host ([`crate::upstream::Pool`]), enforces the circuit breakers
//! ([`Limits`]) and ejects outliers ([`crate::balance::OutlierDetector`]).
//!
//! A [`Cluster`] is rebuilt only when its CDS resource or its endpoints
//! change; hosts whose address is unchanged keep their `Arc<Host>` and so their
//! pooled connections and in-flight counters (see [`ClusterSet::build`]).
//!
//! Discovery types: `EDS` and `STATIC` (endpoints by address), `STRICT_DNS` and
//! `LOGICAL_DNS` (each endpoint's hostname is resolved when a connection is
//! opened, Mizzen's simplification: no background re-resolution), and
//! `ORIGINAL_DST` (the downstream connection's original destination, or for
//! HTTP its `x-envoy-original-dst-host` header when the cluster allows it).
//! Unix socket endpoints (`pipe`) are supported for inbound clusters.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbConfig, LbPolicy, common_lb_config,
};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster as ClusterProto, circuit_breakers};
use envoy_types::pb::envoy::config::core::v3::{Address, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use prost::Message;

use crate::balance::{
    Balancer, BalancerConfig, HostInfo, Outcome, OutlierConfig, OutlierDetector, PickContext,
    Policy,
};
use crate::upstream::Pool;

mod config;

use config::{balancer_config, client_tls, discovery, limits, protocol_options};
pub use config::{duration, eds_name, host_addr, service_of};

/// The key of `typed_extension_protocol_options` for HTTP upstream options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// How a cluster finds its hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// `STATIC` or `EDS`: addresses from the load assignment.
    Static,
    /// `STRICT_DNS` / `LOGICAL_DNS`: hostnames resolved on connect.
    Dns,
    /// `ORIGINAL_DST`: the connection's original destination.
    OriginalDst,
}

/// The HTTP protocol spoken upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (Envoy's default).
    Http1,
    /// HTTP/2 (prior knowledge, h2c, or ALPN `h2` over TLS).
    Http2,
    /// Whatever the downstream spoke (`use_downstream_protocol_config`).
    Downstream,
}

/// Where a host is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostAddr {
    /// An IP socket address.
    Ip(SocketAddr),
    /// A hostname to resolve and a port (DNS clusters).
    Name(String, u16),
    /// A Unix domain socket.
    Pipe(PathBuf),
}

impl std::fmt::Display for HostAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostAddr::Ip(a) => write!(f, "{a}"),
            HostAddr::Name(h, p) => write!(f, "{h}:{p}"),
            HostAddr::Pipe(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One upstream host: its address, weight and connection pool.
#[derive(Debug)]
pub struct Host {
    /// Where to connect.
    pub addr: HostAddr,
    /// The cluster's `transport_socket_matches` entry this host's metadata
    /// selects (`None`: the cluster's `transport_socket`).
    pub socket: Option<usize>,
    /// Requests (or TCP connections) in flight to this host.
    pub active: AtomicU64,
    /// Pooled connections to this host.
    pub pool: Pool,
}

impl Host {
    /// A host at `addr` with an empty pool, using the cluster's transport socket.
    pub fn new(addr: HostAddr) -> Arc<Host> {
        Host::with_socket(addr, None)
    }

    /// A host at `addr` whose connections use transport socket match `socket`.
    pub fn with_socket(addr: HostAddr, socket: Option<usize>) -> Arc<Host> {
        Arc::new(Host {
            addr,
            socket,
            active: AtomicU64::new(0),
            pool: Pool::default(),
        })
    }
}

/// One `transport_socket_matches` entry: the endpoint metadata it requires
/// (under `envoy.transport_socket_match`) and its TLS (`None`: plain text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketMatch {
    /// The entry's name.
    pub name: String,
    /// Required metadata, each value in its JSON form.
    pub criteria: Vec<(String, String)>,
    /// The TLS it originates.
    pub tls: Option<crate::secrets::ClientTls>,
}

/// The hosts of a cluster with the balancer built over them.
pub struct HostSet {
    /// The hosts, in load assignment order.
    pub hosts: Vec<Arc<Host>>,
    infos: Vec<HostInfo>,
    balancer: ArcSwap<Balancer>,
    outlier: Option<OutlierDetector>,
    last_sweep: Mutex<Instant>,
}

impl std::fmt::Debug for HostSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostSet")
            .field("hosts", &self.hosts.len())
            .finish_non_exhaustive()
    }
}

/// Circuit breaker thresholds (the `DEFAULT` priority's), Envoy's defaults
/// when absent: 1024 each, retries 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `max_connections`.
    pub max_connections: u64,
    /// `max_pending_requests`.
    pub max_pending_requests: u64,
    /// `max_requests`.
    pub max_requests: u64,
    /// `max_retries`.
    pub max_retries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
        }
    }
}

/// A cluster's counters and gauges (Envoy's `cluster.NAME.*` names in
/// [`ClusterStats::render`]).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// `upstream_cx_total`.
    pub cx_total: AtomicU64,
    /// `upstream_cx_active` (gauge).
    pub cx_active: AtomicU64,
    /// `upstream_cx_connect_fail`.
    pub cx_connect_fail: AtomicU64,
    /// `upstream_cx_connect_timeout`.
    pub cx_connect_timeout: AtomicU64,
    /// `upstream_cx_overflow`.
    pub cx_overflow: AtomicU64,
    /// `upstream_rq_total`.
    pub rq_total: AtomicU64,
    /// `upstream_rq_active` (gauge).
    pub rq_active: AtomicU64,
    /// `upstream_rq_pending_active` (gauge).
    pub rq_pending_active: AtomicU64,
    /// `upstream_rq_pending_overflow`.
    pub rq_pending_overflow: AtomicU64,
    /// `upstream_rq_retry`.
    pub rq_retry: AtomicU64,
    /// `upstream_rq_retry_overflow`.
    pub rq_retry_overflow: AtomicU64,
    /// `upstream_rq_timeout`.
    pub rq_timeout: AtomicU64,
    /// `upstream_rq_per_try_timeout`.
    pub rq_per_try_timeout: AtomicU64,
    /// `upstream_rq_2xx` .. `upstream_rq_5xx` by class (index 1..=5).
    pub rq_class: [AtomicU64; 6],
    /// `upstream_cx_none_healthy`: no host to pick.
    pub no_healthy: AtomicU64,
    /// `upstream_rq_pending_total`.
    pub rq_pending_total: AtomicU64,
    /// Retries in flight (for `max_retries`).
    pub retries_active: AtomicU64,
}

impl ClusterStats {
    /// Adds `delta` (±1) to the retries in flight; the count after it.
    pub fn rq_retry_active(&self, delta: i64) -> u64 {
        if delta >= 0 {
            self.retries_active
                .fetch_add(delta as u64, Ordering::AcqRel)
                + delta as u64
        } else {
            let d = delta.unsigned_abs();
            self.retries_active
                .fetch_sub(d, Ordering::AcqRel)
                .saturating_sub(d)
        }
    }

    /// Counts a response status by class.
    pub fn status(&self, status: u16) {
        let class = (status / 100) as usize;
        if (1..=5).contains(&class) {
            self.rq_class[class].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `(name, value)` pairs under `cluster.NAME.`.
    pub fn render(&self, name: &str, hosts: &HostSet, out: &mut Vec<(String, u64)>) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut put = |stat: &str, v: u64| out.push((format!("cluster.{name}.{stat}"), v));
        put("upstream_cx_total", get(&self.cx_total));
        put("upstream_cx_active", get(&self.cx_active));
        put("upstream_cx_connect_fail", get(&self.cx_connect_fail));
        put("upstream_cx_connect_timeout", get(&self.cx_connect_timeout));
        put("upstream_cx_overflow", get(&self.cx_overflow));
        put("upstream_cx_none_healthy", get(&self.no_healthy));
        put("upstream_rq_total", get(&self.rq_total));
        put("upstream_rq_active", get(&self.rq_active));
        put("upstream_rq_pending_active", get(&self.rq_pending_active));
        put("upstream_rq_pending_total", get(&self.rq_pending_total));
        put(
            "upstream_rq_pending_overflow",
            get(&self.rq_pending_overflow),
        );
        put("upstream_rq_retry", get(&self.rq_retry));
        put("upstream_rq_retry_overflow", get(&self.rq_retry_overflow));
        put("upstream_rq_timeout", get(&self.rq_timeout));
        put("upstream_rq_per_try_timeout", get(&self.rq_per_try_timeout));
        for class in 1..=5 {
            put(
                &format!("upstream_rq_{class}xx"),
                get(&self.rq_class[class]),
            );
        }
        put("membership_total", hosts.hosts.len() as u64);
        let (ejected, total) = hosts
            .outlier
            .as_ref()
            .map(|o| (o.ejected_count() as u64, o.ejections_total()))
            .unwrap_or((0, 0));
        put("membership_healthy", hosts.hosts.len() as u64 - ejected);
        put("outlier_detection.ejections_active", ejected);
        put("outlier_detection.ejections_enforced_total", total);
    }
}

/// A compiled cluster.
pub struct Cluster {
    /// The cluster's name.
    pub name: String,
    /// How it finds hosts.
    pub discovery: Discovery,
    /// `connect_timeout` (Envoy's default 5 s).
    pub connect_timeout: Duration,
    /// HTTP protocol upstream.
    pub protocol: UpstreamProtocol,
    /// Pooled connection idle timeout (`common_http_protocol_options.idle_timeout`,
    /// Envoy's default 1 h).
    pub idle_timeout: Duration,
    /// Requests per upstream connection before it is retired (`None`: no limit).
    pub max_requests_per_connection: Option<u32>,
    /// Circuit breakers.
    pub limits: Limits,
    /// `upstream_bind_config.source_address`.
    pub bind_source: Option<IpAddr>,
    /// The cluster's TLS origination (`UpstreamTlsContext`), when it has one.
    pub tls: Option<crate::secrets::ClientTls>,
    /// `transport_socket_matches`: per-endpoint transport sockets (Istio's auto
    /// mTLS: mTLS to endpoints labelled `tlsMode: istio`, plain text to others).
    pub socket_matches: Vec<SocketMatch>,
    /// Where its certificates come from (set for TLS clusters).
    pub secrets: Option<Arc<crate::secrets::Secrets>>,
    /// Whether `ORIGINAL_DST` honours `x-envoy-original-dst-host`.
    pub use_http_header: bool,
    /// The destination service of an Istio cluster name
    /// (`outbound|PORT|SUBSET|HOST`): host, short name and namespace; empty
    /// for other clusters.
    pub service: (String, String, String),
    /// Counters.
    pub stats: ClusterStats,
    /// Connections open now, over all hosts (for `max_connections`).
    pub connections: AtomicUsize,
    /// Woken when a pooled connection is returned or closed (pending requests
    /// wait on it).
    pub released: tokio::sync::Notify,
    hosts: ArcSwap<HostSet>,
    balancer: BalancerConfig,
    proto: Arc<ClusterProto>,
    assignment: Option<Arc<ClusterLoadAssignment>>,
    /// Hosts made on the fly for `ORIGINAL_DST`, by address.
    dynamic: Mutex<HashMap<SocketAddr, Arc<Host>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("discovery", &self.discovery)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// What the data path passes to [`Cluster::pick`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PickInput {
    /// The request's hash (route hash policies), for ring hash and Maglev.
    pub hash: Option<u64>,
    /// The connection's original destination (ORIGINAL_DST clusters).
    pub original_dst: Option<SocketAddr>,
}

/// Why no host could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoHost {
    /// The cluster has no (healthy) host.
    Empty,
    /// ORIGINAL_DST without an original destination.
    NoOriginalDst,
}

impl Cluster {
    /// Compiles `proto` with its endpoints (`assignment`: EDS, or `None` for
    /// the inline `load_assignment`), reusing `previous`' hosts where the
    /// address is unchanged.
    pub fn build(
        proto: Arc<ClusterProto>,
        assignment: Option<Arc<ClusterLoadAssignment>>,
        previous: Option<&Cluster>,
        secrets: &Arc<crate::secrets::Secrets>,
    ) -> Result<Cluster, String> {
        let tls = client_tls(&proto)?;
        let socket_matches = config::socket_matches(&proto)?;
        let discovery = discovery(&proto)?;
        let balancer = balancer_config(&proto)?;
        let outlier = proto
            .outlier_detection
            .as_ref()
            .map(OutlierConfig::from_proto);
        let (protocol, idle_timeout, max_per_conn) = protocol_options(&proto)?;
        let limits = limits(&proto);
        let bind_source = proto
            .upstream_bind_config
            .as_ref()
            .and_then(|b| b.source_address.as_ref())
            .and_then(|a| a.address.parse().ok());
        let use_http_header = match &proto.lb_config {
            Some(LbConfig::OriginalDstLbConfig(c)) => c.use_http_header,
            _ => false,
        };
        let cla = assignment
            .clone()
            .or_else(|| proto.load_assignment.as_ref().map(|c| Arc::new(c.clone())));
        let previous_hosts = previous.map(|p| p.hosts.load_full());
        let old: HashMap<&HostAddr, &Arc<Host>> = previous_hosts
            .as_ref()
            .map(|set| set.hosts.iter().map(|h| (&h.addr, h)).collect())
            .unwrap_or_default();
        let mut hosts = Vec::new();
        let mut infos = Vec::new();
        if let Some(cla) = &cla {
            let mut locality_index: HashMap<u32, usize> = HashMap::new();
            for group in &cla.endpoints {
                let loc = locality_index.entry(group.priority).or_insert(0);
                let locality = *loc;
                *loc += 1;
                let locality_weight = group
                    .load_balancing_weight
                    .map(|w| w.value)
                    .unwrap_or(1)
                    .max(1);
                for lb in &group.lb_endpoints {
                    let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &lb.host_identifier
                    else {
                        continue;
                    };
                    // Envoy skips hosts EDS marks unhealthy, draining or timed out.
                    if matches!(lb.health_status, 2 | 3 | 4 | 6) {
                        continue;
                    }
                    let Some(addr) = ep.address.as_ref().and_then(host_addr) else {
                        continue;
                    };
                    let key = addr.to_string();
                    let socket = config::select_socket(&socket_matches, lb.metadata.as_ref());
                    let host = old
                        .get(&addr)
                        .filter(|h| h.socket == socket)
                        .map(|h| Arc::clone(h))
                        .unwrap_or_else(|| Host::with_socket(addr, socket));
                    hosts.push(host);
                    infos.push(HostInfo {
                        key,
                        weight: lb
                            .load_balancing_weight
                            .map(|w| w.value)
                            .unwrap_or(1)
                            .max(1),
                        priority: group.priority,
                        locality,
                        locality_weight,
                    });
                }
            }
        }
        let set = HostSet::new(hosts, infos, &balancer, outlier.clone());
        Ok(Cluster {
            name: proto.name.clone(),
            discovery,
            connect_timeout: proto
                .connect_timeout
                .as_ref()
                .map(duration)
                .unwrap_or(Duration::from_secs(5)),
            protocol,
            idle_timeout,
            max_requests_per_connection: max_per_conn,
            limits,
            bind_source,
            secrets: (tls.is_some() || socket_matches.iter().any(|m| m.tls.is_some()))
                .then(|| Arc::clone(secrets)),
            tls,
            socket_matches,
            use_http_header,
            service: service_of(&proto.name),
            stats: ClusterStats::default(),
            connections: AtomicUsize::new(0),
            released: tokio::sync::Notify::new(),
            hosts: ArcSwap::from_pointee(set),
            balancer,
            proto,
            assignment,
            dynamic: Mutex::default(),
        })
    }

    /// Whether the cluster balances by request hash (ring hash, Maglev).
    pub fn hashes(&self) -> bool {
        matches!(
            self.balancer.policy,
            Policy::RingHash { .. } | Policy::Maglev { .. }
        )
    }

    /// Whether the cluster takes its endpoints from EDS.
    pub fn is_eds(&self) -> bool {
        eds_name(&self.proto).is_some()
    }

    /// Whether `proto` and `assignment` are what this cluster was built from.
    pub fn same_source(
        &self,
        proto: &Arc<ClusterProto>,
        assignment: Option<&Arc<ClusterLoadAssignment>>,
    ) -> bool {
        Arc::ptr_eq(&self.proto, proto)
            && match (&self.assignment, assignment) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }

    /// The TLS connections to `host` originate (`None`: plain text).
    pub fn tls_for(&self, host: &Host) -> Option<&crate::secrets::ClientTls> {
        match host.socket {
            Some(i) => self.socket_matches.get(i).and_then(|m| m.tls.as_ref()),
            None => self.tls.as_ref(),
        }
    }

    /// The hosts now.
    pub fn hosts(&self) -> Arc<HostSet> {
        self.hosts.load_full()
    }

    /// Picks a host for one request or connection; `avoid` is consulted for
    /// retries that skip hosts already tried.
    pub fn pick(
        &self,
        input: &PickInput,
        avoid: &dyn Fn(&Host) -> bool,
    ) -> Result<Arc<Host>, NoHost> {
        if self.discovery == Discovery::OriginalDst {
            let addr = input.original_dst.ok_or(NoHost::NoOriginalDst)?;
            let mut dynamic = self.dynamic.lock().unwrap_or_else(|p| p.into_inner());
            if dynamic.len() > 4096 {
                dynamic.retain(|_, h| Arc::strong_count(h) > 1);
            }
            return Ok(Arc::clone(
                dynamic
                    .entry(addr)
                    .or_insert_with(|| Host::new(HostAddr::Ip(addr))),
            ));
        }
        let set = self.hosts.load();
        set.sweep(&self.balancer);
        let balancer = set.balancer.load();
        let hosts = &set.hosts;
        let usable = |i: usize| !avoid(&hosts[i]);
        let active = |i: usize| hosts[i].active.load(Ordering::Relaxed);
        let i = balancer
            .pick(&PickContext {
                hash: input.hash,
                random: fastrand::u64(..),
                usable: &usable,
                active: &active,
            })
            .ok_or(NoHost::Empty)?;
        Ok(Arc::clone(&hosts[i]))
    }

    /// Records the outcome of a request to `host` for outlier detection.
    pub fn record(&self, host: &Host, outcome: Outcome) {
        let set = self.hosts.load();
        let Some(outlier) = &set.outlier else {
            return;
        };
        let Some(i) = set.hosts.iter().position(|h| std::ptr::eq(&**h, host)) else {
            return;
        };
        if outlier.record(i, outcome, fastrand::u64(..), Instant::now()) {
            set.rebuild(&self.balancer);
        }
    }
}

impl HostSet {
    /// Host `i`'s load balancing weight.
    pub fn weight(&self, i: usize) -> u32 {
        self.infos.get(i).map_or(1, |h| h.weight)
    }

    /// Host `i`'s priority.
    pub fn priority(&self, i: usize) -> u32 {
        self.infos.get(i).map_or(0, |h| h.priority)
    }

    /// Whether host `i` is ejected by outlier detection now.
    pub fn is_ejected(&self, i: usize) -> bool {
        self.outlier.as_ref().is_some_and(|o| o.ejected(i))
    }

    fn new(
        hosts: Vec<Arc<Host>>,
        infos: Vec<HostInfo>,
        config: &BalancerConfig,
        outlier: Option<OutlierConfig>,
    ) -> HostSet {
        let healthy = vec![true; hosts.len()];
        let balancer = Balancer::new(config, &infos, &healthy);
        let outlier = outlier.map(|c| OutlierDetector::new(c, hosts.len()));
        HostSet {
            hosts,
            infos,
            balancer: ArcSwap::from_pointee(balancer),
            outlier,
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    fn rebuild(&self, config: &BalancerConfig) {
        if let Some(outlier) = &self.outlier {
            let healthy = outlier.healthy();
            self.balancer
                .store(Arc::new(Balancer::new(config, &self.infos, &healthy)));
        }
    }

    /// Runs the outlier detector's interval sweep at most once a second.
    fn sweep(&self, config: &BalancerConfig) {
        let Some(outlier) = &self.outlier else {
            return;
        };
        let now = Instant::now();
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return;
        };
        if now.duration_since(*last) < Duration::from_secs(1) {
            return;
        }
        *last = now;
        drop(last);
        if outlier.tick(now) {
            self.rebuild(config);
        }
    }
}

/// The CDS [`Handler`](crate::xds::Handler): a cluster that does not
/// compile is NACKed with the reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterValidator;

impl crate::xds::Handler<ClusterProto> for ClusterValidator {
    fn validate(&self, _name: &str, resource: &ClusterProto) -> Result<(), String> {
        discovery(resource)?;
        balancer_config(resource)?;
        protocol_options(resource)?;
        client_tls(resource)?;
        Ok(())
    }
}

/// All clusters, by name.
#[derive(Debug, Default)]
pub struct ClusterSet {
    clusters: HashMap<String, Arc<Cluster>>,
}

impl ClusterSet {
    /// Compiles `clusters` with their endpoints, reusing unchanged clusters of
    /// `previous` as they are. A cluster that does not compile is left out
    /// and its error returned (the xDS validator refuses it before it gets
    /// here).
    pub fn build<'a>(
        clusters: impl IntoIterator<
            Item = (
                &'a Arc<ClusterProto>,
                Option<&'a Arc<ClusterLoadAssignment>>,
            ),
        >,
        previous: Option<&ClusterSet>,
        secrets: &Arc<crate::secrets::Secrets>,
    ) -> (ClusterSet, Vec<String>) {
        let mut out = HashMap::new();
        let mut errors = Vec::new();
        for (proto, cla) in clusters {
            let prev = previous.and_then(|p| p.clusters.get(&proto.name));
            if let Some(prev) = prev
                && prev.same_source(proto, cla)
            {
                out.insert(proto.name.clone(), Arc::clone(prev));
                continue;
            }
            match Cluster::build(Arc::clone(proto), cla.cloned(), prev.map(|p| &**p), secrets) {
                Ok(c) => {
                    out.insert(proto.name.clone(), Arc::new(c));
                }
                Err(e) => errors.push(format!("cluster {}: {e}", proto.name)),
            }
        }
        (ClusterSet { clusters: out }, errors)
    }

    /// The cluster named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }

    /// Every cluster.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.values()
    }
}
