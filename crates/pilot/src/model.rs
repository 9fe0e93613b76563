//! The mesh model: one immutable [`Snapshot`] of accepted config and the service
//! registry, swapped atomically when anything changes. xDS generation reads only
//! snapshots, so a push never sees half an update.
//!
//! Built by [`crate::registry`] (services and endpoints) and [`crate::config`]
//! (Istio resources that passed galley), published through [`ModelHandle`].

use std::collections::HashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use crate::xds::NamedResource;
use common::istio::networking::{
    DestinationRuleSpec, EnvoyFilterSpec, GatewaySpec, LoadBalancerSettings, ServiceEntrySpec,
    SidecarSpec, TrafficPolicy, VirtualServiceSpec,
};
use common::istio::security::{
    AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use common::resource::{Body, Resource, Spec};

/// The DNS suffix of Kubernetes services (`reviews.default.svc.cluster.local`).
pub const DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// How a port's traffic is understood, from Istio's port naming (`http-web`),
/// `appProtocol`, or a ServiceEntry's `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// HTTP/1.1 (and HTTP/2 with prior knowledge when the client uses it).
    Http,
    /// HTTP/2 (`http2`, `grpc`, `grpc-web`).
    Http2,
    /// gRPC (HTTP/2).
    Grpc,
    /// TLS with SNI (`https`, `tls`): routed by SNI, not terminated by sidecars.
    Tls,
    /// Opaque TCP (`tcp`, `mongo`, `mysql`, `redis`, or unnamed ports: Mizzen does
    /// not sniff protocols; see the README).
    Tcp,
}

impl Protocol {
    /// Whether routes (RDS) apply: HTTP, HTTP/2 and gRPC.
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2 | Protocol::Grpc)
    }

    /// Parses Istio's protocol names (case-insensitive) and port-name prefixes
    /// (`http-foo` → HTTP). Unknown names are TCP.
    pub fn from_name(name: &str) -> Protocol {
        let lower = name.to_ascii_lowercase();
        // Istio checks the `grpc-web` prefix before splitting at `-`.
        if lower.starts_with("grpc-web") {
            return Protocol::Http2;
        }
        let prefix = lower.split('-').next().unwrap_or("");
        match prefix {
            "http" => Protocol::Http,
            "http2" | "grpc-web" => Protocol::Http2,
            "grpc" => Protocol::Grpc,
            "https" | "tls" => Protocol::Tls,
            _ => Protocol::Tcp,
        }
    }
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name (`http`, `grpc-web`); may be empty for unnamed ports.
    pub name: String,
    /// The service port clients connect to.
    pub port: u32,
    /// The protocol, from `appProtocol`, the name, or the ServiceEntry.
    pub protocol: Protocol,
}

/// How clients reach a service's endpoints (Istio's `Resolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The proxy load-balances over known endpoint IPs (EDS).
    ClientSideLb,
    /// Endpoints are host names resolved by the proxy (STRICT_DNS cluster).
    Dns,
    /// Like [`Resolution::Dns`] but one address at a time (LOGICAL_DNS).
    DnsRoundRobin,
    /// Traffic goes to the original destination (ORIGINAL_DST cluster).
    Passthrough,
}

/// Where a service came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceSource {
    /// A Kubernetes `Service`.
    Kubernetes,
    /// A `ServiceEntry` (named `name.namespace`).
    ServiceEntry(String),
}

/// A service of the mesh, keyed by host name.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// The fully qualified host (`reviews.default.svc.cluster.local`,
    /// `api.example.com`, `*.example.com`).
    pub hostname: String,
    /// Namespace of the defining resource.
    pub namespace: String,
    /// Name of the defining resource.
    pub name: String,
    /// Ports.
    pub ports: Vec<ServicePort>,
    /// Virtual IPs (Kubernetes clusterIP, ServiceEntry addresses).
    pub addresses: Vec<String>,
    /// Pod label selector (Kubernetes) or workloadSelector (ServiceEntry).
    pub selector: BTreeMap<String, String>,
    /// How endpoints are reached.
    pub resolution: Resolution,
    /// Outside the mesh (ServiceEntry `MESH_EXTERNAL`): no mTLS, no Istio metadata.
    pub mesh_external: bool,
    /// Namespaces the service is visible to (`exportTo`; empty = all).
    pub export_to: Vec<String>,
    /// The defining resource kind.
    pub source: ServiceSource,
}

impl Service {
    /// The port with this number.
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// One endpoint of one service port.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// IP address, or a DNS name for DNS-resolved ServiceEntries.
    pub address: String,
    /// The port the workload listens on (targetPort, or the ServiceEntry endpoint
    /// port mapping).
    pub port: u32,
    /// Workload labels (subsets select on these).
    pub labels: BTreeMap<String, String>,
    /// Workload namespace.
    pub namespace: String,
    /// Workload service account (SPIFFE identity `spiffe://<td>/ns/<ns>/sa/<sa>`).
    pub service_account: String,
    /// Workload name (pod or WorkloadEntry name) for telemetry.
    pub workload_name: String,
    /// Region/zone/subzone, `region/zone/subzone` (may be empty).
    pub locality: String,
    /// Load-balancing weight (ServiceEntry endpoint weight; default 1).
    pub weight: u32,
    /// Whether the workload runs a mesh proxy (mTLS-capable: `tlsMode: istio`).
    pub mesh_tls: bool,
    /// Whether the endpoint is ready (Endpoints `addresses` vs `notReadyAddresses`).
    pub healthy: bool,
}

impl Endpoint {
    /// The endpoint's IP, if its address is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

/// A TLS secret (`kubernetes.io/tls`) Gateways refer to by `credentialName`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSecret {
    /// PEM certificate chain.
    pub cert_chain: String,
    /// PEM private key.
    pub private_key: String,
    /// PEM CA bundle for MUTUAL (`ca.crt`), if present.
    pub ca_cert: Option<String>,
}

/// A resource pilot refused, kept for `/debug/configz`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// `Kind name.namespace`.
    pub resource: String,
    /// File and line.
    pub origin: String,
    /// Galley's messages, in Istio's format.
    pub messages: Vec<String>,
}

/// Everything xDS generation reads, immutable once published.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases with every published snapshot.
    pub version: u64,
    /// Accepted Istio resources (the last good version of each).
    pub config: Vec<Arc<Resource>>,
    /// Services by host name. Two sources defining the same host: the Kubernetes
    /// Service wins, then the ServiceEntry whose (namespace, name) sorts first
    /// (Istio keeps the oldest; files carry no creation time).
    pub services: BTreeMap<String, Arc<Service>>,
    /// Endpoints by host name, then by service port number.
    pub endpoints: BTreeMap<String, BTreeMap<u32, Vec<Endpoint>>>,
    /// Workloads known by IP (pods, WorkloadEntries), for identifying proxies.
    pub workloads: BTreeMap<IpAddr, Workload>,
    /// TLS secrets by `namespace/name`.
    pub secrets: BTreeMap<String, TlsSecret>,
    /// Resources refused by validation, with why.
    pub rejected: Vec<Rejected>,
    /// How this snapshot differs from the one it replaced: `true` when only
    /// endpoints (and workloads appearing or disappearing) changed — config,
    /// services, secrets and existing workloads are the same — so only EDS needs
    /// regenerating, for the clusters of [`Snapshot::endpoints_changed`] (Istio's
    /// incremental EDS push). `false` for the first snapshot and any other change.
    /// Set by [`crate::registry::describe_change`].
    pub endpoints_only: bool,
    /// Hosts whose endpoints differ from the previous snapshot (empty for the first
    /// snapshot). With `endpoints_only`, the proxies watching these hosts' clusters
    /// are the only ones to push; an empty set then means no proxy-visible change
    /// (for example only [`Snapshot::rejected`] changed).
    pub endpoints_changed: BTreeSet<String>,
    /// DestinationRules by host, built on first use ([`Snapshot::destination_rules_for`]),
    /// so generation looks up the rules of a host instead of scanning them all.
    pub rule_index: Derived<RuleIndex>,
    /// The EDS cluster names an endpoint-only change can touch, built on first use
    /// ([`Snapshot::changed_cluster_names`]) and shared by every connection.
    pub changed_clusters: Derived<BTreeSet<String>>,
    /// Load assignments that are the same for every proxy (clusters without a
    /// subset), generated once per snapshot and shared by every connection
    /// ([`crate::xds::endpoint::generate`]), as Istio's EDS cache does.
    pub shared_eds: Derived<Mutex<HashMap<String, Option<NamedResource>>>>,
    /// AuthorizationPolicies by namespace, built on first use
    /// ([`crate::xds::authz::select`]), so a proxy's policies are looked up
    /// rather than scanned for.
    pub authz_index: Derived<crate::xds::authz::PolicyIndex>,
    /// Whether any DestinationRule can make a load assignment depend on the
    /// proxy's locality (outlier detection or `distribute` anywhere in it),
    /// built on first use ([`Snapshot::has_locality_rules`]).
    pub locality_rules: Derived<bool>,
}

/// A value derived from a snapshot on first use. Cloning a snapshot (to edit the
/// copy into the next one) does not carry it over: the copy derives its own.
#[derive(Debug, Default)]
pub struct Derived<T>(OnceLock<T>);

impl<T> Clone for Derived<T> {
    fn clone(&self) -> Self {
        Derived(OnceLock::new())
    }
}

impl<T> Derived<T> {
    /// The value, derived by `init` the first time.
    pub fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(init)
    }
}

/// A workload instance known to the registry (a Pod or a WorkloadEntry).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Pod or WorkloadEntry name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: String,
    /// Region/zone/subzone, `region/zone/subzone` (may be empty).
    pub locality: String,
}

/// DestinationRules indexed by the FQDN of their `host` (Istio resolves a rule's
/// short host in the rule's namespace), wildcard hosts apart. Each entry is the
/// rule's ordinal in [`Snapshot::destination_rules`] order and its position in
/// [`Snapshot::config`].
#[derive(Debug, Clone, Default)]
pub struct RuleIndex {
    exact: std::collections::HashMap<String, Vec<(usize, usize)>>,
    wildcard: Vec<(usize, usize)>,
}

macro_rules! config_accessors {
    ($($fn:ident => $kind:ident, $ty:ty;)+) => {
        $(
            #[doc = concat!("Every accepted `", stringify!($kind), "` with its spec.")]
            pub fn $fn(&self) -> impl Iterator<Item = (&Resource, &$ty)> + '_ {
                self.config.iter().filter_map(|r| match &r.body {
                    Body::Istio(Spec::$kind(s)) => Some((r.as_ref(), s.as_ref())),
                    _ => None,
                })
            }
        )+
    };
}

impl Snapshot {
    config_accessors! {
        virtual_services => VirtualService, VirtualServiceSpec;
        destination_rules => DestinationRule, DestinationRuleSpec;
        gateways => Gateway, GatewaySpec;
        service_entries => ServiceEntry, ServiceEntrySpec;
        sidecars => Sidecar, SidecarSpec;
        envoy_filters => EnvoyFilter, EnvoyFilterSpec;
        peer_authentications => PeerAuthentication, PeerAuthenticationSpec;
        request_authentications => RequestAuthentication, RequestAuthenticationSpec;
        authorization_policies => AuthorizationPolicy, AuthorizationPolicySpec;
    }

    /// Every cluster name (`outbound|PORT|SUBSET|HOST`) of the hosts in
    /// [`Snapshot::endpoints_changed`]: each port of the host's service and
    /// endpoints, without a subset and with each subset of the DestinationRules that
    /// can apply to the host. Computed once per snapshot, so an endpoint-only push
    /// costs each connection a lookup per name instead of rebuilding the names.
    pub fn changed_cluster_names(&self) -> &BTreeSet<String> {
        self.changed_clusters.get_or_init(|| {
            let mut out = BTreeSet::new();
            for host in &self.endpoints_changed {
                let mut ports: BTreeSet<u32> = self
                    .endpoints
                    .get(host)
                    .map(|by_port| by_port.keys().copied().collect())
                    .unwrap_or_default();
                if let Some(service) = self.services.get(host) {
                    ports.extend(service.ports.iter().map(|p| p.port));
                }
                let subsets: BTreeSet<&str> = self
                    .destination_rules_for(host)
                    .into_iter()
                    .flat_map(|(_, _, rule)| rule.subsets.iter().map(|s| s.name.as_str()))
                    .collect();
                for port in ports {
                    for subset in std::iter::once("").chain(subsets.iter().copied()) {
                        out.insert(format!("outbound|{port}|{subset}|{host}"));
                    }
                }
            }
            out
        })
    }

    /// The DestinationRules that can apply to `hostname` — those whose host is
    /// exactly it, and those with a wildcard host — each with its ordinal in
    /// [`Snapshot::destination_rules`] order, ordered by that ordinal. Callers still
    /// rank them (namespace, selector, wildcard match).
    pub fn destination_rules_for(
        &self,
        hostname: &str,
    ) -> Vec<(usize, &Resource, &DestinationRuleSpec)> {
        let index = self.rule_index.get_or_init(|| {
            let mut idx = RuleIndex::default();
            let mut ordinal = 0;
            for (pos, r) in self.config.iter().enumerate() {
                let Body::Istio(Spec::DestinationRule(spec)) = &r.body else {
                    continue;
                };
                let host = fqdn(&spec.host, r.namespace_or("default"));
                if host.starts_with('*') {
                    idx.wildcard.push((ordinal, pos));
                } else {
                    idx.exact.entry(host).or_default().push((ordinal, pos));
                }
                ordinal += 1;
            }
            idx
        });
        let mut picks: Vec<(usize, usize)> = index
            .exact
            .get(hostname)
            .into_iter()
            .flatten()
            .chain(index.wildcard.iter())
            .copied()
            .collect();
        picks.sort_unstable();
        picks
            .into_iter()
            .filter_map(|(ordinal, pos)| match &self.config[pos].body {
                Body::Istio(Spec::DestinationRule(spec)) => {
                    Some((ordinal, self.config[pos].as_ref(), spec.as_ref()))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether some DestinationRule sets outlier detection or locality
    /// `distribute` (top level, port level or in a subset): without one, every
    /// load assignment of a cluster without a subset is the same for all
    /// proxies, and EDS skips looking up rules per proxy.
    pub fn has_locality_rules(&self) -> bool {
        *self.locality_rules.get_or_init(|| {
            let relevant = |p: &TrafficPolicy| {
                let one = |o: bool, lb: Option<&LoadBalancerSettings>| {
                    o || lb
                        .and_then(|l| l.locality_lb_setting.as_ref())
                        .is_some_and(|s| !s.distribute.is_empty())
                };
                one(p.outlier_detection.is_some(), p.load_balancer.as_ref())
                    || p.port_level_settings
                        .iter()
                        .any(|pl| one(pl.outlier_detection.is_some(), pl.load_balancer.as_ref()))
            };
            self.destination_rules().any(|(_, spec)| {
                spec.traffic_policy.as_ref().is_some_and(relevant)
                    || spec
                        .subsets
                        .iter()
                        .filter_map(|s| s.traffic_policy.as_ref())
                        .any(relevant)
            })
        })
    }

    /// Resolves a host as written in `namespace` (`reviews`, or an FQDN) to a
    /// known service, the way Istio does for VirtualService and DestinationRule hosts.
    pub fn resolve(&self, host: &str, namespace: &str) -> Option<&Arc<Service>> {
        self.services.get(&fqdn(host, namespace))
    }

    /// The endpoints of `hostname` on service port `port`.
    pub fn endpoints_of(&self, hostname: &str, port: u32) -> &[Endpoint] {
        self.endpoints
            .get(hostname)
            .and_then(|by_port| by_port.get(&port))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Istio's short-name resolution (`ResolveShortnameToFQDN`): a name without dots
/// is completed with the namespace (`reviews` in `default` →
/// `reviews.default.svc.cluster.local`); anything with a dot, `*`, and IP
/// addresses are taken as written (`reviews.prod` stays `reviews.prod`, as in Istio).
pub fn fqdn(host: &str, namespace: &str) -> String {
    if host == "*" || host.contains('.') || host.contains(':') || host.is_empty() {
        return host.to_string();
    }
    format!("{host}.{namespace}.{DOMAIN_SUFFIX}")
}

/// The published snapshot, readable without locks; writers swap whole snapshots.
#[derive(Debug, Clone)]
pub struct ModelHandle {
    current: Arc<ArcSwap<Snapshot>>,
    changed: tokio::sync::watch::Sender<u64>,
}

impl Default for ModelHandle {
    fn default() -> Self {
        ModelHandle::new(Snapshot::default())
    }
}

impl ModelHandle {
    /// A handle publishing `initial`.
    pub fn new(initial: Snapshot) -> Self {
        let (changed, _) = tokio::sync::watch::channel(initial.version);
        ModelHandle {
            current: Arc::new(ArcSwap::from_pointee(initial)),
            changed,
        }
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes `next` (its version must be greater) and wakes subscribers.
    pub fn publish(&self, next: Snapshot) {
        let version = next.version;
        self.current.store(Arc::new(next));
        self.changed.send_replace(version);
    }

    /// A receiver that sees each published version.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_like_istio() {
        assert_eq!(
            fqdn("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(fqdn("reviews.prod", "default"), "reviews.prod");
        assert_eq!(fqdn("10.0.0.1", "default"), "10.0.0.1");
        assert_eq!(fqdn("*", "default"), "*");
        assert_eq!(
            fqdn("reviews.prod.svc.cluster.local", "default"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(fqdn("api.example.com", "default"), "api.example.com");
        assert_eq!(fqdn("*.example.com", "default"), "*.example.com");
    }

    #[test]
    fn protocols_from_port_names() {
        assert_eq!(Protocol::from_name("http"), Protocol::Http);
        assert_eq!(Protocol::from_name("http-web"), Protocol::Http);
        assert_eq!(Protocol::from_name("HTTP2"), Protocol::Http2);
        assert_eq!(Protocol::from_name("grpc-api"), Protocol::Grpc);
        assert_eq!(Protocol::from_name("grpc-web"), Protocol::Http2);
        assert_eq!(Protocol::from_name("GRPC-Web-ui"), Protocol::Http2);
        assert_eq!(Protocol::from_name("https"), Protocol::Tls);
        assert_eq!(Protocol::from_name("mongo"), Protocol::Tcp);
        assert_eq!(Protocol::from_name(""), Protocol::Tcp);
    }

    #[test]
    fn destination_rules_are_found_by_host_in_config_order() {
        let loaded = common::load::load_str(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: prod}\nspec: {host: reviews}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: b, namespace: default}\nspec: {host: ratings}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: c, namespace: default}\nspec: {host: '*.prod.svc.cluster.local'}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d, namespace: default}\nspec: {host: reviews.prod.svc.cluster.local}\n",
            "dr.yaml",
        );
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let snap = Snapshot {
            config: loaded.resources.into_iter().map(Arc::new).collect(),
            ..Snapshot::default()
        };
        let found: Vec<(usize, &str)> = snap
            .destination_rules_for("reviews.prod.svc.cluster.local")
            .into_iter()
            .map(|(i, r, _)| (i, r.name()))
            .collect();
        // `a` (short host in prod), the wildcard `c`, and `d`, in config order; not `b`.
        assert_eq!(found, vec![(0, "a"), (2, "c"), (3, "d")]);
        assert!(
            snap.destination_rules_for("details.default.svc.cluster.local")
                .iter()
                .all(|(_, r, _)| r.name() == "c")
        );
    }

    #[tokio::test]
    async fn publishing_swaps_and_notifies() {
        let h = ModelHandle::default();
        let mut rx = h.subscribe();
        h.publish(Snapshot {
            version: 7,
            ..Snapshot::default()
        });
        rx.changed().await.unwrap();
        assert_eq!(*rx.borrow(), 7);
        assert_eq!(h.load().version, 7);
    }
}
