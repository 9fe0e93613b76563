//! Rules for `security.istio.io`: `PeerAuthentication`, `RequestAuthentication` and
//! `AuthorizationPolicy`, after istio/istio `pkg/config/validation/validation.go`
//! and `pkg/config/security/security.go`.
//!
//! The policy scope checks (`selector` / `targetRef` / `targetRefs`) live in `security/scope.rs`
//! and are shared with the telemetry and extensions rules.
//!
//! Where Mizzen differs from Istio, it is noted at the rule: port `0` in ports lists
//! is refused (Istio lets it through, though it never matches), and a `*` in the
//! middle of a principal or namespace is warned about (Istio matches it literally).

use std::collections::HashSet;

use common::istio::security::{
    AuthorizationPolicyAction, AuthorizationPolicySpec, JwtRule, Operation, PeerAuthenticationSpec,
    RequestAuthenticationSpec, Rule, Source,
};

use super::checks;
use super::field::{Field, ResourceCtx};

mod scope;
#[cfg(test)]
mod tests;

pub(crate) use scope::{policy_scope, workload_selector};

// ---------------------------------------------------------------------------
// PeerAuthentication

/// `PeerAuthentication` rules; `f` is at `spec`.
pub fn peer_authentication(spec: &PeerAuthenticationSpec, _r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    if let Some(s) = &spec.selector {
        workload_selector(&mut f.at("selector"), s);
    }
    if spec.port_level_mtls.is_empty() {
        return;
    }
    let has_labels = spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    let mut plm = f.at("portLevelMtls");
    if !has_labels {
        plm.error(
            "portLevelMtls requires selector: a mesh- or namespace-wide PeerAuthentication cannot set port-level mTLS; add selector.matchLabels",
        );
    }
    for port in spec.port_level_mtls.keys() {
        checks::port(&mut plm.key(&port.to_string()), *port);
    }
}

// ---------------------------------------------------------------------------
// RequestAuthentication

/// `RequestAuthentication` rules; `f` is at `spec`.
pub fn request_authentication(
    spec: &RequestAuthenticationSpec,
    _r: &ResourceCtx<'_>,
    f: &mut Field<'_>,
) {
    policy_scope(
        f,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
    );
    let mut issuers = HashSet::new();
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        let mut rules = f.at("jwtRules");
        let mut rf = rules.index(i);
        jwt_rule(&mut rf, rule);
        if !rule.issuer.is_empty() && !issuers.insert(rule.issuer.as_str()) {
            rf.at("issuer").warn(format!(
                "issuer {:?} appears in more than one rule; only the first rule is used for its tokens",
                rule.issuer
            ));
        }
    }
}

/// Header names Istio accepts for `outputClaimToHeaders` (the CRD's pattern).
fn strict_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

fn jwt_rule(f: &mut Field<'_>, rule: &JwtRule) {
    let uri = rule.jwks_url();
    if rule.issuer.is_empty() {
        if uri.is_none() {
            f.at("issuer").error(
                "issuer or jwksUri must be set; set issuer to the `iss` claim of the tokens",
            );
        } else {
            f.at("issuer").warn(
                "is empty: tokens from any issuer signed by these keys are accepted; set it to the expected `iss` claim",
            );
        }
    }
    for (j, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            f.at("audiences")
                .index(j)
                .error("audience must be a non-empty string");
        }
    }
    if rule.jwks_uri.is_some() && rule.jwks_uri_snake.is_some() {
        f.at("jwks_uri")
            .error("jwks_uri and jwksUri are the same field; keep only jwksUri");
    } else if rule.jwks_uri_snake.is_some() {
        f.at("jwks_uri")
            .warn("jwks_uri is the legacy spelling; write jwksUri");
    }
    if rule.jwks.is_some() && uri.is_some() {
        f.error("only one of jwks and jwksUri may be set: inline keys or a URL to fetch them from");
    }
    if let Some(u) = &rule.jwks_uri {
        checks::http_url(&mut f.at("jwksUri"), u);
    }
    if let Some(u) = &rule.jwks_uri_snake {
        checks::http_url(&mut f.at("jwks_uri"), u);
    }
    if let Some(jwks) = &rule.jwks
        && let Err(why) = jwks_problem(jwks)
    {
        f.at("jwks")
            .error(format!("is not a valid JSON Web Key Set: {why}"));
    }
    for (j, h) in rule.from_headers.iter().enumerate() {
        let mut hl = f.at("fromHeaders");
        let mut he = hl.index(j);
        let mut hf = he.at("name");
        if h.name.is_empty() {
            hf.error("location header name must be a non-empty string");
        } else {
            checks::header_name(&mut hf, &h.name, false);
        }
    }
    for (j, p) in rule.from_params.iter().enumerate() {
        if p.is_empty() {
            f.at("fromParams")
                .index(j)
                .error("query parameter name must be a non-empty string");
        }
    }
    for (j, c) in rule.from_cookies.iter().enumerate() {
        if c.is_empty() {
            f.at("fromCookies")
                .index(j)
                .error("cookie name must be a non-empty string");
        }
    }
    if let Some(h) = &rule.output_payload_to_header {
        checks::header_name(&mut f.at("outputPayloadToHeader"), h, false);
    }
    for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
        let mut cl = f.at("outputClaimToHeaders");
        let mut cf = cl.index(j);
        if c.claim.is_empty() {
            cf.at("claim").error("is required: name the claim to copy");
        }
        if c.header.is_empty() {
            cf.at("header")
                .error("is required: name the header to create");
        } else if !strict_header_name(&c.header) {
            cf.at("header").error(format!(
                "header name {:?} is not valid; use letters, digits, '-' and '_' only",
                c.header
            ));
        }
    }
    for (j, c) in rule.space_delimited_claims.iter().enumerate() {
        if c.is_empty() {
            f.at("spaceDelimitedClaims")
                .index(j)
                .error("claim name must be a non-empty string");
        }
    }
    if let Some(t) = &rule.timeout {
        checks::istio_duration(&mut f.at("timeout"), t);
    }
}

/// Why `text` is not a JWKS (or a single JWK), as the JWT library Istio uses parses
/// them: a JSON object with a `keys` array of keys, or one key; every key has a
/// string `kty`.
fn jwks_problem(text: &str) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("it is not JSON ({e})"))?;
    let obj = v
        .as_object()
        .ok_or("it must be a JSON object with a \"keys\" array")?;
    let keys: Vec<&serde_json::Value> = match obj.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(_) => return Err("\"keys\" must be an array of keys".into()),
        None => vec![&v],
    };
    for (i, k) in keys.iter().enumerate() {
        let kty = k.get("kty").and_then(|t| t.as_str());
        match kty {
            Some("RSA" | "EC" | "oct" | "OKP") => {}
            Some(other) => return Err(format!("key {i} has unsupported kty {other:?}")),
            None => return Err(format!("key {i} has no \"kty\" member")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// AuthorizationPolicy

/// `AuthorizationPolicy` rules; `f` is at `spec`.
pub fn authorization_policy(
    spec: &AuthorizationPolicySpec,
    _r: &ResourceCtx<'_>,
    f: &mut Field<'_>,
) {
    policy_scope(
        f,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
    );
    let action = spec.action.unwrap_or_default();
    match action {
        AuthorizationPolicyAction::Custom => {
            if spec.rules.is_empty() {
                f.at("rules").error(
                    "CUSTOM action without rules is meaningless as it will never be triggered; add an empty rule `{}` to apply it to every request",
                );
            } else if spec.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
                let mut pf = f.at("provider");
                let mut nf = pf.at("name");
                nf.error("must not be empty with action CUSTOM: name an extension provider from meshConfig.extensionProviders");
            }
            for (i, rule) in spec.rules.iter().enumerate() {
                custom_rule_limits(&mut f.at("rules").index(i), rule);
            }
        }
        other => {
            if spec.provider.is_some() {
                f.at("provider").error(format!(
                    "may only be set with action CUSTOM; got action {}",
                    action_name(other)
                ));
            }
            if spec.rules.is_empty() && other == AuthorizationPolicyAction::Deny {
                f.at("rules").error(
                    "DENY action without rules is meaningless as it will never be triggered; add an empty rule `{}` to deny every request",
                );
            }
            if spec.rules.is_empty() && other == AuthorizationPolicyAction::Audit {
                f.at("rules")
                    .warn("AUDIT action without rules never audits anything; add rules, or an empty rule `{}` to audit every request");
            }
        }
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        authz_rule(&mut f.at("rules").index(i), rule, action);
    }
}

fn action_name(a: AuthorizationPolicyAction) -> &'static str {
    match a {
        AuthorizationPolicyAction::Allow => "ALLOW",
        AuthorizationPolicyAction::Deny => "DENY",
        AuthorizationPolicyAction::Audit => "AUDIT",
        AuthorizationPolicyAction::Custom => "CUSTOM",
    }
}

/// Source fields and condition keys the CUSTOM action cannot evaluate.
fn custom_rule_limits(f: &mut Field<'_>, rule: &Rule) {
    for (j, from) in rule.from.iter().enumerate() {
        let Some(src) = &from.source else { continue };
        let unsupported = [
            ("namespaces", !src.namespaces.is_empty()),
            ("notNamespaces", !src.not_namespaces.is_empty()),
            ("serviceAccounts", !src.service_accounts.is_empty()),
            ("notServiceAccounts", !src.not_service_accounts.is_empty()),
            ("principals", !src.principals.is_empty()),
            ("notPrincipals", !src.not_principals.is_empty()),
            ("requestPrincipals", !src.request_principals.is_empty()),
            (
                "notRequestPrincipals",
                !src.not_request_principals.is_empty(),
            ),
        ];
        for (name, set) in unsupported {
            if set {
                f.at("from").index(j).at("source").at(name).error(format!(
                    "{name} is currently not supported with action CUSTOM; match on ipBlocks or operations, or use an ALLOW/DENY policy for identities"
                ));
            }
        }
    }
    for (j, cond) in rule.when.iter().enumerate() {
        let k = cond.key.as_str();
        if matches!(
            k,
            "source.namespace" | "source.serviceAccount" | "source.principal"
        ) || k.starts_with("request.auth.")
        {
            f.at("when").index(j).at("key").error(format!(
                "{k} is currently not supported with action CUSTOM; use an ALLOW/DENY policy for identity conditions"
            ));
        }
    }
}

fn authz_rule(f: &mut Field<'_>, rule: &Rule, action: AuthorizationPolicyAction) {
    let mut from_exists = false;
    let mut tcp_in_from = false;
    for (j, from) in rule.from.iter().enumerate() {
        let mut fl = f.at("from");
        let mut fe = fl.index(j);
        let mut sf = fe.at("source");
        match &from.source {
            None => sf.error("`from.source` must not be nil; give each from entry a source"),
            Some(src) => {
                from_exists = true;
                tcp_in_from |= source(&mut sf, src);
            }
        }
    }
    let mut to_exists = false;
    let mut tcp_in_to = false;
    for (j, to) in rule.to.iter().enumerate() {
        let mut tl = f.at("to");
        let mut te = tl.index(j);
        let mut of = te.at("operation");
        match &to.operation {
            None => of.error("`to.operation` must not be nil; give each to entry an operation"),
            Some(op) => {
                to_exists = true;
                tcp_in_to |= operation(&mut of, op);
            }
        }
    }
    for (j, cond) in rule.when.iter().enumerate() {
        let mut wl = f.at("when");
        let mut cf = wl.index(j);
        if cond.key.is_empty() {
            cf.at("key").error(
                "is required: name an attribute such as request.headers[x-token] or source.ip",
            );
            continue;
        }
        if cond.values.is_empty() && cond.not_values.is_empty() {
            cf.error(format!(
                "at least one of `values` or `notValues` must be set for key {}",
                cond.key
            ));
            continue;
        }
        if !attribute_key(&mut cf.at("key"), &cond.key) {
            continue;
        }
        attribute_values(&mut cf.at("values"), &cond.key, &cond.values);
        attribute_values(&mut cf.at("notValues"), &cond.key, &cond.not_values);
    }
    let http_only = (from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to);
    if http_only && action == AuthorizationPolicyAction::Deny {
        f.warn(
            "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port",
        );
    }
}

/// Checks one `Source`; returns whether it uses attributes TCP traffic carries.
fn source(f: &mut Field<'_>, s: &Source) -> bool {
    let identity = !s.principals.is_empty()
        || !s.not_principals.is_empty()
        || !s.namespaces.is_empty()
        || !s.not_namespaces.is_empty();
    let accounts = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
    if identity && accounts {
        f.error("cannot set serviceAccounts with namespaces or principals; use one way of naming the caller");
    }
    let lists: [(&str, &Vec<String>); 12] = [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
        ("requestPrincipals", &s.request_principals),
        ("notRequestPrincipals", &s.not_request_principals),
        ("namespaces", &s.namespaces),
        ("notNamespaces", &s.not_namespaces),
        ("serviceAccounts", &s.service_accounts),
        ("notServiceAccounts", &s.not_service_accounts),
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        f.error("`from.source` must not be empty; set principals, requestPrincipals, namespaces, serviceAccounts, ipBlocks, remoteIpBlocks or a not* form");
        return false;
    }
    for (name, list) in lists {
        let mut lf = f.at(name);
        match name {
            "serviceAccounts" | "notServiceAccounts" => {
                service_accounts(&mut lf, list);
            }
            "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks" => {
                for (k, v) in list.iter().enumerate() {
                    if !non_empty(&mut lf.index(k), v) {
                        continue;
                    }
                    checks::ip_or_cidr(&mut lf.index(k), v);
                }
            }
            _ => {
                for (k, v) in list.iter().enumerate() {
                    if non_empty(&mut lf.index(k), v) {
                        wildcard_form(&mut lf.index(k), v);
                    }
                }
            }
        }
    }
    !s.principals.is_empty()
        || !s.not_principals.is_empty()
        || !s.namespaces.is_empty()
        || !s.not_namespaces.is_empty()
        || !s.ip_blocks.is_empty()
        || !s.not_ip_blocks.is_empty()
        || !s.remote_ip_blocks.is_empty()
        || !s.not_remote_ip_blocks.is_empty()
        || accounts
}

/// Checks one `Operation`; returns whether it uses ports (which TCP traffic carries).
fn operation(f: &mut Field<'_>, op: &Operation) -> bool {
    let lists: [(&str, &Vec<String>); 8] = [
        ("hosts", &op.hosts),
        ("notHosts", &op.not_hosts),
        ("ports", &op.ports),
        ("notPorts", &op.not_ports),
        ("methods", &op.methods),
        ("notMethods", &op.not_methods),
        ("paths", &op.paths),
        ("notPaths", &op.not_paths),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        f.error(
            "`to.operation` must not be empty; set hosts, ports, methods, paths or a not* form",
        );
        return false;
    }
    for (name, list) in lists {
        let mut lf = f.at(name);
        for (k, v) in list.iter().enumerate() {
            let mut ef = lf.index(k);
            if !non_empty(&mut ef, v) {
                continue;
            }
            match name {
                "ports" | "notPorts" => {
                    port_string(&mut ef, v);
                }
                "methods" | "notMethods" => method(&mut ef, v),
                "paths" | "notPaths" => path(&mut ef, v),
                _ => {}
            }
        }
    }
    !op.ports.is_empty() || !op.not_ports.is_empty()
}

fn non_empty(f: &mut Field<'_>, v: &str) -> bool {
    if v.is_empty() {
        f.error("empty value not allowed; remove it or use \"*\" to match any non-empty value");
        return false;
    }
    true
}

/// A port given as a string, 1 to 65535. (Istio accepts `0`, which never matches.)
fn port_string(f: &mut Field<'_>, v: &str) -> bool {
    match v.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => true,
        _ => {
            f.error(format!(
                "bad port {v:?}: ports must be numbers from 1 to 65535"
            ));
            false
        }
    }
}

fn method(f: &mut Field<'_>, m: &str) {
    if checks::HTTP_METHODS.contains(&m) || m == "*" {
        return;
    }
    let upper = m.to_ascii_uppercase();
    if checks::HTTP_METHODS.contains(&upper.as_str()) {
        f.warn(format!(
            "method {m:?} will not match: methods are case-sensitive; write {upper:?}"
        ));
    } else {
        f.warn(format!(
            "{m:?} is not a standard HTTP method ({}); only requests with exactly this method match",
            checks::HTTP_METHODS.join(", ")
        ));
    }
}

/// Paths: Istio's path-template rules (`{*}` and `{**}`), and a leading `/`.
fn path(f: &mut Field<'_>, p: &str) {
    if let Err(why) = path_template_problem(p) {
        f.error(format!("invalid or unsupported path {p:?}: {why}"));
        return;
    }
    if !p.starts_with('/') && !p.starts_with('*') {
        f.warn(format!(
            "path {p:?} does not start with '/', so it never matches a request path; write \"/{p}\""
        ));
    }
}

fn path_template_problem(p: &str) -> Result<(), String> {
    let has_template = p.contains("{*}") || p.contains("{**}");
    let mut seen_any = false;
    for glob in p.trim_matches('/').split('/') {
        if glob == "{*}" || glob == "{**}" {
            if seen_any {
                return Err("{**} must be the last operator in the template".into());
            }
            seen_any = glob == "{**}";
            continue;
        }
        if glob.contains(['{', '}']) {
            return Err("'{' or '}' may appear only in the {*} and {**} templates".into());
        }
        let literal_ok = !glob.is_empty()
            && glob
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&c));
        if has_template && !literal_ok {
            return Err(format!(
                "segment {glob:?} is not a valid literal next to a path template"
            ));
        }
    }
    Ok(())
}

/// Principals, request principals and namespaces support `*` alone, at the start
/// (suffix match) or at the end (prefix match). Istio matches any other `*`
/// literally, which is almost always a mistake, so Mizzen warns.
fn wildcard_form(f: &mut Field<'_>, v: &str) {
    let stars = v.matches('*').count();
    let ok = stars == 0 || v == "*" || (stars == 1 && (v.starts_with('*') || v.ends_with('*')));
    if !ok {
        f.warn(format!(
            "{v:?} uses '*' in a way Istio does not support; '*' works alone, at the start (suffix match) or at the end (prefix match), elsewhere it is matched literally"
        ));
    }
}

/// Istio's `CheckServiceAccount`: at most 16 values of `sa` or `ns/sa`, no wildcards.
fn service_accounts(f: &mut Field<'_>, list: &[String]) {
    if list.len() > 16 {
        f.error(format!(
            "may not have more than 16 values (got {}); split the rule",
            list.len()
        ));
    }
    for (k, v) in list.iter().enumerate() {
        let mut ef = f.index(k);
        if !non_empty(&mut ef, v) {
            continue;
        }
        if let Some(why) = service_account_problem(v) {
            ef.error(why);
        }
    }
}

fn service_account_problem(v: &str) -> Option<String> {
    if v.contains('*') {
        return Some(format!(
            "wildcard not allowed in service account {v:?}; list each one"
        ));
    }
    if v.len() > 320 {
        return Some(format!("service account {v:?} exceeds 320 characters"));
    }
    let form = "expected format 'serviceAccount' or 'namespace/serviceAccount'";
    match v.matches('/').count() {
        0 => None,
        1 => {
            let (ns, sa) = v.split_once('/').unwrap_or_default();
            if ns.is_empty() {
                Some(format!("{form}, found empty namespace in {v:?}"))
            } else if sa.is_empty() {
                Some(format!("{form}, found empty serviceAccount in {v:?}"))
            } else {
                None
            }
        }
        _ => Some(format!("{form}, found {v:?}")),
    }
}

/// The condition keys Istio supports, for messages.
const SUPPORTED_KEYS: &str = "request.headers[<name>], source.ip, remote.ip, source.namespace, source.serviceAccount, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port, connection.sni, experimental.envoy.filters.*";

/// `a[b]` (and `a[b][c]` for nested claims): a non-empty name in brackets at the end.
fn map_key_ok(key: &str) -> bool {
    match key.find('[') {
        Some(open) => key.ends_with(']') && open > 0 && open < key.len() - 2,
        None => false,
    }
}

/// Checks a `when` key; returns whether it is a known attribute with valid syntax.
fn attribute_key(f: &mut Field<'_>, key: &str) -> bool {
    let map_like = [
        "request.headers",
        "request.experimental.inline.headers",
        "request.auth.claims",
        "experimental.envoy.filters.",
    ];
    if map_like.iter().any(|p| key.starts_with(p)) {
        if !map_key_ok(key) {
            f.error(format!(
                "bad key {key:?}: should have the form {}[<name>]",
                key.split('[').next().unwrap_or(key)
            ));
            return false;
        }
        return true;
    }
    match key {
        "source.ip"
        | "remote.ip"
        | "source.namespace"
        | "source.serviceAccount"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "destination.ip"
        | "destination.port"
        | "connection.sni" => true,
        "destination.namespace" => {
            f.error("attribute destination.namespace is replaced by the policy's metadata.namespace; move the policy to that namespace");
            false
        }
        "destination.name" | "destination.user" => {
            f.error(format!(
                "deprecated attribute {key}: only supported in v1alpha1; use a workload selector"
            ));
            false
        }
        k if k.starts_with("destination.labels") => {
            f.error(format!(
                "attribute {key} is replaced by the workload selector; use spec.selector.matchLabels"
            ));
            false
        }
        _ => {
            f.error(format!(
                "unknown attribute {key:?}; supported keys are {SUPPORTED_KEYS}"
            ));
            false
        }
    }
}

/// Checks `values` / `notValues` of a known attribute.
fn attribute_values(f: &mut Field<'_>, key: &str, values: &[String]) {
    if matches!(key, "source.serviceAccount") {
        service_accounts(f, values);
        return;
    }
    for (i, v) in values.iter().enumerate() {
        let mut vf = f.index(i);
        if !non_empty(&mut vf, v) {
            continue;
        }
        match key {
            "source.ip" | "remote.ip" | "destination.ip" => {
                checks::ip_or_cidr(&mut vf, v);
            }
            "destination.port" => {
                port_string(&mut vf, v);
            }
            _ => {}
        }
    }
}
