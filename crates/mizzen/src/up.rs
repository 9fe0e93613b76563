//! `mizzen up`: the control plane on one machine, without Kubernetes.
//!
//! It owns the local layout of the control plane (which component listens on
//! which port, where citadel keeps its keys) and the lifetime of the
//! components; each component's work is its own library's.
//!
//! The path of `mizzen up --config DIR`: [`UpArgs::plan`] checks the flags and
//! turns them into one command line per component ([`Plan`]) → [`preflight`]
//! binds every port once, so a busy one is refused before anything starts, naming
//! the port and the flag that moves it → then either [`process`] starts the
//! `galley`, `citadel` and `pilot` binaries with those command lines and relays
//! their logs with a prefix, or ([`UpArgs::in_process`]) [`inline`] parses the
//! same command lines into each library's `Config` and runs the three `App`s
//! in this process → both wait for every component's `/ready`, print what
//! listens where, and run until Ctrl-C or SIGTERM, when every component is
//! stopped gracefully; a component that exits on its own stops the others and
//! `mizzen up` exits 1.

pub mod inline;
pub mod process;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use common::runtime::LogArgs;

/// The directory under `--state-dir` where `mizzen run` writes its Pods.
pub const PODS_DIR: &str = "pods";

/// Exit status when the control plane could not start or a component failed.
pub const EXIT_FAILED: u8 = 1;

/// How long a component gets to answer `/ready` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a component gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// `mizzen up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// The mesh config: a directory (or one file) of Istio and Kubernetes YAML
    /// (Services, Pods, WorkloadEntries, ServiceEntries, VirtualServices, ...),
    /// watched by pilot for changes.
    #[arg(long, env = "MIZZEN_CONFIG", value_name = "DIR")]
    pub config: PathBuf,
    /// Run galley, citadel and pilot as libraries inside this process instead of
    /// starting their binaries.
    #[arg(long)]
    pub in_process: bool,
    /// Where the control plane keeps its state: citadel's keys, roots and
    /// certificate ledger go to `STATE_DIR/citadel` and survive restarts; the
    /// Pods `mizzen run` starts are written to `STATE_DIR/pods`, which pilot
    /// serves beside --config.
    #[arg(long, env = "MIZZEN_STATE_DIR", default_value = ".mizzen")]
    pub state_dir: PathBuf,
    /// The address every component listens on. Pods in network namespaces reach
    /// the control plane on their bridge's address, so `mizzen up` for pods
    /// binds that address or 0.0.0.0.
    #[arg(long, env = "MIZZEN_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Serve pods in network namespaces (`mizzen run`): create the pod bridge
    /// (--bridge, --subnet) and listen on its address instead of --bind. Needs
    /// root.
    #[arg(long)]
    pub pods: bool,
    /// The pod network, with --pods.
    #[command(flatten)]
    pub net: crate::run::NetArgs,
    /// Where the `galley`, `citadel` and `pilot` binaries are; by default the
    /// directory of this `mizzen` binary, then PATH.
    #[arg(long, env = "MIZZEN_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Ports.
    #[command(flatten)]
    pub ports: Ports,
    /// Logging, for every component.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The control plane's ports on `--bind`. Istio's where it has one; where two
/// components would share one in a single istiod (15012, 15014), pilot keeps
/// Istio's port and the other moves.
#[derive(Debug, Clone, Args)]
pub struct Ports {
    /// Pilot's plaintext xDS (ADS) port, where sidecars connect.
    #[arg(long, env = "MIZZEN_PILOT_XDS_PORT", default_value_t = 15010)]
    pub pilot_xds_port: u16,
    /// Pilot's metrics and debug port (`mizzen proxy-status` reads it).
    #[arg(long, env = "MIZZEN_PILOT_HTTP_PORT", default_value_t = 15014)]
    pub pilot_http_port: u16,
    /// Citadel's CA gRPC port (TLS), where sidecars get their certificates.
    #[arg(long, env = "MIZZEN_CITADEL_GRPC_PORT", default_value_t = 15012)]
    pub citadel_grpc_port: u16,
    /// Citadel's metrics port.
    #[arg(long, env = "MIZZEN_CITADEL_HTTP_PORT", default_value_t = 15024)]
    pub citadel_http_port: u16,
    /// Galley's gRPC Validate port.
    #[arg(long, env = "MIZZEN_GALLEY_GRPC_PORT", default_value_t = 15019)]
    pub galley_grpc_port: u16,
    /// Galley's admission webhook port (HTTPS).
    #[arg(long, env = "MIZZEN_GALLEY_WEBHOOK_PORT", default_value_t = 15017)]
    pub galley_webhook_port: u16,
    /// Galley's metrics port.
    #[arg(long, env = "MIZZEN_GALLEY_HTTP_PORT", default_value_t = 15016)]
    pub galley_http_port: u16,
}

/// A control-plane component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// Validation.
    Galley,
    /// The CA.
    Citadel,
    /// Config and discovery → xDS.
    Pilot,
}

impl Component {
    /// In start order.
    pub const ALL: [Component; 3] = [Component::Galley, Component::Citadel, Component::Pilot];

    /// The component's binary, and the prefix of its log lines.
    pub fn name(self) -> &'static str {
        match self {
            Component::Galley => "galley",
            Component::Citadel => "citadel",
            Component::Pilot => "pilot",
        }
    }
}

/// One listening address of the control plane.
#[derive(Debug, Clone)]
pub struct Listen {
    /// Whose.
    pub component: Component,
    /// What is served there.
    pub what: &'static str,
    /// The `mizzen up` flag that moves it.
    pub flag: &'static str,
    /// Where.
    pub addr: SocketAddr,
}

/// What `mizzen up` will start: each component's command line, and every
/// address they listen on.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Every address, in the order they are printed.
    pub listens: Vec<Listen>,
    /// Each component's flags (without the program name), in start order.
    pub commands: Vec<(Component, Vec<String>)>,
}

impl Plan {
    /// The address of `component`'s HTTP port (`/ready`, `/metrics`).
    pub fn http_addr(&self, component: Component) -> SocketAddr {
        self.listens
            .iter()
            .find(|l| l.component == component && l.what.starts_with("metrics"))
            .map(|l| l.addr)
            .expect("every component has a metrics port")
    }

    /// The table `mizzen up` prints once everything is ready.
    pub fn table(&self) -> String {
        let rows = self
            .listens
            .iter()
            .map(|l| {
                vec![
                    l.component.name().to_string(),
                    l.addr.to_string(),
                    l.what.to_string(),
                ]
            })
            .collect::<Vec<_>>();
        crate::table::render(&["COMPONENT", "LISTENS", "SERVES"], &rows, 3)
    }
}

/// Why `mizzen up` could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// A flag has a value that cannot work.
    #[error("{0}")]
    Flags(String),
    /// A port is already taken by another process.
    #[error(
        "{addr} ({component} {what}) is already in use: is another mesh running (`mizzen up`, istiod)? Stop it, or move this port with {flag}"
    )]
    PortBusy {
        /// The address.
        addr: SocketAddr,
        /// Whose port.
        component: &'static str,
        /// What it serves.
        what: &'static str,
        /// The flag that moves it.
        flag: &'static str,
    },
    /// A port cannot be bound for another reason.
    #[error("cannot listen on {addr} ({flag}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The flag that moves it.
        flag: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A component's binary is not where it was looked for.
    #[error(
        "cannot find the `{name}` binary in {searched}: build it (`cargo build --release -p {name}`), pass --bin-dir, or run with --in-process"
    )]
    MissingBinary {
        /// The binary.
        name: &'static str,
        /// Where it was looked for.
        searched: String,
    },
    /// A component could not be started.
    #[error("cannot start {name} ({program}): {source}")]
    Spawn {
        /// The component.
        name: &'static str,
        /// The program run.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A component could not be built in this process.
    #[error("{name} did not start: {reason}")]
    Start {
        /// The component.
        name: &'static str,
        /// Its error.
        reason: String,
    },
    /// A component did not answer `/ready` in time.
    #[error(
        "{name} did not become ready within {}s (GET http://{addr}/ready); its log above says why",
        READY_TIMEOUT.as_secs()
    )]
    NotReady {
        /// The component.
        name: &'static str,
        /// Its HTTP address.
        addr: SocketAddr,
    },
    /// A component stopped on its own.
    #[error("{name} exited ({status}); the other components were stopped")]
    Exited {
        /// The component.
        name: &'static str,
        /// How it ended.
        status: String,
    },
    /// The state directory cannot be created.
    #[error("cannot create the state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl UpArgs {
    /// `mizzen up --pods` on `bridge` with `subnet`, serving `config` with
    /// state in `state_dir`, the components in this process when
    /// `in_process`, logging warnings: the demo's and the e2e suite's control
    /// plane.
    pub fn for_pods(
        bridge: &str,
        subnet: &str,
        config: &std::path::Path,
        state_dir: &std::path::Path,
        in_process: bool,
    ) -> Result<UpArgs, String> {
        UpArgs::parse_with(
            &["--pods", "--bridge", bridge, "--subnet", subnet],
            config,
            state_dir,
            in_process,
        )
    }

    /// `mizzen up` on 127.0.0.1 (no pod bridge), otherwise as
    /// [`UpArgs::for_pods`]: for pods without capture.
    pub fn local(
        config: &std::path::Path,
        state_dir: &std::path::Path,
        in_process: bool,
    ) -> Result<UpArgs, String> {
        UpArgs::parse_with(&[], config, state_dir, in_process)
    }

    fn parse_with(
        extra: &[&str],
        config: &std::path::Path,
        state_dir: &std::path::Path,
        in_process: bool,
    ) -> Result<UpArgs, String> {
        #[derive(clap::Parser)]
        struct Wrap {
            #[command(flatten)]
            up: UpArgs,
        }
        let mut argv = vec!["up".to_string()];
        if in_process {
            argv.push("--in-process".into());
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv.extend(
            [
                "--config",
                &config.display().to_string(),
                "--state-dir",
                &state_dir.display().to_string(),
                "--log-level",
                "warn",
            ]
            .map(str::to_string),
        );
        <Wrap as clap::Parser>::try_parse_from(argv)
            .map(|w| w.up)
            .map_err(|e| e.to_string())
    }

    /// Where `mizzen run` writes the Pods it starts, served by pilot beside
    /// `--config`.
    pub fn pods_dir(&self) -> PathBuf {
        self.state_dir.join(PODS_DIR)
    }

    /// Checks the flags and lays out the components' command lines.
    pub fn plan(&self) -> Result<Plan, UpError> {
        if !self.config.exists() {
            return Err(UpError::Flags(format!(
                "--config {}: no such file or directory; give the directory of your mesh YAML (e.g. samples/bookinfo)",
                self.config.display()
            )));
        }
        let p = &self.ports;
        let bind = if self.pods {
            IpAddr::V4(self.net.subnet.0)
        } else {
            self.bind
        };
        let at = |port: u16| SocketAddr::new(bind, port);
        let listens = vec![
            listen(
                Component::Galley,
                "gRPC Validate",
                "--galley-grpc-port",
                at(p.galley_grpc_port),
            ),
            listen(
                Component::Galley,
                "admission webhook (HTTPS)",
                "--galley-webhook-port",
                at(p.galley_webhook_port),
            ),
            listen(
                Component::Galley,
                "metrics, /ready",
                "--galley-http-port",
                at(p.galley_http_port),
            ),
            listen(
                Component::Citadel,
                "CA gRPC (TLS): workload certificates",
                "--citadel-grpc-port",
                at(p.citadel_grpc_port),
            ),
            listen(
                Component::Citadel,
                "metrics, /ready",
                "--citadel-http-port",
                at(p.citadel_http_port),
            ),
            listen(
                Component::Pilot,
                "xDS (ADS, plaintext): sidecars and gateways",
                "--pilot-xds-port",
                at(p.pilot_xds_port),
            ),
            listen(
                Component::Pilot,
                "metrics, /ready, /debug (mizzen proxy-status)",
                "--pilot-http-port",
                at(p.pilot_http_port),
            ),
        ];
        for (i, l) in listens.iter().enumerate() {
            if l.addr.port() == 0 {
                return Err(UpError::Flags(format!(
                    "{} is 0: give a fixed port, since sidecars and `mizzen` commands need to know it",
                    l.flag
                )));
            }
            if let Some(other) = listens[..i].iter().find(|o| o.addr.port() == l.addr.port()) {
                return Err(UpError::Flags(format!(
                    "{} and {} are both {}: give each its own port",
                    other.flag,
                    l.flag,
                    l.addr.port()
                )));
            }
        }
        let addr = |flag: &str| {
            listens
                .iter()
                .find(|l| l.flag == flag)
                .map(|l| l.addr.to_string())
                .expect("every flag is listed")
        };
        let log = [
            "--log-level".to_string(),
            self.log.log_level.clone(),
            "--log-format".to_string(),
            match self.log.log_format {
                common::runtime::LogFormat::Text => "text",
                common::runtime::LogFormat::Json => "json",
            }
            .to_string(),
        ];
        let with_log = |mut args: Vec<String>| {
            args.extend(log.iter().cloned());
            args
        };
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let commands = vec![
            (
                Component::Galley,
                with_log(strings(&[
                    "--grpc-addr",
                    &addr("--galley-grpc-port"),
                    "--webhook-addr",
                    &addr("--galley-webhook-port"),
                    "--http-addr",
                    &addr("--galley-http-port"),
                ])),
            ),
            (
                Component::Citadel,
                with_log(strings(&[
                    "--grpc-addr",
                    &addr("--citadel-grpc-port"),
                    "--http-addr",
                    &addr("--citadel-http-port"),
                    "--key-dir",
                    &self.state_dir.join("citadel").to_string_lossy(),
                    // Its serving certificate names the address it listens
                    // on too, which pods without a hosts file dial.
                    "--serving-hosts",
                    &format!(
                        "localhost,127.0.0.1,::1,citadel,citadel.istio-system.svc,istiod.istio-system.svc,{}",
                        self.bind
                    ),
                ])),
            ),
            (
                Component::Pilot,
                with_log(strings(&[
                    "--config-dir",
                    &self.config.to_string_lossy(),
                    "--config-dir",
                    &self.pods_dir().to_string_lossy(),
                    "--xds-addr",
                    &addr("--pilot-xds-port"),
                    "--http-addr",
                    &addr("--pilot-http-port"),
                ])),
            ),
        ];
        Ok(Plan { listens, commands })
    }
}

fn listen(
    component: Component,
    what: &'static str,
    flag: &'static str,
    addr: SocketAddr,
) -> Listen {
    Listen {
        component,
        what,
        flag,
        addr,
    }
}

/// Binds every address of `plan` once and lets it go, so a busy port is refused
/// before any component starts.
pub fn preflight(plan: &Plan) -> Result<(), UpError> {
    for l in &plan.listens {
        if let Err(source) = std::net::TcpListener::bind(l.addr) {
            return Err(if source.kind() == std::io::ErrorKind::AddrInUse {
                UpError::PortBusy {
                    addr: l.addr,
                    component: l.component.name(),
                    what: l.what,
                    flag: l.flag,
                }
            } else {
                UpError::Bind {
                    addr: l.addr,
                    flag: l.flag,
                    source,
                }
            });
        }
    }
    Ok(())
}

/// Where `mizzen up` writes: the ready table, progress, and (in process mode)
/// every component's log lines. Shared by the tasks relaying the logs, so each
/// line is written whole.
#[derive(Clone)]
pub struct Console(Arc<Mutex<Box<dyn Write + Send>>>);

impl Console {
    /// A console writing to `out`.
    pub fn new(out: impl Write + Send + 'static) -> Console {
        Console(Arc::new(Mutex::new(Box::new(out))))
    }

    /// Writes `text` (one or more whole lines) and flushes.
    pub fn print(&self, text: &str) {
        let mut out = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }
}

/// Runs the control plane until `shutdown` resolves: in this process with
/// `--in-process`, else as child processes.
pub async fn up(
    args: &UpArgs,
    console: Console,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), UpError> {
    let plan = args.plan()?;
    if args.pods {
        if !crate::run::is_root() {
            return Err(UpError::Flags(
                "--pods needs root (it creates the pod bridge); run as root, or drop --pods".into(),
            ));
        }
        args.net
            .network()
            .ensure_bridge()
            .map_err(|e| UpError::Flags(format!("--pods: {e}")))?;
    }
    preflight(&plan)?;
    std::fs::create_dir_all(args.pods_dir()).map_err(|source| UpError::StateDir {
        path: args.state_dir.clone(),
        source,
    })?;
    if args.in_process {
        inline::run(&plan, console, shutdown).await
    } else {
        process::run(args, &plan, console, shutdown).await
    }
}

/// What `mizzen up` prints once every component is ready.
fn ready_banner(plan: &Plan, mode: &str, config: &std::path::Path) -> String {
    format!(
        "mizzen up: the control plane is ready ({mode}), serving the mesh config in {}\n{}\
         Try: mizzen proxy-status --pilot-addr {}   Stop: Ctrl-C\n",
        config.display(),
        plan.table(),
        plan.http_addr(Component::Pilot),
    )
}

/// `GET http://addr{path}`: the body of a 2xx answer, or why there is none.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<bytes::Bytes, String> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri = format!("http://{addr}{path}")
        .parse::<hyper::Uri>()
        .map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| format!("{e:#}"))?;
    let status = response.status();
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .map_err(|_| "the body did not arrive within 5 s".to_string())?
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{path} answered {status}"));
    }
    Ok(body)
}

/// `GET http://addr{path}` answers 2xx.
pub async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    http_get(addr, path).await.is_ok()
}

/// Waits until every component answers `/ready`, printing each as it does.
async fn wait_ready(plan: &Plan, console: &Console) -> Result<(), UpError> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    for component in Component::ALL {
        let addr = plan.http_addr(component);
        while !http_ok(addr, "/ready").await {
            if tokio::time::Instant::now() >= deadline {
                return Err(UpError::NotReady {
                    name: component.name(),
                    addr,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        console.print(&format!("mizzen up: {} is ready", component.name()));
    }
    Ok(())
}

/// `mizzen up` from the command line: its own runtime, stopped by Ctrl-C or
/// SIGTERM.
pub fn run(args: &UpArgs, err: &mut dyn Write) -> u8 {
    if args.in_process
        && let Err(e) = common::runtime::init_logging(&args.log)
    {
        let _ = writeln!(err, "mizzen up: {e}");
        return EXIT_FAILED;
    }
    let runtime = match crate::runtime("up") {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(err, "mizzen up: cannot start the runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let console = Console::new(std::io::stdout());
    match runtime.block_on(up(args, console, common::runtime::shutdown_signal())) {
        Ok(()) => crate::EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "mizzen up: {e}");
            EXIT_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        up: UpArgs,
    }

    fn args(extra: &[&str]) -> UpArgs {
        let mut argv = vec!["up", "--config", "."];
        argv.extend_from_slice(extra);
        Wrap::parse_from(argv).up
    }

    #[test]
    fn the_plan_gives_each_component_its_ports_and_the_state_dir() {
        let plan = args(&["--state-dir", "/tmp/s"]).plan().unwrap();
        let pilot = &plan.commands[2];
        assert_eq!(pilot.0, Component::Pilot);
        assert!(
            pilot
                .1
                .windows(2)
                .any(|w| w == ["--xds-addr", "127.0.0.1:15010"]),
            "{:?}",
            pilot.1
        );
        let citadel = &plan.commands[1].1;
        assert!(
            citadel
                .windows(2)
                .any(|w| w == ["--key-dir", "/tmp/s/citadel"]),
            "{citadel:?}"
        );
        assert_eq!(plan.http_addr(Component::Citadel).port(), 15024);
        assert!(plan.table().contains("127.0.0.1:15012"), "{}", plan.table());
    }

    #[test]
    fn shared_or_zero_ports_and_a_missing_config_are_refused() {
        let e = args(&["--galley-http-port", "15014"])
            .plan()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--galley-http-port and --pilot-http-port are both 15014"),
            "{e}"
        );
        let e = args(&["--pilot-xds-port", "0"])
            .plan()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--pilot-xds-port is 0"), "{e}");
        let mut a = args(&[]);
        a.config = "/nonexistent/mesh".into();
        assert!(a.plan().unwrap_err().to_string().contains("no such file"));
    }

    #[test]
    fn a_busy_port_is_refused_naming_the_flag() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        // Galley's gRPC port is the first one checked.
        let plan = args(&["--galley-grpc-port", &port]).plan().unwrap();
        let e = preflight(&plan).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "127.0.0.1:{port} (galley gRPC Validate) is already in use"
            )),
            "{e}"
        );
        assert!(e.contains("move this port with --galley-grpc-port"), "{e}");
    }
}
