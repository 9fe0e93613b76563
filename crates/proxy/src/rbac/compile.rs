//! The RBAC filters' configs compiled: `envoy.extensions.filters.http.rbac.v3.RBAC`
//! ([`http_filter`]) and `envoy.extensions.filters.network.rbac.v3.RBAC`
//! ([`network_filter`]), with their `rules` (and, for HTTP and network,
//! `shadow_rules`). Refused by field path: `matcher`, `shadow_matcher`, the
//! rule and shadow stat prefixes, `track_per_rule_stats`, the network
//! filter's `CONTINUOUS` enforcement and `delay_deny`, `audit_logging_options`,
//! CEL conditions, and the permission/principal kinds `matcher`,
//! `uri_template`, `filter_state` and `custom`; metadata matchers on a
//! source other than the dynamic one.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    MetadataSource, Permission as PbPermission, Principal as PbPrincipal, Rbac as PbRbac,
    permission, principal, rbac,
};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as PbHttpRbac;
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::{
    Rbac as PbNetworkRbac, rbac as network_rbac,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{PathMatcher, path_matcher};
use prost::Message;

use super::{Action, Cidr, Permission, Policy, Principal, Rbac, metadata};
use crate::route::{StringMatch, compile_header_match, compile_string_match};

/// Type URL of the HTTP filter's config.
pub const HTTP_RBAC_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC";
/// Type URL of the network filter's config.
pub const NETWORK_RBAC_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";

/// A compiled HTTP RBAC filter.
#[derive(Debug)]
pub struct HttpRbac {
    /// Enforced rules (none: the filter allows everything, uncounted).
    pub rules: Option<Rbac>,
    /// Shadow rules: evaluated and counted only.
    pub shadow: Option<Rbac>,
}

/// A compiled network RBAC filter.
#[derive(Debug)]
pub struct NetworkRbac {
    /// `stat_prefix` (its counters are `PREFIX rbac.*`).
    pub stat_prefix: String,
    /// Enforced rules.
    pub rules: Option<Rbac>,
    /// Shadow rules: evaluated and counted only.
    pub shadow: Option<Rbac>,
}

type Result<T> = std::result::Result<T, Vec<String>>;

/// Compiles the HTTP filter's config (the `typed_config` value).
pub fn http_filter(bytes: &[u8]) -> Result<HttpRbac> {
    let f = PbHttpRbac::decode(bytes).map_err(|e| vec![format!("typed_config: {e}")])?;
    let mut errors = Vec::new();
    if f.matcher.is_some() {
        errors.push("matcher: not supported; use rules".to_string());
    }
    if f.shadow_matcher.is_some() {
        errors.push("shadow_matcher: not supported; use shadow_rules".to_string());
    }
    if !f.rules_stat_prefix.is_empty() {
        errors.push("rules_stat_prefix: not supported".to_string());
    }
    if !f.shadow_rules_stat_prefix.is_empty() {
        errors.push("shadow_rules_stat_prefix: not supported".to_string());
    }
    if f.track_per_rule_stats {
        errors.push("track_per_rule_stats: not supported".to_string());
    }
    let rules = optional(f.rules.as_ref(), "rules", &mut errors);
    let shadow = optional(f.shadow_rules.as_ref(), "shadow_rules", &mut errors);
    if errors.is_empty() {
        Ok(HttpRbac { rules, shadow })
    } else {
        Err(errors)
    }
}

/// Compiles the network filter's config (the `typed_config` value).
pub fn network_filter(bytes: &[u8]) -> Result<NetworkRbac> {
    let f = PbNetworkRbac::decode(bytes).map_err(|e| vec![format!("typed_config: {e}")])?;
    let mut errors = Vec::new();
    if f.stat_prefix.is_empty() {
        errors.push("stat_prefix: required".to_string());
    }
    if f.matcher.is_some() {
        errors.push("matcher: not supported; use rules".to_string());
    }
    if f.shadow_matcher.is_some() {
        errors.push("shadow_matcher: not supported; use shadow_rules".to_string());
    }
    if !f.shadow_rules_stat_prefix.is_empty() {
        errors.push("shadow_rules_stat_prefix: not supported".to_string());
    }
    if f.enforcement_type != network_rbac::EnforcementType::OneTimeOnFirstByte as i32 {
        errors.push(
            "enforcement_type: only ONE_TIME_ON_FIRST_BYTE (the default) is supported".to_string(),
        );
    }
    if f.delay_deny.is_some() {
        errors.push("delay_deny: not supported".to_string());
    }
    let rules = optional(f.rules.as_ref(), "rules", &mut errors);
    let shadow = optional(f.shadow_rules.as_ref(), "shadow_rules", &mut errors);
    if errors.is_empty() {
        Ok(NetworkRbac {
            stat_prefix: f.stat_prefix,
            rules,
            shadow,
        })
    } else {
        Err(errors)
    }
}

fn optional(r: Option<&PbRbac>, at: &str, errors: &mut Vec<String>) -> Option<Rbac> {
    match r.map(|r| rules(at, r)) {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            errors.extend(e);
            None
        }
        None => None,
    }
}

/// Compiles `envoy.config.rbac.v3.RBAC` found at `at`.
pub fn rules(at: &str, r: &PbRbac) -> Result<Rbac> {
    let mut errors = Vec::new();
    let action = match rbac::Action::try_from(r.action) {
        Ok(rbac::Action::Allow) => Action::Allow,
        Ok(rbac::Action::Deny) => Action::Deny,
        Ok(rbac::Action::Log) => Action::Log,
        Err(_) => {
            errors.push(format!("{at}.action: unknown action {}", r.action));
            Action::Allow
        }
    };
    if r.audit_logging_options.is_some() {
        errors.push(format!("{at}.audit_logging_options: not supported"));
    }
    // Sorted by name: the evaluation order is deterministic.
    let mut names: Vec<&String> = r.policies.keys().collect();
    names.sort();
    let mut policies = Vec::new();
    for name in names {
        let p = &r.policies[name];
        let here = format!("{at}.policies[{name:?}]");
        if p.condition.is_some() || p.checked_condition.is_some() || p.cel_config.is_some() {
            errors.push(format!(
                "{here}.condition: CEL conditions are not supported"
            ));
        }
        if p.permissions.is_empty() {
            errors.push(format!("{here}.permissions: at least one is required"));
        }
        if p.principals.is_empty() {
            errors.push(format!("{here}.principals: at least one is required"));
        }
        let permissions = p
            .permissions
            .iter()
            .enumerate()
            .filter_map(|(i, x)| {
                keep(
                    permission(&format!("{here}.permissions[{i}]"), x),
                    &mut errors,
                )
            })
            .collect();
        let principals = p
            .principals
            .iter()
            .enumerate()
            .filter_map(|(i, x)| {
                keep(
                    principal(&format!("{here}.principals[{i}]"), x),
                    &mut errors,
                )
            })
            .collect();
        policies.push((
            name.clone(),
            Policy {
                permissions,
                principals,
            },
        ));
    }
    if errors.is_empty() {
        Ok(Rbac { action, policies })
    } else {
        Err(errors)
    }
}

fn keep<T>(r: Result<T>, errors: &mut Vec<String>) -> Option<T> {
    r.map_err(|e| errors.extend(e)).ok()
}

fn set<P, T>(at: &str, items: &[P], one: impl Fn(&str, &P) -> Result<T>) -> Result<Vec<T>> {
    if items.is_empty() {
        return Err(vec![format!("{at}: at least one is required")]);
    }
    let mut errors = Vec::new();
    let out: Vec<T> = items
        .iter()
        .enumerate()
        .filter_map(|(i, x)| keep(one(&format!("{at}[{i}]"), x), &mut errors))
        .collect();
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn any(at: &str, b: bool) -> Result<()> {
    if b {
        Ok(())
    } else {
        Err(vec![format!("{at}: must be true")])
    }
}

#[allow(deprecated)]
fn permission(at: &str, p: &PbPermission) -> Result<Permission> {
    use permission::Rule as R;
    Ok(match &p.rule {
        Some(R::Any(b)) => {
            any(&format!("{at}.any"), *b)?;
            Permission::Any
        }
        Some(R::AndRules(s)) => {
            Permission::And(set(&format!("{at}.and_rules.rules"), &s.rules, permission)?)
        }
        Some(R::OrRules(s)) => {
            Permission::Or(set(&format!("{at}.or_rules.rules"), &s.rules, permission)?)
        }
        Some(R::NotRule(n)) => Permission::Not(Box::new(permission(&format!("{at}.not_rule"), n)?)),
        Some(R::Header(h)) => Permission::Header(compile_header_match(&format!("{at}.header"), h)?),
        Some(R::UrlPath(m)) => Permission::UrlPath(path(&format!("{at}.url_path"), m)?),
        Some(R::DestinationIp(c)) => {
            Permission::DestinationIp(cidr(&format!("{at}.destination_ip"), c)?)
        }
        Some(R::DestinationPort(port)) => {
            if *port > 65535 {
                return Err(vec![format!("{at}.destination_port: {port} is not a port")]);
            }
            Permission::DestinationPort(*port)
        }
        Some(R::DestinationPortRange(r)) => Permission::DestinationPortRange(r.start, r.end),
        Some(R::RequestedServerName(m)) => Permission::RequestedServerName(compile_string_match(
            &format!("{at}.requested_server_name"),
            m,
        )?),
        Some(R::Metadata(m)) => {
            Permission::Metadata(metadata::compile(&format!("{at}.metadata"), m)?)
        }
        Some(R::SourcedMetadata(s)) => {
            Permission::Metadata(sourced(&format!("{at}.sourced_metadata"), s)?)
        }
        Some(R::Matcher(_)) => return Err(unsupported(at, "matcher")),
        Some(R::UriTemplate(_)) => return Err(unsupported(at, "uri_template")),
        None => return Err(vec![format!("{at}: no rule")]),
    })
}

#[allow(deprecated)]
fn principal(at: &str, p: &PbPrincipal) -> Result<Principal> {
    use principal::Identifier as I;
    Ok(match &p.identifier {
        Some(I::Any(b)) => {
            any(&format!("{at}.any"), *b)?;
            Principal::Any
        }
        Some(I::AndIds(s)) => Principal::And(set(&format!("{at}.and_ids.ids"), &s.ids, principal)?),
        Some(I::OrIds(s)) => Principal::Or(set(&format!("{at}.or_ids.ids"), &s.ids, principal)?),
        Some(I::NotId(n)) => Principal::Not(Box::new(principal(&format!("{at}.not_id"), n)?)),
        Some(I::Authenticated(a)) => Principal::Authenticated(match &a.principal_name {
            Some(m) => Some(compile_string_match(
                &format!("{at}.authenticated.principal_name"),
                m,
            )?),
            None => None,
        }),
        // `source_ip` is the connection's peer, as `direct_remote_ip`.
        Some(I::SourceIp(c)) => Principal::DirectRemoteIp(cidr(&format!("{at}.source_ip"), c)?),
        Some(I::DirectRemoteIp(c)) => {
            Principal::DirectRemoteIp(cidr(&format!("{at}.direct_remote_ip"), c)?)
        }
        Some(I::RemoteIp(c)) => Principal::RemoteIp(cidr(&format!("{at}.remote_ip"), c)?),
        Some(I::Header(h)) => Principal::Header(compile_header_match(&format!("{at}.header"), h)?),
        Some(I::UrlPath(m)) => Principal::UrlPath(path(&format!("{at}.url_path"), m)?),
        Some(I::Metadata(m)) => {
            Principal::Metadata(metadata::compile(&format!("{at}.metadata"), m)?)
        }
        Some(I::SourcedMetadata(s)) => {
            Principal::Metadata(sourced(&format!("{at}.sourced_metadata"), s)?)
        }
        Some(I::FilterState(_)) => return Err(unsupported(at, "filter_state")),
        Some(I::Custom(_)) => return Err(unsupported(at, "custom")),
        None => return Err(vec![format!("{at}: no identifier")]),
    })
}

fn unsupported(at: &str, field: &str) -> Vec<String> {
    vec![format!("{at}.{field}: not supported")]
}

fn sourced(
    at: &str,
    s: &envoy_types::pb::envoy::config::rbac::v3::SourcedMetadata,
) -> Result<metadata::MetadataMatch> {
    if s.metadata_source != MetadataSource::Dynamic as i32 {
        return Err(vec![format!(
            "{at}.metadata_source: only DYNAMIC (the request's dynamic metadata) is supported"
        )]);
    }
    match &s.metadata_matcher {
        Some(m) => metadata::compile(&format!("{at}.metadata_matcher"), m),
        None => Err(vec![format!("{at}.metadata_matcher: missing")]),
    }
}

fn path(at: &str, m: &PathMatcher) -> Result<StringMatch> {
    match &m.rule {
        Some(path_matcher::Rule::Path(s)) => compile_string_match(&format!("{at}.path"), s),
        None => Err(vec![format!("{at}: no rule")]),
    }
}

fn cidr(at: &str, c: &CidrRange) -> Result<Cidr> {
    let ip: IpAddr = c.address_prefix.parse().map_err(|_| {
        vec![format!(
            "{at}.address_prefix: {:?} is not an IP address",
            c.address_prefix
        )]
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = c.prefix_len.map_or(0, |v| v.value);
    if len > max {
        return Err(vec![format!("{at}.prefix_len: {len} > {max}")]);
    }
    Ok(Cidr { ip, len: len as u8 })
}
