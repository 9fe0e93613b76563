//! Kubernetes `Service`s and their endpoints, the way Istio's Kubernetes registry
//! (`pilot/pkg/serviceregistry/kube/controller`) derives them.
//!
//! A Service becomes a [`Service`] with host `name.namespace.svc.cluster.local`, its
//! ports (protocol from `appProtocol`, else the port name's prefix; UDP and SCTP
//! ports are left out, as the mesh carries TCP only), its cluster IPs and selector.
//! Its endpoints come from the first source that exists for it:
//! 1. EndpointSlices labelled `kubernetes.io/service-name: <name>` (ready from
//!    `conditions.ready`, absent meaning ready, as the API defines);
//! 2. the `Endpoints` object of the same name (`addresses` healthy,
//!    `notReadyAddresses` unhealthy);
//! 3. otherwise the Pods of its namespace whose labels match the selector (what the
//!    Kubernetes endpoints controller would have written).
//!
//! WorkloadEntries of the namespace matched by the selector are added in every case
//! (Istio's cross-registry selection of VMs by Kubernetes Services).
//!
//! Differences from Istio, on purpose: a headless Service (`clusterIP: None`) keeps
//! client-side load balancing over its endpoints (Istio uses passthrough; in local
//! mode no DNS answers for pod names, so EDS is the way to reach them), and an
//! endpoint's workload name is its pod's name.

use std::collections::BTreeMap;

use common::resource::Resource;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Index, TLS_MODE_LABEL, namespace, normalise, service_entry};
use crate::model::{
    DOMAIN_SUFFIX, Endpoint, Protocol, Resolution, Service, ServicePort, ServiceSource,
};
use crate::xds::endpoint::locality;

/// Annotation limiting where a Service is visible (`networking.istio.io/exportTo`).
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// Annotation the injector writes on pods that received a sidecar.
pub const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";

/// Name of the sidecar container.
pub const PROXY_CONTAINER: &str = "istio-proxy";

/// A Kubernetes Service converted, with what endpoint derivation still needs.
#[derive(Debug, Clone, PartialEq)]
pub struct KubeService {
    /// The mesh service.
    pub service: Service,
    /// `targetPort` of each entry of `service.ports`, in the same order.
    pub target_ports: Vec<Option<IntOrString>>,
    /// `spec.externalName` of an `ExternalName` Service.
    pub external_name: Option<String>,
    /// `spec.publishNotReadyAddresses`: pods count as ready whatever their state.
    pub publish_not_ready: bool,
}

/// What the registry needs of a Pod.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// Pod name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// `status.podIPs` (or `status.podIP`), primary first.
    pub ips: Vec<String>,
    /// Whether the pod is ready: its `Ready` condition is True, or it reports no
    /// `Ready` condition at all (hand-written pods in local mode), and it is not
    /// being deleted.
    pub ready: bool,
    /// `spec.serviceAccountName`, `default` when unset.
    pub service_account: String,
    /// Whether the pod speaks Istio mTLS: its `security.istio.io/tlsMode` label when
    /// set (`istio`), else whether it has a sidecar (an `istio-proxy` container or
    /// the `sidecar.istio.io/status` annotation).
    pub mesh_tls: bool,
    /// Named container ports, `(name, containerPort)`.
    pub container_ports: Vec<(String, u32)>,
    /// `spec.hostNetwork`: the pod shares its node's IP.
    pub host_network: bool,
    /// `region/zone/subzone`: the `topology.istio.io/locality` (or
    /// `istio-locality`) label, else the topology labels
    /// (`topology.kubernetes.io/region|zone`, `topology.istio.io/subzone`),
    /// read from the pod since Mizzen does not watch Nodes.
    pub locality: String,
}

impl PodInfo {
    /// The container port named `name`.
    pub fn container_port(&self, name: &str) -> Option<u32> {
        self.container_ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
    }

    /// This pod as an endpoint at `address:port`.
    pub fn endpoint(&self, address: &str, port: u32, healthy: bool) -> Endpoint {
        Endpoint {
            address: address.to_string(),
            port,
            labels: self.labels.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            workload_name: self.name.clone(),
            locality: self.locality.clone(),
            weight: 1,
            mesh_tls: self.mesh_tls,
            healthy,
        }
    }
}

/// Reads a Pod; `None` for pods that have finished (`Succeeded`, `Failed`), which
/// are never endpoints nor proxies.
pub fn pod_info(r: &Resource, pod: &core::Pod) -> Option<PodInfo> {
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let spec = pod.spec.as_ref();

    let mut ips: Vec<String> = Vec::new();
    if let Some(s) = status {
        for ip in s
            .pod_ip
            .iter()
            .chain(s.pod_ips.iter().flatten().map(|p| &p.ip))
        {
            if !ip.is_empty() && !ips.contains(ip) {
                ips.push(ip.clone());
            }
        }
    }
    let ready_condition = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status == "True");
    let ready = ready_condition.unwrap_or(true) && pod.metadata.deletion_timestamp.is_none();

    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or(&[]);
    let init_containers = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or(&[]);
    let has_sidecar = containers
        .iter()
        .chain(init_containers)
        .any(|c| c.name == PROXY_CONTAINER)
        || annotations.contains_key(SIDECAR_STATUS_ANNOTATION);
    let mesh_tls = match labels.get(TLS_MODE_LABEL) {
        Some(mode) => mode == "istio",
        None => has_sidecar,
    };
    let container_ports = containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| Some((p.name.clone()?, u32::try_from(p.container_port).ok()?)))
        .collect();

    Some(PodInfo {
        name: r.name().to_string(),
        namespace: namespace(r).to_string(),
        ips,
        ready,
        service_account: spec
            .and_then(|s| s.service_account_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".to_string()),
        mesh_tls,
        container_ports,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        locality: locality::label_override(&labels)
            .unwrap_or_else(|| locality::from_labels(&labels)),
        labels,
    })
}

/// Istio's protocol for a Kubernetes port: `appProtocol` when set (including the
/// `kubernetes.io/h2c`, `kubernetes.io/ws` and `kubernetes.io/wss` values), else the
/// port name's prefix (`http-web` → HTTP, `grpc-web…` → HTTP/2).
pub fn port_protocol(name: &str, app_protocol: Option<&str>) -> Protocol {
    match app_protocol.filter(|a| !a.is_empty()) {
        Some(a) => match a.to_ascii_lowercase().as_str() {
            "kubernetes.io/h2c" => Protocol::Http2,
            "kubernetes.io/ws" => Protocol::Http,
            "kubernetes.io/wss" => Protocol::Tls,
            lower => Protocol::from_name(lower),
        },
        None => Protocol::from_name(name),
    }
}

/// Converts a Kubernetes Service. `None` never happens today; kept so that a Service
/// Mizzen cannot represent can be skipped without touching callers.
pub fn service(r: &Resource, svc: &core::Service) -> Option<KubeService> {
    let ns = namespace(r).to_string();
    let name = r.name().to_string();
    let spec = svc.spec.clone().unwrap_or_default();

    let mut ports = Vec::new();
    let mut target_ports = Vec::new();
    for p in spec.ports.iter().flatten() {
        if matches!(p.protocol.as_deref(), Some("UDP" | "SCTP")) {
            continue;
        }
        let Ok(number) = u32::try_from(p.port) else {
            continue;
        };
        if number == 0 {
            continue;
        }
        let port_name = p.name.clone().unwrap_or_default();
        ports.push(ServicePort {
            protocol: port_protocol(&port_name, p.app_protocol.as_deref()),
            name: port_name,
            port: number,
        });
        target_ports.push(p.target_port.clone());
    }

    let external_name = (spec.type_.as_deref() == Some("ExternalName"))
        .then(|| spec.external_name.clone())
        .flatten()
        .filter(|n| !n.is_empty());
    let mut addresses: Vec<String> = Vec::new();
    if external_name.is_none() {
        for ip in spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
        {
            if !ip.is_empty() && ip != "None" && !addresses.contains(ip) {
                addresses.push(ip.clone());
            }
        }
    }
    let export_to = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();

    Some(KubeService {
        service: Service {
            hostname: format!("{name}.{ns}.{DOMAIN_SUFFIX}"),
            namespace: ns,
            name,
            ports,
            addresses,
            selector: spec.selector.clone().unwrap_or_default(),
            resolution: if external_name.is_some() {
                Resolution::Dns
            } else {
                Resolution::ClientSideLb
            },
            mesh_external: external_name.is_some(),
            export_to,
            source: ServiceSource::Kubernetes,
        },
        target_ports,
        external_name,
        publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
    })
}

/// The endpoints of a Kubernetes Service by service port (every port has an entry,
/// possibly empty).
pub fn endpoints(ks: &KubeService, index: &Index<'_>) -> BTreeMap<u32, Vec<Endpoint>> {
    let svc = &ks.service;
    let mut out: BTreeMap<u32, Vec<Endpoint>> =
        svc.ports.iter().map(|p| (p.port, Vec::new())).collect();
    let key = (svc.namespace.clone(), svc.name.clone());

    if let Some(external) = &ks.external_name {
        for p in &svc.ports {
            out.entry(p.port).or_default().push(Endpoint {
                address: external.clone(),
                port: p.port,
                labels: BTreeMap::new(),
                namespace: svc.namespace.clone(),
                service_account: String::new(),
                workload_name: String::new(),
                locality: String::new(),
                weight: 1,
                mesh_tls: false,
                healthy: true,
            });
        }
        return out;
    }

    if let Some(slices) = index.slices.get(&key).filter(|s| !s.is_empty()) {
        for slice in slices {
            from_slice(ks, slice, index, &mut out);
        }
    } else if let Some(eps) = index.endpoints.get(&key) {
        from_endpoints(ks, eps, index, &mut out);
    } else {
        from_pods(ks, index, &mut out);
    }
    from_workload_entries(ks, index, &mut out);
    normalise(&mut out);
    out
}

/// The endpoint port serving `svc_port`: the endpoint port of the same name, or,
/// when both sides have a single port, that one (unnamed ports match that way).
fn match_port(svc: &Service, svc_port: &ServicePort, ports: &[(String, u32)]) -> Option<u32> {
    ports
        .iter()
        .find(|(name, _)| *name == svc_port.name)
        .or_else(|| (svc.ports.len() == 1 && ports.len() == 1).then(|| &ports[0]))
        .map(|(_, p)| *p)
}

/// An endpoint at `ip`, described by its pod when one is known (by `targetRef`, else
/// by IP in the Service's namespace), else bare: no labels, no identity, no mTLS.
fn address_endpoint(
    svc: &Service,
    index: &Index<'_>,
    ip: &str,
    target: Option<&core::ObjectReference>,
    port: u32,
    healthy: bool,
) -> Endpoint {
    let by_ref = target
        .filter(|t| t.kind.as_deref().is_none_or(|k| k == "Pod"))
        .and_then(|t| {
            let ns = t.namespace.as_deref().unwrap_or(&svc.namespace);
            index.pod(ns, t.name.as_deref()?)
        });
    match by_ref.or_else(|| index.pod_by_ip(&svc.namespace, ip)) {
        Some(pod) => pod.endpoint(ip, port, healthy),
        None => Endpoint {
            address: ip.to_string(),
            port,
            labels: BTreeMap::new(),
            namespace: svc.namespace.clone(),
            service_account: String::new(),
            workload_name: target.and_then(|t| t.name.clone()).unwrap_or_default(),
            locality: String::new(),
            weight: 1,
            mesh_tls: false,
            healthy,
        },
    }
}

fn from_slice(
    ks: &KubeService,
    slice: &EndpointSlice,
    index: &Index<'_>,
    out: &mut BTreeMap<u32, Vec<Endpoint>>,
) {
    if slice.address_type == "FQDN" {
        return;
    }
    let svc = &ks.service;
    let ports: Vec<(String, u32)> = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some((
                p.name.clone().unwrap_or_default(),
                u32::try_from(p.port?).ok()?,
            ))
        })
        .collect();
    for e in &slice.endpoints {
        let Some(ip) = e.addresses.first() else {
            continue;
        };
        let healthy = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
        for sp in &svc.ports {
            if let Some(port) = match_port(svc, sp, &ports) {
                let ep = address_endpoint(svc, index, ip, e.target_ref.as_ref(), port, healthy);
                out.entry(sp.port).or_default().push(ep);
            }
        }
    }
}

fn from_endpoints(
    ks: &KubeService,
    eps: &core::Endpoints,
    index: &Index<'_>,
    out: &mut BTreeMap<u32, Vec<Endpoint>>,
) {
    let svc = &ks.service;
    for subset in eps.subsets.iter().flatten() {
        let ports: Vec<(String, u32)> = subset
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.name.clone().unwrap_or_default(),
                    u32::try_from(p.port).ok()?,
                ))
            })
            .collect();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| (a, false));
        for (addr, healthy) in ready.chain(not_ready) {
            for sp in &svc.ports {
                if let Some(port) = match_port(svc, sp, &ports) {
                    let ep = address_endpoint(
                        svc,
                        index,
                        &addr.ip,
                        addr.target_ref.as_ref(),
                        port,
                        healthy,
                    );
                    out.entry(sp.port).or_default().push(ep);
                }
            }
        }
    }
}

fn from_pods(ks: &KubeService, index: &Index<'_>, out: &mut BTreeMap<u32, Vec<Endpoint>>) {
    let svc = &ks.service;
    for pod in index.selected_pods(&svc.namespace, &svc.selector) {
        let Some(ip) = pod.ips.first() else { continue };
        for (sp, target) in svc.ports.iter().zip(&ks.target_ports) {
            let port = match target {
                None => Some(sp.port),
                Some(IntOrString::Int(n)) => u32::try_from(*n).ok().filter(|n| *n > 0),
                Some(IntOrString::String(name)) => pod.container_port(name),
            };
            // A named targetPort the pod does not declare: Kubernetes leaves the pod
            // out of that port's endpoints, and so does Mizzen.
            if let Some(port) = port {
                let healthy = pod.ready || ks.publish_not_ready;
                out.entry(sp.port)
                    .or_default()
                    .push(pod.endpoint(ip, port, healthy));
            }
        }
    }
}

fn from_workload_entries(
    ks: &KubeService,
    index: &Index<'_>,
    out: &mut BTreeMap<u32, Vec<Endpoint>>,
) {
    let svc = &ks.service;
    for (r, we) in index.selected_workload_entries(&svc.namespace, &svc.selector) {
        for (sp, target) in svc.ports.iter().zip(&ks.target_ports) {
            let fallback = match target {
                Some(IntOrString::Int(n)) => {
                    u32::try_from(*n).ok().filter(|n| *n > 0).unwrap_or(sp.port)
                }
                _ => sp.port,
            };
            let port = we
                .ports
                .get(&sp.name)
                .copied()
                .filter(|p| *p > 0)
                .unwrap_or(fallback);
            if let Some(ep) = service_entry::workload_entry_endpoint(r, we, port) {
                out.entry(sp.port).or_default().push(ep);
            }
        }
    }
}
