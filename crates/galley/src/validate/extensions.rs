//! Rules for `extensions.istio.io` `WasmPlugin`, after istio/istio
//! `pkg/config/validation/validation.go` (`ValidateWasmPlugin`) and the CRD's
//! schema rules.

use std::collections::HashSet;

use common::istio::extensions::{EnvValueSource, VmConfig, WasmPluginSpec};

use super::checks;
use super::field::{Field, ResourceCtx};
use super::security::policy_scope;

/// `WasmPlugin` rules; `f` is at `spec`.
pub fn wasm_plugin(spec: &WasmPluginSpec, _r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    policy_scope(
        f,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
    );
    url(&mut f.at("url"), &spec.url);
    if let Some(sha) = &spec.sha256 {
        sha256(&mut f.at("sha256"), sha);
    }
    if let Some(s) = &spec.image_pull_secret {
        if s.is_empty() {
            f.at("imagePullSecret")
                .error("must not be empty; name a Secret in this namespace or remove the field");
        } else if s.len() > 253 {
            f.at("imagePullSecret")
                .error("imagePullSecret must be at most 253 characters long");
        }
    }
    if let Some(n) = &spec.plugin_name {
        if n.is_empty() {
            f.at("pluginName")
                .error("must not be empty; remove it to use the resource name");
        } else if n.len() > 256 {
            f.at("pluginName")
                .error("pluginName must be at most 256 characters long");
        }
    }
    if spec.verification_key.is_some() {
        f.at("verificationKey")
            .warn("verificationKey is deprecated and ignored; verify images with sha256 instead");
    }
    if let Some(vm) = &spec.vm_config {
        vm_config(&mut f.at("vmConfig"), vm);
    }
    for (i, sel) in spec.match_.iter().enumerate() {
        let mut mf = f.at("match");
        let mut sf = mf.index(i);
        let mut ports = sf.at("ports");
        let mut seen = HashSet::new();
        for (j, p) in sel.ports.iter().enumerate() {
            let mut pe = ports.index(j);
            let mut pf = pe.at("number");
            if checks::port(&mut pf, p.number) && !seen.insert(p.number) {
                pf.error(format!(
                    "port {} is listed twice; list each port once",
                    p.number
                ));
            }
        }
    }
}

const URL_SCHEMES: &[&str] = &["oci", "file", "http", "https"];

/// A module URL: `oci://`, `file://`, `http://`, `https://`, or a bare OCI image
/// reference (`ghcr.io/org/plugin:v1`), which Istio reads as `oci://`.
fn url(f: &mut Field<'_>, u: &str) {
    if u.is_empty() {
        f.error("url field needs to be set: give an oci://, file://, http:// or https:// location of the module");
        return;
    }
    if u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        f.error(format!(
            "url {u:?} must not contain spaces or control characters"
        ));
        return;
    }
    match u.split_once("://") {
        Some((scheme, rest)) => {
            if !URL_SCHEMES.contains(&scheme) {
                f.error(format!(
                    "url contains unsupported scheme {scheme:?}; use one of oci, file, http or https"
                ));
            } else if rest.is_empty() || (scheme != "file" && rest.starts_with('/')) {
                f.error(format!("url {u:?} has no host or path after {scheme}://"));
            }
        }
        None => {
            if u.starts_with('/') || u.starts_with(':') {
                f.error(format!(
                    "url {u:?} is neither a URL nor an image reference; write file://{u} for a local file"
                ));
            }
        }
    }
}

fn sha256(f: &mut Field<'_>, sha: &str) {
    if sha.is_empty() {
        return;
    }
    if sha.len() != 64 {
        f.error(format!(
            "sha256 field must be 64 characters long; got {}",
            sha.len()
        ));
        return;
    }
    if !sha
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    {
        f.error("sha256 field must match [a-f0-9]{64}: lower-case hexadecimal only");
    }
}

fn vm_config(f: &mut Field<'_>, vm: &VmConfig) {
    let mut names = HashSet::new();
    for (i, env) in vm.env.iter().enumerate() {
        let mut envs = f.at("env");
        let mut ef = envs.index(i);
        if env.name.is_empty() {
            ef.at("name")
                .error("is required: name the environment variable");
        } else if env.name.len() > 256 {
            ef.at("name")
                .error("env.name must be at most 256 characters long");
        } else if !names.insert(env.name.as_str()) {
            ef.at("name").error(format!(
                "duplicate env {:?}; each variable may be set once",
                env.name
            ));
        }
        let source = env.value_from.unwrap_or_default();
        if source == EnvValueSource::Host && env.value.is_some() {
            ef.at("value").error(
                "value may only be set when valueFrom is INLINE; HOST takes the proxy's own variable of the same name",
            );
        }
        if env.value.as_ref().is_some_and(|v| v.len() > 2048) {
            ef.at("value")
                .error("value must be at most 2048 characters long");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::validate::Level;
    use crate::validate::test_support::{expect, spec_findings};

    fn run(spec: Value, level: Level) -> Vec<(String, String)> {
        spec_findings(
            "extensions.istio.io/v1alpha1",
            "WasmPlugin",
            ("w", "default"),
            spec,
            level,
        )
    }

    #[test]
    fn valid_plugins() {
        for url in [
            "oci://ghcr.io/istio-ecosystem/wasm-extensions/basic-auth:v0.1",
            "ghcr.io/istio-ecosystem/wasm-extensions/basic-auth:v0.1",
            "file:///opt/filters/plugin.wasm",
            "https://example.com/plugin.wasm",
        ] {
            let spec = json!({"selector": {"matchLabels": {"app": "productpage"}}, "url": url, "phase": "AUTHN",
                "sha256": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "vmConfig": {"env": [{"name": "POD_NAME", "valueFrom": "HOST"}, {"name": "A", "value": "b"}]},
                "match": [{"mode": "SERVER", "ports": [{"number": 8080}]}]});
            let e = run(spec, Level::Error);
            assert!(e.is_empty(), "{url}: {e:#?}");
        }
    }

    #[test]
    fn url_rules() {
        expect(
            &run(json!({}), Level::Error),
            "spec.url",
            "url field needs to be set",
        );
        expect(
            &run(json!({"url": "ftp://x/y.wasm"}), Level::Error),
            "spec.url",
            "unsupported scheme \"ftp\"",
        );
        expect(
            &run(json!({"url": "oci://"}), Level::Error),
            "spec.url",
            "no host or path",
        );
        expect(
            &run(json!({"url": "/opt/plugin.wasm"}), Level::Error),
            "spec.url",
            "write file:///opt/plugin.wasm",
        );
        expect(
            &run(json!({"url": "oci://a b"}), Level::Error),
            "spec.url",
            "must not contain spaces",
        );
    }

    #[test]
    fn checksum_names_and_deprecations() {
        let e = run(json!({"url": "oci://a/b", "sha256": "abc"}), Level::Error);
        expect(&e, "spec.sha256", "must be 64 characters long; got 3");
        let e = run(
            json!({"url": "oci://a/b", "sha256": "A".repeat(64)}),
            Level::Error,
        );
        expect(&e, "spec.sha256", "[a-f0-9]{64}");
        let e = run(
            json!({"url": "oci://a/b", "imagePullSecret": "", "pluginName": "x".repeat(300)}),
            Level::Error,
        );
        expect(&e, "spec.imagePullSecret", "must not be empty");
        expect(&e, "spec.pluginName", "at most 256");
        let w = run(
            json!({"url": "oci://a/b", "verificationKey": "k"}),
            Level::Warning,
        );
        expect(&w, "spec.verificationKey", "deprecated");
    }

    #[test]
    fn vm_env_and_match_ports() {
        let e = run(
            json!({"url": "oci://a/b",
            "vmConfig": {"env": [{"name": ""}, {"name": "A", "valueFrom": "HOST", "value": "x"}, {"name": "A"}]},
            "match": [{"ports": [{"number": 0}, {"number": 80}, {"number": 80}, {"number": 70000}]}]}),
            Level::Error,
        );
        expect(&e, "spec.vmConfig.env[0].name", "is required");
        expect(
            &e,
            "spec.vmConfig.env[1].value",
            "only be set when valueFrom is INLINE",
        );
        expect(&e, "spec.vmConfig.env[2].name", "duplicate env \"A\"");
        expect(&e, "spec.match[0].ports[0].number", "out of range");
        expect(&e, "spec.match[0].ports[2].number", "listed twice");
        expect(&e, "spec.match[0].ports[3].number", "out of range");
    }

    #[test]
    fn scope_is_exclusive() {
        let e = run(
            json!({"url": "oci://a/b", "selector": {"matchLabels": {"a": "b"}},
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "g"}]}),
            Level::Error,
        );
        expect(&e, "spec", "only one of selector, targetRef, targetRefs");
    }
}
