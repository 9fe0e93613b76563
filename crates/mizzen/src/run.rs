//! `mizzen run`: one workload as a pod in its own network namespace, with the
//! sidecar injected and traffic captured as in a Kubernetes pod ([`crate::pod`]),
//! joined to the mesh of `mizzen up --pods`. Without root (or with
//! `--no-capture`) the pod gets a loopback address instead, and its sidecar
//! listeners bound there as Istio's `captureMode: NONE` lays them out
//! ([`crate::pod::loopback`]), joined to the mesh of `mizzen up`. Runs until
//! Ctrl-C or SIGTERM, or until the app or its sidecar exits; then the pod is
//! removed.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::Args;

use crate::pod::net::Network;
use crate::pod::{Mesh, Pod, PodSpec, SidecarKind};
use crate::up::Console;

/// Exit status when the pod could not start or ended on its own.
pub const EXIT_FAILED: u8 = 1;

/// The pod network's flags, shared by `mizzen up --pods` and `mizzen run`.
#[derive(Debug, Clone, Args)]
pub struct NetArgs {
    /// The bridge pods are wired to.
    #[arg(long, env = "MIZZEN_BRIDGE", default_value = "mizzen0")]
    pub bridge: String,
    /// The pod subnet, as the bridge's (the host's) address and prefix length;
    /// pods get the other addresses.
    #[arg(long, env = "MIZZEN_SUBNET", default_value = "10.77.0.1/16", value_parser = parse_subnet)]
    pub subnet: (Ipv4Addr, u8),
}

impl NetArgs {
    /// The network these flags describe.
    pub fn network(&self) -> Network {
        Network {
            bridge: self.bridge.clone(),
            gateway: self.subnet.0,
            prefix: self.subnet.1,
        }
    }
}

/// `ADDRESS/PREFIX`, for clap.
pub fn parse_subnet(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: write ADDRESS/PREFIX, e.g. 10.77.0.1/16"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an IPv4 address: {e}"))?;
    let prefix = prefix
        .parse()
        .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
    Ok((addr, prefix))
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?}: write KEY=VALUE"))
}

/// `mizzen run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The pod's name (`reviews-v2`).
    pub name: String,
    /// The pod's namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The pod's service account (its SPIFFE identity).
    #[arg(short = 's', long, default_value = "default")]
    pub service_account: String,
    /// A label (`app=reviews`); Services select pods by them. Repeatable.
    #[arg(short = 'l', long = "label", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// A port the app listens on (the pod is ready when it accepts on each).
    /// Repeatable.
    #[arg(short = 'p', long = "port")]
    pub ports: Vec<u16>,
    /// An environment variable for the app (`KEY=VALUE`). Repeatable.
    #[arg(short = 'e', long = "env", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// The sidecar: Mizzen's proxy, a stock Envoy (with `proxy agent`), or none.
    #[arg(long, value_enum, default_value_t = SidecarKind::Proxy)]
    pub sidecar: SidecarKind,
    /// Run an ingress gateway instead of an app: the proxy (--sidecar proxy or
    /// envoy) is the workload, a router serving the Gateways that select the
    /// pod's labels; no capture, no COMMAND.
    #[arg(long)]
    pub gateway: bool,
    /// The pod network.
    #[command(flatten)]
    pub net: NetArgs,
    /// No network namespace and no capture, even as root (the fallback
    /// without root): the pod gets an address of --loopback-subnet, its
    /// sidecar listens there (Istio's `captureMode: NONE`), the app gets
    /// `POD_IP`, `MIZZEN_APP_PORT_<PORT>` (where to listen: the sidecar takes
    /// PORT) and `MIZZEN_EGRESS_IP` (where to call services, with the service
    /// in `Host`).
    #[arg(long)]
    pub no_capture: bool,
    /// Where pods without capture get their addresses, as the first address
    /// and prefix length of a 127/8 subnet.
    #[arg(long, env = "MIZZEN_LOOPBACK_SUBNET", default_value = "127.77.0.1/16", value_parser = parse_subnet)]
    pub loopback_subnet: (Ipv4Addr, u8),
    /// The control plane's address: by default the bridge's (--subnet) with
    /// capture, 127.0.0.1 (`mizzen up`'s --bind) without.
    #[arg(long, env = "MIZZEN_CONTROL_PLANE", value_name = "IP")]
    pub control_plane: Option<Ipv4Addr>,
    /// `mizzen up`'s state directory (the mesh's root and token key, the pods
    /// pilot serves).
    #[arg(long, env = "MIZZEN_STATE_DIR", default_value = ".mizzen")]
    pub state_dir: PathBuf,
    /// Pilot's xDS port on the bridge address.
    #[arg(long, env = "MIZZEN_PILOT_XDS_PORT", default_value_t = 15010)]
    pub pilot_xds_port: u16,
    /// Pilot's debug port on the bridge address.
    #[arg(long, env = "MIZZEN_PILOT_HTTP_PORT", default_value_t = 15014)]
    pub pilot_http_port: u16,
    /// Citadel's CA port on the bridge address.
    #[arg(long, env = "MIZZEN_CITADEL_GRPC_PORT", default_value_t = 15012)]
    pub citadel_grpc_port: u16,
    /// Where the `proxy` binary is; by default beside this `mizzen`, then PATH.
    #[arg(long, env = "MIZZEN_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The Envoy binary, for `--sidecar envoy`.
    #[arg(long, env = "ENVOY_BIN", default_value = "envoy")]
    pub envoy: PathBuf,
    /// The sidecar's log level.
    #[arg(long, env = "MIZZEN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// The app's command line, after `--`.
    #[arg(
        last = true,
        required_unless_present = "gateway",
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

impl RunArgs {
    /// The pod to run.
    pub fn spec(&self) -> PodSpec {
        PodSpec {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            labels: self.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
            ports: self.ports.clone(),
            sidecar: self.sidecar,
            command: self.command.clone(),
            env: self.env.clone(),
            gateway: self.gateway,
        }
    }

    /// The mesh to join, with pods that capture their traffic or not.
    pub fn mesh(&self, capture: bool) -> Result<Mesh, String> {
        let proxy_bin = crate::up::process::find_binary("proxy", self.bin_dir.as_deref())
            .map_err(|e| e.to_string())?;
        let network = self.net.network();
        let mesh = Mesh {
            control_plane: self.control_plane.unwrap_or(network.gateway),
            capture: true,
            network,
            state_dir: self.state_dir.clone(),
            pilot_xds_port: self.pilot_xds_port,
            pilot_http_port: self.pilot_http_port,
            citadel_grpc_port: self.citadel_grpc_port,
            proxy_bin,
            envoy_bin: self.envoy.clone(),
            log_level: self.log_level.clone(),
        };
        if capture {
            return Ok(mesh);
        }
        mesh.without_capture(
            self.loopback_subnet,
            self.control_plane.unwrap_or(Ipv4Addr::LOCALHOST),
        )
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `mizzen run` from the command line.
pub fn run(args: &RunArgs, err: &mut dyn Write) -> u8 {
    let capture = is_root() && !args.no_capture;
    if !capture {
        let _ = writeln!(
            err,
            "mizzen run: {}: the pod gets an address of {}/{} and its sidecar's listeners are bound there \
             (Istio's captureMode: NONE). The app gets POD_IP, MIZZEN_APP_PORT_<PORT> (listen there: the \
             sidecar takes PORT) and MIZZEN_EGRESS_IP (call services there, naming the service in Host). \
             Run as root for a network namespace with traffic capture",
            if args.no_capture {
                "--no-capture"
            } else {
                "not root, so no network namespace or capture"
            },
            args.loopback_subnet.0,
            args.loopback_subnet.1
        );
    }
    let mesh = match args.mesh(capture) {
        Ok(mesh) => mesh,
        Err(e) => {
            let _ = writeln!(err, "mizzen run: {e}");
            return EXIT_FAILED;
        }
    };
    let runtime = match crate::runtime("run") {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(err, "mizzen run: cannot start the runtime: {e}");
            return EXIT_FAILED;
        }
    };
    let console = Console::new(std::io::stdout());
    let outcome = runtime.block_on(async {
        let mut pod = Pod::start(&mesh, args.spec(), &console)
            .await
            .map_err(|e| e.to_string())?;
        let ended = tokio::select! {
            (what, status) = pod.exited() => Err(format!("the pod's {what} exited ({status})")),
            () = common::runtime::shutdown_signal() => Ok(()),
        };
        pod.stop(&console).await;
        ended
    });
    match outcome {
        Ok(()) => crate::EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "mizzen run: {e}");
            EXIT_FAILED
        }
    }
}
