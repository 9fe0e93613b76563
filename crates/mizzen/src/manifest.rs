//! `mizzen manifest generate`: the Kubernetes objects of an installation, from
//! the Helm chart `deploy/charts/mizzen` (built into the binary) and istioctl's
//! inputs: IstioOperator files (`-f`), `--set spec.path=value`, `--revision`.
//!
//! The path: the chart's `values.yaml` → the profile's values
//! (`profiles/<name>.yaml`) → each IstioOperator overlay mapped to values
//! ([`operator`]) → the chart rendered by [`template`] → every document parsed
//! back into an object → the CRDs ([`common::crd`]) prepended → objects in Helm's
//! install order. `mizzen install` applies exactly this list.

pub mod operator;
pub mod template;

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Map, Value};

use crate::EXIT_OK;

/// The chart, as built into the binary: (path inside the chart, text).
pub const CHART_FILES: &[(&str, &str)] = &[
    (
        "templates/_helpers.tpl",
        include_str!("../../../deploy/charts/mizzen/templates/_helpers.tpl"),
    ),
    (
        "templates/citadel.yaml",
        include_str!("../../../deploy/charts/mizzen/templates/citadel.yaml"),
    ),
    (
        "templates/galley.yaml",
        include_str!("../../../deploy/charts/mizzen/templates/galley.yaml"),
    ),
    (
        "templates/gateways.yaml",
        include_str!("../../../deploy/charts/mizzen/templates/gateways.yaml"),
    ),
    (
        "templates/injector.yaml",
        include_str!("../../../deploy/charts/mizzen/templates/injector.yaml"),
    ),
    (
        "templates/mesh.yaml",
        include_str!("../../../deploy/charts/mizzen/templates/mesh.yaml"),
    ),
    (
        "templates/pilot.yaml",
        include_str!("../../../deploy/charts/mizzen/templates/pilot.yaml"),
    ),
];

/// The chart's default values.
pub const VALUES: &str = include_str!("../../../deploy/charts/mizzen/values.yaml");

/// The chart's `Chart.yaml`.
pub const CHART_YAML: &str = include_str!("../../../deploy/charts/mizzen/Chart.yaml");

/// Each profile's values file.
pub const PROFILE_FILES: &[(&str, &str)] = &[
    (
        "default",
        include_str!("../../../deploy/charts/mizzen/profiles/default.yaml"),
    ),
    (
        "demo",
        include_str!("../../../deploy/charts/mizzen/profiles/demo.yaml"),
    ),
    (
        "minimal",
        include_str!("../../../deploy/charts/mizzen/profiles/minimal.yaml"),
    ),
    (
        "production",
        include_str!("../../../deploy/charts/mizzen/profiles/production.yaml"),
    ),
];

/// The namespace Mizzen installs into unless told otherwise (Istio's).
pub const DEFAULT_NAMESPACE: &str = "istio-system";

/// Why the manifests could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An IstioOperator file could not be read or is not one.
    #[error("{0}")]
    Input(String),
    /// Fields Mizzen cannot honour (each with its file, line and path).
    #[error("the install options ask for what Mizzen does not support:\n{}", .0.join("\n"))]
    Unsupported(Vec<String>),
    /// The chart did not render (a bug in the chart or the renderer).
    #[error("rendering the chart: {0}")]
    Template(#[from] template::TemplateError),
    /// A rendered document is not YAML (a bug in the chart).
    #[error("rendered {template} is not valid YAML: {message}")]
    Rendered {
        /// The template.
        template: String,
        /// The parser's complaint.
        message: String,
    },
    /// The CRDs could not be generated.
    #[error("generating the CRDs: {0}")]
    Crds(String),
}

/// What to install: istioctl's options.
#[derive(Debug, Clone, Default, Args)]
pub struct InstallOptions {
    /// IstioOperator files (install.istio.io/v1alpha1), applied in order.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// An IstioOperator spec field, as istioctl: `profile=demo`,
    /// `meshConfig.accessLogFile=/dev/stdout`, `components.pilot.enabled=false`,
    /// `values.global.proxy.resources.requests.cpu=50m`. Applied after -f.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// Install as this control-plane revision (names get `-<revision>`; only
    /// namespaces or pods labelled istio.io/rev=<revision> are injected).
    #[arg(short = 'r', long)]
    pub revision: Option<String>,
}

/// An installation worked out from the options.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The namespace of the control plane.
    pub namespace: String,
    /// The revision (`None`: the default one).
    pub revision: Option<String>,
    /// The chart values rendered.
    pub values: Value,
    /// Fields kept but not acted on, as `file: spec.path: what happens`.
    pub warnings: Vec<String>,
}

/// Works out the chart values from the options.
pub fn plan(options: &InstallOptions) -> Result<Plan, Error> {
    // Each overlay with where it came from, for messages.
    let mut overlays: Vec<(Source, Map<String, Value>)> = Vec::new();
    for file in &options.files {
        let (source, spec) = read_operator(file)?;
        overlays.push((source, spec));
    }
    for set_arg in &options.sets {
        let (path, value) = operator::parse_set(set_arg).map_err(Error::Input)?;
        let mut spec = Value::Object(Map::new());
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        operator::set(&mut spec, &parts, value);
        if let Value::Object(map) = spec {
            overlays.push((Source::flag(format!("--set {set_arg}")), map));
        }
    }
    if let Some(revision) = &options.revision {
        let mut map = Map::new();
        map.insert("revision".into(), Value::String(revision.clone()));
        overlays.push((Source::flag(format!("--revision {revision}")), map));
    }

    let profile = overlays
        .iter()
        .rev()
        .find_map(|(_, o)| o.get("profile").and_then(Value::as_str))
        .unwrap_or("default")
        .to_string();
    let mut values = base_values();
    merge(&mut values, &profile_values(&profile)?);

    let mut namespace = DEFAULT_NAMESPACE.to_string();
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    for (source, overlay) in &overlays {
        let mut outcome = operator::Outcome::default();
        if let Some(ns) = operator::apply(overlay, &mut values, &mut outcome) {
            namespace = ns;
        }
        errors.extend(outcome.errors.iter().map(|(p, w)| source.describe(p, w)));
        warnings.extend(outcome.warnings.iter().map(|(p, w)| source.describe(p, w)));
    }
    let revision = values
        .get("revision")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map(str::to_string);
    if let Some(r) = &revision
        && !is_dns_label(r)
    {
        errors.push(format!(
            "revision {r:?}: must be a DNS label (lowercase letters, digits, '-'; at most 63)"
        ));
    }
    if !is_dns_label(&namespace) {
        errors.push(format!("namespace {namespace:?}: must be a DNS label"));
    }
    if !errors.is_empty() {
        return Err(Error::Unsupported(errors));
    }
    Ok(Plan {
        namespace,
        revision,
        values,
        warnings,
    })
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Where an overlay came from, to name it in messages.
#[derive(Debug)]
struct Source {
    /// The file, or the flag.
    label: String,
    /// The IstioOperator's name and YAML tree, for a file.
    resource: Option<(String, std::sync::Arc<common::yaml::Node>)>,
}

impl Source {
    fn flag(label: String) -> Source {
        Source {
            label,
            resource: None,
        }
    }

    /// `file:line: IstioOperator name: spec.path: why`, or `--set …: spec.path: why`.
    fn describe(&self, path: &str, why: &str) -> String {
        match &self.resource {
            Some((name, tree)) => format!(
                "{}:{}: IstioOperator {name}: {path}: {why}",
                self.label,
                tree.line_of(&field_path(path))
            ),
            None => format!("{}: {path}: {why}", self.label),
        }
    }
}

/// `spec.a.b[2].c` as a [`common::path::Path`].
fn field_path(text: &str) -> common::path::Path {
    let mut path = common::path::Path::empty();
    for part in text.split('.') {
        let (field, index) = match part.split_once('[') {
            Some((f, i)) => (f, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        path = path.field(field);
        if let Some(i) = index {
            path = path.index(i);
        }
    }
    path
}

/// Reads an IstioOperator file, checking it with galley's rules first so a
/// misspelt field is reported with its line.
fn read_operator(file: &std::path::Path) -> Result<(Source, Map<String, Value>), Error> {
    let loaded = common::load::load_path(file);
    if let Some(e) = loaded.errors.first() {
        return Err(Error::Input(e.to_string()));
    }
    let resource = match loaded.resources.as_slice() {
        [one] => one,
        [] => {
            return Err(Error::Input(format!(
                "{}: no IstioOperator in it",
                file.display()
            )));
        }
        more => {
            return Err(Error::Input(format!(
                "{}: {} documents in one file; give each IstioOperator its own -f",
                file.display(),
                more.len()
            )));
        }
    };
    if resource.kind != "IstioOperator" {
        return Err(Error::Input(format!(
            "{}:{}: a {} ({}); -f takes IstioOperator files (install.istio.io/v1alpha1)",
            resource.origin.file, resource.origin.line, resource.kind, resource.api_version
        )));
    }
    let problems = galley::validate_messages(resource, DEFAULT_NAMESPACE);
    if let Some(m) = problems.iter().find(|m| m.is_error()) {
        return Err(Error::Input(m.to_string()));
    }
    let spec = match resource.tree.to_json().get("spec") {
        Some(Value::Object(spec)) => spec.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => {
            return Err(Error::Input(format!(
                "{}:{}: spec must be a map",
                resource.origin.file, resource.origin.line
            )));
        }
    };
    let name = resource
        .meta
        .name
        .clone()
        .unwrap_or_else(|| "(unnamed)".into());
    let source = Source {
        label: file.display().to_string(),
        resource: Some((name, resource.tree.clone())),
    };
    Ok((source, spec))
}

/// The chart's `values.yaml`.
pub fn base_values() -> Value {
    serde_saphyr::from_str(VALUES).unwrap_or(Value::Null)
}

/// A profile's values.
pub fn profile_values(name: &str) -> Result<Value, Error> {
    let Some((_, text)) = PROFILE_FILES.iter().find(|(n, _)| *n == name) else {
        let known: Vec<String> = operator::PROFILES
            .iter()
            .map(|(n, what)| format!("  {n}: {what}"))
            .collect();
        return Err(Error::Input(format!(
            "unknown profile {name:?}; the profiles are:\n{}",
            known.join("\n")
        )));
    };
    let v: Value =
        serde_saphyr::from_str(text).map_err(|e| Error::Input(format!("profile {name}: {e}")))?;
    Ok(if v.is_null() {
        Value::Object(Map::new())
    } else {
        v
    })
}

/// The chart's first entry of `ingressGateways` or `egressGateways`, the
/// template of a gateway an IstioOperator adds.
pub fn chart_gateway(kind: &str) -> Value {
    base_values()
        .get(kind)
        .and_then(|l| l.get(0))
        .cloned()
        .unwrap_or(Value::Object(Map::new()))
}

/// Helm's merge of values: maps merge key by key, anything else replaces.
pub fn merge(into: &mut Value, over: &Value) {
    match (into, over) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (slot, v) => *slot = v.clone(),
    }
}

/// Renders the chart for `plan`: the control plane's objects in install order,
/// without the CRDs.
pub fn render(plan: &Plan) -> Result<Vec<Value>, Error> {
    let chart: Value = serde_saphyr::from_str(CHART_YAML).unwrap_or(Value::Null);
    let root = serde_json::json!({
        "Values": plan.values,
        "Release": {
            "Name": "mizzen",
            "Namespace": plan.namespace,
            "Service": "Helm",
            "IsInstall": true,
            "IsUpgrade": false,
        },
        "Chart": {
            "Name": chart.get("name"),
            "Version": chart.get("version"),
            "AppVersion": chart.get("appVersion"),
        },
    });
    let templates = template::Templates::parse(CHART_FILES)?;
    let mut objects = Vec::new();
    for (name, text) in templates.render(&root)? {
        for doc in split_documents(&text) {
            let value: Value = serde_saphyr::from_str(doc).map_err(|e| Error::Rendered {
                template: name.clone(),
                message: e.to_string(),
            })?;
            if !value.is_null() {
                objects.push(value);
            }
        }
    }
    objects.sort_by_key(install_rank);
    Ok(objects)
}

/// The CRDs of every Istio kind, then [`render`]'s objects.
pub fn render_all(plan: &Plan) -> Result<Vec<Value>, Error> {
    let mut objects: Vec<Value> = common::crd::generate()
        .map_err(Error::Crds)?
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    objects.extend(render(plan)?);
    Ok(objects)
}

fn split_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter().filter(|d| !d.trim().is_empty()).collect()
}

/// Helm's install order (`releaseutil.InstallOrder`); kinds it does not list go
/// last, webhook configurations among them (so the webhooks' own pods are not
/// held up by them).
pub fn install_rank(object: &Value) -> usize {
    const ORDER: &[&str] = &[
        "Namespace",
        "NetworkPolicy",
        "ResourceQuota",
        "LimitRange",
        "PodDisruptionBudget",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "DaemonSet",
        "Pod",
        "ReplicaSet",
        "Deployment",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "Job",
        "CronJob",
    ];
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// The objects as a multi-document YAML stream.
pub fn to_yaml_stream(objects: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(o).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// `mizzen manifest`.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ManifestCommand,
}

/// `mizzen manifest` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ManifestCommand {
    /// Print the Kubernetes objects `mizzen install` would apply (CRDs first,
    /// then the control plane in install order) as YAML.
    Generate(GenerateArgs),
}

/// `mizzen manifest generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// What to install.
    #[command(flatten)]
    pub options: InstallOptions,
    /// Leave the CRDs out (as `helm template` without --include-crds).
    #[arg(long)]
    pub skip_crds: bool,
}

/// Runs `mizzen manifest …`.
pub fn run(args: &ManifestArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let ManifestCommand::Generate(args) = &args.command;
    let result = plan(&args.options).and_then(|plan| {
        for w in &plan.warnings {
            let _ = writeln!(err, "Warning: {w}");
        }
        if args.skip_crds {
            render(&plan)
        } else {
            render_all(&plan)
        }
    });
    match result
        .map_err(|e| e.to_string())
        .and_then(|o| to_yaml_stream(&o))
    {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "Error: {e}");
            crate::EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests;
