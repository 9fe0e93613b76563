//! CORS: preflights answered or forwarded, response headers, origin
//! matchers, `filter_enabled`, and the merge of levels.

use super::*;

fn exact(s: &str) -> StringMatcher {
    sm(string_matcher::MatchPattern::Exact(s.into()), false)
}

fn policy(origins: Vec<StringMatcher>) -> CorsPolicy {
    CorsPolicy {
        allow_origin_string_match: origins,
        allow_methods: "GET,POST".into(),
        allow_headers: "content-type,x-grpc-web".into(),
        max_age: "100".into(),
        ..Default::default()
    }
}

/// The table of one forwarding route with `route` as its CORS policy and
/// `vh` as its virtual host's.
fn table(route: Option<CorsPolicy>, vh: Option<CorsPolicy>) -> RouteTable {
    let mut r = route_with("", prefix("/"), to("c"));
    if let Some(p) = route {
        r.typed_per_filter_config
            .insert("envoy.filters.http.cors".into(), any(&p));
    }
    let mut v = vhost("h", &["*"], vec![r]);
    if let Some(p) = vh {
        v.typed_per_filter_config
            .insert("envoy.filters.http.cors".into(), any(&p));
    }
    compiled(&config(vec![v]))
}

fn cors(t: &RouteTable) -> Cors {
    t.select(&req("h", "/").view(0))
        .unwrap()
        .cors
        .expect("a CORS policy")
        .clone()
}

fn preflight(origin: &str) -> Req {
    let mut r = req("h", "/")
        .header("origin", origin)
        .header("access-control-request-method", "PUT");
    r.method = "OPTIONS".into();
    r
}

fn answer(c: &Cors, r: &Req) -> Vec<(&'static str, String)> {
    match c.preflight(&r.view(0), 0) {
        Preflight::Answer(h) => h,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn pairs(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    list.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

#[test]
fn cors_preflight_allowed() {
    let c = cors(&table(Some(policy(vec![exact("https://a.example")])), None));
    assert_eq!(
        answer(&c, &preflight("https://a.example")),
        pairs(&[
            ("access-control-allow-origin", "https://a.example"),
            ("access-control-allow-methods", "GET,POST"),
            ("access-control-allow-headers", "content-type,x-grpc-web"),
            ("access-control-max-age", "100"),
        ])
    );
    // Exact matching is case-sensitive unless `ignore_case`.
    assert_eq!(
        c.preflight(&preflight("https://A.example").view(0), 0),
        Preflight::Forward
    );
    let c = cors(&table(
        Some(policy(vec![sm(
            string_matcher::MatchPattern::Exact("https://a.example".into()),
            true,
        )])),
        None,
    ));
    assert!(matches!(
        c.preflight(&preflight("https://A.EXAMPLE").view(0), 0),
        Preflight::Answer(_)
    ));
}

#[test]
fn cors_preflight_denied_forward_or_answer() {
    // Not allowed, forward_not_matching_preflights by default: forward.
    let c = cors(&table(Some(policy(vec![exact("https://a.example")])), None));
    assert_eq!(
        c.preflight(&preflight("https://evil.example").view(0), 0),
        Preflight::Forward
    );
    assert!(
        c.response_headers(&preflight("https://evil.example").view(0), 0)
            .is_empty()
    );
    // forward_not_matching_preflights: false: answered, without
    // access-control-allow-origin.
    let mut p = policy(vec![exact("https://a.example")]);
    p.forward_not_matching_preflights = Some(BoolValue { value: false });
    let c = cors(&table(Some(p), None));
    assert_eq!(
        answer(&c, &preflight("https://evil.example")),
        pairs(&[
            ("access-control-allow-methods", "GET,POST"),
            ("access-control-allow-headers", "content-type,x-grpc-web"),
            ("access-control-max-age", "100"),
        ])
    );
}

#[test]
fn cors_not_preflights() {
    let c = cors(&table(Some(policy(vec![exact("https://a.example")])), None));
    // Not OPTIONS.
    let mut r = preflight("https://a.example");
    r.method = "PUT".into();
    assert_eq!(c.preflight(&r.view(0), 0), Preflight::NotPreflight);
    // No Access-Control-Request-Method.
    let mut r = req("h", "/").header("origin", "https://a.example");
    r.method = "OPTIONS".into();
    assert_eq!(c.preflight(&r.view(0), 0), Preflight::NotPreflight);
    // No Origin.
    let mut r = req("h", "/").header("access-control-request-method", "GET");
    r.method = "OPTIONS".into();
    assert_eq!(c.preflight(&r.view(0), 0), Preflight::NotPreflight);
}

#[test]
fn cors_origin_matchers() {
    let re = |s: &str| {
        sm(
            string_matcher::MatchPattern::SafeRegex(regex_match(s)),
            false,
        )
    };
    let c = cors(&table(
        Some(policy(vec![
            re(r".*\.envoyproxy\.io"),
            sm(
                string_matcher::MatchPattern::Prefix("https://pre".into()),
                false,
            ),
            sm(
                string_matcher::MatchPattern::Suffix(".suffix.example".into()),
                false,
            ),
            sm(
                string_matcher::MatchPattern::Contains("middle".into()),
                false,
            ),
        ])),
        None,
    ));
    for ok in [
        "www.envoyproxy.io",
        "https://prefixed.example",
        "https://x.suffix.example",
        "https://in-the-middle.example",
    ] {
        assert!(c.origin_allowed(ok), "{ok}");
        assert!(
            matches!(c.preflight(&preflight(ok).view(0), 0), Preflight::Answer(_)),
            "{ok}"
        );
    }
    // Regexes match the whole origin.
    for bad in [
        "www.envooooyproxy.io",
        "www.envoyproxy.io.evil",
        "http://other",
    ] {
        assert!(!c.origin_allowed(bad), "{bad}");
    }
    // A matcher accepting `*` allows every origin, echoed back.
    let c = cors(&table(Some(policy(vec![re(".*")])), None));
    assert_eq!(
        answer(&c, &preflight("https://any.example"))[0],
        (
            "access-control-allow-origin",
            "https://any.example".to_string()
        )
    );
    let c = cors(&table(Some(policy(vec![exact("*")])), None));
    assert!(c.origin_allowed("https://any.example"));
}

#[test]
fn cors_credentials_wildcards_private_network_expose() {
    let mut p = policy(vec![exact("https://a.example")]);
    p.allow_credentials = Some(BoolValue { value: true });
    p.allow_private_network_access = Some(BoolValue { value: true });
    p.allow_methods = "*".into();
    p.allow_headers = "*".into();
    p.expose_headers = "x-total".into();
    p.max_age = String::new();
    let c = cors(&table(Some(p), None));
    let r = preflight("https://a.example")
        .header("access-control-request-headers", "x-a,x-b")
        .header("access-control-request-private-network", "true");
    assert_eq!(
        answer(&c, &r),
        pairs(&[
            ("access-control-allow-origin", "https://a.example"),
            ("access-control-allow-credentials", "true"),
            ("access-control-allow-methods", "PUT"),
            ("access-control-allow-headers", "x-a,x-b"),
            ("access-control-allow-private-network", "true"),
            ("access-control-expose-headers", "x-total"),
        ])
    );
    // Private network only when the request asks.
    let plain = answer(&c, &preflight("https://a.example"));
    assert!(
        !plain
            .iter()
            .any(|(k, _)| *k == "access-control-allow-private-network")
    );
    // Response headers of an allowed cross-origin request.
    let r = req("h", "/").header("origin", "https://a.example");
    assert_eq!(
        c.response_headers(&r.view(0), 0),
        pairs(&[
            ("access-control-allow-origin", "https://a.example"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "x-total"),
        ])
    );
    // Not allowed, or no origin: nothing.
    let r = req("h", "/").header("origin", "https://b.example");
    assert!(c.response_headers(&r.view(0), 0).is_empty());
    assert!(c.response_headers(&req("h", "/").view(0), 0).is_empty());
    // Without credentials and expose headers: the origin only.
    let c = cors(&table(Some(policy(vec![exact("https://a.example")])), None));
    let r = req("h", "/").header("origin", "https://a.example");
    assert_eq!(
        c.response_headers(&r.view(0), 0),
        pairs(&[("access-control-allow-origin", "https://a.example")])
    );
}

#[test]
fn cors_filter_enabled_and_shadow() {
    let mut p = policy(vec![exact("https://a.example")]);
    p.filter_enabled = Some(RuntimeFractionalPercent {
        default_value: Some(pct(0)),
        runtime_key: String::new(),
    });
    let c = cors(&table(Some(p.clone()), None));
    let r = preflight("https://a.example");
    for random in randoms(100) {
        assert_eq!(c.preflight(&r.view(0), random), Preflight::NotPreflight);
        assert!(c.response_headers(&r.view(0), random).is_empty());
    }
    // 50 %: enabled for `random % 100 < 50`.
    p.filter_enabled = Some(RuntimeFractionalPercent {
        default_value: Some(pct(50)),
        runtime_key: String::new(),
    });
    let c = cors(&table(Some(p.clone()), None));
    assert!(matches!(c.preflight(&r.view(0), 49), Preflight::Answer(_)));
    assert_eq!(c.preflight(&r.view(0), 50), Preflight::NotPreflight);
    // Shadow mode only: nothing changes.
    p.filter_enabled = Some(RuntimeFractionalPercent {
        default_value: Some(pct(0)),
        runtime_key: String::new(),
    });
    p.shadow_enabled = Some(RuntimeFractionalPercent {
        default_value: Some(pct(100)),
        runtime_key: String::new(),
    });
    let c = cors(&table(Some(p), None));
    assert_eq!(c.preflight(&r.view(0), 0), Preflight::NotPreflight);
    assert!(c.response_headers(&r.view(0), 0).is_empty());
}

#[test]
fn cors_levels_merge_field_by_field() {
    // The route sets only max_age and credentials; the rest comes from the
    // virtual host.
    let route = CorsPolicy {
        max_age: "5".into(),
        allow_credentials: Some(BoolValue { value: true }),
        ..Default::default()
    };
    let c = cors(&table(
        Some(route),
        Some(policy(vec![exact("https://a.example")])),
    ));
    assert_eq!(c.max_age, "5");
    assert_eq!(c.allow_methods, "GET,POST");
    assert_eq!(c.allow_credentials, Some(true));
    assert!(c.origin_allowed("https://a.example"));
    // filter_enabled comes from the most specific policy only.
    let route = CorsPolicy {
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(pct(0)),
            runtime_key: String::new(),
        }),
        ..Default::default()
    };
    let c = cors(&table(
        Some(route),
        Some(policy(vec![exact("https://a.example")])),
    ));
    assert!(!c.enabled(0));
    // No CORS for redirects and direct responses.
    let mut v = vhost("h", &["*"], vec![redirect_route("/", Default::default())]);
    v.typed_per_filter_config.insert(
        "envoy.filters.http.cors".into(),
        any(&policy(vec![exact("https://a.example")])),
    );
    let t = compiled(&config(vec![v]));
    assert!(t.select(&req("h", "/").view(0)).unwrap().cors.is_none());
}
