//! `mizzen validate` and `mizzen analyze`: load inputs, run galley's checks, print.

use std::io::Write;
use std::path::PathBuf;

use common::load::{Loaded, load_path};
use galley::message::{Level, Message};
use galley::{CheckOptions, Outcome, check as run_check};
use serde::Serialize;

use crate::cli::{AnalyzeArgs, InputArgs, Output, ValidateArgs};
use crate::{EXIT_ANALYZE_ISSUES, EXIT_INVALID, EXIT_OK};

/// Why a command could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No input was named.
    #[error("no input: name files or directories with -f FILE (or -f - for standard input)")]
    NoInput,
    /// A --suppress value did not parse.
    #[error(
        "--suppress {0:?} must look like CODE=Kind name.namespace, e.g. \"IST0102=Namespace default\""
    )]
    BadSuppress(String),
    /// --use-kube=true was asked for.
    #[error(
        "--use-kube=true is not supported: mizzen analyze reads files; pass them with -f (or as arguments)"
    )]
    KubeUnsupported,
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    /// Encoding the output failed.
    #[error("cannot encode output: {0}")]
    Encode(String),
}

fn load_inputs(files: &[PathBuf]) -> Result<Loaded, Error> {
    if files.is_empty() {
        return Err(Error::NoInput);
    }
    let mut loaded = Loaded::default();
    for f in files {
        loaded.extend(load_path(f));
    }
    Ok(loaded)
}

/// `mizzen validate`.
pub fn validate(
    args: &ValidateArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<u8, Error> {
    let loaded = load_inputs(&args.input.filenames)?;
    let outcome = run_check(&loaded, &options(&args.input, false));
    let min = if args.quiet {
        Level::Error
    } else {
        Level::Info
    };
    let shown: Vec<&Message> = outcome.messages.iter().filter(|m| m.level >= min).collect();
    print_messages(&shown, args.input.output, out)?;
    summarize(&outcome, "validated", err)?;
    Ok(if outcome.has_errors() {
        EXIT_INVALID
    } else {
        EXIT_OK
    })
}

/// `mizzen analyze`.
pub fn analyze(args: &AnalyzeArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<u8, Error> {
    if args.list_analyzers {
        for a in galley::analyze::analyzers() {
            writeln!(out, "{}", a.name())?;
        }
        return Ok(EXIT_OK);
    }
    if args.use_kube {
        return Err(Error::KubeUnsupported);
    }
    let suppress = args
        .suppress
        .iter()
        .map(|s| Suppression::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let mut files = args.files.clone();
    files.extend(args.input.filenames.iter().cloned());
    let loaded = load_inputs(&files)?;
    let mut outcome = run_check(&loaded, &options(&args.input, true));
    outcome
        .messages
        .retain(|m| !suppress.iter().any(|s| s.matches(m)));
    let shown: Vec<&Message> = outcome
        .messages
        .iter()
        .filter(|m| m.level >= args.output_threshold.level())
        .collect();
    print_messages(&shown, args.input.output, out)?;
    summarize(&outcome, "analyzed", err)?;
    let failing = outcome
        .messages
        .iter()
        .any(|m| m.level >= args.failure_threshold.level());
    Ok(if failing {
        EXIT_ANALYZE_ISSUES
    } else {
        EXIT_OK
    })
}

fn options(input: &InputArgs, analyze: bool) -> CheckOptions {
    CheckOptions {
        default_namespace: input.namespace.clone(),
        analyze,
    }
}

/// A message as JSON/YAML output shows it: galley's fields plus Istio's
/// documentation link.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Shown<'a> {
    #[serde(flatten)]
    message: &'a Message,
    documentation_url: String,
    formatted: String,
}

fn print_messages(messages: &[&Message], output: Output, out: &mut dyn Write) -> Result<(), Error> {
    match output {
        Output::Text => {
            for m in messages {
                writeln!(out, "{m}")?;
            }
        }
        Output::Json | Output::Yaml => {
            let shown: Vec<Shown<'_>> = messages
                .iter()
                .map(|m| Shown {
                    message: m,
                    documentation_url: format!(
                        "https://istio.io/latest/docs/reference/config/analysis/{}/",
                        m.code.to_ascii_lowercase()
                    ),
                    formatted: m.to_string(),
                })
                .collect();
            let text = if output == Output::Json {
                serde_json::to_string_pretty(&shown).map_err(|e| Error::Encode(e.to_string()))?
                    + "\n"
            } else if shown.is_empty() {
                "[]\n".to_string()
            } else {
                serde_saphyr::to_string(&shown).map_err(|e| Error::Encode(e.to_string()))?
            };
            out.write_all(text.as_bytes())?;
        }
    }
    Ok(())
}

fn summarize(outcome: &Outcome, verb: &str, err: &mut dyn Write) -> Result<(), Error> {
    let (e, w, i) = outcome.counts();
    let plural = |n: usize, s: &str| {
        if n == 1 {
            format!("{n} {s}")
        } else {
            format!("{n} {s}s")
        }
    };
    let mut what = plural(outcome.resources + outcome.undecoded, "resource");
    if outcome.undecoded > 0 {
        what.push_str(&format!(" ({} could not be decoded)", outcome.undecoded));
    }
    if e == 0 && w == 0 && i == 0 {
        writeln!(err, "✔ {verb} {what}: no issues found")?;
    } else if e == 0 {
        writeln!(
            err,
            "✔ {verb} {what}: no errors ({}, {})",
            plural(w, "warning"),
            plural(i, "info message")
        )?;
    } else {
        writeln!(
            err,
            "✘ {verb} {what}: {}, {}; fix the errors above (each names its file, line and field)",
            plural(e, "error"),
            plural(w, "warning")
        )?;
    }
    Ok(())
}

/// A `--suppress CODE=Kind name.namespace` rule.
struct Suppression {
    code: String,
    kind: String,
    name_pattern: String,
}

impl Suppression {
    fn parse(s: &str) -> Result<Suppression, Error> {
        let bad = || Error::BadSuppress(s.to_string());
        let (code, resource) = s.split_once('=').ok_or_else(bad)?;
        let (kind, name) = resource.trim().split_once(' ').ok_or_else(bad)?;
        if code.trim().is_empty() || kind.is_empty() || name.trim().is_empty() {
            return Err(bad());
        }
        Ok(Suppression {
            code: code.trim().to_string(),
            kind: kind.to_string(),
            name_pattern: name.trim().to_string(),
        })
    }

    fn matches(&self, m: &Message) -> bool {
        if self.code != "*" && self.code != m.code {
            return false;
        }
        let Some(r) = &m.resource else {
            return false;
        };
        let full = if r.namespace.is_empty() {
            r.name.clone()
        } else {
            format!("{}.{}", r.name, r.namespace)
        };
        (self.kind == "*" || self.kind == r.kind) && glob(&self.name_pattern, &full)
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(tail) = text.strip_prefix(head) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("reviews.*", "reviews.default"));
        assert!(glob("*", "x"));
        assert!(!glob("reviews", "reviews.default"));
        assert!(glob("*.prod", "a.prod"));
    }

    #[test]
    fn suppressions_parse() {
        assert!(Suppression::parse("IST0102=Namespace default").is_ok());
        assert!(Suppression::parse("IST0102").is_err());
        assert!(Suppression::parse("IST0102=Namespace").is_err());
    }
}
