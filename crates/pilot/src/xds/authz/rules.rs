//! One `AuthorizationPolicy` rule as one Envoy RBAC [`Policy`], the way
//! Istio's `authz/model` builds it.
//!
//! A rule's `from` entries become the policy's principals (OR), each the AND of
//! its source fields; its `to` entries become the permissions (OR), each the
//! AND of its operation fields; `when` conditions join every principal
//! (source-side keys: `source.*`, `remote.ip`, `request.headers[…]`,
//! `request.auth.*`) or every permission (`destination.*`,
//! `connection.sni`). A field with values is an OR of their matchers; a `not`
//! field is the negation of such an OR. An absent side matches anything.
//!
//! Values use Istio's `*` forms: `*` alone means "present, non-empty";
//! `*x` a suffix and `x*` a prefix (principals get the `spiffe://` prefix,
//! namespaces become a regex on the URI SAN, `.*/ns/NS/.*`).
//!
//! A value that cannot apply — an HTTP-only field (hosts, methods, paths,
//! request principals, headers, JWT claims) in a TCP filter, an unsupported
//! condition key, an invalid IP or port — is an [`Unsupported`] error. As in
//! Istio, the caller decides by action ([`Mode`]): an ALLOW rule with such a
//! value is dropped whole (it allows less), a DENY or AUDIT rule ignores that
//! value (it denies more).

use common::istio::security::{Condition, Operation, Rule, Source};
use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    MetadataSource, Permission, Policy, Principal, SourcedMetadata, permission, principal,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, PathMatcher, StringMatcher, ValueMatcher, list_matcher,
    metadata_matcher, path_matcher, string_matcher::MatchPattern, value_matcher,
};

use crate::xds::listener::host_range;
use crate::xds::route::util::regex_matcher;

/// The prefix of SPIFFE URI SANs (Istio's principals omit it).
pub const SPIFFE_PREFIX: &str = "spiffe://";
/// The filter whose dynamic metadata carries a validated JWT's payload (under
/// [`JWT_PAYLOAD_KEY`]), as `jwt_authn` writes it.
pub const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
/// The metadata key `jwt_authn` writes the payload under (`payload_in_metadata`).
pub const JWT_PAYLOAD_KEY: &str = "payload";

/// A value the filter cannot express, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// What the generated filter sees, and how errors are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    /// A network (TCP) RBAC filter: HTTP-only fields cannot apply.
    pub tcp: bool,
    /// An ALLOW policy: an error drops the rule; otherwise (DENY, AUDIT,
    /// CUSTOM-as-DENY) the erroring value is skipped.
    pub allow: bool,
}

type Result<T, E = Unsupported> = std::result::Result<T, E>;

/// The RBAC policy of `rule` (of a policy in `namespace`), or why the rule
/// cannot be generated (ALLOW only). `skipped` collects the values ignored in
/// DENY/AUDIT mode.
pub fn policy(
    rule: &Rule,
    namespace: &str,
    mode: Mode,
    skipped: &mut Vec<String>,
) -> Result<Policy> {
    let mut ctx = Ctx {
        mode,
        skipped,
        namespace,
    };
    let sources: Vec<Option<&Source>> = if rule.from.is_empty() {
        vec![None]
    } else {
        rule.from.iter().map(|f| f.source.as_ref()).collect()
    };
    let operations: Vec<Option<&Operation>> = if rule.to.is_empty() {
        vec![None]
    } else {
        rule.to.iter().map(|t| t.operation.as_ref()).collect()
    };
    let mut principals = Vec::new();
    for source in sources {
        let mut ids = match source {
            Some(s) => ctx.source(s)?,
            None => Vec::new(),
        };
        for c in &rule.when {
            if is_source_key(&c.key) {
                ids.extend(ctx.condition_ids(c)?);
            }
        }
        if ids.is_empty() {
            ids.push(any_id());
        }
        principals.push(and_ids(ids));
    }
    let mut permissions = Vec::new();
    for op in operations {
        let mut rules = match op {
            Some(o) => ctx.operation(o)?,
            None => Vec::new(),
        };
        for c in &rule.when {
            if !is_source_key(&c.key) {
                rules.extend(ctx.condition_rules(c)?);
            }
        }
        if rules.is_empty() {
            rules.push(Permission {
                rule: Some(permission::Rule::Any(true)),
            });
        }
        permissions.push(Permission {
            rule: Some(permission::Rule::AndRules(permission::Set { rules })),
        });
    }
    Ok(Policy {
        permissions,
        principals,
        ..Default::default()
    })
}

struct Ctx<'a> {
    mode: Mode,
    skipped: &'a mut Vec<String>,
    namespace: &'a str,
}

/// How one kind of value becomes a matcher.
type Make<'a, T> = dyn Fn(&str) -> Result<T> + 'a;

impl Ctx<'_> {
    /// The OR of `values` (and the NOT of the OR of `not_values`) as AND
    /// members; an error propagates (ALLOW) or skips the value.
    fn field<T>(
        &mut self,
        what: &str,
        values: &[String],
        not_values: &[String],
        make: &Make<'_, T>,
        or: fn(Vec<T>) -> T,
        not: fn(T) -> T,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for (list, negate) in [(values, false), (not_values, true)] {
            if list.is_empty() {
                continue;
            }
            let mut members = Vec::new();
            for v in list {
                match make(v) {
                    Ok(m) => members.push(m),
                    Err(e) if self.mode.allow => return Err(e),
                    Err(e) => self.skipped.push(format!("{what} {v:?}: {e}")),
                }
            }
            if members.is_empty() {
                continue;
            }
            let m = or(members);
            out.push(if negate { not(m) } else { m });
        }
        Ok(out)
    }

    fn ids(
        &mut self,
        what: &str,
        values: &[String],
        not_values: &[String],
        make: &Make<'_, Principal>,
    ) -> Result<Vec<Principal>> {
        self.field(what, values, not_values, make, or_ids, not_id)
    }

    fn rules(
        &mut self,
        what: &str,
        values: &[String],
        not_values: &[String],
        make: &Make<'_, Permission>,
    ) -> Result<Vec<Permission>> {
        self.field(what, values, not_values, make, or_rules, not_rule)
    }

    fn source(&mut self, s: &Source) -> Result<Vec<Principal>> {
        let tcp = self.mode.tcp;
        let ns = self.namespace.to_string();
        let mut out = Vec::new();
        out.extend(
            self.ids("principals", &s.principals, &s.not_principals, &|v| {
                Ok(principal_id(v))
            })?,
        );
        out.extend(self.ids(
            "requestPrincipals",
            &s.request_principals,
            &s.not_request_principals,
            &|v| http_only(tcp, "requestPrincipals").map(|_| request_principal(v)),
        )?);
        out.extend(
            self.ids("namespaces", &s.namespaces, &s.not_namespaces, &|v| {
                Ok(namespace_id(v))
            })?,
        );
        out.extend(self.ids(
            "serviceAccounts",
            &s.service_accounts,
            &s.not_service_accounts,
            &move |v| Ok(service_account_id(v, &ns)),
        )?);
        out.extend(self.ids("ipBlocks", &s.ip_blocks, &s.not_ip_blocks, &|v| {
            cidr(v).map(|c| id(principal::Identifier::DirectRemoteIp(c)))
        })?);
        out.extend(self.ids(
            "remoteIpBlocks",
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            &|v| cidr(v).map(|c| id(principal::Identifier::RemoteIp(c))),
        )?);
        Ok(out)
    }

    fn operation(&mut self, o: &Operation) -> Result<Vec<Permission>> {
        let tcp = self.mode.tcp;
        let mut out = Vec::new();
        out.extend(self.rules("hosts", &o.hosts, &o.not_hosts, &|v| {
            http_only(tcp, "hosts")?;
            Ok(header_rule(":authority", host_matcher(v)))
        })?);
        out.extend(self.rules("methods", &o.methods, &o.not_methods, &|v| {
            http_only(tcp, "methods")?;
            Ok(header_rule(":method", header_value(v)))
        })?);
        out.extend(self.rules("paths", &o.paths, &o.not_paths, &|v| {
            http_only(tcp, "paths")?;
            path_rule(v)
        })?);
        out.extend(self.rules("ports", &o.ports, &o.not_ports, &|v| {
            port(v).map(|p| rule(permission::Rule::DestinationPort(p)))
        })?);
        Ok(out)
    }

    fn condition_ids(&mut self, c: &Condition) -> Result<Vec<Principal>> {
        let tcp = self.mode.tcp;
        let key = c.key.as_str();
        let make: Box<Make<'_, Principal>> = match key {
            "source.ip" => {
                Box::new(|v| cidr(v).map(|c| id(principal::Identifier::DirectRemoteIp(c))))
            }
            "remote.ip" => Box::new(|v| cidr(v).map(|c| id(principal::Identifier::RemoteIp(c)))),
            "source.namespace" => Box::new(|v| Ok(namespace_id(v))),
            "source.principal" => Box::new(|v| Ok(principal_id(v))),
            "request.auth.principal" => Box::new(move |v| {
                http_only(tcp, key)?;
                Ok(request_principal(v))
            }),
            "request.auth.audiences" => Box::new(move |v| {
                http_only(tcp, key)?;
                Ok(claim_id(&["aud".to_string()], v))
            }),
            "request.auth.presenter" => Box::new(move |v| {
                http_only(tcp, key)?;
                Ok(claim_id(&["azp".to_string()], v))
            }),
            _ => {
                if let Some(name) = bracketed(key, "request.headers") {
                    let name = name.to_string();
                    Box::new(move |v| {
                        http_only(tcp, key)?;
                        Ok(id(principal::Identifier::Header(header(
                            &name,
                            header_value(v),
                        ))))
                    })
                } else if let Some(path) = claim_path(key) {
                    Box::new(move |v| {
                        http_only(tcp, key)?;
                        Ok(claim_id(&path, v))
                    })
                } else {
                    Box::new(move |_| Err(unsupported_key(key)))
                }
            }
        };
        self.ids(key, &c.values, &c.not_values, make.as_ref())
    }

    fn condition_rules(&mut self, c: &Condition) -> Result<Vec<Permission>> {
        let key = c.key.as_str();
        let make: Box<Make<'_, Permission>> = match key {
            "destination.ip" => {
                Box::new(|v| cidr(v).map(|c| rule(permission::Rule::DestinationIp(c))))
            }
            "destination.port" => {
                Box::new(|v| port(v).map(|p| rule(permission::Rule::DestinationPort(p))))
            }
            "connection.sni" => Box::new(|v| {
                Ok(rule(permission::Rule::RequestedServerName(string_match(
                    v, "",
                ))))
            }),
            _ => Box::new(move |_| Err(unsupported_key(key))),
        };
        self.rules(key, &c.values, &c.not_values, make.as_ref())
    }
}

fn unsupported_key(key: &str) -> Unsupported {
    Unsupported(format!(
        "condition key {key:?} is not supported by pilot (supported: source.ip, remote.ip, source.namespace, source.principal, request.headers[…], request.auth.principal/audiences/presenter/claims[…], destination.ip, destination.port, connection.sni)"
    ))
}

fn http_only(tcp: bool, field: &str) -> Result<()> {
    if tcp {
        return Err(Unsupported(format!(
            "{field} is HTTP-only and cannot apply to TCP traffic"
        )));
    }
    Ok(())
}

/// Whether a `when` key is about the caller (principal side) rather than
/// the destination (permission side).
fn is_source_key(key: &str) -> bool {
    !(key.starts_with("destination.")
        || key.starts_with("connection.")
        || key.starts_with("experimental."))
}

/// `NAME` of `prefix[NAME]`.
fn bracketed<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')
        .filter(|n| !n.is_empty() && !n.contains(['[', ']']))
}

/// `[a, b]` of `request.auth.claims[a][b]`.
fn claim_path(key: &str) -> Option<Vec<String>> {
    let rest = key.strip_prefix("request.auth.claims")?;
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
    let parts: Vec<String> = inner.split("][").map(str::to_string).collect();
    (!parts.iter().any(|p| p.is_empty() || p.contains(['[', ']']))).then_some(parts)
}

/// Istio's `StringMatcherWithPrefix`: `*` is "non-empty" (`.+`, the prefix
/// ignored), `*x` a suffix (a regex when there is a prefix), `x*` a prefix.
pub fn string_match(v: &str, prefix: &str) -> StringMatcher {
    let pattern = if v == "*" {
        MatchPattern::SafeRegex(regex_matcher(".+"))
    } else if let Some(suffix) = v.strip_prefix('*') {
        if prefix.is_empty() {
            MatchPattern::Suffix(suffix.to_string())
        } else {
            MatchPattern::SafeRegex(regex_matcher(&format!(
                "{}.*{}",
                regex_escape(prefix),
                regex_escape(suffix)
            )))
        }
    } else if let Some(p) = v.strip_suffix('*') {
        MatchPattern::Prefix(format!("{prefix}{p}"))
    } else {
        MatchPattern::Exact(format!("{prefix}{v}"))
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    }
}

/// RE2 escaping of a literal.
pub fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn id(i: principal::Identifier) -> Principal {
    Principal {
        identifier: Some(i),
    }
}

fn rule(r: permission::Rule) -> Permission {
    Permission { rule: Some(r) }
}

fn any_id() -> Principal {
    id(principal::Identifier::Any(true))
}

fn and_ids(ids: Vec<Principal>) -> Principal {
    id(principal::Identifier::AndIds(principal::Set { ids }))
}

fn or_ids(ids: Vec<Principal>) -> Principal {
    id(principal::Identifier::OrIds(principal::Set { ids }))
}

fn not_id(p: Principal) -> Principal {
    id(principal::Identifier::NotId(Box::new(p)))
}

fn or_rules(rules: Vec<Permission>) -> Permission {
    rule(permission::Rule::OrRules(permission::Set { rules }))
}

fn not_rule(p: Permission) -> Permission {
    rule(permission::Rule::NotRule(Box::new(p)))
}

fn authenticated(m: StringMatcher) -> Principal {
    id(principal::Identifier::Authenticated(
        principal::Authenticated {
            principal_name: Some(m),
        },
    ))
}

/// `principals`: the peer certificate's URI SAN, `spiffe://` + the value.
fn principal_id(v: &str) -> Principal {
    authenticated(string_match(v, SPIFFE_PREFIX))
}

/// `namespaces`: a regex on the URI SAN, `.*/ns/NS/.*` (`*` as `.*`).
fn namespace_id(v: &str) -> Principal {
    let ns = v
        .split('*')
        .map(regex_escape)
        .collect::<Vec<_>>()
        .join(".*");
    authenticated(StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(regex_matcher(&format!(
            ".*/ns/{ns}/.*"
        )))),
        ignore_case: false,
    })
}

/// `serviceAccounts` (`ns/sa`, or `sa` in the policy's namespace): the URI
/// SAN ends with `/ns/NS/sa/SA`.
fn service_account_id(v: &str, policy_ns: &str) -> Principal {
    let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
    authenticated(StringMatcher {
        match_pattern: Some(MatchPattern::Suffix(format!("/ns/{ns}/sa/{sa}"))),
        ignore_case: false,
    })
}

fn metadata(path: &[&str], m: StringMatcher) -> MetadataMatcher {
    MetadataMatcher {
        filter: JWT_FILTER.to_string(),
        path: path
            .iter()
            .map(|k| metadata_matcher::PathSegment {
                segment: Some(metadata_matcher::path_segment::Segment::Key(k.to_string())),
            })
            .collect(),
        value: Some(ValueMatcher {
            match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
        }),
        ..Default::default()
    }
}

/// `requestPrincipals` / `request.auth.principal` (`ISS/SUB`): the validated
/// JWT's `iss` and `sub` in `jwt_authn`'s metadata (Istio's form for stock
/// Envoy, without `istio_authn`). The issuer is what precedes the last `/`;
/// without one, `x*` is an issuer prefix, `*x` a subject suffix, else the
/// issuer with an empty subject.
fn request_principal(v: &str) -> Principal {
    let non_empty = || string_match("*", "");
    let (iss, sub) = if v == "*" {
        (non_empty(), non_empty())
    } else if let Some((iss, sub)) = v.rsplit_once('/') {
        (string_match(iss, ""), string_match(sub, ""))
    } else if v.ends_with('*') {
        (string_match(v, ""), non_empty())
    } else if v.starts_with('*') {
        (non_empty(), string_match(v, ""))
    } else {
        (exact(v), exact(""))
    };
    and_ids(vec![
        metadata_id(metadata(&[JWT_PAYLOAD_KEY, "iss"], iss)),
        metadata_id(metadata(&[JWT_PAYLOAD_KEY, "sub"], sub)),
    ])
}

/// `request.auth.claims[a][b]`: the claim as a string, or a list holding it.
fn claim_id(path: &[String], v: &str) -> Principal {
    let mut full: Vec<&str> = vec![JWT_PAYLOAD_KEY];
    full.extend(path.iter().map(String::as_str));
    let string = metadata(&full, string_match(v, ""));
    let mut list = string.clone();
    list.value = Some(ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(ValueMatcher {
                    match_pattern: Some(value_matcher::MatchPattern::StringMatch(string_match(
                        v, "",
                    ))),
                }))),
            },
        ))),
    });
    or_ids(vec![metadata_id(string), metadata_id(list)])
}

/// A principal on dynamic metadata: `sourced_metadata` from the dynamic
/// source (Istio still writes the `metadata` field, deprecated in Envoy 1.40
/// with the same meaning).
fn metadata_id(m: MetadataMatcher) -> Principal {
    id(principal::Identifier::SourcedMetadata(SourcedMetadata {
        metadata_matcher: Some(m),
        metadata_source: MetadataSource::Dynamic as i32,
    }))
}

fn exact(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(v.to_string())),
        ignore_case: false,
    }
}

/// A header value matcher: `*` is "present", else [`string_match`].
fn header_value(v: &str) -> header_matcher::HeaderMatchSpecifier {
    if v == "*" {
        header_matcher::HeaderMatchSpecifier::PresentMatch(true)
    } else {
        header_matcher::HeaderMatchSpecifier::StringMatch(string_match(v, ""))
    }
}

/// `hosts`: `:authority`, case-insensitive.
fn host_matcher(v: &str) -> header_matcher::HeaderMatchSpecifier {
    match header_value(v) {
        header_matcher::HeaderMatchSpecifier::StringMatch(mut m) => {
            m.ignore_case = true;
            header_matcher::HeaderMatchSpecifier::StringMatch(m)
        }
        other => other,
    }
}

fn header(name: &str, spec: header_matcher::HeaderMatchSpecifier) -> HeaderMatcher {
    HeaderMatcher {
        name: name.to_string(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

fn header_rule(name: &str, spec: header_matcher::HeaderMatchSpecifier) -> Permission {
    rule(permission::Rule::Header(header(name, spec)))
}

/// `paths`: the path without query, with Istio's `*` forms; path templates
/// (`{*}`, `{**}`) are not supported.
fn path_rule(v: &str) -> Result<Permission> {
    if v.contains('{') {
        return Err(Unsupported(format!(
            "path template {v:?} is not supported by pilot"
        )));
    }
    Ok(rule(permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(string_match(v, ""))),
    })))
}

fn cidr(v: &str) -> Result<CidrRange> {
    host_range(v).ok_or_else(|| Unsupported(format!("{v:?} is not an IP address or CIDR block")))
}

fn port(v: &str) -> Result<u32> {
    v.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .map(u32::from)
        .ok_or_else(|| Unsupported(format!("{v:?} is not a port number")))
}
