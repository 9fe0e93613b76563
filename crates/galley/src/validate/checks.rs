//! Shared field checks: the value forms Istio's APIs use in many places. Each check
//! records at most one finding at the cursor and returns whether the value passed.

use std::net::IpAddr;
use std::sync::OnceLock;

use common::istio::types::{Duration, Percent};

use super::field::Field;

/// A duration at least `min` long, e.g. Istio's "≥ 1ms" for timeouts.
pub fn duration_min(f: &mut Field<'_>, d: &Duration, min: std::time::Duration) -> bool {
    if d.as_std() < min {
        f.error(format!(
            "must be at least {} (got {})",
            human_duration(min),
            d.as_str()
        ));
        return false;
    }
    true
}

/// Istio's `ValidateDuration`: at least 1ms and a whole number of milliseconds
/// (Envoy takes millisecond precision for these settings).
pub fn istio_duration(f: &mut Field<'_>, d: &Duration) -> bool {
    if !duration_min(f, d, std::time::Duration::from_millis(1)) {
        return false;
    }
    if !d.as_nanos().is_multiple_of(1_000_000) {
        f.error(format!(
            "must be a whole number of milliseconds (got {}); Istio supports millisecond precision only",
            d.as_str()
        ));
        return false;
    }
    true
}

fn human_duration(d: std::time::Duration) -> String {
    let n = d.as_nanos();
    if n.is_multiple_of(1_000_000_000) {
        format!("{}s", n / 1_000_000_000)
    } else if n.is_multiple_of(1_000_000) {
        format!("{}ms", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}us", n / 1_000)
    } else {
        format!("{n}ns")
    }
}

/// A TCP/UDP port number, 1 to 65535.
pub fn port(f: &mut Field<'_>, p: u32) -> bool {
    if p == 0 || p > 65535 {
        f.error(format!("port number {p} is out of range; use 1 to 65535"));
        return false;
    }
    true
}

/// A percentage in [0, 100].
pub fn percent_value(f: &mut Field<'_>, v: f64) -> bool {
    if !(0.0..=100.0).contains(&v) || v.is_nan() {
        f.error(format!("percentage {v} is out of range; use 0 to 100"));
        return false;
    }
    true
}

/// An Istio `Percent` message: checks its `value`.
pub fn percent(f: &mut Field<'_>, p: &Percent) -> bool {
    percent_value(&mut f.at("value"), p.value)
}

/// A regular expression as Envoy evaluates it (Google RE2: linear time, no
/// look-around or back-references), checked with Rust's `regex`, which has the same
/// rules. Size-bounded so a pathological pattern is refused rather than compiled.
pub fn regex(f: &mut Field<'_>, pattern: &str) -> bool {
    match regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
    {
        Ok(_) => true,
        Err(e) => {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("").trim();
            f.error(format!(
                "{pattern:?} is not a valid RE2 regular expression: {last}"
            ));
            false
        }
    }
}

/// What a host name may look like at a given field.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostRules {
    /// A leading wildcard label (`*.example.com`, or `*` alone) is allowed.
    pub wildcard: bool,
}

/// A host name as Istio takes it in `hosts` lists: Istio's FQDN rules (short names
/// allowed, upper case allowed, an all-digit last label refused), or with
/// `rules.wildcard` Istio's wildcard-domain rules. IP addresses are accepted.
pub fn host(f: &mut Field<'_>, h: &str, rules: HostRules) -> bool {
    match host_problem(h, rules) {
        None => true,
        Some(reason) => {
            f.error(format!("host {h:?} is not valid: {reason}"));
            false
        }
    }
}

/// Why `h` is not a valid host under `rules`, or `None` when it is.
pub fn host_problem(h: &str, rules: HostRules) -> Option<String> {
    if is_ip(h) {
        return None;
    }
    if rules.wildcard {
        wildcard_domain_problem(h)
    } else if h.contains('*') {
        Some("a wildcard is not allowed here".into())
    } else {
        fqdn_problem(h)
    }
}

/// Whether `s` is an IPv4 or IPv6 address.
pub fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Istio's DNS-1123 label for host names: letters (either case), digits and `-`,
/// at most 63, starting and ending with a letter or digit.
pub fn host_label_ok(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// A lower-case DNS-1123 label (namespace, subset and port names).
pub fn is_dns1123_label(s: &str) -> bool {
    host_label_ok(s) && !s.bytes().any(|c| c.is_ascii_uppercase())
}

fn labels_problem(domain: &str) -> Option<String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|c| c.is_ascii_digit()) {
        return Some(format!(
            "its last label {tld:?} is all digits, which no domain name may be"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() && i > 0 {
            return None; // a trailing dot, as in `istio.io.`
        }
        if label.contains('*') {
            return Some(format!(
                "label {label:?} is not valid: a wildcard is allowed only as the whole first label, as in *.example.com"
            ));
        }
        if !host_label_ok(label) {
            return Some(format!(
                "label {label:?} is not valid; use letters, digits and '-', at most 63 characters, not starting or ending with '-'"
            ));
        }
    }
    None
}

fn preconditions(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("it is empty".into());
    }
    if name.len() > 255 {
        return Some(format!("it is {} characters long; at most 255", name.len()));
    }
    None
}

/// Istio's `ValidateFQDN`: a DNS name without wildcards (a short name is fine).
pub fn fqdn_problem(name: &str) -> Option<String> {
    preconditions(name).or_else(|| labels_problem(name))
}

/// Istio's `ValidateWildcardDomain`: a DNS name whose first label may be `*` or
/// start with `*` (`*.example.com`, `*`).
pub fn wildcard_domain_problem(name: &str) -> Option<String> {
    if let Some(p) = preconditions(name) {
        return Some(p);
    }
    let (first, rest) = match name.split_once('.') {
        Some((a, b)) => (a, Some(b)),
        None => (name, None),
    };
    let first_ok = first == "*"
        || host_label_ok(first)
        || first.strip_prefix('*').is_some_and(host_label_ok)
        || first.strip_prefix("*-").is_some_and(host_label_ok);
    if !first_ok {
        return Some(format!(
            "label {first:?} is not valid; a wildcard is allowed only as the first label, as in *.example.com"
        ));
    }
    match rest {
        Some(r) => labels_problem(r),
        None => None,
    }
}

/// A Kubernetes name that must be a DNS-1123 label (lower case, ≤ 63).
pub fn dns1123_label(f: &mut Field<'_>, name: &str) -> bool {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        f.error(format!(
            "{name:?} is not a valid DNS-1123 label: use 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    ok
}

/// An IP address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`).
pub fn ip_or_cidr(f: &mut Field<'_>, s: &str) -> bool {
    let ok = if s.contains('/') {
        s.parse::<ipnet::IpNet>().is_ok()
    } else {
        s.parse::<IpAddr>().is_ok()
    };
    if !ok {
        f.error(format!(
            "{s:?} is not a valid IP address or CIDR block (like 10.0.0.1 or 10.0.0.0/8)"
        ));
    }
    ok
}

/// An HTTP header name: a non-empty RFC 7230 token. Pseudo-headers (`:authority`)
/// are allowed where `allow_pseudo` is set.
pub fn header_name(f: &mut Field<'_>, name: &str, allow_pseudo: bool) -> bool {
    let body = if allow_pseudo {
        name.strip_prefix(':').unwrap_or(name)
    } else {
        name
    };
    let ok = !body.is_empty() && body.bytes().all(is_tchar);
    if !ok {
        f.error(format!(
            "{name:?} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
        ));
    }
    ok
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Envoy's `retry_on` conditions (HTTP and gRPC) that Istio passes through.
pub use common::envoy::RETRY_ON;

/// A comma-separated `retryOn` list: known conditions or HTTP status codes.
pub fn retry_on(f: &mut Field<'_>, list: &str) -> bool {
    for item in list.split(',').map(str::trim) {
        if item.is_empty() {
            f.error(format!(
                "retryOn {list:?} has an empty entry; separate conditions with single commas"
            ));
            return false;
        }
        if RETRY_ON.contains(&item) {
            continue;
        }
        if let Ok(code) = item.parse::<u32>()
            && (100..=599).contains(&code)
        {
            continue;
        }
        f.error(format!(
            "unknown retryOn condition {item:?}; use HTTP status codes or any of: {}",
            RETRY_ON.join(", ")
        ));
        return false;
    }
    true
}

/// An HTTP status code within `range` (e.g. 200..=599 for fault aborts).
pub fn http_status(f: &mut Field<'_>, code: i64, range: std::ops::RangeInclusive<i64>) -> bool {
    if !range.contains(&code) {
        f.error(format!(
            "HTTP status {code} is out of range; use {} to {}",
            range.start(),
            range.end()
        ));
        return false;
    }
    true
}

/// Exactly one of the named alternatives is set (a protobuf `oneof` that is
/// required). `fields` pairs each field name with whether it is set.
pub fn exactly_one(f: &mut Field<'_>, fields: &[(&str, bool)]) -> bool {
    let set: Vec<&str> = fields.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    match set.len() {
        1 => true,
        0 => {
            f.error(format!("exactly one of {} must be set", names.join(", ")));
            false
        }
        _ => {
            f.error(format!(
                "only one of {} may be set, but {} are",
                names.join(", "),
                set.join(" and ")
            ));
            false
        }
    }
}

/// At most one of the named alternatives is set (an optional `oneof`).
pub fn at_most_one(f: &mut Field<'_>, fields: &[(&str, bool)]) -> bool {
    let set: Vec<&str> = fields.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    if set.len() > 1 {
        let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        f.error(format!(
            "only one of {} may be set, but {} are",
            names.join(", "),
            set.join(" and ")
        ));
        return false;
    }
    true
}

/// Kubernetes label keys and values (`prefix/name` keys, ≤ 63-character names and
/// values of letters, digits, `-`, `_`, `.`).
pub fn labels(f: &mut Field<'_>, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let mut ok = true;
    for (k, v) in labels {
        let mut e = f.key(k);
        if let Some(reason) = label_key_problem(k) {
            e.error(format!("label key {k:?} is not valid: {reason}"));
            ok = false;
        } else if !label_value_ok(v) {
            e.error(format!(
                "label value {v:?} is not valid: use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            ));
            ok = false;
        }
    }
    ok
}

fn label_name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn label_value_ok(s: &str) -> bool {
    s.is_empty() || label_name_ok(s)
}

fn label_key_problem(k: &str) -> Option<String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && let Some(r) = fqdn_problem(p)
    {
        return Some(format!("prefix {p:?}: {r}"));
    }
    (!label_name_ok(name)).then(|| {
        "the name part must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit".into()
    })
}

/// HTTP method names Envoy and Istio match on.
pub const HTTP_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// An `http://` or `https://` URL with a host.
pub fn http_url(f: &mut Field<'_>, url: &str) -> bool {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"^https?://[A-Za-z0-9.\-_~%\[\]:]+(:\d+)?(/[^\s]*)?$")
            .expect("static regex")
    });
    if !re.is_match(url) {
        f.error(format!("{url:?} is not a valid http:// or https:// URL"));
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::field::Finding;
    use proptest::prelude::*;

    fn run(check: impl FnOnce(&mut Field<'_>) -> bool) -> (bool, Vec<Finding>) {
        let mut out = Vec::new();
        let ok = check(&mut Field::new("spec", &mut out));
        (ok, out)
    }

    #[test]
    fn hosts() {
        let w = HostRules { wildcard: true };
        for good in [
            "reviews",
            "reviews.default.svc.cluster.local",
            "*.example.com",
            "*",
            "10.0.0.1",
            "a-b.c",
        ] {
            assert!(run(|f| host(f, good, w)).0, "{good}");
        }
        for bad in [
            "",
            "re*views",
            "foo..bar",
            "-a.com",
            "a_b c",
            "*.",
            "foo.*.com",
        ] {
            assert!(!run(|f| host(f, bad, w)).0, "{bad}");
        }
        assert!(!run(|f| host(f, "*.example.com", HostRules::default())).0);
    }

    #[test]
    fn retry_on_values() {
        assert!(run(|f| retry_on(f, "gateway-error,connect-failure,refused-stream,5xx")).0);
        assert!(run(|f| retry_on(f, "503,reset")).0);
        let (ok, out) = run(|f| retry_on(f, "5xx,bogus"));
        assert!(!ok);
        assert!(out[0].message.contains("\"bogus\""));
    }

    #[test]
    fn one_of() {
        let (ok, out) =
            run(|f| exactly_one(f, &[("exact", true), ("prefix", true), ("regex", false)]));
        assert!(!ok);
        assert!(
            out[0].message.contains("exact and prefix"),
            "{}",
            out[0].message
        );
        assert!(!run(|f| exactly_one(f, &[("a", false), ("b", false)])).0);
        assert!(run(|f| at_most_one(f, &[("a", false), ("b", false)])).0);
    }

    #[test]
    fn regexes() {
        assert!(run(|f| regex(f, "^(.*?;)?(user=test)(;.*)?$")).0);
        let (ok, out) = run(|f| regex(f, "(?=lookahead)"));
        assert!(!ok);
        assert!(out[0].message.contains("RE2"));
    }

    #[test]
    fn durations_and_ranges() {
        let d: Duration = "0s".parse().unwrap();
        let (ok, out) = run(|f| duration_min(f, &d, std::time::Duration::from_millis(1)));
        assert!(!ok);
        assert_eq!(out[0].message, "must be at least 1ms (got 0s)");
        assert!(!run(|f| port(f, 0)).0);
        assert!(!run(|f| port(f, 65536)).0);
        assert!(run(|f| port(f, 9080)).0);
        assert!(!run(|f| percent_value(f, 100.5)).0);
        assert!(run(|f| ip_or_cidr(f, "10.0.0.0/8")).0);
        assert!(!run(|f| ip_or_cidr(f, "10.0.0.0/33")).0);
        assert!(!run(|f| header_name(f, "bad header", false)).0);
        assert!(run(|f| header_name(f, ":authority", true)).0);
        assert!(run(|f| http_url(f, "https://accounts.example.com/.well-known/jwks.json")).0);
        assert!(!run(|f| http_url(f, "ftp://x")).0);
    }

    proptest! {
        #[test]
        fn host_check_never_panics(h in "\\PC{0,80}") {
            let _ = run(|f| host(f, &h, HostRules { wildcard: true }));
        }

        #[test]
        fn valid_dns_names_pass(
            labels in prop::collection::vec("[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", 0..4),
            last in "[a-z]([a-z0-9-]{0,10}[a-z0-9])?",
        ) {
            let mut name = labels.join(".");
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(&last);
            prop_assert!(run(|f| host(f, &name, HostRules::default())).0, "{}", name);
        }

        #[test]
        fn wildcard_of_a_valid_name_is_valid_only_where_allowed(name in "[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,10}[a-z0-9])?){0,3}") {
            let wild = format!("*.{name}");
            prop_assert!(run(|f| host(f, &wild, HostRules { wildcard: true })).0, "{}", wild);
            prop_assert!(!run(|f| host(f, &wild, HostRules::default())).0, "{}", wild);
        }

        #[test]
        fn all_digit_last_labels_are_refused(name in "[a-z]{1,8}", tld in "[0-9]{1,3}") {
            let h = format!("{name}.{tld}");
            prop_assert!(!run(|f| host(f, &h, HostRules::default())).0, "{}", h);
        }

        #[test]
        fn regex_check_never_panics(r in "\\PC{0,40}") {
            let _ = run(|f| regex(f, &r));
        }
    }
}
