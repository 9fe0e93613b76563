//! EnvoyFilter and ProxyConfig rules.

use super::{error, valid, warning};

const EF: &str = "EnvoyFilter";
const PC: &str = "ProxyConfig";

#[test]
fn realistic_envoy_filters_pass() {
    valid(
        EF,
        r#"{workloadSelector: {labels: {app: reviews}}, priority: -1, configPatches: [
              {applyTo: HTTP_FILTER,
               match: {context: SIDECAR_INBOUND, proxy: {proxyVersion: "^1\\.2.*"},
                       listener: {portNumber: 8080, filterChain: {filter: {name: envoy.filters.network.http_connection_manager, subFilter: {name: envoy.filters.http.router}}}}},
               patch: {operation: INSERT_BEFORE, value: {name: envoy.lua, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua, inlineCode: "function envoy_on_request(h) end"}}}},
              {applyTo: CLUSTER, match: {context: SIDECAR_OUTBOUND, cluster: {service: foo.com}}, patch: {operation: REMOVE}},
              {applyTo: VIRTUAL_HOST, match: {routeConfiguration: {vhost: {name: "a.com:80"}}}, patch: {operation: MERGE, value: {domains: [a.com]}}}]}"#,
    );
}

#[test]
fn patch_shape() {
    error(
        EF,
        "{configPatches: [{patch: {operation: MERGE, value: {}}}]}",
        "spec.configPatches[0].applyTo",
        "is required",
    );
    error(
        EF,
        "{configPatches: [{applyTo: CLUSTER}]}",
        "spec.configPatches[0].patch",
        "is required",
    );
    error(
        EF,
        "{configPatches: [{applyTo: CLUSTER, patch: {value: {}}}]}",
        "spec.configPatches[0].patch.operation",
        "is required",
    );
    error(
        EF,
        "{configPatches: [{applyTo: CLUSTER, patch: {operation: MERGE}}]}",
        "spec.configPatches[0].patch.value",
        "is required for operation MERGE",
    );
    error(
        EF,
        "{configPatches: [{applyTo: CLUSTER, patch: {operation: MERGE, value: [1, 2]}}]}",
        "spec.configPatches[0].patch.value",
        "must be an object",
    );
    warning(
        EF,
        "{configPatches: [{applyTo: CLUSTER, patch: {operation: REMOVE, value: {name: x}}}]}",
        "spec.configPatches[0].patch.value",
        "ignored by REMOVE",
    );
    error(
        EF,
        "{configPatches: [{applyTo: CLUSTER, match: {proxy: {proxyVersion: \"(?=1)\"}}, patch: {operation: REMOVE}}]}",
        "spec.configPatches[0].match.proxy.proxyVersion",
        "RE2",
    );
}

#[test]
fn match_must_fit_apply_to() {
    error(
        EF,
        "{configPatches: [{applyTo: HTTP_FILTER, match: {cluster: {service: a.com}}, patch: {operation: ADD, value: {name: x, typed_config: {\"@type\": type.googleapis.com/x.v3.X}}}}]}",
        "spec.configPatches[0].match",
        "must be a listener match",
    );
    error(
        EF,
        "{configPatches: [{applyTo: CLUSTER, match: {listener: {portNumber: 80}}, patch: {operation: REMOVE}}]}",
        "spec.configPatches[0].match",
        "must be a cluster match",
    );
    error(
        EF,
        "{configPatches: [{applyTo: HTTP_ROUTE, match: {cluster: {name: c}}, patch: {operation: MERGE, value: {}}}]}",
        "spec.configPatches[0].match",
        "route configuration match",
    );
    error(
        EF,
        "{configPatches: [{applyTo: NETWORK_FILTER, match: {listener: {filterChain: {filter: {name: envoy.filters.network.tcp_proxy, subFilter: {name: x}}}}}, patch: {operation: REMOVE}}]}",
        "spec.configPatches[0].match.listener.filterChain.filter.subFilter",
        "only with applyTo HTTP_FILTER",
    );
    error(
        EF,
        "{configPatches: [{applyTo: HTTP_FILTER, match: {listener: {filterChain: {filter: {name: envoy.filters.network.tcp_proxy, subFilter: {name: x}}}}}, patch: {operation: REMOVE}}]}",
        "spec.configPatches[0].match.listener.filterChain.filter.subFilter",
        "http_connection_manager",
    );
    error(
        EF,
        "{configPatches: [{applyTo: NETWORK_FILTER, match: {listener: {filterChain: {filter: {}}}}, patch: {operation: REMOVE}}]}",
        "spec.configPatches[0].match.listener.filterChain.filter.name",
        "is required",
    );
    error(
        EF,
        "{configPatches: [{applyTo: CLUSTER, match: {listener: {portNumber: 80}, cluster: {name: c}}, patch: {operation: REMOVE}}]}",
        "spec.configPatches[0].match",
        "only one of listener, routeConfiguration, cluster, waypoint",
    );
    warning(
        EF,
        "{configPatches: [{applyTo: NETWORK_FILTER, match: {listener: {filterChain: {filter: {name: envoy.router}}}}, patch: {operation: REMOVE}}]}",
        "spec.configPatches[0].match.listener.filterChain.filter.name",
        "deprecated filter name",
    );
}

#[test]
fn operations_that_istio_ignores() {
    warning(
        EF,
        "{configPatches: [{applyTo: CLUSTER, patch: {operation: REPLACE, value: {name: c}}}]}",
        "spec.configPatches[0].patch.operation",
        "REPLACE works only with applyTo HTTP_FILTER or NETWORK_FILTER",
    );
    warning(
        EF,
        "{configPatches: [{applyTo: HTTP_ROUTE, patch: {operation: ADD, value: {name: r}}}]}",
        "spec.configPatches[0].patch.operation",
        "ADD is ignored when applyTo is HTTP_ROUTE",
    );
    warning(
        EF,
        "{configPatches: [{applyTo: CLUSTER, patch: {operation: INSERT_FIRST, value: {name: c}}}]}",
        "spec.configPatches[0].patch.operation",
        "use ADD",
    );
    warning(
        EF,
        "{configPatches: [{applyTo: CLUSTER, patch: {operation: ADD, filterClass: AUTHZ, value: {name: c}}}]}",
        "spec.configPatches[0].patch.filterClass",
        "only to operation ADD with applyTo HTTP_FILTER",
    );
}

#[test]
fn values_and_targets() {
    error(
        EF,
        "{configPatches: [{applyTo: HTTP_FILTER, patch: {operation: ADD, value: {name: x, typed_config: {\"@type\": type.googleapis.com/envoy.config.filter.http.lua.v2.Lua}}}}]}",
        "spec.configPatches[0].patch.value.typed_config",
        "removed v2 API",
    );
    error(
        EF,
        "{configPatches: [{applyTo: HTTP_FILTER, patch: {operation: ADD, value: {typed_config: {\"@type\": type.googleapis.com/x.v3.X}}}}]}",
        "spec.configPatches[0].patch.value.name",
        "is required",
    );
    warning(
        EF,
        "{configPatches: [{applyTo: HTTP_FILTER, patch: {operation: ADD, value: {name: envoy.filters.http.cors}}}]}",
        "spec.configPatches[0].patch.value",
        "without typed_config",
    );
    error(
        EF,
        "{targetRefs: [{kind: Deployment, name: a}], configPatches: [{applyTo: CLUSTER, patch: {operation: REMOVE}}]}",
        "spec.targetRefs[0].kind",
        "cannot be targeted",
    );
    error(
        EF,
        "{workloadSelector: {labels: {app: a}}, targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: w}], configPatches: [{applyTo: CLUSTER, patch: {operation: REMOVE}}]}",
        "spec.targetRefs",
        "cannot be combined with workloadSelector",
    );
    warning(
        EF,
        "{configPatches: [{applyTo: CLUSTER, patch: {operation: REMOVE}}]}",
        "spec",
        "internal Envoy configuration",
    );
}

#[test]
fn proxy_config() {
    valid(
        PC,
        "{selector: {matchLabels: {app: ratings}}, concurrency: 0, environmentVariables: {ISTIO_META_DNS_CAPTURE: \"true\"}, image: {imageType: distroless}}",
    );
    error(
        PC,
        "{concurrency: -1}",
        "spec.concurrency",
        "must be 0 or more (got -1)",
    );
    error(
        PC,
        "{selector: {matchLabels: {\"app\": \"*\"}}}",
        "spec.selector.matchLabels.app",
        "wildcards are not supported",
    );
    warning(
        PC,
        "{image: {imageType: centos}}",
        "spec.image.imageType",
        "published image types",
    );
}
