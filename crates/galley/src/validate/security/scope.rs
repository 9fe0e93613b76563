//! Where a policy applies: `selector`, `targetRef` and `targetRefs`, shared by the
//! security, telemetry and extensions kinds (Istio's `validateOneOfSelectorType`,
//! `validateWorkloadSelector` and `validatePolicyTargetReference`), plus Istio's
//! millisecond duration rule.

use std::collections::BTreeMap;

use common::istio::types::{PolicyTargetReference, WorkloadSelector};

use crate::validate::checks;
use crate::validate::field::Field;

/// `selector`, `targetRef` and `targetRefs`: at most one is set, and each is well
/// formed. `f` is positioned at `spec`.
pub(crate) fn policy_scope(
    f: &mut Field<'_>,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    checks::at_most_one(
        f,
        &[
            ("selector", selector.is_some()),
            ("targetRef", target_ref.is_some()),
            ("targetRefs", !target_refs.is_empty()),
        ],
    );
    if let Some(s) = selector {
        workload_selector(&mut f.at("selector"), s);
    }
    if let Some(t) = target_ref {
        target_reference(&mut f.at("targetRef"), t);
    }
    for (i, t) in target_refs.iter().enumerate() {
        target_reference(&mut f.at("targetRefs").index(i), t);
    }
}

/// A `WorkloadSelector`: no empty keys, no wildcards, valid Kubernetes labels; a
/// selector without labels selects everything, which is allowed but suspicious.
pub(crate) fn workload_selector(f: &mut Field<'_>, s: &WorkloadSelector) {
    if s.match_labels.is_empty() {
        f.warn(
            "workload selector specified without labels selects every workload; add matchLabels or remove the selector",
        );
        return;
    }
    let mut ml = f.at("matchLabels");
    let mut plain = BTreeMap::new();
    for (k, v) in &s.match_labels {
        if k.is_empty() {
            ml.key(k).error(format!(
                "empty label key is not supported in a selector (value {v:?}); name the label"
            ));
        } else if k.contains('*') || v.contains('*') {
            ml.key(k).error(format!(
                "wildcard is not supported in a selector: \"{k}={v}\"; selectors match labels exactly"
            ));
        } else {
            plain.insert(k.clone(), v.clone());
        }
    }
    checks::labels(&mut ml, &plain);
}

/// The kinds a policy `targetRef` may point at: `(group, kind)`, `""` being core.
const TARGET_KINDS: &[(&str, &str)] = &[
    ("", "Service"),
    ("networking.istio.io", "ServiceEntry"),
    ("gateway.networking.k8s.io", "Gateway"),
    ("gateway.networking.k8s.io", "GatewayClass"),
];

/// A `PolicyTargetReference`: a name, no namespace, and a supported group/kind.
pub(crate) fn target_reference(f: &mut Field<'_>, t: &PolicyTargetReference) {
    if t.name.trim().is_empty() {
        f.at("name")
            .error("is required: name the Gateway, Service or ServiceEntry to target");
    }
    if t.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
        f.at("namespace").error(
            "must not be set: cross-namespace references are not supported; put the policy in the target's namespace",
        );
    }
    let group = if t.group == "core" {
        ""
    } else {
        t.group.as_str()
    };
    if !TARGET_KINDS
        .iter()
        .any(|(g, k)| *g == group && *k == t.kind)
    {
        f.at("kind").error(format!(
            "targetRef must refer to a core Service, networking.istio.io ServiceEntry, or gateway.networking.k8s.io Gateway or GatewayClass; got group {:?} kind {:?}",
            t.group, t.kind
        ));
    }
}
