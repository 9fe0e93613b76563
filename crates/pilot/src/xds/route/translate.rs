//! A VirtualService's `http` rules as Envoy routes, with the semantics of
//! Istio's `route.go`: rules in order, one route per match (a rule without
//! matches is a catch-all that ends the list), matches that do not apply to
//! this listener dropped (`port`, `sourceLabels`, `sourceNamespace`,
//! `gateways`), then the action (redirect, direct response, or forwarding with
//! timeout, retries, rewrite, mirrors, weighted destinations and consistent
//! hashing) and the per-route fault and CORS filter configs.
//!
//! Delegated rules are expanded first ([`super::delegate`]); the per-route
//! policies (retries, fault, CORS, hashing, mirrors, redirects, header
//! operations) are built by [`super::policies`].

use common::istio::networking::{Destination, HttpMatchRequest, StringMatch, VirtualServiceSpec};
use common::resource::Resource;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, Route, RouteAction, RouteMatch,
    WeightedCluster,
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    route::Action,
    route_action::{ClusterSpecifier, HashPolicy, HostRewriteSpecifier, MaxStreamDuration},
    route_match::PathSpecifier,
    weighted_cluster::{self, ClusterWeight},
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;

use super::delegate::{Rule, expand_delegates};
pub use super::policies::{
    DEFAULT_RETRY_ON, hash_policy, retry_policy, translate_cors, translate_fault,
};
use super::policies::{decode_base64, header_operations, mirror_policy, redirect_action};
use super::scope::normalize_gateway;
use super::util::{
    any, boolv, istio_duration, labels_match, percent_hundred, percent_million, regex_matcher,
    seconds, string_matcher, string_metadata, subset_key, u32v,
};
use crate::model::{Snapshot, fqdn};
use crate::proxy::Proxy;
use crate::xds::cluster::policy::{consistent_hash, destination_rule};

/// Name of Envoy's fault filter (HCM filter and per-route config key).
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";
/// Name of Envoy's CORS filter (HCM filter and per-route config key).
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// Where routes are being generated: which proxy, which listener port, and
/// which gateway(s) the listener stands for (`mesh`, or `namespace/name`).
#[derive(Debug, Clone)]
pub struct RouteContext<'a> {
    /// The snapshot (services, DestinationRules, delegate VirtualServices).
    pub snapshot: &'a Snapshot,
    /// The proxy (labels for `sourceLabels`, namespace for rule lookups).
    pub proxy: &'a Proxy,
    /// The listener port (default destination port, `match.port`).
    pub listen_port: u32,
    /// `["mesh"]` for sidecars, `["ns/name"]` for a gateway server.
    pub gateways: Vec<String>,
    /// Whether the listener terminates TLS (the default redirect scheme).
    pub tls: bool,
}

/// The Envoy routes of `vs` for this context, in order; empty when no rule
/// applies here.
pub fn virtual_service_routes(
    ctx: &RouteContext<'_>,
    resource: &Resource,
    vs: &VirtualServiceSpec,
) -> Vec<Route> {
    let mut out = Vec::new();
    for rule in expand_delegates(ctx.snapshot, resource, vs) {
        if rule.http.r#match.is_empty() {
            out.extend(translate(ctx, &rule, None));
            break;
        }
        let mut catch_all = false;
        for m in &rule.http.r#match {
            if let Some(r) = translate(ctx, &rule, Some(m)) {
                catch_all = is_catch_all(&r);
                out.push(r);
                if catch_all {
                    break;
                }
            }
        }
        if catch_all {
            break;
        }
    }
    out
}

/// Whether a route matches every request (prefix `/` or regex `.*`, no
/// header or query conditions).
pub fn is_catch_all(r: &Route) -> bool {
    let Some(m) = &r.r#match else {
        return false;
    };
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => p == "/",
        Some(PathSpecifier::PathSeparatedPrefix(p)) => p == "/",
        Some(PathSpecifier::SafeRegex(r)) => r.regex == ".*",
        _ => false,
    };
    path && m.headers.is_empty() && m.query_parameters.is_empty() && m.dynamic_metadata.is_empty()
}

/// Istio's `sourceMatchHTTP` and port check: whether a match applies here.
fn match_applies(ctx: &RouteContext<'_>, rule_ns: &str, m: &HttpMatchRequest) -> bool {
    if m.port.is_some_and(|p| p != 0 && p != ctx.listen_port) {
        return false;
    }
    if !m.gateways.is_empty() {
        return m
            .gateways
            .iter()
            .map(|g| normalize_gateway(g, rule_ns))
            .any(|g| ctx.gateways.contains(&g));
    }
    labels_match(&m.source_labels, &ctx.proxy.labels)
        && m.source_namespace
            .as_deref()
            .is_none_or(|ns| ns == ctx.proxy.namespace)
}

fn translate(
    ctx: &RouteContext<'_>,
    rule: &Rule<'_>,
    m: Option<&HttpMatchRequest>,
) -> Option<Route> {
    if let Some(m) = m
        && !match_applies(ctx, rule.namespace, m)
    {
        return None;
    }
    let http = rule.http.as_ref();
    let mut name = http.name.clone().unwrap_or_default();
    if let Some(mn) = m.and_then(|m| m.name.as_deref()) {
        name = format!("{name}.{mn}");
    }
    let mut out = Route {
        name,
        r#match: Some(route_match(m)),
        metadata: Some(string_metadata(
            "istio",
            &[(
                "config",
                &format!(
                    "/apis/networking.istio.io/v1/namespaces/{}/virtual-service/{}",
                    rule.namespace, rule.name
                ),
            )],
        )),
        ..Default::default()
    };
    if let Some(stat_prefix) = m.and_then(|m| m.stat_prefix.as_deref()) {
        out.stat_prefix = stat_prefix.to_string();
    }
    let mut authority = None;
    if let Some(headers) = &http.headers {
        let ops = header_operations(headers);
        out.request_headers_to_add = ops.request_add;
        out.request_headers_to_remove = ops.request_remove;
        out.response_headers_to_add = ops.response_add;
        out.response_headers_to_remove = ops.response_remove;
        authority = ops.authority;
    }
    if let Some(redirect) = &http.redirect {
        out.action = Some(Action::Redirect(redirect_action(redirect, ctx)?));
    } else if let Some(direct) = &http.direct_response {
        out.action = Some(Action::DirectResponse(DirectResponseAction {
            status: direct.status,
            body: direct.body.as_ref().and_then(|b| {
                let specifier = if let Some(s) = &b.string {
                    Specifier::InlineString(s.clone())
                } else {
                    Specifier::InlineBytes(decode_base64(b.bytes.as_deref()?)?)
                };
                Some(DataSource {
                    specifier: Some(specifier),
                    ..Default::default()
                })
            }),
            ..Default::default()
        }));
    } else {
        let action = route_action(ctx, rule, &mut out, authority)?;
        out.action = Some(Action::Route(action));
    }
    if let Some(fault) = http.fault.as_ref().and_then(translate_fault) {
        out.typed_per_filter_config
            .insert(FAULT_FILTER.to_string(), any(&fault));
    }
    if let Some(cors) = &http.cors_policy {
        out.typed_per_filter_config
            .insert(CORS_FILTER.to_string(), any(&translate_cors(cors)));
    }
    Some(out)
}

/// Istio's `TranslateRouteMatch`; `None` is the catch-all `prefix: /`.
pub fn route_match(m: Option<&HttpMatchRequest>) -> RouteMatch {
    let mut out = RouteMatch {
        path_specifier: Some(PathSpecifier::Prefix("/".into())),
        ..Default::default()
    };
    let Some(m) = m else {
        return out;
    };
    for (name, sm) in &m.headers {
        out.headers.push(header_matcher(name, sm));
    }
    for (name, sm) in &m.without_headers {
        let mut h = header_matcher(name, sm);
        h.invert_match = true;
        if !is_present_match(sm) {
            h.treat_missing_header_as_empty = true;
        }
        out.headers.push(h);
    }
    out.headers.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(uri) = &m.uri {
        if let Some(exact) = &uri.exact {
            out.path_specifier = Some(PathSpecifier::Path(exact.clone()));
        } else if let Some(prefix) = &uri.prefix {
            out.path_specifier = Some(PathSpecifier::Prefix(prefix.clone()));
        } else if let Some(regex) = &uri.regex {
            out.path_specifier = Some(PathSpecifier::SafeRegex(regex_matcher(regex)));
        }
    }
    out.case_sensitive = boolv(!m.ignore_uri_case.unwrap_or(false));
    if let Some(method) = &m.method {
        out.headers.push(header_matcher(":method", method));
    }
    if let Some(authority) = &m.authority {
        out.headers.push(header_matcher(":authority", authority));
    }
    if let Some(scheme) = &m.scheme {
        out.headers.push(header_matcher(":scheme", scheme));
    }
    for (name, sm) in &m.query_params {
        out.query_parameters.push(QueryParameterMatcher {
            name: name.clone(),
            query_parameter_match_specifier: Some(match envoy_matcher(sm) {
                Some(s) => QueryParameterMatchSpecifier::StringMatch(s),
                None => QueryParameterMatchSpecifier::PresentMatch(true),
            }),
        });
    }
    out
}

/// An empty match, or regex `*` (not RE2, kept for Istio compatibility), means
/// "present"; so does an empty prefix or regex, which Envoy would refuse.
fn is_present_match(sm: &StringMatch) -> bool {
    envoy_matcher(sm).is_none()
}

pub(super) fn envoy_matcher(sm: &StringMatch) -> Option<StringMatcher> {
    if sm.regex.as_deref() == Some("*")
        || sm.regex.as_deref() == Some("")
        || sm.prefix.as_deref() == Some("")
    {
        return None;
    }
    string_matcher(sm)
}

fn header_matcher(name: &str, sm: &StringMatch) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(match envoy_matcher(sm) {
            Some(s) => HeaderMatchSpecifier::StringMatch(s),
            None => HeaderMatchSpecifier::PresentMatch(true),
        }),
        ..Default::default()
    }
}

fn route_action(
    ctx: &RouteContext<'_>,
    rule: &Rule<'_>,
    out: &mut Route,
    mut authority: Option<String>,
) -> Option<RouteAction> {
    let http = rule.http.as_ref();
    if http.route.is_empty() {
        return None;
    }
    let mut action = RouteAction::default();
    set_timeout(&mut action, http.timeout.as_ref().map(istio_duration));
    if let Some(rw) = &http.rewrite {
        if let Some(rr) = &rw.uri_regex_rewrite {
            action.regex_rewrite = Some(
                envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute {
                    pattern: Some(regex_matcher(rr.r#match.as_deref().unwrap_or_default())),
                    substitution: rr.rewrite.clone().unwrap_or_default(),
                },
            );
        } else if let Some(uri) = rw.uri.as_deref().filter(|u| !u.is_empty()) {
            action.prefix_rewrite = uri.to_string();
        }
        if let Some(a) = rw.authority.as_deref().filter(|a| !a.is_empty()) {
            authority = Some(a.to_string());
        }
    }
    if let Some(a) = &authority {
        action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(a.clone()));
    }
    if let Some(mirror) = &http.mirror {
        let fraction = match (&http.mirror_percentage, http.mirror_percent) {
            (Some(p), _) => (p.value > 0.0).then(|| percent_million(p.value)),
            (None, Some(p)) => (p > 0).then(|| percent_hundred(p)),
            (None, None) => Some(percent_hundred(100)),
        };
        if let Some(f) = fraction {
            action.request_mirror_policies.push(mirror_policy(
                destination_cluster(ctx, rule.namespace, mirror),
                f,
            ));
        }
    }
    for m in &http.mirrors {
        let fraction = match &m.percentage {
            Some(p) => (p.value > 0.0).then(|| percent_million(p.value)),
            None => Some(percent_hundred(100)),
        };
        if let Some(f) = fraction {
            action.request_mirror_policies.push(mirror_policy(
                destination_cluster(ctx, rule.namespace, &m.destination),
                f,
            ));
        }
    }
    let mut consistent = false;
    if http.route.len() == 1 {
        let dst = &http.route[0];
        action.cluster_specifier = Some(ClusterSpecifier::Cluster(destination_cluster(
            ctx,
            rule.namespace,
            &dst.destination,
        )));
        if let Some(headers) = &dst.headers {
            let ops = header_operations(headers);
            out.request_headers_to_add.extend(ops.request_add);
            out.request_headers_to_remove.extend(ops.request_remove);
            out.response_headers_to_add.extend(ops.response_add);
            out.response_headers_to_remove.extend(ops.response_remove);
            if let Some(a) = ops.authority
                && action.host_rewrite_specifier.is_none()
            {
                action.host_rewrite_specifier = Some(HostRewriteSpecifier::HostRewriteLiteral(a));
            }
        }
        if let Some(h) = destination_hash(ctx, rule.namespace, &dst.destination) {
            action.hash_policy.push(h);
            consistent = true;
        }
    } else {
        let mut clusters = Vec::new();
        for dst in &http.route {
            let weight = dst.weight.unwrap_or(0);
            if weight <= 0 {
                // Zero-weight destinations are left out when there are others.
                continue;
            }
            let mut cw = ClusterWeight {
                name: destination_cluster(ctx, rule.namespace, &dst.destination),
                weight: u32v(weight as u32),
                ..Default::default()
            };
            if let Some(headers) = &dst.headers {
                let ops = header_operations(headers);
                cw.request_headers_to_add = ops.request_add;
                cw.request_headers_to_remove = ops.request_remove;
                cw.response_headers_to_add = ops.response_add;
                cw.response_headers_to_remove = ops.response_remove;
                cw.host_rewrite_specifier = ops.authority.map(
                    weighted_cluster::cluster_weight::HostRewriteSpecifier::HostRewriteLiteral,
                );
            }
            if let Some(h) = destination_hash(ctx, rule.namespace, &dst.destination) {
                action.hash_policy.push(h);
            }
            clusters.push(cw);
        }
        action.cluster_specifier = Some(if clusters.is_empty() {
            // Every weight is zero: Envoy needs a positive total, so send
            // everything to the first destination.
            ClusterSpecifier::Cluster(destination_cluster(
                ctx,
                rule.namespace,
                &http.route[0].destination,
            ))
        } else {
            ClusterSpecifier::WeightedClusters(WeightedCluster {
                clusters,
                ..Default::default()
            })
        });
    }
    action.retry_policy = retry_policy(http.retries.as_ref(), consistent);
    Some(action)
}

/// Istio's `setTimeout`: the VirtualService timeout, else 0 (disabled).
///
/// Istio also caps the `grpc-timeout` header at the same value through the
/// deprecated `max_grpc_timeout`. Mizzen sends no deprecated fields, and the
/// replacement, `max_stream_duration`, is not one: any `max_stream_duration`
/// switches Envoy's router to its "new timeouts", which ignore the route
/// `timeout` altogether (a VirtualService `timeout: 200ms` then never fires;
/// seen with Envoy 1.40 in `tests/envoy_resilience.rs`). So the route carries
/// only `timeout`, and gRPC requests time out like any other request: a
/// documented difference from Istio, whose Envoy honours a shorter
/// `grpc-timeout` header.
pub fn set_timeout(
    action: &mut RouteAction,
    timeout: Option<envoy_types::pb::google::protobuf::Duration>,
) {
    action.timeout = Some(timeout.unwrap_or_else(|| seconds(0)));
    action.max_stream_duration = None;
}

/// The cluster a destination routes to (Istio's `GetDestinationCluster`):
/// `outbound|PORT|SUBSET|FQDN`, the port being the destination's, else the
/// service's only port, else the listener's. Unknown hosts still get a name
/// (Envoy answers 503 for the missing cluster, as with Istio).
pub fn destination_cluster(ctx: &RouteContext<'_>, namespace: &str, d: &Destination) -> String {
    let host = fqdn(&d.host, namespace);
    let port = d
        .port
        .as_ref()
        .and_then(|p| p.number)
        .or_else(|| {
            ctx.snapshot
                .services
                .get(&host)
                .filter(|s| s.ports.len() == 1)
                .map(|s| s.ports[0].port)
        })
        .unwrap_or(ctx.listen_port);
    subset_key(
        "outbound",
        port,
        d.subset.as_deref().filter(|s| !s.is_empty()),
        &host,
    )
}

fn destination_hash(
    ctx: &RouteContext<'_>,
    namespace: &str,
    d: &Destination,
) -> Option<HashPolicy> {
    let host = fqdn(&d.host, namespace);
    let rule = destination_rule(ctx.snapshot, ctx.proxy, &host)?;
    let port = d.port.as_ref().and_then(|p| p.number);
    hash_policy(consistent_hash(rule.spec, port, d.subset.as_deref())?)
}

/// Istio's default outbound route to `cluster` (name `default`, prefix `/`,
/// no timeout, default retries, the service's hash policy if any).
pub fn default_route(cluster: &str, hash: Option<HashPolicy>) -> Route {
    let mut action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    set_timeout(&mut action, None);
    let consistent = hash.is_some();
    action.hash_policy.extend(hash);
    action.retry_policy = retry_policy(None, consistent);
    Route {
        name: "default".into(),
        r#match: Some(route_match(None)),
        action: Some(Action::Route(action)),
        ..Default::default()
    }
}

/// Istio's default inbound route: everything to `cluster`, no timeouts.
pub fn inbound_route(cluster: &str) -> Route {
    let action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        timeout: Some(seconds(0)),
        max_stream_duration: Some(MaxStreamDuration {
            max_stream_duration: Some(seconds(0)),
            grpc_timeout_header_max: Some(seconds(0)),
            ..Default::default()
        }),
        ..Default::default()
    };
    Route {
        name: "default".into(),
        r#match: Some(route_match(None)),
        action: Some(Action::Route(action)),
        ..Default::default()
    }
}

/// A route without conditions that forwards to `cluster` with no timeout
/// (`allow_any` to PassthroughCluster).
pub fn passthrough_route(name: &str, cluster: &str) -> Route {
    let mut action = RouteAction {
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    set_timeout(&mut action, None);
    Route {
        name: name.into(),
        r#match: Some(route_match(None)),
        action: Some(Action::Route(action)),
        ..Default::default()
    }
}

/// A route answering every request with `status` (REGISTRY_ONLY's `block_all`).
pub fn direct_route(name: &str, status: u32) -> Route {
    Route {
        name: name.into(),
        r#match: Some(route_match(None)),
        action: Some(Action::DirectResponse(DirectResponseAction {
            status,
            ..Default::default()
        })),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
