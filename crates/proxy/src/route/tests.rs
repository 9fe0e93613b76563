//! Unit tests of the routing table: one per Envoy behaviour.

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, RuntimeFractionalPercent, data_source,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    self as rpb, HeaderMatcher, QueryParameterMatcher, RedirectAction, RetryPolicy as PbRetry,
    RouteAction, RouteConfiguration, RouteMatch, WeightedCluster as PbWeighted,
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    redirect_action, route, route_action, route_match, weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort as PbAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, Int64Range};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use prost::Message;

use super::*;
use crate::xds::Handler;

mod cors;
mod hashing;
mod policies;

// ------------------------------------------------------------------ builders

fn config(vhosts: Vec<rpb::VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: "test".into(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<rpb::Route>) -> rpb::VirtualHost {
    rpb::VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn to(cluster: &str) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

fn route_with(name: &str, m: RouteMatch, action: RouteAction) -> rpb::Route {
    rpb::Route {
        name: name.into(),
        r#match: Some(m),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    }
}

fn regex_match(re: &str) -> RegexMatcher {
    RegexMatcher {
        regex: re.into(),
        ..Default::default()
    }
}

fn sm(p: string_matcher::MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case,
    }
}

fn compiled(rc: &RouteConfiguration) -> RouteTable {
    compile(rc).unwrap_or_else(|e| panic!("compile: {e:#?}"))
}

fn errors(rc: &RouteConfiguration) -> Vec<String> {
    compile(rc).expect_err("compile should fail")
}

fn any<M: Message + prost::Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn header(k: &str, v: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn pct(numerator: u32) -> FractionalPercent {
    FractionalPercent {
        numerator,
        denominator: 0,
    }
}

fn secs(s: i64) -> PbDuration {
    PbDuration {
        seconds: s,
        nanos: 0,
    }
}

struct Req {
    authority: String,
    method: String,
    path: String,
    scheme: String,
    headers: hyper::HeaderMap,
}

fn req(authority: &str, path: &str) -> Req {
    Req {
        authority: authority.into(),
        method: "GET".into(),
        path: path.into(),
        scheme: "http".into(),
        headers: hyper::HeaderMap::new(),
    }
}

impl Req {
    fn header(mut self, k: &'static str, v: &str) -> Req {
        self.headers.append(k, v.parse().unwrap());
        self
    }
    fn view(&self, random: u64) -> RequestView<'_> {
        RequestView {
            authority: &self.authority,
            method: &self.method,
            path_and_query: &self.path,
            scheme: &self.scheme,
            headers: &self.headers,
            random,
        }
    }
}

/// The cluster `t` routes `r` to, or `None`.
fn cluster_of<'a>(t: &'a RouteTable, r: &Req) -> Option<&'a str> {
    match t.select(&r.view(0))?.action {
        SelectedAction::Cluster(c) => Some(c),
        _ => None,
    }
}

/// A deterministic sequence of randoms (64-bit LCG, high bits).
fn randoms(n: usize) -> impl Iterator<Item = u64> {
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    (0..n).map(move |_| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 11
    })
}

// ------------------------------------------------------------------ domains

#[test]
fn route_domain_precedence() {
    let t = compiled(&config(vec![
        vhost("any", &["*"], vec![route_with("", prefix("/"), to("any"))]),
        vhost(
            "pre",
            &["foo.*"],
            vec![route_with("", prefix("/"), to("pre"))],
        ),
        vhost(
            "suf",
            &["*.example.com"],
            vec![route_with("", prefix("/"), to("suf"))],
        ),
        vhost(
            "suf2",
            &["*.b.example.com"],
            vec![route_with("", prefix("/"), to("suf2"))],
        ),
        vhost(
            "exact",
            &["a.b.example.com"],
            vec![route_with("", prefix("/"), to("exact"))],
        ),
    ]));
    let c = |host: &str| cluster_of(&t, &req(host, "/")).unwrap().to_string();
    assert_eq!(c("a.b.example.com"), "exact");
    assert_eq!(c("A.B.Example.COM"), "exact");
    assert_eq!(c("x.b.example.com"), "suf2", "longest suffix first");
    assert_eq!(c("x.example.com"), "suf");
    assert_eq!(c("foo.example.com"), "suf", "suffix before prefix");
    assert_eq!(c("foo.bar"), "pre");
    assert_eq!(c("other"), "any");
    assert_eq!(
        c(".example.com"),
        "any",
        "the wildcard matches at least one character"
    );
    // No domain names a port: the authority's port is ignored.
    assert_eq!(c("a.b.example.com:8080"), "exact");
}

#[test]
fn route_domain_ports() {
    let t = compiled(&config(vec![
        vhost(
            "with-port",
            &["reviews:9080", "reviews"],
            vec![route_with("", prefix("/"), to("r"))],
        ),
        vhost(
            "v6",
            &["[::1]:80"],
            vec![route_with("", prefix("/"), to("v6"))],
        ),
    ]));
    assert_eq!(cluster_of(&t, &req("reviews:9080", "/")), Some("r"));
    assert_eq!(cluster_of(&t, &req("reviews", "/")), Some("r"));
    // A domain names a port: the authority is matched with its port.
    assert_eq!(cluster_of(&t, &req("reviews:9090", "/")), None);
    assert_eq!(cluster_of(&t, &req("[::1]:80", "/")), Some("v6"));
    let mut rc = config(vec![vhost(
        "h",
        &["reviews:9080", "x"],
        vec![route_with("", prefix("/"), to("x"))],
    )]);
    rc.ignore_port_in_host_matching = true;
    assert_eq!(cluster_of(&compiled(&rc), &req("x:1234", "/")), Some("x"));
}

// ------------------------------------------------------------------ paths

#[test]
fn route_path_matching_in_order() {
    let mut ci = prefix("/CI");
    ci.case_sensitive = Some(BoolValue { value: false });
    let t = compiled(&config(vec![vhost(
        "h",
        &["*"],
        vec![
            route_with(
                "exact",
                RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Path("/exact".into())),
                    ..Default::default()
                },
                to("exact"),
            ),
            route_with(
                "sep",
                RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::PathSeparatedPrefix(
                        "/api".into(),
                    )),
                    ..Default::default()
                },
                to("sep"),
            ),
            route_with(
                "re",
                RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex_match(
                        "/v[0-9]+",
                    ))),
                    ..Default::default()
                },
                to("re"),
            ),
            route_with("ci", ci, to("ci")),
            route_with("all", prefix("/"), to("all")),
            route_with("never", prefix("/exact"), to("never")),
        ],
    )]));
    let c = |p: &str| cluster_of(&t, &req("h", p)).unwrap().to_string();
    assert_eq!(c("/exact"), "exact");
    assert_eq!(
        c("/exact?q=1"),
        "exact",
        "the query is not part of the path"
    );
    assert_eq!(c("/exact/"), "all");
    assert_eq!(c("/EXACT"), "all", "case-sensitive by default");
    assert_eq!(c("/api"), "sep");
    assert_eq!(c("/api/x"), "sep");
    assert_eq!(c("/apix"), "all");
    assert_eq!(c("/v12"), "re");
    assert_eq!(c("/v12?x"), "re");
    assert_eq!(c("/v12x"), "all", "regexes match the whole path");
    assert_eq!(c("/xv12"), "all");
    assert_eq!(c("/ci/x"), "ci");
    assert_eq!(c("/cI"), "ci");
    let s = t.select(&req("h", "/exact").view(0)).unwrap();
    assert_eq!(s.route_name, "exact");
    assert_eq!(s.virtual_host, "h");
}

// ------------------------------------------------------------------ headers

fn hm(name: &str, spec: HeaderMatchSpecifier) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn with_headers(headers: Vec<HeaderMatcher>) -> RouteTable {
    let mut m = prefix("/");
    m.headers = headers;
    compiled(&config(vec![vhost(
        "h",
        &["*"],
        vec![
            route_with("", m, to("hit")),
            route_with("", prefix("/"), to("miss")),
        ],
    )]))
}

fn hit(t: &RouteTable, r: &Req) -> bool {
    cluster_of(t, r) == Some("hit")
}

#[test]
fn route_header_string_matches() {
    use string_matcher::MatchPattern as P;
    let t = with_headers(vec![hm(
        "end-user",
        HeaderMatchSpecifier::StringMatch(sm(P::Exact("jason".into()), false)),
    )]);
    assert!(hit(&t, &req("h", "/").header("end-user", "jason")));
    assert!(!hit(&t, &req("h", "/").header("end-user", "Jason")));
    assert!(!hit(&t, &req("h", "/")));
    let t = with_headers(vec![hm(
        "x",
        HeaderMatchSpecifier::StringMatch(sm(P::Suffix("END".into()), true)),
    )]);
    assert!(hit(&t, &req("h", "/").header("x", "the-end")));
    let t = with_headers(vec![hm(
        "x",
        HeaderMatchSpecifier::StringMatch(sm(P::SafeRegex(regex_match("^(a|b)$")), false)),
    )]);
    assert!(hit(&t, &req("h", "/").header("x", "a")));
    assert!(!hit(&t, &req("h", "/").header("x", "ab")));
    let t = with_headers(vec![hm(
        "x",
        HeaderMatchSpecifier::StringMatch(sm(P::SafeRegex(regex_match("a|b")), false)),
    )]);
    assert!(!hit(&t, &req("h", "/").header("x", "ab")), "full match");
    // Several values are matched joined with `,`.
    let t = with_headers(vec![hm(
        "x",
        HeaderMatchSpecifier::StringMatch(sm(P::Exact("1,2".into()), false)),
    )]);
    assert!(hit(&t, &req("h", "/").header("x", "1").header("x", "2")));
    // Pseudo-headers.
    let t = with_headers(vec![hm(
        ":method",
        HeaderMatchSpecifier::StringMatch(sm(P::Exact("POST".into()), false)),
    )]);
    let mut post = req("h", "/");
    post.method = "POST".into();
    assert!(hit(&t, &post));
    assert!(!hit(&t, &req("h", "/")));
}

#[test]
#[allow(deprecated)]
fn route_header_present_range_invert_missing() {
    let t = with_headers(vec![hm("x", HeaderMatchSpecifier::PresentMatch(true))]);
    assert!(hit(&t, &req("h", "/").header("x", "")));
    assert!(!hit(&t, &req("h", "/")));
    let t = with_headers(vec![hm("x", HeaderMatchSpecifier::PresentMatch(false))]);
    assert!(hit(&t, &req("h", "/")));
    let mut inv = hm("x", HeaderMatchSpecifier::PresentMatch(true));
    inv.invert_match = true;
    let t = with_headers(vec![inv]);
    assert!(hit(&t, &req("h", "/")));
    assert!(!hit(&t, &req("h", "/").header("x", "1")));

    let t = with_headers(vec![hm(
        "n",
        HeaderMatchSpecifier::RangeMatch(Int64Range {
            start: -10,
            end: 10,
        }),
    )]);
    assert!(hit(&t, &req("h", "/").header("n", "-10")));
    assert!(hit(&t, &req("h", "/").header("n", "9")));
    assert!(!hit(&t, &req("h", "/").header("n", "10")));
    assert!(!hit(&t, &req("h", "/").header("n", "x")));

    // invert_match: an absent header matches; a matching value does not.
    let mut inv = hm("x-skip", HeaderMatchSpecifier::ExactMatch("1".into()));
    inv.invert_match = true;
    let t = with_headers(vec![inv]);
    assert!(hit(&t, &req("h", "/")));
    assert!(hit(&t, &req("h", "/").header("x-skip", "2")));
    assert!(!hit(&t, &req("h", "/").header("x-skip", "1")));

    // treat_missing_header_as_empty.
    let mut empty = hm("x", HeaderMatchSpecifier::SafeRegexMatch(regex_match("a*")));
    assert!(!hit(&with_headers(vec![empty.clone()]), &req("h", "/")));
    empty.treat_missing_header_as_empty = true;
    assert!(hit(&with_headers(vec![empty]), &req("h", "/")));

    // Legacy prefix / contains.
    let t = with_headers(vec![
        hm("a", HeaderMatchSpecifier::PrefixMatch("test-".into())),
        hm("b", HeaderMatchSpecifier::ContainsMatch("mid".into())),
    ]);
    assert!(hit(
        &t,
        &req("h", "/").header("a", "test-1").header("b", "amidst")
    ));
    assert!(!hit(&t, &req("h", "/").header("a", "test-1")));
}

#[test]
fn route_query_grpc_fraction() {
    use string_matcher::MatchPattern as P;
    let mut m = prefix("/");
    m.query_parameters = vec![
        QueryParameterMatcher {
            name: "debug".into(),
            query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::StringMatch(sm(
                P::Exact("true yes".into()),
                false,
            ))),
        },
        QueryParameterMatcher {
            name: "flag".into(),
            query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::PresentMatch(true)),
        },
    ];
    let mut grpc = prefix("/svc");
    grpc.grpc = Some(Default::default());
    let mut frac = prefix("/frac");
    frac.runtime_fraction = Some(RuntimeFractionalPercent {
        default_value: Some(pct(30)),
        ..Default::default()
    });
    let t = compiled(&config(vec![vhost(
        "h",
        &["*"],
        vec![
            route_with("q", m, to("hit")),
            route_with("g", grpc, to("grpc")),
            route_with("f", frac, to("frac")),
            route_with("", prefix("/"), to("miss")),
        ],
    )]));
    assert!(hit(&t, &req("h", "/x?debug=true%20yes&flag")));
    assert!(hit(&t, &req("h", "/x?flag=&debug=true%20yes&debug=no")));
    assert!(
        !hit(&t, &req("h", "/x?debug=no&debug=true%20yes&flag")),
        "first value"
    );
    assert!(!hit(&t, &req("h", "/x?debug=true%20yes")));
    assert_eq!(
        cluster_of(
            &t,
            &req("h", "/svc/M").header("content-type", "application/grpc+proto")
        ),
        Some("grpc")
    );
    assert_eq!(cluster_of(&t, &req("h", "/svc/M")), Some("miss"));
    let r = req("h", "/frac");
    let hits = randoms(10_000)
        .filter(|&n| {
            matches!(
                t.select(&r.view(n)).unwrap().action,
                SelectedAction::Cluster("frac")
            )
        })
        .count();
    assert!((2900..=3100).contains(&hits), "{hits}");
}

// ------------------------------------------------------------------ actions

fn weighted(clusters: &[(&str, u32)]) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            PbWeighted {
                clusters: clusters
                    .iter()
                    .map(|(n, w)| ClusterWeight {
                        name: n.to_string(),
                        weight: Some(UInt32Value { value: *w }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

#[test]
fn route_weighted_split_statistics() {
    let t = compiled(&config(vec![vhost(
        "h",
        &["*"],
        vec![route_with(
            "",
            prefix("/"),
            weighted(&[("v1", 75), ("v3", 25), ("zero", 0)]),
        )],
    )]));
    let r = req("h", "/");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for n in randoms(10_000) {
        match t.select(&r.view(n)).unwrap().action {
            SelectedAction::Cluster(c) => *counts.entry(c).or_default() += 1,
            other => panic!("{other:?}"),
        }
    }
    let v1 = counts["v1"];
    assert!((7400..=7600).contains(&v1), "{counts:?}");
    assert_eq!(counts["v3"], 10_000 - v1);
    assert!(!counts.contains_key("zero"));
    // Deterministic: random % 100 < 75 → v1.
    assert_eq!(cluster_of(&t, &req("h", "/")), Some("v1"));
    let s = t.select(&r.view(74)).unwrap();
    assert!(matches!(s.action, SelectedAction::Cluster("v1")));
    let s = t.select(&r.view(75)).unwrap();
    assert!(matches!(s.action, SelectedAction::Cluster("v3")));
}

#[test]
fn route_timeouts_retries_mirrors_rewrites() {
    let mut a = to("c");
    a.timeout = Some(secs(0));
    let mut b = to("c");
    b.timeout = Some(PbDuration {
        seconds: 2,
        nanos: 500_000_000,
    });
    b.retry_policy = Some(PbRetry {
        retry_on: "5xx,gateway-error,retriable-status-codes".into(),
        num_retries: Some(UInt32Value { value: 3 }),
        per_try_timeout: Some(secs(1)),
        retriable_status_codes: vec![409],
        ..Default::default()
    });
    b.request_mirror_policies = vec![route_action::RequestMirrorPolicy {
        cluster: "shadow".into(),
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(pct(12)),
            ..Default::default()
        }),
        ..Default::default()
    }];
    b.prefix_rewrite = "/v1".into();
    b.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
        "new.host".into(),
    ));
    let mut c = to("c");
    c.regex_rewrite = Some(RegexMatchAndSubstitute {
        pattern: Some(regex_match("^/service/([^/]+)(/.*)$")),
        substitution: "\\2/instance/\\1".into(),
    });
    c.host_rewrite_specifier = Some(route_action::HostRewriteSpecifier::AutoHostRewrite(
        BoolValue { value: true },
    ));
    let mut vh = vhost(
        "h",
        &["*"],
        vec![
            route_with("none", prefix("/none"), a),
            route_with("b", prefix("/v2"), b),
            route_with("c", prefix("/service"), c),
            route_with("default", prefix("/"), to("c")),
        ],
    );
    vh.retry_policy = Some(PbRetry {
        retry_on: "connect-failure".into(),
        ..Default::default()
    });
    let t = compiled(&config(vec![vh]));
    let sel = |p: &str| t.select(&req("h", p).view(0)).unwrap();
    assert_eq!(sel("/none").timeout(), None);
    assert_eq!(sel("/").timeout(), Some(DEFAULT_TIMEOUT));
    let s = sel("/v2/x");
    assert_eq!(s.timeout(), Some(Duration::from_millis(2500)));
    let r = s.retry.unwrap();
    assert_eq!(r.num_retries, 3);
    assert_eq!(
        r.retry_on,
        ["5xx", "gateway-error", "retriable-status-codes"]
    );
    assert_eq!(r.per_try_timeout, Some(Duration::from_secs(1)));
    assert_eq!(r.retriable_status_codes, [409]);
    let f = s.forward.unwrap();
    assert_eq!(f.mirrors[0].cluster, "shadow");
    assert!(f.mirrors[0].fraction.unwrap().hits(11));
    assert!(!f.mirrors[0].fraction.unwrap().hits(12));
    assert_eq!(f.host_rewrite, HostRewrite::Literal("new.host".into()));
    assert_eq!(s.rewritten_path("/v2/x?q=1").as_deref(), Some("/v1/x?q=1"));
    let s = sel("/service/foo/v1/api");
    assert_eq!(
        s.rewritten_path("/service/foo/v1/api?a=b").as_deref(),
        Some("/v1/api/instance/foo?a=b")
    );
    assert_eq!(s.forward.unwrap().host_rewrite, HostRewrite::Auto);
    // The virtual host's retry policy applies where the route has none.
    let r = sel("/").retry.unwrap();
    assert_eq!(
        (r.num_retries, r.retry_on.as_slice()),
        (1, &["connect-failure".to_string()][..])
    );
    assert_eq!(sel("/").rewritten_path("/x"), None);
}

fn redirect_route(path: &str, r: RedirectAction) -> rpb::Route {
    rpb::Route {
        r#match: Some(prefix(path)),
        action: Some(route::Action::Redirect(r)),
        ..Default::default()
    }
}

#[test]
fn route_redirects() {
    use redirect_action::{
        PathRewriteSpecifier as P, RedirectResponseCode as Code, SchemeRewriteSpecifier as S,
    };
    let t = compiled(&config(vec![vhost(
        "h",
        &["*"],
        vec![
            redirect_route(
                "/https",
                RedirectAction {
                    scheme_rewrite_specifier: Some(S::HttpsRedirect(true)),
                    ..Default::default()
                },
            ),
            redirect_route(
                "/old",
                RedirectAction {
                    path_rewrite_specifier: Some(P::PrefixRewrite("/new".into())),
                    response_code: Code::PermanentRedirect as i32,
                    ..Default::default()
                },
            ),
            redirect_route(
                "/moved",
                RedirectAction {
                    host_redirect: "other.example".into(),
                    port_redirect: 8443,
                    path_rewrite_specifier: Some(P::PathRedirect("/landing".into())),
                    strip_query: true,
                    response_code: Code::Found as i32,
                    ..Default::default()
                },
            ),
            redirect_route(
                "/q",
                RedirectAction {
                    path_rewrite_specifier: Some(P::PathRedirect("/p?fixed=1".into())),
                    response_code: Code::SeeOther as i32,
                    ..Default::default()
                },
            ),
            redirect_route(
                "/t",
                RedirectAction {
                    scheme_rewrite_specifier: Some(S::SchemeRedirect("https".into())),
                    response_code: Code::TemporaryRedirect as i32,
                    ..Default::default()
                },
            ),
        ],
    )]));
    let loc = |authority: &str, path: &str| {
        let r = req(authority, path);
        let s = t.select(&r.view(0)).unwrap();
        (
            s.response_status().unwrap(),
            s.redirect_location(&r.view(0)).unwrap(),
        )
    };
    assert_eq!(
        loc("a.com:80", "/https/x?y=1"),
        (301, "https://a.com/https/x?y=1".into())
    );
    assert_eq!(
        loc("a.com:8080", "/https"),
        (301, "https://a.com:8080/https".into())
    );
    assert_eq!(
        loc("a.com", "/old/page?k=v"),
        (308, "http://a.com/new/page?k=v".into())
    );
    assert_eq!(
        loc("a.com:80", "/moved?x=1"),
        (302, "http://other.example:8443/landing".into())
    );
    assert_eq!(
        loc("a.com", "/q?x=1"),
        (303, "http://a.com/p?fixed=1".into())
    );
    assert_eq!(loc("a.com", "/t"), (307, "https://a.com/t".into()));
}

#[test]
fn route_direct_response_and_require_tls() {
    let mut vh = vhost(
        "h",
        &["*"],
        vec![rpb::Route {
            r#match: Some(prefix("/")),
            action: Some(route::Action::DirectResponse(rpb::DirectResponseAction {
                status: 418,
                body: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString("teapot".into())),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        }],
    );
    let t = compiled(&config(vec![vh.clone()]));
    let s = t.select(&req("h", "/").view(0)).unwrap();
    match s.action {
        SelectedAction::DirectResponse(d) => {
            assert_eq!(d.status, 418);
            assert_eq!(d.body.as_deref(), Some(&b"teapot"[..]));
        }
        other => panic!("{other:?}"),
    }
    vh.require_tls = rpb::virtual_host::TlsRequirementType::All as i32;
    let t = compiled(&config(vec![vh]));
    let r = req("h:80", "/a?b");
    let s = t.select(&r.view(0)).unwrap();
    assert!(matches!(s.action, SelectedAction::RequireTls));
    assert_eq!(s.response_status(), Some(301));
    assert_eq!(s.redirect_location(&r.view(0)).unwrap(), "https://h/a?b");
    let mut r = req("h", "/");
    r.scheme = "https".into();
    assert!(matches!(
        t.select(&r.view(0)).unwrap().action,
        SelectedAction::DirectResponse(_)
    ));
}
