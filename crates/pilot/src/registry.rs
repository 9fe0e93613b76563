//! The service registry: derives services, endpoints, workloads and TLS secrets from
//! the accepted resources, and assembles them with the accepted Istio config into one
//! immutable [`Snapshot`].
//!
//! It owns the *derivation* only. It does not read files or watch anything (that is
//! [`crate::config`]), does not validate (galley, via [`crate::config::ConfigStore`]),
//! and does not build proxy config ([`crate::xds`]).
//!
//! [`build_snapshot`] runs top-down:
//! 1. [`Index`] decodes the Kubernetes objects pilot reads (Service, Endpoints,
//!    EndpointSlice, Pod, Secret) with k8s-openapi and groups them by namespace and
//!    name; Istio `ServiceEntry` and `WorkloadEntry` specs are taken as decoded.
//! 2. [`kube`] turns each Kubernetes `Service` into a [`Service`]; [`service_entry`]
//!    turns each `ServiceEntry` host into one. When two sources define the same host,
//!    the Kubernetes Service wins, then the ServiceEntry whose (namespace, name) sorts
//!    first. Istio keeps the oldest by creation time; files carry no creation time, so
//!    Mizzen uses the name order, which is stable across restarts.
//! 3. The winning definition of each host computes its endpoints per service port
//!    ([`kube::endpoints`], [`service_entry::endpoints`]).
//! 4. Pods and WorkloadEntries with an IP become [`Workload`]s; `kubernetes.io/tls`
//!    Secrets become [`crate::model::TlsSecret`]s ([`secret`]).
//!
//! [`describe_change`] then compares the new snapshot with the one it replaces and
//! marks whether only endpoints moved, so the ADS server can take Istio's EDS-only
//! fast path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use common::istio::networking::{ServiceEntrySpec, WorkloadEntrySpec};
use common::resource::{Body, Resource, Spec};
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;

use crate::model::{Endpoint, Rejected, Service, Snapshot, Workload};

pub mod kube;
pub mod secret;
pub mod service_entry;

#[cfg(test)]
mod tests;

/// Namespace of resources that set none, for [`build_snapshot`] callers that did not
/// normalise namespaces (the [`crate::config::ConfigStore`] does).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Label on a workload saying whether it speaks Istio mTLS (`istio` or `disabled`).
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";

/// Label of an EndpointSlice naming the Service it belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Builds the snapshot for `version` from the accepted resources (Istio and
/// Kubernetes, in any order) and the current rejections.
///
/// `Snapshot::config` receives the accepted Istio resources in (group, kind,
/// namespace, name) order; Kubernetes objects feed the registry only. Objects that
/// fail to decode here were not checked by a [`crate::config::ConfigStore`]; they are
/// skipped with a warning.
pub fn build_snapshot(
    accepted: Vec<Arc<Resource>>,
    rejected: Vec<Rejected>,
    version: u64,
) -> Snapshot {
    let mut config: Vec<Arc<Resource>> = accepted
        .iter()
        .filter(|r| matches!(r.body, Body::Istio(_)))
        .cloned()
        .collect();
    config.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));

    let index = Index::new(&accepted);
    let mut services: BTreeMap<String, Arc<Service>> = BTreeMap::new();
    let mut endpoints: BTreeMap<String, BTreeMap<u32, Vec<Endpoint>>> = BTreeMap::new();

    // Kubernetes Services first: they win any host conflict.
    for ks in index.kube_services.iter() {
        let by_port = kube::endpoints(ks, &index);
        endpoints.insert(ks.service.hostname.clone(), by_port);
        services.insert(ks.service.hostname.clone(), Arc::new(ks.service.clone()));
    }
    // Then ServiceEntries in (namespace, name) order; the first to claim a host keeps it.
    for (r, spec) in index.service_entries.iter() {
        for svc in service_entry::services(r, spec) {
            if services.contains_key(&svc.hostname) {
                tracing::debug!(
                    host = %svc.hostname,
                    service_entry = %format!("{}.{}", r.name(), namespace(r)),
                    "host already defined by a Kubernetes Service or an earlier ServiceEntry; ignoring this definition"
                );
                continue;
            }
            let by_port = service_entry::endpoints(&svc, r, spec, &index);
            endpoints.insert(svc.hostname.clone(), by_port);
            services.insert(svc.hostname.clone(), Arc::new(svc));
        }
    }

    Snapshot {
        version,
        config,
        services,
        endpoints,
        workloads: index.workloads(),
        secrets: secret::tls_secrets(&index.secrets),
        rejected,
        ..Snapshot::default()
    }
}

/// Fills `next.endpoints_only` and `next.endpoints_changed` by comparing `next`
/// with `previous`, the snapshot it replaces.
///
/// A change is endpoints-only when the accepted config, the services, the secrets and
/// every workload present in both snapshots are unchanged (workloads may appear or
/// disappear: a new pod's proxy identifies itself when it connects). That covers
/// Endpoints and EndpointSlice edits, Pod readiness, pods coming and going, and
/// WorkloadEntry address or weight changes — the cases Istio pushes as EDS only.
/// The first snapshot (replacing version 0) is never endpoints-only.
/// `endpoints_changed` always lists the hosts whose endpoints differ.
pub fn describe_change(previous: &Snapshot, next: &mut Snapshot) {
    let mut changed = BTreeSet::new();
    for (host, by_port) in &next.endpoints {
        if previous.endpoints.get(host) != Some(by_port) {
            changed.insert(host.clone());
        }
    }
    for host in previous.endpoints.keys() {
        if !next.endpoints.contains_key(host) {
            changed.insert(host.clone());
        }
    }
    let workloads_kept = next
        .workloads
        .iter()
        .all(|(ip, w)| match previous.workloads.get(ip) {
            Some(old) => old == w,
            None => true,
        });
    next.endpoints_only = previous.version > 0
        && same_config(&previous.config, &next.config)
        && previous.services == next.services
        && previous.secrets == next.secrets
        && workloads_kept;
    next.endpoints_changed = changed;
}

/// Whether `a` and `b` hold the same derived content and the same rejections
/// (everything but the version and the change description): publishing `b` after
/// `a` would change nothing a proxy or the debug API can see.
pub fn same_content(a: &Snapshot, b: &Snapshot) -> bool {
    same_config(&a.config, &b.config)
        && a.services == b.services
        && a.endpoints == b.endpoints
        && a.workloads == b.workloads
        && a.secrets == b.secrets
        && a.rejected == b.rejected
}

fn same_config(a: &[Arc<Resource>], b: &[Arc<Resource>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
}

fn sort_key(r: &Resource) -> (&str, &str, &str, &str) {
    (r.group(), r.kind.as_str(), namespace(r), r.name())
}

/// The resource's namespace, [`DEFAULT_NAMESPACE`] when unset.
pub(crate) fn namespace(r: &Resource) -> &str {
    r.namespace_or(DEFAULT_NAMESPACE)
}

/// Whether `labels` carries every pair of `selector`. An empty selector selects
/// nothing (Kubernetes Services without a selector have no managed endpoints).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Which Kubernetes kind of the core or discovery group a resource is, if pilot
/// reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeKind {
    /// `v1/Service`.
    Service,
    /// `v1/Endpoints`.
    Endpoints,
    /// `discovery.k8s.io/v1/EndpointSlice`.
    EndpointSlice,
    /// `v1/Pod`.
    Pod,
    /// `v1/Secret`.
    Secret,
    /// `v1/Namespace`.
    Namespace,
    /// `v1/ServiceAccount`.
    ServiceAccount,
}

impl KubeKind {
    /// The kind of `r`, when it is one pilot reads.
    pub fn of(r: &Resource) -> Option<KubeKind> {
        if !matches!(r.body, Body::Kubernetes { .. }) {
            return None;
        }
        Some(match (r.group(), r.kind.as_str()) {
            ("", "Service") => KubeKind::Service,
            ("", "Endpoints") => KubeKind::Endpoints,
            ("discovery.k8s.io", "EndpointSlice") => KubeKind::EndpointSlice,
            ("", "Pod") => KubeKind::Pod,
            ("", "Secret") => KubeKind::Secret,
            ("", "Namespace") => KubeKind::Namespace,
            ("", "ServiceAccount") => KubeKind::ServiceAccount,
            _ => return None,
        })
    }
}

/// Why a Kubernetes object pilot reads cannot be used, or `None` when it decodes.
/// The config store rejects such objects (keeping their last good version); Istio
/// kinds are galley's business and always pass here.
pub fn kubernetes_problem(r: &Resource) -> Option<String> {
    let kind = KubeKind::of(r)?;
    if r.name().is_empty() {
        return Some("metadata.name is required; name the object".into());
    }
    let result = match kind {
        KubeKind::Service => try_decode::<core::Service>(r).map(drop),
        KubeKind::Endpoints => try_decode::<core::Endpoints>(r).map(drop),
        KubeKind::EndpointSlice => try_decode::<EndpointSlice>(r).map(drop),
        KubeKind::Pod => try_decode::<core::Pod>(r).map(drop),
        KubeKind::Secret => try_decode::<core::Secret>(r).map(drop),
        KubeKind::Namespace => try_decode::<core::Namespace>(r).map(drop),
        KubeKind::ServiceAccount => try_decode::<core::ServiceAccount>(r).map(drop),
    };
    result.err().map(|e| {
        format!(
            "{} does not decode as Kubernetes {}: {e}; fix the field the message names",
            r.kind, r.api_version
        )
    })
}

fn try_decode<T: DeserializeOwned>(r: &Resource) -> Result<T, serde_json::Error> {
    match &r.body {
        Body::Kubernetes { object, .. } => T::deserialize(object),
        Body::Istio(_) => Err(serde::de::Error::custom("not a Kubernetes object")),
    }
}

fn decode<T: DeserializeOwned>(r: &Resource) -> Option<T> {
    match try_decode(r) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(
                resource = %format!("{} {}.{}", r.kind, r.name(), namespace(r)),
                origin = %r.origin,
                error = %e,
                "skipping a Kubernetes object that does not decode"
            );
            None
        }
    }
}

/// The accepted resources decoded and grouped for derivation.
#[derive(Debug, Default)]
pub struct Index<'a> {
    /// Kubernetes Services, converted, in (namespace, name) order.
    pub(crate) kube_services: Vec<kube::KubeService>,
    /// Endpoints objects by (namespace, name).
    pub(crate) endpoints: BTreeMap<(String, String), core::Endpoints>,
    /// EndpointSlices by (namespace, service name).
    pub(crate) slices: BTreeMap<(String, String), Vec<EndpointSlice>>,
    /// Pods that are not finished, in (namespace, name) order.
    pub(crate) pods: Vec<kube::PodInfo>,
    /// ServiceEntries in (namespace, name) order.
    pub(crate) service_entries: Vec<(&'a Resource, &'a ServiceEntrySpec)>,
    /// WorkloadEntries in (namespace, name) order.
    pub(crate) workload_entries: Vec<(&'a Resource, &'a WorkloadEntrySpec)>,
    /// Secrets with their namespace.
    pub(crate) secrets: Vec<(String, core::Secret)>,
    /// Lookups into `pods` and `workload_entries`, so derivation stays linear in
    /// the number of endpoints (10,000 services × 100,000 pods must not be a
    /// product).
    lookup: Lookup,
}

/// Positions in [`Index::pods`] and [`Index::workload_entries`] by the keys
/// derivation asks for. Lists are in ascending position, i.e. (namespace, name)
/// order.
#[derive(Debug, Default)]
struct Lookup {
    pod_by_name: HashMap<(String, String), usize>,
    pod_by_ip: HashMap<(String, String), usize>,
    /// (namespace, label key, label value) → pods carrying the label.
    pods_by_label: HashMap<(String, String, String), Vec<usize>>,
    /// (namespace, label key, label value) → WorkloadEntries carrying the label.
    entries_by_label: HashMap<(String, String, String), Vec<usize>>,
}

/// Positions of items in `namespace` that carry every label of `selector`: the
/// shortest candidate list among the selector's labels, filtered by the rest.
fn select_in<'s>(
    by_label: &'s HashMap<(String, String, String), Vec<usize>>,
    namespace: &str,
    selector: &BTreeMap<String, String>,
) -> &'s [usize] {
    let mut best: Option<&[usize]> = None;
    for (k, v) in selector {
        let list = by_label
            .get(&(namespace.to_string(), k.clone(), v.clone()))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if best.is_none_or(|b| list.len() < b.len()) {
            best = Some(list);
        }
    }
    best.unwrap_or(&[])
}

impl<'a> Index<'a> {
    /// Decodes and groups `resources`.
    pub fn new(resources: &'a [Arc<Resource>]) -> Index<'a> {
        let mut sorted: Vec<&'a Resource> = resources.iter().map(Arc::as_ref).collect();
        sorted.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        let mut index = Index::default();
        for r in sorted {
            let ns = namespace(r).to_string();
            match &r.body {
                Body::Istio(Spec::ServiceEntry(s)) => index.service_entries.push((r, s)),
                Body::Istio(Spec::WorkloadEntry(s)) => index.workload_entries.push((r, s)),
                Body::Istio(_) => {}
                Body::Kubernetes { .. } => match KubeKind::of(r) {
                    Some(KubeKind::Service) => {
                        if let Some(ks) =
                            decode::<core::Service>(r).and_then(|s| kube::service(r, &s))
                        {
                            index.kube_services.push(ks);
                        }
                    }
                    Some(KubeKind::Endpoints) => {
                        if let Some(e) = decode::<core::Endpoints>(r) {
                            index.endpoints.insert((ns, r.name().to_string()), e);
                        }
                    }
                    Some(KubeKind::EndpointSlice) => {
                        if let Some(s) = decode::<EndpointSlice>(r) {
                            let service = s
                                .metadata
                                .labels
                                .as_ref()
                                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                                .cloned();
                            match service {
                                Some(svc) => index.slices.entry((ns, svc)).or_default().push(s),
                                None => tracing::warn!(
                                    origin = %r.origin,
                                    "EndpointSlice {} has no {SERVICE_NAME_LABEL} label; it belongs to no Service and is ignored",
                                    r.name()
                                ),
                            }
                        }
                    }
                    Some(KubeKind::Pod) => {
                        if let Some(p) = decode::<core::Pod>(r).and_then(|p| kube::pod_info(r, &p))
                        {
                            index.pods.push(p);
                        }
                    }
                    Some(KubeKind::Secret) => {
                        if let Some(s) = decode::<core::Secret>(r) {
                            index.secrets.push((ns, s));
                        }
                    }
                    Some(KubeKind::Namespace | KubeKind::ServiceAccount) | None => {}
                },
            }
        }
        index.build_lookup();
        index
    }

    fn build_lookup(&mut self) {
        let mut l = Lookup::default();
        for (i, p) in self.pods.iter().enumerate() {
            let ns = &p.namespace;
            l.pod_by_name.insert((ns.clone(), p.name.clone()), i);
            if !p.host_network {
                for ip in &p.ips {
                    l.pod_by_ip.entry((ns.clone(), ip.clone())).or_insert(i);
                }
            }
            for (k, v) in &p.labels {
                l.pods_by_label
                    .entry((ns.clone(), k.clone(), v.clone()))
                    .or_default()
                    .push(i);
            }
        }
        for (i, (r, we)) in self.workload_entries.iter().enumerate() {
            let ns = namespace(r);
            for (k, v) in &we.labels {
                l.entries_by_label
                    .entry((ns.to_string(), k.clone(), v.clone()))
                    .or_default()
                    .push(i);
            }
        }
        self.lookup = l;
    }

    /// The pod named `name` in `namespace`.
    pub(crate) fn pod(&self, namespace: &str, name: &str) -> Option<&kube::PodInfo> {
        let i = self
            .lookup
            .pod_by_name
            .get(&(namespace.to_string(), name.to_string()))?;
        self.pods.get(*i)
    }

    /// A pod of `namespace` with IP `ip` (host-network pods excluded).
    pub(crate) fn pod_by_ip(&self, namespace: &str, ip: &str) -> Option<&kube::PodInfo> {
        let i = self
            .lookup
            .pod_by_ip
            .get(&(namespace.to_string(), ip.to_string()))?;
        self.pods.get(*i)
    }

    /// The pods of `namespace` whose labels match `selector` (none for an empty
    /// selector), in (namespace, name) order.
    pub(crate) fn selected_pods<'s>(
        &'s self,
        namespace: &str,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = &'s kube::PodInfo> + use<'s, 'a> {
        let candidates = select_in(&self.lookup.pods_by_label, namespace, selector);
        candidates
            .iter()
            .filter_map(|i| self.pods.get(*i))
            .filter(move |p| selects(selector, &p.labels))
    }

    /// The WorkloadEntries of `namespace` whose labels match `selector` (none for an
    /// empty selector), in (namespace, name) order.
    pub(crate) fn selected_workload_entries<'s>(
        &'s self,
        namespace: &str,
        selector: &'s BTreeMap<String, String>,
    ) -> impl Iterator<Item = (&'a Resource, &'a WorkloadEntrySpec)> + use<'s, 'a> {
        let candidates = select_in(&self.lookup.entries_by_label, namespace, selector);
        candidates
            .iter()
            .filter_map(|i| self.workload_entries.get(*i).copied())
            .filter(move |(_, we)| selects(selector, &we.labels))
    }

    /// Workloads by IP: pods first (in namespace, name order), then WorkloadEntries;
    /// the first claim of an IP wins. Host-network pods share their node's IP and
    /// are left out.
    pub fn workloads(&self) -> BTreeMap<IpAddr, Workload> {
        let mut out = BTreeMap::new();
        for p in self.pods.iter().filter(|p| !p.host_network) {
            for ip in p.ips.iter().filter_map(|i| i.parse::<IpAddr>().ok()) {
                out.entry(ip).or_insert_with(|| Workload {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    labels: p.labels.clone(),
                    service_account: p.service_account.clone(),
                    locality: p.locality.clone(),
                });
            }
        }
        for (r, we) in &self.workload_entries {
            let Some(ip) = we.address.as_deref().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            out.entry(ip).or_insert_with(|| Workload {
                name: r.name().to_string(),
                namespace: namespace(r).to_string(),
                labels: we.labels.clone(),
                service_account: we.service_account.clone().unwrap_or_default(),
                locality: we.locality.clone().unwrap_or_default(),
            });
        }
        out
    }
}

/// Sorts endpoints by address and port and drops exact (address, port) repeats,
/// so snapshots are deterministic whatever order the inputs came in.
pub(crate) fn normalise(by_port: &mut BTreeMap<u32, Vec<Endpoint>>) {
    for eps in by_port.values_mut() {
        eps.sort_by(|a, b| {
            (a.address.as_str(), a.port, a.workload_name.as_str()).cmp(&(
                b.address.as_str(),
                b.port,
                b.workload_name.as_str(),
            ))
        });
        eps.dedup_by(|a, b| a.address == b.address && a.port == b.port);
    }
}
