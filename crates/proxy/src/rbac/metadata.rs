//! Dynamic metadata (what a request's filters write for later ones, by
//! filter name: the JWT filter's payload) and Envoy's `MetadataMatcher` over
//! it, with `ValueMatcher`'s null, number, string, bool, presence, list and
//! or-matches on JSON values (a protobuf `Struct` read as JSON).

use envoy_types::pb::envoy::r#type::matcher::v3::{
    MetadataMatcher, ValueMatcher, double_matcher, list_matcher, metadata_matcher, value_matcher,
};
use serde_json::{Map, Value};

use crate::route::{StringMatch, compile_string_match};

/// A request's dynamic metadata: a JSON object per filter name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicMetadata {
    filters: Vec<(String, Map<String, Value>)>,
}

impl DynamicMetadata {
    /// Sets `key` of `filter`'s namespace to `value`.
    pub fn set(&mut self, filter: &str, key: &str, value: Value) {
        let ns = match self.filters.iter().position(|(f, _)| f == filter) {
            Some(i) => &mut self.filters[i].1,
            None => {
                self.filters.push((filter.to_string(), Map::new()));
                let last = self.filters.len() - 1;
                &mut self.filters[last].1
            }
        };
        ns.insert(key.to_string(), value);
    }

    /// The value at `path` in `filter`'s namespace.
    pub fn get(&self, filter: &str, path: &[String]) -> Option<&Value> {
        let (_, ns) = self.filters.iter().find(|(f, _)| f == filter)?;
        let (first, rest) = path.split_first()?;
        let mut v = ns.get(first)?;
        for key in rest {
            v = v.as_object()?.get(key)?;
        }
        Some(v)
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }
}

/// A compiled `MetadataMatcher`.
#[derive(Debug)]
pub struct MetadataMatch {
    filter: String,
    path: Vec<String>,
    value: ValueMatch,
    invert: bool,
}

#[derive(Debug)]
enum ValueMatch {
    Null,
    Double(DoubleMatch),
    String(StringMatch),
    Bool(bool),
    Present(bool),
    OneOf(Box<ValueMatch>),
    Or(Vec<ValueMatch>),
}

#[derive(Debug)]
enum DoubleMatch {
    Exact(f64),
    Range(f64, f64),
}

impl MetadataMatch {
    /// Whether the metadata (none: empty) matches.
    pub fn matches(&self, metadata: Option<&DynamicMetadata>) -> bool {
        let v = metadata.and_then(|m| m.get(&self.filter, &self.path));
        self.value.matches(v) != self.invert
    }
}

impl ValueMatch {
    fn matches(&self, v: Option<&Value>) -> bool {
        match (self, v) {
            (ValueMatch::Present(want), v) => *want == v.is_some(),
            (_, None) => false,
            (ValueMatch::Null, Some(v)) => v.is_null(),
            (ValueMatch::Double(d), Some(Value::Number(n))) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                match d {
                    DoubleMatch::Exact(e) => x == *e,
                    DoubleMatch::Range(start, end) => *start <= x && x < *end,
                }
            }
            (ValueMatch::String(m), Some(Value::String(s))) => m.matches(s),
            (ValueMatch::Bool(b), Some(Value::Bool(x))) => b == x,
            (ValueMatch::OneOf(m), Some(Value::Array(items))) => {
                items.iter().any(|i| m.matches(Some(i)))
            }
            (ValueMatch::Or(ms), v) => ms.iter().any(|m| m.matches(v)),
            _ => false,
        }
    }
}

/// Compiles a `MetadataMatcher`; refusals name their path under `at`.
pub fn compile(at: &str, m: &MetadataMatcher) -> Result<MetadataMatch, Vec<String>> {
    let mut errors = Vec::new();
    if m.filter.is_empty() {
        errors.push(format!("{at}.filter: empty"));
    }
    let mut path = Vec::new();
    for (i, seg) in m.path.iter().enumerate() {
        match &seg.segment {
            Some(metadata_matcher::path_segment::Segment::Key(k)) if !k.is_empty() => {
                path.push(k.clone());
            }
            _ => errors.push(format!("{at}.path[{i}]: a non-empty key is required")),
        }
    }
    if path.is_empty() {
        errors.push(format!("{at}.path: at least one segment is required"));
    }
    let value = match &m.value {
        Some(v) => value(&format!("{at}.value"), v, &mut errors),
        None => {
            errors.push(format!("{at}.value: missing"));
            None
        }
    };
    match value {
        Some(value) if errors.is_empty() => Ok(MetadataMatch {
            filter: m.filter.clone(),
            path,
            value,
            invert: m.invert,
        }),
        _ => Err(errors),
    }
}

fn value(at: &str, v: &ValueMatcher, errors: &mut Vec<String>) -> Option<ValueMatch> {
    use value_matcher::MatchPattern as P;
    Some(match &v.match_pattern {
        Some(P::NullMatch(_)) => ValueMatch::Null,
        Some(P::DoubleMatch(d)) => match &d.match_pattern {
            Some(double_matcher::MatchPattern::Exact(e)) => {
                ValueMatch::Double(DoubleMatch::Exact(*e))
            }
            Some(double_matcher::MatchPattern::Range(r)) => {
                ValueMatch::Double(DoubleMatch::Range(r.start, r.end))
            }
            None => {
                errors.push(format!("{at}.double_match: no match pattern"));
                return None;
            }
        },
        Some(P::StringMatch(s)) => match compile_string_match(&format!("{at}.string_match"), s) {
            Ok(m) => ValueMatch::String(m),
            Err(e) => {
                errors.extend(e);
                return None;
            }
        },
        Some(P::BoolMatch(b)) => ValueMatch::Bool(*b),
        Some(P::PresentMatch(b)) => ValueMatch::Present(*b),
        Some(P::ListMatch(l)) => {
            match &l.match_pattern {
                Some(list_matcher::MatchPattern::OneOf(inner)) => ValueMatch::OneOf(Box::new(
                    value(&format!("{at}.list_match.one_of"), inner, errors)?,
                )),
                None => {
                    errors.push(format!("{at}.list_match: no match pattern"));
                    return None;
                }
            }
        }
        Some(P::OrMatch(o)) => {
            let mut all = Vec::new();
            for (i, m) in o.value_matchers.iter().enumerate() {
                all.push(value(
                    &format!("{at}.or_match.value_matchers[{i}]"),
                    m,
                    errors,
                )?);
            }
            ValueMatch::Or(all)
        }
        None => {
            errors.push(format!("{at}: no match pattern"));
            return None;
        }
    })
}
