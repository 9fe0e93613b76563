//! What one proxy sees of the mesh: the `Sidecar` resource that applies to it
//! (egress host scoping, ingress listeners, outbound traffic policy), the
//! services and VirtualServices visible to it (`exportTo`), the VirtualServices
//! bound to `mesh` or to a gateway, and the inbound ports of its workload.
//! Clusters, listeners and routes all read the mesh through one [`Scope`], so
//! the three always agree on what exists.

use std::collections::BTreeSet;
use std::sync::Arc;

use common::host;
use common::istio::networking::{
    CaptureMode, OutboundTrafficMode, SidecarSpec, VirtualServiceSpec,
};
use common::resource::Resource;

use super::util::labels_match;
use crate::model::{Protocol, Service, Snapshot, fqdn};
use crate::proxy::{Interception, Proxy, ProxyKind};

/// Istio's config root namespace (meshConfig `rootNamespace`): a Sidecar here
/// without a selector applies to namespaces that have none of their own, and
/// DestinationRules here apply mesh-wide.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// The implicit gateway of every sidecar (`gateways: [mesh]`).
pub const MESH_GATEWAY: &str = "mesh";

/// A resource's namespace (`default` when unset, as the config loader reads it).
pub fn namespace(r: &Resource) -> &str {
    r.namespace_or("default")
}

/// Whether a resource of `owner_ns` with `export_to` is visible from `viewer_ns`
/// (`*`, `.`, `~` and namespace names; empty means everywhere, Istio's default).
pub fn exported_to(export_to: &[String], owner_ns: &str, viewer_ns: &str) -> bool {
    export_to.is_empty()
        || export_to.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => owner_ns == viewer_ns,
            "~" => false,
            ns => ns == viewer_ns,
        })
}

/// A VirtualService's gateway reference in Istio's normal form: `mesh` or
/// `namespace/name` (a bare name is relative to the VirtualService's namespace;
/// `name.namespace.svc.cluster.local` is accepted too).
pub fn normalize_gateway(reference: &str, vs_namespace: &str) -> String {
    if reference == MESH_GATEWAY || reference.contains('/') {
        return reference.to_string();
    }
    if let Some(rest) = reference.strip_suffix(".svc.cluster.local")
        && let Some((name, ns)) = rest.split_once('.')
    {
        return format!("{ns}/{name}");
    }
    format!("{vs_namespace}/{reference}")
}

/// The gateways a VirtualService is bound to, normalized; `[mesh]` when unset.
pub fn vs_gateways(vs: &VirtualServiceSpec, vs_namespace: &str) -> Vec<String> {
    if vs.gateways.is_empty() {
        return vec![MESH_GATEWAY.to_string()];
    }
    vs.gateways
        .iter()
        .map(|g| normalize_gateway(g, vs_namespace))
        .collect()
}

/// Where an inbound port's traffic is delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundEndpoint {
    /// An IP and port (`127.0.0.1:9080` for the application).
    Socket(String, u32),
    /// A Unix domain socket path (`unix:///var/run/app.sock`).
    Unix(String),
}

/// One port the workload receives traffic on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundPort {
    /// The port traffic arrives on (the service's `targetPort`); the inbound
    /// cluster is `inbound|PORT||` and the inbound chain matches it.
    pub port: u32,
    /// How the traffic is understood.
    pub protocol: Protocol,
    /// Where the application listens.
    pub endpoint: InboundEndpoint,
    /// The address of a listener of its own, bound to the port, when the
    /// traffic is not captured (the ingress listener's `captureMode: NONE`,
    /// or the proxy's `INTERCEPTION_MODE: NONE`); `None`: a chain of
    /// virtualInbound.
    pub bind: Option<String>,
}

/// One egress listener of the proxy, as Istio lays out a Sidecar's `egress`
/// (or the implicit one when there is none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressListener {
    /// The listener's port and protocol; `None` for the catch-all listener,
    /// which gets a listener per port of the services it exposes.
    pub port: Option<(u32, Protocol)>,
    /// The address it listens on: the listener's `bind`, else `127.0.0.1`
    /// when it binds to its port, else `0.0.0.0`.
    pub bind: String,
    /// Whether the listener binds to its port (`captureMode: NONE`, or
    /// `DEFAULT` on a proxy that captures nothing) rather than taking
    /// captured traffic.
    pub bind_to_port: bool,
    /// Its hosts as `(namespace or *, host)`; `None`: everything visible.
    pub hosts: Option<Vec<(String, String)>>,
}

impl EgressListener {
    /// The listener's name: `BIND_PORT`.
    pub fn name(&self, port: u32) -> String {
        format!("{}_{port}", self.bind)
    }

    /// The RDS name of its HTTP routes on `port`: the port number when it
    /// listens on the wildcard address, else `BIND:PORT` (Istio's names).
    pub fn route_name(&self, port: u32) -> String {
        if is_wildcard(&self.bind) {
            port.to_string()
        } else {
            format!("{}:{port}", self.bind)
        }
    }
}

/// `0.0.0.0` or `::`.
pub fn is_wildcard(bind: &str) -> bool {
    bind == "0.0.0.0" || bind == "::"
}

/// Whether a listener with `mode` binds to its port on `proxy`: `NONE` does,
/// `IPTABLES` does not, `DEFAULT` follows the proxy's interception mode.
pub fn binds_to_port(mode: Option<CaptureMode>, proxy: &Proxy) -> bool {
    match mode.unwrap_or_default() {
        CaptureMode::Default => proxy.interception == Interception::None,
        CaptureMode::Iptables => false,
        CaptureMode::None => true,
    }
}

/// The mesh as one proxy sees it.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// The snapshot being read.
    pub snapshot: &'a Snapshot,
    /// The proxy being served.
    pub proxy: &'a Proxy,
    sidecar: Option<(&'a Resource, &'a SidecarSpec)>,
    /// Egress hosts of the Sidecar as `(namespace or *, host)`; `None` when no
    /// Sidecar (or one without egress) applies: everything is visible.
    egress: Option<Vec<(String, String)>>,
}

impl<'a> Scope<'a> {
    /// The scope of `proxy` in `snapshot`.
    pub fn new(snapshot: &'a Snapshot, proxy: &'a Proxy) -> Self {
        let sidecar = match proxy.kind {
            ProxyKind::Sidecar => select_sidecar(snapshot, proxy),
            ProxyKind::Router => None,
        };
        let egress = sidecar
            .map(|(_, s)| s)
            .filter(|s| !s.egress.is_empty())
            .map(|s| parse_egress(s, &proxy.namespace));
        Scope {
            snapshot,
            proxy,
            sidecar,
            egress,
        }
    }

    /// The Sidecar resource that applies to the proxy, if any.
    pub fn sidecar(&self) -> Option<&'a SidecarSpec> {
        self.sidecar.map(|(_, s)| s)
    }

    /// The proxy's egress listeners in the Sidecar's order, the catch-all
    /// (port-less) one last; one catch-all exposing everything when no
    /// Sidecar (or one without egress) applies. The catch-all exposes every
    /// host of every egress listener (Istio: only its own, on ports no
    /// listener with a port takes).
    pub fn egress_listeners(&self) -> Vec<EgressListener> {
        let none = |bind: &Option<String>, mode: Option<CaptureMode>| {
            let bind_to_port = binds_to_port(mode, self.proxy);
            let bind = bind
                .clone()
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| if bind_to_port { "127.0.0.1" } else { "0.0.0.0" }.to_string());
            (bind, bind_to_port)
        };
        let Some(sidecar) = self.sidecar().filter(|s| !s.egress.is_empty()) else {
            let (bind, bind_to_port) = none(&None, None);
            return vec![EgressListener {
                port: None,
                bind,
                bind_to_port,
                hosts: None,
            }];
        };
        let mut out = Vec::new();
        let mut catch_all = None;
        for listener in &sidecar.egress {
            let (bind, bind_to_port) = none(&listener.bind, listener.capture_mode);
            let port = listener
                .port
                .as_ref()
                .filter(|p| p.number > 0)
                .map(|p| (p.number, Protocol::from_name(&p.protocol)));
            if port.is_none() {
                catch_all.get_or_insert(EgressListener {
                    port: None,
                    bind,
                    bind_to_port,
                    hosts: self.egress.clone(),
                });
                continue;
            }
            let hosts = parse_egress_hosts(&listener.hosts, &self.proxy.namespace);
            out.push(EgressListener {
                port,
                bind,
                bind_to_port,
                hosts: Some(hosts),
            });
        }
        out.extend(catch_all);
        out
    }

    /// The same proxy seeing only what `listener` exposes.
    pub fn through(&self, listener: &EgressListener) -> Scope<'a> {
        Scope {
            egress: listener.hosts.clone(),
            ..self.clone()
        }
    }

    /// Whether a host defined in `ns` passes the Sidecar's egress hosts.
    pub fn egress_allows(&self, ns: &str, hostname: &str) -> bool {
        match &self.egress {
            None => true,
            Some(hosts) => hosts.iter().any(|(ens, eh)| {
                (ens == "*" || ens == ns) && (eh == "*" || host::overlap(hostname, eh))
            }),
        }
    }

    /// Whether the proxy may reach `svc` (exportTo and Sidecar egress).
    pub fn service_visible(&self, svc: &Service) -> bool {
        exported_to(&svc.export_to, &svc.namespace, &self.proxy.namespace)
            && self.egress_allows(&svc.namespace, &svc.hostname)
    }

    /// The services the proxy may reach, by host name.
    pub fn services(&self) -> impl Iterator<Item = &'a Arc<Service>> + '_ {
        self.snapshot
            .services
            .values()
            .filter(move |s| self.service_visible(s))
    }

    /// REGISTRY_ONLY or ALLOW_ANY: the Sidecar's `outboundTrafficPolicy`, else
    /// meshConfig's default (ALLOW_ANY).
    pub fn outbound_mode(&self) -> OutboundTrafficMode {
        self.sidecar()
            .and_then(|s| s.outbound_traffic_policy.as_ref())
            .and_then(|p| p.mode)
            .unwrap_or(OutboundTrafficMode::AllowAny)
    }

    /// VirtualServices that apply to this sidecar: bound to `mesh`, exported to
    /// its namespace, and with a host its Sidecar egress allows. Config order.
    pub fn mesh_virtual_services(&self) -> Vec<(&'a Resource, &'a VirtualServiceSpec)> {
        self.snapshot
            .virtual_services()
            .filter(|(r, vs)| {
                let ns = namespace(r);
                !vs.hosts.is_empty()
                    && vs_gateways(vs, ns).iter().any(|g| g == MESH_GATEWAY)
                    && exported_to(&vs.export_to, ns, &self.proxy.namespace)
                    && vs
                        .hosts
                        .iter()
                        .any(|h| self.egress_allows(ns, &fqdn(h, ns)))
            })
            .collect()
    }

    /// VirtualServices bound to gateway `gateway` (`namespace/name`) and
    /// exported to the gateway proxy's namespace. Config order.
    pub fn gateway_virtual_services(
        &self,
        gateway: &str,
    ) -> Vec<(&'a Resource, &'a VirtualServiceSpec)> {
        self.snapshot
            .virtual_services()
            .filter(|(r, vs)| {
                let ns = namespace(r);
                !vs.hosts.is_empty()
                    && vs_gateways(vs, ns).iter().any(|g| g == gateway)
                    && exported_to(&vs.export_to, ns, &self.proxy.namespace)
            })
            .collect()
    }

    /// The ports the workload receives traffic on: the Sidecar's `ingress`
    /// listeners when it has any, else every port of every service in the
    /// proxy's namespace whose selector matches the proxy's labels.
    pub fn inbound_ports(&self) -> Vec<InboundPort> {
        if self.proxy.kind != ProxyKind::Sidecar {
            return Vec::new();
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        if let Some(sidecar) = self.sidecar().filter(|s| !s.ingress.is_empty()) {
            for ingress in &sidecar.ingress {
                let port = ingress.port.number;
                if port == 0 || !seen.insert(port) {
                    continue;
                }
                let endpoint = ingress
                    .default_endpoint
                    .as_deref()
                    .and_then(|e| parse_default_endpoint(e, self.proxy))
                    .unwrap_or_else(|| InboundEndpoint::Socket("127.0.0.1".into(), port));
                let bind = binds_to_port(ingress.capture_mode, self.proxy).then(|| {
                    ingress
                        .bind
                        .clone()
                        .filter(|b| !b.is_empty())
                        .unwrap_or_else(|| "0.0.0.0".into())
                });
                out.push(InboundPort {
                    port,
                    protocol: Protocol::from_name(&ingress.port.protocol),
                    endpoint,
                    bind,
                });
            }
            return out;
        }
        // Without capture, the workload's own ports are its app's: listeners
        // come only from a Sidecar's ingress (Istio).
        if self.proxy.interception == Interception::None {
            return out;
        }
        for svc in self.selecting_services() {
            for p in &svc.ports {
                let target = self.target_port(svc, p.port).unwrap_or(p.port);
                if !seen.insert(target) {
                    continue;
                }
                out.push(InboundPort {
                    port: target,
                    protocol: p.protocol,
                    endpoint: InboundEndpoint::Socket("127.0.0.1".into(), target),
                    bind: None,
                });
            }
        }
        out
    }

    /// Services in the proxy's namespace whose (non-empty) selector matches it.
    pub fn selecting_services(&self) -> impl Iterator<Item = &'a Arc<Service>> + '_ {
        self.snapshot.services.values().filter(move |s| {
            s.namespace == self.proxy.namespace
                && !s.selector.is_empty()
                && labels_match(&s.selector, &self.proxy.labels)
        })
    }

    /// The port this proxy's own endpoint of `svc:port` listens on: the
    /// endpoint at one of the proxy's IPs, else the one named after its pod.
    fn target_port(&self, svc: &Service, port: u32) -> Option<u32> {
        let eps = self.snapshot.endpoints_of(&svc.hostname, port);
        eps.iter()
            .find(|e| e.ip().is_some_and(|ip| self.proxy.ips.contains(&ip)))
            .or_else(|| {
                eps.iter().find(|e| {
                    !self.proxy.pod_name.is_empty() && e.workload_name == self.proxy.pod_name
                })
            })
            .map(|e| e.port)
    }
}

/// The Sidecar for a proxy, as Istio picks it: one in the proxy's namespace
/// whose selector matches, else one there without a selector, else the root
/// namespace's one without a selector.
fn select_sidecar<'a>(
    snapshot: &'a Snapshot,
    proxy: &Proxy,
) -> Option<(&'a Resource, &'a SidecarSpec)> {
    let no_selector = |s: &SidecarSpec| {
        s.workload_selector
            .as_ref()
            .is_none_or(|w| w.labels.is_empty())
    };
    let in_ns: Vec<_> = snapshot
        .sidecars()
        .filter(|(r, _)| namespace(r) == proxy.namespace)
        .collect();
    in_ns
        .iter()
        .find(|(_, s)| {
            s.workload_selector
                .as_ref()
                .is_some_and(|w| !w.labels.is_empty() && labels_match(&w.labels, &proxy.labels))
        })
        .or_else(|| in_ns.iter().find(|(_, s)| no_selector(s)))
        .copied()
        .or_else(|| {
            snapshot
                .sidecars()
                .find(|(r, s)| namespace(r) == ROOT_NAMESPACE && no_selector(s))
        })
}

/// `ns/host` egress entries; `.` is the proxy's namespace (also for the root
/// namespace's Sidecar, as Istio applies it), `~` hides everything.
fn parse_egress(sidecar: &SidecarSpec, proxy_ns: &str) -> Vec<(String, String)> {
    sidecar
        .egress
        .iter()
        .flat_map(|listener| parse_egress_hosts(&listener.hosts, proxy_ns))
        .collect()
}

/// One egress listener's hosts, as [`parse_egress`] reads them.
fn parse_egress_hosts(hosts: &[String], proxy_ns: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for h in hosts {
        let (ns, host) = h.split_once('/').unwrap_or(("*", h.as_str()));
        if ns == "~" {
            continue;
        }
        let ns = if ns == "." { proxy_ns } else { ns };
        out.push((ns.to_string(), host.to_string()));
    }
    out
}

/// A Sidecar ingress `defaultEndpoint`: `127.0.0.1:PORT`, `[::1]:PORT`,
/// `0.0.0.0:PORT` / `[::]:PORT` (the workload's own IP) or `unix:///path`.
fn parse_default_endpoint(e: &str, proxy: &Proxy) -> Option<InboundEndpoint> {
    if let Some(path) = e.strip_prefix("unix://") {
        return Some(InboundEndpoint::Unix(path.to_string()));
    }
    let (ip, port) = e.rsplit_once(':')?;
    let port: u32 = port.parse().ok()?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip = match ip {
        "0.0.0.0" => proxy
            .ips
            .iter()
            .find(|i| i.is_ipv4())
            .map(|i| i.to_string())
            .unwrap_or_else(|| "127.0.0.1".into()),
        "::" => proxy
            .ips
            .iter()
            .find(|i| i.is_ipv6())
            .map(|i| i.to_string())
            .unwrap_or_else(|| "::1".into()),
        other if other.parse::<std::net::IpAddr>().is_ok() => other.to_string(),
        _ => "127.0.0.1".to_string(),
    };
    Some(InboundEndpoint::Socket(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_to_rules() {
        assert!(exported_to(&[], "a", "b"));
        assert!(exported_to(&[".".into()], "a", "a"));
        assert!(!exported_to(&[".".into()], "a", "b"));
        assert!(exported_to(&["*".into()], "a", "b"));
        assert!(!exported_to(&["~".into()], "a", "a"));
        assert!(exported_to(&["b".into()], "a", "b"));
    }

    #[test]
    fn gateway_references_normalize() {
        assert_eq!(normalize_gateway("mesh", "default"), "mesh");
        assert_eq!(normalize_gateway("gw", "default"), "default/gw");
        assert_eq!(
            normalize_gateway("istio-system/gw", "default"),
            "istio-system/gw"
        );
        assert_eq!(
            normalize_gateway("gw.istio-system.svc.cluster.local", "default"),
            "istio-system/gw"
        );
    }
}
