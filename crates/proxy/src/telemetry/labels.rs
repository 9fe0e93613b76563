//! The label vocabulary of Istio's standard metrics: who reports, the peer on the
//! other side, and this proxy's own workload as istio-agent describes it in the
//! Envoy `Node` metadata.
//!
//! Values follow the istio/proxy stats filter (`istio_stats.cc`): an unknown
//! string becomes `"unknown"`, an unknown canonical revision becomes `"latest"`.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, value::Kind};

/// What Istio prints for a label whose value is not known.
pub const UNKNOWN: &str = "unknown";
/// What Istio prints for an unknown canonical revision.
pub const LATEST: &str = "latest";
/// Trust domain used for this proxy's SPIFFE principal when `MESH_ID` is unset.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// Which side of a request reports the metric (`reporter` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client-side proxy: outbound traffic of a sidecar, and every request
    /// through a gateway (`router`), as Istio does.
    Source,
    /// The server-side proxy: inbound traffic of a sidecar.
    Destination,
}

impl Reporter {
    /// The label value: `"source"` or `"destination"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }
}

/// The `request_protocol` label of HTTP metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Plain HTTP/1.1 or HTTP/2 (`"http"`).
    Http,
    /// gRPC: `content-type: application/grpc*` (`"grpc"`).
    Grpc,
}

impl Protocol {
    /// The label value: `"http"` or `"grpc"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
        }
    }
}

/// The `connection_security_policy` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Security {
    /// Both ends presented an Istio certificate (`"mutual_tls"`).
    MutualTls,
    /// Plaintext or one-sided TLS (`"none"`).
    None,
    /// Not determined; what a client-side reporter always says (`"unknown"`).
    Unknown,
}

impl Security {
    /// The label value: `"mutual_tls"`, `"none"` or `"unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Security::MutualTls => "mutual_tls",
            Security::None => "none",
            Security::Unknown => UNKNOWN,
        }
    }
}

/// What kind of proxy this is, from the first field of the node id
/// (`sidecar~IP~POD.NS~NS.svc.cluster.local` or `router~…`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyType {
    /// An application sidecar (`sidecar~…`, and anything not `router~…`).
    Sidecar,
    /// An ingress or egress gateway (`router~…`).
    Router,
}

/// The workload on the other side of a request: the destination for outbound
/// traffic, the source for inbound. An empty field renders as `"unknown"` (and an
/// empty `canonical_revision` as `"latest"`), so `Peer::default()` is the
/// unknown peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Workload (Deployment, StatefulSet, …) name.
    pub workload: String,
    /// Workload namespace.
    pub namespace: String,
    /// Peer identity from the mTLS certificate, e.g.
    /// `spiffe://cluster.local/ns/default/sa/sleep`.
    pub principal: String,
    /// `app` label (or `app.kubernetes.io/name`).
    pub app: String,
    /// `version` label (or `app.kubernetes.io/version`).
    pub version: String,
    /// `service.istio.io/canonical-name`, with Istio's fallbacks.
    pub canonical_service: String,
    /// `service.istio.io/canonical-revision`, with Istio's fallbacks.
    pub canonical_revision: String,
    /// `CLUSTER_ID` of the peer's proxy.
    pub cluster: String,
}

impl Peer {
    /// The peer nothing is known about: every label `"unknown"`.
    pub fn unknown() -> Arc<Peer> {
        Arc::new(Peer::default())
    }

    /// The peer described by Istio node metadata (what the metadata exchange
    /// carries: `NAMESPACE`, `WORKLOAD_NAME`, `LABELS`, `CLUSTER_ID`), with the
    /// principal taken from the peer's certificate (`""` when there is none).
    pub fn from_node_metadata(metadata: &Struct, principal: &str) -> Peer {
        let w = WorkloadLabels::from_metadata(metadata, "");
        Peer {
            workload: w.workload,
            namespace: w.namespace,
            principal: principal.to_owned(),
            app: w.app,
            version: w.version,
            canonical_service: w.canonical_service,
            canonical_revision: w.canonical_revision,
            cluster: w.cluster,
        }
    }
}

/// Labels of one HTTP or gRPC request, as the data path knows them when the
/// request completes. Pass to [`super::Telemetry::record_request`].
#[derive(Clone, Debug)]
pub struct RequestLabels {
    /// Who reports: outbound → [`Reporter::Source`], inbound → [`Reporter::Destination`].
    pub reporter: Reporter,
    /// The other side of the request.
    pub peer: Arc<Peer>,
    /// FQDN of the destination service (`reviews.default.svc.cluster.local`);
    /// empty → the canonical service (inbound) or `"unknown"` (outbound).
    pub destination_service: String,
    /// Short service name (`reviews`), or `PassthroughCluster`/`BlackHoleCluster`.
    pub destination_service_name: String,
    /// Service namespace; empty → this namespace (inbound) or the peer's (outbound).
    pub destination_service_namespace: String,
    /// Destination port. Not one of Istio's standard labels: kept for the data
    /// path's own use and ignored by the standard metrics.
    pub destination_port: u16,
    /// `http` or `grpc`.
    pub request_protocol: Protocol,
    /// HTTP status sent downstream; 0 when no response was sent.
    pub response_code: u16,
    /// gRPC status from trailers or headers, for gRPC requests that have one.
    pub grpc_response_status: Option<u32>,
    /// Envoy's short response flags (`"-"`, `"UF"`, `"URX"`, `"NR"`, `"UO"`,
    /// `"UT"`, `"DI"`, `"FI"`, comma-joined); empty means `"-"`.
    pub response_flags: String,
    /// Whether the connection was mutual TLS.
    pub connection_security_policy: Security,
}

impl RequestLabels {
    /// The part of these labels that stays the same across requests of one
    /// route, cluster and peer: what [`super::Telemetry::request_series`] takes.
    pub fn key(&self) -> RequestKey {
        RequestKey {
            reporter: self.reporter,
            peer: self.peer.clone(),
            destination_service: self.destination_service.clone(),
            destination_service_name: self.destination_service_name.clone(),
            destination_service_namespace: self.destination_service_namespace.clone(),
            request_protocol: self.request_protocol,
            connection_security_policy: self.connection_security_policy,
        }
    }
}

/// The stable labels of a request series: everything in [`RequestLabels`] but
/// the per-request response code, gRPC status and flags.
#[derive(Clone, Debug)]
pub struct RequestKey {
    /// Who reports.
    pub reporter: Reporter,
    /// The other side of the request.
    pub peer: Arc<Peer>,
    /// FQDN of the destination service (see [`RequestLabels::destination_service`]).
    pub destination_service: String,
    /// Short service name.
    pub destination_service_name: String,
    /// Service namespace.
    pub destination_service_namespace: String,
    /// `http` or `grpc`.
    pub request_protocol: Protocol,
    /// Whether the connection was mutual TLS.
    pub connection_security_policy: Security,
}

/// Labels of one TCP connection: Istio's TCP label set is the HTTP one without
/// `response_code` and `grpc_response_status`, with `request_protocol="tcp"`.
#[derive(Clone, Debug)]
pub struct TcpLabels {
    /// Who reports.
    pub reporter: Reporter,
    /// The other side of the connection.
    pub peer: Arc<Peer>,
    /// FQDN of the destination service.
    pub destination_service: String,
    /// Short service name.
    pub destination_service_name: String,
    /// Service namespace.
    pub destination_service_namespace: String,
    /// Envoy's short response flags when the connection was opened; empty means `"-"`.
    pub response_flags: String,
    /// Whether the connection was mutual TLS.
    pub connection_security_policy: Security,
}

/// This proxy's own workload, derived once from the bootstrap `Node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalWorkload {
    /// `sidecar` or `router`, from the node id.
    pub proxy_type: ProxyType,
    /// `WORKLOAD_NAME`.
    pub workload: String,
    /// `NAMESPACE` (or the namespace in the node id).
    pub namespace: String,
    /// `LABELS.app` or `LABELS["app.kubernetes.io/name"]`.
    pub app: String,
    /// `LABELS.version` or `LABELS["app.kubernetes.io/version"]`.
    pub version: String,
    /// Canonical service with Istio's fallbacks (canonical-name label,
    /// `app.kubernetes.io/name`, `app`, workload name).
    pub canonical_service: String,
    /// Canonical revision with Istio's fallbacks (canonical-revision label,
    /// `app.kubernetes.io/version`, `version`, `"latest"`).
    pub canonical_revision: String,
    /// `CLUSTER_ID`.
    pub cluster: String,
    /// `MESH_ID`, also the trust domain of [`LocalWorkload::principal`].
    pub mesh_id: String,
    /// `SERVICE_ACCOUNT`.
    pub service_account: String,
    /// `spiffe://<MESH_ID>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>`, or `"unknown"`
    /// without a service account. Reported only on mutual-TLS traffic.
    pub principal: String,
}

impl LocalWorkload {
    /// Reads istio-agent's node metadata; missing values become `"unknown"`
    /// (`"latest"` for the canonical revision).
    pub fn from_node(node: &Node) -> LocalWorkload {
        let empty = Struct::default();
        let md = node.metadata.as_ref().unwrap_or(&empty);
        let mut parts = node.id.split('~');
        let proxy_type = match parts.next() {
            Some("router") => ProxyType::Router,
            _ => ProxyType::Sidecar,
        };
        // `sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`.
        let id_namespace = parts
            .nth(1)
            .and_then(|pod_ns| pod_ns.split_once('.').map(|(_, ns)| ns))
            .or_else(|| parts.next().and_then(|d| d.split('.').next()))
            .unwrap_or("");
        let w = WorkloadLabels::from_metadata(md, id_namespace);
        let mesh_id = non_empty(string_field(md, "MESH_ID")).unwrap_or(DEFAULT_TRUST_DOMAIN);
        let service_account = string_field(md, "SERVICE_ACCOUNT");
        let principal = if service_account.is_empty() || w.namespace.is_empty() {
            UNKNOWN.to_owned()
        } else {
            format!("spiffe://{mesh_id}/ns/{}/sa/{service_account}", w.namespace)
        };
        LocalWorkload {
            proxy_type,
            workload: or_unknown(w.workload),
            namespace: or_unknown(w.namespace),
            app: or_unknown(w.app),
            version: or_unknown(w.version),
            canonical_service: or_unknown(w.canonical_service),
            canonical_revision: if w.canonical_revision.is_empty() {
                LATEST.to_owned()
            } else {
                w.canonical_revision
            },
            cluster: or_unknown(w.cluster),
            mesh_id: mesh_id.to_owned(),
            service_account: service_account.to_owned(),
            principal,
        }
    }
}

/// The workload labels Istio derives from node metadata; empty when unknown.
struct WorkloadLabels {
    workload: String,
    namespace: String,
    app: String,
    version: String,
    canonical_service: String,
    canonical_revision: String,
    cluster: String,
}

impl WorkloadLabels {
    fn from_metadata(md: &Struct, fallback_namespace: &str) -> WorkloadLabels {
        let labels = match md.fields.get("LABELS").and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        };
        let label = |k: &str| labels.map(|l| string_field(l, k)).and_then(non_empty);
        let workload = string_field(md, "WORKLOAD_NAME");
        let app = label("app").or_else(|| label("app.kubernetes.io/name"));
        let version = label("version").or_else(|| label("app.kubernetes.io/version"));
        let canonical_service = label("service.istio.io/canonical-name")
            .or_else(|| label("app.kubernetes.io/name"))
            .or_else(|| label("app"))
            .or_else(|| non_empty(workload));
        let canonical_revision = label("service.istio.io/canonical-revision")
            .or_else(|| label("app.kubernetes.io/version"))
            .or_else(|| label("version"));
        WorkloadLabels {
            workload: workload.to_owned(),
            namespace: non_empty(string_field(md, "NAMESPACE"))
                .unwrap_or(fallback_namespace)
                .to_owned(),
            app: app.unwrap_or("").to_owned(),
            version: version.unwrap_or("").to_owned(),
            canonical_service: canonical_service.unwrap_or("").to_owned(),
            canonical_revision: canonical_revision.unwrap_or("").to_owned(),
            cluster: string_field(md, "CLUSTER_ID").to_owned(),
        }
    }
}

fn string_field<'a>(s: &'a Struct, key: &str) -> &'a str {
    match s.fields.get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StringValue(v)) => v,
        _ => "",
    }
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn or_unknown(s: String) -> String {
    if s.is_empty() { UNKNOWN.to_owned() } else { s }
}

/// `s`, or `"unknown"` when empty.
pub(crate) fn unknown_if_empty(s: &str) -> &str {
    if s.is_empty() { UNKNOWN } else { s }
}

/// `s`, or `"latest"` when empty.
pub(crate) fn latest_if_empty(s: &str) -> &str {
    if s.is_empty() { LATEST } else { s }
}
