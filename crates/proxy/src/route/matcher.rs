//! Matching: virtual host domains, paths, headers, query parameters, fractions.

use std::borrow::Cow;
use std::collections::HashMap;

use regex::Regex;

use super::RequestView;
use super::action::Fraction;

/// The virtual hosts by domain, in Envoy's precedence order.
#[derive(Debug, Default)]
pub(super) struct DomainIndex {
    pub(super) exact: HashMap<String, usize>,
    /// `*.example.com` as `.example.com`, longest first.
    pub(super) suffix: Vec<(String, usize)>,
    /// `foo.*` as `foo.`, longest first.
    pub(super) prefix: Vec<(String, usize)>,
    pub(super) any: Option<usize>,
    pub(super) strip_port: bool,
}

impl DomainIndex {
    /// The index of the virtual host serving `authority`.
    pub(super) fn find(&self, authority: &str) -> Option<usize> {
        let mut host = authority;
        if self.strip_port {
            host = strip_port(host);
        }
        let host = host.to_ascii_lowercase();
        if let Some(i) = self.exact.get(&host) {
            return Some(*i);
        }
        for (suffix, i) in &self.suffix {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                return Some(*i);
            }
        }
        for (prefix, i) in &self.prefix {
            if host.len() > prefix.len() && host.starts_with(prefix.as_str()) {
                return Some(*i);
            }
        }
        self.any
    }
}

/// `host:port` → `host`, `[v6]:port` → `[v6]`; anything else unchanged.
pub(super) fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.find(']') {
            Some(end) => &authority[..end + 2],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// Whether a domain of a `RouteConfiguration` names a port.
pub(super) fn has_port(domain: &str) -> bool {
    strip_port(domain).len() != domain.len()
}

/// The path without query or fragment.
pub(crate) fn path_only(path_and_query: &str) -> &str {
    match path_and_query.find(['?', '#']) {
        Some(i) => &path_and_query[..i],
        None => path_and_query,
    }
}

/// A compiled `RouteMatch`.
#[derive(Debug)]
pub(crate) struct RouteMatcher {
    pub(super) path: PathMatch,
    /// Patterns are stored lowercased when false.
    pub(super) case_sensitive: bool,
    pub(super) headers: Vec<HeaderMatch>,
    pub(super) query: Vec<QueryMatch>,
    pub(super) grpc: bool,
    pub(super) fraction: Option<Fraction>,
}

/// The path part of a `RouteMatch`.
#[derive(Debug)]
pub(super) enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    SeparatedPrefix(String),
}

impl RouteMatcher {
    /// `Some(length of the matched prefix, for prefix rewrites)` when the
    /// request matches.
    pub(crate) fn matches(&self, req: &RequestView<'_>, path: &str) -> Option<Option<usize>> {
        let folded: Cow<'_, str> = if self.case_sensitive {
            Cow::Borrowed(path)
        } else {
            Cow::Owned(path.to_lowercase())
        };
        let prefix_len = match &self.path {
            PathMatch::Prefix(p) => folded.starts_with(p.as_str()).then_some(Some(p.len()))?,
            PathMatch::Exact(p) => (folded == p.as_str()).then_some(Some(path.len()))?,
            PathMatch::Regex(re) => re.is_match(path).then_some(None)?,
            PathMatch::SeparatedPrefix(p) => {
                let ok = folded.starts_with(p.as_str())
                    && matches!(folded.as_bytes().get(p.len()), None | Some(b'/'));
                ok.then_some(Some(p.len()))?
            }
        };
        if self.grpc
            && !header_value(req, "content-type").is_some_and(|v| v.starts_with("application/grpc"))
        {
            return None;
        }
        if !self.headers.iter().all(|h| h.matches(req)) {
            return None;
        }
        if !self.query.is_empty() {
            let query = query_of(req.path_and_query);
            if !self.query.iter().all(|q| q.matches(query)) {
                return None;
            }
        }
        if let Some(f) = &self.fraction
            && !f.hits(req.random)
        {
            return None;
        }
        Some(prefix_len)
    }
}

/// A compiled `StringMatcher` (or a legacy header matcher).
#[derive(Debug, Clone)]
pub(crate) enum StringMatch {
    Exact(String, bool),
    Prefix(String, bool),
    Suffix(String, bool),
    Contains(String, bool),
    Regex(Regex),
}

impl StringMatch {
    pub(crate) fn matches(&self, value: &str) -> bool {
        let fold = |ignore_case: bool| -> Cow<'_, str> {
            if ignore_case {
                Cow::Owned(value.to_lowercase())
            } else {
                Cow::Borrowed(value)
            }
        };
        match self {
            StringMatch::Exact(p, ic) => fold(*ic) == p.as_str(),
            StringMatch::Prefix(p, ic) => fold(*ic).starts_with(p.as_str()),
            StringMatch::Suffix(p, ic) => fold(*ic).ends_with(p.as_str()),
            StringMatch::Contains(p, ic) => fold(*ic).contains(p.as_str()),
            StringMatch::Regex(re) => re.is_match(value),
        }
    }
}

/// The specific test of a `HeaderMatcher`.
#[derive(Debug)]
pub(super) enum HeaderTest {
    String(StringMatch),
    Present(bool),
    Range(i64, i64),
}

/// A compiled `HeaderMatcher`.
#[derive(Debug)]
pub(crate) struct HeaderMatch {
    pub(super) name: String,
    pub(super) test: HeaderTest,
    pub(super) invert: bool,
    pub(super) missing_as_empty: bool,
}

impl HeaderMatch {
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        self.matches_value(header_value(req, &self.name))
    }

    /// The verdict on a request without the header (an empty header map, as
    /// a network filter sees it).
    pub(crate) fn matches_absent(&self) -> bool {
        self.matches_value(None)
    }

    fn matches_value(&self, value: Option<Cow<'_, str>>) -> bool {
        if let HeaderTest::Present(want) = self.test {
            return (value.is_some() == want) != self.invert;
        }
        let value = match value {
            Some(v) => v,
            None if self.missing_as_empty => Cow::Borrowed(""),
            None => return self.invert,
        };
        let hit = match &self.test {
            HeaderTest::String(m) => m.matches(&value),
            HeaderTest::Range(start, end) => value
                .trim()
                .parse::<i64>()
                .is_ok_and(|v| *start <= v && v < *end),
            HeaderTest::Present(_) => unreachable!("handled above"),
        };
        hit != self.invert
    }
}

/// A request header's value (all values joined with `,`), pseudo-headers
/// included.
pub(super) fn header_value<'a>(req: &RequestView<'a>, name: &str) -> Option<Cow<'a, str>> {
    match name {
        ":method" => return Some(Cow::Borrowed(req.method)),
        ":authority" | "host" if !req.authority.is_empty() => {
            return Some(Cow::Borrowed(req.authority));
        }
        ":path" => return Some(Cow::Borrowed(req.path_and_query)),
        ":scheme" => return Some(Cow::Borrowed(req.scheme)),
        _ => {}
    }
    let mut values = req.headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes());
    for v in values {
        let joined = out.to_mut();
        joined.push(',');
        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(out)
}

/// A compiled `QueryParameterMatcher`.
#[derive(Debug)]
pub(super) struct QueryMatch {
    pub(super) name: String,
    /// `None`: present match.
    pub(super) value: Option<StringMatch>,
}

impl QueryMatch {
    fn matches(&self, query: &str) -> bool {
        let first = query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == self.name).then(|| percent_decode(v))
        });
        match (&self.value, first) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(m), Some(v)) => m.matches(&v),
        }
    }
}

pub(super) fn query_of(path_and_query: &str) -> &str {
    let q = path_and_query.split_once('?').map_or("", |(_, q)| q);
    q.split_once('#').map_or(q, |(q, _)| q)
}

/// `%XX` decoding (invalid escapes are kept as they are; `+` is not a space,
/// as in Envoy).
pub(super) fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}
