//! Who is asking: a proxy's identity from its Envoy `Node`, the way istio-agent's
//! bootstrap sets it: node id `sidecar~IP~POD.NS~NS.svc.cluster.local` (or
//! `router~…` for gateways), metadata `NAMESPACE`, `LABELS`, `INSTANCE_IPS`,
//! `SERVICE_ACCOUNT`, `WORKLOAD_NAME`, `CLUSTER_ID`, and the node `locality`.
//! What the node id and metadata leave out is filled from the registry by IP
//! ([`Proxy::complete_from`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

use crate::model::Snapshot;
use crate::xds::endpoint::locality;

/// Whether the proxy is a workload's sidecar or a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// `sidecar~`: a workload's proxy (outbound 15001, inbound 15006).
    Sidecar,
    /// `router~`: an ingress or egress gateway (listeners from Gateways).
    Router,
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyKind::Sidecar => "sidecar",
            ProxyKind::Router => "router",
        })
    }
}

/// How a sidecar's traffic reaches it: node metadata `INTERCEPTION_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interception {
    /// iptables redirects the workload's traffic to 15001 and 15006 (Istio's
    /// `REDIRECT`, the default).
    #[default]
    Redirect,
    /// Nothing is captured (`NONE`): the workload talks to the sidecar's
    /// bound listeners, which a Sidecar resource's ingress and egress
    /// listeners lay out; no 15001/15006 listeners.
    None,
}

/// A connected proxy's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Proxy {
    /// The full node id, as sent.
    pub id: String,
    /// Sidecar or gateway.
    pub kind: ProxyKind,
    /// The proxy's IPs (node id IP first, then `INSTANCE_IPS`).
    pub ips: Vec<IpAddr>,
    /// Pod (or VM) name, from the node id.
    pub pod_name: String,
    /// Namespace.
    pub namespace: String,
    /// Workload labels (gateways are selected on these).
    pub labels: BTreeMap<String, String>,
    /// Service account.
    pub service_account: String,
    /// Workload name (Deployment, …), for telemetry.
    pub workload_name: String,
    /// Cluster id (`Kubernetes` by default).
    pub cluster_id: String,
    /// `region/zone/subzone` (may be empty), as Istio finds it: the registry's
    /// workload, else the topology labels, else the node's `locality`.
    pub locality: String,
    /// How its traffic reaches it.
    pub interception: Interception,
}

/// Why a node could not be identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The node id is not Istio's four `~`-separated fields.
    #[error(
        "node id {0:?} is not of the form sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local (or router~…)"
    )]
    BadId(String),
    /// The first field is neither `sidecar` nor `router`.
    #[error("node id {0:?} has proxy type {1:?}; use sidecar or router")]
    BadKind(String, String),
    /// No namespace in the id or metadata.
    #[error("node id {0:?} names no namespace (POD.NAMESPACE, or metadata NAMESPACE)")]
    NoNamespace(String),
}

impl Proxy {
    /// Reads a node's id and metadata.
    pub fn from_node(node: &Node) -> Result<Proxy, ProxyError> {
        let id = node.id.clone();
        let parts: Vec<&str> = id.split('~').collect();
        if parts.len() != 4 {
            return Err(ProxyError::BadId(id));
        }
        let kind = match parts[0] {
            "sidecar" => ProxyKind::Sidecar,
            "router" => ProxyKind::Router,
            other => return Err(ProxyError::BadKind(id.clone(), other.to_string())),
        };
        let meta = node.metadata.as_ref();
        let mut ips: Vec<IpAddr> = parts[1].parse().into_iter().collect();
        if let Some(list) = string_field(meta, "INSTANCE_IPS") {
            for ip in list.split(',').filter_map(|s| s.trim().parse().ok()) {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        let (pod_name, id_ns) = match parts[2].split_once('.') {
            Some((pod, ns)) => (pod.to_string(), ns.to_string()),
            None => (parts[2].to_string(), String::new()),
        };
        let namespace = string_field(meta, "NAMESPACE")
            .map(str::to_string)
            .filter(|s| !s.is_empty())
            .unwrap_or(id_ns);
        if namespace.is_empty() {
            return Err(ProxyError::NoNamespace(id));
        }
        let labels = meta
            .and_then(|m| m.fields.get("LABELS"))
            .and_then(|v| match &v.kind {
                Some(Kind::StructValue(s)) => Some(string_map(s)),
                _ => None,
            })
            .unwrap_or_default();
        let from_node = node
            .locality
            .as_ref()
            .map(|l| locality::join(&l.region, &l.zone, &l.sub_zone))
            .unwrap_or_default();
        let labelled = locality::from_labels(&labels);
        let interception = match string_field(meta, "INTERCEPTION_MODE") {
            Some("NONE") => Interception::None,
            Some("REDIRECT") | Some("") | None => Interception::Redirect,
            Some(other) => {
                tracing::warn!(
                    node = %id,
                    mode = other,
                    "INTERCEPTION_MODE {other:?} is not supported (REDIRECT or NONE); serving it as REDIRECT"
                );
                Interception::Redirect
            }
        };
        Ok(Proxy {
            interception,
            locality: if labelled.is_empty() {
                from_node
            } else {
                labelled
            },
            id: id.clone(),
            kind,
            ips,
            pod_name,
            namespace,
            labels,
            service_account: string_field(meta, "SERVICE_ACCOUNT")
                .unwrap_or_default()
                .to_string(),
            workload_name: string_field(meta, "WORKLOAD_NAME")
                .unwrap_or_default()
                .to_string(),
            cluster_id: string_field(meta, "CLUSTER_ID")
                .unwrap_or("Kubernetes")
                .to_string(),
        })
    }

    /// The registry's workload at one of the proxy's IPs, which is all that
    /// [`Proxy::complete_from`] reads of a snapshot.
    pub fn workload_in<'a>(&self, snapshot: &'a Snapshot) -> Option<&'a crate::model::Workload> {
        self.ips.iter().find_map(|ip| snapshot.workloads.get(ip))
    }

    /// Fills labels and service account from the registry's workload at one of the
    /// proxy's IPs when the metadata left them out; the registry's locality,
    /// when it knows one, wins over the node's (as in Istio).
    pub fn complete_from(&mut self, snapshot: &Snapshot) {
        let Some(w) = self.workload_in(snapshot) else {
            return;
        };
        if self.labels.is_empty() {
            self.labels = w.labels.clone();
        }
        if !w.locality.is_empty() {
            self.locality = w.locality.clone();
        }
        if self.service_account.is_empty() {
            self.service_account = w.service_account.clone();
        }
        if self.workload_name.is_empty() {
            self.workload_name = w.name.clone();
        }
    }
}

fn string_field<'a>(meta: Option<&'a Struct>, key: &str) -> Option<&'a str> {
    match meta?.fields.get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.as_str()),
        _ => None,
    }
}

fn string_map(s: &Struct) -> BTreeMap<String, String> {
    s.fields
        .iter()
        .filter_map(|(k, v): (&String, &Value)| match &v.kind {
            Some(Kind::StringValue(s)) => Some((k.clone(), s.clone())),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    #[test]
    fn reads_istio_node_ids_and_metadata() {
        let mut labels = Struct::default();
        labels.fields.insert("app".into(), sv("reviews"));
        labels.fields.insert("version".into(), sv("v1"));
        let mut meta = Struct::default();
        meta.fields.insert("NAMESPACE".into(), sv("default"));
        meta.fields
            .insert("INSTANCE_IPS".into(), sv("10.1.1.5,fd00::5"));
        meta.fields
            .insert("SERVICE_ACCOUNT".into(), sv("bookinfo-reviews"));
        meta.fields.insert(
            "LABELS".into(),
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        );
        let node = Node {
            id: "sidecar~10.1.1.5~reviews-v1-abc.default~default.svc.cluster.local".into(),
            metadata: Some(meta),
            ..Default::default()
        };
        let p = Proxy::from_node(&node).unwrap();
        assert_eq!(p.kind, ProxyKind::Sidecar);
        assert_eq!(p.pod_name, "reviews-v1-abc");
        assert_eq!(p.namespace, "default");
        assert_eq!(p.ips.len(), 2);
        assert_eq!(p.labels["version"], "v1");
        assert_eq!(p.service_account, "bookinfo-reviews");
        assert_eq!(p.cluster_id, "Kubernetes");
        assert_eq!(p.locality, "");
    }

    #[test]
    fn locality_from_labels_then_node() {
        use envoy_types::pb::envoy::config::core::v3::Locality;
        let node = |labels: &[(&str, &str)]| {
            let mut l = Struct::default();
            for (k, v) in labels {
                l.fields.insert(k.to_string(), sv(v));
            }
            let mut meta = Struct::default();
            meta.fields.insert(
                "LABELS".into(),
                Value {
                    kind: Some(Kind::StructValue(l)),
                },
            );
            Node {
                id: "sidecar~10.1.1.5~a.default~default.svc.cluster.local".into(),
                metadata: Some(meta),
                locality: Some(Locality {
                    region: "r1".into(),
                    zone: "z1".into(),
                    sub_zone: String::new(),
                }),
                ..Default::default()
            }
        };
        let p = Proxy::from_node(&node(&[])).unwrap();
        assert_eq!(p.locality, "r1/z1");
        let p = Proxy::from_node(&node(&[
            ("topology.kubernetes.io/region", "r2"),
            ("topology.kubernetes.io/zone", "z2"),
            ("topology.istio.io/subzone", "s2"),
        ]))
        .unwrap();
        assert_eq!(p.locality, "r2/z2/s2");
        let p = Proxy::from_node(&node(&[("istio-locality", "r3.z3")])).unwrap();
        assert_eq!(p.locality, "r3/z3");
    }

    #[test]
    fn refuses_malformed_ids() {
        let bad = |id: &str| {
            Proxy::from_node(&Node {
                id: id.into(),
                ..Default::default()
            })
        };
        assert!(matches!(bad("envoy-1"), Err(ProxyError::BadId(_))));
        assert!(matches!(
            bad("waypoint~1.2.3.4~a.b~b.svc.cluster.local"),
            Err(ProxyError::BadKind(..))
        ));
        assert!(matches!(
            bad("router~1.2.3.4~gw~svc.cluster.local"),
            Err(ProxyError::NoNamespace(_))
        ));
        assert!(bad("router~1.2.3.4~gw.istio-system~istio-system.svc.cluster.local").is_ok());
    }
}
