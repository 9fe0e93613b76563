//! Route actions: forward (clusters, timeouts, retries, mirrors, rewrites),
//! redirect and direct response.

#![allow(deprecated)] // `WeightedCluster.total_weight` is still honoured.

use super::*;

use common::envoy::RETRY_ON;
use envoy_types::pb::envoy::config::route::v3::route_action::hash_policy::PolicySpecifier;

use super::super::hash::{CookiePolicy, HashPolicy, HashSource};

pub(super) fn forward(e: &mut Errors, at: &str, ra: &rpb::RouteAction) -> Forward {
    let clusters = match &ra.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => {
            if c.is_empty() {
                e.push(&join(at, "cluster"), "empty");
            }
            ClusterChoice::Single(c.clone())
        }
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            weighted(e, &join(at, "weighted_clusters"), w)
        }
        Some(route_action::ClusterSpecifier::ClusterHeader(_)) => {
            e.push(&join(at, "cluster_header"), "not supported");
            ClusterChoice::Single(String::new())
        }
        Some(_) => {
            e.push(&join(at, "cluster_specifier_plugin"), "not supported");
            ClusterChoice::Single(String::new())
        }
        None => {
            e.push(at, "no cluster specifier");
            ClusterChoice::Single(String::new())
        }
    };
    for (set, name) in [
        (ra.path_rewrite_policy.is_some(), "path_rewrite_policy"),
        (
            ra.internal_redirect_policy.is_some(),
            "internal_redirect_policy",
        ),
        (ra.hedge_policy.is_some(), "hedge_policy"),
        (!ra.rate_limits.is_empty(), "rate_limits"),
        (
            ra.retry_policy_typed_config.is_some(),
            "retry_policy_typed_config",
        ),
        (ra.cors.is_some(), "cors"),
        (!ra.path_rewrite.is_empty(), "path_rewrite"),
    ] {
        if set {
            e.push(&join(at, name), "not supported");
        }
    }
    let timeout = match &ra.timeout {
        None => Some(DEFAULT_TIMEOUT),
        Some(d) => Some(duration(e, &join(at, "timeout"), d)).filter(|d| !d.is_zero()),
    };
    let prefix_rewrite = (!ra.prefix_rewrite.is_empty()).then(|| ra.prefix_rewrite.clone());
    let regex_rewrite = ra.regex_rewrite.as_ref().and_then(|r| {
        let at = join(at, "regex_rewrite");
        let re = sub_regex(e, &join(&at, "pattern"), r.pattern.as_ref()?)?;
        Some((re, substitution(&r.substitution)))
    });
    if prefix_rewrite.is_some() && ra.regex_rewrite.is_some() {
        e.push(
            &join(at, "regex_rewrite"),
            "only one of prefix_rewrite and regex_rewrite may be set",
        );
    }
    let host_rewrite = match &ra.host_rewrite_specifier {
        None => HostRewrite::None,
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            HostRewrite::Literal(h.clone())
        }
        Some(route_action::HostRewriteSpecifier::AutoHostRewrite(b)) => {
            if b.value {
                HostRewrite::Auto
            } else {
                HostRewrite::None
            }
        }
        Some(_) => {
            e.push(
                &join(at, "host_rewrite_specifier"),
                "only host_rewrite_literal and auto_host_rewrite are supported",
            );
            HostRewrite::None
        }
    };
    let mirrors = ra
        .request_mirror_policies
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = format!("{at}.request_mirror_policies[{i}]");
            if m.cluster.is_empty() {
                e.push(
                    &join(&at, "cluster"),
                    "empty (cluster_header is not supported)",
                );
            }
            Mirror {
                cluster: m.cluster.clone(),
                fraction: m
                    .runtime_fraction
                    .as_ref()
                    .and_then(|f| runtime_fraction(e, &join(&at, "runtime_fraction"), f)),
            }
        })
        .collect();
    Forward {
        clusters,
        timeout,
        idle_timeout: ra
            .idle_timeout
            .as_ref()
            .map(|d| duration(e, &join(at, "idle_timeout"), d)),
        grpc_timeout_header_max: ra
            .max_stream_duration
            .as_ref()
            .and_then(|m| m.grpc_timeout_header_max.as_ref())
            .map(|d| {
                duration(
                    e,
                    &join(at, "max_stream_duration.grpc_timeout_header_max"),
                    d,
                )
            }),
        retry: ra
            .retry_policy
            .as_ref()
            .map(|r| retry_policy(e, &join(at, "retry_policy"), r)),
        mirrors,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
        hash_policies: hash_policies(e, at, &ra.hash_policy),
    }
}

fn hash_policies(e: &mut Errors, at: &str, list: &[route_action::HashPolicy]) -> Vec<HashPolicy> {
    let mut out = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let at = format!("{at}.hash_policy[{i}]");
        let source = match &p.policy_specifier {
            Some(PolicySpecifier::Header(h)) => {
                let at = join(&at, "header");
                let name = h.header_name.to_ascii_lowercase();
                if name.is_empty() {
                    e.push(&join(&at, "header_name"), "empty");
                }
                let rewrite = h.regex_rewrite.as_ref().and_then(|r| {
                    let at = join(&at, "regex_rewrite");
                    let Some(pattern) = &r.pattern else {
                        e.push(&join(&at, "pattern"), "missing");
                        return None;
                    };
                    let re = sub_regex(e, &join(&at, "pattern"), pattern)?;
                    Some((re, substitution(&r.substitution)))
                });
                HashSource::Header { name, rewrite }
            }
            Some(PolicySpecifier::Cookie(c)) => {
                let at = join(&at, "cookie");
                if c.name.is_empty() {
                    e.push(&join(&at, "name"), "empty");
                }
                let attributes = c
                    .attributes
                    .iter()
                    .enumerate()
                    .map(|(j, a)| {
                        if a.name.is_empty() {
                            e.push(&format!("{at}.attributes[{j}].name"), "empty");
                        }
                        (a.name.clone(), a.value.clone())
                    })
                    .collect();
                // Envoy keeps the whole seconds of the ttl.
                let ttl = c
                    .ttl
                    .as_ref()
                    .map(|d| Duration::from_secs(duration(e, &join(&at, "ttl"), d).as_secs()));
                HashSource::Cookie(CookiePolicy {
                    name: c.name.clone(),
                    ttl,
                    path: c.path.clone(),
                    attributes,
                })
            }
            // Envoy adds no policy for `source_ip: false`.
            Some(PolicySpecifier::ConnectionProperties(c)) if !c.source_ip => continue,
            Some(PolicySpecifier::ConnectionProperties(_)) => HashSource::SourceIp,
            Some(PolicySpecifier::QueryParameter(q)) => {
                if q.name.is_empty() {
                    e.push(&join(&at, "query_parameter.name"), "empty");
                }
                HashSource::QueryParameter(q.name.clone())
            }
            Some(PolicySpecifier::FilterState(_)) => {
                e.push(
                    &join(&at, "filter_state"),
                    "hashing on filter state is not supported",
                );
                continue;
            }
            None => {
                e.push(&at, "no policy specifier");
                continue;
            }
        };
        out.push(HashPolicy {
            source,
            terminal: p.terminal,
        });
    }
    out
}

fn weighted(e: &mut Errors, at: &str, w: &rpb::WeightedCluster) -> ClusterChoice {
    if w.random_value_specifier.is_some() {
        e.push(&join(at, "random_value_specifier"), "not supported");
    }
    let mut clusters = Vec::new();
    for (i, c) in w.clusters.iter().enumerate() {
        let at = format!("{at}.clusters[{i}]");
        if c.name.is_empty() {
            e.push(
                &join(&at, "name"),
                "empty (cluster_header is not supported)",
            );
        }
        if !c.typed_per_filter_config.is_empty() {
            e.push(
                &join(&at, "typed_per_filter_config"),
                "not supported per weighted cluster",
            );
        }
        if c.host_rewrite_specifier.is_some() {
            e.push(&join(&at, "host_rewrite_specifier"), "not supported");
        }
        let headers = header_ops(
            e,
            &at,
            &c.request_headers_to_add,
            &c.request_headers_to_remove,
            &c.response_headers_to_add,
            &c.response_headers_to_remove,
        );
        let weight = c.weight.map_or(0, |w| u64::from(w.value));
        if weight > 0 {
            clusters.push(WeightedCluster {
                name: c.name.clone(),
                weight,
                headers,
            });
        }
    }
    let total: u64 = clusters.iter().map(|c| c.weight).sum();
    if total == 0 {
        e.push(&join(at, "clusters"), "the weights sum to zero");
    }
    if let Some(t) = w.total_weight
        && u64::from(t.value) != total
    {
        e.push(
            &join(at, "total_weight"),
            format!("{} differs from the sum of the weights, {total}", t.value),
        );
    }
    ClusterChoice::Weighted {
        clusters,
        total: total.max(1),
    }
}

pub(super) fn retry_policy(e: &mut Errors, at: &str, r: &rpb::RetryPolicy) -> RetryPolicy {
    let mut retry_on = Vec::new();
    for cond in r
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        if RETRY_ON.contains(&cond) {
            retry_on.push(cond.to_string());
        } else {
            e.push(&join(at, "retry_on"), format!("unknown condition {cond:?}"));
        }
    }
    for (set, name) in [
        (!r.retriable_headers.is_empty(), "retriable_headers"),
        (
            !r.retriable_request_headers.is_empty(),
            "retriable_request_headers",
        ),
        (
            r.rate_limited_retry_back_off.is_some(),
            "rate_limited_retry_back_off",
        ),
    ] {
        if set {
            e.push(&join(at, name), "not supported");
        }
    }
    let mut previous_hosts = false;
    for (i, p) in r.retry_host_predicate.iter().enumerate() {
        match p.name.as_str() {
            "envoy.retry_host_predicates.previous_hosts" => previous_hosts = true,
            other => e.push(
                &format!("{at}.retry_host_predicate[{i}]"),
                format!("unknown predicate {other:?}"),
            ),
        }
    }
    let base = r
        .retry_back_off
        .as_ref()
        .and_then(|b| b.base_interval.as_ref())
        .map_or(Duration::from_millis(25), |d| {
            duration(e, &join(at, "retry_back_off.base_interval"), d)
        });
    let max = r
        .retry_back_off
        .as_ref()
        .and_then(|b| b.max_interval.as_ref())
        .map_or(base * 10, |d| {
            duration(e, &join(at, "retry_back_off.max_interval"), d)
        });
    RetryPolicy {
        retry_on,
        num_retries: r.num_retries.map_or(1, |n| n.value),
        per_try_timeout: r
            .per_try_timeout
            .as_ref()
            .map(|d| duration(e, &join(at, "per_try_timeout"), d))
            .filter(|d| !d.is_zero()),
        per_try_idle_timeout: r
            .per_try_idle_timeout
            .as_ref()
            .map(|d| duration(e, &join(at, "per_try_idle_timeout"), d))
            .filter(|d| !d.is_zero()),
        retriable_status_codes: r.retriable_status_codes.clone(),
        previous_hosts,
        host_selection_max_attempts: r.host_selection_retry_max_attempts,
        back_off: (base, max),
    }
}

pub(super) fn redirect(e: &mut Errors, at: &str, r: &rpb::RedirectAction) -> Redirect {
    let status = match redirect_action::RedirectResponseCode::try_from(r.response_code) {
        Ok(redirect_action::RedirectResponseCode::MovedPermanently) => 301,
        Ok(redirect_action::RedirectResponseCode::Found) => 302,
        Ok(redirect_action::RedirectResponseCode::SeeOther) => 303,
        Ok(redirect_action::RedirectResponseCode::TemporaryRedirect) => 307,
        Ok(redirect_action::RedirectResponseCode::PermanentRedirect) => 308,
        Err(_) => {
            e.push(&join(at, "response_code"), "unknown code");
            301
        }
    };
    let scheme = match &r.scheme_rewrite_specifier {
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".into()),
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) if !s.is_empty() => {
            Some(s.to_ascii_lowercase())
        }
        _ => None,
    };
    let path = match &r.path_rewrite_specifier {
        None => PathRedirect::Keep,
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => {
            PathRedirect::Path(p.clone())
        }
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(p)) => {
            PathRedirect::Prefix(p.clone())
        }
        Some(redirect_action::PathRewriteSpecifier::RegexRewrite(rr)) => {
            let at = join(at, "regex_rewrite");
            match rr
                .pattern
                .as_ref()
                .and_then(|p| sub_regex(e, &join(&at, "pattern"), p))
            {
                Some(re) => PathRedirect::Regex(re, substitution(&rr.substitution)),
                None => {
                    if rr.pattern.is_none() {
                        e.push(&join(&at, "pattern"), "missing");
                    }
                    PathRedirect::Keep
                }
            }
        }
        Some(_) => {
            e.push(&join(at, "path_rewrite"), "not supported");
            PathRedirect::Keep
        }
    };
    Redirect {
        scheme,
        host: (!r.host_redirect.is_empty()).then(|| r.host_redirect.clone()),
        port: (r.port_redirect != 0).then_some(r.port_redirect),
        path,
        strip_query: r.strip_query,
        status,
    }
}

pub(super) fn direct_response(
    e: &mut Errors,
    at: &str,
    d: &rpb::DirectResponseAction,
) -> DirectResponse {
    if !(200..600).contains(&d.status) {
        e.push(
            &join(at, "status"),
            format!("{} is not in [200, 600)", d.status),
        );
    }
    if d.body_format.is_some() {
        e.push(&join(at, "body_format"), "not supported");
    }
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => None,
        Some(data_source::Specifier::InlineString(s)) => Some(bytes::Bytes::from(s.clone())),
        Some(data_source::Specifier::InlineBytes(b)) => Some(bytes::Bytes::from(b.clone())),
        Some(_) => {
            e.push(&join(at, "body"), "only inline bodies are supported");
            None
        }
    };
    DirectResponse {
        status: u16::try_from(d.status).unwrap_or(500),
        body,
    }
}
