//! EnvoyFilter patch checks: operations that Istio ignores for the object they
//! apply to (IST0152, IST0153, IST0154), and relative operations without a
//! `priority`, whose outcome depends on the order filters are applied (IST0151;
//! IST0155 when a filter of the same name is also pinned to a proxy version).

use common::istio::networking::{ApplyTo, EnvoyConfigObjectPatch, Operation};
use common::path::Path;
use common::resource::Resource;
use serde_json::Value;

use super::{Analyzer, Report, Snapshot};
use crate::message::codes;

pub(super) fn analyzers() -> Vec<Box<dyn Analyzer>> {
    vec![Box::new(EnvoyPatchAnalyzer)]
}

const RELATIVE: &str = "This EnvoyFilter does not have a priority and has a relative patch operation set which can cause the EnvoyFilter not to be applied. Using the INSERT_FIRST of ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.";
const RELATIVE_WITH_PROXY_VERSION: &str = "This EnvoyFilter does not have a priority and has a relative patch operation (NSTERT_BEFORE/AFTER, REPLACE, MERGE, DELETE) and proxyVersion set which can cause the EnvoyFilter not to be applied during an upgrade. Using the INSERT_FIRST or ADD option or setting the priority may help in ensuring the EnvoyFilter is applied correctly.";
const REPLACE: &str = "The REPLACE operation is only valid for HTTP_FILTER and NETWORK_FILTER.";
const ADD: &str =
    "The ADD operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.";
const REMOVE: &str = "The REMOVE operation will be ignored when applyTo is set to ROUTE_CONFIGURATION, or HTTP_ROUTE.";

/// Istio's `envoyfilter.EnvoyPatchAnalyzer`.
struct EnvoyPatchAnalyzer;

impl Analyzer for EnvoyPatchAnalyzer {
    fn name(&self) -> &'static str {
        "envoyfilter.EnvoyPatchAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        // Names of the filters patched with a proxyVersion match so far, across
        // EnvoyFilters in input order (as Istio accumulates them).
        let mut pinned_names: Vec<String> = Vec::new();
        for (r, ef) in snap.envoy_filters() {
            let unprioritized = ef.priority.unwrap_or(0) == 0;
            for (i, cp) in ef.config_patches.iter().enumerate() {
                let Some(patch) = &cp.patch else {
                    break; // Istio stops at the first patch without a patch section
                };
                let name = instance_name(cp);
                let at = Path::root("spec")
                    .field("configPatches")
                    .index(i)
                    .field("patch")
                    .field("operation");
                let route_level = matches!(
                    cp.apply_to,
                    Some(ApplyTo::RouteConfiguration | ApplyTo::HttpRoute)
                );
                let filter_level = matches!(
                    cp.apply_to,
                    Some(ApplyTo::NetworkFilter | ApplyTo::HttpFilter)
                );
                let relative = match patch.operation.unwrap_or_default() {
                    Operation::Add => {
                        if route_level {
                            add(
                                report,
                                r,
                                codes::ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY,
                                &at,
                                ADD,
                            );
                        }
                        false
                    }
                    Operation::Remove if route_level => {
                        add(
                            report,
                            r,
                            codes::ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY,
                            &at,
                            REMOVE,
                        );
                        false
                    }
                    Operation::Replace if !filter_level => {
                        add(
                            report,
                            r,
                            codes::ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY,
                            &at,
                            REPLACE,
                        );
                        false
                    }
                    Operation::Remove
                    | Operation::Replace
                    | Operation::InsertBefore
                    | Operation::InsertAfter
                    | Operation::Merge => true,
                    _ => false,
                };
                if relative && unprioritized {
                    if pinned_names.contains(&name) {
                        add(
                            report,
                            r,
                            codes::ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION,
                            &at,
                            RELATIVE_WITH_PROXY_VERSION,
                        );
                    } else {
                        add(
                            report,
                            r,
                            codes::ENVOY_FILTER_USES_RELATIVE_OPERATION,
                            &at,
                            RELATIVE,
                        );
                    }
                }
                let pinned = cp
                    .r#match
                    .as_ref()
                    .and_then(|m| m.proxy.as_ref())
                    .and_then(|p| p.proxy_version.as_deref())
                    .is_some_and(|v| !v.is_empty());
                if pinned {
                    pinned_names.push(name);
                }
            }
        }
    }
}

fn add(report: &mut Report<'_>, r: &Resource, code: crate::message::Code, at: &Path, text: &str) {
    report.add(code, r, Some(at.clone()), text.to_string());
}

/// The name of the filter a patch is about: `patch.value.name`, or else the
/// filter named in the listener match (empty when neither is given).
fn instance_name(cp: &EnvoyConfigObjectPatch) -> String {
    let Some(Value::Object(value)) = cp.patch.as_ref().and_then(|p| p.value.as_ref()) else {
        return String::new();
    };
    if let Some(name) = value.get("name") {
        return name.to_string();
    }
    cp.r#match
        .as_ref()
        .and_then(|m| m.listener.as_ref())
        .and_then(|l| l.filter_chain.as_ref())
        .and_then(|fc| fc.filter.as_ref())
        .and_then(|f| f.name.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::service::test_support::*;
    use super::*;

    fn filter(name: &str, priority: Option<i32>, patches: &str) -> String {
        let priority = priority
            .map(|p| format!("  priority: {p}\n"))
            .unwrap_or_default();
        format!(
            "---\napiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: {name}, namespace: istio-system}}\nspec:\n{priority}  configPatches:\n{patches}"
        )
    }

    const INSERT_LUA: &str = r#"  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener:
        filterChain:
          filter:
            name: envoy.filters.network.http_connection_manager
            subFilter: {name: envoy.filters.http.router}
    patch:
      operation: INSERT_BEFORE
      value: {name: envoy.lua, typed_config: {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}}
"#;

    #[test]
    fn ist0151_relative_operation_without_priority() {
        let m = expect_one(
            &filter("lua", None, INSERT_LUA),
            codes::ENVOY_FILTER_USES_RELATIVE_OPERATION,
            "EnvoyFilter",
            "lua",
            Some("spec.configPatches[0].patch.operation"),
            RELATIVE,
        );
        assert_eq!(m.origin.unwrap().line, 16);
        expect_none(
            &filter("lua", None, INSERT_LUA),
            codes::ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION,
        );
        expect_none(
            &filter("lua", Some(10), INSERT_LUA),
            codes::ENVOY_FILTER_USES_RELATIVE_OPERATION,
        );
        let first = INSERT_LUA.replace("INSERT_BEFORE", "INSERT_FIRST");
        expect_none(
            &filter("lua", None, &first),
            codes::ENVOY_FILTER_USES_RELATIVE_OPERATION,
        );
    }

    #[test]
    fn ist0155_relative_operation_with_proxy_version() {
        let pinned = INSERT_LUA.replace(
            "      context: SIDECAR_INBOUND\n",
            "      context: SIDECAR_INBOUND\n      proxy: {proxyVersion: '^1\\.2.*'}\n",
        );
        let yaml = format!(
            "{}{}",
            filter("lua-old", Some(5), &pinned),
            filter("lua", None, INSERT_LUA)
        );
        expect_one(
            &yaml,
            codes::ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION,
            "EnvoyFilter",
            "lua",
            Some("spec.configPatches[0].patch.operation"),
            RELATIVE_WITH_PROXY_VERSION,
        );
        expect_none(&yaml, codes::ENVOY_FILTER_USES_RELATIVE_OPERATION);
    }

    #[test]
    fn ist0152_replace_outside_filters() {
        let patch =
            "  - applyTo: CLUSTER\n    patch: {operation: REPLACE, value: {name: outbound}}\n";
        expect_one(
            &filter("cluster", Some(1), patch),
            codes::ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY,
            "EnvoyFilter",
            "cluster",
            Some("spec.configPatches[0].patch.operation"),
            REPLACE,
        );
        let ok = patch.replace("CLUSTER", "NETWORK_FILTER");
        expect_none(
            &filter("cluster", Some(1), &ok),
            codes::ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY,
        );
    }

    #[test]
    fn ist0153_and_ist0154_add_and_remove_on_routes() {
        let patches = "  - applyTo: HTTP_FILTER\n    patch: {operation: ADD, value: {name: ok}}\n  - applyTo: HTTP_ROUTE\n    patch: {operation: ADD, value: {name: r}}\n  - applyTo: ROUTE_CONFIGURATION\n    patch: {operation: REMOVE}\n";
        let yaml = filter("routes", None, patches);
        expect_one(
            &yaml,
            codes::ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY,
            "EnvoyFilter",
            "routes",
            Some("spec.configPatches[1].patch.operation"),
            ADD,
        );
        expect_one(
            &yaml,
            codes::ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY,
            "EnvoyFilter",
            "routes",
            Some("spec.configPatches[2].patch.operation"),
            REMOVE,
        );
        expect_none(&yaml, codes::ENVOY_FILTER_USES_RELATIVE_OPERATION);
    }
}
