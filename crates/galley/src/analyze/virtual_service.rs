//! VirtualService checks: where routes go and whether every rule can be reached.
//!
//! Destinations are resolved against the [`ServiceIndex`](super::ServiceIndex)
//! (IST0101 host, IST0112 ambiguous port) and subsets against DestinationRules
//! (IST0101 host+subset); delegates must exist (IST0101); VirtualServices bound to
//! the mesh must not share hosts (IST0109); match regexes must compile (IST0122);
//! and a rule shadowed by earlier ones is reported (IST0130, IST0131). Checks that
//! involve Gateways live in [`super::gateway`].

use std::collections::{HashMap, HashSet};

use common::istio::networking::{Destination, HttpMatchRequest, StringMatch, VirtualServiceSpec};
use common::path::Path;
use common::resource::Resource;

use super::service::{go_list, to_fqdn};
use super::{Analyzer, Report, Snapshot};
use crate::message::codes;

pub(super) fn analyzers() -> Vec<Box<dyn Analyzer>> {
    vec![
        Box::new(DestinationHostAnalyzer),
        Box::new(DestinationRuleAnalyzer),
        Box::new(DelegateAnalyzer),
        Box::new(ConflictingMeshGatewayHostsAnalyzer),
        Box::new(RegexAnalyzer),
        Box::new(UnreachableRulesAnalyzer),
    ]
}

/// A destination of a VirtualService with the path of its `host` field.
struct RouteDestination<'v> {
    destination: &'v Destination,
    /// The path of the `host` field.
    host_path: Path,
    /// Whether it is a mirror (messages then say "mirror host").
    mirror: bool,
}

/// Every route and mirror destination of `vs`, in Istio's order (tcp, tls, http,
/// then mirrors).
fn destinations(vs: &VirtualServiceSpec) -> Vec<RouteDestination<'_>> {
    let route = |section: &str, i: usize, j: usize, destination| RouteDestination {
        destination,
        host_path: Path::root("spec")
            .field(section)
            .index(i)
            .field("route")
            .index(j)
            .field("destination")
            .field("host"),
        mirror: false,
    };
    let mut out = Vec::new();
    for (i, r) in vs.tcp.iter().enumerate() {
        out.extend(
            r.route
                .iter()
                .enumerate()
                .map(|(j, d)| route("tcp", i, j, &d.destination)),
        );
    }
    for (i, r) in vs.tls.iter().enumerate() {
        out.extend(
            r.route
                .iter()
                .enumerate()
                .map(|(j, d)| route("tls", i, j, &d.destination)),
        );
    }
    for (i, r) in vs.http.iter().enumerate() {
        out.extend(
            r.route
                .iter()
                .enumerate()
                .map(|(j, d)| route("http", i, j, &d.destination)),
        );
    }
    for (i, r) in vs.http.iter().enumerate() {
        let http = Path::root("spec").field("http").index(i);
        if let Some(m) = &r.mirror {
            out.push(RouteDestination {
                destination: m,
                host_path: http.clone().field("mirror").field("host"),
                mirror: true,
            });
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            out.push(RouteDestination {
                destination: &m.destination,
                host_path: http
                    .clone()
                    .field("mirrors")
                    .index(j)
                    .field("destination")
                    .field("host"),
                mirror: true,
            });
        }
    }
    out
}

/// IST0101 for destination hosts missing from the registry; IST0112 when the
/// destination names no port and the service has several; IST0101 `host:port`
/// when the named port is not one of the service's.
struct DestinationHostAnalyzer;

impl Analyzer for DestinationHostAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.DestinationHostAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        for (r, vs) in snap.virtual_services() {
            let ns = snap.ns(r);
            for d in destinations(vs) {
                let host = d.destination.host.as_str();
                if host.is_empty() {
                    continue; // validation reports the missing host
                }
                let Some(svc) = snap.services().lookup(host, ns) else {
                    let what = if d.mirror { "mirror host" } else { "host" };
                    report.add(
                        codes::REFERENCED_RESOURCE_NOT_FOUND,
                        r,
                        Some(d.host_path),
                        format!("Referenced {what} not found: {host:?}"),
                    );
                    continue;
                };
                match d.destination.port.as_ref().and_then(|p| p.number) {
                    None if svc.ports.len() > 1 => report.add(
                        codes::VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
                        r,
                        Some(d.host_path),
                        format!(
                            "This VirtualService routes to a service {host:?} that exposes multiple ports {}. Specifying a port in the destination is required to disambiguate.",
                            go_list(&svc.port_numbers())
                        ),
                    ),
                    Some(port) if !svc.ports.is_empty() && !svc.ports.iter().any(|p| p.port == port) => {
                        let mut path = d.host_path;
                        path.pop();
                        report.add(
                            codes::REFERENCED_RESOURCE_NOT_FOUND,
                            r,
                            Some(path.field("port").field("number")),
                            format!("Referenced host:port not found: \"{host}:{port}\""),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The key a host is known by for subset lookups: its FQDN, with `name.namespace`
/// read as a Kubernetes service like [`ServiceIndex::lookup`](super::ServiceIndex::lookup) does.
pub(super) fn host_key(host: &str, ns: &str) -> String {
    if !host.starts_with('*') && host.matches('.').count() == 1 {
        format!("{host}.{}", super::service::DOMAIN_SUFFIX)
    } else {
        to_fqdn(host, ns)
    }
}

/// IST0101 for destinations naming a subset that no DestinationRule for the host
/// declares.
struct DestinationRuleAnalyzer;

impl Analyzer for DestinationRuleAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.DestinationRuleAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let mut subsets: HashSet<(String, &str)> = HashSet::new();
        for (r, dr) in snap.destination_rules() {
            let key = host_key(&dr.host, snap.ns(r));
            for s in &dr.subsets {
                subsets.insert((key.clone(), s.name.as_str()));
            }
        }
        for (r, vs) in snap.virtual_services() {
            let ns = snap.ns(r);
            for d in destinations(vs) {
                let Some(subset) = d.destination.subset.as_deref().filter(|s| !s.is_empty()) else {
                    continue;
                };
                let host = &d.destination.host;
                if subsets.contains(&(host_key(host, ns), subset)) {
                    continue;
                }
                let what = if d.mirror {
                    "mirror+subset"
                } else {
                    "host+subset"
                };
                let mut path = d.host_path;
                path.pop();
                report.add(
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    Some(path.field("subset")),
                    format!("Referenced {what} in destinationrule not found: \"{host}+{subset}\""),
                );
            }
        }
    }
}

/// IST0101 for HTTP routes that delegate to a VirtualService that does not exist.
struct DelegateAnalyzer;

impl Analyzer for DelegateAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.DelegateAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let known: HashSet<(&str, &str)> = snap
            .virtual_services()
            .map(|(r, _)| (snap.ns(r), r.name()))
            .collect();
        for (r, vs) in snap.virtual_services() {
            for (i, route) in vs.http.iter().enumerate() {
                let Some(delegate) = &route.delegate else {
                    continue;
                };
                let Some(name) = delegate.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let ns = delegate.namespace.as_deref().unwrap_or(snap.ns(r));
                if known.contains(&(ns, name)) {
                    continue;
                }
                let shown = match &delegate.namespace {
                    Some(ns) => format!("{ns}/{name}"),
                    None => name.to_string(),
                };
                report.add(
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    Some(
                        Path::root("spec")
                            .field("http")
                            .index(i)
                            .field("delegate")
                            .field("name"),
                    ),
                    format!("Referenced delegate not found: {shown:?}"),
                );
            }
        }
    }
}

/// IST0109: several VirtualServices bound to the mesh (no `gateways`, or `mesh`
/// among them) for the same host, visible in the same namespaces; which one wins
/// is undefined.
struct ConflictingMeshGatewayHostsAnalyzer;

impl Analyzer for ConflictingMeshGatewayHostsAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.ConflictingMeshGatewayHostsAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        // Scoped host (`scope/fqdn`) → VirtualServices, in input order.
        let mut groups: Vec<(String, Vec<&Resource>)> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        for (r, vs) in snap.virtual_services() {
            if !(vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")) {
                continue;
            }
            let ns = snap.ns(r);
            let mut scopes: Vec<String> = Vec::new();
            if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
                scopes.push("*".into());
            } else {
                for e in &vs.export_to {
                    let s = if e == "." { ns.to_string() } else { e.clone() };
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
            }
            for scope in &scopes {
                for h in &vs.hosts {
                    let key = format!("{scope}/{}", to_fqdn(h, ns));
                    match group_of.get(&key) {
                        Some(&g) => {
                            let list = &mut groups[g].1;
                            // The same VirtualService naming a host twice is no conflict.
                            if !list.iter().any(|o| std::ptr::eq(*o, r)) {
                                list.push(r);
                            }
                        }
                        None => {
                            group_of.insert(key.clone(), groups.len());
                            groups.push((key, vec![r]));
                        }
                    }
                }
            }
        }
        for (key, list) in groups.iter().filter(|(_, l)| l.len() > 1) {
            let names: Vec<String> = list
                .iter()
                .map(|r| format!("{}/{}", snap.ns(r), r.name()))
                .collect();
            for r in list {
                report.add(
                    codes::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
                    r,
                    Some(Path::root("metadata").field("name")),
                    format!(
                        "The VirtualServices {} associated with mesh gateway define the same host {key} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                        names.join(",")
                    ),
                );
            }
        }
    }
}

/// IST0122: regular expressions in HTTP matches and CORS origins that do not
/// compile. (Validation refuses them too; the analyzer reports them as Istio's
/// does, with the field they are in.)
struct RegexAnalyzer;

impl Analyzer for RegexAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.RegexAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        for (r, vs) in snap.virtual_services() {
            for (i, route) in vs.http.iter().enumerate() {
                let http = Path::root("spec").field("http").index(i);
                for (j, m) in route.r#match.iter().enumerate() {
                    let at = http.clone().field("match").index(j);
                    let fields = [
                        ("uri", &m.uri),
                        ("scheme", &m.scheme),
                        ("method", &m.method),
                        ("authority", &m.authority),
                    ];
                    for (name, sm) in fields {
                        if let Some(sm) = sm {
                            check_regex(report, r, name, sm, at.clone().field(name));
                        }
                    }
                    for (name, map) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
                        for (key, sm) in map {
                            check_regex(report, r, name, sm, at.clone().field(name).key(key));
                        }
                    }
                }
                if let Some(cors) = &route.cors_policy {
                    for (j, sm) in cors.allow_origins.iter().enumerate() {
                        let at = http
                            .clone()
                            .field("corsPolicy")
                            .field("allowOrigins")
                            .index(j);
                        check_regex(report, r, "corsPolicy.allowOrigins", sm, at);
                    }
                }
            }
        }
    }
}

fn check_regex(report: &mut Report<'_>, r: &Resource, where_: &str, sm: &StringMatch, at: Path) {
    let Some(re) = sm.regex.as_deref().filter(|re| !re.is_empty()) else {
        return;
    };
    let Err(e) = regex::Regex::new(re) else {
        return;
    };
    // The regex crate explains syntax errors over several lines, the last one
    // saying what is wrong; keep that line.
    let problem = e.to_string();
    let problem = problem
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .trim_start_matches("error: ")
        .to_string();
    report.add(
        codes::INVALID_REGEXP,
        r,
        Some(at.field("regex")),
        format!("Field {where_:?} regular expression invalid: {re:?} ({problem})"),
    );
}

/// IST0130 and IST0131: rules that can never match because an earlier rule has no
/// match conditions or already takes all their matches, and single matches that
/// duplicate (or, for URI prefixes, are covered by) an earlier match.
struct UnreachableRulesAnalyzer;

impl Analyzer for UnreachableRulesAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.UnreachableRulesAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        for (r, vs) in snap.virtual_services() {
            let http: Vec<Rule<'_, HttpMatchRequest>> = vs
                .http
                .iter()
                .map(|h| (h.name.as_deref(), http_matches(&h.r#match)))
                .collect();
            unreachable(report, r, "http", &http);
            let tcp: Vec<_> = vs.tcp.iter().map(|t| (None, unnamed(&t.r#match))).collect();
            unreachable(report, r, "tcp", &tcp);
            let tls: Vec<_> = vs.tls.iter().map(|t| (None, unnamed(&t.r#match))).collect();
            unreachable(report, r, "tls", &tls);
            prefix_overlaps(report, r, &vs.http);
        }
    }
}

/// HTTP matches with their names, the names cleared so that equal conditions
/// compare equal.
fn http_matches(matches: &[HttpMatchRequest]) -> Vec<(Option<&str>, HttpMatchRequest)> {
    matches
        .iter()
        .map(|m| {
            let mut key = m.clone();
            key.name = None;
            (m.name.as_deref(), key)
        })
        .collect()
}

/// TCP and TLS matches, which have no names.
fn unnamed<'v, M: Clone>(matches: &[M]) -> Vec<(Option<&'v str>, M)> {
    matches.iter().map(|m| (None, m.clone())).collect()
}

/// Istio's rule and match names: `"name"` when named, `#index` otherwise.
fn label(name: Option<&str>, index: usize) -> String {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => format!("{n:?}"),
        None => format!("#{index}"),
    }
}

/// A rule's name and its matches, each with its name.
type Rule<'v, M> = (Option<&'v str>, Vec<(Option<&'v str>, M)>);
type Rules<'v, M> = [Rule<'v, M>];

/// The duplicate-match walk shared by http, tcp and tls rules.
fn unreachable<M: PartialEq>(
    report: &mut Report<'_>,
    r: &Resource,
    section: &str,
    rules: &Rules<'_, M>,
) {
    let mut seen: Vec<(&M, usize)> = Vec::new();
    let mut catch_all: Option<usize> = None;
    for (i, (rule_name, matches)) in rules.iter().enumerate() {
        let rule = Path::root("spec").field(section).index(i);
        if matches.is_empty() {
            if catch_all.is_some() {
                report.add(
                    codes::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                    r,
                    Some(rule),
                    format!(
                        "VirtualService rule {} not used (only the last rule can have no matches).",
                        label(*rule_name, i)
                    ),
                );
            }
            catch_all = Some(i);
            continue;
        }
        if catch_all.is_some() {
            report.add(
                codes::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                r,
                Some(rule),
                format!(
                    "VirtualService rule {} not used (route without matches defined before).",
                    label(*rule_name, i)
                ),
            );
            continue;
        }
        let mut duplicates = 0;
        for (j, (match_name, m)) in matches.iter().enumerate() {
            if let Some((_, first)) = seen.iter().find(|(s, _)| *s == m) {
                duplicates += 1;
                report.add(
                    codes::VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
                    r,
                    Some(rule.clone().field("match").index(j)),
                    format!(
                        "VirtualService rule {} match {} is not used (duplicate/overlapping match in rule {}).",
                        label(*rule_name, i),
                        label(*match_name, j),
                        label(rules[*first].0, *first)
                    ),
                );
            } else {
                seen.push((m, i));
            }
        }
        if duplicates == matches.len() {
            report.add(
                codes::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                r,
                Some(rule),
                format!(
                    "VirtualService rule {} not used (all matches used by prior rules).",
                    label(*rule_name, i)
                ),
            );
        }
    }
}

/// IST0131 for a URI-prefix match covered by an earlier, broader prefix match with
/// the same other conditions (`/debug` before `/debugging`).
fn prefix_overlaps(
    report: &mut Report<'_>,
    r: &Resource,
    http: &[common::istio::networking::HttpRoute],
) {
    // (rule index, match index, prefix, match) of every prefix match, in order.
    // Duplicates and rules after a catch-all are IST0130/IST0131 already.
    let mut prefixed: Vec<(usize, usize, &str, &HttpMatchRequest)> = Vec::new();
    let mut seen: Vec<HttpMatchRequest> = Vec::new();
    for (i, route) in http.iter().enumerate() {
        if route.r#match.is_empty() {
            break;
        }
        for (j, (_, key)) in http_matches(&route.r#match).into_iter().enumerate() {
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let m = &route.r#match[j];
            if let Some(p) = m.uri.as_ref().and_then(|u| u.prefix.as_deref()) {
                prefixed.push((i, j, p, m));
            }
        }
    }
    let mut reported = HashSet::new();
    for (a, &(ai, aj, ap, am)) in prefixed.iter().enumerate() {
        for &(bi, bj, bp, bm) in &prefixed[a + 1..] {
            if bp == ap || !bp.starts_with(ap) || !covers(am, bm) || !reported.insert((bi, bj)) {
                continue;
            }
            report.add(
                codes::VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
                r,
                Some(Path::root("spec").field("http").index(bi).field("match").index(bj)),
                format!(
                    "VirtualService rule {} match {} of prefix {bp} is not used (duplicate/overlapping match in rule {} of prefix {ap} on {}).",
                    label(http[bi].name.as_deref(), bi),
                    label(bm.name.as_deref(), bj),
                    label(am.name.as_deref(), aj),
                    label(http[ai].name.as_deref(), ai),
                ),
            );
        }
    }
}

/// Whether every request `b` matches (URI aside) is also matched by `a`: each
/// condition of `a` is implied by one of `b`'s, and the conditions that do not
/// narrow (source, gateways, port, …) are the same.
fn covers(a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
    let implied = |ca: Option<&StringMatch>, cb: Option<&StringMatch>| match (ca, cb) {
        (None, _) => true,
        (Some(x), Some(y)) if x == y => true,
        (Some(x), Some(y)) => match (&x.prefix, &y.exact, &y.prefix) {
            (Some(p), Some(v), _) | (Some(p), None, Some(v)) => v.starts_with(p.as_str()),
            _ => false,
        },
        (Some(_), None) => false,
    };
    let maps = |ma: &std::collections::BTreeMap<String, StringMatch>,
                mb: &std::collections::BTreeMap<String, StringMatch>| {
        ma.iter()
            .all(|(k, x)| mb.get(k).is_some_and(|y| implied(Some(x), Some(y))))
    };
    implied(a.method.as_ref(), b.method.as_ref())
        && implied(a.authority.as_ref(), b.authority.as_ref())
        && implied(a.scheme.as_ref(), b.scheme.as_ref())
        && maps(&a.headers, &b.headers)
        && maps(&a.query_params, &b.query_params)
        && a.without_headers == b.without_headers
        && a.port == b.port
        && a.source_labels == b.source_labels
        && a.gateways == b.gateways
        && a.source_namespace == b.source_namespace
        && a.ignore_uri_case == b.ignore_uri_case
}

#[cfg(test)]
mod tests;
