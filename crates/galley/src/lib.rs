//! Galley: Mizzen's configuration validation and analysis.
//!
//! It owns the verdict on Istio configuration: which resources Istio would refuse
//! (schema and field rules, IST0106) and which accepted combinations are probably
//! wrong (cross-resource analyzers, IST01xx). It does not read Kubernetes or files
//! on its own (callers hand it loaded resources) and it does not build proxy config.
//!
//! A check runs top-down: [`common::load`] has decoded documents (or produced
//! decode errors) → [`check`] turns decode errors into IST0106 messages → each
//! resource goes through [`validate`] (metadata, then the kind's rules in
//! `validate::{networking,security,…}`) → with `analyze`, the [`analyze`] module's
//! analyzers run over all resources together → [`message`] formats the result in
//! Istio's style. The same path serves the CLI (`mizzen validate/analyze`), the gRPC
//! `Validate` service ([`grpc`]) and the admission webhook ([`webhook`]), all
//! assembled by [`app::App`].

pub mod analyze;
pub mod app;
pub mod grpc;
pub mod message;
pub mod metrics;
pub mod validate;
pub mod webhook;

use common::load::Loaded;
use common::resource::Resource;

use message::{Message, codes};
use validate::Level;

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Namespace of resources that set none.
    pub default_namespace: String,
    /// Also run the cross-resource analyzers.
    pub analyze: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            default_namespace: "default".into(),
            analyze: false,
        }
    }
}

/// The result of a check.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Messages, errors first.
    pub messages: Vec<Message>,
    /// How many resources decoded.
    pub resources: usize,
    /// How many documents or inputs could not be decoded (each has an IST0106
    /// message).
    pub undecoded: usize,
}

impl Outcome {
    /// Whether any message is an error.
    pub fn has_errors(&self) -> bool {
        self.messages.iter().any(Message::is_error)
    }

    /// Counts of (errors, warnings, infos).
    pub fn counts(&self) -> (usize, usize, usize) {
        let c = |l| self.messages.iter().filter(|m| m.level == l).count();
        (c(Level::Error), c(Level::Warning), c(Level::Info))
    }
}

/// Validates (and with `opts.analyze`, analyzes) loaded resources.
pub fn check(loaded: &Loaded, opts: &CheckOptions) -> Outcome {
    let ns = opts.default_namespace.as_str();
    let mut messages: Vec<Message> = loaded
        .errors
        .iter()
        .map(|e| Message::from_decode_error(e, ns))
        .collect();
    for r in &loaded.resources {
        messages.extend(validate_messages(r, ns));
    }
    if opts.analyze {
        messages.extend(analyze::analyze(&loaded.resources, ns));
    }
    message::sort(&mut messages);
    Outcome {
        messages,
        resources: loaded.resources.len(),
        undecoded: loaded.errors.len(),
    }
}

/// The validation findings of one resource as messages: errors as IST0106
/// (SchemaValidationError), warnings as IST0133 (SchemaWarning), like Istio.
pub fn validate_messages(r: &Resource, default_ns: &str) -> Vec<Message> {
    validate::validate(r, default_ns)
        .into_iter()
        .map(|f| {
            let (code, prefix) = match f.level {
                Level::Error => (codes::SCHEMA_VALIDATION_ERROR, "Schema validation error"),
                Level::Warning | Level::Info => {
                    (codes::SCHEMA_WARNING, "Schema validation warning")
                }
            };
            let text = format!("{prefix}: {}: {}", f.path, f.message);
            let mut m = Message::about(code, r, default_ns, Some(&f.path), text);
            m.level = f.level;
            m
        })
        .collect()
}

/// Validates a YAML stream in memory: load, then [`check`].
pub fn check_str(yaml: &str, source_name: &str, opts: &CheckOptions) -> Outcome {
    check(&common::load::load_str(yaml, source_name), opts)
}
