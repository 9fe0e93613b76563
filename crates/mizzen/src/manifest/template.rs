//! The part of Go's `text/template` (with Helm's functions) that Mizzen's chart
//! uses, so `mizzen install` and `mizzen manifest generate` render
//! `deploy/charts/mizzen` without Helm. `crates/mizzen/tests/manifest.rs` renders
//! every profile with both and compares the objects.
//!
//! Supported: text with `{{ }}` actions and Go's trim markers (`{{-`, `-}}`);
//! comments; `if` / `else if` / `else` / `end`; `range` over lists (optionally
//! `$v :=` or `$i, $v :=`); `with`; `define` and the `include` function; fields of
//! `.`, `$` and `$var`; string, number and boolean literals; parentheses;
//! pipelines; the functions `include`, `toYaml`, `nindent`, `indent`, `quote`,
//! `default`, `not`, `and`, `or`, `eq`, `ne`, `concat`, `empty`. Anything else is
//! refused with the template's name and line, never guessed.

use std::collections::HashMap;

use serde_json::Value;

use lex::{Piece, Token, lex, tokens};

mod lex;

/// Why a template could not be parsed or rendered.
#[derive(Debug, thiserror::Error)]
#[error("{template}:{line}: {message}")]
pub struct TemplateError {
    /// The template file (`templates/pilot.yaml`).
    pub template: String,
    /// Line of the action.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

type Result<T, E = TemplateError> = std::result::Result<T, E>;

/// Parsed templates and their `define`d blocks.
#[derive(Debug, Default)]
pub struct Templates {
    files: Vec<(String, Vec<Node>)>,
    defines: HashMap<String, Vec<Node>>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Output(Pipe),
    If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
    Range {
        vars: Vec<String>,
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With(Pipe, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipe {
    cmds: Vec<Vec<Operand>>,
    at: Pos,
}

#[derive(Debug, Clone, Copy)]
struct Pos {
    file: usize,
    line: usize,
}

#[derive(Debug, Clone)]
enum Operand {
    /// `.a.b` (empty path: `.` itself).
    Dot(Vec<String>),
    /// `$name.a.b` (`$` is the name "").
    Var(String, Vec<String>),
    Func(String),
    Lit(Value),
    Sub(Pipe),
}

impl Templates {
    /// Parses `files` (name, text). Files whose name starts with `_` only define
    /// blocks and render nothing (Helm's helpers).
    pub fn parse(files: &[(&str, &str)]) -> Result<Templates> {
        let mut out = Templates::default();
        for (index, (name, text)) in files.iter().enumerate() {
            let mut parser = Parser::new(name, index, text)?;
            let nodes = parser.block(&mut out.defines, true)?;
            if let Some((keyword, line)) = parser.pending {
                return Err(err(name, line, format!("unexpected {{{{{keyword}}}}}")));
            }
            out.files.push((name.to_string(), nodes));
        }
        Ok(out)
    }

    /// Renders every template that is not a helper with `root` as `.`, in order.
    pub fn render(&self, root: &Value) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (name, nodes) in &self.files {
            if name.rsplit('/').next().is_some_and(|n| n.starts_with('_')) {
                continue;
            }
            let mut scope = Scope {
                templates: self,
                root,
                vars: vec![(String::new(), root.clone())],
                depth: 0,
            };
            let mut text = String::new();
            scope.run(nodes, root, &mut text)?;
            out.push((name.clone(), text));
        }
        Ok(out)
    }

    fn file_name(&self, index: usize) -> &str {
        self.files
            .get(index)
            .map_or("template", |(n, _)| n.as_str())
    }
}

fn err(file: &str, line: usize, message: impl Into<String>) -> TemplateError {
    TemplateError {
        template: file.to_string(),
        line,
        message: message.into(),
    }
}

struct Parser<'a> {
    name: &'a str,
    file: usize,
    pieces: std::vec::IntoIter<Piece>,
    /// The keyword (`end`, `else …`) that ended the last block, with its line and
    /// the rest of its tokens.
    pending: Option<(String, usize)>,
    pending_tokens: Vec<Token>,
}

impl<'a> Parser<'a> {
    fn new(name: &'a str, file: usize, text: &str) -> Result<Self> {
        Ok(Parser {
            name,
            file,
            pieces: lex(name, text)?.into_iter(),
            pending: None,
            pending_tokens: Vec::new(),
        })
    }

    /// Parses nodes until `end`/`else` (left in `pending`) or the end of input.
    fn block(&mut self, defines: &mut HashMap<String, Vec<Node>>, top: bool) -> Result<Vec<Node>> {
        let mut nodes = Vec::new();
        while let Some(piece) = self.pieces.next() {
            let action = match piece {
                Piece::Text(t) => {
                    nodes.push(Node::Text(t));
                    continue;
                }
                Piece::Action(a) => a,
            };
            if action.body.starts_with("/*") {
                continue;
            }
            let line = action.line;
            let mut toks = tokens(self.name, line, &action.body)?;
            let keyword = match toks.first() {
                Some(Token::Ident(k))
                    if matches!(
                        k.as_str(),
                        "if" | "else" | "end" | "range" | "with" | "define"
                    ) =>
                {
                    k.clone()
                }
                _ => {
                    nodes.push(Node::Output(self.pipe(line, &toks)?));
                    continue;
                }
            };
            toks.remove(0);
            match keyword.as_str() {
                "end" | "else" => {
                    self.pending = Some((keyword, line));
                    self.pending_tokens = toks;
                    return Ok(nodes);
                }
                "if" => {
                    let mut branches = Vec::new();
                    let mut cond = self.pipe(line, &toks)?;
                    let mut otherwise = Vec::new();
                    loop {
                        let body = self.block(defines, false)?;
                        let (word, at) = self.take_pending(line, "if")?;
                        let rest = std::mem::take(&mut self.pending_tokens);
                        branches.push((cond, body));
                        if word == "end" {
                            break;
                        }
                        match rest.first() {
                            Some(Token::Ident(k)) if k == "if" => {
                                cond = self.pipe(at, &rest[1..])?;
                            }
                            None => {
                                otherwise = self.block(defines, false)?;
                                self.expect_end(line, "if")?;
                                break;
                            }
                            _ => {
                                return Err(err(
                                    self.name,
                                    at,
                                    "expected {{else}} or {{else if …}}",
                                ));
                            }
                        }
                    }
                    nodes.push(Node::If(branches, otherwise));
                }
                "range" | "with" => {
                    let mut vars = Vec::new();
                    let mut rest = &toks[..];
                    if keyword == "range"
                        && let Some(declare) = rest.iter().position(|t| *t == Token::Declare)
                    {
                        for t in &rest[..declare] {
                            match t {
                                Token::Var(v, p) if p.is_empty() => vars.push(v.clone()),
                                Token::Comma => {}
                                _ => return Err(err(self.name, line, "bad range variables")),
                            }
                        }
                        rest = &rest[declare + 1..];
                    }
                    let pipe = self.pipe(line, rest)?;
                    let body = self.block(defines, false)?;
                    let (word, _) = self.take_pending(line, &keyword)?;
                    let otherwise = if word == "else" {
                        let b = self.block(defines, false)?;
                        self.expect_end(line, &keyword)?;
                        b
                    } else {
                        Vec::new()
                    };
                    nodes.push(if keyword == "range" {
                        Node::Range {
                            vars,
                            pipe,
                            body,
                            otherwise,
                        }
                    } else {
                        Node::With(pipe, body, otherwise)
                    });
                }
                _ => {
                    // define
                    let Some(Token::Str(block_name)) = toks.first() else {
                        return Err(err(self.name, line, "{{define}} needs a quoted name"));
                    };
                    if !top {
                        return Err(err(self.name, line, "{{define}} only at the top level"));
                    }
                    let block_name = block_name.clone();
                    let body = self.block(defines, false)?;
                    self.expect_end(line, "define")?;
                    defines.insert(block_name, body);
                }
            }
        }
        Ok(nodes)
    }

    fn take_pending(&mut self, line: usize, what: &str) -> Result<(String, usize)> {
        self.pending.take().ok_or_else(|| {
            err(
                self.name,
                line,
                format!("{{{{{what}}}}} has no {{{{end}}}}"),
            )
        })
    }

    fn expect_end(&mut self, line: usize, what: &str) -> Result<()> {
        match self.take_pending(line, what)? {
            (word, _) if word == "end" => Ok(()),
            (_, at) => Err(err(
                self.name,
                at,
                format!("a second {{{{else}}}} in {{{{{what}}}}}"),
            )),
        }
    }

    fn pipe(&self, line: usize, toks: &[Token]) -> Result<Pipe> {
        let at = Pos {
            file: self.file,
            line,
        };
        let mut cmds = vec![Vec::new()];
        let mut i = 0;
        while i < toks.len() {
            let operand = match &toks[i] {
                Token::Bar => {
                    cmds.push(Vec::new());
                    i += 1;
                    continue;
                }
                Token::Dot(p) => Operand::Dot(p.clone()),
                Token::Var(v, p) => Operand::Var(v.clone(), p.clone()),
                Token::Str(s) => Operand::Lit(Value::String(s.clone())),
                Token::Num(n) => Operand::Lit(n.clone()),
                Token::Ident(w) => match w.as_str() {
                    "true" => Operand::Lit(Value::Bool(true)),
                    "false" => Operand::Lit(Value::Bool(false)),
                    "nil" => Operand::Lit(Value::Null),
                    _ => Operand::Func(w.clone()),
                },
                Token::Open => {
                    let mut depth = 0;
                    let mut end = i;
                    for (j, t) in toks.iter().enumerate().skip(i) {
                        match t {
                            Token::Open => depth += 1,
                            Token::Close => {
                                depth -= 1;
                                if depth == 0 {
                                    end = j;
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    if end == i {
                        return Err(err(self.name, line, "unclosed ("));
                    }
                    let sub = self.pipe(line, &toks[i + 1..end])?;
                    i = end;
                    Operand::Sub(sub)
                }
                other => return Err(err(self.name, line, format!("unexpected {other:?}"))),
            };
            if let Some(cmd) = cmds.last_mut() {
                cmd.push(operand);
            }
            i += 1;
        }
        if cmds.iter().any(Vec::is_empty) {
            return Err(err(self.name, line, "empty command in pipeline"));
        }
        Ok(Pipe { cmds, at })
    }
}

/// Nested `include`s deeper than this are refused (a template including itself).
const MAX_DEPTH: usize = 32;

struct Scope<'t> {
    templates: &'t Templates,
    root: &'t Value,
    vars: Vec<(String, Value)>,
    depth: usize,
}

impl Scope<'_> {
    fn fail(&self, at: Pos, message: impl Into<String>) -> TemplateError {
        err(self.templates.file_name(at.file), at.line, message)
    }

    fn run(&mut self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<()> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Output(pipe) => {
                    let value = self.pipe(pipe, dot)?;
                    out.push_str(&self.print(pipe.at, &value)?);
                }
                Node::If(branches, otherwise) => {
                    let mut taken = false;
                    for (cond, body) in branches {
                        if truthy(&self.pipe(cond, dot)?) {
                            self.run(body, dot, out)?;
                            taken = true;
                            break;
                        }
                    }
                    if !taken {
                        self.run(otherwise, dot, out)?;
                    }
                }
                Node::With(pipe, body, otherwise) => {
                    let value = self.pipe(pipe, dot)?;
                    if truthy(&value) {
                        self.run(body, &value, out)?;
                    } else {
                        self.run(otherwise, dot, out)?;
                    }
                }
                Node::Range {
                    vars,
                    pipe,
                    body,
                    otherwise,
                } => {
                    let items: Vec<(Value, Value)> = match self.pipe(pipe, dot)? {
                        Value::Array(a) => a
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (Value::from(i), v))
                            .collect(),
                        Value::Object(m) => {
                            let mut entries: Vec<_> = m.into_iter().collect();
                            entries.sort_by(|a, b| a.0.cmp(&b.0));
                            entries
                                .into_iter()
                                .map(|(k, v)| (Value::String(k), v))
                                .collect()
                        }
                        Value::Null => Vec::new(),
                        other => {
                            return Err(self.fail(pipe.at, format!("range over {}", kind(&other))));
                        }
                    };
                    if items.is_empty() {
                        self.run(otherwise, dot, out)?;
                    }
                    let mark = self.vars.len();
                    for (key, item) in items {
                        match vars.as_slice() {
                            [v] => self.vars.push((v.clone(), item.clone())),
                            [k, v] => {
                                self.vars.push((k.clone(), key));
                                self.vars.push((v.clone(), item.clone()));
                            }
                            _ => {}
                        }
                        self.run(body, &item, out)?;
                        self.vars.truncate(mark);
                    }
                }
            }
        }
        Ok(())
    }

    fn print(&self, at: Pos, value: &Value) -> Result<String> {
        Ok(match value {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => number_text(n),
            other => {
                return Err(self.fail(
                    at,
                    format!("cannot print a {} as text; pipe it to toYaml", kind(other)),
                ));
            }
        })
    }

    fn pipe(&mut self, pipe: &Pipe, dot: &Value) -> Result<Value> {
        let mut carried: Option<Value> = None;
        for cmd in &pipe.cmds {
            let value = match &cmd[0] {
                Operand::Func(name) => {
                    let mut args = Vec::new();
                    for operand in &cmd[1..] {
                        args.push(self.operand(pipe.at, operand, dot)?);
                    }
                    if let Some(v) = carried.take() {
                        args.push(v);
                    }
                    self.call(pipe.at, name, args)?
                }
                operand => {
                    if cmd.len() > 1 || carried.is_some() {
                        return Err(self.fail(pipe.at, "arguments given to a value"));
                    }
                    self.operand(pipe.at, operand, dot)?
                }
            };
            carried = Some(value);
        }
        Ok(carried.unwrap_or(Value::Null))
    }

    fn operand(&mut self, at: Pos, operand: &Operand, dot: &Value) -> Result<Value> {
        Ok(match operand {
            Operand::Dot(path) => lookup(dot, path),
            Operand::Var(name, path) => {
                let Some((_, v)) = self.vars.iter().rev().find(|(n, _)| n == name) else {
                    return Err(self.fail(at, format!("undefined variable ${name}")));
                };
                lookup(v, path)
            }
            Operand::Lit(v) => v.clone(),
            Operand::Sub(p) => self.pipe(p, dot)?,
            Operand::Func(name) => self.call(at, name, Vec::new())?,
        })
    }

    fn call(&mut self, at: Pos, name: &str, args: Vec<Value>) -> Result<Value> {
        let want = |n: usize| -> Result<()> {
            if args.len() == n {
                Ok(())
            } else {
                Err(self.fail(
                    at,
                    format!("{name} takes {n} arguments, got {}", args.len()),
                ))
            }
        };
        Ok(match name {
            "include" => {
                want(2)?;
                let Value::String(block) = &args[0] else {
                    return Err(self.fail(at, "include needs a template name"));
                };
                let Some(nodes) = self.templates.defines.get(block) else {
                    return Err(self.fail(at, format!("no template {block:?} is defined")));
                };
                if self.depth >= MAX_DEPTH {
                    return Err(self.fail(at, "include nested too deeply"));
                }
                let mut inner = Scope {
                    templates: self.templates,
                    root: self.root,
                    vars: vec![(String::new(), args[1].clone())],
                    depth: self.depth + 1,
                };
                let mut text = String::new();
                inner.run(nodes, &args[1], &mut text)?;
                Value::String(text)
            }
            "toYaml" => {
                want(1)?;
                Value::String(to_yaml(&args[0]).map_err(|e| self.fail(at, e))?)
            }
            "nindent" | "indent" => {
                want(2)?;
                let width = args[0]
                    .as_u64()
                    .ok_or_else(|| self.fail(at, "indent width"))?;
                let text = self.print(at, &args[1])?;
                let pad = " ".repeat(width as usize);
                let body = text
                    .split('\n')
                    .map(|l| format!("{pad}{l}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                Value::String(if name == "nindent" {
                    format!("\n{body}")
                } else {
                    body
                })
            }
            "quote" => {
                want(1)?;
                let text = self.print(at, &args[0])?;
                Value::String(serde_json::to_string(&text).unwrap_or_default())
            }
            "default" => {
                want(2)?;
                if truthy(&args[1]) {
                    args[1].clone()
                } else {
                    args[0].clone()
                }
            }
            "not" => {
                want(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            "empty" => {
                want(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            "and" => args
                .iter()
                .find(|v| !truthy(v))
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Null),
            "or" => args
                .iter()
                .find(|v| truthy(v))
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Null),
            "eq" | "ne" => {
                if args.len() < 2 {
                    return Err(self.fail(at, format!("{name} takes at least 2 arguments")));
                }
                let equal = args[1..].iter().any(|v| same(v, &args[0]));
                Value::Bool(equal == (name == "eq"))
            }
            "concat" => {
                let mut all = Vec::new();
                for v in args {
                    match v {
                        Value::Array(a) => all.extend(a),
                        Value::Null => {}
                        other => {
                            return Err(self.fail(at, format!("concat of a {}", kind(&other))));
                        }
                    }
                }
                Value::Array(all)
            }
            other => {
                return Err(self.fail(
                    at,
                    format!("function {other:?} is not supported by Mizzen's chart renderer"),
                ));
            }
        })
    }
}

fn lookup(value: &Value, path: &[String]) -> Value {
    let mut v = value;
    for field in path {
        match v.get(field) {
            Some(next) => v = next,
            None => return Value::Null,
        }
    }
    v.clone()
}

/// Go's truth: false, 0, nil and empty strings, lists and maps are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

/// A number as Go prints Helm's values (float64): integers without a fraction.
fn number_text(n: &serde_json::Number) -> String {
    match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => i.to_string(),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
        _ => n.to_string(),
    }
}

/// Helm's `toYaml`: block YAML with map keys sorted, without the final newline.
pub fn to_yaml(value: &Value) -> Result<String, String> {
    match value {
        Value::Null => return Ok("null".into()),
        Value::Object(m) if m.is_empty() => return Ok("{}".into()),
        Value::Array(a) if a.is_empty() => return Ok("[]".into()),
        _ => {}
    }
    let text = serde_saphyr::to_string(&sorted(value)).map_err(|e| format!("toYaml: {e}"))?;
    Ok(text.trim_end_matches('\n').to_string())
}

fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut entries: Vec<_> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
