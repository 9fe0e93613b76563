//! The command line, as clap types. Every flag here works; options istioctl has
//! that Mizzen does not support are refused by clap as unknown.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Mizzen: Istio's architecture rebuilt in Rust.
#[derive(Debug, Parser)]
#[command(name = "mizzen", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate Istio configuration files, as `istioctl validate` does: every
    /// document is checked against Istio's schema and field rules. Exits 0 when
    /// there are no errors (warnings allowed), 1 when there are.
    Validate(ValidateArgs),
    /// Analyze Istio configuration files, as `istioctl analyze --use-kube=false`
    /// does: validation plus cross-resource checks (missing gateways, subsets,
    /// hosts, conflicts), reported with Istio's IST codes. Exits 79 when a message
    /// reaches --failure-threshold.
    Analyze(AnalyzeArgs),
    /// Inspect citadel, the mesh CA: `mizzen ca list` prints the certificates it
    /// issued, newest first, from its ledger. Exits 1 when the ledger is missing.
    Ca(crate::ca::CaArgs),
    /// Mint service-account tokens for local mode: `mizzen token create` prints a
    /// token citadel accepts, signed by the key in --key-dir.
    Token(crate::token::TokenArgs),
    /// Show every proxy connected to pilot and, per xDS type, whether it ACKed
    /// the last response (SYNCED, STALE, NACKED, NOT SENT), from pilot's
    /// /debug/syncz. Exits 1 when pilot cannot be reached.
    ProxyStatus(crate::proxy::StatusArgs),
    /// Show the clusters, listeners, routes or endpoints pilot generates for one
    /// proxy, from pilot's /debug/config_dump (what pilot sends, not what the
    /// proxy reports). Exits 1 when pilot cannot be reached or does not know the
    /// proxy.
    ProxyConfig(crate::proxy::ConfigArgs),
    /// Run the control plane on this machine: galley, citadel and pilot on
    /// loopback, serving the mesh config in --config (watched for changes).
    /// Prints what listens where, streams every component's log behind its name,
    /// and stops them all on Ctrl-C. Exits 1 when a port is busy or a component
    /// fails.
    Up(crate::up::UpArgs),
    /// Run a workload as a pod: its own network namespace on the mesh bridge,
    /// traffic captured by `proxy init` as istio-init does, a sidecar (Mizzen's
    /// proxy or Envoy) with a workload certificate from citadel, and the app
    /// after `--`. The pod joins the mesh of `mizzen up --pods` once ready and
    /// leaves it on Ctrl-C. That needs root; without it (or with --no-capture)
    /// the pod gets a loopback address and its sidecar's listeners are bound
    /// there (Istio's captureMode: NONE), beside plain `mizzen up`.
    Run(crate::run::RunArgs),
    /// The whole mesh on this machine: the control plane, bookinfo's pods with
    /// sidecars (Mizzen's proxy or Envoy) and captured traffic, then the guide's
    /// scenarios (routing by header, cookie and weight, faults, mirroring, retries,
    /// timeouts, circuit breaking, authorization, STRICT mTLS), each applied from the seed YAML
    /// and shown with real traffic as expected vs observed. Stays up with URLs
    /// to try, or exits with --once (1 when a scenario did not match). Pods get
    /// network namespaces with captured traffic as root; without root (or with
    /// --no-capture), loopback addresses without capture.
    Demo(crate::demo::DemoArgs),
    /// Generate files from Mizzen's types: `mizzen gen crds` writes the
    /// CustomResourceDefinitions of every Istio kind and version (structural
    /// schemas) into --out, one file per kind; --check only compares and exits
    /// 1 when they differ.
    Gen(crate::generate::GenArgs),
    /// Kubernetes manifests of an installation, as `istioctl manifest generate`:
    /// `mizzen manifest generate [-f istio-operator.yaml] [--set profile=demo]
    /// [--revision R]` prints the CRDs and the control plane (the Helm chart
    /// deploy/charts/mizzen, rendered) as YAML.
    Manifest(crate::manifest::ManifestArgs),
    /// Install Mizzen into the current cluster (KUBECONFIG), as `istioctl
    /// install`: the CRDs and the control plane from the chart, server-side
    /// applied (a second run upgrades), then waits until every Deployment is
    /// available. Same -f/--set/--revision as `manifest generate`.
    Install(crate::install::InstallArgs),
    /// Remove Mizzen from the current cluster, as `istioctl uninstall`: one
    /// revision (--revision), or everything with --purge (CRDs included).
    Uninstall(crate::install::UninstallArgs),
    /// Add the sidecar to Kubernetes manifests offline, as `istioctl
    /// kube-inject` does: the injector's own template for the pod templates of
    /// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and
    /// Pods (those labelled sidecar.istio.io/inject=false are left alone), other
    /// documents unchanged. Exits 1 when a workload cannot be injected.
    KubeInject(crate::kube_inject::KubeInjectArgs),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// One message per line, in Istio's format.
    #[default]
    Text,
    /// A JSON array of messages.
    Json,
    /// A YAML list of messages.
    Yaml,
}

/// Message levels for thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Threshold {
    /// Informational messages and above.
    #[value(alias = "INFO")]
    Info,
    /// Warnings and errors.
    #[value(alias = "WARNING")]
    Warning,
    /// Errors only.
    #[value(alias = "ERROR")]
    Error,
}

impl Threshold {
    /// The message level this threshold starts at.
    pub fn level(self) -> galley::message::Level {
        use galley::message::Level;
        match self {
            Threshold::Info => Level::Info,
            Threshold::Warning => Level::Warning,
            Threshold::Error => Level::Error,
        }
    }
}

/// Inputs shared by `validate` and `analyze`.
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Files or directories of YAML/JSON to read (directories recursively); `-`
    /// reads standard input. May be repeated or comma-separated.
    #[arg(short = 'f', long = "filename", value_delimiter = ',')]
    pub filenames: Vec<PathBuf>,
    /// Namespace for resources that set none.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `mizzen validate`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Inputs and output.
    #[command(flatten)]
    pub input: InputArgs,
    /// Print only errors (hide warnings).
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `mizzen analyze`.
#[derive(Debug, Clone, Args)]
pub struct AnalyzeArgs {
    /// Files or directories, as with -f.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Inputs and output.
    #[command(flatten)]
    pub input: InputArgs,
    /// Exit non-zero (79) when a message at or above this level is found.
    #[arg(long, value_enum, default_value_t = Threshold::Error)]
    pub failure_threshold: Threshold,
    /// Print messages at or above this level.
    #[arg(long, value_enum, default_value_t = Threshold::Info)]
    pub output_threshold: Threshold,
    /// Hide messages matching `CODE=Kind name[.namespace]` (`*` allowed in the
    /// resource part), as istioctl's --suppress. May be repeated.
    #[arg(short = 'S', long = "suppress")]
    pub suppress: Vec<String>,
    /// List the analyzers and exit.
    #[arg(short = 'L', long)]
    pub list_analyzers: bool,
    /// Read from a live cluster. Only `false` is supported: Mizzen analyzes files.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub use_kube: bool,
}
