//! `mizzen kube-inject`: the injector's sidecar added offline to Kubernetes
//! manifests, as `istioctl kube-inject` does.
//!
//! It reads `-f FILE` (or `-` for standard input), runs
//! [`injector::kube_inject::run`] — the same [`injector::inject`] the webhook
//! uses — over the pod templates of Deployments, StatefulSets, DaemonSets,
//! ReplicaSets, Jobs, CronJobs and bare Pods, passes every other document
//! through, and writes the multi-document YAML to `-o FILE` or standard output.
//! What it injected, skipped (opted out) and warned about goes to standard error.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{ArgAction, Args};
use injector::options::{self, Options, Values};

use crate::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};

/// `mizzen kube-inject`.
#[derive(Debug, Clone, Args)]
pub struct KubeInjectArgs {
    /// The manifests (multi-document YAML); `-` reads standard input.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub filename: String,
    /// Write the injected manifests here instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The revision written into each pod's sidecar.istio.io/status (as the
    /// injector of that revision would).
    #[arg(long, default_value = options::DEFAULT_REVISION)]
    pub revision: String,
    /// Helm-style values with the mesh-wide sidecar defaults (Istio's
    /// values.global.proxy.* and meshConfig.defaultConfig.*).
    #[arg(long, visible_alias = "valuesFile", value_name = "FILE")]
    pub values: Option<PathBuf>,
    /// Native sidecars (an init container with restartPolicy Always,
    /// Kubernetes >= 1.28) or classic ones; offline there is no API server
    /// to ask, so say `false` for older clusters.
    #[arg(long, action = ArgAction::Set, default_value_t = true, value_name = "true|false")]
    pub native_sidecars: bool,
    /// Registry of Mizzen's images; the sidecar image is <hub>/proxy:<tag>.
    #[arg(long, default_value = options::DEFAULT_HUB)]
    pub hub: String,
    /// Tag of Mizzen's images.
    #[arg(long, default_value = options::DEFAULT_TAG)]
    pub tag: String,
    /// The sidecar image in full, instead of --hub and --tag.
    #[arg(long, conflicts_with_all = ["hub", "tag"])]
    pub proxy_image: Option<String>,
    /// Pilot's ADS address as sidecars dial it.
    #[arg(long, default_value = options::DEFAULT_DISCOVERY_ADDRESS)]
    pub discovery_address: String,
    /// Citadel's address as sidecars dial it.
    #[arg(long, default_value = options::DEFAULT_CA_ADDRESS)]
    pub ca_address: String,
    /// The mesh's trust domain.
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
}

impl KubeInjectArgs {
    fn options(&self, values: Values) -> Options {
        Options {
            revision: self.revision.clone(),
            proxy_image: self
                .proxy_image
                .clone()
                .unwrap_or_else(|| options::image(&self.hub, &self.tag)),
            discovery_address: self.discovery_address.clone(),
            ca_address: self.ca_address.clone(),
            trust_domain: self.trust_domain.clone(),
            native_sidecars: self.native_sidecars,
            values,
        }
    }
}

/// Runs `mizzen kube-inject`; returns the exit status: 0 done, 1 a workload
/// could not be injected, 2 unreadable input or values.
pub fn run(args: &KubeInjectArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let values = match &args.values {
        None => Values::default(),
        Some(path) => match Values::from_file(path) {
            Ok((values, warnings)) => {
                for w in warnings {
                    let _ = writeln!(err, "Warning: {w}");
                }
                values
            }
            Err(e) => {
                let _ = writeln!(err, "Error: {e}");
                return EXIT_USAGE;
            }
        },
    };
    let (text, name) = if args.filename == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            let _ = writeln!(err, "Error: cannot read standard input: {e}");
            return EXIT_USAGE;
        }
        (text, "<stdin>".to_string())
    } else {
        match std::fs::read_to_string(&args.filename) {
            Ok(text) => (text, args.filename.clone()),
            Err(e) => {
                let _ = writeln!(err, "Error: cannot read {} (-f): {e}", args.filename);
                return EXIT_USAGE;
            }
        }
    };
    let report = match injector::kube_inject::run(&text, &name, &args.options(values)) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "Error: {e}");
            return EXIT_INVALID;
        }
    };
    for w in &report.warnings {
        let _ = writeln!(err, "Warning: {w}");
    }
    for (id, why) in &report.skipped {
        let _ = writeln!(err, "Skipped {id}: {why}");
    }
    let written = match &args.output {
        None => out.write_all(report.output.as_bytes()),
        Some(path) => std::fs::write(path, &report.output),
    };
    if let Err(e) = written {
        let target = args
            .output
            .as_ref()
            .map_or("standard output".to_string(), |p| p.display().to_string());
        let _ = writeln!(err, "Error: cannot write {target}: {e}");
        return EXIT_USAGE;
    }
    let _ = writeln!(
        err,
        "Injected {} workload(s){}",
        report.injected.len(),
        if report.injected.is_empty() {
            String::new()
        } else {
            format!(": {}", report.injected.join(", "))
        }
    );
    EXIT_OK
}
