//! Checks shared by the networking kinds, written to Istio's own definitions where
//! they differ from the general ones in [`super::super::checks`]: Istio's wildcard
//! domains and FQDNs (upper case allowed, all-numeric top-level label refused),
//! millisecond durations, port protocols, header names and values, `exportTo`,
//! gateway references and the two workload selector flavours.

use std::collections::{BTreeMap, BTreeSet};

use common::istio::networking::{HeaderOperations, Headers, StringMatch, WorkloadSelector};
use common::istio::types::{Duration, Percent};

use super::super::checks;
use super::super::field::Field;

/// Like [`checks::istio_duration`], but `0s` is allowed (it disables the timeout).
pub(super) fn duration_or_zero(f: &mut Field<'_>, d: &Duration) -> bool {
    d.as_nanos() == 0 || checks::istio_duration(f, d)
}

pub(super) use super::super::checks::{
    fqdn_problem, is_dns1123_label, is_ip, wildcard_domain_problem,
};

/// Istio's `ValidateWildcardDomainForVirtualServiceBoundToGateway`: also allows the
/// SNI names AUTO_PASSTHROUGH generates (`outbound_.80_._.reviews.default.svc`).
pub(super) fn gateway_domain_problem(sni: bool, name: &str) -> Option<String> {
    if sni && name.starts_with("outbound_") {
        let parts: Vec<&str> = name.split('_').collect();
        let ok = parts.len() >= 4
            && parts[1]
                .trim_matches('.')
                .starts_with(|c: char| c.is_ascii_digit())
            && parts[3]
                .trim_matches('.')
                .starts_with(|c: char| c.is_ascii_alphabetic());
        return (!ok).then(|| {
            "an AUTO_PASSTHROUGH SNI name must look like outbound_.<PORT>_.<SUBSET>_.<HOSTNAME>"
                .into()
        });
    }
    wildcard_domain_problem(name)
}

/// Istio's `ValidateUnixAddress` on the path after `unix://`.
pub(super) fn unix_address(f: &mut Field<'_>, path: &str) -> bool {
    if path.is_empty() {
        f.error("the unix:// address has no path; write unix:///absolute/path or unix://@abstract");
        return false;
    }
    if path.starts_with('@') {
        return true;
    }
    if !path.starts_with('/') || path.ends_with('/') {
        f.error(format!(
            "unix socket path {path:?} must be an absolute path to a file (unix:///var/run/app.sock)"
        ));
        return false;
    }
    true
}

/// A port protocol as Istio parses it (case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Tcp,
    Udp,
    Grpc,
    GrpcWeb,
    Http,
    HttpProxy,
    Http2,
    Https,
    Tls,
    Mongo,
    Redis,
    Mysql,
}

impl Protocol {
    pub(super) fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http" => Protocol::Http,
            "http_proxy" => Protocol::HttpProxy,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "tls" => Protocol::Tls,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    pub(super) fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::HttpProxy
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
        )
    }

    pub(super) fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }

    pub(super) fn is_tcp(self) -> bool {
        matches!(
            self,
            Protocol::Tcp
                | Protocol::Https
                | Protocol::Tls
                | Protocol::Mongo
                | Protocol::Redis
                | Protocol::Mysql
        )
    }
}

/// The protocols named in messages.
pub(super) const PROTOCOLS: &str =
    "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, UDP, MONGO, REDIS or MYSQL";

/// Istio's `ValidateProtocol`: empty (sniffed) or a known protocol.
pub(super) fn protocol(f: &mut Field<'_>, p: &str) -> bool {
    if p.is_empty() || Protocol::parse(p).is_some() {
        return true;
    }
    f.error(format!("unknown protocol {p:?}; use one of {PROTOCOLS}"));
    false
}

/// Istio's `ValidatePortName`: a DNS-1123 label.
pub(super) fn port_name(f: &mut Field<'_>, name: &str) -> bool {
    if name.is_empty() {
        f.error("is required: name the port, such as http or https-443");
        return false;
    }
    if !is_dns1123_label(name) {
        f.error(format!(
            "port name {name:?} is not valid: use 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
        ));
        return false;
    }
    true
}

/// A port number that Istio requires (0 means it was left out).
pub(super) fn port_number(f: &mut Field<'_>, n: u32) -> bool {
    if n == 0 {
        f.error("is required: set a port number from 1 to 65535");
        return false;
    }
    checks::port(f, n)
}

/// A subset name: a DNS-1123 label.
pub(super) fn subset_name(f: &mut Field<'_>, name: &str) -> bool {
    if name.is_empty() {
        f.error("is required: name the subset, such as v1");
        return false;
    }
    if !is_dns1123_label(name) {
        f.error(format!(
            "subset name {name:?} is not valid: use 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
        ));
        return false;
    }
    true
}

/// `exportTo` entries: `.`, `*`, a namespace, or (ServiceEntry only) `~`; no
/// duplicates; `*` and `~` alone.
pub(super) fn export_to(
    f: &mut Field<'_>,
    namespace: &str,
    list: &[String],
    service_entry: bool,
    dr_with_selector: bool,
) {
    let mut seen = BTreeSet::new();
    for (i, e) in list.iter().enumerate() {
        let mut fi = f.index(i);
        let key = if e == "." { namespace } else { e.as_str() };
        if !seen.insert(key.to_string()) {
            if key != e {
                fi.error(format!(
                    "duplicates another entry: \".\" is the resource's own namespace {namespace:?}"
                ));
            } else {
                fi.error(format!("duplicate entry {e:?}; list each namespace once"));
            }
            continue;
        }
        let ok = e == "." || e == "*" || (e == "~" && service_entry) || is_dns1123_label(e);
        if !ok {
            fi.error(format!(
                "{e:?} is not a valid exportTo entry; use \".\" (this namespace), \"*\" (all namespaces){} or a namespace name",
                if service_entry { ", \"~\" (no namespace)" } else { "" }
            ));
        }
    }
    if list.len() > 1 && list.iter().any(|e| e == "*") {
        f.error("\"*\" exports to every namespace, so it cannot be combined with other entries");
    }
    if list.len() > 1 && list.iter().any(|e| e == "~") {
        f.error("\"~\" exports to no namespace, so it cannot be combined with other entries");
    }
    if dr_with_selector && !list.is_empty() {
        if !seen.contains(namespace) {
            f.error("a DestinationRule with a workloadSelector can be exported only to its own namespace (\".\")");
        } else if seen.len() > 1 {
            f.error("a DestinationRule with a workloadSelector cannot be exported to several namespaces; use only \".\"");
        }
    }
}

/// `gateways` references: `mesh`, `name`, or `namespace/name`.
pub(super) fn gateway_names(f: &mut Field<'_>, names: &[String]) {
    for (i, g) in names.iter().enumerate() {
        let mut fi = f.index(i);
        match g.split_once('/') {
            None => {
                if g.contains('.') {
                    let parts: Vec<&str> = g.split('.').collect();
                    fi.warn(format!(
                        "{g:?} uses the legacy name.namespace form; prefer namespace/name: \"{}/{}\"",
                        parts[1], parts[0]
                    ));
                }
                if let Some(p) = fqdn_problem(g) {
                    fi.error(format!("gateway {g:?} is not a valid name: {p}"));
                }
            }
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    fi.error(format!(
                        "{g:?} has an empty namespace or name; write namespace/name, such as istio-system/bookinfo-gateway"
                    ));
                    continue;
                }
                if !is_dns1123_label(ns) {
                    fi.error(format!(
                        "namespace {ns:?} in {g:?} is not a valid namespace name (lower-case letters, digits and '-')"
                    ));
                }
                if !is_dns1123_label(name) {
                    fi.error(format!(
                        "gateway name {name:?} in {g:?} is not valid (lower-case letters, digits and '-', no dots)"
                    ));
                }
            }
        }
    }
}

/// The networking `workloadSelector` (`labels`): no empty keys or wildcards; an
/// empty selector is a warning because it selects every workload.
pub(super) fn alpha_selector(f: &mut Field<'_>, sel: Option<&WorkloadSelector>, kind: &str) {
    let Some(sel) = sel else { return };
    selector_labels(&mut f.at("labels"), &sel.labels);
    if sel.labels.is_empty() {
        f.warn(format!(
            "workloadSelector has no labels, so this {kind} applies to every workload in the namespace; add labels or remove the selector"
        ));
    }
}

/// The `type.v1beta1` selector (`matchLabels`), as DestinationRule and ProxyConfig use.
pub(super) fn beta_selector(
    f: &mut Field<'_>,
    sel: Option<&common::istio::types::WorkloadSelector>,
) {
    let Some(sel) = sel else { return };
    selector_labels(&mut f.at("matchLabels"), &sel.match_labels);
    if sel.match_labels.is_empty() {
        f.warn("selector has no matchLabels, so it selects every workload in the namespace; add labels or remove the selector");
    }
}

fn selector_labels(f: &mut Field<'_>, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        if k.is_empty() {
            f.key(k)
                .error("an empty label key cannot select anything; remove it");
        } else if k.contains('*') || v.contains('*') {
            f.key(k).error(format!(
                "wildcards are not supported in selectors ({k}={v}); name the label value exactly"
            ));
        }
    }
    checks::labels(f, labels);
}

/// Istio's header name rule for matches: `[-_A-Za-z0-9]+`, or a JWT claim
/// (`@request.auth.claims.group`) where `allow_claim` is set.
pub(super) fn header_match_name(f: &mut Field<'_>, name: &str, allow_claim: bool) -> bool {
    if allow_claim && is_jwt_claim(name) {
        return true;
    }
    if name.is_empty() {
        f.error("header name cannot be empty");
        return false;
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        f.error(format!(
            "{name:?} is not a valid header name; use letters, digits, '-' and '_' only"
        ));
        return false;
    }
    true
}

/// Whether a header key is Istio's JWT claim routing form.
pub(super) fn is_jwt_claim(name: &str) -> bool {
    name.strip_prefix("@request.auth.claims")
        .is_some_and(|rest| (rest.starts_with('.') && rest.len() > 1) || rest.starts_with('['))
}

/// Istio's `ValidateHTTPHeaderValue`: no control characters, and `%` only as `%%`
/// or around an Envoy variable (`%HOSTNAME%`).
pub(super) fn header_value(f: &mut Field<'_>, v: &str) -> bool {
    if v.chars().any(|c| c.is_control() && c != '\t') {
        f.error(format!(
            "header value {v:?} contains control characters; remove them"
        ));
        return false;
    }
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'%') {
            i += 2;
            continue;
        }
        let rest = &v[i + 1..];
        let ok = rest.find('%').is_some_and(|end| {
            let var = &rest[..end];
            var.starts_with(|c: char| c.is_ascii_uppercase())
        });
        if !ok {
            f.error(format!(
                "header value {v:?} has an unmatched '%'; write %% for a literal percent sign, or %VARIABLE% for an Envoy variable"
            ));
            return false;
        }
        i += 1 + rest.find('%').unwrap_or(0) + 1;
    }
    true
}

fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Header names that set or add request headers: `:authority`/`host` allowed,
/// other pseudo-headers refused.
fn request_set_name(f: &mut Field<'_>, name: &str) {
    if name.is_empty() {
        f.error("header name cannot be empty");
    } else if (name.starts_with(':') || name.eq_ignore_ascii_case("host"))
        && !is_authority_header(name)
    {
        f.error(format!(
            "{name:?} cannot be set: headers starting with ':' are managed by the proxy"
        ));
    }
}

/// Header names that remove request headers or touch response headers.
fn plain_operation_name(f: &mut Field<'_>, name: &str) {
    if name.is_empty() {
        f.error("header name cannot be empty");
    } else if name.eq_ignore_ascii_case("host") {
        f.error("the Host header cannot be changed here; use rewrite.authority instead");
    } else if name.starts_with(':') {
        f.error(format!(
            "{name:?} cannot be changed: headers starting with ':' are managed by the proxy"
        ));
    }
}

/// A `headers` block: request/response set, add and remove.
pub(super) fn headers(f: &mut Field<'_>, h: &Headers) {
    if let Some(req) = &h.request {
        operations(&mut f.at("request"), req, true);
    }
    if let Some(resp) = &h.response {
        operations(&mut f.at("response"), resp, false);
    }
}

fn operations(f: &mut Field<'_>, ops: &HeaderOperations, request: bool) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        let mut fm = f.at(field);
        for (k, v) in map {
            let mut fk = fm.key(k);
            if request {
                request_set_name(&mut fk, k);
            } else {
                plain_operation_name(&mut fk, k);
            }
            header_value(&mut fk, v);
        }
    }
    let mut fr = f.at("remove");
    for (i, k) in ops.remove.iter().enumerate() {
        plain_operation_name(&mut fr.index(i), k);
    }
}

/// A regex as Istio takes it: at most 1024 characters and valid RE2.
pub(super) fn regex(f: &mut Field<'_>, re: &str) -> bool {
    if re.len() > 1024 {
        f.error(format!(
            "regex is {} characters long; Istio allows at most 1024",
            re.len()
        ));
        return false;
    }
    checks::regex(f, re)
}

/// A `StringMatch`: at most one of exact/prefix/regex; `prefix` not empty unless
/// `allow_empty_prefix`; `regex` not empty and valid. An empty match is allowed
/// (for headers it means "present").
pub(super) fn string_match(f: &mut Field<'_>, m: &StringMatch, allow_empty_prefix: bool) {
    if !checks::at_most_one(
        f,
        &[
            ("exact", m.exact.is_some()),
            ("prefix", m.prefix.is_some()),
            ("regex", m.regex.is_some()),
        ],
    ) {
        return;
    }
    if m.prefix.as_deref() == Some("") && !allow_empty_prefix {
        f.at("prefix")
            .error("cannot be empty; remove the match to match any value");
    }
    if let Some(re) = &m.regex {
        let mut fr = f.at("regex");
        if re.is_empty() {
            fr.error("cannot be empty; write a regular expression or remove the match");
        } else {
            regex(&mut fr, re);
        }
    }
}

/// Istio's `validatePercentage`: 0, or between 0.0001 and 100.
pub(super) fn percentage(f: &mut Field<'_>, p: &Percent) -> bool {
    if !checks::percent(f, p) {
        return false;
    }
    if p.value > 0.0 && p.value < 0.0001 {
        f.at("value").error(format!(
            "percentage {} is too small; use 0 or at least 0.0001",
            p.value
        ));
        return false;
    }
    true
}

/// A percentage given as a plain integer (0 to 100).
pub(super) fn int_percent(f: &mut Field<'_>, v: i64) -> bool {
    if !(0..=100).contains(&v) {
        f.error(format!("must be between 0 and 100 (got {v})"));
        return false;
    }
    true
}

/// A counter or limit that must not be negative.
pub(super) fn non_negative(f: &mut Field<'_>, v: i64) -> bool {
    if v < 0 {
        f.error(format!("must be 0 or more (got {v})"));
        return false;
    }
    true
}
