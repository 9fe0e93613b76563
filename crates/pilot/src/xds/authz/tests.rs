//! Policy → RBAC translation, golden-ish on the generated protos: the seed
//! examples of the users' guide, selection, actions and their order, the TCP
//! variants and what is reported as not applied.

use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::config::rbac::v3::{
    Permission, Policy, Principal, Rbac, permission, principal,
};
use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    StringMatcher, path_matcher, string_matcher::MatchPattern,
};

use super::rules::{Mode, policy, string_match};
use super::*;
use crate::xds::listener::{HCM_FILTER, ROUTER_FILTER, TCP_PROXY_FILTER, listeners};
use crate::xds::route::fixture::{listener, router, service, sidecar, snapshot};
use crate::xds::route::util::regex_matcher;

const SEED_13: &str =
    include_str!("../../../../../testdata/corpus/seed/13-authorizationpolicy-reviews-viewer.yaml");
const SEED_30: &str = include_str!(
    "../../../../../testdata/corpus/seed/30-authorizationpolicy-deny-dev-to-prod.yaml"
);
const SEED_33: &str =
    include_str!("../../../../../testdata/corpus/seed/33-authorizationpolicy-service-access.yaml");
const SEED_35: &str =
    include_str!("../../../../../testdata/corpus/seed/35-authorizationpolicy-default-deny.yaml");
const SEED_36: &str =
    include_str!("../../../../../testdata/corpus/seed/36-authorizationpolicy-ratings-viewer.yaml");

fn snap(yaml: &str) -> Snapshot {
    snapshot(yaml, Vec::new())
}

fn proxy(ns: &str, app: &str) -> Proxy {
    sidecar(ns, &[("app", app)], "10.1.0.20")
}

/// The HTTP RBAC configs of `proxy`, as Envoy's types.
fn http_rbacs(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Rbac> {
    filters(snapshot, proxy)
        .http
        .iter()
        .map(|f| {
            assert_eq!(f.name, HTTP_RBAC_FILTER);
            let Some(http_filter::ConfigType::TypedConfig(a)) = &f.config_type else {
                panic!("no typed config")
            };
            assert_eq!(a.type_url, HTTP_RBAC_TYPE);
            HttpRbac::decode(a.value.as_slice()).unwrap().rules.unwrap()
        })
        .collect()
}

fn network_rbac(f: &Filter) -> NetworkRbac {
    assert_eq!(f.name, NETWORK_RBAC_FILTER);
    let Some(filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        panic!("no typed config")
    };
    assert_eq!(a.type_url, NETWORK_RBAC_TYPE);
    NetworkRbac::decode(a.value.as_slice()).unwrap()
}

fn tcp_rbacs(snapshot: &Snapshot, proxy: &Proxy) -> Vec<Rbac> {
    filters(snapshot, proxy)
        .tcp
        .iter()
        .map(|f| {
            let n = network_rbac(f);
            assert_eq!(n.stat_prefix, TCP_STAT_PREFIX);
            n.rules.unwrap()
        })
        .collect()
}

fn names(rbac: &Rbac) -> Vec<&str> {
    let mut n: Vec<&str> = rbac.policies.keys().map(String::as_str).collect();
    n.sort();
    n
}

fn exact(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(v.into())),
        ignore_case: false,
    }
}

fn regex(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(regex_matcher(v))),
        ignore_case: false,
    }
}

fn and_ids(ids: Vec<Principal>) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
    }
}

fn or_ids(ids: Vec<Principal>) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::OrIds(principal::Set { ids })),
    }
}

fn authenticated(m: StringMatcher) -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Authenticated(
            principal::Authenticated {
                principal_name: Some(m),
            },
        )),
    }
}

fn and_rules(rules: Vec<Permission>) -> Permission {
    Permission {
        rule: Some(permission::Rule::AndRules(permission::Set { rules })),
    }
}

fn or_rules(rules: Vec<Permission>) -> Permission {
    Permission {
        rule: Some(permission::Rule::OrRules(permission::Set { rules })),
    }
}

fn any_rule() -> Permission {
    Permission {
        rule: Some(permission::Rule::Any(true)),
    }
}

fn any_id() -> Principal {
    Principal {
        identifier: Some(principal::Identifier::Any(true)),
    }
}

fn method(m: &str) -> Permission {
    Permission {
        rule: Some(permission::Rule::Header(
            envoy_types::pb::envoy::config::route::v3::HeaderMatcher {
                name: ":method".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(exact(m))),
                ..Default::default()
            },
        )),
    }
}

fn path(p: &str) -> Permission {
    Permission {
        rule: Some(permission::Rule::UrlPath(
            envoy_types::pb::envoy::r#type::matcher::v3::PathMatcher {
                rule: Some(path_matcher::Rule::Path(exact(p))),
            },
        )),
    }
}

fn principal_policy(principal: &str) -> Principal {
    and_ids(vec![or_ids(vec![authenticated(exact(&format!(
        "spiffe://{principal}"
    )))])])
}

fn namespace_policy(ns: &str) -> Principal {
    and_ids(vec![or_ids(vec![authenticated(regex(&format!(
        ".*/ns/{ns}/.*"
    )))])])
}

#[test]
fn seed_13_reviews_viewer_allows_productpage_gets_and_admin() {
    let s = snap(SEED_13);
    let rbacs = http_rbacs(&s, &proxy("default", "reviews"));
    assert_eq!(rbacs.len(), 1);
    let r = &rbacs[0];
    assert_eq!(r.action, Action::Allow as i32);
    assert_eq!(
        names(r),
        [
            "ns[default]-policy[reviews-viewer]-rule[0]",
            "ns[default]-policy[reviews-viewer]-rule[1]"
        ]
    );
    assert_eq!(
        r.policies["ns[default]-policy[reviews-viewer]-rule[0]"],
        Policy {
            permissions: vec![and_rules(vec![or_rules(vec![method("GET")])])],
            principals: vec![principal_policy(
                "cluster.local/ns/default/sa/bookinfo-productpage"
            )],
            ..Default::default()
        }
    );
    assert_eq!(
        r.policies["ns[default]-policy[reviews-viewer]-rule[1]"],
        Policy {
            permissions: vec![and_rules(vec![any_rule()])],
            principals: vec![namespace_policy("admin")],
            ..Default::default()
        }
    );
    // On TCP chains the method-bound ALLOW rule is dropped (it would allow
    // more), the namespace rule stays.
    let tcp = tcp_rbacs(&s, &proxy("default", "reviews"));
    assert_eq!(
        names(&tcp[0]),
        ["ns[default]-policy[reviews-viewer]-rule[1]"]
    );
    // The selector narrows it to reviews.
    assert!(http_rbacs(&s, &proxy("default", "ratings")).is_empty());
    assert!(http_rbacs(&s, &proxy("prod", "reviews")).is_empty());
}

#[test]
fn seed_30_deny_dev_to_prod_denies_the_dev_namespace_in_prod() {
    let s = snap(SEED_30);
    let rbacs = http_rbacs(&s, &proxy("prod", "anything"));
    assert_eq!(rbacs.len(), 1);
    assert_eq!(rbacs[0].action, Action::Deny as i32);
    assert_eq!(
        rbacs[0].policies["ns[prod]-policy[deny-dev-to-prod]-rule[0]"],
        Policy {
            permissions: vec![and_rules(vec![any_rule()])],
            principals: vec![namespace_policy("dev")],
            ..Default::default()
        }
    );
    // The same on TCP: nothing HTTP-only in it.
    assert_eq!(tcp_rbacs(&s, &proxy("prod", "db"))[0], rbacs[0]);
    assert!(http_rbacs(&s, &proxy("default", "anything")).is_empty());
}

#[test]
fn seed_33_service_access_allows_order_service_posts_to_the_payment_path() {
    let s = snap(SEED_33);
    let rbacs = http_rbacs(&s, &proxy("prod", "payment"));
    assert_eq!(rbacs.len(), 1);
    assert_eq!(
        rbacs[0].policies["ns[prod]-policy[service-access]-rule[0]"],
        Policy {
            permissions: vec![and_rules(vec![
                or_rules(vec![method("POST")]),
                or_rules(vec![path("/api/v1/payment")]),
            ])],
            principals: vec![principal_policy("cluster.local/ns/prod/sa/order-service")],
            ..Default::default()
        }
    );
    // On TCP the only rule needs HTTP: an ALLOW filter with no policy, deny all.
    let tcp = tcp_rbacs(&s, &proxy("prod", "payment"));
    assert_eq!(tcp[0].action, Action::Allow as i32);
    assert!(tcp[0].policies.is_empty());
}

#[test]
fn seed_35_empty_spec_denies_everything_in_its_namespace() {
    let s = snap(SEED_35);
    for app in ["reviews", "ratings"] {
        let rbacs = http_rbacs(&s, &proxy("default", app));
        assert_eq!(rbacs.len(), 1, "{app}");
        assert_eq!(rbacs[0].action, Action::Allow as i32);
        assert!(
            rbacs[0].policies.is_empty(),
            "ALLOW with no policy allows nothing"
        );
        assert_eq!(tcp_rbacs(&s, &proxy("default", app)), rbacs);
    }
    assert!(filters(&s, &proxy("prod", "reviews")).http.is_empty());
}

#[test]
fn seed_36_ratings_viewer_allows_reviews_and_monitoring() {
    let s = snap(SEED_36);
    let r = &http_rbacs(&s, &proxy("default", "ratings"))[0];
    assert_eq!(
        r.policies["ns[default]-policy[ratings-viewer]-rule[0]"].principals,
        vec![principal_policy("cluster.local/ns/default/sa/reviews")]
    );
    assert_eq!(
        r.policies["ns[default]-policy[ratings-viewer]-rule[1]"].principals,
        vec![namespace_policy("monitoring")]
    );
    assert_eq!(&tcp_rbacs(&s, &proxy("default", "ratings"))[0], r);
}

const ROOT_AND_ORDER: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-get, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  rules:
  - to: [{operation: {methods: ["GET"], paths: ["/foo"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-deny, namespace: istio-system}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit, namespace: default}
spec:
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: default}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules:
  - to: [{operation: {paths: ["/ext"]}}]
"#;

#[test]
fn root_policies_apply_mesh_wide_and_actions_keep_istios_order() {
    let s = snap(ROOT_AND_ORDER);
    let rbacs = http_rbacs(&s, &proxy("default", "web"));
    let actions: Vec<i32> = rbacs.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            Action::Deny as i32,
            Action::Deny as i32,
            Action::Log as i32,
            Action::Allow as i32
        ]
    );
    assert_eq!(
        names(&rbacs[0]),
        ["istio-ext-authz-ns[default]-policy[ext]-rule[0]-deny-due-to-bad-CUSTOM-action"]
    );
    assert_eq!(
        names(&rbacs[1]),
        ["ns[istio-system]-policy[mesh-deny]-rule[0]"]
    );
    let prefix = &rbacs[1].policies["ns[istio-system]-policy[mesh-deny]-rule[0]"];
    assert_eq!(
        prefix.permissions,
        vec![and_rules(vec![or_rules(vec![Permission {
            rule: Some(permission::Rule::UrlPath(
                envoy_types::pb::envoy::r#type::matcher::v3::PathMatcher {
                    rule: Some(path_matcher::Rule::Path(StringMatcher {
                        match_pattern: Some(MatchPattern::Prefix("/admin".into())),
                        ignore_case: false,
                    })),
                }
            )),
        }])])]
    );
    assert_eq!(prefix.principals, vec![and_ids(vec![any_id()])]);
    // Another namespace sees only the mesh-wide policy.
    let other = http_rbacs(&s, &proxy("prod", "web"));
    assert_eq!(other.len(), 1);
    assert_eq!(
        names(&other[0]),
        ["ns[istio-system]-policy[mesh-deny]-rule[0]"]
    );
    // The mesh-wide DENY on paths cannot apply to TCP: it widens to deny all.
    let tcp = tcp_rbacs(&s, &proxy("prod", "web"));
    assert_eq!(
        tcp[0].policies["ns[istio-system]-policy[mesh-deny]-rule[0]"].permissions,
        vec![and_rules(vec![any_rule()])]
    );
    // CUSTOM is reported as not applied, AUDIT as without effect.
    let notes = notes(&s);
    let ext = notes
        .iter()
        .find(|n| n.resource == "AuthorizationPolicy ext.default")
        .unwrap();
    assert!(!ext.applied);
    assert!(ext.messages[0].contains("CUSTOM"), "{ext:?}");
    let audit = notes
        .iter()
        .find(|n| n.resource == "AuthorizationPolicy audit.default")
        .unwrap();
    assert!(audit.applied && audit.messages[0].contains("AUDIT"));
}

#[test]
fn inbound_chains_get_rbac_before_the_router_and_the_tcp_proxy() {
    let mut s = snap(ROOT_AND_ORDER);
    let svc = service(
        "web",
        "default",
        "10.96.0.50",
        &[("http", 8080), ("tcp", 5432)],
    );
    s.services
        .insert(svc.hostname.clone(), std::sync::Arc::new(svc));
    let p = proxy("default", "web");
    let all = listeners(&s, &p);
    let inbound = listener(&all, "virtualInbound");
    let http_chain = inbound
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_8080-mtls")
        .expect("mTLS chain of 8080");
    let Some(filter::ConfigType::TypedConfig(a)) = &http_chain.filters[0].config_type else {
        panic!()
    };
    assert_eq!(http_chain.filters[0].name, HCM_FILTER);
    let hcm = HttpConnectionManager::decode(a.value.as_slice()).unwrap();
    let order: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        order,
        [
            HTTP_RBAC_FILTER,
            HTTP_RBAC_FILTER,
            HTTP_RBAC_FILTER,
            HTTP_RBAC_FILTER,
            ROUTER_FILTER
        ]
    );
    for name in ["0.0.0.0_5432", "virtualInbound-catchall-tcp"] {
        let c = inbound
            .filter_chains
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no chain {name}"));
        let names: Vec<&str> = c.filters.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names.len(), 5, "{name}: {names:?}");
        assert!(names[..4].iter().all(|n| *n == NETWORK_RBAC_FILTER));
        assert_eq!(names[4], TCP_PROXY_FILTER);
    }
    // The blackhole chain of 15006 itself is left alone.
    let blackhole = &inbound.filter_chains[0];
    assert_eq!(blackhole.filters.len(), 1);
    // Outbound listeners are never authorized.
    let out = listener(&all, "virtualOutbound");
    assert!(out.filter_chains.iter().all(|c| c.filters.len() == 1));
}

#[test]
fn encoding_is_stable_across_generations() {
    let yaml = (0..12)
        .map(|i| {
            format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p{i}, namespace: default}}\nspec:\n  rules:\n  - to: [{{operation: {{paths: [\"/p{i}\"]}}}}]\n  - from: [{{source: {{namespaces: [\"n{i}\"]}}}}]\n---\n"
            )
        })
        .collect::<String>();
    let s = snap(&yaml);
    let p = proxy("default", "x");
    let a = filters(&s, &p);
    for _ in 0..5 {
        let b = filters(&s, &p);
        assert_eq!(a.http, b.http);
        assert_eq!(a.tcp, b.tcp);
    }
    assert_eq!(http_rbacs(&s, &p)[0].policies.len(), 24);
}

const TARGETS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw, namespace: istio-system}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: public}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/private"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: svc, namespace: default}
spec:
  targetRef: {group: "", kind: Service, name: reviews}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  rules:
  - from: [{source: {ipBlocks: ["10.0.0.0/8"], notIpBlocks: ["10.9.0.0/16"]}}]
"#;

#[test]
fn gateways_take_selected_and_targeted_policies_others_are_refused() {
    let s = snap(TARGETS);
    let mut gw = router("istio-system");
    let selected = http_rbacs(&s, &gw);
    assert_eq!(
        selected.len(),
        1,
        "only the selector policy without the label"
    );
    assert_eq!(
        names(&selected[0]),
        ["ns[istio-system]-policy[ingress]-rule[0]"]
    );
    let ids = &selected[0].policies["ns[istio-system]-policy[ingress]-rule[0]"].principals;
    let principal::Identifier::AndIds(set) = ids[0].identifier.as_ref().unwrap() else {
        panic!("{ids:?}")
    };
    assert_eq!(set.ids.len(), 2, "ipBlocks and notIpBlocks: {set:?}");
    assert!(matches!(
        &set.ids[1].identifier,
        Some(principal::Identifier::NotId(_))
    ));
    gw.labels.insert(GATEWAY_NAME_LABEL.into(), "public".into());
    let targeted = http_rbacs(&s, &gw);
    assert_eq!(targeted.len(), 2);
    assert_eq!(names(&targeted[0]), ["ns[istio-system]-policy[gw]-rule[0]"]);
    // The Service target applies nowhere and says why.
    assert!(http_rbacs(&s, &proxy("default", "reviews")).is_empty());
    let notes = notes(&s);
    let svc = notes
        .iter()
        .find(|n| n.resource == "AuthorizationPolicy svc.default")
        .unwrap();
    assert!(!svc.applied);
    assert!(svc.messages[0].contains("not supported"), "{svc:?}");
}

#[test]
fn gateway_listeners_carry_the_filters() {
    let gateway = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
"#;
    let s = snap(&format!("{gateway}---\n{SEED_35}---\n{TARGETS}"));
    let all = listeners(&s, &router("istio-system"));
    let l = listener(&all, "0.0.0.0_8080");
    let Some(filter::ConfigType::TypedConfig(a)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!()
    };
    let hcm = HttpConnectionManager::decode(a.value.as_slice()).unwrap();
    assert_eq!(hcm.http_filters[0].name, HTTP_RBAC_FILTER);
    assert_eq!(hcm.http_filters.last().unwrap().name, ROUTER_FILTER);
}

#[test]
fn unsupported_values_drop_allow_rules_and_widen_deny_rules() {
    let rule: common::istio::security::Rule = serde_json::from_value(serde_json::json!({
        "to": [{"operation": {"methods": ["GET"], "ports": ["8080"]}}],
        "when": [{"key": "source.serviceAccount", "values": ["x"]}]
    }))
    .unwrap();
    let mut skipped = Vec::new();
    let allow = Mode {
        tcp: false,
        allow: true,
    };
    let err = policy(&rule, "default", allow, &mut skipped).unwrap_err();
    assert!(err.0.contains("source.serviceAccount"), "{err}");
    let deny = Mode {
        tcp: true,
        allow: false,
    };
    let p = policy(&rule, "default", deny, &mut skipped).unwrap();
    // The method (HTTP-only) and the unknown condition are ignored; the port stays.
    assert_eq!(
        p.permissions,
        vec![and_rules(vec![or_rules(vec![Permission {
            rule: Some(permission::Rule::DestinationPort(8080))
        }])])]
    );
    assert_eq!(p.principals, vec![and_ids(vec![any_id()])]);
    assert_eq!(skipped.len(), 2, "{skipped:?}");
}

#[test]
fn conditions_go_to_the_side_they_describe() {
    let rule: common::istio::security::Rule = serde_json::from_value(serde_json::json!({
        "when": [
            {"key": "request.headers[x-user]", "values": ["admin"]},
            {"key": "source.ip", "notValues": ["10.0.0.1"]},
            {"key": "destination.port", "values": ["9080"]},
            {"key": "request.auth.claims[groups]", "values": ["dev"]},
            {"key": "connection.sni", "values": ["*.example.com"]}
        ]
    }))
    .unwrap();
    let mode = Mode {
        tcp: false,
        allow: true,
    };
    let p = policy(&rule, "default", mode, &mut Vec::new()).unwrap();
    let principal::Identifier::AndIds(ids) = p.principals[0].identifier.clone().unwrap() else {
        panic!()
    };
    assert_eq!(ids.ids.len(), 3, "header, source.ip, claim");
    let permission::Rule::AndRules(rules) = p.permissions[0].rule.clone().unwrap() else {
        panic!()
    };
    assert_eq!(rules.rules.len(), 2, "destination.port and connection.sni");
    assert_eq!(
        rules.rules[1],
        or_rules(vec![Permission {
            rule: Some(permission::Rule::RequestedServerName(StringMatcher {
                match_pattern: Some(MatchPattern::Suffix(".example.com".into())),
                ignore_case: false,
            }))
        }])
    );
}

#[test]
fn istio_wildcards() {
    let m = |v: &str, prefix: &str| string_match(v, prefix).match_pattern.unwrap();
    assert_eq!(
        m("*", "spiffe://"),
        MatchPattern::SafeRegex(regex_matcher(".+"))
    );
    assert_eq!(
        m("a*", "spiffe://"),
        MatchPattern::Prefix("spiffe://a".into())
    );
    assert_eq!(m("*a", ""), MatchPattern::Suffix("a".into()));
    assert_eq!(
        m("*.b", "spiffe://"),
        MatchPattern::SafeRegex(regex_matcher("spiffe://.*\\.b"))
    );
    assert_eq!(
        m("x", "spiffe://"),
        MatchPattern::Exact("spiffe://x".into())
    );
}

const SEED_12: &str =
    include_str!("../../../../../testdata/corpus/seed/12-requestauthentication-jwt-auth.yaml");

fn jwt_config(
    f: &HttpFilter,
) -> envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::JwtAuthentication {
    assert_eq!(f.name, jwt::JWT_AUTHN_FILTER);
    let Some(http_filter::ConfigType::TypedConfig(a)) = &f.config_type else {
        panic!("no typed config")
    };
    assert_eq!(a.type_url, jwt::JWT_AUTHN_TYPE);
    Message::decode(a.value.as_slice()).unwrap()
}

#[test]
fn seed_12_request_authentication_refuses_tokens_it_cannot_verify() {
    use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
    use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
        jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType, requirement_rule,
    };
    let s = snap(&format!("{SEED_12}---\n{SEED_13}"));
    let f = filters(&s, &proxy("default", "reviews"));
    // jwt_authn first, then the RBAC filter.
    let names: Vec<&str> = f.http.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, [jwt::JWT_AUTHN_FILTER, HTTP_RBAC_FILTER]);
    let c = jwt_config(&f.http[0]);
    let p = &c.providers["origins-0"];
    assert_eq!(p.issuer, "https://accounts.example.com");
    assert_eq!(p.audiences, ["reviews.example.com"]);
    assert_eq!(p.payload_in_metadata, "payload");
    let Some(JwksSourceSpecifier::LocalJwks(ds)) = &p.jwks_source_specifier else {
        panic!("{p:?}")
    };
    assert_eq!(
        ds.specifier,
        Some(Specifier::InlineString(jwt::UNFETCHABLE_JWKS.into()))
    );
    // Any provider, or no token at all.
    let Some(requirement_rule::RequirementType::Requires(r)) = &c.rules[0].requirement_type else {
        panic!()
    };
    let Some(RequiresType::RequiresAny(any)) = &r.requires_type else {
        panic!()
    };
    assert_eq!(any.requirements.len(), 2);
    assert!(matches!(
        any.requirements[1].requires_type,
        Some(RequiresType::AllowMissing(_))
    ));
    assert!(c.bypass_cors_preflight);
    // Not on other workloads; reported as not applied as written.
    assert!(filters(&s, &proxy("default", "ratings")).http.is_empty());
    let note = notes(&s)
        .into_iter()
        .find(|n| n.resource == "RequestAuthentication jwt-auth.default")
        .unwrap();
    assert!(!note.applied);
    assert!(note.messages[0].contains("is not fetched"), "{note:?}");
}

#[test]
fn inline_and_file_jwks_are_served_as_written() {
    let rule = |v: serde_json::Value| -> common::istio::security::JwtRule {
        serde_json::from_value(v).unwrap()
    };
    assert_eq!(
        jwt::jwks(&rule(
            serde_json::json!({"issuer": "a", "jwks": "{\"keys\":[]}"})
        )),
        jwt::Jwks::Inline("{\"keys\":[]}".into())
    );
    assert_eq!(
        jwt::jwks(&rule(
            serde_json::json!({"issuer": "a", "jwksUri": "file:///etc/jwks.json"})
        )),
        jwt::Jwks::File("/etc/jwks.json".into())
    );
    assert!(matches!(
        jwt::jwks(&rule(serde_json::json!({"issuer": "a"}))),
        jwt::Jwks::Unfetched(_)
    ));
}
