//! Rule tests for `security.istio.io`: each invalid case names the field path and a
//! fragment of the message.

use serde_json::{Value, json};

use crate::validate::Level;
use crate::validate::test_support::{expect, spec_findings};

/// Findings at `level` for a resource of `kind` with `spec`, as `(path, message)`.
fn run(kind: &str, spec: Value, level: Level) -> Vec<(String, String)> {
    spec_findings("security.istio.io/v1", kind, ("p", "default"), spec, level)
}

fn errors(kind: &str, spec: Value) -> Vec<(String, String)> {
    run(kind, spec, Level::Error)
}

fn warnings(kind: &str, spec: Value) -> Vec<(String, String)> {
    run(kind, spec, Level::Warning)
}

const AP: &str = "AuthorizationPolicy";
const PA: &str = "PeerAuthentication";
const RA: &str = "RequestAuthentication";

#[test]
fn valid_policies_have_no_errors() {
    for spec in [
        json!({}),
        json!({"rules": [{}]}),
        json!({"selector": {"matchLabels": {"app": "reviews"}}, "action": "ALLOW", "rules": [
            {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}],
             "to": [{"operation": {"methods": ["GET"]}}]},
            {"from": [{"source": {"namespaces": ["admin"]}}]}]}),
        json!({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["dev"]}}]}]}),
        json!({"action": "ALLOW", "rules": [{
        "from": [{"source": {"principals": ["*"], "requestPrincipals": ["iss/*"], "ipBlocks": ["10.0.0.0/8", "2001:db8::1"]}}],
        "to": [{"operation": {"ports": ["8080"], "paths": ["/api/{*}/items/{**}"], "hosts": ["*.example.com"]}}],
        "when": [
            {"key": "request.auth.claims[iss]", "values": ["https://accounts.google.com"]},
            {"key": "request.auth.claims[groups][admins]", "values": ["true"]},
            {"key": "request.headers[x-token]", "notValues": ["bad"]},
            {"key": "destination.port", "values": ["443"]},
            {"key": "source.serviceAccount", "values": ["default/sleep"]},
            {"key": "experimental.envoy.filters.network.mysql_proxy[db.table]", "values": ["[update]"]}
        ]}]}),
        json!({"action": "CUSTOM", "provider": {"name": "my-custom-authz"},
               "rules": [{"to": [{"operation": {"paths": ["/admin/*"]}}]}]}),
        json!({"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
               "rules": [{}]}),
    ] {
        let e = errors(AP, spec.clone());
        assert!(e.is_empty(), "{spec}: {e:#?}");
    }
    assert!(errors(PA, json!({"mtls": {"mode": "STRICT"}})).is_empty());
    assert!(
        errors(
            PA,
            json!({"selector": {"matchLabels": {"app": "finance"}},
        "portLevelMtls": {"8080": {"mode": "DISABLE"}}})
        )
        .is_empty()
    );
    assert!(
        errors(
            RA,
            json!({"selector": {"matchLabels": {"app": "reviews"}}, "jwtRules": [{
        "issuer": "https://accounts.example.com",
        "jwksUri": "https://accounts.example.com/.well-known/jwks.json",
        "audiences": ["reviews.example.com"],
        "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
        "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
        "timeout": "5s"}]})
        )
        .is_empty()
    );
}

#[test]
fn custom_action_needs_a_provider_and_rules() {
    let e = errors(AP, json!({"action": "CUSTOM", "rules": [{}]}));
    expect(
        &e,
        "spec.provider.name",
        "must not be empty with action CUSTOM",
    );
    let e = errors(AP, json!({"action": "CUSTOM", "provider": {"name": "x"}}));
    expect(&e, "spec.rules", "CUSTOM action without rules");
}

#[test]
fn provider_only_with_custom() {
    let e = errors(
        AP,
        json!({"action": "DENY", "provider": {"name": "x"}, "rules": [{}]}),
    );
    expect(
        &e,
        "spec.provider",
        "only be set with action CUSTOM; got action DENY",
    );
    let e = errors(AP, json!({"provider": {"name": "x"}}));
    expect(&e, "spec.provider", "got action ALLOW");
}

#[test]
fn deny_needs_rules_and_audit_without_rules_warns() {
    expect(
        &errors(AP, json!({"action": "DENY"})),
        "spec.rules",
        "DENY action without rules",
    );
    expect(
        &warnings(AP, json!({"action": "AUDIT"})),
        "spec.rules",
        "AUDIT action without rules",
    );
}

#[test]
fn custom_action_refuses_identity_matches() {
    let e = errors(
        AP,
        json!({"action": "CUSTOM", "provider": {"name": "x"}, "rules": [
        {"from": [{"source": {"principals": ["a"], "ipBlocks": ["1.2.3.4"]}}],
         "when": [{"key": "request.auth.claims[iss]", "values": ["x"]}]}]}),
    );
    expect(
        &e,
        "spec.rules[0].from[0].source.principals",
        "not supported with action CUSTOM",
    );
    expect(
        &e,
        "spec.rules[0].when[0].key",
        "request.auth.claims[iss] is currently not supported",
    );
    assert!(!e.iter().any(|(p, _)| p.ends_with("ipBlocks")), "{e:#?}");
}

#[test]
fn selector_and_target_refs_are_exclusive_and_checked() {
    let e = errors(
        AP,
        json!({"selector": {"matchLabels": {"app": "a"}},
        "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}}),
    );
    expect(
        &e,
        "spec",
        "only one of selector, targetRef, targetRefs may be set",
    );
    let e = errors(
        AP,
        json!({"targetRefs": [{"group": "apps", "kind": "Deployment", "name": "d"}]}),
    );
    expect(
        &e,
        "spec.targetRefs[0].kind",
        "got group \"apps\" kind \"Deployment\"",
    );
    let e = errors(
        AP,
        json!({"targetRef": {"kind": "Service", "name": "s", "namespace": "other"}}),
    );
    expect(
        &e,
        "spec.targetRef.namespace",
        "cross-namespace references are not supported",
    );
    let e = errors(AP, json!({"targetRef": {"kind": "Service", "name": ""}}));
    expect(&e, "spec.targetRef.name", "is required");
}

#[test]
fn selectors_refuse_wildcards_and_warn_when_empty() {
    let e = errors(AP, json!({"selector": {"matchLabels": {"app": "rev*"}}}));
    expect(
        &e,
        "spec.selector.matchLabels.app",
        "wildcard is not supported in a selector",
    );
    let w = warnings(AP, json!({"selector": {}}));
    expect(&w, "spec.selector", "without labels");
}

#[test]
fn sources_and_operations_must_not_be_empty_or_missing() {
    let e = errors(
        AP,
        json!({"rules": [{"from": [{"source": {}}, {}], "to": [{"operation": {}}, {}]}]}),
    );
    expect(
        &e,
        "spec.rules[0].from[0].source",
        "`from.source` must not be empty",
    );
    expect(
        &e,
        "spec.rules[0].from[1].source",
        "`from.source` must not be nil",
    );
    expect(
        &e,
        "spec.rules[0].to[0].operation",
        "`to.operation` must not be empty",
    );
    expect(
        &e,
        "spec.rules[0].to[1].operation",
        "`to.operation` must not be nil",
    );
}

#[test]
fn ports_must_be_numbers_in_range() {
    let e = errors(
        AP,
        json!({"rules": [{"to": [{"operation": {"ports": ["http", "70000"], "notPorts": ["0"]}}]}]}),
    );
    expect(
        &e,
        "spec.rules[0].to[0].operation.ports[0]",
        "bad port \"http\"",
    );
    expect(&e, "spec.rules[0].to[0].operation.ports[1]", "1 to 65535");
    expect(
        &e,
        "spec.rules[0].to[0].operation.notPorts[0]",
        "bad port \"0\"",
    );
}

#[test]
fn ip_blocks_must_be_ips_or_cidrs() {
    let e = errors(
        AP,
        json!({"rules": [{"from": [{"source": {
        "ipBlocks": ["10.0.0.0/33"], "notRemoteIpBlocks": ["not-an-ip"]}}]}]}),
    );
    expect(
        &e,
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "not a valid IP address or CIDR",
    );
    expect(
        &e,
        "spec.rules[0].from[0].source.notRemoteIpBlocks[0]",
        "not a valid IP address or CIDR",
    );
}

#[test]
fn empty_values_are_refused() {
    let e = errors(
        AP,
        json!({"rules": [{"from": [{"source": {"principals": [""]}}],
        "to": [{"operation": {"methods": [""]}}]}]}),
    );
    expect(
        &e,
        "spec.rules[0].from[0].source.principals[0]",
        "empty value not allowed",
    );
    expect(
        &e,
        "spec.rules[0].to[0].operation.methods[0]",
        "empty value not allowed",
    );
}

#[test]
fn service_accounts_rules() {
    let e = errors(
        AP,
        json!({"rules": [{"from": [
        {"source": {"serviceAccounts": ["ns/sa"], "principals": ["x"]}},
        {"source": {"serviceAccounts": ["ns/*", "a/b/c", "/sa"]}}]}]}),
    );
    expect(
        &e,
        "spec.rules[0].from[0].source",
        "cannot set serviceAccounts with namespaces or principals",
    );
    expect(
        &e,
        "spec.rules[0].from[1].source.serviceAccounts[0]",
        "wildcard not allowed",
    );
    expect(
        &e,
        "spec.rules[0].from[1].source.serviceAccounts[1]",
        "expected format",
    );
    expect(
        &e,
        "spec.rules[0].from[1].source.serviceAccounts[2]",
        "empty namespace",
    );
}

#[test]
fn conditions_need_known_keys_and_values() {
    let e = errors(
        AP,
        json!({"rules": [{"when": [
            {"key": "request.host", "values": ["a"]},
            {"key": "source.ip"},
            {"key": "request.auth.claims[]", "values": ["a"]},
            {"key": "destination.port", "values": ["abc"]},
            {"key": "source.ip", "notValues": ["1.2.3.4/40"]},
            {"key": "destination.namespace", "values": ["x"]},
            {"key": "destination.labels[app]", "values": ["x"]},
            {"key": "", "values": ["x"]}
        ]}]}),
    );
    expect(
        &e,
        "spec.rules[0].when[0].key",
        "unknown attribute \"request.host\"",
    );
    expect(
        &e,
        "spec.rules[0].when[1]",
        "at least one of `values` or `notValues` must be set for key source.ip",
    );
    expect(&e, "spec.rules[0].when[2].key", "bad key");
    expect(&e, "spec.rules[0].when[3].values[0]", "bad port \"abc\"");
    expect(
        &e,
        "spec.rules[0].when[4].notValues[0]",
        "not a valid IP address or CIDR",
    );
    expect(
        &e,
        "spec.rules[0].when[5].key",
        "replaced by the policy's metadata.namespace",
    );
    expect(
        &e,
        "spec.rules[0].when[6].key",
        "replaced by the workload selector",
    );
    expect(&e, "spec.rules[0].when[7].key", "is required");
}

#[test]
fn path_templates_follow_istio_rules() {
    let e = errors(
        AP,
        json!({"rules": [{"to": [{"operation": {
        "paths": ["/a/{**}/b/{*}", "/a/{x}"], "notPaths": ["/a/{*}/b c"]}}]}]}),
    );
    expect(
        &e,
        "spec.rules[0].to[0].operation.paths[0]",
        "{**} must be the last operator",
    );
    expect(&e, "spec.rules[0].to[0].operation.paths[1]", "'{' or '}'");
    expect(
        &e,
        "spec.rules[0].to[0].operation.notPaths[0]",
        "not a valid literal",
    );
}

#[test]
fn suspicious_values_warn() {
    let w = warnings(
        AP,
        json!({"action": "DENY", "rules": [{
        "from": [{"source": {"requestPrincipals": ["iss/*"]}}],
        "to": [{"operation": {"methods": ["get", "FETCH"], "paths": ["api"]}}]}]}),
    );
    expect(&w, "spec.rules[0]", "deny all traffic to TCP ports");
    expect(
        &w,
        "spec.rules[0].to[0].operation.methods[0]",
        "write \"GET\"",
    );
    expect(
        &w,
        "spec.rules[0].to[0].operation.methods[1]",
        "not a standard HTTP method",
    );
    expect(
        &w,
        "spec.rules[0].to[0].operation.paths[0]",
        "does not start with '/'",
    );
    let w = warnings(
        AP,
        json!({"rules": [{"from": [{"source": {"principals": ["cluster.local/ns/*/sa/x"]}}]}]}),
    );
    expect(
        &w,
        "spec.rules[0].from[0].source.principals[0]",
        "matched literally",
    );
    let w = warnings(
        AP,
        json!({"action": "DENY", "rules": [{"from": [{"source": {"namespaces": ["dev"]}}]}]}),
    );
    assert!(w.is_empty(), "{w:#?}");
}

#[test]
fn port_level_mtls_needs_a_selector_and_valid_ports() {
    let e = errors(PA, json!({"portLevelMtls": {"8080": {"mode": "DISABLE"}}}));
    expect(&e, "spec.portLevelMtls", "portLevelMtls requires selector");
    let e = errors(
        PA,
        json!({"selector": {"matchLabels": {}}, "portLevelMtls": {"80": {"mode": "STRICT"}}}),
    );
    expect(&e, "spec.portLevelMtls", "portLevelMtls requires selector");
    let e = errors(
        PA,
        json!({"selector": {"matchLabels": {"app": "a"}},
        "portLevelMtls": {"0": {"mode": "STRICT"}, "70000": {"mode": "STRICT"}}}),
    );
    expect(&e, "spec.portLevelMtls.0", "out of range");
    expect(&e, "spec.portLevelMtls.70000", "out of range");
}

#[test]
fn jwt_rules_issuer_and_keys() {
    let e = errors(RA, json!({"jwtRules": [{"audiences": [""]}]}));
    expect(
        &e,
        "spec.jwtRules[0].issuer",
        "issuer or jwksUri must be set",
    );
    expect(&e, "spec.jwtRules[0].audiences[0]", "non-empty");
    let e = errors(
        RA,
        json!({"jwtRules": [{"issuer": "a", "jwksUri": "ftp://keys.example.com/jwks"}]}),
    );
    expect(
        &e,
        "spec.jwtRules[0].jwksUri",
        "not a valid http:// or https:// URL",
    );
    let e = errors(
        RA,
        json!({"jwtRules": [{"issuer": "a", "jwksUri": "https://a/jwks", "jwks": "{\"keys\": []}"}]}),
    );
    expect(&e, "spec.jwtRules[0]", "only one of jwks and jwksUri");
    let e = errors(
        RA,
        json!({"jwtRules": [{"issuer": "a", "jwks": "{not json"}, {"issuer": "b", "jwks": "{\"keys\": [{\"n\": \"x\"}]}"}]}),
    );
    expect(
        &e,
        "spec.jwtRules[0].jwks",
        "is not a valid JSON Web Key Set: it is not JSON",
    );
    expect(&e, "spec.jwtRules[1].jwks", "key 0 has no \"kty\"");
    let w = warnings(
        RA,
        json!({"jwtRules": [{"jwksUri": "https://a/jwks"}, {"issuer": "x", "jwks_uri": "https://a/jwks"}]}),
    );
    expect(&w, "spec.jwtRules[0].issuer", "tokens from any issuer");
    expect(&w, "spec.jwtRules[1].jwks_uri", "write jwksUri");
}

#[test]
fn jwt_rules_locations_headers_and_timeout() {
    let e = errors(
        RA,
        json!({"jwtRules": [{
        "issuer": "a",
        "fromHeaders": [{"name": ""}, {"name": "bad header"}],
        "fromParams": [""],
        "fromCookies": [""],
        "outputPayloadToHeader": "x payload",
        "outputClaimToHeaders": [{"header": "x.claim", "claim": "sub"}, {"header": "x-a", "claim": ""}],
        "spaceDelimitedClaims": [""],
        "timeout": "500us"
    }, {"issuer": "b", "timeout": "1500us"}]}),
    );
    expect(&e, "spec.jwtRules[0].fromHeaders[0].name", "non-empty");
    expect(
        &e,
        "spec.jwtRules[0].fromHeaders[1].name",
        "not a valid HTTP header name",
    );
    expect(&e, "spec.jwtRules[0].fromParams[0]", "non-empty");
    expect(&e, "spec.jwtRules[0].fromCookies[0]", "non-empty");
    expect(
        &e,
        "spec.jwtRules[0].outputPayloadToHeader",
        "not a valid HTTP header name",
    );
    expect(
        &e,
        "spec.jwtRules[0].outputClaimToHeaders[0].header",
        "letters, digits, '-' and '_'",
    );
    expect(
        &e,
        "spec.jwtRules[0].outputClaimToHeaders[1].claim",
        "is required",
    );
    expect(&e, "spec.jwtRules[0].spaceDelimitedClaims[0]", "non-empty");
    expect(&e, "spec.jwtRules[0].timeout", "at least 1ms");
    expect(&e, "spec.jwtRules[1].timeout", "millisecond precision");
}

#[test]
fn request_authentication_scope() {
    let e = errors(
        RA,
        json!({"selector": {"matchLabels": {"app": "a"}},
        "targetRefs": [{"kind": "Service", "name": "s"}]}),
    );
    expect(&e, "spec", "only one of selector, targetRef, targetRefs");
}
