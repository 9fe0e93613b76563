use common::istio::networking::{HttpFaultInjection, HttpRetry};
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::route::v3::{
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    route_action::hash_policy,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;
use prost::Message;

use super::super::policies::decode_base64;

use super::*;
use crate::xds::route::fixture::{bookinfo, resources, sidecar};

fn ctx<'a>(snapshot: &'a Snapshot, proxy: &'a Proxy, gateways: &[&str]) -> RouteContext<'a> {
    RouteContext {
        snapshot,
        proxy,
        listen_port: 9080,
        gateways: gateways.iter().map(|g| g.to_string()).collect(),
        tls: false,
    }
}

/// Routes of the (first) VirtualService in `yaml`, for a productpage sidecar.
fn routes_for(yaml: &str, gateways: &[&str]) -> Vec<Route> {
    let snap = bookinfo(yaml);
    let proxy = sidecar(
        "default",
        &[("app", "productpage"), ("version", "v1")],
        "10.1.0.10",
    );
    let rs = resources(yaml);
    let r = rs.iter().find(|r| r.kind == "VirtualService").unwrap();
    let Some(common::resource::Spec::VirtualService(vs)) = r.spec() else {
        panic!()
    };
    virtual_service_routes(&ctx(&snap, &proxy, gateways), r, vs)
}

fn action(r: &Route) -> &RouteAction {
    match &r.action {
        Some(Action::Route(a)) => a,
        other => panic!("not a route action: {other:?}"),
    }
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: default}}\nspec:\n  hosts: [reviews]\n  http:\n{http}"
    )
}

#[test]
fn weighted_routes_and_header_match() {
    let routes = routes_for(
        include_str!("../../../../../../samples/bookinfo/networking.yaml")
            .split("---")
            .nth(2)
            .unwrap(),
        &["mesh"],
    );
    assert_eq!(routes.len(), 2);
    let m = routes[0].r#match.as_ref().unwrap();
    assert_eq!(m.headers.len(), 1);
    assert_eq!(m.headers[0].name, "end-user");
    assert!(matches!(
        &m.headers[0].header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(s)) if s.match_pattern == Some(string_matcher::MatchPattern::Exact("jason".into()))
    ));
    assert_eq!(
        action(&routes[0]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080|v2|reviews.default.svc.cluster.local".into()
        ))
    );
    let Some(ClusterSpecifier::WeightedClusters(w)) = &action(&routes[1]).cluster_specifier else {
        panic!("weighted clusters")
    };
    let got: Vec<(&str, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        got,
        vec![
            ("outbound|9080|v1|reviews.default.svc.cluster.local", 75),
            ("outbound|9080|v3|reviews.default.svc.cluster.local", 25)
        ]
    );
    assert!(is_catch_all(&routes[1]));
    assert_eq!(action(&routes[1]).timeout.unwrap().seconds, 0);
}

#[test]
fn retries() {
    let default = retry_policy(None, false).unwrap();
    assert_eq!(default.num_retries.unwrap().value, 2);
    assert_eq!(default.retry_on, DEFAULT_RETRY_ON);
    assert_eq!(default.retriable_status_codes, vec![503]);
    assert_eq!(
        default.retry_host_predicate[0].name,
        "envoy.retry_host_predicates.previous_hosts"
    );
    assert!(
        retry_policy(None, true)
            .unwrap()
            .retry_host_predicate
            .is_empty()
    );
    let off = HttpRetry {
        attempts: Some(0),
        ..Default::default()
    };
    assert!(retry_policy(Some(&off), false).is_none());
    let custom = HttpRetry {
        attempts: Some(3),
        per_try_timeout: Some("2s".parse().unwrap()),
        retry_on: Some("gateway-error, 502,connect-failure,503".into()),
        retry_ignore_previous_hosts: Some(false),
        ..Default::default()
    };
    let p = retry_policy(Some(&custom), false).unwrap();
    assert_eq!(p.num_retries.unwrap().value, 3);
    assert_eq!(p.per_try_timeout.unwrap().seconds, 2);
    assert_eq!(
        p.retry_on,
        "gateway-error,connect-failure,retriable-status-codes"
    );
    assert_eq!(p.retriable_status_codes, vec![502, 503]);
    assert!(p.retry_host_predicate.is_empty());

    let routes = routes_for(
        &vs(
            "  - route:\n    - destination: {host: reviews}\n    timeout: 10s\n    retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure,refused-stream'}\n",
        ),
        &["mesh"],
    );
    let a = action(&routes[0]);
    assert_eq!(a.timeout.unwrap().seconds, 10);
    assert!(
        a.max_stream_duration.is_none(),
        "max_stream_duration makes Envoy ignore the route timeout"
    );
    assert_eq!(
        a.retry_policy.as_ref().unwrap().retry_on,
        "gateway-error,connect-failure,refused-stream"
    );
}

#[test]
fn fault_percentages_in_millionths() {
    let routes = routes_for(
        &vs(
            "  - fault:\n      delay: {fixedDelay: 5s, percentage: {value: 10}}\n      abort: {httpStatus: 503, percentage: {value: 0.5}}\n    route:\n    - destination: {host: reviews}\n",
        ),
        &["mesh"],
    );
    let any = routes[0]
        .typed_per_filter_config
        .get(FAULT_FILTER)
        .expect("fault config");
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
    );
    let f = HttpFault::decode(any.value.as_slice()).unwrap();
    let d = f.delay.unwrap();
    let p = d.percentage.unwrap();
    assert_eq!(
        (p.numerator, p.denominator),
        (100_000, DenominatorType::Million as i32)
    );
    assert!(
        matches!(d.fault_delay_secifier, Some(FaultDelaySecifier::FixedDelay(ref t)) if t.seconds == 5)
    );
    let a = f.abort.unwrap();
    assert_eq!(a.percentage.unwrap().numerator, 5_000);
    assert_eq!(a.error_type, Some(ErrorType::HttpStatus(503)));
    // gRPC codes by name; the deprecated integer percent in hundredths.
    let f = translate_fault(&HttpFaultInjection {
        delay: Some(common::istio::networking::FaultDelay {
            percent: Some(30),
            fixed_delay: Some("1s".parse().unwrap()),
            ..Default::default()
        }),
        abort: Some(common::istio::networking::FaultAbort {
            grpc_status: Some("UNAVAILABLE".into()),
            ..Default::default()
        }),
    })
    .unwrap();
    let p = f.delay.unwrap().percentage.unwrap();
    assert_eq!(
        (p.numerator, p.denominator),
        (30, DenominatorType::Hundred as i32)
    );
    assert_eq!(f.abort.unwrap().error_type, Some(ErrorType::GrpcStatus(14)));
}

#[test]
fn match_conditions() {
    let routes = routes_for(
        &vs(r#"  - match:
    - uri: {regex: "/api/v[0-9]+/.*"}
      ignoreUriCase: true
      method: {exact: GET}
      authority: {prefix: reviews}
      headers:
        x-present: {}
        x-re: {regex: "a.*"}
      withoutHeaders:
        x-debug: {exact: "1"}
      queryParams:
        q: {exact: v}
        any: {regex: "*"}
    - uri: {prefix: /wrong-port}
      port: 8080
    - uri: {prefix: /not-for-me}
      sourceLabels: {app: ratings}
    - uri: {exact: /only-gw}
      gateways: [bookinfo-gateway]
    route:
    - destination: {host: reviews}
"#),
        &["mesh"],
    );
    assert_eq!(
        routes.len(),
        1,
        "port, sourceLabels and gateways matches do not apply"
    );
    let m = routes[0].r#match.as_ref().unwrap();
    assert!(
        matches!(&m.path_specifier, Some(PathSpecifier::SafeRegex(r)) if r.regex == "/api/v[0-9]+/.*")
    );
    assert!(!m.case_sensitive.unwrap().value);
    let by_name = |n: &str| m.headers.iter().find(|h| h.name == n).unwrap().clone();
    assert_eq!(
        by_name("x-present").header_match_specifier,
        Some(HeaderMatchSpecifier::PresentMatch(true))
    );
    let debug = by_name("x-debug");
    assert!(debug.invert_match && debug.treat_missing_header_as_empty);
    assert!(matches!(
        by_name(":method").header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(_))
    ));
    assert!(matches!(
        by_name(":authority").header_match_specifier,
        Some(HeaderMatchSpecifier::StringMatch(ref s)) if s.match_pattern == Some(string_matcher::MatchPattern::Prefix("reviews".into()))
    ));
    assert_eq!(m.query_parameters.len(), 2);
    let any = m.query_parameters.iter().find(|q| q.name == "any").unwrap();
    assert_eq!(
        any.query_parameter_match_specifier,
        Some(QueryParameterMatchSpecifier::PresentMatch(true))
    );

    // The same rule seen from the gateway keeps only the gateway match.
    let routes = routes_for(
        &vs(
            "  - match:\n    - uri: {exact: /only-gw}\n      gateways: [bookinfo-gateway]\n    - uri: {exact: /mesh}\n    route:\n    - destination: {host: reviews}\n",
        ),
        &["default/bookinfo-gateway"],
    );
    assert_eq!(
        routes.len(),
        2,
        "a match without gateways applies everywhere the VirtualService does"
    );
    assert!(
        matches!(&routes[0].r#match.as_ref().unwrap().path_specifier, Some(PathSpecifier::Path(p)) if p == "/only-gw")
    );
}

#[test]
fn redirect_rewrite_headers_and_direct_response() {
    let routes = routes_for(
        &vs(r#"  - match: [{uri: {prefix: /old}}]
    redirect: {uri: /new, authority: new.example.com, redirectCode: 302, scheme: https, port: 443}
  - match: [{uri: {prefix: /bad}}]
    redirect: {uri: /x, redirectCode: 399}
  - match: [{uri: {prefix: /teapot}}]
    directResponse: {status: 418, body: {string: "short and stout"}}
  - match: [{uri: {prefix: /v1}}]
    rewrite: {uri: /v2, authority: internal.example.com}
    headers:
      request:
        set: {x-set: a, host: ignored.example.com}
        add: {x-add: b}
        remove: [x-remove, ":path"]
      response:
        set: {x-resp: c}
    route:
    - destination: {host: reviews, subset: v1}
      headers:
        request: {set: {x-dest: d}}
  - match: [{uri: {regex: "^/re/(.*)"}}]
    rewrite: {uriRegexRewrite: {match: "^/re/(.*)", rewrite: '/\1'}}
    route:
    - destination: {host: reviews}
"#),
        &["mesh"],
    );
    assert_eq!(
        routes.len(),
        4,
        "an unsupported redirect code drops its route"
    );
    let Some(Action::Redirect(r)) = &routes[0].action else {
        panic!()
    };
    assert_eq!(r.host_redirect, "new.example.com");
    assert_eq!(r.response_code, RedirectResponseCode::Found as i32);
    assert_eq!(
        r.path_rewrite_specifier,
        Some(PathRewriteSpecifier::PathRedirect("/new".into()))
    );
    assert_eq!(
        r.scheme_rewrite_specifier,
        Some(SchemeRewriteSpecifier::SchemeRedirect("https".into()))
    );
    assert_eq!(r.port_redirect, 0, "443 with https is implicit");
    let Some(Action::DirectResponse(d)) = &routes[1].action else {
        panic!()
    };
    assert_eq!(d.status, 418);
    let rw = &routes[2];
    let a = action(rw);
    assert_eq!(a.prefix_rewrite, "/v2");
    assert_eq!(
        a.host_rewrite_specifier,
        Some(HostRewriteSpecifier::HostRewriteLiteral(
            "internal.example.com".into()
        ))
    );
    let keys: Vec<&str> = rw
        .request_headers_to_add
        .iter()
        .map(|h| h.header.as_ref().unwrap().key.as_str())
        .collect();
    assert_eq!(keys, vec!["x-set", "x-add", "x-dest"]);
    assert_eq!(
        rw.request_headers_to_add[0].append_action,
        HeaderAppendAction::OverwriteIfExistsOrAdd as i32
    );
    assert_eq!(
        rw.request_headers_to_add[1].append_action,
        HeaderAppendAction::AppendIfExistsOrAdd as i32
    );
    assert_eq!(rw.request_headers_to_remove, vec!["x-remove"]);
    assert_eq!(rw.response_headers_to_add.len(), 1);
    let re = action(&routes[3]).regex_rewrite.as_ref().unwrap();
    assert_eq!(re.substitution, "/\\1");
}

#[test]
fn cors_mirror_and_hash_policy() {
    let yaml = format!(
        "{}---\n{}",
        vs(r#"  - corsPolicy:
      allowOrigins: [{exact: "https://a.example.com"}, {regex: ".*\\.b\\.com"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-a]
      maxAge: 24h
      allowCredentials: true
    mirror: {host: ratings}
    mirrorPercentage: {value: 25}
    mirrors:
    - destination: {host: details}
    route:
    - destination: {host: reviews, subset: v1}
"#),
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: user, ttl: 60s, path: /}
  subsets:
  - name: v1
    labels: {version: v1}
"#
    );
    let routes = routes_for(&yaml, &["mesh"]);
    let r = &routes[0];
    let cors = EnvoyCors::decode(
        r.typed_per_filter_config
            .get(CORS_FILTER)
            .unwrap()
            .value
            .as_slice(),
    )
    .unwrap();
    assert_eq!(cors.allow_origin_string_match.len(), 2);
    assert_eq!(cors.allow_methods, "GET,POST");
    assert_eq!(cors.max_age, "86400");
    assert!(cors.allow_credentials.unwrap().value);
    let a = action(r);
    let mirrors: Vec<(&str, u32)> = a
        .request_mirror_policies
        .iter()
        .map(|m| {
            (
                m.cluster.as_str(),
                m.runtime_fraction
                    .as_ref()
                    .unwrap()
                    .default_value
                    .unwrap()
                    .numerator,
            )
        })
        .collect();
    assert_eq!(
        mirrors,
        vec![
            ("outbound|9080||ratings.default.svc.cluster.local", 250_000),
            ("outbound|9080||details.default.svc.cluster.local", 100)
        ]
    );
    let Some(hash_policy::PolicySpecifier::Cookie(c)) = &a.hash_policy[0].policy_specifier else {
        panic!("cookie hash policy")
    };
    assert_eq!(
        (c.name.as_str(), c.path.as_str(), c.ttl.unwrap().seconds),
        ("user", "/", 60)
    );
    assert!(
        a.retry_policy
            .as_ref()
            .unwrap()
            .retry_host_predicate
            .is_empty()
    );
}

#[test]
fn destinations_resolve_ports_like_istio() {
    let snap = bookinfo("");
    let proxy = sidecar("default", &[], "10.1.0.10");
    let c = ctx(&snap, &proxy, &["mesh"]);
    let d = |host: &str, port: Option<u32>, subset: Option<&str>| Destination {
        host: host.into(),
        subset: subset.map(Into::into),
        port: port.map(|n| common::istio::networking::PortSelector { number: Some(n) }),
    };
    assert_eq!(
        destination_cluster(&c, "default", &d("reviews", None, Some("v1"))),
        "outbound|9080|v1|reviews.default.svc.cluster.local"
    );
    assert_eq!(
        destination_cluster(&c, "default", &d("unknown.example.com", None, None)),
        "outbound|9080||unknown.example.com"
    );
    assert_eq!(
        destination_cluster(
            &c,
            "default",
            &d("reviews.default.svc.cluster.local", Some(8000), None)
        ),
        "outbound|8000||reviews.default.svc.cluster.local"
    );
}

#[test]
fn delegates_are_merged() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /reviews}}]
    delegate: {name: child}
    timeout: 3s
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: child, namespace: default}
spec:
  http:
  - match: [{uri: {prefix: /reviews/v2}}, {uri: {prefix: /other}}]
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
"#;
    let routes = routes_for(yaml, &["mesh"]);
    assert_eq!(routes.len(), 2);
    assert!(
        matches!(&routes[0].r#match.as_ref().unwrap().path_specifier, Some(PathSpecifier::Prefix(p)) if p == "/reviews/v2")
    );
    assert_eq!(
        action(&routes[0]).timeout.unwrap().seconds,
        3,
        "inherited from the root"
    );
    assert!(
        matches!(&routes[1].r#match.as_ref().unwrap().path_specifier, Some(PathSpecifier::Prefix(p)) if p == "/reviews")
    );
    assert_eq!(
        action(&routes[1]).cluster_specifier,
        Some(ClusterSpecifier::Cluster(
            "outbound|9080|v1|reviews.default.svc.cluster.local".into()
        ))
    );
}

#[test]
fn base64_bodies() {
    assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
    assert_eq!(decode_base64("aGk").unwrap(), b"hi");
    assert!(decode_base64("!!").is_none());
}
