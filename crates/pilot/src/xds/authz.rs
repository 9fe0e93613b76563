//! `AuthorizationPolicy` as Envoy RBAC filters, the way Istio's
//! `security/authz/builder` generates them for a sidecar's inbound chains and a
//! gateway's listeners, with `RequestAuthentication`'s `jwt_authn` filter
//! ahead of them ([`jwt`]). Owns which policies apply to a proxy ([`select`],
//! [`authentications`]), the filters they become ([`filters`]) and what pilot
//! could not apply ([`notes`], shown on `/debug/configz` and logged once per
//! snapshot); the rule-by-rule translation is in [`rules`]. The listener
//! builders only place the filters; outbound chains get none.
//!
//! **Selection.** A policy in the root namespace (`istio-system`) applies to
//! every proxy of the mesh, a policy elsewhere to the proxies of its namespace;
//! a non-empty `selector.matchLabels` narrows either to the workloads carrying
//! the labels. A policy with `targetRef(s)` does not apply to sidecars; on a
//! gateway it applies when it names a `gateway.networking.k8s.io` `Gateway` of
//! the policy's namespace whose name is the proxy's
//! `gateway.networking.k8s.io/gateway-name` label. Other target kinds, and a
//! selector beside a target, are not applied and reported. Policies are found
//! through a per-snapshot index by namespace ([`PolicyIndex`]).
//!
//! **Filters.** One RBAC filter per action present, in Istio's order: the
//! CUSTOM policies, DENY, AUDIT (`LOG`), then ALLOW. Each rule is a policy named
//! `ns[NS]-policy[NAME]-rule[INDEX]`. Envoy then denies a request a DENY filter
//! matches, and, when ALLOW policies exist, one no ALLOW rule matches (an ALLOW
//! policy without rules — `spec: {}` — allows nothing); with no ALLOW policy
//! everything not denied passes. A denied HTTP request gets Envoy's own
//! `403 RBAC: access denied`; a denied TCP connection is closed. HTTP chains
//! get `envoy.filters.http.rbac` before the router; TCP chains (and the
//! inbound passthrough) `envoy.filters.network.rbac` (stat prefix `tcp.`),
//! where HTTP-only fields drop an ALLOW rule and are ignored in a DENY rule.
//!
//! **CUSTOM** needs an ext_authz provider from meshConfig
//! `extensionProviders`, which pilot does not have. Istio, when the provider
//! is missing, denies what the policy's rules match
//! (`istio-ext-authz-…-deny-due-to-bad-CUSTOM-action`); pilot does the same and
//! reports the policy as not applied. AUDIT needs an audit provider too: its
//! `LOG` filter only marks requests and changes no verdict.

use std::collections::BTreeMap;

use common::istio::security::{
    AuthorizationPolicyAction, AuthorizationPolicySpec, RequestAuthenticationSpec,
};
use common::istio::types::{PolicyTargetReference, WorkloadSelector};
use common::resource::{Body, Resource, Spec};
use envoy_types::pb::envoy::config::listener::v3::Filter;
use envoy_types::pb::envoy::config::rbac::v3::{Policy, rbac::Action};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use crate::model::Snapshot;
use crate::proxy::{Proxy, ProxyKind};
use crate::xds::listener::{http_filter, network_filter};
use crate::xds::route::scope::{ROOT_NAMESPACE, namespace};
use crate::xds::route::util::labels_match;

pub mod jwt;
pub mod rules;

/// Envoy's HTTP RBAC filter.
pub const HTTP_RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// Envoy's network RBAC filter.
pub const NETWORK_RBAC_FILTER: &str = "envoy.filters.network.rbac";
/// The stat prefix Istio gives network RBAC filters.
pub const TCP_STAT_PREFIX: &str = "tcp.";
/// Type URL of the HTTP RBAC filter's config.
pub const HTTP_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
/// Type URL of the network RBAC filter's config.
pub const NETWORK_RBAC_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
/// The group of Gateway API targets.
pub const GATEWAY_API_GROUP: &str = "gateway.networking.k8s.io";
/// The label Gateway API deployments carry with their Gateway's name.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// The AuthorizationPolicies and RequestAuthentications of a snapshot by
/// namespace (positions in [`Snapshot::config`]), built once per snapshot.
#[derive(Debug, Clone, Default)]
pub struct PolicyIndex {
    by_namespace: BTreeMap<String, Vec<usize>>,
}

impl PolicyIndex {
    /// Indexes `snapshot`'s policies and logs, once per snapshot, what pilot
    /// cannot apply of them.
    pub fn build(snapshot: &Snapshot) -> PolicyIndex {
        let mut by_namespace: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (pos, r) in snapshot.config.iter().enumerate() {
            if let Body::Istio(Spec::AuthorizationPolicy(_) | Spec::RequestAuthentication(_)) =
                &r.body
            {
                by_namespace
                    .entry(namespace(r).to_string())
                    .or_default()
                    .push(pos);
            }
        }
        let index = PolicyIndex { by_namespace };
        for note in notes_of(snapshot, &index) {
            if !note.applied {
                tracing::warn!(policy = %note.resource, messages = ?note.messages, "authorization policy not applied as written");
            } else if !note.messages.is_empty() {
                tracing::info!(policy = %note.resource, messages = ?note.messages, "authorization policy applied with changes");
            }
        }
        index
    }

    fn in_namespace<'s>(
        &self,
        snapshot: &'s Snapshot,
        ns: &str,
    ) -> impl Iterator<Item = (&'s Resource, &'s AuthorizationPolicySpec)> + use<'s, '_> {
        self.resources(snapshot, ns).filter_map(|r| match &r.body {
            Body::Istio(Spec::AuthorizationPolicy(spec)) => Some((r, spec.as_ref())),
            _ => None,
        })
    }

    fn authentications_in<'s>(
        &self,
        snapshot: &'s Snapshot,
        ns: &str,
    ) -> impl Iterator<Item = (&'s Resource, &'s RequestAuthenticationSpec)> + use<'s, '_> {
        self.resources(snapshot, ns).filter_map(|r| match &r.body {
            Body::Istio(Spec::RequestAuthentication(spec)) => Some((r, spec.as_ref())),
            _ => None,
        })
    }

    fn resources<'s>(
        &self,
        snapshot: &'s Snapshot,
        ns: &str,
    ) -> impl Iterator<Item = &'s Resource> + use<'s, '_> {
        self.by_namespace
            .get(ns)
            .into_iter()
            .flatten()
            .map(|pos| snapshot.config[*pos].as_ref())
    }

    fn all<'s>(&self, snapshot: &'s Snapshot) -> impl Iterator<Item = &'s Resource> + use<'s, '_> {
        self.by_namespace
            .keys()
            .flat_map(move |ns| self.resources(snapshot, ns))
    }
}

/// A policy and its spec.
pub type PolicyRef<'a> = (&'a Resource, &'a AuthorizationPolicySpec);

/// The policies that apply to one proxy, by action, in config order.
#[derive(Debug, Clone, Default)]
pub struct Selected<'a> {
    /// CUSTOM policies (enforced as DENY: no ext_authz provider).
    pub custom: Vec<PolicyRef<'a>>,
    /// DENY policies.
    pub deny: Vec<PolicyRef<'a>>,
    /// AUDIT policies.
    pub audit: Vec<PolicyRef<'a>>,
    /// ALLOW policies.
    pub allow: Vec<PolicyRef<'a>>,
}

impl Selected<'_> {
    /// Whether no policy applies.
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty()
            && self.deny.is_empty()
            && self.audit.is_empty()
            && self.allow.is_empty()
    }
}

/// The policies of `proxy` (root namespace, then its own).
pub fn select<'a>(snapshot: &'a Snapshot, proxy: &Proxy) -> Selected<'a> {
    let index = snapshot
        .authz_index
        .get_or_init(|| PolicyIndex::build(snapshot));
    let mut out = Selected::default();
    let root = index.in_namespace(snapshot, ROOT_NAMESPACE);
    let own = (proxy.namespace != ROOT_NAMESPACE)
        .then(|| index.in_namespace(snapshot, &proxy.namespace))
        .into_iter()
        .flatten();
    for (r, spec) in root.chain(own) {
        let t = Targeting::of(spec.selector.as_ref(), &spec.target_ref, &spec.target_refs);
        if t.check(r).is_err() || !t.applies(r, proxy) {
            continue;
        }
        let list = match spec.action.unwrap_or_default() {
            AuthorizationPolicyAction::Allow => &mut out.allow,
            AuthorizationPolicyAction::Deny => &mut out.deny,
            AuthorizationPolicyAction::Audit => &mut out.audit,
            AuthorizationPolicyAction::Custom => &mut out.custom,
        };
        list.push((r, spec));
    }
    out
}

/// The RequestAuthentications of `proxy` (root namespace, then its own).
pub fn authentications<'a>(
    snapshot: &'a Snapshot,
    proxy: &Proxy,
) -> Vec<(&'a Resource, &'a RequestAuthenticationSpec)> {
    let index = snapshot
        .authz_index
        .get_or_init(|| PolicyIndex::build(snapshot));
    let root = index.authentications_in(snapshot, ROOT_NAMESPACE);
    let own = (proxy.namespace != ROOT_NAMESPACE)
        .then(|| index.authentications_in(snapshot, &proxy.namespace))
        .into_iter()
        .flatten();
    root.chain(own)
        .filter(|(r, spec)| {
            let t = Targeting::of(spec.selector.as_ref(), &spec.target_ref, &spec.target_refs);
            t.check(r).is_ok() && t.applies(r, proxy)
        })
        .collect()
}

/// How a security policy picks its proxies: a selector or target refs.
struct Targeting<'a> {
    selector: Option<&'a BTreeMap<String, String>>,
    refs: Vec<&'a PolicyTargetReference>,
}

impl<'a> Targeting<'a> {
    fn of(
        selector: Option<&'a WorkloadSelector>,
        target_ref: &'a Option<PolicyTargetReference>,
        target_refs: &'a [PolicyTargetReference],
    ) -> Self {
        Targeting {
            selector: selector.map(|s| &s.match_labels).filter(|l| !l.is_empty()),
            refs: target_ref.iter().chain(target_refs).collect(),
        }
    }

    /// Whether a policy (whose targets passed [`Targeting::check`]) applies
    /// to `proxy`.
    fn applies(&self, r: &Resource, proxy: &Proxy) -> bool {
        let ns = namespace(r);
        if ns != ROOT_NAMESPACE && ns != proxy.namespace {
            return false;
        }
        if !self.refs.is_empty() {
            return proxy.kind == ProxyKind::Router
                && ns == proxy.namespace
                && self
                    .refs
                    .iter()
                    .any(|t| proxy.labels.get(GATEWAY_NAME_LABEL) == Some(&t.name));
        }
        self.selector
            .is_none_or(|labels| labels_match(labels, &proxy.labels))
    }

    /// `Err` with why when the targets cannot be applied: a kind other than a
    /// Gateway API `Gateway`, another namespace, or a selector beside them.
    fn check(&self, r: &Resource) -> Result<(), String> {
        if self.refs.is_empty() {
            return Ok(());
        }
        if self.selector.is_some() {
            return Err(
                "selector and targetRef(s) are exclusive (Istio refuses such a policy)".into(),
            );
        }
        for t in &self.refs {
            if t.group != GATEWAY_API_GROUP || t.kind != "Gateway" {
                return Err(format!(
                    "targetRef {}/{} {:?} is not supported: pilot applies targetRefs to {GATEWAY_API_GROUP} Gateways only (waypoints, Services and ServiceEntries need ambient)",
                    if t.group.is_empty() { "core" } else { &t.group },
                    t.kind,
                    t.name
                ));
            }
            if t.namespace.as_deref().is_some_and(|n| n != namespace(r)) {
                return Err(format!(
                    "targetRef {:?} names namespace {:?}; a policy can only target its own namespace",
                    t.name,
                    t.namespace.as_deref().unwrap_or_default()
                ));
            }
        }
        Ok(())
    }
}

/// The authentication and authorization filters of one proxy: HTTP filters
/// for connection managers (`jwt_authn`, then RBAC, before the router) and
/// network filters for TCP chains (before the TCP proxy). Both empty when no
/// policy applies.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// `envoy.filters.http.jwt_authn` when RequestAuthentications apply, then
    /// `envoy.filters.http.rbac`, one per action present.
    pub http: Vec<HttpFilter>,
    /// `envoy.filters.network.rbac`, one per action present.
    pub tcp: Vec<Filter>,
}

/// The authorization filters of `proxy`.
pub fn filters(snapshot: &Snapshot, proxy: &Proxy) -> Filters {
    let selected = select(snapshot, proxy);
    let mut out = Filters::default();
    out.http
        .extend(jwt::filter(&authentications(snapshot, proxy)));
    if selected.is_empty() {
        return out;
    }
    for (policies, action, custom) in [
        (&selected.custom, Action::Deny, true),
        (&selected.deny, Action::Deny, false),
        (&selected.audit, Action::Log, false),
        (&selected.allow, Action::Allow, false),
    ] {
        if policies.is_empty() {
            continue;
        }
        let http = RbacFilter {
            rules: Some(rbac(policies, action, custom, false)),
            stat_prefix: String::new(),
        };
        out.http.push(http_filter(
            HTTP_RBAC_FILTER,
            Any {
                type_url: HTTP_RBAC_TYPE.to_string(),
                value: http.encode_to_vec(),
            },
        ));
        let tcp = RbacFilter {
            rules: Some(rbac(policies, action, custom, true)),
            stat_prefix: TCP_STAT_PREFIX.to_string(),
        };
        out.tcp.push(network_filter(
            NETWORK_RBAC_FILTER,
            Any {
                type_url: NETWORK_RBAC_TYPE.to_string(),
                value: tcp.encode_to_vec(),
            },
        ));
    }
    out
}

/// The name of rule `index` of a policy (Istio's `ns[NS]-policy[NAME]-rule[N]`).
pub fn rule_name(ns: &str, name: &str, index: usize, custom: bool) -> String {
    let base = format!("ns[{ns}]-policy[{name}]-rule[{index}]");
    if custom {
        format!("istio-ext-authz-{base}-deny-due-to-bad-CUSTOM-action")
    } else {
        base
    }
}

fn rbac(policies: &[PolicyRef<'_>], action: Action, custom: bool, tcp: bool) -> RbacRules {
    let mode = rules::Mode {
        tcp,
        allow: action == Action::Allow,
    };
    let mut out = BTreeMap::new();
    for (r, spec) in policies {
        let ns = namespace(r);
        for (i, rule) in spec.rules.iter().enumerate() {
            let mut skipped = Vec::new();
            if let Ok(p) = rules::policy(rule, ns, mode, &mut skipped) {
                out.insert(rule_name(ns, r.name(), i, custom), p);
            }
        }
    }
    RbacRules {
        action: action as i32,
        policies: out,
    }
}

/// `envoy.config.rbac.v3.RBAC` with its policies in name order, so the same
/// config always encodes to the same bytes (Envoy's generated type keeps them
/// in a `HashMap`). Wire-compatible with it.
#[derive(Clone, PartialEq, Message)]
pub struct RbacRules {
    /// `RBAC.Action`.
    #[prost(int32, tag = "1")]
    pub action: i32,
    /// Policies by name.
    #[prost(btree_map = "string, message", tag = "2")]
    pub policies: BTreeMap<String, Policy>,
}

/// The fields pilot sets of the HTTP and network RBAC filters' configs (the
/// same tags in both: `rules` 1; `stat_prefix` 3 exists only in the network
/// filter's and stays empty for HTTP).
#[derive(Clone, PartialEq, Message)]
pub struct RbacFilter {
    /// The enforced rules.
    #[prost(message, optional, tag = "1")]
    pub rules: Option<RbacRules>,
    /// The network filter's stat prefix.
    #[prost(string, tag = "3")]
    pub stat_prefix: String,
}

/// What pilot makes of one AuthorizationPolicy or RequestAuthentication, for
/// `/debug/configz`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PolicyNote {
    /// `KIND NAME.NAMESPACE`.
    pub resource: String,
    /// Whether it takes effect as written (possibly minus some values).
    pub applied: bool,
    /// What was refused, dropped or ignored, and why.
    pub messages: Vec<String>,
}

/// Notes on every AuthorizationPolicy and RequestAuthentication pilot cannot
/// apply exactly as written.
pub fn notes(snapshot: &Snapshot) -> Vec<PolicyNote> {
    let index = snapshot
        .authz_index
        .get_or_init(|| PolicyIndex::build(snapshot));
    notes_of(snapshot, index)
}

fn notes_of(snapshot: &Snapshot, index: &PolicyIndex) -> Vec<PolicyNote> {
    let mut out = Vec::new();
    for r in index.all(snapshot) {
        let ns = namespace(r);
        let mut note = PolicyNote {
            resource: format!("{} {}.{ns}", r.kind, r.name()),
            applied: true,
            messages: Vec::new(),
        };
        let spec = match &r.body {
            Body::Istio(Spec::AuthorizationPolicy(spec)) => spec.as_ref(),
            Body::Istio(Spec::RequestAuthentication(spec)) => {
                let t = Targeting::of(spec.selector.as_ref(), &spec.target_ref, &spec.target_refs);
                if let Err(e) = t.check(r) {
                    note.applied = false;
                    note.messages.push(format!("not applied: {e}"));
                }
                for rule in &spec.jwt_rules {
                    if let jwt::Jwks::Unfetched(why) = jwt::jwks(rule) {
                        note.applied = false;
                        note.messages.push(why);
                    }
                }
                if !note.messages.is_empty() {
                    out.push(note);
                }
                continue;
            }
            _ => continue,
        };
        let t = Targeting::of(spec.selector.as_ref(), &spec.target_ref, &spec.target_refs);
        if let Err(e) = t.check(r) {
            note.applied = false;
            note.messages.push(format!("not applied: {e}"));
        }
        let action = spec.action.unwrap_or_default();
        match action {
            AuthorizationPolicyAction::Custom => {
                note.applied = false;
                note.messages.push(format!(
                    "CUSTOM needs ext_authz provider {:?} from meshConfig extensionProviders, which pilot does not support: as Istio does for a missing provider, what its rules match is denied",
                    spec.provider.as_ref().map(|p| p.name.as_str()).unwrap_or_default()
                ));
            }
            AuthorizationPolicyAction::Audit => note.messages.push(
                "AUDIT has no audit provider here: its RBAC LOG filter marks requests and changes no verdict".into(),
            ),
            _ => {}
        }
        let allow = action == AuthorizationPolicyAction::Allow;
        for (i, rule) in spec.rules.iter().enumerate() {
            for (tcp, chains) in [(false, "HTTP"), (true, "TCP")] {
                let mut skipped = Vec::new();
                match rules::policy(rule, ns, rules::Mode { tcp, allow }, &mut skipped) {
                    Err(e) => note
                        .messages
                        .push(format!("rule[{i}] dropped on {chains} chains: {e}")),
                    Ok(_) => note.messages.extend(
                        skipped
                            .into_iter()
                            .map(|s| format!("rule[{i}] on {chains} chains ignores {s}")),
                    ),
                }
            }
        }
        if !note.applied || !note.messages.is_empty() {
            out.push(note);
        }
    }
    out
}

#[cfg(test)]
mod tests;
