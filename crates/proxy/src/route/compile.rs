//! `RouteConfiguration` → [`RouteTable`], refusing by path what cannot be
//! honoured.

// Deprecated fields (legacy header matchers, `append`, `total_weight`, the
// route-level `cors`) are still honoured or refused by Envoy, so read here.
#![allow(deprecated)]

use std::collections::HashMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption, RuntimeFractionalPercent, data_source,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    self as rpb, FilterConfig, RouteConfiguration, header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier, redirect_action, route, route_action,
    route_match, virtual_host::TlsRequirementType,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::Message;
use regex::Regex;

use super::action::{
    Action, AppendAction, ClusterChoice, DirectResponse, Fault, FaultAbort, Forward, Fraction,
    HeaderAdd, HeaderOps, HostRewrite, Mirror, PathRedirect, Redirect, RetryPolicy,
    WeightedCluster,
};
use super::cors::{Cors, OriginMatch};
use super::matcher::{
    DomainIndex, HeaderMatch, HeaderTest, PathMatch, QueryMatch, RouteMatcher, StringMatch,
    has_port,
};
use super::{DEFAULT_TIMEOUT, FilterConfigs, Route, RouteTable, VirtualHost};

mod actions;
mod filters;

use actions::{direct_response, forward, redirect, retry_policy};
pub use filters::{CORS_FILTER, FAULT_FILTER};
use filters::{filter_configs, header_ops};

/// Longest regex program accepted (the `regex` crate's compiled size).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `rc`, or lists every field that cannot be honoured, by path.
pub fn compile(rc: &RouteConfiguration) -> Result<RouteTable, Vec<String>> {
    let mut e = Errors::default();
    if rc.vhds.is_some() {
        e.push("vhds", "on-demand virtual hosts are not supported");
    }
    if !rc.vhost_header.is_empty() {
        e.push("vhost_header", "only :authority selects the virtual host");
    }
    if !rc.cluster_specifier_plugins.is_empty() {
        e.push("cluster_specifier_plugins", "not supported");
    }
    if !rc.request_mirror_policies.is_empty() {
        e.push(
            "request_mirror_policies",
            "mirrors are supported on routes only",
        );
    }
    let headers = header_ops(
        &mut e,
        "",
        &rc.request_headers_to_add,
        &rc.request_headers_to_remove,
        &rc.response_headers_to_add,
        &rc.response_headers_to_remove,
    );
    let filters = filter_configs(
        &mut e,
        "typed_per_filter_config",
        &rc.typed_per_filter_config,
    );
    let mut domains = DomainIndex {
        strip_port: rc.ignore_port_in_host_matching
            || !rc
                .virtual_hosts
                .iter()
                .flat_map(|v| &v.domains)
                .any(|d| has_port(d)),
        ..Default::default()
    };
    let mut vhosts = Vec::with_capacity(rc.virtual_hosts.len());
    for (i, vh) in rc.virtual_hosts.iter().enumerate() {
        let at = format!("virtual_hosts[{i}]");
        for (j, d) in vh.domains.iter().enumerate() {
            add_domain(&mut e, &mut domains, &format!("{at}.domains[{j}]"), d, i);
        }
        vhosts.push(virtual_host(&mut e, &at, vh));
    }
    domains
        .suffix
        .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    domains
        .prefix
        .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
    if !e.0.is_empty() {
        return Err(e.0);
    }
    for vh in &mut vhosts {
        for r in &mut vh.routes {
            r.cors = Cors::merged([
                r.filters.cors.as_ref(),
                vh.filters.cors.as_ref(),
                filters.cors.as_ref(),
            ]);
        }
    }
    Ok(RouteTable {
        name: rc.name.clone(),
        vhosts,
        domains,
        headers,
        most_specific_wins: rc.most_specific_header_mutations_wins,
        filters,
    })
}

/// A `StringMatcher` compiled for another filter (RBAC, JWT); errors name `at`.
pub(crate) fn compile_string_match(
    at: &str,
    sm: &StringMatcher,
) -> Result<StringMatch, Vec<String>> {
    let mut e = Errors::default();
    match string_match(&mut e, at, sm) {
        Some(m) if e.0.is_empty() => Ok(m),
        _ => Err(e.0),
    }
}

/// A `HeaderMatcher` compiled for another filter (RBAC); errors name `at`.
pub(crate) fn compile_header_match(
    at: &str,
    h: &rpb::HeaderMatcher,
) -> Result<HeaderMatch, Vec<String>> {
    let mut e = Errors::default();
    match header_match(&mut e, at, h) {
        Some(m) if e.0.is_empty() => Ok(m),
        _ => Err(e.0),
    }
}

/// A `RouteMatch` compiled for another filter (JWT requirement rules);
/// errors name `at`.
pub(crate) fn compile_route_match(
    at: &str,
    m: &rpb::RouteMatch,
) -> Result<RouteMatcher, Vec<String>> {
    let mut e = Errors::default();
    match route_match(&mut e, at, m) {
        Some(m) if e.0.is_empty() => Ok(m),
        _ => Err(e.0),
    }
}

#[derive(Default)]
struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }
}

fn join(at: &str, field: &str) -> String {
    if at.is_empty() {
        field.to_string()
    } else {
        format!("{at}.{field}")
    }
}

fn add_domain(e: &mut Errors, idx: &mut DomainIndex, at: &str, domain: &str, vh: usize) {
    let d = domain.to_ascii_lowercase();
    let dup = |e: &mut Errors| e.push(at, format!("domain {domain:?} is already used"));
    if d.is_empty() {
        e.push(at, "empty domain");
    } else if d == "*" {
        if idx.any.replace(vh).is_some() {
            dup(e);
        }
    } else if let Some(suffix) = d.strip_prefix('*') {
        if suffix.contains('*') {
            e.push(at, "only one leading or trailing `*` is allowed");
        } else if idx.suffix.iter().any(|(s, _)| s == suffix) {
            dup(e);
        } else {
            idx.suffix.push((suffix.to_string(), vh));
        }
    } else if let Some(prefix) = d.strip_suffix('*') {
        if prefix.contains('*') {
            e.push(at, "only one leading or trailing `*` is allowed");
        } else if idx.prefix.iter().any(|(s, _)| s == prefix) {
            dup(e);
        } else {
            idx.prefix.push((prefix.to_string(), vh));
        }
    } else if d.contains('*') {
        e.push(at, "`*` is allowed only at the start or the end");
    } else if idx.exact.insert(d, vh).is_some() {
        dup(e);
    }
}

fn virtual_host(e: &mut Errors, at: &str, vh: &rpb::VirtualHost) -> VirtualHost {
    if vh.matcher.is_some() {
        e.push(&join(at, "matcher"), "the matcher tree is not supported");
    }
    if !vh.rate_limits.is_empty() {
        e.push(&join(at, "rate_limits"), "rate limiting is not supported");
    }
    if vh.hedge_policy.is_some() {
        e.push(&join(at, "hedge_policy"), "hedging is not supported");
    }
    if vh.retry_policy_typed_config.is_some() {
        e.push(&join(at, "retry_policy_typed_config"), "not supported");
    }
    if !vh.request_mirror_policies.is_empty() {
        e.push(
            &join(at, "request_mirror_policies"),
            "mirrors are supported on routes only",
        );
    }
    if vh.cors.is_some() {
        e.push(
            &join(at, "cors"),
            "deprecated; use typed_per_filter_config[envoy.filters.http.cors]",
        );
    }
    let require_tls = match TlsRequirementType::try_from(vh.require_tls) {
        Ok(TlsRequirementType::None) => false,
        Ok(_) => true,
        Err(_) => {
            e.push(&join(at, "require_tls"), "unknown value");
            false
        }
    };
    let retry = vh
        .retry_policy
        .as_ref()
        .map(|r| retry_policy(e, &join(at, "retry_policy"), r));
    let routes = vh
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| compile_route(e, &format!("{at}.routes[{i}]"), r))
        .collect();
    VirtualHost {
        name: vh.name.clone(),
        routes,
        headers: header_ops(
            e,
            at,
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
        ),
        require_tls,
        retry,
        filters: filter_configs(
            e,
            &join(at, "typed_per_filter_config"),
            &vh.typed_per_filter_config,
        ),
    }
}

fn compile_route(e: &mut Errors, at: &str, r: &rpb::Route) -> Route {
    let matcher = match &r.r#match {
        Some(m) => route_match(e, &join(at, "match"), m),
        None => {
            e.push(&join(at, "match"), "missing");
            None
        }
    };
    let action = match &r.action {
        Some(route::Action::Route(ra)) => {
            Action::Forward(Box::new(forward(e, &join(at, "route"), ra)))
        }
        Some(route::Action::Redirect(rd)) => {
            Action::Redirect(redirect(e, &join(at, "redirect"), rd))
        }
        Some(route::Action::DirectResponse(d)) => {
            Action::DirectResponse(direct_response(e, &join(at, "direct_response"), d))
        }
        Some(route::Action::FilterAction(_)) => {
            e.push(&join(at, "filter_action"), "not supported");
            dummy_action()
        }
        Some(route::Action::NonForwardingAction(_)) => {
            e.push(&join(at, "non_forwarding_action"), "not supported");
            dummy_action()
        }
        None => {
            e.push(at, "no action (route, redirect or direct_response)");
            dummy_action()
        }
    };
    Route {
        name: r.name.clone(),
        matcher: matcher.unwrap_or_else(|| RouteMatcher {
            path: PathMatch::Prefix(String::new()),
            case_sensitive: true,
            headers: Vec::new(),
            query: Vec::new(),
            grpc: false,
            fraction: None,
        }),
        action,
        cors: None,
        headers: header_ops(
            e,
            at,
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        ),
        filters: filter_configs(
            e,
            &join(at, "typed_per_filter_config"),
            &r.typed_per_filter_config,
        ),
    }
}

fn dummy_action() -> Action {
    Action::DirectResponse(DirectResponse {
        status: 500,
        body: None,
    })
}

fn route_match(e: &mut Errors, at: &str, m: &rpb::RouteMatch) -> Option<RouteMatcher> {
    let case_sensitive = m.case_sensitive.is_none_or(|b| b.value);
    let fold = |s: &str| {
        if case_sensitive {
            s.to_string()
        } else {
            s.to_lowercase()
        }
    };
    let path = match &m.path_specifier {
        Some(route_match::PathSpecifier::Prefix(p)) => PathMatch::Prefix(fold(p)),
        Some(route_match::PathSpecifier::Path(p)) => PathMatch::Exact(fold(p)),
        Some(route_match::PathSpecifier::SafeRegex(re)) => {
            PathMatch::Regex(regex(e, &join(at, "safe_regex"), re)?)
        }
        Some(route_match::PathSpecifier::PathSeparatedPrefix(p)) => {
            if p.contains(['?', '#']) || p.ends_with('/') {
                e.push(
                    &join(at, "path_separated_prefix"),
                    "must not contain `?` or `#` nor end with `/`",
                );
            }
            PathMatch::SeparatedPrefix(fold(p))
        }
        Some(route_match::PathSpecifier::ConnectMatcher(_)) => {
            e.push(&join(at, "connect_matcher"), "CONNECT is not supported");
            return None;
        }
        Some(route_match::PathSpecifier::PathMatchPolicy(_)) => {
            e.push(&join(at, "path_match_policy"), "not supported");
            return None;
        }
        None => {
            e.push(at, "no path specifier");
            return None;
        }
    };
    for (set, name) in [
        (!m.cookies.is_empty(), "cookies"),
        (!m.dynamic_metadata.is_empty(), "dynamic_metadata"),
        (!m.filter_state.is_empty(), "filter_state"),
        (m.tls_context.is_some(), "tls_context"),
    ] {
        if set {
            e.push(&join(at, name), "matching on it is not supported");
        }
    }
    let headers = m
        .headers
        .iter()
        .enumerate()
        .filter_map(|(i, h)| header_match(e, &format!("{at}.headers[{i}]"), h))
        .collect();
    let query = m
        .query_parameters
        .iter()
        .enumerate()
        .filter_map(|(i, q)| {
            let at = format!("{at}.query_parameters[{i}]");
            let value = match &q.query_parameter_match_specifier {
                Some(QueryParameterMatchSpecifier::StringMatch(sm)) => {
                    Some(string_match(e, &join(&at, "string_match"), sm)?)
                }
                Some(QueryParameterMatchSpecifier::PresentMatch(true)) => None,
                Some(QueryParameterMatchSpecifier::PresentMatch(false)) => {
                    e.push(&join(&at, "present_match"), "must be true");
                    return None;
                }
                None => {
                    e.push(&at, "no match specifier");
                    return None;
                }
            };
            Some(QueryMatch {
                name: q.name.clone(),
                value,
            })
        })
        .collect();
    let fraction = m
        .runtime_fraction
        .as_ref()
        .and_then(|f| runtime_fraction(e, &join(at, "runtime_fraction"), f));
    Some(RouteMatcher {
        path,
        case_sensitive,
        headers,
        query,
        grpc: m.grpc.is_some(),
        fraction,
    })
}

fn header_match(e: &mut Errors, at: &str, h: &rpb::HeaderMatcher) -> Option<HeaderMatch> {
    if h.name.is_empty() {
        e.push(&join(at, "name"), "empty");
    }
    let test = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(s)) => {
            HeaderTest::String(StringMatch::Exact(s.clone(), false))
        }
        Some(HeaderMatchSpecifier::PrefixMatch(s)) => {
            HeaderTest::String(StringMatch::Prefix(s.clone(), false))
        }
        Some(HeaderMatchSpecifier::SuffixMatch(s)) => {
            HeaderTest::String(StringMatch::Suffix(s.clone(), false))
        }
        Some(HeaderMatchSpecifier::ContainsMatch(s)) => {
            HeaderTest::String(StringMatch::Contains(s.clone(), false))
        }
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => HeaderTest::String(StringMatch::Regex(
            regex(e, &join(at, "safe_regex_match"), re)?,
        )),
        Some(HeaderMatchSpecifier::StringMatch(sm)) => {
            HeaderTest::String(string_match(e, &join(at, "string_match"), sm)?)
        }
        Some(HeaderMatchSpecifier::PresentMatch(b)) => HeaderTest::Present(*b),
        Some(HeaderMatchSpecifier::RangeMatch(r)) => {
            if r.start >= r.end {
                e.push(&join(at, "range_match"), "start must be below end");
            }
            HeaderTest::Range(r.start, r.end)
        }
        // Envoy: no specifier means "present".
        None => HeaderTest::Present(true),
    };
    Some(HeaderMatch {
        name: h.name.to_ascii_lowercase(),
        test,
        invert: h.invert_match,
        missing_as_empty: h.treat_missing_header_as_empty,
    })
}

fn string_match(e: &mut Errors, at: &str, sm: &StringMatcher) -> Option<StringMatch> {
    let ic = sm.ignore_case;
    let fold = |s: &str| if ic { s.to_lowercase() } else { s.to_string() };
    Some(match &sm.match_pattern {
        Some(string_matcher::MatchPattern::Exact(s)) => StringMatch::Exact(fold(s), ic),
        Some(string_matcher::MatchPattern::Prefix(s)) => StringMatch::Prefix(fold(s), ic),
        Some(string_matcher::MatchPattern::Suffix(s)) => StringMatch::Suffix(fold(s), ic),
        Some(string_matcher::MatchPattern::Contains(s)) => StringMatch::Contains(fold(s), ic),
        Some(string_matcher::MatchPattern::SafeRegex(re)) => {
            StringMatch::Regex(regex(e, &join(at, "safe_regex"), re)?)
        }
        Some(string_matcher::MatchPattern::Custom(_)) => {
            e.push(
                &join(at, "custom"),
                "custom string matchers are not supported",
            );
            return None;
        }
        None => {
            e.push(at, "no match pattern");
            return None;
        }
    })
}

/// A full-match regex (RE2 semantics as far as the `regex` crate has them).
fn regex(e: &mut Errors, at: &str, re: &RegexMatcher) -> Option<Regex> {
    // Validate the pattern alone first: `a)|(b` is invalid, but wrapped it
    // would parse (and not be anchored).
    sub_regex(e, at, re)?;
    match regex::RegexBuilder::new(&format!("^(?:{})$", re.regex))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(r) => Some(r),
        Err(err) => {
            e.push(at, format!("invalid regex {:?}: {err}", re.regex));
            None
        }
    }
}

/// A regex for substitution (not anchored).
fn sub_regex(e: &mut Errors, at: &str, re: &RegexMatcher) -> Option<Regex> {
    match regex::RegexBuilder::new(&re.regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(r) => Some(r),
        Err(err) => {
            e.push(at, format!("invalid regex {:?}: {err}", re.regex));
            None
        }
    }
}

/// Envoy's RE2 substitution (`\1`) in the `regex` crate's syntax (`${1}`).
fn substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn fraction(e: &mut Errors, at: &str, f: &FractionalPercent) -> Option<Fraction> {
    let denominator = match fractional_percent::DenominatorType::try_from(f.denominator) {
        Ok(fractional_percent::DenominatorType::Hundred) => 100,
        Ok(fractional_percent::DenominatorType::TenThousand) => 10_000,
        Ok(fractional_percent::DenominatorType::Million) => 1_000_000,
        Err(_) => {
            e.push(&join(at, "denominator"), "unknown denominator");
            return None;
        }
    };
    Some(Fraction {
        numerator: u64::from(f.numerator).min(denominator),
        denominator,
    })
}

fn runtime_fraction(e: &mut Errors, at: &str, f: &RuntimeFractionalPercent) -> Option<Fraction> {
    match &f.default_value {
        Some(v) => fraction(e, &join(at, "default_value"), v),
        None => Some(Fraction {
            numerator: 0,
            denominator: 100,
        }),
    }
}

fn duration(e: &mut Errors, at: &str, d: &PbDuration) -> Duration {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        e.push(at, "invalid duration");
        return Duration::ZERO;
    }
    Duration::new(d.seconds as u64, d.nanos as u32)
}
