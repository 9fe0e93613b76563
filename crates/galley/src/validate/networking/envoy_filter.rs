//! EnvoyFilter rules: each patch needs applyTo, an operation and (except REMOVE) a
//! value; the match must fit the kind of object patched; operations that Istio
//! ignores for an applyTo are reported; filter names and typed configs are checked
//! as far as they can be without Envoy's protobuf descriptors. Also ProxyConfig.

use common::istio::networking::{
    ApplyTo, EnvoyConfigObjectPatch, EnvoyFilterSpec, FilterClass, Operation, ProxyConfigSpec,
};
use common::istio::types::PolicyTargetReference;
use serde_json::Value;

use super::super::field::{Field, ResourceCtx};
use super::util;

/// The HTTP connection manager, the only network filter with HTTP sub-filters.
const HCM: &str = "envoy.filters.network.http_connection_manager";

/// Old Envoy filter names and their current ones.
const DEPRECATED_FILTER_NAMES: &[(&str, &str)] = &[
    ("envoy.http_connection_manager", HCM),
    ("envoy.tcp_proxy", "envoy.filters.network.tcp_proxy"),
    ("envoy.mongo_proxy", "envoy.filters.network.mongo_proxy"),
    ("envoy.redis_proxy", "envoy.filters.network.redis_proxy"),
    ("envoy.router", "envoy.filters.http.router"),
    ("envoy.cors", "envoy.filters.http.cors"),
    ("envoy.fault", "envoy.filters.http.fault"),
    ("envoy.lua", "envoy.filters.http.lua"),
    ("envoy.rbac", "envoy.filters.http.rbac"),
    ("envoy.buffer", "envoy.filters.http.buffer"),
    ("envoy.csrf", "envoy.filters.http.csrf"),
    ("envoy.gzip", "envoy.filters.http.gzip"),
    ("envoy.grpc_web", "envoy.filters.http.grpc_web"),
    ("envoy.health_check", "envoy.filters.http.health_check"),
    ("envoy.rate_limit", "envoy.filters.http.ratelimit"),
    ("envoy.ext_authz", "envoy.filters.http.ext_authz"),
    (
        "envoy.listener.tls_inspector",
        "envoy.filters.listener.tls_inspector",
    ),
    (
        "envoy.listener.http_inspector",
        "envoy.filters.listener.http_inspector",
    ),
    (
        "envoy.listener.original_dst",
        "envoy.filters.listener.original_dst",
    ),
];

/// Validates an EnvoyFilter spec; `f` is at `spec`.
pub fn envoy_filter(spec: &EnvoyFilterSpec, _r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    f.warn("EnvoyFilter patches Istio's internal Envoy configuration, which may change in any release; prefer other APIs where possible and re-test it on every upgrade");
    util::alpha_selector(
        &mut f.at("workloadSelector"),
        spec.workload_selector.as_ref(),
        "EnvoyFilter",
    );
    if spec.workload_selector.is_some() && !spec.target_refs.is_empty() {
        f.at("targetRefs")
            .error("cannot be combined with workloadSelector; select the workloads one way only");
    }
    let mut ft = f.at("targetRefs");
    for (i, t) in spec.target_refs.iter().enumerate() {
        target_ref(&mut ft.index(i), t);
    }
    let mut fp = f.at("configPatches");
    for (i, p) in spec.config_patches.iter().enumerate() {
        patch(&mut fp.index(i), p);
    }
}

/// Istio's `validatePolicyTargetReference`: a Service, ServiceEntry or Gateway API
/// Gateway in the same namespace.
pub(super) fn target_ref(f: &mut Field<'_>, t: &PolicyTargetReference) {
    if t.name.is_empty() {
        f.at("name").error("is required: name the target resource");
    }
    if t.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
        f.at("namespace")
            .error("must not be set: a policy can target only resources in its own namespace");
    }
    let group = if t.group.is_empty() {
        "core"
    } else {
        t.group.as_str()
    };
    let allowed = matches!(
        (group, t.kind.as_str()),
        ("core", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("gateway.networking.k8s.io", "Gateway")
    );
    if !allowed {
        f.at("kind").error(format!(
            "{}/{} cannot be targeted; target a Service (group \"\"), a ServiceEntry (networking.istio.io) or a Gateway (gateway.networking.k8s.io)",
            t.group, t.kind
        ));
    }
}

fn patch(f: &mut Field<'_>, cp: &EnvoyConfigObjectPatch) {
    let apply_to = cp.apply_to.unwrap_or_default();
    if apply_to == ApplyTo::Invalid {
        f.at("applyTo").error("is required: say what to patch (LISTENER, FILTER_CHAIN, NETWORK_FILTER, HTTP_FILTER, ROUTE_CONFIGURATION, VIRTUAL_HOST, HTTP_ROUTE, CLUSTER, EXTENSION_CONFIG, BOOTSTRAP or LISTENER_FILTER)");
        return;
    }
    let Some(p) = &cp.patch else {
        f.at("patch")
            .error("is required: give the operation and, except for REMOVE, the value");
        return;
    };
    let op = p.operation.unwrap_or_default();
    if op == Operation::Invalid {
        f.at("patch").at("operation").error(
            "is required: MERGE, ADD, REMOVE, INSERT_BEFORE, INSERT_AFTER, INSERT_FIRST, REPLACE or MERGE_AND_REPLACE_LIST",
        );
        return;
    }
    if op != Operation::Remove && p.value.is_none() {
        f.at("patch").at("value").error(format!(
            "is required for operation {}: give the Envoy configuration to apply",
            op_name(op)
        ));
        return;
    }
    if op == Operation::Remove && p.value.is_some() {
        f.at("patch")
            .at("value")
            .warn("is ignored by REMOVE; remove it");
    }
    if let Some(re) = cp
        .r#match
        .as_ref()
        .and_then(|m| m.proxy.as_ref())
        .and_then(|p| p.proxy_version.as_deref())
        .filter(|v| !v.is_empty())
    {
        util::regex(&mut f.at("match").at("proxy").at("proxyVersion"), re);
    }
    match_fits(f, cp, apply_to);
    operation_fits(f, apply_to, op, p.filter_class);
    if let Some(v) = &p.value {
        value(&mut f.at("patch").at("value"), apply_to, op, v);
    }
}

/// The match must be of the kind of object patched.
fn match_fits(f: &mut Field<'_>, cp: &EnvoyConfigObjectPatch, apply_to: ApplyTo) {
    let Some(m) = &cp.r#match else { return };
    let mut fm = f.at("match");
    let kinds = [
        ("listener", m.listener.is_some()),
        ("routeConfiguration", m.route_configuration.is_some()),
        ("cluster", m.cluster.is_some()),
        ("waypoint", m.waypoint.is_some()),
    ];
    if !super::super::checks::at_most_one(&mut fm, &kinds) {
        return;
    }
    let any = kinds.iter().any(|(_, s)| *s);
    match apply_to {
        ApplyTo::Listener | ApplyTo::FilterChain | ApplyTo::NetworkFilter | ApplyTo::HttpFilter => {
            if any && m.listener.is_none() && m.waypoint.is_none() {
                fm.error(format!(
                    "applyTo {} patches listener objects, so the match must be a listener match (match.listener), not routeConfiguration or cluster",
                    apply_name(apply_to)
                ));
                return;
            }
            let Some(fc) = m.listener.as_ref().and_then(|l| l.filter_chain.as_ref()) else {
                return;
            };
            let Some(filter) = &fc.filter else { return };
            let mut fl = fm.at("listener");
            let mut ffc = fl.at("filterChain");
            let mut ff = ffc.at("filter");
            if matches!(apply_to, ApplyTo::Listener | ApplyTo::FilterChain) {
                ff.warn(format!(
                    "has no effect with applyTo {}; remove it or patch a NETWORK_FILTER or HTTP_FILTER",
                    apply_name(apply_to)
                ));
            }
            let name = filter.name.as_deref().unwrap_or("");
            if name.is_empty() {
                ff.at("name").error("is required: name the filter to match, such as envoy.filters.network.http_connection_manager");
                return;
            }
            deprecated_name(&mut ff.at("name"), name);
            if let Some(sub) = &filter.sub_filter {
                let mut fs = ff.at("subFilter");
                if apply_to != ApplyTo::HttpFilter {
                    fs.error(
                        "can be used only with applyTo HTTP_FILTER; remove it or change applyTo",
                    );
                    return;
                }
                if name != HCM && name != "envoy.http_connection_manager" {
                    fs.error(format!(
                        "matches HTTP filters, which exist only inside {HCM}; set filter.name to it"
                    ));
                    return;
                }
                let sub_name = sub.name.as_deref().unwrap_or("");
                if sub_name.is_empty() {
                    fs.at("name").error("is required: name the HTTP filter to match, such as envoy.filters.http.router");
                } else {
                    deprecated_name(&mut fs.at("name"), sub_name);
                }
            }
        }
        ApplyTo::RouteConfiguration | ApplyTo::VirtualHost | ApplyTo::HttpRoute
            if any && m.route_configuration.is_none() && m.waypoint.is_none() =>
        {
            fm.error(format!(
                "applyTo {} patches route objects, so the match must be a route configuration match (match.routeConfiguration)",
                apply_name(apply_to)
            ));
        }
        ApplyTo::Cluster if any && m.cluster.is_none() => {
            fm.error("applyTo CLUSTER patches clusters, so the match must be a cluster match (match.cluster)");
        }
        _ => {}
    }
}

/// Operations Istio ignores for some kinds of object (its analyzer codes IST0152,
/// IST0153 and IST0154, plus inserts into unordered lists).
fn operation_fits(f: &mut Field<'_>, apply_to: ApplyTo, op: Operation, class: Option<FilterClass>) {
    let mut fpatch = f.at("patch");
    let mut fo = fpatch.at("operation");
    let route_level = matches!(apply_to, ApplyTo::RouteConfiguration | ApplyTo::HttpRoute);
    match op {
        Operation::Replace if !matches!(apply_to, ApplyTo::HttpFilter | ApplyTo::NetworkFilter) => {
            fo.warn(format!(
                "REPLACE works only with applyTo HTTP_FILTER or NETWORK_FILTER, so this patch of {} has no effect; use MERGE",
                apply_name(apply_to)
            ));
        }
        Operation::Add | Operation::Remove if route_level => {
            fo.warn(format!(
                "{} is ignored when applyTo is {}; use MERGE, or patch VIRTUAL_HOST",
                op_name(op),
                apply_name(apply_to)
            ));
        }
        Operation::InsertBefore | Operation::InsertAfter | Operation::InsertFirst
            if !matches!(
                apply_to,
                ApplyTo::ListenerFilter
                    | ApplyTo::NetworkFilter
                    | ApplyTo::HttpFilter
                    | ApplyTo::HttpRoute
            ) =>
        {
            fo.warn(format!(
                "{} orders filters and routes only; for {} the order does not matter, so use ADD",
                op_name(op),
                apply_name(apply_to)
            ));
        }
        _ => {}
    }
    if class.is_some_and(|c| c != FilterClass::Unspecified)
        && !(apply_to == ApplyTo::HttpFilter && op == Operation::Add)
    {
        f.at("patch")
            .at("filterClass")
            .warn("applies only to operation ADD with applyTo HTTP_FILTER; it is ignored here");
    }
}

fn value(f: &mut Field<'_>, apply_to: ApplyTo, op: Operation, v: &Value) {
    let Some(obj) = v.as_object() else {
        f.error("must be an object: the Envoy configuration (in JSON/YAML form) to apply");
        return;
    };
    let adds_filter = matches!(
        apply_to,
        ApplyTo::NetworkFilter | ApplyTo::HttpFilter | ApplyTo::ListenerFilter
    ) && matches!(
        op,
        Operation::Add
            | Operation::InsertBefore
            | Operation::InsertAfter
            | Operation::InsertFirst
            | Operation::Replace
    );
    if adds_filter {
        if obj
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            f.at("name")
                .error("is required: the filter's name, such as envoy.filters.http.lua");
        }
        if obj.contains_key("config") {
            f.at("config").error(
                "is Envoy's removed v2 untyped config; use typed_config with an \"@type\" of the v3 API",
            );
        } else if !obj.contains_key("typed_config")
            && !obj.contains_key("typedConfig")
            && !obj.contains_key("config_discovery")
            && !obj.contains_key("configDiscovery")
        {
            f.warn("names a filter without typed_config, which Envoy is phasing out; add typed_config with its \"@type\"");
        }
    }
    type_urls(f, v);
}

/// Every `@type` inside the value must be a v3 type URL.
fn type_urls(f: &mut Field<'_>, v: &Value) {
    match v {
        Value::Object(m) => {
            if let Some(t) = m.get("@type").and_then(Value::as_str) {
                if t.contains(".v2.") || t.contains(".v2alpha.") {
                    f.error(format!(
                        "type {t:?} is from Envoy's removed v2 API; use the v3 type (…v3.…)"
                    ));
                } else if !t.contains('/') {
                    f.error(format!(
                        "\"@type\" {t:?} is not a type URL; write type.googleapis.com/<full message name>"
                    ));
                }
            }
            for (k, child) in m {
                if k != "@type" {
                    type_urls(&mut f.at(k), child);
                }
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                type_urls(&mut f.index(i), child);
            }
        }
        _ => {}
    }
}

fn deprecated_name(f: &mut Field<'_>, name: &str) {
    if let Some((_, new)) = DEPRECATED_FILTER_NAMES.iter().find(|(old, _)| *old == name) {
        f.warn(format!("{name:?} is a deprecated filter name; use {new:?}"));
    }
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Invalid => "INVALID",
        Operation::Merge => "MERGE",
        Operation::Add => "ADD",
        Operation::Remove => "REMOVE",
        Operation::InsertBefore => "INSERT_BEFORE",
        Operation::InsertAfter => "INSERT_AFTER",
        Operation::InsertFirst => "INSERT_FIRST",
        Operation::Replace => "REPLACE",
        Operation::MergeAndReplaceList => "MERGE_AND_REPLACE_LIST",
    }
}

fn apply_name(a: ApplyTo) -> &'static str {
    match a {
        ApplyTo::Invalid => "INVALID",
        ApplyTo::Listener => "LISTENER",
        ApplyTo::FilterChain => "FILTER_CHAIN",
        ApplyTo::NetworkFilter => "NETWORK_FILTER",
        ApplyTo::HttpFilter => "HTTP_FILTER",
        ApplyTo::RouteConfiguration => "ROUTE_CONFIGURATION",
        ApplyTo::VirtualHost => "VIRTUAL_HOST",
        ApplyTo::HttpRoute => "HTTP_ROUTE",
        ApplyTo::Cluster => "CLUSTER",
        ApplyTo::ExtensionConfig => "EXTENSION_CONFIG",
        ApplyTo::Bootstrap => "BOOTSTRAP",
        ApplyTo::ListenerFilter => "LISTENER_FILTER",
    }
}

/// Validates a ProxyConfig spec; `f` is at `spec`.
pub fn proxy_config(spec: &ProxyConfigSpec, _r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    util::beta_selector(&mut f.at("selector"), spec.selector.as_ref());
    if let Some(c) = spec.concurrency
        && c < 0
    {
        f.at("concurrency").error(format!(
            "must be 0 or more (got {c}); 0 runs one worker thread per CPU core"
        ));
    }
    if let Some(t) = spec.image.as_ref().and_then(|i| i.image_type.as_deref())
        && !["default", "debug", "distroless"].contains(&t)
    {
        f.at("image").at("imageType").warn(format!(
            "{t:?} is not one of Istio's published image types (default, debug, distroless); it works only if your hub publishes it"
        ));
    }
}
