//! Header mutations and `typed_per_filter_config` (fault, CORS, opaque).

#![allow(deprecated)] // `HeaderValueOption.append` is still honoured.

use super::*;

/// The per-filter config key of the fault filter.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// The per-filter config key of the CORS filter.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";
/// Filters this proxy will not have: their per-route configs are refused.
const UNSUPPORTED_FILTERS: &[&str] = &[
    "envoy.filters.http.lua",
    "envoy.filters.http.wasm",
    "envoy.filters.http.ext_proc",
    "envoy.filters.http.ratelimit",
    "envoy.filters.http.ext_authz",
];

pub(super) fn header_ops(
    e: &mut Errors,
    at: &str,
    req_add: &[HeaderValueOption],
    req_remove: &[String],
    resp_add: &[HeaderValueOption],
    resp_remove: &[String],
) -> HeaderOps {
    let adds = |e: &mut Errors, field: &str, list: &[HeaderValueOption]| {
        list.iter()
            .enumerate()
            .filter_map(|(i, h)| header_add(e, &format!("{}[{i}]", join(at, field)), h))
            .collect()
    };
    let removes = |e: &mut Errors, field: &str, list: &[String]| {
        list.iter()
            .enumerate()
            .map(|(i, n)| {
                let n = n.to_ascii_lowercase();
                if n.is_empty() || n.starts_with(':') || n == "host" {
                    e.push(
                        &format!("{}[{i}]", join(at, field)),
                        format!("{n:?} cannot be removed"),
                    );
                }
                n
            })
            .collect()
    };
    HeaderOps {
        request_add: adds(e, "request_headers_to_add", req_add),
        request_remove: removes(e, "request_headers_to_remove", req_remove),
        response_add: adds(e, "response_headers_to_add", resp_add),
        response_remove: removes(e, "response_headers_to_remove", resp_remove),
    }
}

fn header_add(e: &mut Errors, at: &str, h: &HeaderValueOption) -> Option<HeaderAdd> {
    let Some(hv) = &h.header else {
        e.push(&join(at, "header"), "missing");
        return None;
    };
    let name = hv.key.to_ascii_lowercase();
    if name.is_empty() || (name.starts_with(':') && name != ":authority") {
        e.push(&join(at, "header.key"), format!("{name:?} cannot be set"));
    }
    let value = if hv.raw_value.is_empty() {
        hv.value.clone()
    } else {
        String::from_utf8_lossy(&hv.raw_value).into_owned()
    };
    let action = match HeaderAppendAction::try_from(h.append_action) {
        Ok(HeaderAppendAction::AppendIfExistsOrAdd) => AppendAction::AppendIfExistsOrAdd,
        Ok(HeaderAppendAction::AddIfAbsent) => AppendAction::AddIfAbsent,
        Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => AppendAction::OverwriteIfExistsOrAdd,
        Ok(HeaderAppendAction::OverwriteIfExists) => AppendAction::OverwriteIfExists,
        Err(_) => {
            e.push(&join(at, "append_action"), "unknown value");
            return None;
        }
    };
    let action = match h.append {
        None => action,
        Some(_) if h.append_action != 0 => {
            e.push(&join(at, "append"), "set together with append_action");
            action
        }
        Some(b) if b.value => AppendAction::AppendIfExistsOrAdd,
        Some(_) => AppendAction::OverwriteIfExistsOrAdd,
    };
    Some(HeaderAdd {
        name,
        value,
        action,
        keep_empty_value: h.keep_empty_value,
    })
}

pub(super) fn filter_configs(
    e: &mut Errors,
    at: &str,
    map: &HashMap<String, Any>,
) -> FilterConfigs {
    let mut out = FilterConfigs::default();
    for (name, any) in map {
        let at = format!("{at}[{name}]");
        // `FilterConfig` wraps a config with `is_optional` / `disabled`.
        let unwrapped;
        let (any, optional) = if any
            .type_url
            .ends_with("/envoy.config.route.v3.FilterConfig")
        {
            match FilterConfig::decode(any.value.as_slice()) {
                Ok(fc) if fc.disabled => continue,
                Ok(fc) => match fc.config {
                    Some(inner) => {
                        unwrapped = inner;
                        (&unwrapped, fc.is_optional)
                    }
                    None => continue,
                },
                Err(err) => {
                    e.push(&at, format!("cannot decode FilterConfig: {err}"));
                    continue;
                }
            }
        } else {
            (any, false)
        };
        match name.as_str() {
            FAULT_FILTER => {
                if let Some(f) = decode::<HttpFault>(
                    e,
                    &at,
                    any,
                    "envoy.extensions.filters.http.fault.v3.HTTPFault",
                ) {
                    out.fault = fault(e, &at, &f);
                }
            }
            CORS_FILTER => {
                if let Some(c) = decode::<CorsPolicy>(
                    e,
                    &at,
                    any,
                    "envoy.extensions.filters.http.cors.v3.CorsPolicy",
                ) {
                    out.cors = cors(e, &at, &c);
                }
            }
            n if UNSUPPORTED_FILTERS.contains(&n) && !optional => {
                e.push(&at, "this proxy has no such filter");
            }
            "envoy.filters.http.rbac" | "envoy.filters.http.jwt_authn" if !optional => {
                e.push(
                    &at,
                    "per-route configs of the RBAC and JWT filters (RBACPerRoute, \
                     PerRouteConfig) are not supported",
                );
            }
            _ => {
                out.other.insert(name.clone(), any.type_url.clone());
            }
        }
    }
    out
}

fn decode<M: Message + Default>(e: &mut Errors, at: &str, any: &Any, full_name: &str) -> Option<M> {
    if any.type_url.rsplit('/').next() != Some(full_name) {
        e.push(at, format!("expected {full_name}, got {:?}", any.type_url));
        return None;
    }
    match M::decode(any.value.as_slice()) {
        Ok(m) => Some(m),
        Err(err) => {
            e.push(at, format!("cannot decode {full_name}: {err}"));
            None
        }
    }
}

fn fault(e: &mut Errors, at: &str, f: &HttpFault) -> Option<Fault> {
    for (set, name) in [
        (!f.upstream_cluster.is_empty(), "upstream_cluster"),
        (!f.headers.is_empty(), "headers"),
        (!f.downstream_nodes.is_empty(), "downstream_nodes"),
        (f.response_rate_limit.is_some(), "response_rate_limit"),
    ] {
        if set {
            e.push(&join(at, name), "not supported");
        }
    }
    let pct = |e: &mut Errors, at: &str, p: Option<&FractionalPercent>| match p {
        Some(p) => fraction(e, &join(at, "percentage"), p),
        None => Some(Fraction {
            numerator: 0,
            denominator: 100,
        }),
    };
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            let at = join(at, "delay");
            match &d.fault_delay_secifier {
                Some(fault_delay::FaultDelaySecifier::FixedDelay(fd)) => {
                    let fd = duration(e, &join(&at, "fixed_delay"), fd);
                    pct(e, &at, d.percentage.as_ref()).map(|p| (fd, p))
                }
                Some(fault_delay::FaultDelaySecifier::HeaderDelay(_)) => {
                    e.push(&join(&at, "header_delay"), "not supported");
                    None
                }
                None => {
                    e.push(&at, "no delay specifier");
                    None
                }
            }
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => {
            let at = join(at, "abort");
            let kind = match &a.error_type {
                Some(fault_abort::ErrorType::HttpStatus(s)) => {
                    if !(200..600).contains(s) {
                        e.push(
                            &join(&at, "http_status"),
                            format!("{s} is not in [200, 600)"),
                        );
                    }
                    Some(FaultAbort::Http(u16::try_from(*s).unwrap_or(500)))
                }
                Some(fault_abort::ErrorType::GrpcStatus(s)) => Some(FaultAbort::Grpc(*s)),
                Some(fault_abort::ErrorType::HeaderAbort(_)) => {
                    e.push(&join(&at, "header_abort"), "not supported");
                    None
                }
                None => {
                    e.push(&at, "no error type");
                    None
                }
            };
            kind.zip(pct(e, &at, a.percentage.as_ref()))
        }
    };
    Some(Fault {
        delay,
        abort,
        max_active_faults: f.max_active_faults.map(|m| m.value),
    })
}

fn cors(e: &mut Errors, at: &str, c: &CorsPolicy) -> Option<Cors> {
    let mut allow_origins = Vec::new();
    for (i, sm) in c.allow_origin_string_match.iter().enumerate() {
        let at = format!("{at}.allow_origin_string_match[{i}]");
        let matcher = string_match(e, &at, sm)?;
        let (kind, pattern) = match &sm.match_pattern {
            Some(string_matcher::MatchPattern::Exact(s)) => ("exact", s.clone()),
            Some(string_matcher::MatchPattern::Prefix(s)) => ("prefix", s.clone()),
            Some(string_matcher::MatchPattern::Suffix(s)) => ("suffix", s.clone()),
            Some(string_matcher::MatchPattern::Contains(s)) => ("contains", s.clone()),
            Some(string_matcher::MatchPattern::SafeRegex(r)) => ("regex", r.regex.clone()),
            // `string_match` refused the others.
            _ => continue,
        };
        allow_origins.push(OriginMatch::new(kind, pattern, sm.ignore_case, matcher));
    }
    let rf = |e: &mut Errors, field: &str, f: Option<&RuntimeFractionalPercent>| {
        f.and_then(|f| runtime_fraction(e, &join(at, field), f))
    };
    Some(Cors {
        allow_origins,
        allow_methods: c.allow_methods.clone(),
        allow_headers: c.allow_headers.clone(),
        expose_headers: c.expose_headers.clone(),
        max_age: c.max_age.clone(),
        allow_credentials: c.allow_credentials.map(|b| b.value),
        allow_private_network_access: c.allow_private_network_access.map(|b| b.value),
        filter_enabled: rf(e, "filter_enabled", c.filter_enabled.as_ref()),
        shadow_enabled: rf(e, "shadow_enabled", c.shadow_enabled.as_ref()),
        forward_not_matching_preflights: c.forward_not_matching_preflights.map(|b| b.value),
    })
}
