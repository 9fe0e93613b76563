//! YAML reading that keeps source positions.
//!
//! A YAML stream is parsed (by `saphyr-parser`) into a [`Node`] tree per document,
//! each node knowing the line it starts on. The tree converts to `serde_json::Value`
//! with the YAML 1.2 core schema, as Kubernetes reads YAML (via JSON), and answers
//! "which line is `spec.http[0].retries` on?" for messages, through [`Node::line_of`].
//!
//! Inputs are bounded: nesting depth, node count (aliases included, so an alias bomb
//! is refused) and document size, each with a clear error rather than a crash.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use serde_json::{Map, Number, Value};

use crate::path::{Path, Seg};

/// Deepest nesting accepted in one document.
pub const MAX_DEPTH: usize = 128;
/// Most nodes accepted in one document, counting each alias expansion.
pub const MAX_NODES: usize = 1_000_000;
/// Largest document accepted, in bytes of source text.
pub const MAX_DOCUMENT_BYTES: usize = 8 * 1024 * 1024;

/// Why YAML text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct YamlError {
    /// Line of the problem (1-based).
    pub line: usize,
    /// Column of the problem (1-based).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// A YAML node with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Line (1-based) of the node; for a mapping value, the line of its key.
    pub line: usize,
    /// The node's content.
    pub kind: NodeKind,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar, already resolved to a JSON value.
    Scalar(Value),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in source order.
    Map(Vec<(String, Node)>),
}

/// One YAML document of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Line (1-based) where the document's content starts.
    pub line: usize,
    /// The document's root node; `None` for an empty document.
    pub root: Option<Node>,
}

impl Node {
    /// The node as a JSON value.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar(v) => v.clone(),
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => {
                let mut m = Map::with_capacity(entries.len());
                for (k, v) in entries {
                    m.insert(k.clone(), v.to_json());
                }
                Value::Object(m)
            }
        }
    }

    /// A tree from JSON, without source positions (every line is 0): for objects
    /// that arrive as JSON, such as those from the Kubernetes API.
    pub fn from_json(v: &Value) -> Node {
        let kind = match v {
            Value::Array(items) => NodeKind::Seq(items.iter().map(Node::from_json).collect()),
            Value::Object(m) => NodeKind::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Node::from_json(v)))
                    .collect(),
            ),
            scalar => NodeKind::Scalar(scalar.clone()),
        };
        Node { line: 0, kind }
    }

    /// The child at a mapping key, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The line of the deepest node along `path` that exists: the exact line of the
    /// field when it is present, else the line of its nearest present ancestor.
    pub fn line_of(&self, path: &Path) -> usize {
        let mut node = self;
        for seg in path.segments() {
            let next = match (seg, &node.kind) {
                (Seg::Field(name), NodeKind::Map(_)) => node.get(name),
                (Seg::Key(name), NodeKind::Map(_)) => node.get(name),
                (Seg::Index(i), NodeKind::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.line
    }
}

/// Parses a YAML stream into its documents.
pub fn parse_stream(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut builder = Builder::default();
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| YamlError {
            line: e.marker().line(),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        builder.event(event, span)?;
    }
    Ok(builder.docs)
}

/// Parses a YAML stream and returns each document with its source text size checked.
/// Documents are split by the parser, so `---` inside a block scalar is handled.
pub fn parse_bounded(text: &str) -> Result<Vec<Document>, YamlError> {
    let docs = parse_stream(text)?;
    // Bound each document's source size: the span between document start lines.
    let lines: Vec<usize> = docs.iter().map(|d| d.line).collect();
    let offsets = line_offsets(text);
    for (i, d) in docs.iter().enumerate() {
        let start = offsets.get(d.line.saturating_sub(1)).copied().unwrap_or(0);
        let end = lines
            .get(i + 1)
            .and_then(|l| offsets.get(l.saturating_sub(1)))
            .copied()
            .unwrap_or(text.len());
        if end.saturating_sub(start) > MAX_DOCUMENT_BYTES {
            return Err(YamlError {
                line: d.line,
                column: 1,
                message: format!(
                    "document is {} bytes, over the limit of {MAX_DOCUMENT_BYTES}; split it into smaller documents",
                    end - start
                ),
            });
        }
    }
    Ok(docs)
}

fn line_offsets(text: &str) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(text.match_indices('\n').map(|(i, _)| i + 1));
    v
}

/// A container being filled while events arrive.
enum Open {
    Seq {
        line: usize,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        line: usize,
        anchor: usize,
        entries: Vec<(String, Node)>,
        /// The key read, waiting for its value, with the key's line.
        key: Option<(String, usize)>,
        /// `<<` merge sources seen, applied at the end.
        merges: Vec<Node>,
    },
}

#[derive(Default)]
struct Builder {
    docs: Vec<Document>,
    stack: Vec<Open>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    doc_line: usize,
    root: Option<Node>,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let line = span.start.line();
        let err = |message: String| YamlError {
            line,
            column: span.start.col() + 1,
            message,
        };
        match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                self.doc_line = line;
                self.root = None;
                self.anchors.clear();
                self.nodes = 0;
            }
            Event::DocumentEnd => {
                // An empty document (`---` and nothing) arrives as a null scalar.
                let root = self
                    .root
                    .take()
                    .filter(|r| r.kind != NodeKind::Scalar(Value::Null));
                let doc_line = root.as_ref().map(|r| r.line).unwrap_or(self.doc_line);
                self.docs.push(Document {
                    line: doc_line,
                    root,
                });
            }
            Event::Alias(id) => {
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| err("alias refers to an unknown anchor".into()))?;
                self.nodes += count_nodes(&node);
                if self.nodes > MAX_NODES {
                    return Err(err(format!(
                        "document expands to more than {MAX_NODES} nodes (alias expansion); refusing it"
                    )));
                }
                self.push_node(Node { line, ..node }, line)?;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve_scalar(&text, style, tag.as_deref().map(|t| t.suffix.as_str()))
                    .map_err(err)?;
                let node = Node {
                    line,
                    kind: NodeKind::Scalar(value),
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_node(node, line)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.open(
                    Open::Seq {
                        line,
                        anchor,
                        items: Vec::new(),
                    },
                    &err,
                )?;
            }
            Event::MappingStart(anchor, _) => {
                self.open(
                    Open::Map {
                        line,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                        merges: Vec::new(),
                    },
                    &err,
                )?;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let open = self
                    .stack
                    .pop()
                    .ok_or_else(|| err("unbalanced YAML structure".into()))?;
                let (node, anchor) = match open {
                    Open::Seq {
                        line,
                        anchor,
                        items,
                    } => (
                        Node {
                            line,
                            kind: NodeKind::Seq(items),
                        },
                        anchor,
                    ),
                    Open::Map {
                        line,
                        anchor,
                        mut entries,
                        merges,
                        ..
                    } => {
                        // A block mapping's start event can sit on the `---` line: its
                        // first key's line is where the content starts.
                        let line = entries.first().map_or(line, |(_, n)| n.line.max(line));
                        apply_merges(&mut entries, merges).map_err(err)?;
                        (
                            Node {
                                line,
                                kind: NodeKind::Map(entries),
                            },
                            anchor,
                        )
                    }
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_node(node, line)?;
            }
        }
        Ok(())
    }

    fn open(&mut self, open: Open, err: &dyn Fn(String) -> YamlError) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(err(format!(
                "nesting is deeper than {MAX_DEPTH} levels; refusing the document"
            )));
        }
        self.count(err)?;
        self.stack.push(open);
        Ok(())
    }

    fn count(&mut self, err: &dyn Fn(String) -> YamlError) -> Result<(), YamlError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(err(format!(
                "document has more than {MAX_NODES} nodes; refusing it"
            )));
        }
        Ok(())
    }

    /// Places a finished node in its parent, or as the document root.
    fn push_node(&mut self, node: Node, line: usize) -> Result<(), YamlError> {
        let err = |message: String| YamlError {
            line,
            column: 1,
            message,
        };
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Open::Seq { items, .. }) => items.push(node),
            Some(Open::Map {
                entries,
                key,
                merges,
                ..
            }) => match key.take() {
                None => {
                    let k = match node.kind {
                        NodeKind::Scalar(Value::String(s)) => s,
                        NodeKind::Scalar(Value::Null) => "null".to_string(),
                        NodeKind::Scalar(v) => v.to_string(),
                        _ => return Err(err("a mapping key must be a scalar".into())),
                    };
                    *key = Some((k, node.line));
                }
                Some((k, key_line)) => {
                    if k == "<<" {
                        merges.push(node);
                    } else if entries.iter().any(|(e, _)| *e == k) {
                        return Err(YamlError {
                            line: key_line,
                            column: 1,
                            message: format!("mapping key {k:?} is defined twice"),
                        });
                    } else {
                        entries.push((
                            k,
                            Node {
                                line: key_line,
                                kind: node.kind,
                            },
                        ));
                    }
                }
            },
        }
        if self.stack.is_empty() {
            return Ok(());
        }
        Ok(())
    }
}

fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar(_) => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        NodeKind::Map(entries) => 1 + entries.iter().map(|(_, v)| count_nodes(v)).sum::<usize>(),
    }
}

/// YAML merge keys (`<<: *base`): entries of the merged mappings that the mapping
/// does not define itself are added, as go-yaml (and so Kubernetes) does.
fn apply_merges(entries: &mut Vec<(String, Node)>, merges: Vec<Node>) -> Result<(), String> {
    for m in merges {
        let sources = match m.kind {
            NodeKind::Map(e) => vec![e],
            NodeKind::Seq(items) => items
                .into_iter()
                .map(|n| match n.kind {
                    NodeKind::Map(e) => Ok(e),
                    _ => Err("a merge key (<<) takes a mapping or a list of mappings".to_string()),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err("a merge key (<<) takes a mapping or a list of mappings".into()),
        };
        for src in sources {
            for (k, v) in src {
                if !entries.iter().any(|(e, _)| *e == k) {
                    entries.push((k, v));
                }
            }
        }
    }
    Ok(())
}

/// Resolves a scalar with the YAML 1.2 core schema (what Kubernetes' YAML reader
/// accepts for JSON-compatible documents): quoted scalars and `!!str` are strings;
/// plain `null`/`~`/empty, booleans, integers and floats become JSON values.
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Value, String> {
    match tag {
        Some("str") => return Ok(Value::String(text.to_string())),
        Some("int") | Some("float") | Some("bool") | Some("null") | None => {}
        Some(_) => return Ok(Value::String(text.to_string())),
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::String(text.to_string()));
    }
    Ok(match text {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "-.inf" | ".nan" | ".NaN" | ".NAN" => {
            return Err(format!(
                "{text} is not a number JSON can carry; quote it if it is meant as text"
            ));
        }
        _ => resolve_number(text).unwrap_or_else(|| Value::String(text.to_string())),
    })
}

fn resolve_number(text: &str) -> Option<Value> {
    let b = text.as_bytes();
    let first = *b.first()?;
    if !(first.is_ascii_digit() || first == b'-' || first == b'+' || first == b'.') {
        return None;
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(Value::from);
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).ok().map(Value::from);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Some(Value::from(i));
        }
        if let Ok(u) = text.parse::<u64>() {
            return Some(Value::from(u));
        }
    }
    // Core schema float: [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let valid_float = {
        let mut s = digits;
        let int_len = s.bytes().take_while(|c| c.is_ascii_digit()).count();
        s = &s[int_len..];
        let mut frac_len = 0;
        if let Some(rest) = s.strip_prefix('.') {
            frac_len = rest.bytes().take_while(|c| c.is_ascii_digit()).count();
            s = &rest[frac_len..];
        } else if int_len == 0 {
            return None;
        }
        if int_len + frac_len == 0 {
            return None;
        }
        if let Some(rest) = s.strip_prefix(['e', 'E']) {
            let rest = rest.strip_prefix(['-', '+']).unwrap_or(rest);
            !rest.is_empty() && rest.bytes().all(|c| c.is_ascii_digit())
        } else {
            s.is_empty()
        }
    };
    if !valid_float {
        return None;
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(text: &str) -> Node {
        parse_stream(text).unwrap().remove(0).root.unwrap()
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let n =
            one("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: v1\ng: 0x1f\nh: -3\ni: 1e3\nj: 1.2.3\n");
        let v = n.to_json();
        assert_eq!(v["a"], 1);
        assert_eq!(v["b"], "1");
        assert_eq!(v["c"], true);
        assert!(v["d"].is_null());
        assert_eq!(v["e"], 1.5);
        assert_eq!(v["f"], "v1");
        assert_eq!(v["g"], 31);
        assert_eq!(v["h"], -3);
        assert_eq!(v["i"], 1000.0);
        assert_eq!(v["j"], "1.2.3");
    }

    #[test]
    fn finds_lines_of_paths() {
        let text = "spec:\n  http:\n  - route:\n    - destination:\n        host: reviews\n    retries:\n      attempts: 3\n";
        let n = one(text);
        let p = Path::root("spec")
            .field("http")
            .index(0)
            .field("retries")
            .field("attempts");
        assert_eq!(n.line_of(&p), 7);
        let missing = Path::root("spec").field("http").index(0).field("timeout");
        assert_eq!(
            n.line_of(&missing),
            3,
            "falls back to the nearest present ancestor"
        );
    }

    #[test]
    fn splits_documents_with_lines() {
        let docs = parse_stream("a: 1\n---\n# comment\nb: 2\n---\n").unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0].line, 1);
        assert_eq!(docs[1].line, 4);
        assert!(docs[2].root.is_none());
    }

    #[test]
    fn refuses_duplicate_keys_with_line() {
        let e = parse_stream("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("\"a\" is defined twice"), "{e}");
    }

    #[test]
    fn expands_anchors_and_merges() {
        let v = one("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\nlist: [*b]\n").to_json();
        assert_eq!(v["other"]["x"], 1);
        assert_eq!(v["other"]["y"], 3);
        assert_eq!(v["list"][0]["y"], 2);
    }

    #[test]
    fn refuses_alias_bombs_and_deep_nesting() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = parse_stream(&bomb).unwrap_err();
        assert!(e.message.contains("more than"), "{e}");

        let deep = "[".repeat(MAX_DEPTH + 5) + &"]".repeat(MAX_DEPTH + 5);
        let e = parse_stream(&deep).unwrap_err();
        assert!(e.message.contains("deeper"), "{e}");
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let e = parse_stream("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(e.line >= 2, "{e}");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse_bounded(&s);
        }

        #[test]
        fn integers_round_trip(i in any::<i64>()) {
            let v = one(&format!("n: {i}\n")).to_json();
            prop_assert_eq!(v["n"].as_i64(), Some(i));
        }

        #[test]
        fn quoted_strings_stay_strings(s in "[a-z0-9 .:-]{0,20}") {
            let v = one(&format!("s: '{s}'\n")).to_json();
            prop_assert_eq!(v["s"].as_str(), Some(s.as_str()));
        }
    }
}
