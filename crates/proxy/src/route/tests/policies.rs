//! Header mutations, per-filter configs, refusals and robustness.

use super::*;

// ------------------------------------------------------------------ headers & filters

#[test]
#[allow(deprecated)] // the legacy `append` is still read
fn route_header_mutation_order() {
    let mut route = route_with("", prefix("/"), weighted(&[("only", 1)]));
    if let Some(route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(w)),
        ..
    })) = &mut route.action
    {
        w.clusters[0].request_headers_to_add = vec![header(
            "x-level",
            "cluster",
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        )];
    }
    route.request_headers_to_add = vec![header(
        "x-level",
        "route",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    route.response_headers_to_remove = vec!["server".into()];
    let mut vh = vhost("h", &["*"], vec![route]);
    vh.request_headers_to_add = vec![header("x-level", "vhost", HeaderAppendAction::AddIfAbsent)];
    let mut rc = config(vec![vh]);
    rc.request_headers_to_add = vec![HeaderValueOption {
        append: Some(BoolValue { value: false }),
        ..header("X-Level", "config", HeaderAppendAction::AppendIfExistsOrAdd)
    }];
    let levels = |rc: &RouteConfiguration| {
        let t = compiled(rc);
        let s = t.select(&req("h", "/").view(0)).unwrap();
        s.header_ops
            .iter()
            .map(|h| h.request_add[0].value.clone())
            .collect::<Vec<_>>()
    };
    // Default: most specific first, so the config level, applied last, wins.
    assert_eq!(levels(&rc), ["cluster", "route", "vhost", "config"]);
    rc.most_specific_header_mutations_wins = true;
    assert_eq!(levels(&rc), ["config", "vhost", "route", "cluster"]);
    let t = compiled(&rc);
    let s = t.select(&req("h", "/").view(0)).unwrap();
    let config_add = &s.header_ops[0].request_add[0];
    assert_eq!(config_add.name, "x-level");
    assert_eq!(
        config_add.action,
        AppendAction::OverwriteIfExistsOrAdd,
        "legacy append: false"
    );
    assert_eq!(s.header_ops[2].response_remove, ["server"]);
    assert_eq!(
        s.header_ops[1].request_add[0].action,
        AppendAction::AddIfAbsent
    );
}

fn http_fault(
    abort: Option<fault_abort::ErrorType>,
    delay: Option<fault_delay::FaultDelaySecifier>,
) -> HttpFault {
    HttpFault {
        abort: abort.map(|e| PbAbort {
            percentage: Some(pct(50)),
            error_type: Some(e),
            ..Default::default()
        }),
        delay: delay.map(|d| FaultDelay {
            percentage: Some(FractionalPercent {
                numerator: 5,
                denominator: 1,
            }),
            fault_delay_secifier: Some(d),
        }),
        ..Default::default()
    }
}

#[test]
fn route_fault_cors_and_opaque_filters() {
    let mut r = route_with("", prefix("/"), to("c"));
    r.typed_per_filter_config.insert(
        "envoy.filters.http.fault".into(),
        any(&http_fault(
            Some(fault_abort::ErrorType::HttpStatus(503)),
            Some(fault_delay::FaultDelaySecifier::FixedDelay(secs(2))),
        )),
    );
    r.typed_per_filter_config.insert(
        "envoy.filters.http.custom".into(),
        any(&BoolValue { value: true }),
    );
    let mut vh = vhost("h", &["*"], vec![r, route_with("", prefix("/"), to("d"))]);
    vh.typed_per_filter_config.insert(
        "envoy.filters.http.cors".into(),
        any(&CorsPolicy {
            allow_origin_string_match: vec![sm(
                string_matcher::MatchPattern::Exact("https://a.example".into()),
                false,
            )],
            allow_methods: "GET,POST".into(),
            allow_credentials: Some(BoolValue { value: true }),
            ..Default::default()
        }),
    );
    let t = compiled(&config(vec![vh]));
    let s = t.select(&req("h", "/").view(0)).unwrap();
    let f = s.fault.unwrap();
    let (d, dp) = f.delay.unwrap();
    assert_eq!(d, Duration::from_secs(2));
    assert_eq!(dp.percent(), 0.05);
    let (a, ap) = f.abort.unwrap();
    assert_eq!(a, FaultAbort::Http(503));
    assert_eq!(ap.percent(), 50.0);
    let c = s.cors.unwrap();
    let origins: Vec<_> = c
        .allow_origins
        .iter()
        .map(|o| (o.kind, o.pattern.as_str(), o.ignore_case))
        .collect();
    assert_eq!(origins, [("exact", "https://a.example", false)]);
    assert_eq!(c.allow_credentials, Some(true));
    assert_eq!(
        s.filter_configs.get("envoy.filters.http.custom"),
        Some(&"type.googleapis.com/google.protobuf.BoolValue")
    );

    // Header-controlled faults and filters this proxy lacks are refused.
    let mut r = route_with("", prefix("/"), to("c"));
    r.typed_per_filter_config.insert(
        "envoy.filters.http.fault".into(),
        any(&http_fault(
            Some(fault_abort::ErrorType::HeaderAbort(Default::default())),
            Some(fault_delay::FaultDelaySecifier::HeaderDelay(
                Default::default(),
            )),
        )),
    );
    r.typed_per_filter_config.insert(
        "envoy.filters.http.lua".into(),
        any(&BoolValue { value: true }),
    );
    let mut e = errors(&config(vec![vhost("h", &["*"], vec![r])]));
    e.sort();
    assert_eq!(
        e,
        [
            "virtual_hosts[0].routes[0].typed_per_filter_config[envoy.filters.http.fault].abort.header_abort: not supported",
            "virtual_hosts[0].routes[0].typed_per_filter_config[envoy.filters.http.fault].delay.header_delay: not supported",
            "virtual_hosts[0].routes[0].typed_per_filter_config[envoy.filters.http.lua]: this proxy has no such filter",
        ]
    );
}

// ------------------------------------------------------------------ errors

#[test]
fn route_errors_name_fields() {
    let bad_regex = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex_match(
            "/(unclosed",
        ))),
        ..Default::default()
    };
    let mut bad_retry = to("c");
    bad_retry.retry_policy = Some(PbRetry {
        retry_on: "5xx,sometimes".into(),
        ..Default::default()
    });
    let header_cluster = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::ClusterHeader("x".into())),
        ..Default::default()
    };
    let mut bad_total = weighted(&[("a", 1), ("b", 1)]);
    if let Some(route_action::ClusterSpecifier::WeightedClusters(w)) =
        &mut bad_total.cluster_specifier
    {
        #[allow(deprecated)]
        {
            w.total_weight = Some(UInt32Value { value: 3 });
        }
    }
    let mut cookie = prefix("/");
    cookie.cookies = vec![Default::default()];
    let rc = config(vec![
        vhost(
            "h",
            &["a", "*.x.com"],
            vec![
                route_with("", prefix("/"), to("ok")),
                route_with("", prefix("/"), bad_retry),
                route_with("", bad_regex, to("c")),
                route_with("", prefix("/"), header_cluster),
                route_with("", prefix("/"), bad_total),
                route_with("", cookie, to("c")),
            ],
        ),
        vhost("dup", &["A", "a*b"], vec![]),
    ]);
    let e = errors(&rc);
    let expect = [
        "virtual_hosts[0].routes[1].route.retry_policy.retry_on: unknown condition \"sometimes\"",
        "virtual_hosts[0].routes[2].match.safe_regex: invalid regex \"/(unclosed\"",
        "virtual_hosts[0].routes[3].route.cluster_header: not supported",
        "virtual_hosts[0].routes[4].route.weighted_clusters.total_weight: 3 differs from the sum of the weights, 2",
        "virtual_hosts[0].routes[5].match.cookies: matching on it is not supported",
        "virtual_hosts[1].domains[0]: domain \"A\" is already used",
        "virtual_hosts[1].domains[1]: `*` is allowed only at the start or the end",
    ];
    for want in expect {
        assert!(
            e.iter().any(|got| got.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    assert_eq!(e.len(), expect.len(), "{e:#?}");

    // The xDS handler NACKs with every reason.
    let nack = RouteValidator.validate("test", &rc).unwrap_err();
    assert!(
        nack.contains("safe_regex: invalid regex") && nack.contains("; "),
        "{nack}"
    );
    assert!(RouteValidator.validate("ok", &config(vec![])).is_ok());

    let mut rc = config(vec![]);
    rc.vhds = Some(Default::default());
    assert_eq!(
        errors(&rc),
        ["vhds: on-demand virtual hosts are not supported"]
    );
}

#[test]
fn route_empty_table_routes_nothing() {
    let t = compiled(&config(vec![]));
    assert!(t.select(&req("h", "/").view(0)).is_none());
    let t = compiled(&config(vec![vhost("h", &["h"], vec![])]));
    assert!(t.select(&req("h", "/").view(0)).is_none());
}

// ------------------------------------------------------------------ robustness

/// Random requests (odd authorities, non-ASCII and malformed paths, headers)
/// against a table using every feature never panic.
#[test]
fn route_random_requests_never_panic() {
    let mut ci = prefix("/ÄPI");
    ci.case_sensitive = Some(BoolValue { value: false });
    let mut rw = to("c");
    rw.prefix_rewrite = "/x".into();
    let mut hdr = prefix("/");
    hdr.headers = vec![hm(
        "n",
        HeaderMatchSpecifier::RangeMatch(Int64Range { start: 0, end: 5 }),
    )];
    hdr.query_parameters = vec![QueryParameterMatcher {
        name: "q".into(),
        query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::PresentMatch(true)),
    }];
    let t = compiled(&config(vec![
        vhost(
            "a",
            &["*.ä.com", "x.*", "[::1]"],
            vec![route_with("", ci, rw)],
        ),
        vhost(
            "b",
            &["*"],
            vec![
                route_with("", hdr, weighted(&[("a", 3), ("b", u32::MAX)])),
                redirect_route(
                    "/",
                    RedirectAction {
                        path_rewrite_specifier: Some(
                            redirect_action::PathRewriteSpecifier::PrefixRewrite("/z".into()),
                        ),
                        ..Default::default()
                    },
                ),
            ],
        ),
    ]));
    let alphabet: Vec<char> = "/?#%:[]*.aÄİıẞ9&=x \u{0}".chars().collect();
    let mut rs = randoms(40_000);
    let mut s = || -> String {
        let n = rs.next().unwrap();
        (0..(n % 12))
            .map(|i| alphabet[((n >> (i * 4)) % alphabet.len() as u64) as usize])
            .collect()
    };
    for i in 0..5_000u64 {
        let r = Req {
            authority: s(),
            method: s(),
            path: s(),
            scheme: if i % 2 == 0 { "http".into() } else { s() },
            headers: hyper::HeaderMap::new(),
        }
        .header("n", &(i % 7).to_string());
        if let Some(sel) = t.select(&r.view(i.wrapping_mul(0x9E37_79B9))) {
            let _ = sel.rewritten_path(&r.path);
            let _ = sel.redirect_location(&r.view(i));
        }
    }
}

/// Random route configurations (odd domains, regexes, header names, weights)
/// compile or are refused, never panic; and what compiles routes any request.
#[test]
fn route_random_configs_never_panic() {
    let alphabet: Vec<char> = "*.:/()[]|?+\\aZ9ä-_ ".chars().collect();
    let mut rs = randoms(100_000);
    let mut next = move || rs.next().unwrap();
    let s = |n: u64| -> String {
        (0..(n % 9))
            .map(|i| alphabet[((n >> (i * 5)) % alphabet.len() as u64) as usize])
            .collect()
    };
    let mut compiled_ok = 0;
    for _ in 0..2_000 {
        let (a, b, c, d) = (next(), next(), next(), next());
        let mut m = match a % 4 {
            0 => prefix(&s(b)),
            1 => RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Path(s(b))),
                ..Default::default()
            },
            2 => RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex_match(&s(b)))),
                ..Default::default()
            },
            _ => RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::PathSeparatedPrefix(s(b))),
                ..Default::default()
            },
        };
        m.case_sensitive = Some(BoolValue { value: c % 2 == 0 });
        m.headers = vec![hm(
            &s(c),
            HeaderMatchSpecifier::StringMatch(sm(
                string_matcher::MatchPattern::SafeRegex(regex_match(&s(d))),
                d % 2 == 0,
            )),
        )];
        let action = if a % 3 == 0 {
            weighted(&[(&s(c), (c % 3) as u32), ("x", (d % 2) as u32)])
        } else {
            let mut r = to(&s(d));
            r.prefix_rewrite = s(c);
            r
        };
        let rc = config(vec![vhost(
            &s(a),
            &[&s(b), &s(c)],
            vec![route_with("", m, action)],
        )]);
        if let Ok(t) = compile(&rc) {
            compiled_ok += 1;
            for n in 0..4 {
                let r = req(&s(next()), &s(next()));
                if let Some(sel) = t.select(&r.view(n)) {
                    let _ = sel.rewritten_path(&r.path);
                }
            }
        }
    }
    assert!(compiled_ok > 0);
}

#[test]
fn route_regex_is_validated_before_anchoring() {
    let m = RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex_match("a)|(b"))),
        ..Default::default()
    };
    let e = errors(&config(vec![vhost(
        "h",
        &["*"],
        vec![route_with("", m, to("c"))],
    )]));
    assert!(
        e[0].starts_with("virtual_hosts[0].routes[0].match.safe_regex: invalid regex"),
        "{e:?}"
    );
}
