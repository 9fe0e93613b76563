//! Rules of one VirtualService `HTTPRoute`: which actions may be combined, match
//! requests, redirect, direct response, rewrite, retries, fault injection,
//! mirroring, CORS and header operations.

use common::istio::networking::{
    CorsPolicy, FaultAbort, FaultDelay, HttpDirectResponse, HttpFaultInjection, HttpMatchRequest,
    HttpRedirect, HttpRetry, HttpRewrite, HttpRoute,
};

use super::super::checks;
use super::super::field::Field;
use super::util;
use super::virtual_service::{destination, http_route_destinations, source_namespace};

/// gRPC status names Istio accepts for `fault.abort.grpcStatus`.
const GRPC_STATUS: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Direct response bodies above this size are refused; above a tenth of it, warned.
const MAX_DIRECT_RESPONSE: usize = 1024 * 1024;

/// Validates one HTTP route; `delegate` is set when the VirtualService is a delegate.
pub(super) fn http_route(f: &mut Field<'_>, route: &HttpRoute, delegate: bool) {
    conflicts(f, route, delegate);
    let mut fm = f.at("match");
    for (i, m) in route.r#match.iter().enumerate() {
        match_request(&mut fm.index(i), m);
    }
    if let Some(h) = &route.headers {
        util::headers(&mut f.at("headers"), h);
    }
    if let Some(c) = &route.cors_policy {
        cors(&mut f.at("corsPolicy"), c);
    }
    if let Some(fault) = &route.fault {
        fault_injection(&mut f.at("fault"), fault);
    }
    if let Some(p) = route.mirror_percent {
        let mut fp = f.at("mirrorPercent");
        if p > 100 {
            fp.error(format!("must be at most 100 (got {p})"));
        }
        fp.warn("is deprecated; use mirrorPercentage: {value: ...} instead");
    }
    if let Some(p) = &route.mirror_percentage {
        util::percentage(&mut f.at("mirrorPercentage"), p);
    }
    if let Some(m) = &route.mirror {
        destination(&mut f.at("mirror"), m);
    }
    let mut fmi = f.at("mirrors");
    for (i, m) in route.mirrors.iter().enumerate() {
        let mut fi = fmi.index(i);
        destination(&mut fi.at("destination"), &m.destination);
        if let Some(p) = &m.percentage {
            util::percentage(&mut fi.at("percentage"), p);
        }
    }
    if let Some(rd) = &route.redirect {
        redirect(&mut f.at("redirect"), rd);
    }
    if let Some(d) = &route.direct_response {
        direct_response(&mut f.at("directResponse"), d);
    }
    if let Some(rt) = &route.retries {
        retries(&mut f.at("retries"), rt);
    }
    if let Some(rw) = &route.rewrite {
        rewrite(&mut f.at("rewrite"), rw);
    }
    authority_rewrite(f, route);
    http_route_destinations(&mut f.at("route"), &route.route);
    if let Some(t) = &route.timeout {
        checks::istio_duration(&mut f.at("timeout"), t);
    }
}

/// Which actions a route may combine (Istio's `validateHTTPRouteConflict`).
fn conflicts(f: &mut Field<'_>, route: &HttpRoute, delegate: bool) {
    if route.delegate.is_some() && !delegate {
        // A root route: it hands the request to the delegate and does nothing else.
        if route.redirect.is_some() {
            f.at("redirect").error(
                "cannot be combined with delegate: the delegate VirtualService decides what happens to the request",
            );
        }
        if !route.route.is_empty() {
            f.at("route").error(
                "cannot be combined with delegate: the delegate VirtualService decides where the request goes",
            );
        }
        if let Some(d) = &route.delegate {
            if d.name.as_deref().unwrap_or("").is_empty() {
                f.at("delegate")
                    .at("name")
                    .error("is required: name the delegate VirtualService (it must have no hosts)");
            }
            if let Some(ns) = d.namespace.as_deref().filter(|n| !n.is_empty())
                && !util::is_dns1123_label(ns)
            {
                f.at("delegate").at("namespace").error(format!(
                    "{ns:?} is not a valid namespace name (lower-case letters, digits and '-')"
                ));
            }
        }
        return;
    }
    if delegate && route.delegate.is_some() {
        f.at("delegate").error(
            "a delegate VirtualService's routes cannot delegate again; route the traffic here instead",
        );
    }
    if route.redirect.is_some() {
        if !route.route.is_empty() {
            f.at("route").error(
                "cannot be combined with redirect: a rule either forwards (route) or redirects; keep one",
            );
        }
        if route.fault.is_some() {
            f.at("fault")
                .error("cannot be combined with redirect; faults apply only to forwarded requests");
        }
        if route.rewrite.is_some() {
            f.at("rewrite")
                .error("cannot be combined with redirect; put the new URI in redirect.uri instead");
        }
        if route.direct_response.is_some() {
            f.at("directResponse").error(
                "cannot be combined with redirect: a rule either redirects or answers directly; keep one",
            );
        }
    } else if route.direct_response.is_some() {
        if !route.route.is_empty() {
            f.at("route").error(
                "cannot be combined with directResponse: a rule either forwards (route) or answers directly; keep one",
            );
        }
        if route.fault.is_some() {
            f.at("fault").error(
                "cannot be combined with directResponse; faults apply only to forwarded requests",
            );
        }
        if route.rewrite.is_some() {
            f.at("rewrite")
                .error("cannot be combined with directResponse; nothing is forwarded to rewrite");
        }
    } else if route.route.is_empty() {
        f.error(
            "needs an action: set route (destinations), redirect or directResponse (or delegate, in a root VirtualService)",
        );
    }
    if route.mirror.is_some() && !route.mirrors.is_empty() {
        f.at("mirrors")
            .error("cannot be combined with mirror; move the mirror destination into mirrors");
    }
}

fn match_request(f: &mut Field<'_>, m: &HttpMatchRequest) {
    let mut fh = f.at("headers");
    for (name, sm) in &m.headers {
        let mut fk = fh.key(name);
        util::header_match_name(&mut fk, name, true);
        util::string_match(&mut fk, sm, false);
    }
    let mut fw = f.at("withoutHeaders");
    for (name, sm) in &m.without_headers {
        let mut fk = fw.key(name);
        util::header_match_name(&mut fk, name, true);
        // `regex: "*"` is not a regex here: it means "header present".
        if sm.regex.as_deref() != Some("*") {
            util::string_match(&mut fk, sm, false);
        }
    }
    // The URI may have an empty prefix (it matches everything); the others may not.
    if let Some(u) = &m.uri {
        util::string_match(&mut f.at("uri"), u, true);
    }
    for (field, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            util::string_match(&mut f.at(field), sm, false);
        }
    }
    let mut fq = f.at("queryParams");
    for (name, sm) in &m.query_params {
        util::string_match(&mut fq.key(name), sm, false);
    }
    if let Some(p) = m.port.filter(|p| *p != 0) {
        checks::port(&mut f.at("port"), p);
    }
    checks::labels(&mut f.at("sourceLabels"), &m.source_labels);
    util::gateway_names(&mut f.at("gateways"), &m.gateways);
    source_namespace(f, m.source_namespace.as_deref());
    if m.ignore_uri_case == Some(true) && m.uri.as_ref().is_some_and(|u| u.regex.is_some()) {
        f.at("ignoreUriCase").warn(
            "has no effect on a regex uri match; write the regex case-insensitively with (?i)",
        );
    }
}

fn redirect(f: &mut Field<'_>, r: &HttpRedirect) {
    if r.uri.is_none()
        && r.authority.is_none()
        && r.port.is_none()
        && r.derive_port.is_none()
        && r.scheme.is_none()
        && r.prefix_rewrite.is_none()
    {
        f.error("must change something: set at least one of uri, prefixRewrite, authority, scheme, port or derivePort");
    }
    checks::at_most_one(
        f,
        &[
            ("port", r.port.is_some()),
            ("derivePort", r.derive_port.is_some()),
        ],
    );
    checks::at_most_one(
        f,
        &[
            ("uri", r.uri.is_some()),
            ("prefixRewrite", r.prefix_rewrite.is_some()),
        ],
    );
    if let Some(code) = r.redirect_code.filter(|c| *c != 0)
        && !(300..=399).contains(&code)
    {
        f.at("redirectCode").error(format!(
            "{code} is not a redirect status; use a 3xx code such as 301, 302, 307 or 308"
        ));
    }
    if let Some(s) = r.scheme.as_deref()
        && s != "http"
        && s != "https"
    {
        f.at("scheme").error(format!(
            "{s:?} is not a valid redirect scheme; use \"http\" or \"https\""
        ));
    }
    if let Some(p) = r.port.filter(|p| *p != 0) {
        checks::port(&mut f.at("port"), p);
    }
}

fn direct_response(f: &mut Field<'_>, d: &HttpDirectResponse) {
    let mut fs = f.at("status");
    if d.status == 0 {
        fs.error("is required: set the HTTP status to answer with (200 to 599)");
    } else {
        checks::http_status(&mut fs, i64::from(d.status), 200..=599);
    }
    let Some(body) = &d.body else { return };
    let mut fb = f.at("body");
    if !checks::at_most_one(
        &mut fb,
        &[
            ("string", body.string.is_some()),
            ("bytes", body.bytes.is_some()),
        ],
    ) {
        return;
    }
    let size = match (&body.string, &body.bytes) {
        (Some(s), _) => s.len(),
        (_, Some(b)) => {
            if !is_base64(b) {
                fb.at("bytes").error(
                    "is not valid base64; encode the body bytes with base64, or use string for text",
                );
            }
            b.len() / 4 * 3
        }
        _ => 0,
    };
    if size > MAX_DIRECT_RESPONSE {
        fb.error(format!(
            "is {size} bytes; direct responses must be under 1MB because every proxy holds them in its configuration"
        ));
    } else if size > MAX_DIRECT_RESPONSE / 10 {
        fb.warn(format!(
            "is {size} bytes; large direct responses slow down configuration pushes to every proxy"
        ));
    }
}

fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len().is_multiple_of(4)
        && s.len() - body.len() <= 2
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

fn retries(f: &mut Field<'_>, r: &HttpRetry) {
    let attempts = r.attempts.unwrap_or(0);
    if attempts < 0 {
        f.at("attempts").error(format!(
            "must be 0 or more (got {attempts}); 0 disables retries"
        ));
    }
    if attempts == 0
        && (r.per_try_timeout.is_some()
            || r.retry_on.is_some()
            || r.retry_remote_localities.is_some())
    {
        f.at("attempts").error(
            "is 0 (or unset), which disables retries, yet perTryTimeout, retryOn or retryRemoteLocalities is set; set attempts to 1 or more, or remove the retry settings",
        );
    }
    if let Some(t) = &r.per_try_timeout {
        checks::istio_duration(&mut f.at("perTryTimeout"), t);
    }
    if let Some(on) = &r.retry_on
        && !on.is_empty()
    {
        checks::retry_on(&mut f.at("retryOn"), on);
    }
    if let Some(b) = &r.backoff {
        checks::istio_duration(&mut f.at("backoff"), b);
    }
}

fn rewrite(f: &mut Field<'_>, r: &HttpRewrite) {
    let uri = r.uri.as_deref().is_some_and(|u| !u.is_empty());
    let authority = r.authority.as_deref().is_some_and(|a| !a.is_empty());
    if uri && r.uri_regex_rewrite.is_some() {
        f.error("only one of uri and uriRegexRewrite may be set; keep one");
    }
    if !uri && r.uri_regex_rewrite.is_none() && !authority {
        f.error("must change something: set uri, uriRegexRewrite or authority");
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let mut fr = f.at("uriRegexRewrite");
        let m = rr.r#match.as_deref().unwrap_or("");
        if m.is_empty() {
            fr.at("match")
                .error("is required: the regex matched against the path");
        } else {
            util::regex(&mut fr.at("match"), m);
        }
        if rr.rewrite.as_deref().unwrap_or("").is_empty() {
            fr.at("rewrite")
                .error("is required: the replacement path, which may use \\1-style groups");
        }
    }
}

/// The authority may be rewritten in one place only.
fn authority_rewrite(f: &mut Field<'_>, route: &HttpRoute) {
    let mut current = route
        .rewrite
        .as_ref()
        .and_then(|r| r.authority.clone())
        .filter(|a| !a.is_empty());
    let Some(req) = route.headers.as_ref().and_then(|h| h.request.as_ref()) else {
        return;
    };
    for (field, map) in [("set", &req.set), ("add", &req.add)] {
        for (k, v) in map {
            if !(k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host")) {
                continue;
            }
            if let Some(have) = &current {
                f.at("headers").at("request").at(field).key(k).error(format!(
                    "sets the authority to {v:?}, but it is already set to {have:?}; set the authority in one place only"
                ));
                return;
            }
            current = Some(v.clone());
        }
    }
}

fn cors(f: &mut Field<'_>, c: &CorsPolicy) {
    if !c.allow_origin.is_empty() {
        f.at("allowOrigin")
            .warn("is deprecated; use allowOrigins with exact, prefix or regex matches");
    }
    let mut fo = f.at("allowOrigins");
    for (i, o) in c.allow_origins.iter().enumerate() {
        let mut fi = fo.index(i);
        let value = o
            .exact
            .as_deref()
            .or(o.prefix.as_deref())
            .or(o.regex.as_deref());
        if value.unwrap_or("").is_empty() {
            fi.error("needs a non-empty exact, prefix or regex value naming the allowed origins");
        } else {
            util::string_match(&mut fi, o, false);
        }
    }
    let mut fm = f.at("allowMethods");
    for (i, m) in c.allow_methods.iter().enumerate() {
        if !checks::HTTP_METHODS.contains(&m.as_str()) {
            fm.index(i).error(format!(
                "{m:?} is not a supported HTTP method; use one of {}",
                checks::HTTP_METHODS.join(", ")
            ));
        }
    }
    for field in ["allowHeaders", "exposeHeaders"] {
        let list = if field == "allowHeaders" {
            &c.allow_headers
        } else {
            &c.expose_headers
        };
        let mut fl = f.at(field);
        for (i, h) in list.iter().enumerate() {
            if h != "*" {
                util::header_match_name(&mut fl.index(i), h, false);
            }
        }
    }
    if let Some(age) = &c.max_age {
        let mut fa = f.at("maxAge");
        if checks::istio_duration(&mut fa, age) && !age.as_nanos().is_multiple_of(1_000_000_000) {
            fa.error(format!(
                "must be a whole number of seconds (got {}); browsers cache preflights in seconds",
                age.as_str()
            ));
        }
    }
}

fn fault_injection(f: &mut Field<'_>, fault: &HttpFaultInjection) {
    if fault.abort.is_none() && fault.delay.is_none() {
        f.error("does nothing: set abort, delay, or both");
    }
    if let Some(a) = &fault.abort {
        abort(&mut f.at("abort"), a);
    }
    if let Some(d) = &fault.delay {
        delay(&mut f.at("delay"), d);
    }
}

fn abort(f: &mut Field<'_>, a: &FaultAbort) {
    if let Some(p) = &a.percentage {
        util::percentage(&mut f.at("percentage"), p);
    }
    let set = [
        ("httpStatus", a.http_status.is_some()),
        ("grpcStatus", a.grpc_status.is_some()),
        ("http2Error", a.http2_error.is_some()),
    ];
    if !checks::at_most_one(f, &set) {
        return;
    }
    if let Some(code) = a.http_status {
        checks::http_status(&mut f.at("httpStatus"), i64::from(code), 200..=599);
    } else if let Some(s) = &a.grpc_status {
        if !GRPC_STATUS.contains(&s.as_str()) {
            f.at("grpcStatus").error(format!(
                "gRPC status {s:?} is not supported; use a status name in capitals, such as UNAVAILABLE or NOT_FOUND (one of {})",
                GRPC_STATUS.join(", ")
            ));
        }
    } else if a.http2_error.is_some() {
        f.at("http2Error")
            .error("HTTP/2 abort faults are not supported yet; use httpStatus or grpcStatus");
    } else {
        f.warn("aborts nothing: set httpStatus or grpcStatus");
    }
}

fn delay(f: &mut Field<'_>, d: &FaultDelay) {
    if let Some(p) = &d.percentage {
        util::percentage(&mut f.at("percentage"), p);
    }
    if let Some(p) = d.percent {
        let mut fp = f.at("percent");
        util::int_percent(&mut fp, i64::from(p));
        fp.warn("is deprecated; use percentage: {value: ...} instead");
    }
    checks::at_most_one(
        f,
        &[
            ("fixedDelay", d.fixed_delay.is_some()),
            ("exponentialDelay", d.exponential_delay.is_some()),
        ],
    );
    if let Some(t) = &d.fixed_delay {
        checks::istio_duration(&mut f.at("fixedDelay"), t);
    }
    if d.exponential_delay.is_some() {
        f.at("exponentialDelay")
            .error("is not supported yet; use fixedDelay");
    }
    if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
        f.error("delays nothing: set fixedDelay, such as 5s");
    }
}
