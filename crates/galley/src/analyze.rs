//! Cross-resource analysis: Istio's `istioctl analyze` checks (IST01xx codes).
//!
//! A [`Snapshot`] indexes a set of decoded resources by kind; each [`Analyzer`]
//! reads it and adds [`Message`]s to a [`Report`]. Analyzers never fail: a resource
//! they cannot make sense of is skipped (its schema errors are reported by
//! validation). The analyzers themselves live in the submodules, one concept each.

use std::collections::BTreeMap;

use common::istio::{extensions, networking, security, telemetry};
use common::path::Path;
use common::resource::{Body, IstioKind, Resource, Spec, split_api_version};
use serde_json::Value;

use crate::message::{Code, Message};

mod annotations;
mod destination_rule;
mod envoy_filter;
mod gateway;
mod scoping;
mod service;
mod sidecar;
mod telemetry_analyzers;
mod virtual_service;

pub use service::{ServiceIndex, ServiceInfo, ServicePort};

/// A set of resources to analyze together, indexed by kind.
pub struct Snapshot<'a> {
    resources: Vec<&'a Resource>,
    default_ns: &'a str,
    services: ServiceIndex,
}

macro_rules! typed_accessors {
    ($($fn:ident => $kind:ident, $ty:ty;)+) => {
        $(
            #[doc = concat!("Every `", stringify!($kind), "` with its spec.")]
            pub fn $fn(&self) -> impl Iterator<Item = (&'a Resource, &'a $ty)> + '_ {
                self.resources.iter().filter_map(|r| match &r.body {
                    Body::Istio(Spec::$kind(s)) => Some((*r, s.as_ref())),
                    _ => None,
                })
            }
        )+
    };
}

impl<'a> Snapshot<'a> {
    /// Indexes `resources`; `default_ns` is the namespace of resources that set none.
    pub fn new(resources: &'a [Resource], default_ns: &'a str) -> Self {
        let refs: Vec<&Resource> = resources.iter().collect();
        let services = ServiceIndex::build(&refs, default_ns);
        Snapshot {
            resources: refs,
            default_ns,
            services,
        }
    }

    /// The namespace of `r` (the default namespace when it set none).
    pub fn ns(&self, r: &'a Resource) -> &'a str {
        r.namespace_or(self.default_ns)
    }

    /// The default namespace.
    pub fn default_ns(&self) -> &'a str {
        self.default_ns
    }

    /// Every resource.
    pub fn all(&self) -> impl Iterator<Item = &'a Resource> + '_ {
        self.resources.iter().copied()
    }

    /// Every resource of an Istio kind.
    pub fn istio(&self, kind: IstioKind) -> impl Iterator<Item = &'a Resource> + '_ {
        self.resources
            .iter()
            .copied()
            .filter(move |r| r.spec().is_some_and(|s| s.kind() == kind))
    }

    /// Every non-Istio object of `group`/`kind` (`""` is Kubernetes' core group),
    /// with its whole JSON object.
    pub fn kube(
        &self,
        group: &'a str,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a Resource, &'a Value)> + '_ {
        self.resources.iter().filter_map(move |r| match &r.body {
            Body::Kubernetes { object, .. }
                if r.kind == kind && split_api_version(&r.api_version).0 == group =>
            {
                Some((*r, object))
            }
            _ => None,
        })
    }

    /// The services known from Kubernetes Services and ServiceEntries.
    pub fn services(&self) -> &ServiceIndex {
        &self.services
    }

    /// Labels of every workload (Pods, and the pod templates of Deployments,
    /// StatefulSets, DaemonSets, ReplicaSets, Jobs; WorkloadEntries), by namespace,
    /// with the workload's name for messages.
    pub fn workloads(&self) -> Vec<Workload<'a>> {
        let mut out = Vec::new();
        for r in self.all() {
            let ns = self.ns(r);
            match &r.body {
                Body::Kubernetes { object, .. } => {
                    let labels = match r.kind.as_str() {
                        "Pod" => object.pointer("/metadata/labels"),
                        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                            object.pointer("/spec/template/metadata/labels")
                        }
                        "CronJob" => {
                            object.pointer("/spec/jobTemplate/spec/template/metadata/labels")
                        }
                        _ => continue,
                    };
                    out.push(Workload {
                        resource: r,
                        namespace: ns,
                        labels: string_map(labels),
                    });
                }
                Body::Istio(Spec::WorkloadEntry(we)) => out.push(Workload {
                    resource: r,
                    namespace: ns,
                    labels: we.labels.clone(),
                }),
                _ => {}
            }
        }
        out
    }

    typed_accessors! {
        virtual_services => VirtualService, networking::VirtualServiceSpec;
        destination_rules => DestinationRule, networking::DestinationRuleSpec;
        gateways => Gateway, networking::GatewaySpec;
        service_entries => ServiceEntry, networking::ServiceEntrySpec;
        workload_entries => WorkloadEntry, networking::WorkloadEntrySpec;
        sidecars => Sidecar, networking::SidecarSpec;
        envoy_filters => EnvoyFilter, networking::EnvoyFilterSpec;
        peer_authentications => PeerAuthentication, security::PeerAuthenticationSpec;
        request_authentications => RequestAuthentication, security::RequestAuthenticationSpec;
        authorization_policies => AuthorizationPolicy, security::AuthorizationPolicySpec;
        telemetries => Telemetry, telemetry::TelemetrySpec;
        wasm_plugins => WasmPlugin, extensions::WasmPluginSpec;
    }
}

/// A workload and its labels, for selector checks.
#[derive(Debug, Clone)]
pub struct Workload<'a> {
    /// The Pod, Deployment, … or WorkloadEntry.
    pub resource: &'a Resource,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its (pod) labels.
    pub labels: BTreeMap<String, String>,
}

/// A JSON object of strings as a map (non-string values are skipped).
pub fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `labels` carries every `selector` entry (an empty selector selects all).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Where analyzers put their messages.
pub struct Report<'a> {
    default_ns: &'a str,
    messages: Vec<Message>,
}

impl<'a> Report<'a> {
    /// An empty report.
    pub fn new(default_ns: &'a str) -> Self {
        Report {
            default_ns,
            messages: Vec::new(),
        }
    }

    /// Adds a message about `resource`, pointing at `path` when given.
    pub fn add(&mut self, code: Code, resource: &Resource, path: Option<Path>, text: String) {
        self.messages.push(Message::about(
            code,
            resource,
            self.default_ns,
            path.as_ref(),
            text,
        ));
    }

    /// The messages so far.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The messages, consuming the report.
    pub fn into_messages(self) -> Vec<Message> {
        self.messages
    }
}

/// One analysis: reads a snapshot, reports findings.
pub trait Analyzer: Send + Sync {
    /// A stable name, like Istio's (`virtualservice.GatewayAnalyzer`).
    fn name(&self) -> &'static str;
    /// Runs the analysis.
    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>);
}

/// Every analyzer, in the order they run.
pub fn analyzers() -> Vec<Box<dyn Analyzer>> {
    let mut all: Vec<Box<dyn Analyzer>> = Vec::new();
    all.extend(virtual_service::analyzers());
    all.extend(destination_rule::analyzers());
    all.extend(gateway::analyzers());
    all.extend(service::analyzers());
    all.extend(sidecar::analyzers());
    all.extend(envoy_filter::analyzers());
    all.extend(telemetry_analyzers::analyzers());
    all.extend(annotations::analyzers());
    all
}

/// Runs every analyzer over `resources`.
pub fn analyze(resources: &[Resource], default_ns: &str) -> Vec<Message> {
    let snap = Snapshot::new(resources, default_ns);
    let mut report = Report::new(default_ns);
    for a in analyzers() {
        a.analyze(&snap, &mut report);
    }
    report.into_messages()
}
