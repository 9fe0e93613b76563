//! What the Kubernetes source watches, and how each kind's API resource is found.
//!
//! Kubernetes' own kinds (Services, EndpointSlices, Pods, Namespaces,
//! ServiceAccounts, Secrets) are served at fixed versions. Each Istio kind is a
//! CustomResourceDefinition that may or may not be installed, serving some of the
//! versions Istio defines: [`discover`] reads the CRD
//! (`GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/<plural>.<group>`)
//! and picks the newest served version Mizzen reads. All served versions of a CRD
//! are the same objects converted, so one watch per kind sees everything.
//!
//! `IstioOperator` is left out: it is install-time configuration that pilot never
//! reads (istiod does not watch it either, and Istio 1.24 removed the in-cluster
//! operator that did).

use common::resource::IstioKind;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource};

/// Secrets pilot never reads, left out of its watch as Istio's credential
/// controller does: Helm release records and service-account tokens are the two
/// large kinds of Secret in most clusters.
pub const SECRETS_FIELD_SELECTOR: &str =
    "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// One kind the source watches across all namespaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedKind {
    /// The kind (`Service`, `VirtualService`), as in `kind:` and origins.
    pub kind: &'static str,
    /// Where its API resource comes from.
    pub api: KindApi,
    /// A field selector narrowing the watch (Secrets), if any.
    pub field_selector: Option<&'static str>,
}

/// How a watched kind's API resource is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindApi {
    /// A built-in kind at a fixed group/version.
    BuiltIn {
        /// API group (`""` for core).
        group: &'static str,
        /// Version.
        version: &'static str,
        /// Plural resource name.
        plural: &'static str,
    },
    /// An Istio kind, served if its CRD is installed.
    Istio(IstioKind),
}

impl WatchedKind {
    /// The kinds pilot watches: the Kubernetes objects the registry derives
    /// services, endpoints, workloads and gateway credentials from, then every
    /// Istio kind but `IstioOperator`.
    pub fn all() -> Vec<WatchedKind> {
        let built_in = |kind, group, version, plural| WatchedKind {
            kind,
            api: KindApi::BuiltIn {
                group,
                version,
                plural,
            },
            field_selector: None,
        };
        let mut kinds = vec![
            built_in("Service", "", "v1", "services"),
            built_in("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices"),
            built_in("Pod", "", "v1", "pods"),
            built_in("Namespace", "", "v1", "namespaces"),
            built_in("ServiceAccount", "", "v1", "serviceaccounts"),
            WatchedKind {
                field_selector: Some(SECRETS_FIELD_SELECTOR),
                ..built_in("Secret", "", "v1", "secrets")
            },
        ];
        kinds.extend(
            IstioKind::ALL
                .iter()
                .filter(|k| **k != IstioKind::IstioOperator)
                .map(|k| WatchedKind {
                    kind: k.name(),
                    api: KindApi::Istio(*k),
                    field_selector: None,
                }),
        );
        kinds
    }

    /// Whether the kind's objects live in namespaces.
    pub fn namespaced(&self) -> bool {
        self.kind != "Namespace"
    }

    /// `plural.group` (`virtualservices.networking.istio.io`, `services`), for logs.
    pub fn resource_name(&self) -> String {
        match &self.api {
            KindApi::BuiltIn {
                group: "", plural, ..
            } => (*plural).to_string(),
            KindApi::BuiltIn { group, plural, .. } => format!("{plural}.{group}"),
            KindApi::Istio(k) => crd_name(*k),
        }
    }
}

/// The name of an Istio kind's CRD (`virtualservices.networking.istio.io`).
pub fn crd_name(kind: IstioKind) -> String {
    format!("{}.{}", kind.plural(), kind.group())
}

/// The API resource of `kind` at `version`.
fn api_resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.to_string(),
        version: version.to_string(),
        api_version: if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        },
        kind: kind.to_string(),
        plural: plural.to_string(),
    }
}

/// What [`discover`] found out about a kind.
#[derive(Debug)]
pub enum Discovery {
    /// Served: watch it at this API resource.
    Found(ApiResource),
    /// Not served; the text says why and what to do.
    Missing(String),
    /// The API server could not be asked (the kind may exist).
    Failed(kube::Error),
}

/// Finds the API resource to watch `kind` at: the fixed one of a built-in kind,
/// or the newest version the kind's CRD serves among those Mizzen reads.
pub async fn discover(client: &Client, kind: &WatchedKind) -> Discovery {
    let istio = match &kind.api {
        KindApi::BuiltIn {
            group,
            version,
            plural,
        } => return Discovery::Found(api_resource(group, version, kind.kind, plural)),
        KindApi::Istio(k) => *k,
    };
    let name = crd_name(istio);
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = match crds.get_opt(&name).await {
        Ok(Some(crd)) => crd,
        Ok(None) => {
            return Discovery::Missing(format!(
                "CustomResourceDefinition {name} is not installed; install Istio's CRDs (deploy/crds, or the Helm chart's) to use {} resources",
                istio.name()
            ));
        }
        Err(e) => return Discovery::Failed(e),
    };
    let served: Vec<&str> = crd
        .spec
        .versions
        .iter()
        .filter(|v| v.served)
        .map(|v| v.name.as_str())
        .collect();
    match istio.versions().iter().rev().find(|v| served.contains(v)) {
        Some(version) => Discovery::Found(api_resource(
            istio.group(),
            version,
            istio.name(),
            istio.plural(),
        )),
        None => Discovery::Missing(format!(
            "CustomResourceDefinition {name} serves {}, none of the versions Mizzen reads ({}); install Istio's CRDs (deploy/crds)",
            if served.is_empty() {
                "no version".to_string()
            } else {
                served.join(", ")
            },
            istio.versions().join(", ")
        )),
    }
}
