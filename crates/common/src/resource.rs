//! Resources read from YAML: the registry of kinds Mizzen knows, and strict decoding.
//!
//! A YAML document becomes a [`Resource`] in three steps: its `apiVersion` and `kind`
//! pick an entry of the registry ([`IstioKind`] for Istio's groups; Kubernetes' own
//! kinds are recognised and passed through as JSON); its `metadata` is read as
//! Kubernetes `ObjectMeta`; its `spec` is decoded strictly into the kind's spec type,
//! and a failure is reported with the field path (`spec.http[0].retries.attempts`)
//! and the source line. A document that fails becomes a [`DecodeError`]; the others
//! are unaffected.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::istio::{extensions, install, networking, security, telemetry};
use crate::path::{Path, Seg};
use crate::yaml::Node;

/// Where a resource came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The file name as given (`-` for standard input, or another label for
    /// in-memory text).
    pub file: Arc<str>,
    /// Line (1-based) where the document starts.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

macro_rules! istio_kinds {
    ($( $kind:ident, $group:literal, $plural:literal, [$($ver:literal),+], $spec:ty; )+) => {
        /// The Istio kinds Mizzen reads, across all served versions.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum IstioKind {
            $(
                #[doc = concat!("`", $group, "/", stringify!($kind), "`")]
                $kind,
            )+
        }

        impl IstioKind {
            /// Every Istio kind.
            pub const ALL: &'static [IstioKind] = &[$(IstioKind::$kind),+];

            /// The kind's name, as in `kind:`.
            pub fn name(self) -> &'static str {
                match self { $(IstioKind::$kind => stringify!($kind)),+ }
            }

            /// The API group.
            pub fn group(self) -> &'static str {
                match self { $(IstioKind::$kind => $group),+ }
            }

            /// The resource's plural name, as in URLs and metric labels.
            pub fn plural(self) -> &'static str {
                match self { $(IstioKind::$kind => $plural),+ }
            }

            /// The versions Istio serves for the kind, oldest first.
            pub fn versions(self) -> &'static [&'static str] {
                match self { $(IstioKind::$kind => &[$($ver),+]),+ }
            }

            /// The JSON Schema of the kind's spec (the CRDs' source).
            pub fn spec_schema(self) -> schemars::Schema {
                match self { $(IstioKind::$kind => schemars::schema_for!($spec)),+ }
            }
        }

        /// A decoded Istio spec, one variant per kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Spec {
            $(
                #[doc = concat!("A `", stringify!($kind), "` spec.")]
                $kind(Box<$spec>),
            )+
        }

        impl Spec {
            /// The kind of this spec.
            pub fn kind(&self) -> IstioKind {
                match self { $(Spec::$kind(_) => IstioKind::$kind),+ }
            }

            /// Decodes `value` strictly as the spec of `kind`.
            pub fn decode(kind: IstioKind, value: Value) -> Result<Spec, (Path, String)> {
                match kind {
                    $(IstioKind::$kind => strict::<$spec>(value).map(|s| Spec::$kind(Box::new(s))),)+
                }
            }
        }
    };
}

istio_kinds! {
    VirtualService, "networking.istio.io", "virtualservices", ["v1alpha3", "v1beta1", "v1"], networking::VirtualServiceSpec;
    DestinationRule, "networking.istio.io", "destinationrules", ["v1alpha3", "v1beta1", "v1"], networking::DestinationRuleSpec;
    Gateway, "networking.istio.io", "gateways", ["v1alpha3", "v1beta1", "v1"], networking::GatewaySpec;
    ServiceEntry, "networking.istio.io", "serviceentries", ["v1alpha3", "v1beta1", "v1"], networking::ServiceEntrySpec;
    WorkloadEntry, "networking.istio.io", "workloadentries", ["v1alpha3", "v1beta1", "v1"], networking::WorkloadEntrySpec;
    WorkloadGroup, "networking.istio.io", "workloadgroups", ["v1alpha3", "v1beta1", "v1"], networking::WorkloadGroupSpec;
    Sidecar, "networking.istio.io", "sidecars", ["v1alpha3", "v1beta1", "v1"], networking::SidecarSpec;
    EnvoyFilter, "networking.istio.io", "envoyfilters", ["v1alpha3"], networking::EnvoyFilterSpec;
    ProxyConfig, "networking.istio.io", "proxyconfigs", ["v1beta1"], networking::ProxyConfigSpec;
    PeerAuthentication, "security.istio.io", "peerauthentications", ["v1beta1", "v1"], security::PeerAuthenticationSpec;
    RequestAuthentication, "security.istio.io", "requestauthentications", ["v1beta1", "v1"], security::RequestAuthenticationSpec;
    AuthorizationPolicy, "security.istio.io", "authorizationpolicies", ["v1beta1", "v1"], security::AuthorizationPolicySpec;
    Telemetry, "telemetry.istio.io", "telemetries", ["v1alpha1", "v1"], telemetry::TelemetrySpec;
    WasmPlugin, "extensions.istio.io", "wasmplugins", ["v1alpha1"], extensions::WasmPluginSpec;
    IstioOperator, "install.istio.io", "istiooperators", ["v1alpha1"], install::IstioOperatorSpec;
}

impl IstioKind {
    /// Looks a kind up by group and kind name.
    pub fn find(group: &str, kind: &str) -> Option<IstioKind> {
        IstioKind::ALL
            .iter()
            .copied()
            .find(|k| k.group() == group && k.name() == kind)
    }

    /// Whether resources of this kind live in a namespace (all Istio kinds do).
    pub fn namespaced(self) -> bool {
        true
    }
}

impl fmt::Display for IstioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kubernetes kinds recognised in the same files and passed through unchecked by
/// the Istio validators (pilot reads some of them: Services, Endpoints, Pods, …).
pub const KUBERNETES_KINDS: &[(&str, &str)] = &[
    ("", "Service"),
    ("", "Endpoints"),
    ("", "Pod"),
    ("", "Namespace"),
    ("", "ServiceAccount"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "PersistentVolumeClaim"),
    ("", "PersistentVolume"),
    ("", "Node"),
    ("", "LimitRange"),
    ("", "ResourceQuota"),
    ("", "List"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "IngressClass"),
    ("policy", "PodDisruptionBudget"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
    ("gateway.networking.k8s.io", "HTTPRoute"),
    ("gateway.networking.k8s.io", "GRPCRoute"),
    ("gateway.networking.k8s.io", "TCPRoute"),
    ("gateway.networking.k8s.io", "TLSRoute"),
    ("gateway.networking.k8s.io", "ReferenceGrant"),
];

/// What a resource holds beyond its metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// An Istio kind, decoded.
    Istio(Spec),
    /// A Kubernetes (or other non-Istio) object, kept whole as JSON. `known` tells
    /// whether the kind is one of [`KUBERNETES_KINDS`].
    Kubernetes {
        /// The whole object.
        object: Value,
        /// Whether Mizzen recognises the kind.
        known: bool,
    },
}

/// A resource read from a YAML document.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// `apiVersion` as written (`networking.istio.io/v1`, `v1`).
    pub api_version: String,
    /// `kind` as written.
    pub kind: String,
    /// `metadata`.
    pub meta: ObjectMeta,
    /// The decoded content.
    pub body: Body,
    /// Where it came from.
    pub origin: Origin,
    /// The document's YAML tree, for finding the lines of fields.
    pub tree: Arc<Node>,
}

impl Resource {
    /// `metadata.name`, or `""`.
    pub fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or("")
    }

    /// `metadata.namespace`, or `default` when unset.
    pub fn namespace_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.meta.namespace.as_deref().unwrap_or(default)
    }

    /// The Istio spec, if this is an Istio kind.
    pub fn spec(&self) -> Option<&Spec> {
        match &self.body {
            Body::Istio(s) => Some(s),
            Body::Kubernetes { .. } => None,
        }
    }

    /// The API group (`""` for Kubernetes' core group).
    pub fn group(&self) -> &str {
        split_api_version(&self.api_version).0
    }

    /// The source line of a field path, or of its nearest present ancestor.
    pub fn line_of(&self, path: &Path) -> usize {
        self.tree.line_of(path)
    }
}

/// Why a document could not become a resource.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin_at}: {what}{path_sep}{path}: {message}", origin_at = self.at(), what = self.what(), path_sep = if self.path.is_empty() { "" } else { " " })]
pub struct DecodeError {
    /// Where the document came from.
    pub origin: Origin,
    /// The exact line of the problem (the field's, when the path points at one).
    pub line: usize,
    /// `kind`, when it could be read.
    pub kind: Option<String>,
    /// `apiVersion`, when it could be read.
    pub api_version: Option<String>,
    /// `metadata.name`, when it could be read.
    pub name: Option<String>,
    /// `metadata.namespace`, when it could be read.
    pub namespace: Option<String>,
    /// The field path of the problem (empty for the document as a whole).
    pub path: Path,
    /// What is wrong, and what to do.
    pub message: String,
}

impl DecodeError {
    fn at(&self) -> String {
        format!("{}:{}", self.origin.file, self.line)
    }

    fn what(&self) -> String {
        match (&self.kind, &self.name) {
            (Some(k), Some(n)) => match &self.namespace {
                Some(ns) => format!("{k} {n}.{ns}"),
                None => format!("{k} {n}"),
            },
            (Some(k), None) => k.clone(),
            _ => "document".into(),
        }
    }
}

/// Splits `group/version` (or a bare core `version`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Decodes one YAML document into a resource.
pub fn decode(node: Node, origin: Origin) -> Result<Resource, Box<DecodeError>> {
    let tree = Arc::new(node);
    let value = tree.to_json();
    let mut err = DecodeError {
        line: origin.line,
        origin: origin.clone(),
        kind: None,
        api_version: None,
        name: None,
        namespace: None,
        path: Path::empty(),
        message: String::new(),
    };
    let fail = |mut e: DecodeError, path: Path, message: String| {
        e.line = tree.line_of(&path);
        e.path = path;
        e.message = message;
        Box::new(e)
    };
    let Value::Object(obj) = &value else {
        return Err(fail(
            err,
            Path::empty(),
            "a document must be a mapping with apiVersion, kind and metadata".into(),
        ));
    };
    err.kind = obj.get("kind").and_then(Value::as_str).map(str::to_string);
    err.api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .map(str::to_string);
    let meta_value = obj.get("metadata").cloned().unwrap_or(Value::Null);
    err.name = meta_value
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string);
    err.namespace = meta_value
        .get("namespace")
        .and_then(Value::as_str)
        .map(str::to_string);

    let Some(api_version) = err.api_version.clone() else {
        return Err(fail(
            err,
            Path::root("apiVersion"),
            "apiVersion is missing; set it, e.g. networking.istio.io/v1".into(),
        ));
    };
    let Some(kind) = err.kind.clone() else {
        return Err(fail(
            err,
            Path::root("kind"),
            "kind is missing; set it, e.g. VirtualService".into(),
        ));
    };
    let meta: ObjectMeta = if meta_value.is_null() {
        ObjectMeta::default()
    } else {
        match serde_path_to_error::deserialize(meta_value) {
            Ok(m) => m,
            Err(e) => {
                let path = Path::root("metadata").join(&Path::from(e.path()));
                return Err(fail(err, path, e.into_inner().to_string()));
            }
        }
    };
    let (group, version) = split_api_version(&api_version);
    let body = if group.ends_with("istio.io") {
        let Some(istio_kind) = IstioKind::find(group, &kind) else {
            let known: Vec<&str> = IstioKind::ALL
                .iter()
                .filter(|k| k.group() == group)
                .map(|k| k.name())
                .collect();
            let message = if known.is_empty() {
                format!(
                    "unknown API group {group:?}; Istio's groups are networking.istio.io, security.istio.io, telemetry.istio.io, extensions.istio.io and install.istio.io"
                )
            } else {
                format!(
                    "unknown kind {kind:?} in {group}; it has {}",
                    known.join(", ")
                )
            };
            return Err(fail(err, Path::root("kind"), message));
        };
        if !istio_kind.versions().contains(&version) {
            let message = format!(
                "{kind} is not served at version {version:?}; use {}",
                istio_kind
                    .versions()
                    .iter()
                    .map(|v| format!("{group}/{v}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
            return Err(fail(err, Path::root("apiVersion"), message));
        }
        for key in obj.keys() {
            if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&key.as_str()) {
                let message = unknown_field_message(
                    key,
                    &["apiVersion", "kind", "metadata", "spec", "status"],
                );
                return Err(fail(err, Path::root(key), message));
            }
        }
        let spec_value = match obj.get("spec") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(v) => v.clone(),
        };
        match Spec::decode(istio_kind, spec_value) {
            Ok(spec) => Body::Istio(spec),
            Err((path, message)) => {
                return Err(fail(err, Path::root("spec").join(&path), message));
            }
        }
    } else {
        let known = KUBERNETES_KINDS
            .iter()
            .any(|(g, k)| *g == group && *k == kind);
        Body::Kubernetes {
            object: value.clone(),
            known,
        }
    };
    Ok(Resource {
        api_version,
        kind,
        meta,
        body,
        origin,
        tree,
    })
}

/// Strict decoding of `value` as `T`, with the failing field's path. An unknown
/// field's path ends at the field itself, and the message suggests the closest
/// known name.
fn strict<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, (Path, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = Path::from(e.path());
        let raw = e.into_inner().to_string();
        let message = rewrite_serde_message(&raw, &mut path);
        (path, message)
    })
}

/// Turns serde's messages into Mizzen's: names quoted the same way, known values
/// listed, a "did you mean" for near misses; unknown fields get their own path.
fn rewrite_serde_message(raw: &str, path: &mut Path) -> String {
    // serde quotes names in backticks: split "<prefix>`<name>`<tail>".
    let quoted = |prefix: &str| {
        raw.strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
    };
    if let Some((name, tail)) = quoted("unknown field `") {
        let expected = expected_names(tail);
        // serde_path_to_error's path already ends at the unknown key for maps.
        if path.segments().last() != Some(&Seg::Field(name.to_string())) {
            path.push(Seg::Field(name.to_string()));
        }
        return unknown_field_message(name, &expected);
    }
    if let Some((name, tail)) = quoted("unknown variant `") {
        let expected = expected_names(tail);
        let mut msg = format!("unknown value {name:?}; use one of {}", expected.join(", "));
        if let Some(s) = closest(name, &expected) {
            msg.push_str(&format!(" (did you mean {s:?}?)"));
        }
        return msg;
    }
    if let Some((name, _)) = quoted("missing field `") {
        return format!("required field {name:?} is missing");
    }
    raw.replace('`', "\"")
}

fn expected_names(tail: &str) -> Vec<&str> {
    tail.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s)
        .collect()
}

fn unknown_field_message(name: &str, expected: &[&str]) -> String {
    let mut msg = format!("unknown field {name:?}");
    if let Some(s) = closest(name, expected) {
        msg.push_str(&format!("; did you mean {s:?}?"));
    } else if !expected.is_empty() {
        msg.push_str(&format!("; known fields here: {}", expected.join(", ")));
    }
    msg
}

/// The candidate nearest to `name` (case-insensitive, snake_case folded), if close.
fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| s.replace(['_', '-'], "").to_ascii_lowercase();
    let n = norm(name);
    candidates
        .iter()
        .map(|c| (edit_distance(&n, &norm(c)), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
