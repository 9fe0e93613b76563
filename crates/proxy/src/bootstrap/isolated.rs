//! Reading the bootstrap in a child process, so that the proxy's own memory never
//! holds Envoy's API descriptors.
//!
//! Decoding Envoy's JSON takes the descriptor pool of the whole Envoy API
//! ([`common::envoy_json`]): about 6 MB allocated while the bootstrap is read,
//! against about 0.5 MB of heap the synced bookinfo sidecar keeps. Freed, those
//! megabytes stay resident in the allocator (glibc returns only the free space at
//! the top of an arena), which alone was a quarter of the sidecar's RSS.
//!
//! So the `proxy` binary runs itself once more with [`CHILD_ENV`] set and the same
//! arguments. The child reads, decodes and checks the bootstrap exactly as
//! [`Bootstrap::from_config`] does and writes one [`Report`] (protobuf) to its
//! stdout: the decoded bootstrap with its warnings, or the error's text. The parent
//! takes the decoded message ([`Bootstrap::from_accepted`]) and reports the
//! child's error word for word. When the child cannot run (no `/proc/self/exe`, a
//! crash), the parent says why in its log and reads the bootstrap itself.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap as EnvoyBootstrap;
use prost::Message as _;

use super::{Bootstrap, BootstrapError};
use crate::config::Config;

/// Set in the child's environment: read the bootstrap, write the report, exit.
pub const CHILD_ENV: &str = "MIZZEN_PROXY_READ_BOOTSTRAP";

/// What the child sends back.
#[derive(Clone, PartialEq, prost::Message)]
struct Report {
    /// The bootstrap as read and merged, node overrides applied.
    #[prost(message, optional, tag = "1")]
    bootstrap: Option<EnvoyBootstrap>,
    /// One sentence per ignored field.
    #[prost(string, repeated, tag = "2")]
    warnings: Vec<String>,
    /// Why the bootstrap was refused; empty when it was accepted.
    #[prost(string, tag = "3")]
    error: String,
}

/// True in the child process started by [`read`].
pub fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// The child's whole job: reads the bootstrap `config` names and writes the
/// report to `out`.
pub fn report(config: &Config, out: &mut impl Write) -> std::io::Result<()> {
    let report = match Bootstrap::from_config(config) {
        Ok(bootstrap) => Report {
            bootstrap: Some(bootstrap.raw),
            warnings: bootstrap.warnings,
            error: String::new(),
        },
        Err(err) => Report {
            error: err.to_string(),
            ..Report::default()
        },
    };
    out.write_all(&report.encode_to_vec())?;
    out.flush()
}

/// Reads the bootstrap in a child process running this executable with this
/// process's arguments (so the `proxy` binary's own flags); see the module
/// documentation.
pub fn read(config: &Config) -> Result<Bootstrap, BootstrapError> {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run_child(&args) {
        Ok(report) => accept(config, report),
        Err(why) => {
            tracing::warn!(
                "could not read the bootstrap in a child process ({why}); reading it in the \
                 proxy itself, which keeps a few MB more memory"
            );
            Bootstrap::from_config(config)
        }
    }
}

fn executable() -> Result<PathBuf, String> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().map_err(|err| format!("cannot find the proxy's executable: {err}"))
}

fn run_child(args: &[OsString]) -> Result<Report, String> {
    let exe = executable()?;
    let output = Command::new(&exe)
        .args(args)
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| format!("cannot start {}: {err}", exe.display()))?;
    if !output.status.success() {
        return Err(format!("the child exited with {}", output.status));
    }
    Report::decode(output.stdout.as_slice())
        .map_err(|err| format!("the child's report does not decode: {err}"))
}

fn accept(config: &Config, report: Report) -> Result<Bootstrap, BootstrapError> {
    if !report.error.is_empty() {
        return Err(BootstrapError::Reported(report.error));
    }
    let origin = config.config_path.display().to_string();
    Bootstrap::from_accepted(
        &origin,
        report.bootstrap.unwrap_or_default(),
        report.warnings,
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use clap::Parser as _;
    use prost::Message as _;

    use super::{Report, accept, report};
    use crate::bootstrap::Bootstrap;
    use crate::config::Config;

    fn config(yaml: &str, extra: &[&str]) -> (tempfile::NamedTempFile, Config) {
        let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
        file.write_all(yaml.as_bytes()).unwrap();
        let mut args = vec!["proxy", "-c", file.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        let config = Config::try_parse_from(args).unwrap();
        (file, config)
    }

    fn round_trip(config: &Config) -> Result<Bootstrap, crate::bootstrap::BootstrapError> {
        let mut out = Vec::new();
        report(config, &mut out).unwrap();
        accept(config, Report::decode(out.as_slice()).unwrap())
    }

    const ADS: &str = r#"
node: { id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local", cluster: a.default }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 15000 } } }
stats_config: { use_all_default_tags: false }
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    grpc_services: [{ envoy_grpc: { cluster_name: xds-grpc } }]
  lds_config: { ads: {} }
  cds_config: { ads: {} }
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: 15010 } } }
"#;

    #[test]
    fn the_report_carries_what_reading_in_process_gives() {
        let (_file, config) = config(ADS, &["--service-node", "router~1.2.3.4~gw.ns~ns.svc"]);
        let direct = Bootstrap::from_config(&config).unwrap();
        let relayed = round_trip(&config).unwrap();
        assert_eq!(relayed.raw, direct.raw);
        assert_eq!(relayed.node.id, "router~1.2.3.4~gw.ns~ns.svc");
        assert_eq!(relayed.admin, direct.admin);
        assert_eq!(relayed.ads, direct.ads);
        assert!(relayed.ads.as_ref().is_some_and(|ads| ads.delta));
        assert_eq!(relayed.warnings, direct.warnings);
        assert!(
            relayed.warnings.iter().any(|w| w.contains("stats_config")),
            "{:?}",
            relayed.warnings
        );
        assert_eq!(relayed.static_clusters, direct.static_clusters);
    }

    #[test]
    fn a_refusal_is_relayed_word_for_word() {
        let bad = ADS.replace(
            "stats_config: { use_all_default_tags: false }",
            "header_prefix: x-custom",
        );
        let (_file, config) = config(&bad, &[]);
        let direct = Bootstrap::from_config(&config).unwrap_err().to_string();
        let relayed = round_trip(&config).unwrap_err().to_string();
        assert_eq!(relayed, direct);
        assert!(relayed.contains("header_prefix"), "{relayed}");
    }
}
