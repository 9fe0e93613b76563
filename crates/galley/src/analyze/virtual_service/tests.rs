use super::super::service::test_support::*;
use super::*;

const BOOKINFO: &str = include_str!("../../../tests/analyze/vs_registry.yaml");

fn with_vs(vs: &str) -> String {
    format!("{BOOKINFO}---\n{vs}")
}

#[test]
fn ist0101_destination_host_not_found() {
    let yaml = with_vs(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: 90
    - destination: {host: reviews2}
      weight: 10
"#,
    );
    let m = expect_one(
        &yaml,
        codes::REFERENCED_RESOURCE_NOT_FOUND,
        "VirtualService",
        "reviews",
        Some("spec.http[0].route[1].destination.host"),
        "Referenced host not found: \"reviews2\"",
    );
    assert_eq!(m.origin.unwrap().line, 41);
}

#[test]
fn ist0101_mirror_host_not_found() {
    let yaml = with_vs(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews.default.svc.cluster.local}}]
    mirror: {host: shadow}
"#,
    );
    expect_one(
        &yaml,
        codes::REFERENCED_RESOURCE_NOT_FOUND,
        "VirtualService",
        "reviews",
        Some("spec.http[0].mirror.host"),
        "Referenced mirror host not found: \"shadow\"",
    );
}

#[test]
fn known_hosts_wildcards_and_fqdns_are_found() {
    let yaml = with_vs(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mixed, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local}
    - destination: {host: en.wikipedia.org}
    - destination: {host: reviews.default}
    - destination: {host: ratings, port: {number: 9080}}
"#,
    );
    let found = analyze(&yaml);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn ist0112_port_required_for_multi_port_service() {
    let yaml = with_vs(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  http:
  - route: [{destination: {host: ratings}}]
"#,
    );
    expect_one(
        &yaml,
        codes::VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
        "VirtualService",
        "ratings",
        Some("spec.http[0].route[0].destination.host"),
        "This VirtualService routes to a service \"ratings\" that exposes multiple ports [9080 9090]. Specifying a port in the destination is required to disambiguate.",
    );
}

#[test]
fn ist0101_unknown_port() {
    let yaml = with_vs(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings]
  tcp:
  - route: [{destination: {host: ratings, port: {number: 7000}}}]
"#,
    );
    expect_one(
        &yaml,
        codes::REFERENCED_RESOURCE_NOT_FOUND,
        "VirtualService",
        "ratings",
        Some("spec.tcp[0].route[0].destination.port.number"),
        "Referenced host:port not found: \"ratings:7000\"",
    );
}

#[test]
fn ist0101_subset_not_in_destination_rule() {
    let yaml = with_vs(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local, subset: v1}
    - destination: {host: reviews, subset: v2}
"#,
    );
    expect_one(
        &yaml,
        codes::REFERENCED_RESOURCE_NOT_FOUND,
        "VirtualService",
        "reviews",
        Some("spec.http[0].route[1].destination.subset"),
        "Referenced host+subset in destinationrule not found: \"reviews+v2\"",
    );
}

#[test]
fn ist0101_delegate_not_found() {
    let yaml = with_vs(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /a}}]
    delegate: {name: reviews-a}
  - delegate: {name: reviews-b, namespace: prod}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-a, namespace: default}
spec:
  http:
  - route: [{destination: {host: reviews}}]
"#,
    );
    expect_one(
        &yaml,
        codes::REFERENCED_RESOURCE_NOT_FOUND,
        "VirtualService",
        "root",
        Some("spec.http[1].delegate.name"),
        "Referenced delegate not found: \"prod/reviews-b\"",
    );
}

const TWO_MESH_VS: &str = include_str!("../../../tests/analyze/vs_mesh_conflict.yaml");

#[test]
fn ist0109_mesh_virtual_services_share_a_host() {
    let found = messages(
        TWO_MESH_VS,
        codes::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    let text = "The VirtualServices default/productpage,default/productpage-canary associated with mesh gateway define the same host */productpage.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.";
    for (m, name) in found.iter().zip(["productpage", "productpage-canary"]) {
        assert_eq!(m.resource.as_ref().unwrap().name, name);
        assert_eq!(m.field.as_deref(), Some("metadata.name"));
        assert_eq!(m.text, text);
    }
}

#[test]
fn ist0109_not_reported_for_separate_scopes_or_gateways() {
    let scoped = TWO_MESH_VS.replacen(
        "  hosts: [productpage]\n",
        "  hosts: [productpage]\n  exportTo: [\".\"]\n",
        1,
    );
    let scoped = scoped.replacen(
        "gateways: [mesh]",
        "gateways: [mesh]\n  exportTo: [prod]",
        1,
    );
    expect_none(
        &scoped,
        codes::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
    );
    let one = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: pp}\nspec:\n  hosts: [productpage, productpage.default.svc.cluster.local]\n  http: [{route: [{destination: {host: productpage}}]}]\n";
    expect_none(one, codes::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS);
    let gateway = TWO_MESH_VS.replace("gateways: [mesh]", "gateways: [bookinfo-gateway]");
    expect_none(
        &gateway,
        codes::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
    );
}

#[test]
fn ist0122_invalid_regex() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: re, namespace: default}
spec:
  hosts: [re.example.com]
  http:
  - match:
    - uri: {regex: "/api/(v1"}
      headers:
        x-user: {regex: "[a-z]+"}
    corsPolicy:
      allowOrigins: [{regex: "*.example.com"}]
    directResponse: {status: 200}
"#;
    let found = messages(yaml, codes::INVALID_REGEXP);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(
        found[0].field.as_deref(),
        Some("spec.http[0].match[0].uri.regex")
    );
    assert!(
        found[0]
            .text
            .starts_with("Field \"uri\" regular expression invalid: \"/api/(v1\" ("),
        "{}",
        found[0].text
    );
    assert_eq!(found[0].origin.as_ref().unwrap().line, 9);
    assert_eq!(
        found[1].field.as_deref(),
        Some("spec.http[0].corsPolicy.allowOrigins[0].regex")
    );
    assert!(found[1].text.starts_with(
        "Field \"corsPolicy.allowOrigins\" regular expression invalid: \"*.example.com\""
    ));
    let fixed = yaml
        .replace("(v1", "(v1)")
        .replace("\"*.example.com\"", "\".*\\\\.example\\\\.com\"");
    expect_none(&fixed, codes::INVALID_REGEXP);
}

const SHADOWED: &str = include_str!("../../../tests/analyze/vs_shadowed_rules.yaml");

#[test]
fn ist0130_unreachable_rules() {
    let found = messages(SHADOWED, codes::VIRTUAL_SERVICE_UNREACHABLE_RULE);
    let got: Vec<(Option<&str>, &str)> = found
        .iter()
        .map(|m| (m.field.as_deref(), m.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Some("spec.http[1]"),
                "VirtualService rule #1 not used (all matches used by prior rules)."
            ),
            (
                Some("spec.http[4]"),
                "VirtualService rule #4 not used (route without matches defined before)."
            ),
        ]
    );
}

#[test]
fn ist0131_duplicate_and_covered_matches() {
    let found = messages(SHADOWED, codes::VIRTUAL_SERVICE_INEFFECTIVE_MATCH);
    let got: Vec<(Option<&str>, &str)> = found
        .iter()
        .map(|m| (m.field.as_deref(), m.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                Some("spec.http[1].match[0]"),
                "VirtualService rule #1 match \"again\" is not used (duplicate/overlapping match in rule \"api\")."
            ),
            (
                Some("spec.http[2].match[0]"),
                "VirtualService rule #2 match #0 of prefix /api/v2 is not used (duplicate/overlapping match in rule #0 of prefix /api on \"api\")."
            ),
        ]
    );
    assert_eq!(
        found[0].level,
        codes::VIRTUAL_SERVICE_INEFFECTIVE_MATCH.level
    );
}

#[test]
fn distinct_matches_are_reachable() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ok, namespace: default}
spec:
  hosts: [ok.example.com]
  http:
  - match: [{uri: {prefix: /api}, headers: {end-user: {exact: jason}}}]
    directResponse: {status: 200}
  - match: [{uri: {prefix: /api/v2}}]
    directResponse: {status: 201}
  - match: [{uri: {prefix: /api}}]
    directResponse: {status: 202}
  - directResponse: {status: 404}
"#;
    expect_none(yaml, codes::VIRTUAL_SERVICE_UNREACHABLE_RULE);
    expect_none(yaml, codes::VIRTUAL_SERVICE_INEFFECTIVE_MATCH);
}
