//! Lexing: a template's text split into texts and `{{ … }}` actions (Go's trim
//! markers applied), and an action's words as tokens.

use serde_json::Value;

use super::{Result, err};

/// One `{{ … }}` between texts.
pub(super) struct Action {
    pub(super) body: String,
    pub(super) line: usize,
}

pub(super) enum Piece {
    Text(String),
    Action(Action),
}

/// Splits `text` into texts and actions, applying the trim markers.
pub(super) fn lex(name: &str, text: &str) -> Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut rest = text;
    let mut line = 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(start) = rest.find("{{") else {
            push_text(&mut pieces, rest, trim_next);
            break;
        };
        let mut before = &rest[..start];
        if trim_next {
            before = before.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_left = after.starts_with("- ") || after.starts_with("-\n");
        if trim_left {
            before = before.trim_end();
        }
        if !before.is_empty() {
            pieces.push(Piece::Text(before.to_string()));
        }
        line += rest[..start].matches('\n').count();
        let inner = if trim_left { &after[1..] } else { after };
        let end = find_close(inner).ok_or_else(|| err(name, line, "unclosed action: no }}"))?;
        let mut body = &inner[..end];
        trim_next = body.ends_with(" -") || body.ends_with("\n-");
        if trim_next {
            body = &body[..body.len() - 1];
        }
        pieces.push(Piece::Action(Action {
            body: body.trim().to_string(),
            line,
        }));
        line += body.matches('\n').count();
        rest = &inner[end + 2..];
    }
    Ok(pieces)
}

fn push_text(pieces: &mut Vec<Piece>, text: &str, trim: bool) {
    let text = if trim { text.trim_start() } else { text };
    if !text.is_empty() {
        pieces.push(Piece::Text(text.to_string()));
    }
}

/// The offset of the `}}` closing an action, skipping string literals and comments.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    if s.trim_start().starts_with("/*") {
        let end = s.find("*/")?;
        return s[end..].find("}}").map(|o| end + o);
    }
    while i + 1 < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'}' if bytes[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Str(String),
    Num(Value),
    Open,
    Close,
    Bar,
    Declare,
    Comma,
}

pub(super) fn tokens(name: &str, line: usize, s: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |i: &mut usize| {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
            *i += 1;
        }
        chars[start..*i].iter().collect::<String>()
    };
    let path = |i: &mut usize| {
        let mut fields = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
                *i += 1;
            }
            if start == *i {
                break;
            }
            fields.push(chars[start..*i].iter().collect::<String>());
        }
        fields
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => (out.push(Token::Open), i += 1).1,
            ')' => (out.push(Token::Close), i += 1).1,
            '|' => (out.push(Token::Bar), i += 1).1,
            ',' => (out.push(Token::Comma), i += 1).1,
            ':' if chars.get(i + 1) == Some(&'=') => (out.push(Token::Declare), i += 2).1,
            '.' => out.push(Token::Dot(path(&mut i))),
            '$' => {
                i += 1;
                let name = word(&mut i);
                out.push(Token::Var(name, path(&mut i)));
            }
            '"' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(name, line, "unterminated string")),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match chars.get(i) {
                                Some('n') => value.push('\n'),
                                Some('t') => value.push('\t'),
                                Some(&c) => value.push(c),
                                None => return Err(err(name, line, "unterminated string")),
                            }
                        }
                        Some(&c) => value.push(c),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Str(value));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let number = serde_json::from_str::<Value>(&text)
                    .map_err(|_| err(name, line, format!("bad number {text}")))?;
                out.push(Token::Num(number));
            }
            c if c.is_alphabetic() || c == '_' => out.push(Token::Ident(word(&mut i))),
            other => return Err(err(name, line, format!("unexpected character {other:?}"))),
        }
    }
    Ok(out)
}
