//! Delegation (`delegate`), resolved one level deep as Istio does for gateway
//! root VirtualServices: the child VirtualService's rules take the root rule's
//! place, each child match ANDed with the root's (a child URI outside the
//! root's prefix drops the pair) and unset child fields inherited from the
//! root rule. A missing or non-delegate child (one with hosts) contributes
//! nothing.

use std::borrow::Cow;
use std::collections::BTreeMap;

use common::istio::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualServiceSpec};
use common::resource::Resource;

use super::scope::{exported_to, namespace};
use crate::model::Snapshot;

/// One HTTP rule with the VirtualService it came from (after delegation, the
/// child's), whose namespace resolves short host names.
#[derive(Debug, Clone)]
pub(super) struct Rule<'a> {
    /// Namespace of the VirtualService the rule came from.
    pub(super) namespace: &'a str,
    /// Its name.
    pub(super) name: &'a str,
    /// The rule (merged with its root's when delegated).
    pub(super) http: Cow<'a, HttpRoute>,
}

/// The HTTP rules of a VirtualService, delegates replaced by their children's.
pub(super) fn expand_delegates<'a>(
    snapshot: &'a Snapshot,
    resource: &'a Resource,
    vs: &'a VirtualServiceSpec,
) -> Vec<Rule<'a>> {
    let ns = namespace(resource);
    let mut out = Vec::new();
    for http in &vs.http {
        let Some(delegate) = &http.delegate else {
            out.push(Rule {
                namespace: ns,
                name: resource.name(),
                http: Cow::Borrowed(http),
            });
            continue;
        };
        let child_ns = delegate.namespace.as_deref().unwrap_or(ns);
        let Some(child_name) = delegate.name.as_deref() else {
            continue;
        };
        let child = snapshot.virtual_services().find(|(r, c)| {
            r.name() == child_name
                && namespace(r) == child_ns
                && c.hosts.is_empty()
                && exported_to(&c.export_to, child_ns, ns)
        });
        let Some((child_res, child)) = child else {
            tracing::debug!(
                delegate = %format!("{child_ns}/{child_name}"),
                "delegate VirtualService not found; its routes are left out"
            );
            continue;
        };
        for c in child.http.iter().filter(|c| c.delegate.is_none()) {
            if let Some(merged) = merge_delegate(http, c) {
                out.push(Rule {
                    namespace: namespace(child_res),
                    name: child_res.name(),
                    http: Cow::Owned(merged),
                });
            }
        }
    }
    out
}

fn merge_delegate(root: &HttpRoute, child: &HttpRoute) -> Option<HttpRoute> {
    let mut merged = child.clone();
    merged.delegate = None;
    if merged.name.is_none() {
        merged.name = root.name.clone();
    }
    merged.rewrite = child.rewrite.clone().or_else(|| root.rewrite.clone());
    merged.timeout = child.timeout.clone().or_else(|| root.timeout.clone());
    merged.retries = child.retries.clone().or_else(|| root.retries.clone());
    merged.fault = child.fault.clone().or_else(|| root.fault.clone());
    merged.mirror = child.mirror.clone().or_else(|| root.mirror.clone());
    merged.cors_policy = child
        .cors_policy
        .clone()
        .or_else(|| root.cors_policy.clone());
    merged.headers = child.headers.clone().or_else(|| root.headers.clone());
    merged.r#match = match (root.r#match.is_empty(), child.r#match.is_empty()) {
        (true, _) => child.r#match.clone(),
        (false, true) => root.r#match.clone(),
        (false, false) => {
            let pairs: Vec<_> = root
                .r#match
                .iter()
                .flat_map(|r| child.r#match.iter().filter_map(move |c| merge_match(r, c)))
                .collect();
            if pairs.is_empty() {
                return None;
            }
            pairs
        }
    };
    Some(merged)
}

fn merge_match(root: &HttpMatchRequest, child: &HttpMatchRequest) -> Option<HttpMatchRequest> {
    let mut m = child.clone();
    if let (Some(ru), Some(cu)) = (&root.uri, &child.uri) {
        let child_path = cu.exact.as_ref().or(cu.prefix.as_ref());
        if let (Some(rp), Some(cp)) = (ru.prefix.as_ref().or(ru.exact.as_ref()), child_path)
            && !cp.starts_with(rp.as_str())
        {
            return None;
        }
    }
    m.uri = child.uri.clone().or_else(|| root.uri.clone());
    m.scheme = child.scheme.clone().or_else(|| root.scheme.clone());
    m.method = child.method.clone().or_else(|| root.method.clone());
    m.authority = child.authority.clone().or_else(|| root.authority.clone());
    m.port = child.port.or(root.port);
    m.source_namespace = child
        .source_namespace
        .clone()
        .or_else(|| root.source_namespace.clone());
    m.ignore_uri_case =
        Some(root.ignore_uri_case.unwrap_or(false) || child.ignore_uri_case.unwrap_or(false));
    let union = |a: &BTreeMap<String, StringMatch>, b: &BTreeMap<String, StringMatch>| {
        let mut out = a.clone();
        out.extend(b.clone());
        out
    };
    m.headers = union(&root.headers, &child.headers);
    m.without_headers = union(&root.without_headers, &child.without_headers);
    m.query_params = union(&root.query_params, &child.query_params);
    let mut labels = root.source_labels.clone();
    labels.extend(child.source_labels.clone());
    m.source_labels = labels;
    m.gateways = root.gateways.clone();
    Some(m)
}
