//! The service registry as the analyzers see it, and the checks on services.
//!
//! [`ServiceIndex`] collects the services a configuration can route to: Kubernetes
//! `Service` objects (host `name.namespace.svc.cluster.local`) and every host of
//! every `ServiceEntry`. [`ServiceIndex::lookup`] resolves a host the way Istio's
//! analyzers do: short names relative to the referring namespace, FQDNs as they
//! are, wildcard ServiceEntry hosts by suffix, and only services exported to the
//! referring namespace.
//!
//! The module also holds the helpers the other analyzers share (host naming and
//! matching, selector formatting, mesh settings) and two analyzers of its own:
//! Service port names (IST0118) and ServiceEntry addresses (IST0134).

use std::collections::{BTreeMap, HashMap};

use common::istio::install::MeshConfig;
use common::istio::networking::{Location, Resolution};
use common::path::Path;
use common::resource::{Body, Resource, Spec, split_api_version};
use serde_json::Value;

use super::{Analyzer, Report, Snapshot, Workload, string_map};
use crate::message::codes;

/// The cluster's DNS suffix for Kubernetes services.
pub(super) const DOMAIN_SUFFIX: &str = "svc.cluster.local";
/// Istio's default root namespace (mesh-wide policies live there).
pub(super) const ROOT_NAMESPACE: &str = "istio-system";
/// The annotation that limits where a Kubernetes Service is visible.
const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name (`""` when unnamed).
    pub name: String,
    /// The service port number.
    pub port: u32,
    /// Kubernetes: `TCP`, `UDP` or `SCTP` (`TCP` when unset). ServiceEntry: Istio's
    /// protocol (`HTTP`, `TCP`, …; `""` when unset).
    pub protocol: String,
    /// Kubernetes `appProtocol`, when set.
    pub app_protocol: Option<String>,
    /// The target port as written (a number or a container port name), when set.
    pub target_port: Option<String>,
}

/// One service host known to the mesh.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceInfo {
    /// The host: `name.ns.svc.cluster.local` for Kubernetes, the ServiceEntry host
    /// as written (possibly a wildcard such as `*.example.com`) otherwise.
    pub host: String,
    /// Name of the declaring resource.
    pub name: String,
    /// Namespace of the declaring resource.
    pub namespace: String,
    /// Kind of the declaring resource: `Service` or `ServiceEntry`.
    pub kind: &'static str,
    /// The ports.
    pub ports: Vec<ServicePort>,
    /// Labels of the workloads behind it: the Service's `selector`, or the
    /// ServiceEntry's `workloadSelector.labels`.
    pub selector: BTreeMap<String, String>,
    /// Kubernetes `spec.type` (`ClusterIP` when unset); `None` for ServiceEntries.
    pub service_type: Option<String>,
    /// ServiceEntry `location`.
    pub location: Option<Location>,
    /// ServiceEntry `resolution`.
    pub resolution: Option<Resolution>,
    /// ServiceEntry `addresses`.
    pub addresses: Vec<String>,
    /// Namespaces the service is visible in (`exportTo`, or the Service's
    /// `networking.istio.io/exportTo` annotation); empty means everywhere.
    pub export_to: Vec<String>,
}

impl ServiceInfo {
    /// Whether a resource in namespace `ns` can see this service.
    pub fn visible_from(&self, ns: &str) -> bool {
        self.export_to.is_empty()
            || self
                .export_to
                .iter()
                .any(|e| e == "*" || e == ns || (e == "." && self.namespace == ns))
    }

    /// Whether it is a Kubernetes Service (not a ServiceEntry host).
    pub fn is_kubernetes(&self) -> bool {
        self.kind == "Service"
    }

    /// Whether the host is a wildcard (`*.example.com`, `*`).
    pub fn is_wildcard(&self) -> bool {
        self.host.starts_with('*')
    }

    /// The port numbers, in declaration order.
    pub fn port_numbers(&self) -> Vec<u32> {
        self.ports.iter().map(|p| p.port).collect()
    }
}

/// The services known from Kubernetes Services and ServiceEntries.
#[derive(Debug, Clone, Default)]
pub struct ServiceIndex {
    services: Vec<ServiceInfo>,
    /// Host → indexes into `services`, in input order.
    by_host: HashMap<String, Vec<usize>>,
    /// Indexes of the wildcard hosts.
    wildcards: Vec<usize>,
}

impl ServiceIndex {
    /// Indexes the Kubernetes Services and ServiceEntries among `resources`;
    /// `default_ns` is the namespace of resources that set none.
    pub fn build(resources: &[&Resource], default_ns: &str) -> ServiceIndex {
        let mut services = Vec::new();
        for r in resources {
            let ns = r.namespace_or(default_ns).to_string();
            match &r.body {
                Body::Kubernetes { object, .. }
                    if r.kind == "Service" && split_api_version(&r.api_version).0.is_empty() =>
                {
                    services.push(kubernetes_service(r, object, ns));
                }
                Body::Istio(Spec::ServiceEntry(se)) => {
                    let ports: Vec<ServicePort> = se
                        .ports
                        .iter()
                        .map(|p| ServicePort {
                            name: p.name.clone(),
                            port: p.number,
                            protocol: p.protocol.clone(),
                            app_protocol: None,
                            target_port: p.target_port.map(|t| t.to_string()),
                        })
                        .collect();
                    for host in &se.hosts {
                        services.push(ServiceInfo {
                            host: host.clone(),
                            name: r.name().to_string(),
                            namespace: ns.clone(),
                            kind: "ServiceEntry",
                            ports: ports.clone(),
                            selector: se
                                .workload_selector
                                .as_ref()
                                .map(|s| s.labels.clone())
                                .unwrap_or_default(),
                            service_type: None,
                            location: se.location,
                            resolution: se.resolution,
                            addresses: se.addresses.clone(),
                            export_to: se.export_to.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcards = Vec::new();
        for (i, s) in services.iter().enumerate() {
            by_host.entry(s.host.clone()).or_default().push(i);
            if s.is_wildcard() {
                wildcards.push(i);
            }
        }
        ServiceIndex {
            services,
            by_host,
            wildcards,
        }
    }

    /// Every service, in input order.
    pub fn all(&self) -> &[ServiceInfo] {
        &self.services
    }

    /// Whether no service is known at all.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The services whose host is exactly `fqdn` (several when declared twice).
    pub fn by_fqdn(&self, fqdn: &str) -> impl Iterator<Item = &ServiceInfo> + '_ {
        self.by_host
            .get(fqdn)
            .into_iter()
            .flatten()
            .map(|&i| &self.services[i])
    }

    /// Resolves `host` as referred to from namespace `from_ns`: `reviews` is
    /// `reviews.<from_ns>.svc.cluster.local`, `reviews.prod` is
    /// `reviews.prod.svc.cluster.local`, an FQDN is itself, and a host under a
    /// wildcard ServiceEntry host (`*.example.com`) matches that entry. Only
    /// services exported to `from_ns` are found.
    pub fn lookup(&self, host: &str, from_ns: &str) -> Option<&ServiceInfo> {
        for candidate in fqdn_candidates(host, from_ns) {
            let found = self.by_fqdn(&candidate).find(|s| s.visible_from(from_ns));
            if found.is_some() {
                return found;
            }
        }
        let bare = host.strip_prefix('*').unwrap_or(host);
        self.wildcards
            .iter()
            .map(|&i| &self.services[i])
            .find(|s| s.visible_from(from_ns) && bare.ends_with(&s.host[1..]))
    }

    /// Every service whose host overlaps `pattern` (an FQDN or a wildcard such as
    /// `*.svc.cluster.local`), whatever its visibility.
    pub fn overlapping<'s>(
        &'s self,
        pattern: &'s str,
    ) -> impl Iterator<Item = &'s ServiceInfo> + 's {
        self.services
            .iter()
            .filter(move |s| common::host::overlap(&s.host, pattern))
    }
}

/// A Kubernetes Service object as a [`ServiceInfo`].
fn kubernetes_service(r: &Resource, object: &Value, ns: String) -> ServiceInfo {
    let spec = object.get("spec");
    let ports = spec
        .and_then(|s| s.get("ports"))
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .map(|p| ServicePort {
                    name: str_at(p, "name").unwrap_or_default().to_string(),
                    port: p.get("port").and_then(Value::as_u64).unwrap_or(0) as u32,
                    protocol: str_at(p, "protocol").unwrap_or("TCP").to_string(),
                    app_protocol: str_at(p, "appProtocol").map(str::to_string),
                    target_port: p.get("targetPort").and_then(|t| match t {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    }),
                })
                .collect()
        })
        .unwrap_or_default();
    let export_to = r
        .meta
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
    ServiceInfo {
        host: format!("{}.{ns}.{DOMAIN_SUFFIX}", r.name()),
        name: r.name().to_string(),
        kind: "Service",
        ports,
        selector: string_map(spec.and_then(|s| s.get("selector"))),
        service_type: Some(
            spec.and_then(|s| str_at(s, "type"))
                .unwrap_or("ClusterIP")
                .to_string(),
        ),
        location: None,
        resolution: None,
        addresses: Vec::new(),
        export_to,
        namespace: ns,
    }
}

fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// The FQDNs `host` may stand for when written in namespace `ns`, most likely first.
fn fqdn_candidates(host: &str, ns: &str) -> Vec<String> {
    let mut out = vec![to_fqdn(host, ns)];
    // `name.namespace` is how people abbreviate a service of another namespace.
    if !host.starts_with('*') && host.matches('.').count() == 1 {
        out.push(format!("{host}.{DOMAIN_SUFFIX}"));
    }
    out
}

/// Istio's short-name expansion: a host without dots (and not a wildcard) becomes
/// `host.<ns>.svc.cluster.local`; anything else is already fully qualified.
pub(super) fn to_fqdn(host: &str, ns: &str) -> String {
    if host.starts_with('*') || host.contains('.') {
        host.to_string()
    } else {
        format!("{host}.{ns}.{DOMAIN_SUFFIX}")
    }
}

/// A label selector as Kubernetes prints it: `app=reviews,version=v1` (sorted).
pub(super) fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A list as Go's `%v` prints a slice: `[a b c]`.
pub(super) fn go_list<T: std::fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(" "))
}

/// Whether the input holds at least one workload in `ns`. Selector checks only run
/// for namespaces whose workloads were given: a config-only input (no Pods,
/// Deployments, …) says nothing about which labels exist, so reporting every
/// selector as matching nothing would be noise.
pub(super) fn has_workloads_in(workloads: &[Workload<'_>], ns: &str) -> bool {
    workloads.iter().any(|w| w.namespace == ns)
}

/// The mesh configuration given in the input: an `IstioOperator`'s
/// `spec.meshConfig`, or the `mesh` key of the `istio` ConfigMap.
pub(super) fn mesh_config(snap: &Snapshot<'_>) -> Option<MeshConfig> {
    for r in snap.all() {
        if let Some(Spec::IstioOperator(op)) = r.spec()
            && let Some(mc) = &op.mesh_config
        {
            return Some(mc.clone());
        }
    }
    for (r, cm) in snap.kube("", "ConfigMap") {
        if r.name() != "istio" {
            continue;
        }
        let Some(text) = cm.pointer("/data/mesh").and_then(Value::as_str) else {
            continue;
        };
        let Ok(docs) = common::yaml::parse_stream(text) else {
            continue;
        };
        if let Some(root) = docs.into_iter().next().and_then(|d| d.root)
            && let Ok(mc) = serde_json::from_value::<MeshConfig>(root.to_json())
        {
            return Some(mc);
        }
    }
    None
}

/// The mesh's root namespace (`meshConfig.rootNamespace`, `istio-system` by default).
pub(super) fn root_namespace(snap: &Snapshot<'_>) -> String {
    mesh_config(snap)
        .and_then(|mc| mc.root_namespace)
        .unwrap_or_else(|| ROOT_NAMESPACE.to_string())
}

pub(super) fn analyzers() -> Vec<Box<dyn Analyzer>> {
    vec![
        Box::new(PortNameAnalyzer),
        Box::new(ProtocolAddressesAnalyzer),
    ]
}

/// IST0118: Service ports whose name does not start with a protocol Istio knows
/// (`http`, `http-web`, `grpc-api`, …) and that set no `appProtocol`, so Istio has to
/// sniff the protocol. System namespaces and Istio's own services are skipped.
struct PortNameAnalyzer;

impl Analyzer for PortNameAnalyzer {
    fn name(&self) -> &'static str {
        "service.PortNameAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        for (r, svc) in snap.kube("", "Service") {
            if is_system_namespace(snap.ns(r)) || is_istio_control_plane(r) {
                continue;
            }
            let spec = svc.get("spec");
            let external_name = spec.and_then(|s| str_at(s, "type")) == Some("ExternalName");
            let Some(ports) = spec.and_then(|s| s.get("ports")).and_then(Value::as_array) else {
                continue;
            };
            for (i, p) in ports.iter().enumerate() {
                let name = str_at(p, "name").unwrap_or("");
                let number = p.get("port").and_then(Value::as_u64).unwrap_or(0);
                let protocol = str_at(p, "protocol").unwrap_or("TCP");
                let app_protocol = str_at(p, "appProtocol");
                // Istio reports ExternalName services with IST0150 instead.
                if external_name || known_protocol(number, name, protocol, app_protocol) {
                    continue;
                }
                let target = match p.get("targetPort") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => "0".to_string(),
                };
                report.add(
                    codes::PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
                    r,
                    Some(Path::root("spec").field("ports").index(i)),
                    format!(
                        "Port name {name} (port: {number}, targetPort: {target}) doesn't follow the naming convention of Istio port."
                    ),
                );
            }
        }
    }
}

/// Namespaces Istio's analyzers leave alone.
fn is_system_namespace(ns: &str) -> bool {
    matches!(
        ns,
        "kube-system" | "kube-public" | "kube-node-lease" | "local-path-storage"
    )
}

/// Istio's own services (istiod, gateways) carry an `istio` label or
/// `release: istio`.
fn is_istio_control_plane(r: &Resource) -> bool {
    r.meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("istio") || l.get("release").is_some_and(|v| v == "istio"))
}

/// Istio's `ConvertProtocol`: whether the port's protocol is known, from UDP, the
/// `appProtocol`, the name's prefix before `-`, or a well-known port number.
fn known_protocol(port: u64, name: &str, protocol: &str, app_protocol: Option<&str>) -> bool {
    if protocol.eq_ignore_ascii_case("UDP") {
        return true;
    }
    let name = match app_protocol {
        Some("kubernetes.io/h2c" | "kubernetes.io/ws" | "kubernetes.io/wss") => return true,
        Some(a) => a,
        None => name,
    };
    if name.len() >= 8 && name[..8].eq_ignore_ascii_case("grpc-web") {
        return true;
    }
    let prefix = name.split('-').next().unwrap_or("");
    const PROTOCOLS: &[&str] = &[
        "tcp",
        "udp",
        "grpc",
        "grpc-web",
        "http",
        "http_proxy",
        "http2",
        "https",
        "tls",
        "mongo",
        "redis",
        "mysql",
    ];
    PROTOCOLS.iter().any(|p| p.eq_ignore_ascii_case(prefix))
        || matches!(port, 25 | 53 | 3306 | 27017)
}

/// IST0134: a ServiceEntry with TCP (or unset-protocol) ports needs `addresses`,
/// since TCP traffic is matched by destination IP; unless the mesh allocates
/// addresses itself (DNS capture with auto allocation) or the entry's status
/// already carries allocated addresses.
struct ProtocolAddressesAnalyzer;

impl Analyzer for ProtocolAddressesAnalyzer {
    fn name(&self) -> &'static str {
        "serviceentry.Analyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        if auto_allocates_addresses(snap) {
            return;
        }
        for (r, se) in snap.service_entries() {
            let allocated = r
                .tree
                .to_json()
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if !se.addresses.is_empty() || allocated {
                continue;
            }
            for (i, p) in se.ports.iter().enumerate() {
                if p.protocol.is_empty() || p.protocol.eq_ignore_ascii_case("TCP") {
                    report.add(
                        codes::SERVICE_ENTRY_ADDRESSES_REQUIRED,
                        r,
                        Some(Path::root("spec").field("ports").index(i)),
                        "ServiceEntry addresses are required for this protocol.".to_string(),
                    );
                }
            }
        }
    }
}

/// Whether the mesh configuration turns on DNS capture with address auto-allocation.
fn auto_allocates_addresses(snap: &Snapshot<'_>) -> bool {
    let Some(mc) = mesh_config(snap) else {
        return false;
    };
    let Some(meta) = mc.default_config.as_ref().map(|c| &c.proxy_metadata) else {
        return false;
    };
    let on = |k: &str| meta.get(k).is_some_and(|v| v == "true");
    on("ISTIO_META_DNS_CAPTURE")
        && (on("ISTIO_META_DNS_AUTO_ALLOCATE") || on("PILOT_ENABLE_IP_AUTOALLOCATE"))
}

/// Helpers for the analyzers' unit tests.
#[cfg(test)]
pub(super) mod test_support {
    use common::resource::Resource;

    use crate::message::{Code, Message};

    /// Loads `yaml` (failing on any decode error) and runs every analyzer over it.
    pub(crate) fn analyze(yaml: &str) -> Vec<Message> {
        let resources = load(yaml);
        super::super::analyze(&resources, "default")
    }

    /// Loads `yaml`, failing the test on any decode error.
    pub(crate) fn load(yaml: &str) -> Vec<Resource> {
        let loaded = common::load::load_str(yaml, "test.yaml");
        assert!(
            loaded.errors.is_empty(),
            "decode errors: {:?}",
            loaded.errors
        );
        loaded.resources
    }

    /// The messages of `code` among all analyzers' output for `yaml`.
    pub(crate) fn messages(yaml: &str, code: Code) -> Vec<Message> {
        analyze(yaml)
            .into_iter()
            .filter(|m| m.code == code.code)
            .collect()
    }

    /// Asserts exactly one message of `code`, about `kind`/`name`, at `field`, with
    /// `text`, and returns it.
    pub(crate) fn expect_one(
        yaml: &str,
        code: Code,
        kind: &str,
        name: &str,
        field: Option<&str>,
        text: &str,
    ) -> Message {
        let found = messages(yaml, code);
        assert_eq!(found.len(), 1, "expected one {}: {found:#?}", code.code);
        let m = found.into_iter().next().unwrap();
        let r = m.resource.as_ref().expect("message names a resource");
        assert_eq!((r.kind.as_str(), r.name.as_str()), (kind, name));
        assert_eq!(m.field.as_deref(), field);
        assert_eq!(m.text, text);
        assert_eq!(m.level, code.level);
        m
    }

    /// Asserts that `yaml` produces no message of `code`.
    pub(crate) fn expect_none(yaml: &str, code: Code) {
        let found = messages(yaml, code);
        assert!(found.is_empty(), "unexpected {}: {found:#?}", code.code);
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    const SERVICES: &str = include_str!("../../tests/analyze/registry.yaml");

    fn index() -> ServiceIndex {
        let resources = load(SERVICES);
        let refs: Vec<&Resource> = resources.iter().collect();
        ServiceIndex::build(&refs, "default")
    }

    #[test]
    fn index_resolves_hosts_like_istio() {
        let idx = index();
        assert_eq!(idx.all().len(), 4);
        let reviews = idx.lookup("reviews", "default").expect("short name");
        assert_eq!(reviews.host, "reviews.default.svc.cluster.local");
        assert_eq!(reviews.kind, "Service");
        assert_eq!(reviews.ports[0].protocol, "TCP");
        assert_eq!(reviews.ports[0].target_port.as_deref(), Some("9080"));
        assert_eq!(
            reviews.selector.get("app").map(String::as_str),
            Some("reviews")
        );
        assert!(
            idx.lookup("reviews.default", "prod").is_some(),
            "name.namespace"
        );
        assert!(
            idx.lookup("reviews.default.svc.cluster.local", "x")
                .is_some()
        );
        assert!(
            idx.lookup("reviews", "prod").is_none(),
            "short name is per namespace"
        );
        let wild = idx
            .lookup("www.example.com", "other")
            .expect("wildcard entry");
        assert_eq!(wild.host, "*.example.com");
        assert!(idx.lookup("*.api.example.com", "other").is_some());
        assert!(idx.lookup("example.org", "default").is_none());
        assert!(idx.lookup("api.other.org", "default").is_some());
    }

    #[test]
    fn index_honours_export_to() {
        let idx = index();
        assert!(idx.lookup("ratings", "prod").is_some());
        assert!(
            idx.lookup("ratings.prod.svc.cluster.local", "default")
                .is_none()
        );
    }

    #[test]
    fn host_overlap_follows_istio() {
        assert!(common::host::overlap("*.example.com", "a.example.com"));
        assert!(common::host::overlap("a.example.com", "*.example.com"));
        assert!(common::host::overlap("*", "anything.org"));
        assert!(common::host::overlap("*.a.example.com", "*.example.com"));
        assert!(!common::host::overlap("a.example.com", "b.example.com"));
        assert!(!common::host::overlap("*.example.com", "example.org"));
        assert_eq!(to_fqdn("reviews", "ns"), "reviews.ns.svc.cluster.local");
        assert_eq!(to_fqdn("a.b", "ns"), "a.b");
    }

    /// Bookinfo's services, deployments and routing, consistent with each other.
    const BOOKINFO: &str = include_str!("../../tests/analyze/bookinfo.yaml");

    #[test]
    fn bookinfo_is_clean() {
        let found = analyze(BOOKINFO);
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn bookinfo_mistakes_are_found_and_printed_like_istioctl() {
        let broken = BOOKINFO.replace("subset: v3", "subset: v4");
        let found = analyze(&broken);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(
            found[0].field.as_deref(),
            Some("spec.http[1].route[1].destination.subset")
        );
        assert!(
            found[0]
                .to_string()
                .starts_with("Error [IST0101] (VirtualService reviews.default test.yaml:244)"),
            "{}",
            found[0]
        );
        assert!(
            found[0]
                .to_string()
                .ends_with(") Referenced host+subset in destinationrule not found: \"reviews+v4\"")
        );
    }

    const BAD_PORT: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: details, namespace: default}
spec:
  selector: {app: details}
  ports:
  - name: web
    port: 9080
    targetPort: 8080
  - {name: http-api, port: 9090}
  - {name: metrics, port: 9091, appProtocol: http}
  - {name: dns, port: 53}
  - {name: stats, port: 9125, protocol: UDP}
"#;

    #[test]
    fn ist0118_port_name_without_protocol() {
        expect_one(
            BAD_PORT,
            codes::PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION,
            "Service",
            "details",
            Some("spec.ports[0]"),
            "Port name web (port: 9080, targetPort: 8080) doesn't follow the naming convention of Istio port.",
        );
    }

    #[test]
    fn ist0118_skips_system_namespaces_and_istio_services() {
        let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {ports: [{name: web, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {ports: [{name: status-port, port: 15021}]}
"#;
        expect_none(yaml, codes::PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION);
    }

    const TCP_ENTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  ports:
  - {number: 5432, name: tcp-postgres, protocol: TCP}
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
"#;

    #[test]
    fn ist0134_tcp_service_entry_without_addresses() {
        let m = expect_one(
            TCP_ENTRY,
            codes::SERVICE_ENTRY_ADDRESSES_REQUIRED,
            "ServiceEntry",
            "db",
            Some("spec.ports[0]"),
            "ServiceEntry addresses are required for this protocol.",
        );
        assert_eq!(m.origin.unwrap().line, 8);
    }

    #[test]
    fn ist0134_not_reported_with_addresses_or_auto_allocation() {
        let with_addresses = TCP_ENTRY.replace(
            "resolution: DNS",
            "resolution: DNS\n  addresses: [240.0.0.10]",
        );
        expect_none(&with_addresses, codes::SERVICE_ENTRY_ADDRESSES_REQUIRED);
        let auto = format!(
            "{TCP_ENTRY}---\n{}",
            r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: control-plane, namespace: istio-system}
spec:
  meshConfig:
    defaultConfig:
      proxyMetadata: {ISTIO_META_DNS_CAPTURE: "true", ISTIO_META_DNS_AUTO_ALLOCATE: "true"}
"#
        );
        expect_none(&auto, codes::SERVICE_ENTRY_ADDRESSES_REQUIRED);
    }
}
