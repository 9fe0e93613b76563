//! The per-route policies of a VirtualService HTTP rule as Envoy expresses
//! them, each after its Istio counterpart: retries (`retry.ConvertPolicy`),
//! fault injection (`TranslateFault`), CORS (`TranslateCORSPolicy`), consistent
//! hashing (`consistentHashToHashPolicy`), mirroring, redirects
//! (`ApplyRedirect`) and header operations (`TranslateHeadersOperations`).

use std::collections::BTreeMap;

use common::istio::networking::{
    ConsistentHashLb, CorsPolicy, Headers, HttpFaultInjection, HttpRedirect, HttpRetry,
    RedirectPortSelection, StringMatch, UnmatchedPreflights,
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    RedirectAction, RetryPolicy,
    redirect_action::{PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier},
    retry_policy::{
        RetryBackOff, RetryHostPredicate, RetryPriority, retry_host_predicate, retry_priority,
    },
    route_action::{HashPolicy, RequestMirrorPolicy, hash_policy},
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{
    FaultDelay, fault_delay::FaultDelaySecifier,
};
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::CorsPolicy as EnvoyCors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort::ErrorType,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig;
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;

use super::translate::{RouteContext, envoy_matcher};
use super::util::{
    any, boolv, exact_matcher, istio_duration, percent_hundred, percent_million, regex_matcher,
    u32v,
};

/// Istio's default retry conditions when a route sets no `retries`.
pub const DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

/// The route hash policy for a DestinationRule's consistent hash (Istio's
/// `consistentHashToHashPolicy`): header, cookie (name, path, ttl,
/// attributes), source IP, or query parameter.
pub fn hash_policy(h: &ConsistentHashLb) -> Option<HashPolicy> {
    let specifier = if let Some(header) = &h.http_header_name {
        hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: header.clone(),
            ..Default::default()
        })
    } else if let Some(cookie) = &h.http_cookie {
        hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
            name: cookie.name.clone(),
            ttl: cookie.ttl.as_ref().map(istio_duration),
            path: cookie.path.clone().unwrap_or_default(),
            attributes: cookie
                .attributes
                .iter()
                .map(|a| hash_policy::CookieAttribute {
                    name: a.name.clone(),
                    value: a.value.clone().unwrap_or_default(),
                })
                .collect(),
        })
    } else if let Some(source_ip) = h.use_source_ip {
        hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
            source_ip,
        })
    } else if let Some(q) = &h.http_query_parameter_name {
        hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter {
            name: q.clone(),
        })
    } else {
        return None;
    };
    Some(HashPolicy {
        policy_specifier: Some(specifier),
        terminal: false,
    })
}

pub(super) fn mirror_policy(cluster: String, fraction: FractionalPercent) -> RequestMirrorPolicy {
    RequestMirrorPolicy {
        cluster,
        runtime_fraction: Some(RuntimeFractionalPercent {
            default_value: Some(fraction),
            runtime_key: String::new(),
        }),
        trace_sampled: boolv(false),
        ..Default::default()
    }
}

/// Istio's `retry.ConvertPolicy`: no `retries` → the default policy (2
/// attempts on connect-failure, refused-stream, unavailable, cancelled and
/// 503, other hosts preferred); `attempts: 0` → no retries; otherwise the
/// default overridden field by field. Numbers in `retryOn` are status codes.
/// With consistent hashing, previous hosts are not avoided.
pub fn retry_policy(retry: Option<&HttpRetry>, consistent_hash: bool) -> Option<RetryPolicy> {
    let mut out = RetryPolicy {
        num_retries: u32v(2),
        retry_on: DEFAULT_RETRY_ON.to_string(),
        retriable_status_codes: vec![503],
        host_selection_retry_max_attempts: 5,
        retry_host_predicate: if consistent_hash {
            Vec::new()
        } else {
            vec![previous_hosts()]
        },
        ..Default::default()
    };
    let Some(r) = retry else {
        return Some(out);
    };
    let attempts = r.attempts.unwrap_or(0);
    if attempts <= 0 {
        return None;
    }
    out.num_retries = u32v(attempts as u32);
    if let Some(on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        let mut conditions = Vec::new();
        let mut codes = Vec::new();
        for part in on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<u32>() {
                Ok(code) if (100..600).contains(&code) => codes.push(code),
                _ => conditions.push(part.to_string()),
            }
        }
        if !codes.is_empty() && !conditions.iter().any(|c| c == "retriable-status-codes") {
            conditions.push("retriable-status-codes".into());
        }
        out.retry_on = conditions.join(",");
        out.retriable_status_codes = codes;
    }
    out.per_try_timeout = r.per_try_timeout.as_ref().map(istio_duration);
    if let Some(ignore) = r.retry_ignore_previous_hosts {
        out.retry_host_predicate = if ignore {
            vec![previous_hosts()]
        } else {
            Vec::new()
        };
    }
    if r.retry_remote_localities == Some(true) {
        out.retry_priority = Some(RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".into(),
            config_type: Some(retry_priority::ConfigType::TypedConfig(any(
                &PreviousPrioritiesConfig {
                    update_frequency: 2,
                },
            ))),
        });
    }
    if let Some(b) = &r.backoff {
        out.retry_back_off = Some(RetryBackOff {
            base_interval: Some(istio_duration(b)),
            max_interval: None,
        });
    }
    Some(out)
}

fn previous_hosts() -> RetryHostPredicate {
    RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".into(),
        config_type: Some(retry_host_predicate::ConfigType::TypedConfig(any(
            &PreviousHostsPredicate {},
        ))),
    }
}

/// Istio's `TranslateFault`: fixed delays and HTTP/gRPC aborts, percentages in
/// parts per million (the deprecated integer `percent` in hundredths).
/// `None` when nothing Envoy supports is left.
pub fn translate_fault(f: &HttpFaultInjection) -> Option<HttpFault> {
    let delay = f.delay.as_ref().and_then(|d| {
        let fixed = d.fixed_delay.as_ref()?;
        Some(FaultDelay {
            percentage: Some(match &d.percentage {
                Some(p) => percent_million(p.value),
                None => percent_hundred(d.percent.unwrap_or(0).max(0) as u32),
            }),
            fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(istio_duration(fixed))),
        })
    });
    let abort = f.abort.as_ref().and_then(|a| {
        let error_type = if let Some(status) = a.http_status {
            ErrorType::HttpStatus(u32::try_from(status).ok()?)
        } else if let Some(grpc) = &a.grpc_status {
            ErrorType::GrpcStatus(grpc_code(grpc)?)
        } else {
            return None;
        };
        Some(FaultAbort {
            percentage: a.percentage.as_ref().map(|p| percent_million(p.value)),
            error_type: Some(error_type),
            ..Default::default()
        })
    });
    if delay.is_none() && abort.is_none() {
        return None;
    }
    Some(HttpFault {
        delay,
        abort,
        ..Default::default()
    })
}

fn grpc_code(name: &str) -> Option<u32> {
    const CODES: [&str; 17] = [
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
    name.parse().ok().or_else(|| {
        CODES
            .iter()
            .position(|c| c.eq_ignore_ascii_case(name))
            .map(|p| p as u32)
    })
}

/// Istio's `TranslateCORSPolicy`, as the CORS filter's per-route config.
pub fn translate_cors(c: &CorsPolicy) -> EnvoyCors {
    let origins: Vec<StringMatcher> = if !c.allow_origins.is_empty() {
        c.allow_origins.iter().filter_map(origin_matcher).collect()
    } else {
        c.allow_origin
            .iter()
            .map(|o| {
                if o == "*" {
                    any_string()
                } else {
                    exact_matcher(o)
                }
            })
            .collect()
    };
    EnvoyCors {
        allow_origin_string_match: origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c
            .max_age
            .as_ref()
            .map(|d| d.as_std().as_secs().to_string())
            .unwrap_or_default(),
        allow_credentials: c.allow_credentials.and_then(boolv),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: Some(percent_hundred(100)),
            runtime_key: String::new(),
        }),
        forward_not_matching_preflights: boolv(
            c.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
        ),
        ..Default::default()
    }
}

fn origin_matcher(sm: &StringMatch) -> Option<StringMatcher> {
    if sm.exact.as_deref() == Some("*") || sm.prefix.as_deref() == Some("") {
        return Some(any_string());
    }
    envoy_matcher(sm)
}

fn any_string() -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::SafeRegex(regex_matcher(".*"))),
        ignore_case: false,
    }
}

pub(super) fn redirect_action(r: &HttpRedirect, ctx: &RouteContext<'_>) -> Option<RedirectAction> {
    let response_code = match r.redirect_code.unwrap_or(0) {
        0 | 301 => RedirectResponseCode::MovedPermanently,
        302 => RedirectResponseCode::Found,
        303 => RedirectResponseCode::SeeOther,
        307 => RedirectResponseCode::TemporaryRedirect,
        308 => RedirectResponseCode::PermanentRedirect,
        other => {
            tracing::warn!(code = other, "redirect code not supported; route left out");
            return None;
        }
    };
    let mut out = RedirectAction {
        host_redirect: r.authority.clone().unwrap_or_default(),
        response_code: response_code as i32,
        ..Default::default()
    };
    if let Some(uri) = r.uri.as_deref().filter(|u| !u.is_empty()) {
        out.path_rewrite_specifier = Some(PathRewriteSpecifier::PathRedirect(uri.to_string()));
    } else if let Some(prefix) = r.prefix_rewrite.as_deref() {
        out.path_rewrite_specifier = Some(PathRewriteSpecifier::PrefixRewrite(prefix.to_string()));
    }
    if let Some(scheme) = r.scheme.as_deref().filter(|s| !s.is_empty()) {
        out.scheme_rewrite_specifier =
            Some(SchemeRewriteSpecifier::SchemeRedirect(scheme.to_string()));
    }
    if r.port.is_some() || r.derive_port.is_some() {
        out.port_redirect = match (r.port, r.derive_port) {
            (Some(p), _) => p,
            (None, Some(RedirectPortSelection::FromRequestPort)) => ctx.listen_port,
            _ => 0,
        };
        let scheme = r
            .scheme
            .as_deref()
            .unwrap_or(if ctx.tls { "https" } else { "http" });
        if (out.port_redirect == 80 && scheme == "http")
            || (out.port_redirect == 443 && scheme == "https")
        {
            out.port_redirect = 0;
        }
    }
    Some(out)
}

/// Header operations of a route or destination, Istio's way: `set` overwrites,
/// `add` appends (each sorted by name); `:`-prefixed and `host` headers cannot
/// be changed by Envoy, so setting `host`/`:authority` becomes an authority
/// rewrite and the rest are left out.
#[derive(Debug, Default)]
pub(super) struct HeaderOps {
    pub(super) request_add: Vec<HeaderValueOption>,
    pub(super) request_remove: Vec<String>,
    pub(super) response_add: Vec<HeaderValueOption>,
    pub(super) response_remove: Vec<String>,
    pub(super) authority: Option<String>,
}

pub(super) fn header_operations(h: &Headers) -> HeaderOps {
    let mut ops = HeaderOps::default();
    let internal = |k: &str| k.starts_with(':') || k.eq_ignore_ascii_case("host");
    let authority =
        |k: &str| k.eq_ignore_ascii_case(":authority") || k.eq_ignore_ascii_case("host");
    let values =
        |m: &BTreeMap<String, String>, action: HeaderAppendAction| -> Vec<HeaderValueOption> {
            m.iter()
                .filter(|(k, _)| !internal(k))
                .map(|(k, v)| HeaderValueOption {
                    header: Some(HeaderValue {
                        key: k.clone(),
                        value: v.clone(),
                        ..Default::default()
                    }),
                    append_action: action as i32,
                    ..Default::default()
                })
                .collect()
        };
    if let Some(req) = &h.request {
        ops.request_add = values(&req.set, HeaderAppendAction::OverwriteIfExistsOrAdd);
        ops.request_add
            .extend(values(&req.add, HeaderAppendAction::AppendIfExistsOrAdd));
        ops.request_remove = req
            .remove
            .iter()
            .filter(|k| !internal(k))
            .cloned()
            .collect();
        ops.authority = req
            .set
            .iter()
            .find(|(k, _)| authority(k))
            .or_else(|| req.add.iter().find(|(k, _)| authority(k)))
            .map(|(_, v)| v.clone());
    }
    if let Some(resp) = &h.response {
        ops.response_add = values(&resp.set, HeaderAppendAction::OverwriteIfExistsOrAdd);
        ops.response_add
            .extend(values(&resp.add, HeaderAppendAction::AppendIfExistsOrAdd));
        ops.response_remove = resp
            .remove
            .iter()
            .filter(|k| !internal(k))
            .cloned()
            .collect();
    }
    ops
}

/// Standard base64 (padding optional), for `directResponse.body.bytes`.
pub(super) fn decode_base64(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut buf = 0u32;
    let mut bits = 0u32;
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}
