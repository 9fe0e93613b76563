//! The proxy's command line: the subset of Envoy's flags istio-agent starts Envoy
//! with that the proxy understands, each with an environment twin.
//!
//! It owns parsing and documenting the flags; it does not read the bootstrap file
//! ([`crate::bootstrap`] does, with [`Config::config_path`], [`Config::config_yaml`]
//! and the node overrides from here). Any Envoy flag not listed is refused by clap,
//! so a start script that relies on one fails loudly instead of being half obeyed.

use std::path::PathBuf;

use clap::{ArgMatches, CommandFactory, FromArgMatches};
use common::runtime::{LogArgs, LogFormat};

/// The whole command line: the proxy's own flags ([`Config`], top-level as in
/// Envoy: `proxy -c FILE --concurrency 2`), or a subcommand. `-c` is required
/// unless a subcommand is given, and the two do not mix (`proxy -c f init` is
/// refused).
#[derive(Debug, Clone)]
pub enum Cli {
    /// `proxy -c FILE ...`: run the proxy.
    Run(Config),
    /// `proxy init ...`: install or remove the traffic capture rules and exit.
    Init(crate::init::Config),
    /// `proxy agent ...`: serve the workload certificate to a stock Envoy over
    /// SDS on a Unix socket (istio-agent's SDS job) until stopped.
    Agent(crate::agent::Config),
    /// `proxy sidecar ...`: run as an injected pod's sidecar (bootstrap from
    /// the pod's environment, then the proxy in-process).
    Sidecar(Box<crate::sidecar::Config>),
    /// `proxy wait ...`: wait for the sidecar's readiness (postStart hook).
    Wait(crate::sidecar::WaitConfig),
}

impl CommandFactory for Cli {
    fn command() -> clap::Command {
        Config::command()
            .subcommand(crate::init::Config::command())
            .subcommand(crate::agent::Config::command())
            .subcommand(crate::sidecar::Config::command())
            .subcommand(crate::sidecar::WaitConfig::command())
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true)
    }

    fn command_for_update() -> clap::Command {
        Self::command()
    }
}

impl FromArgMatches for Cli {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Cli, clap::Error> {
        match matches.subcommand() {
            Some(("init", init)) => Ok(Cli::Init(crate::init::Config::from_arg_matches(init)?)),
            Some(("agent", agent)) => {
                Ok(Cli::Agent(crate::agent::Config::from_arg_matches(agent)?))
            }
            Some(("sidecar", sidecar)) => Ok(Cli::Sidecar(Box::new(
                crate::sidecar::Config::from_arg_matches(sidecar)?,
            ))),
            Some(("wait", wait)) => Ok(Cli::Wait(crate::sidecar::WaitConfig::from_arg_matches(
                wait,
            )?)),
            Some((other, _)) => Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidSubcommand,
                format!("unknown subcommand `{other}`\n"),
            )),
            None => Ok(Cli::Run(Config::from_arg_matches(matches)?)),
        }
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Cli::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Parser for Cli {}

/// Flags of the `proxy` binary (named as Envoy's where they mean the same).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "proxy",
    version,
    about = "Mizzen's data plane: started like Envoy (-c BOOTSTRAP), it reads the same bootstrap \
             and consumes the same xDS."
)]
pub struct Config {
    /// Envoy bootstrap file (envoy.config.bootstrap.v3.Bootstrap) as YAML, or as JSON
    /// when the name ends in `.json` (istio-agent's envoy-rev.json works as is).
    #[arg(short = 'c', long, env = "PROXY_CONFIG_PATH", value_name = "FILE")]
    pub config_path: PathBuf,
    /// Bootstrap fragment (YAML or JSON) merged over --config-path the way Envoy
    /// does: protobuf MergeFrom, so fields it sets replace the file's, messages merge
    /// field by field, and repeated fields (clusters, listeners) are appended.
    #[arg(long, env = "PROXY_CONFIG_YAML", value_name = "YAML")]
    pub config_yaml: Option<String>,
    /// Number of worker threads of the runtime (Envoy's --concurrency);
    /// defaults to the number of CPUs this process may run on. 0 runs one worker,
    /// as in Envoy. One worker is a single-threaded runtime (one event loop, as
    /// an Envoy worker); more use tokio's work-stealing scheduler.
    #[arg(long, env = "PROXY_CONCURRENCY", default_value_t = default_concurrency())]
    pub concurrency: usize,
    /// Log level: Envoy's names (trace, debug, info, warning/warn, error, critical,
    /// off) or a tracing filter such as `proxy=debug,info`.
    #[arg(short = 'l', long, env = "MIZZEN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log output: `text` or `json`. Unlike Envoy's --log-format this takes no
    /// spdlog pattern.
    #[arg(long, env = "MIZZEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds inbound listeners drain on SIGTERM, at most (Envoy's
    /// --drain-time-s): the drain lasts the shorter of this and
    /// --termination-drain-s. A listener removed by LDS stops accepting at
    /// once; its open connections finish on their own.
    #[arg(
        long,
        env = "PROXY_DRAIN_TIME_S",
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    pub drain_time_s: u64,
    /// Seconds the last step of a shutdown may take, at most (Envoy's
    /// --parent-shutdown-time-s): after the drain, the admin server gets the
    /// shorter of this and 5 s to finish, then the process exits and any
    /// connection still open is closed.
    #[arg(
        long,
        env = "PROXY_PARENT_SHUTDOWN_TIME_S",
        default_value_t = 900,
        value_name = "SECONDS"
    )]
    pub parent_shutdown_time_s: u64,
    /// Cluster of this proxy's node; replaces the bootstrap's `node.cluster`
    /// (Envoy's --service-cluster).
    #[arg(long, env = "PROXY_SERVICE_CLUSTER", value_name = "NAME")]
    pub service_cluster: Option<String>,
    /// Id of this proxy's node; replaces the bootstrap's `node.id` (Envoy's
    /// --service-node).
    #[arg(long, env = "PROXY_SERVICE_NODE", value_name = "ID")]
    pub service_node: Option<String>,
    /// File to write the admin listener's bound address to once it listens
    /// (Envoy's --admin-address-path); useful with port 0 in the bootstrap.
    #[arg(long, env = "PROXY_ADMIN_ADDRESS_PATH", value_name = "FILE")]
    pub admin_address_path: Option<PathBuf>,
    /// The mesh CA (citadel, or istiod's CA) to get this workload's certificate
    /// from, as istio-agent does (`CA_ADDR`); e.g. `citadel.istio-system:15012`.
    /// It serves the `default` and `ROOTCA` secrets that ISTIO_MUTUAL clusters
    /// and mTLS listener chains name from the `sds-grpc` cluster. Without it,
    /// such clusters and chains carry no traffic (and say why in the log).
    #[arg(long, env = "CA_ADDR", value_name = "HOST:PORT")]
    pub ca_addr: Option<String>,
    /// PEM roots that verify the CA's serving certificate.
    #[arg(
        long,
        env = "PROXY_CA_ROOT_CERT",
        value_name = "FILE",
        default_value = "/var/run/secrets/istio/root-cert.pem"
    )]
    pub ca_root_cert: PathBuf,
    /// The service account token sent to the CA (read on every request).
    #[arg(
        long,
        env = "PROXY_TOKEN_FILE",
        value_name = "FILE",
        default_value = "/var/run/secrets/tokens/istio-token"
    )]
    pub token_file: PathBuf,
    /// The trust domain of this workload's SPIFFE id
    /// (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`, the last two
    /// from the bootstrap's node metadata).
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Serve istio-agent's status port here (Istio: 0.0.0.0:15020):
    /// `/healthz/ready` and `/stats/prometheus` (Istio's metrics with the
    /// proxy's own). Off unless given.
    #[arg(long, env = "PROXY_STATUS_ADDR", value_name = "ADDR")]
    pub status_addr: Option<std::net::SocketAddr>,
    /// Serve the sidecar's readiness port here (Istio: 0.0.0.0:15021):
    /// `/healthz/ready`, 200 only once the first full configuration arrived
    /// and while not draining. Off unless given.
    #[arg(long, env = "PROXY_HEALTH_ADDR", value_name = "ADDR")]
    pub health_addr: Option<std::net::SocketAddr>,
    /// Serve Envoy's Prometheus port here (Istio: 0.0.0.0:15090):
    /// `/stats/prometheus`. Off unless given.
    #[arg(long, env = "PROXY_PROMETHEUS_ADDR", value_name = "ADDR")]
    pub prometheus_addr: Option<std::net::SocketAddr>,
    /// On SIGTERM, how long inbound listeners drain (they stop accepting and
    /// readiness turns false) while outbound traffic keeps flowing, before
    /// the proxy exits (istio-agent's terminationDrainDuration).
    /// `/quitquitquit` exits at once.
    #[arg(
        long,
        env = "TERMINATION_DRAIN_DURATION_SECONDS",
        default_value_t = 5,
        value_name = "SECONDS"
    )]
    pub termination_drain_s: u64,
    /// Write Istio's JSON access log line for every HTTP request to this
    /// file (`-` for standard output). Off unless given.
    #[arg(long, env = "PROXY_ACCESS_LOG", value_name = "FILE")]
    pub access_log: Option<PathBuf>,
}

impl Config {
    /// Flags for `config_path` with every other flag at its default (tests).
    pub fn for_path(config_path: impl Into<PathBuf>) -> Config {
        Config {
            config_path: config_path.into(),
            config_yaml: None,
            concurrency: default_concurrency(),
            log_level: "info".to_owned(),
            log_format: LogFormat::Text,
            drain_time_s: 600,
            parent_shutdown_time_s: 900,
            service_cluster: None,
            service_node: None,
            admin_address_path: None,
            ca_addr: None,
            ca_root_cert: PathBuf::from("/var/run/secrets/istio/root-cert.pem"),
            token_file: PathBuf::from("/var/run/secrets/tokens/istio-token"),
            trust_domain: "cluster.local".to_owned(),
            status_addr: None,
            health_addr: None,
            prometheus_addr: None,
            termination_drain_s: 5,
            access_log: None,
        }
    }

    /// Worker threads to start: `--concurrency`, at least 1.
    pub fn workers(&self) -> usize {
        self.concurrency.max(1)
    }

    /// The logging flags as the shared [`LogArgs`], with Envoy's level names
    /// translated to tracing's (`warning` → `warn`, `critical` → `error`).
    pub fn log_args(&self) -> LogArgs {
        LogArgs {
            log_format: self.log_format,
            log_level: tracing_level(&self.log_level),
        }
    }
}

/// Envoy's log level names as a tracing filter; anything else passes through.
pub fn tracing_level(level: &str) -> String {
    match level {
        "warning" => "warn".to_owned(),
        "critical" => "error".to_owned(),
        other => other.to_owned(),
    }
}

/// Envoy's default --concurrency: the CPUs available to this process (at least 1).
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn envoy_style_flags_parse() {
        let config = Config::try_parse_from([
            "proxy",
            "-c",
            "/etc/istio/proxy/envoy-rev.json",
            "--concurrency",
            "2",
            "--drain-time-s",
            "45",
            "--parent-shutdown-time-s",
            "60",
            "--service-node",
            "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local",
            "--service-cluster",
            "a.ns",
            "-l",
            "warning",
            "--config-yaml",
            "admin: {}",
        ])
        .expect("parses");
        assert_eq!(config.concurrency, 2);
        assert_eq!(config.workers(), 2);
        assert_eq!(config.drain_time_s, 45);
        assert_eq!(config.parent_shutdown_time_s, 60);
        assert_eq!(config.service_cluster.as_deref(), Some("a.ns"));
        assert_eq!(config.log_args().log_level, "warn");
        assert_eq!(config.config_yaml.as_deref(), Some("admin: {}"));
    }

    #[test]
    fn config_path_is_required_and_unknown_envoy_flags_are_refused() {
        assert!(Config::try_parse_from(["proxy"]).is_err());
        assert!(
            Config::try_parse_from(["proxy", "-c", "b.yaml", "--disable-hot-restart"]).is_err()
        );
    }

    #[test]
    fn concurrency_defaults_to_the_cpus() {
        let config = Config::try_parse_from(["proxy", "-c", "b.yaml"]).expect("parses");
        assert_eq!(config.concurrency, default_concurrency());
        assert!(config.concurrency >= 1);
    }

    #[test]
    fn help_is_generated() {
        Config::command().debug_assert();
        Cli::command().debug_assert();
    }

    #[test]
    fn the_envoy_style_line_still_runs_the_proxy() {
        let cli =
            Cli::try_parse_from(["proxy", "-c", "b.yaml", "--concurrency", "2"]).expect("parses");
        let Cli::Run(config) = cli else {
            panic!("expected the proxy to run: {cli:?}");
        };
        assert_eq!(config.config_path, PathBuf::from("b.yaml"));
        assert_eq!(config.concurrency, 2);
    }

    #[test]
    fn init_is_a_subcommand_that_needs_no_bootstrap() {
        let cli =
            Cli::try_parse_from(["proxy", "init", "-p", "16001", "--dry-run"]).expect("parses");
        let Cli::Init(init) = cli else {
            panic!("expected init: {cli:?}");
        };
        assert_eq!(init.envoy_port, 16001);
        assert!(init.dry_run);
    }

    #[test]
    fn agent_is_a_subcommand_that_needs_no_bootstrap() {
        let cli = Cli::try_parse_from([
            "proxy",
            "agent",
            "--ca-addr",
            "citadel.istio-system:15012",
            "--namespace",
            "default",
            "--service-account",
            "reviews",
            "--sds-socket",
            "/tmp/sds/socket",
        ])
        .expect("parses");
        let Cli::Agent(agent) = cli else {
            panic!("expected agent: {cli:?}");
        };
        assert_eq!(agent.ca_addr, "citadel.istio-system:15012");
        assert_eq!(
            agent.spiffe_id(),
            "spiffe://cluster.local/ns/default/sa/reviews"
        );
        assert_eq!(agent.sds_socket, PathBuf::from("/tmp/sds/socket"));
        assert!(Cli::try_parse_from(["proxy", "-c", "b.yaml", "agent"]).is_err());
    }

    #[test]
    fn config_path_stays_required_without_a_subcommand_and_does_not_mix_with_one() {
        let missing = Cli::try_parse_from(["proxy"]).expect_err("-c is required");
        assert_eq!(
            missing.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert!(Cli::try_parse_from(["proxy", "--concurrency", "2"]).is_err());
        assert!(Cli::try_parse_from(["proxy", "-c", "b.yaml", "init"]).is_err());
        assert!(Cli::try_parse_from(["proxy", "init", "-c", "b.yaml"]).is_err());
    }
}
