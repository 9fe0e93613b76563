//! CustomResourceDefinitions for the Istio kinds, generated from the spec
//! types: each version's root type (kube's `CustomResource` derive over the
//! kind's shared spec, [`crate::istio`]) gives a CRD for that version, and the
//! versions of a kind are merged into one CRD serving them all, the newest
//! storing (Istio's layout). `mizzen gen crds` writes them under
//! `deploy/crds/`, one file per kind.
//!
//! Kubernetes requires *structural* schemas: every node has a `type` (or says
//! `x-kubernetes-preserve-unknown-fields` / `x-kubernetes-int-or-string`), no
//! `$ref`, no `anyOf`/`oneOf`/`allOf`, no `properties` beside
//! `additionalProperties`, arrays with `items`. [`structural_problems`] checks
//! that, so a type Mizzen adds later cannot produce a CRD the API server
//! rejects.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::{Value, json};

use crate::istio::{extensions, install, networking, security, telemetry};
use crate::resource::IstioKind;

/// The CRDs of `kind`'s versions, oldest first.
fn version_crds(kind: IstioKind) -> Vec<CustomResourceDefinition> {
    use networking::{v1 as n1, v1alpha3 as n1a3, v1beta1 as n1b1};
    use security::{v1 as s1, v1beta1 as s1b1};
    use telemetry::{v1 as t1, v1alpha1 as t1a1};
    macro_rules! versions {
        ($($root:ty),+) => { vec![$(<$root>::crd()),+] };
    }
    match kind {
        IstioKind::VirtualService => versions!(
            n1a3::VirtualService,
            n1b1::VirtualService,
            n1::VirtualService
        ),
        IstioKind::DestinationRule => versions!(
            n1a3::DestinationRule,
            n1b1::DestinationRule,
            n1::DestinationRule
        ),
        IstioKind::Gateway => versions!(n1a3::Gateway, n1b1::Gateway, n1::Gateway),
        IstioKind::ServiceEntry => {
            versions!(n1a3::ServiceEntry, n1b1::ServiceEntry, n1::ServiceEntry)
        }
        IstioKind::WorkloadEntry => {
            versions!(n1a3::WorkloadEntry, n1b1::WorkloadEntry, n1::WorkloadEntry)
        }
        IstioKind::WorkloadGroup => {
            versions!(n1a3::WorkloadGroup, n1b1::WorkloadGroup, n1::WorkloadGroup)
        }
        IstioKind::Sidecar => versions!(n1a3::Sidecar, n1b1::Sidecar, n1::Sidecar),
        IstioKind::EnvoyFilter => versions!(n1a3::EnvoyFilter),
        IstioKind::ProxyConfig => versions!(n1b1::ProxyConfig),
        IstioKind::PeerAuthentication => {
            versions!(s1b1::PeerAuthentication, s1::PeerAuthentication)
        }
        IstioKind::RequestAuthentication => {
            versions!(s1b1::RequestAuthentication, s1::RequestAuthentication)
        }
        IstioKind::AuthorizationPolicy => {
            versions!(s1b1::AuthorizationPolicy, s1::AuthorizationPolicy)
        }
        IstioKind::Telemetry => versions!(t1a1::Telemetry, t1::Telemetry),
        IstioKind::WasmPlugin => versions!(extensions::v1alpha1::WasmPlugin),
        IstioKind::IstioOperator => versions!(install::v1alpha1::IstioOperator),
    }
}

/// The CRD of `kind` as JSON: every version it is served at, the newest
/// storing; free-form values (`serde_json::Value` fields: EnvoyFilter's patch
/// value, IstioOperator's `values`, …) keep unknown fields, as Istio's CRDs
/// mark `google.protobuf.Struct`.
pub fn crd(kind: IstioKind) -> Result<Value, String> {
    let storage = kind.versions().last().copied().unwrap_or("v1");
    let merged = kube::core::crd::merge_crds(version_crds(kind), storage)
        .map_err(|e| format!("{kind}: cannot merge its versions' CRDs: {e}"))?;
    let mut crd = serde_json::to_value(&merged).map_err(|e| format!("{kind}: {e}"))?;
    crd["metadata"]["labels"] = json!({
        "app.kubernetes.io/part-of": "mizzen",
        "istio": kind.group().split('.').next().unwrap_or_default(),
    });
    if let Some(versions) = crd["spec"]["versions"].as_array_mut() {
        for v in versions {
            if let Some(spec) = v.pointer_mut("/schema/openAPIV3Schema/properties/spec") {
                keep_free_form(spec);
            }
        }
    }
    Ok(crd)
}

/// Marks every node below `schema` that has no type as keeping unknown
/// fields (any JSON value).
fn keep_free_form(schema: &mut Value) {
    let Value::Object(obj) = schema else {
        return;
    };
    let typed = obj.contains_key("type")
        || obj.contains_key("x-kubernetes-int-or-string")
        || obj.contains_key("x-kubernetes-preserve-unknown-fields");
    if !typed {
        obj.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.values_mut().for_each(keep_free_form);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(inner @ Value::Object(_)) = obj.get_mut(key) {
            keep_free_form(inner);
        }
    }
}

/// The file name of `kind`'s CRD: `GROUP_PLURAL.yaml`, as controller-gen names them.
pub fn file_name(kind: IstioKind) -> String {
    format!("{}_{}.yaml", kind.group(), kind.plural())
}

/// Every kind's CRD as (file name, JSON), in [`IstioKind::ALL`]'s order;
/// `Err` names a kind whose CRD is not structural or cannot be built.
pub fn generate() -> Result<Vec<(String, Value)>, String> {
    IstioKind::ALL
        .iter()
        .map(|kind| {
            let value = crd(*kind)?;
            for v in value["spec"]["versions"].as_array().into_iter().flatten() {
                let problems = structural_problems(
                    &v["schema"]["openAPIV3Schema"],
                    &format!("{kind} {}", v["name"].as_str().unwrap_or_default()),
                );
                if !problems.is_empty() {
                    return Err(format!(
                        "{kind}: the schema is not structural, which the API server refuses:\n  {}",
                        problems.join("\n  ")
                    ));
                }
            }
            Ok((file_name(*kind), value))
        })
        .collect()
}

/// Where `schema` is not structural, as `path: problem` lines (empty when it is).
pub fn structural_problems(schema: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Value::Object(obj) = schema else {
        return vec![format!("{path}: not a schema object")];
    };
    for key in [
        "$ref",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "$defs",
        "definitions",
    ] {
        if obj.contains_key(key) {
            out.push(format!("{path}: has {key}"));
        }
    }
    let free = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        || obj.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if !obj.contains_key("type") && !free {
        out.push(format!("{path}: no type"));
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!("{path}: both properties and additionalProperties"));
    }
    if obj.get("type") == Some(&json!("array")) && !obj.contains_key("items") {
        out.push(format!("{path}: an array without items"));
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (k, v) in props {
            out.extend(structural_problems(v, &format!("{path}.{k}")));
        }
    }
    if let Some(extra @ Value::Object(_)) = obj.get("additionalProperties") {
        out.extend(structural_problems(extra, &format!("{path}.*")));
    }
    if let Some(items) = obj.get("items") {
        out.extend(structural_problems(items, &format!("{path}[]")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kinds_crd_is_structural_and_serves_every_version() {
        let files = generate().expect("every CRD generates");
        assert_eq!(files.len(), IstioKind::ALL.len());
        for kind in IstioKind::ALL {
            let crd = crd(*kind).unwrap();
            let versions = crd["spec"]["versions"].as_array().unwrap();
            let mut names: Vec<&str> = versions.iter().filter_map(|v| v["name"].as_str()).collect();
            let mut served = kind.versions().to_vec();
            names.sort_unstable();
            served.sort_unstable();
            assert_eq!(names, served, "{kind}");
            let storing: Vec<&str> = versions
                .iter()
                .filter(|v| v["storage"] == true)
                .filter_map(|v| v["name"].as_str())
                .collect();
            assert_eq!(storing, [*kind.versions().last().unwrap()], "{kind}");
            assert_eq!(
                crd["metadata"]["name"],
                format!("{}.{}", kind.plural(), kind.group())
            );
        }
    }

    #[test]
    fn the_checker_finds_what_the_api_server_refuses() {
        let bad = json!({
            "type": "object",
            "properties": {
                "a": {"$ref": "#/$defs/A"},
                "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "c": {"type": "array"},
                "d": {"type": "object", "properties": {}, "additionalProperties": false},
                "e": {"description": "no type"},
                "f": {"x-kubernetes-preserve-unknown-fields": true},
            },
        });
        let problems = structural_problems(&bad, "x");
        for part in [
            "x.a: has $ref",
            "x.b: has anyOf",
            "x.c: an array without items",
            "x.d: both",
            "x.e: no type",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(part)),
                "{part}: {problems:#?}"
            );
        }
        assert!(
            !problems.iter().any(|p| p.starts_with("x.f")),
            "{problems:#?}"
        );
    }
}
