//! Per-resource validation: Istio's field rules for every kind.
//!
//! [`validate`] checks a decoded resource's metadata, then hands its spec to the
//! kind's rules (one module per API group) with a [`Field`] cursor at `spec`. Rules
//! record [`Finding`]s with field paths; [`crate::check`] turns them into messages
//! with file and line.

use common::resource::{Resource, Spec};

pub mod checks;
pub mod extensions;
pub mod field;
pub mod install;
pub mod networking;
pub mod security;
pub mod telemetry;

pub use field::{Field, Finding, Level, ResourceCtx};

/// Validates one resource; `default_ns` is the namespace of resources that set none.
pub fn validate(r: &Resource, default_ns: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    metadata(r, &mut out);
    let Some(spec) = r.spec() else {
        return out;
    };
    let ctx = ResourceCtx {
        name: r.name(),
        namespace: r.namespace_or(default_ns),
    };
    let mut f = Field::new("spec", &mut out);
    validate_spec(spec, &ctx, &mut f);
    out
}

/// Validates a spec alone, with `f` positioned at `spec`.
pub fn validate_spec(spec: &Spec, r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    match spec {
        Spec::VirtualService(s) => networking::virtual_service(s, r, f),
        Spec::DestinationRule(s) => networking::destination_rule(s, r, f),
        Spec::Gateway(s) => networking::gateway(s, r, f),
        Spec::ServiceEntry(s) => networking::service_entry(s, r, f),
        Spec::WorkloadEntry(s) => networking::workload_entry(s, r, f),
        Spec::WorkloadGroup(s) => networking::workload_group(s, r, f),
        Spec::Sidecar(s) => networking::sidecar(s, r, f),
        Spec::EnvoyFilter(s) => networking::envoy_filter(s, r, f),
        Spec::ProxyConfig(s) => networking::proxy_config(s, r, f),
        Spec::PeerAuthentication(s) => security::peer_authentication(s, r, f),
        Spec::RequestAuthentication(s) => security::request_authentication(s, r, f),
        Spec::AuthorizationPolicy(s) => security::authorization_policy(s, r, f),
        Spec::Telemetry(s) => telemetry::telemetry(s, r, f),
        Spec::WasmPlugin(s) => extensions::wasm_plugin(s, r, f),
        Spec::IstioOperator(s) => install::istio_operator(s, r, f),
    }
}

/// Metadata rules for Istio kinds: a name that Kubernetes accepts, a valid
/// namespace, valid labels. (IstioOperator may be unnamed, as istioctl allows.)
fn metadata(r: &Resource, out: &mut Vec<Finding>) {
    let Some(spec) = r.spec() else {
        return;
    };
    let mut f = Field::new("metadata", out);
    match r.meta.name.as_deref() {
        None | Some("") => {
            if !matches!(spec, Spec::IstioOperator(_)) {
                f.at("name")
                    .error("is required; every resource needs metadata.name");
            }
        }
        Some(name) => {
            if let Some(reason) = dns1123_subdomain_problem(name) {
                f.at("name")
                    .error(format!("{name:?} is not a valid name: {reason}"));
            }
        }
    }
    if let Some(ns) = r.meta.namespace.as_deref() {
        checks::dns1123_label(&mut f.at("namespace"), ns);
    }
    if let Some(labels) = &r.meta.labels {
        checks::labels(&mut f.at("labels"), labels);
    }
}

/// Why `name` is not a DNS-1123 subdomain (what Kubernetes requires of object
/// names), or `None`.
pub fn dns1123_subdomain_problem(name: &str) -> Option<String> {
    if name.len() > 253 {
        return Some("it is longer than 253 characters".into());
    }
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    (!ok).then(|| {
        "use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
            .into()
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Helpers for rule tests: run a kind's rules on a YAML spec.
    use super::*;

    /// Loads one YAML document (a whole resource) and validates it; panics on a
    /// decode error, since rule tests start from specs that decode.
    pub fn findings(yaml: &str) -> Vec<Finding> {
        let loaded = common::load::load_str(yaml, "test.yaml");
        assert!(
            loaded.errors.is_empty(),
            "does not decode: {:?}",
            loaded.errors
        );
        validate(&loaded.resources[0], "default")
    }

    /// Findings at `level` for a resource of `api_version`/`kind` with `spec`, as
    /// `(path, message)` pairs.
    pub fn spec_findings(
        api_version: &str,
        kind: &str,
        (name, namespace): (&str, &str),
        spec: serde_json::Value,
        level: Level,
    ) -> Vec<(String, String)> {
        let doc = serde_json::json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        });
        findings(&doc.to_string())
            .into_iter()
            .filter(|f| f.level == level)
            .map(|f| (f.path.to_string(), f.message))
            .collect()
    }

    /// Asserts that `found` holds a finding at `path` whose message contains
    /// `fragment`.
    #[track_caller]
    pub fn expect(found: &[(String, String)], path: &str, fragment: &str) {
        assert!(
            found.iter().any(|(p, m)| p == path && m.contains(fragment)),
            "expected {path}: …{fragment}… in {found:#?}"
        );
    }

    /// The errors only, as `(path, message)` pairs.
    pub fn errors(yaml: &str) -> Vec<(String, String)> {
        findings(yaml)
            .into_iter()
            .filter(|f| f.level == Level::Error)
            .map(|f| (f.path.to_string(), f.message))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;

    #[test]
    fn names_must_be_dns_subdomains() {
        let e = errors(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: Reviews_DR}\nspec: {host: reviews}\n",
        );
        assert!(
            e.iter()
                .any(|(p, m)| p == "metadata.name" && m.contains("not a valid name")),
            "{e:?}"
        );
        let e = errors(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {}\nspec: {host: reviews}\n",
        );
        assert!(
            e.iter()
                .any(|(p, m)| p == "metadata.name" && m.contains("required")),
            "{e:?}"
        );
    }
}
