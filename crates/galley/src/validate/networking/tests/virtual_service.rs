use super::{error, valid, warning};

const VS: &str = "VirtualService";

#[test]
fn realistic_virtual_services_pass() {
    valid(
        VS,
        r#"{hosts: [reviews.prod.svc.cluster.local, "*.bookinfo.com"], gateways: [mesh, istio-system/bookinfo-gateway],
            http: [
              {name: v2, match: [{uri: {prefix: /wpcatalog}, headers: {end-user: {exact: jason}}, ignoreUriCase: true}],
               rewrite: {uri: /newcatalog}, route: [{destination: {host: reviews, subset: v2}, weight: 80}, {destination: {host: reviews, subset: v3}, weight: 20}],
               timeout: 10s, retries: {attempts: 3, perTryTimeout: 2s, retryOn: "gateway-error,connect-failure,refused-stream"},
               corsPolicy: {allowOrigins: [{exact: "https://example.com"}], allowMethods: [GET, POST], allowHeaders: ["*"], maxAge: 24h},
               headers: {request: {set: {x-a: "1"}}, response: {remove: [server]}}},
              {match: [{uri: {exact: /old}}], redirect: {uri: /new, redirectCode: 302}},
              {match: [{uri: {prefix: /gone}}], directResponse: {status: 410, body: {string: gone}}},
              {route: [{destination: {host: reviews}}], fault: {abort: {httpStatus: 503, percentage: {value: 10}}, delay: {fixedDelay: 5s, percentage: {value: 0.5}}},
               mirrors: [{destination: {host: reviews, subset: v4}, percentage: {value: 5}}]}
            ],
            tls: [{match: [{sniHosts: [login.bookinfo.com], port: 443}], route: [{destination: {host: login.prod.svc.cluster.local}}]}],
            tcp: [{match: [{port: 27017}], route: [{destination: {host: mongo, port: {number: 5555}}}]}]}"#,
    );
    // A delegate: no hosts, http only.
    valid(
        VS,
        "{http: [{route: [{destination: {host: productpage}}]}]}",
    );
}

#[test]
fn hosts_and_gateways() {
    error(
        VS,
        "{hosts: [bad_host.com], http: [{route: [{destination: {host: a}}]}]}",
        "spec.hosts[0]",
        "not valid",
    );
    error(
        VS,
        r#"{hosts: ["*"], http: [{route: [{destination: {host: a}}]}]}"#,
        "spec.hosts[0]",
        "not allowed for VirtualServices that apply to the mesh",
    );
    error(
        VS,
        r#"{hosts: ["*.foo.com", bar.foo.com], http: [{route: [{destination: {host: a}}]}]}"#,
        "spec.hosts[1]",
        "overlaps host \"*.foo.com\"",
    );
    error(
        VS,
        "{hosts: [a.com], gateways: [istio-system/Bad_GW], http: [{route: [{destination: {host: a}}]}]}",
        "spec.gateways[0]",
        "gateway name \"Bad_GW\"",
    );
    warning(
        VS,
        "{hosts: [a.com], gateways: [gw.istio-system], http: [{route: [{destination: {host: a}}]}]}",
        "spec.gateways[0]",
        "prefer namespace/name: \"istio-system/gw\"",
    );
    error(VS, "{hosts: [a.com]}", "spec", "has no routes");
}

#[test]
fn delegates() {
    error(
        VS,
        "{gateways: [gw], http: [{route: [{destination: {host: a}}]}]}",
        "spec.gateways",
        "delegate VirtualService",
    );
    error(
        VS,
        "{tcp: [{route: [{destination: {host: a}}]}]}",
        "spec.tcp",
        "cannot have tcp routes",
    );
    error(
        VS,
        "{http: [{delegate: {name: other}}]}",
        "spec.http[0].delegate",
        "cannot delegate again",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{delegate: {name: d}, route: [{destination: {host: a}}]}]}",
        "spec.http[0].route",
        "cannot be combined with delegate",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{delegate: {namespace: ns}}]}",
        "spec.http[0].delegate.name",
        "is required",
    );
}

#[test]
fn route_actions_are_exclusive() {
    error(
        VS,
        "{hosts: [a.com], http: [{redirect: {uri: /x}, route: [{destination: {host: a}}]}]}",
        "spec.http[0].route",
        "cannot be combined with redirect",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{redirect: {uri: /x}, directResponse: {status: 200}}]}",
        "spec.http[0].directResponse",
        "cannot be combined with redirect",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{directResponse: {status: 200}, fault: {abort: {httpStatus: 500}}}]}",
        "spec.http[0].fault",
        "cannot be combined with directResponse",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{match: [{uri: {prefix: /}}]}]}",
        "spec.http[0]",
        "needs an action",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrors: [{destination: {host: c}}]}]}",
        "spec.http[0].mirrors",
        "cannot be combined with mirror",
    );
}

#[test]
fn destinations_and_weights() {
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{weight: 100}]}]}",
        "spec.http[0].route[0].destination.host",
        "is required",
    );
    error(
        VS,
        r#"{hosts: [a.com], http: [{route: [{destination: {host: "*"}}]}]}"#,
        "spec.http[0].route[0].destination.host",
        "not a valid destination",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a, subset: V1}}]}]}",
        "spec.http[0].route[0].destination.subset",
        "subset name \"V1\"",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a, port: {number: 70000}}}]}]}",
        "spec.http[0].route[0].destination.port.number",
        "out of range",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}, weight: -5}]}]}",
        "spec.http[0].route[0].weight",
        "must be 0 or more",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}, weight: 0}, {destination: {host: b}, weight: 0}]}]}",
        "spec.http[0].route",
        "add up to 0",
    );
    // Weights need not add up to 100: they are relative.
    valid(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}, weight: 1}, {destination: {host: b}, weight: 3}]}]}",
    );
}

#[test]
fn retries_timeouts_and_faults() {
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], retries: {attempts: -1}}]}",
        "spec.http[0].retries.attempts",
        "must be 0 or more",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], retries: {perTryTimeout: 2s}}]}",
        "spec.http[0].retries.attempts",
        "disables retries",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], retries: {attempts: 2, perTryTimeout: 0s}}]}",
        "spec.http[0].retries.perTryTimeout",
        "must be at least 1ms (got 0s)",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], retries: {attempts: 2, retryOn: \"5xxx\"}}]}",
        "spec.http[0].retries.retryOn",
        "\"5xxx\"",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], timeout: 1500us}]}",
        "spec.http[0].timeout",
        "whole number of milliseconds",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 700}}}]}",
        "spec.http[0].fault.abort.httpStatus",
        "out of range",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], fault: {abort: {grpcStatus: \"14\"}}}]}",
        "spec.http[0].fault.abort.grpcStatus",
        "UNAVAILABLE",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], fault: {delay: {fixedDelay: 1s, percentage: {value: 120}}}}]}",
        "spec.http[0].fault.delay.percentage.value",
        "out of range",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], fault: {}}]}",
        "spec.http[0].fault",
        "set abort, delay, or both",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], fault: {abort: {httpStatus: 500, grpcStatus: UNAVAILABLE}}}]}",
        "spec.http[0].fault.abort",
        "only one of httpStatus, grpcStatus, http2Error",
    );
    warning(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], mirror: {host: b}, mirrorPercent: 50}]}",
        "spec.http[0].mirrorPercent",
        "deprecated",
    );
}

#[test]
fn matches_redirects_and_rewrites() {
    error(
        VS,
        "{hosts: [a.com], http: [{match: [{uri: {regex: \"(?=x)\"}}], route: [{destination: {host: a}}]}]}",
        "spec.http[0].match[0].uri.regex",
        "RE2",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{match: [{headers: {\"bad header\": {exact: x}}}], route: [{destination: {host: a}}]}]}",
        "spec.http[0].match[0].headers[\"bad header\"]",
        "not a valid header name",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{match: [{method: {prefix: \"\"}}], route: [{destination: {host: a}}]}]}",
        "spec.http[0].match[0].method.prefix",
        "cannot be empty",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{match: [{uri: {exact: /a, prefix: /b}}], route: [{destination: {host: a}}]}]}",
        "spec.http[0].match[0].uri",
        "only one of exact, prefix, regex",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{match: [{sourceNamespace: Bad_NS}], route: [{destination: {host: a}}]}]}",
        "spec.http[0].match[0].sourceNamespace",
        "not a valid namespace name",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{match: [{headers: {\"@request.auth.claims.group\": {exact: admin}}}], route: [{destination: {host: a}}]}]}",
        "spec.http[0].match[0].headers[\"@request.auth.claims.group\"]",
        "JWT claim routing",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{redirect: {redirectCode: 200, uri: /x}}]}",
        "spec.http[0].redirect.redirectCode",
        "3xx",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{redirect: {redirectCode: 301}}]}",
        "spec.http[0].redirect",
        "must change something",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{redirect: {scheme: ftp}}]}",
        "spec.http[0].redirect.scheme",
        "\"http\" or \"https\"",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}}]}",
        "spec.http[0].rewrite",
        "only one of uri and uriRegexRewrite",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], rewrite: {uriRegexRewrite: {match: \"^/a\"}}}]}",
        "spec.http[0].rewrite.uriRegexRewrite.rewrite",
        "is required",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], rewrite: {authority: x.com}, headers: {request: {set: {\":authority\": y.com}}}}]}",
        "spec.http[0].headers.request.set[\":authority\"]",
        "in one place only",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], headers: {request: {set: {\":path\": /x}}}}]}",
        "spec.http[0].headers.request.set[\":path\"]",
        "managed by the proxy",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], headers: {response: {add: {x-a: \"50%\"}}}}]}",
        "spec.http[0].headers.response.add.x-a",
        "unmatched '%'",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{directResponse: {status: 100}}]}",
        "spec.http[0].directResponse.status",
        "out of range",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{directResponse: {status: 200, body: {bytes: \"not base64!\"}}}]}",
        "spec.http[0].directResponse.body.bytes",
        "not valid base64",
    );
}

#[test]
fn cors_policy() {
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], corsPolicy: {allowMethods: [FETCH]}}]}",
        "spec.http[0].corsPolicy.allowMethods[0]",
        "not a supported HTTP method",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], corsPolicy: {allowOrigins: [{exact: \"\"}]}}]}",
        "spec.http[0].corsPolicy.allowOrigins[0]",
        "non-empty",
    );
    error(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], corsPolicy: {maxAge: 1500ms}}]}",
        "spec.http[0].corsPolicy.maxAge",
        "whole number of seconds",
    );
    warning(
        VS,
        "{hosts: [a.com], http: [{route: [{destination: {host: a}}], corsPolicy: {allowOrigin: [\"https://a.com\"]}}]}",
        "spec.http[0].corsPolicy.allowOrigin",
        "deprecated",
    );
}

#[test]
fn tls_and_tcp_routes() {
    error(
        VS,
        "{hosts: [a.com], tls: [{match: [{port: 443}], route: [{destination: {host: a}}]}]}",
        "spec.tls[0].match[0].sniHosts",
        "is required",
    );
    error(
        VS,
        "{hosts: [a.com], tls: [{match: [{sniHosts: [b.com]}], route: [{destination: {host: a}}]}]}",
        "spec.tls[0].match[0].sniHosts[0]",
        "not covered by any host",
    );
    error(
        VS,
        "{hosts: [a.com], tls: [{match: [{sniHosts: [a.com]}]}]}",
        "spec.tls[0].route",
        "is required",
    );
    error(
        VS,
        "{hosts: [a.com], tcp: [{match: [{destinationSubnets: [10.0.0.0/33]}], route: [{destination: {host: a}}]}]}",
        "spec.tcp[0].match[0].destinationSubnets[0]",
        "CIDR",
    );
    error(
        VS,
        "{hosts: [a.com], tcp: [{match: [{port: 80}]}]}",
        "spec.tcp[0].route",
        "is required",
    );
    warning(
        VS,
        "{hosts: [a.com, 1.2.3.4], tls: [{match: [{sniHosts: [1.2.3.4]}], route: [{destination: {host: a}}]}]}",
        "spec.tls[0].match[0].sniHosts[0]",
        "IP address",
    );
}

#[test]
fn export_to() {
    error(
        VS,
        "{hosts: [a.com], exportTo: [default, \".\"], http: [{route: [{destination: {host: a}}]}]}",
        "spec.exportTo[1]",
        "own namespace",
    );
    error(
        VS,
        "{hosts: [a.com], exportTo: [\"*\", ns1], http: [{route: [{destination: {host: a}}]}]}",
        "spec.exportTo",
        "cannot be combined",
    );
    error(
        VS,
        "{hosts: [a.com], exportTo: [\"~\"], http: [{route: [{destination: {host: a}}]}]}",
        "spec.exportTo[0]",
        "not a valid exportTo entry",
    );
}
