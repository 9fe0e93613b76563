//! `ServiceEntry` and `WorkloadEntry`, the way Istio's ServiceEntry registry
//! (`pilot/pkg/serviceregistry/serviceentry`) reads them.
//!
//! Each host of a ServiceEntry becomes a [`Service`] (resolution NONE → passthrough,
//! STATIC → client-side load balancing, DNS → DNS, DNS_ROUND_ROBIN → DNS round
//! robin; DYNAMIC_DNS, which Mizzen does not implement, is treated as DNS). Its
//! endpoints are, in this order of precedence:
//! 1. with a `workloadSelector`: the WorkloadEntries and Pods of the ServiceEntry's
//!    namespace whose labels match;
//! 2. the inline `endpoints`;
//! 3. for DNS resolutions without either, the host itself (the proxy resolves it).
//!
//! An endpoint's port is, as in Istio: the endpoint's `ports` entry named like the
//! service port, else the port's `targetPort`, else the service port number (for
//! pods: the container port of that name first). A `unix://` address keeps its
//! prefix and gets port 0.
//!
//! mTLS: an inline endpoint speaks mTLS when its `security.istio.io/tlsMode` label
//! says `istio`, or, without the label, when it names a service account (Istio's
//! rule). A WorkloadEntry is a declared mesh workload: it speaks mTLS unless its
//! label says `disabled` (Mizzen's local-mode default; Istio requires the label or
//! a service account).

use std::collections::BTreeMap;

use common::istio::networking::{
    Location, Port, Resolution as SeResolution, ServiceEntrySpec, WorkloadEntrySpec,
};
use common::resource::Resource;

use super::kube::PodInfo;
use super::{Index, TLS_MODE_LABEL, namespace, normalise};
use crate::model::{Endpoint, Protocol, Resolution, Service, ServicePort, ServiceSource};

/// Address prefix of Unix domain socket endpoints.
pub const UNIX_PREFIX: &str = "unix://";

/// The model's resolution for a ServiceEntry's.
pub fn resolution(r: Option<SeResolution>) -> Resolution {
    match r.unwrap_or_default() {
        SeResolution::None => Resolution::Passthrough,
        SeResolution::Static => Resolution::ClientSideLb,
        SeResolution::Dns | SeResolution::DynamicDns => Resolution::Dns,
        SeResolution::DnsRoundRobin => Resolution::DnsRoundRobin,
    }
}

/// The protocol of a ServiceEntry port: its `protocol`, else its name's prefix.
pub fn port_protocol(p: &Port) -> crate::model::Protocol {
    if p.protocol.is_empty() {
        Protocol::from_name(&p.name)
    } else {
        Protocol::from_name(&p.protocol)
    }
}

/// One [`Service`] per host of the ServiceEntry `r`. Addresses are IPs or CIDRs as
/// written, a host-length CIDR (`/32`, `/128`) written as its IP.
pub fn services(r: &Resource, spec: &ServiceEntrySpec) -> Vec<Service> {
    let ns = namespace(r).to_string();
    let ports: Vec<ServicePort> = spec
        .ports
        .iter()
        .filter(|p| p.number > 0)
        .map(|p| ServicePort {
            name: p.name.clone(),
            port: p.number,
            protocol: port_protocol(p),
        })
        .collect();
    let addresses: Vec<String> = spec
        .addresses
        .iter()
        .map(|a| normalise_address(a))
        .collect();
    let selector = spec
        .workload_selector
        .as_ref()
        .map(|s| s.labels.clone())
        .unwrap_or_default();
    spec.hosts
        .iter()
        .map(|host| Service {
            hostname: host.clone(),
            namespace: ns.clone(),
            name: r.name().to_string(),
            ports: ports.clone(),
            addresses: addresses.clone(),
            selector: selector.clone(),
            resolution: resolution(spec.resolution),
            mesh_external: spec.location.unwrap_or_default() == Location::MeshExternal,
            export_to: spec.export_to.clone(),
            source: ServiceSource::ServiceEntry(format!("{}.{ns}", r.name())),
        })
        .collect()
}

fn normalise_address(a: &str) -> String {
    match a.split_once('/') {
        Some((ip, bits)) => match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) if bits == "32" => ip.to_string(),
            Ok(std::net::IpAddr::V6(_)) if bits == "128" => ip.to_string(),
            _ => a.to_string(),
        },
        None => a.to_string(),
    }
}

/// The endpoints of `svc` (one host of the ServiceEntry `r`) by service port; every
/// port has an entry, possibly empty.
pub fn endpoints(
    svc: &Service,
    r: &Resource,
    spec: &ServiceEntrySpec,
    index: &Index<'_>,
) -> BTreeMap<u32, Vec<Endpoint>> {
    let ns = namespace(r);
    let mut out: BTreeMap<u32, Vec<Endpoint>> =
        svc.ports.iter().map(|p| (p.port, Vec::new())).collect();
    let se_ports = spec.ports.iter().filter(|p| p.number > 0);

    if let Some(selector) = spec.workload_selector.as_ref().map(|s| &s.labels) {
        for (we_r, we) in index.selected_workload_entries(ns, selector) {
            for p in se_ports.clone() {
                if let Some(ep) = workload_entry_endpoint(we_r, we, instance_port(&we.ports, p)) {
                    out.entry(p.number).or_default().push(ep);
                }
            }
        }
        for pod in index.selected_pods(ns, selector) {
            let Some(ip) = pod.ips.first() else { continue };
            for p in se_ports.clone() {
                let port = pod_port(pod, p);
                out.entry(p.number)
                    .or_default()
                    .push(pod.endpoint(ip, port, pod.ready));
            }
        }
    } else if !spec.endpoints.is_empty() {
        for e in &spec.endpoints {
            for p in se_ports.clone() {
                if let Some(ep) = inline_endpoint(ns, e, p) {
                    out.entry(p.number).or_default().push(ep);
                }
            }
        }
    } else if matches!(svc.resolution, Resolution::Dns | Resolution::DnsRoundRobin)
        && !svc.hostname.starts_with('*')
    {
        for p in se_ports {
            out.entry(p.number).or_default().push(Endpoint {
                address: svc.hostname.clone(),
                port: p.target_port.filter(|t| *t > 0).unwrap_or(p.number),
                labels: BTreeMap::new(),
                namespace: ns.to_string(),
                service_account: String::new(),
                workload_name: String::new(),
                locality: String::new(),
                weight: 1,
                mesh_tls: false,
                healthy: true,
            });
        }
    }
    normalise(&mut out);
    out
}

/// Istio's endpoint port priority: the endpoint's named port, the service port's
/// `targetPort`, the service port number.
fn instance_port(ports: &BTreeMap<String, u32>, p: &Port) -> u32 {
    ports
        .get(&p.name)
        .copied()
        .filter(|n| *n > 0)
        .or(p.target_port.filter(|t| *t > 0))
        .unwrap_or(p.number)
}

fn pod_port(pod: &PodInfo, p: &Port) -> u32 {
    pod.container_port(&p.name)
        .filter(|n| *n > 0)
        .or(p.target_port.filter(|t| *t > 0))
        .unwrap_or(p.number)
}

/// `(address, port)` of a WorkloadEntry spec for `port`, handling `unix://`.
fn address_and_port(we: &WorkloadEntrySpec, port: u32) -> Option<(String, u32)> {
    let address = we.address.as_deref().filter(|a| !a.is_empty())?;
    if address.starts_with(UNIX_PREFIX) {
        return Some((address.to_string(), 0));
    }
    Some((address.to_string(), port))
}

fn weight(we: &WorkloadEntrySpec) -> u32 {
    we.weight.filter(|w| *w > 0).unwrap_or(1)
}

/// An inline ServiceEntry endpoint (Istio's mTLS rule: the label, else a service
/// account means a sidecar).
fn inline_endpoint(ns: &str, e: &WorkloadEntrySpec, p: &Port) -> Option<Endpoint> {
    let (address, port) = address_and_port(e, instance_port(&e.ports, p))?;
    let mesh_tls = match e.labels.get(TLS_MODE_LABEL) {
        Some(mode) => mode == "istio",
        None => e.service_account.as_deref().is_some_and(|s| !s.is_empty()),
    };
    Some(Endpoint {
        address,
        port,
        labels: e.labels.clone(),
        namespace: ns.to_string(),
        service_account: e.service_account.clone().unwrap_or_default(),
        workload_name: String::new(),
        locality: e.locality.clone().unwrap_or_default(),
        weight: weight(e),
        mesh_tls,
        healthy: true,
    })
}

/// The WorkloadEntry `r` as an endpoint on `port` (already mapped through its
/// `ports`); `None` without an address. mTLS unless labelled `disabled`.
pub fn workload_entry_endpoint(
    r: &Resource,
    we: &WorkloadEntrySpec,
    port: u32,
) -> Option<Endpoint> {
    let (address, port) = address_and_port(we, port)?;
    Some(Endpoint {
        address,
        port,
        labels: we.labels.clone(),
        namespace: namespace(r).to_string(),
        service_account: we.service_account.clone().unwrap_or_default(),
        workload_name: r.name().to_string(),
        locality: we.locality.clone().unwrap_or_default(),
        weight: weight(we),
        mesh_tls: we
            .labels
            .get(TLS_MODE_LABEL)
            .is_none_or(|m| m != "disabled"),
        healthy: true,
    })
}
