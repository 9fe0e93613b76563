//! Pods as network namespaces: a workload started the way a Kubernetes node
//! starts a pod with Istio's sidecar injected, on this machine.
//!
//! It owns a pod's lifetime; the network plumbing is [`net`]'s, the sidecar's
//! files and command line [`sidecar`]'s. The path of [`Pod::start`]: lease an
//! address and create the namespace wired to the mesh bridge, with an
//! `/etc/hosts` naming the services pilot knows (its `/debug/registryz`) →
//! run `proxy init` inside it, exactly as istio-init does in a pod (outbound
//! TCP to 15001, inbound to 15006, the proxy's uid 1337 exempt) → start the
//! sidecar as uid 1337 (Mizzen's proxy, or a stock Envoy beside `proxy agent`)
//! and the app → once the sidecar answers `/healthz/ready` on 15021 and the app
//! accepts on its ports, write the Pod (labels, service account, IP, Ready) into
//! the directory pilot serves beside the mesh config, so its Services gain the
//! endpoint. [`Pod::stop`] undoes it in reverse: the Pod file first (the
//! endpoint goes), then SIGTERM to the app and the sidecar, then the namespace
//! and the lease.

pub mod loopback;
pub mod net;
pub mod sidecar;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use serde_json::json;

use crate::up::Console;
use net::{Netns, Network, Place, ServiceName};

/// The uid the sidecar runs as, exempt from capture (Istio's istio-proxy).
pub const PROXY_UID: u32 = 1337;

/// Where pods' sidecar files (bootstrap, token, roots, SDS socket) live, one
/// directory per pod's namespace name.
pub const RUN_DIR: &str = "/run/mizzen";

/// How long a pod's sidecar and app get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a pod's processes get to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a pod could not start.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A flag has a value that cannot work.
    #[error("{0}")]
    Flags(String),
    /// A command failed.
    #[error("`{command}` failed: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// Its status and stderr.
        reason: String,
    },
    /// A file could not be written or read.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The pod did not become ready.
    #[error("pod {pod}: {what} not ready within {}s; its log above says why", READY_TIMEOUT.as_secs())]
    NotReady {
        /// The pod.
        pod: String,
        /// Which part.
        what: String,
    },
    /// Pilot could not be asked for the services.
    #[error(
        "cannot read the services from pilot at {addr} ({reason}): start the control plane first (`mizzen up --bind GATEWAY`)"
    )]
    Pilot {
        /// Pilot's debug address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl PodError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, e: std::io::Error) -> PodError {
        PodError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// Which sidecar a pod gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SidecarKind {
    /// Mizzen's proxy.
    Proxy,
    /// A stock Envoy, with `proxy agent` serving it the workload certificate.
    Envoy,
    /// No sidecar and no capture (a pod outside the mesh).
    None,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct PodSpec {
    /// The pod's name (`reviews-v2`).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its service account.
    pub service_account: String,
    /// Its labels (`app`, `version`, …), which Services select.
    pub labels: BTreeMap<String, String>,
    /// The ports the app listens on.
    pub ports: Vec<u16>,
    /// The sidecar.
    pub sidecar: SidecarKind,
    /// The app's command line (none for a gateway).
    pub command: Vec<String>,
    /// An ingress gateway: no app and no capture; the proxy (Mizzen's or
    /// Envoy, as `sidecar` says) is the workload, a `router` node serving the
    /// Gateways that select its labels.
    pub gateway: bool,
    /// Environment for the app.
    pub env: Vec<(String, String)>,
}

/// Where the mesh is: the bridge, the control plane, the binaries, the state.
#[derive(Debug, Clone)]
pub struct Mesh {
    /// The bridge and subnet; without capture, the loopback subnet pods get
    /// their addresses from (the bridge is not used).
    pub network: Network,
    /// Whether pods get network namespaces with traffic capture (root), or
    /// loopback addresses and sidecars bound to them ([`loopback`]).
    pub capture: bool,
    /// Where the control plane listens (with capture, the bridge's address).
    pub control_plane: Ipv4Addr,
    /// `mizzen up`'s state directory (citadel's keys, the pods directory).
    pub state_dir: PathBuf,
    /// Pilot's xDS port on the gateway.
    pub pilot_xds_port: u16,
    /// Pilot's debug port on the gateway.
    pub pilot_http_port: u16,
    /// Citadel's CA port on the gateway.
    pub citadel_grpc_port: u16,
    /// The `proxy` binary.
    pub proxy_bin: PathBuf,
    /// The `envoy` binary (for [`SidecarKind::Envoy`]).
    pub envoy_bin: PathBuf,
    /// The sidecars' log level (`info`, `warn`, …).
    pub log_level: String,
}

impl Mesh {
    /// The mesh `mizzen up --pods` serves with `args`, pods getting their
    /// sidecars from `proxy_bin` or `envoy_bin`, logging at `log_level`.
    pub fn of_up(
        args: &crate::up::UpArgs,
        proxy_bin: PathBuf,
        envoy_bin: PathBuf,
        log_level: &str,
    ) -> Mesh {
        let network = args.net.network();
        Mesh {
            control_plane: network.gateway,
            capture: true,
            network,
            state_dir: args.state_dir.clone(),
            pilot_xds_port: args.ports.pilot_xds_port,
            pilot_http_port: args.ports.pilot_http_port,
            citadel_grpc_port: args.ports.citadel_grpc_port,
            proxy_bin,
            envoy_bin,
            log_level: log_level.to_string(),
        }
    }

    /// The same mesh with pods that capture nothing: each on an address of
    /// the loopback subnet `(first address, prefix length)`, the control
    /// plane at `control_plane`; `Err` when the subnet is not in 127.0.0.0/8.
    pub fn without_capture(
        mut self,
        (first, prefix): (Ipv4Addr, u8),
        control_plane: Ipv4Addr,
    ) -> Result<Mesh, String> {
        if first.octets()[0] != 127 {
            return Err(format!(
                "--loopback-subnet {first}/{prefix} is not in 127.0.0.0/8: pods without capture live on loopback addresses"
            ));
        }
        self.network = Network {
            bridge: "lo".into(),
            gateway: first,
            prefix,
        };
        self.capture = false;
        self.control_plane = control_plane;
        Ok(self)
    }

    /// Pilot's debug address.
    pub fn pilot_http(&self) -> SocketAddr {
        SocketAddr::from((self.control_plane, self.pilot_http_port))
    }

    /// Pilot's xDS address.
    pub fn pilot_xds(&self) -> SocketAddr {
        SocketAddr::from((self.control_plane, self.pilot_xds_port))
    }

    fn pods_dir(&self) -> PathBuf {
        self.state_dir.join(crate::up::PODS_DIR)
    }

    /// Where pods' addresses are leased: per bridge under [`RUN_DIR`] with
    /// capture (two meshes on one bridge must not share an address); in the
    /// state directory without (no root for `/run`).
    fn lease_dir(&self) -> PathBuf {
        if self.capture {
            self.network.lease_dir()
        } else {
            self.state_dir.join("leases")
        }
    }
}

/// A started process of a pod.
struct Proc {
    what: &'static str,
    child: tokio::process::Child,
}

/// A running pod.
pub struct Pod {
    spec: PodSpec,
    addr: Ipv4Addr,
    pod_file: PathBuf,
    procs: Vec<Proc>,
    _files: sidecar::Files,
    place: Place,
    /// Without capture: the pod's own Sidecar resource, removed with it.
    sidecar_file: Option<PathBuf>,
    /// The port the app listens on for each pod port.
    app_ports: Vec<u16>,
    _lease: net::Lease,
}

impl Pod {
    /// Starts `spec` in `mesh`; ready when this returns.
    pub async fn start(mesh: &Mesh, spec: PodSpec, console: &Console) -> Result<Pod, PodError> {
        check_name(&spec.name, "pod name")?;
        check_name(&spec.namespace, "namespace")?;
        if spec.command.is_empty() && !spec.gateway {
            return Err(PodError::Flags(format!(
                "pod {}: no command to run",
                spec.name
            )));
        }
        if spec.gateway && spec.sidecar == SidecarKind::None {
            return Err(PodError::Flags(format!(
                "pod {}: a gateway is a proxy: pick --sidecar proxy or envoy",
                spec.name
            )));
        }
        let (services, registry_ports) = services(mesh.pilot_http()).await?;
        let mut spec = spec;
        if !mesh.capture {
            spec.labels
                .insert(loopback::POD_LABEL.to_string(), spec.name.clone());
        }
        let sidecar_takes_ports = spec.sidecar != SidecarKind::None && !spec.gateway;
        let app_ports = if mesh.capture || !sidecar_takes_ports {
            spec.ports.clone()
        } else {
            loopback::app_ports(&spec.ports, crate::run::is_root())
                .map_err(|e| PodError::Flags(format!("pod {}: {e}", spec.name)))?
        };
        if mesh.capture {
            mesh.network.ensure_bridge()?;
        }
        let lease = mesh.network.lease(&mesh.lease_dir())?;
        let addr = lease.addr;
        if !mesh.capture {
            // Loopback is shared: a pod of another mesh (another state
            // directory) or a leftover may hold the address.
            let admin = SocketAddr::from((addr, 15000));
            if tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(admin),
            )
            .await
            .is_ok_and(|c| c.is_ok())
            {
                return Err(PodError::Flags(format!(
                    "pod {}: something already listens on {admin}, the address leased for it: another mesh's pod, or a leftover of one; stop it, or pick another --loopback-subnet",
                    spec.name
                )));
            }
        }
        let (place, run_dir, sidecar_file) = if mesh.capture {
            let netns_name = mesh.network.netns_name(&spec.namespace, &spec.name);
            let mut hosts = net::hosts_file(&spec.name, addr, &spec.namespace, &services);
            let gateway = mesh.network.gateway;
            hosts.push_str(&format!(
                "{gateway}\tistiod istiod.istio-system.svc citadel citadel.istio-system.svc\n"
            ));
            let netns = mesh.network.create_netns(&netns_name, addr, &hosts)?;
            (
                Place::Netns(netns),
                Path::new(RUN_DIR).join(&netns_name),
                None,
            )
        } else {
            // Its Sidecar first: pilot lays out the sidecar's listeners by it.
            let file = mesh
                .pods_dir()
                .join(format!("{}.{}.sidecar.yaml", spec.namespace, spec.name));
            if sidecar_takes_ports {
                let privileged = crate::run::is_root();
                write_atomic(
                    &file,
                    &loopback::sidecar_yaml(&spec, addr, &registry_ports, privileged),
                )?;
            }
            (
                Place::Host,
                mesh.state_dir
                    .join("run")
                    .join(format!("{}-{}", spec.namespace, spec.name)),
                Some(file),
            )
        };
        let files = sidecar::Files::write(mesh, &spec, addr, &run_dir)?;
        let mut procs = Vec::new();
        let prefix = |what: &str| format!("{}/{what} | ", spec.name);
        if let (Some(netns), true) = (place.netns(), sidecar_takes_ports) {
            let init = net::run(
                netns.command(None, &mesh.proxy_bin).args([
                    "init",
                    "--proxy-uid",
                    &PROXY_UID.to_string(),
                ]),
                "proxy init",
            )?;
            for line in init.lines() {
                console.print(&format!("{}{line}", prefix("init")));
            }
        }
        for mut step in sidecar::commands(mesh, &spec, &files, &place) {
            if let Some(file) = &step.after {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while !file.exists() {
                    if std::time::Instant::now() >= deadline {
                        return Err(PodError::NotReady {
                            pod: spec.name.clone(),
                            what: format!("the bootstrap {} (from the agent)", file.display()),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            procs.push(spawn(
                step.what,
                &mut step.command,
                prefix(step.what),
                console,
            )?);
        }
        if !spec.gateway {
            let mut app = place.command(None, Path::new(&spec.command[0]));
            app.args(&spec.command[1..]);
            if !mesh.capture {
                app.envs(loopback::app_env(&spec, addr));
            }
            app.envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            procs.push(spawn("app", &mut app, prefix("app"), console)?);
        }
        let mut pod = Pod {
            pod_file: mesh
                .pods_dir()
                .join(format!("{}.{}.yaml", spec.namespace, spec.name)),
            spec,
            addr,
            procs,
            _files: files,
            place,
            sidecar_file,
            app_ports,
            _lease: lease,
        };
        if let Err(e) = pod.wait_ready().await {
            pod.stop(console).await;
            return Err(e);
        }
        let manifest = pod.manifest();
        write_atomic(&pod.pod_file, &manifest)?;
        console.print(&format!(
            "mizzen run: pod {}.{} is ready at {addr} ({:?} {})",
            pod.spec.name,
            pod.spec.namespace,
            pod.spec.sidecar,
            if pod.spec.gateway {
                "gateway"
            } else {
                "sidecar"
            }
        ));
        Ok(pod)
    }

    /// The pod's IP.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The pod's network namespace (none without capture).
    pub fn netns(&self) -> Option<&Netns> {
        self.place.netns()
    }

    /// The pod's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Waits until one of the pod's processes exits: which, and how.
    pub async fn exited(&mut self) -> (&'static str, String) {
        if self.procs.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.procs.iter_mut().map(|p| {
            let what = p.what;
            Box::pin(async move {
                let status = p.child.wait().await;
                (
                    what,
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                )
            })
        });
        futures::future::select_all(waits).await.0
    }

    /// The sidecar ready on 15021 and the app accepting on each port (probed
    /// inside the namespace on 127.0.0.1, which capture leaves alone).
    async fn wait_ready(&mut self) -> Result<(), PodError> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        let pod = self.spec.name.clone();
        let not_ready = |what: String| PodError::NotReady {
            pod: pod.clone(),
            what,
        };
        if self.spec.sidecar != SidecarKind::None {
            let health = SocketAddr::from((self.addr, sidecar::HEALTH_PORT));
            while !crate::up::http_ok(health, "/healthz/ready").await {
                if tokio::time::Instant::now() >= deadline {
                    return Err(not_ready(format!(
                        "the sidecar (GET http://{health}/healthz/ready)"
                    )));
                }
                if let Some(exit) = self.any_exited() {
                    return Err(not_ready(exit));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let app_ports = if self.spec.gateway {
            Vec::new()
        } else {
            self.app_ports.clone()
        };
        for port in app_ports {
            loop {
                let accepts = match self.place.netns() {
                    // Inside the namespace on 127.0.0.1, which capture leaves alone.
                    Some(netns) => netns
                        .command(None, Path::new("bash"))
                        .args(["-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success()),
                    None => tokio::net::TcpStream::connect((self.addr, port))
                        .await
                        .is_ok(),
                };
                if accepts {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(not_ready(format!("the app (port {port})")));
                }
                if let Some(exit) = self.any_exited() {
                    return Err(not_ready(exit));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// A process that already exited, described.
    fn any_exited(&mut self) -> Option<String> {
        self.procs.iter_mut().find_map(|p| {
            p.child
                .try_wait()
                .ok()
                .flatten()
                .map(|s| format!("the {} exited ({s})", p.what))
        })
    }

    /// The Pod object pilot reads, as the API server would report it.
    fn manifest(&self) -> String {
        let mut labels = self.spec.labels.clone();
        let mut annotations = BTreeMap::new();
        if self.spec.sidecar != SidecarKind::None && !self.spec.gateway {
            labels.insert("security.istio.io/tlsMode".into(), "istio".into());
            annotations.insert(
                "sidecar.istio.io/status".to_string(),
                r#"{"containers":["istio-proxy"]}"#.to_string(),
            );
        }
        let ports: Vec<_> = self
            .spec
            .ports
            .iter()
            .map(|p| json!({"containerPort": p}))
            .collect();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.spec.name,
                "namespace": self.spec.namespace,
                "labels": labels,
                "annotations": annotations,
            },
            "spec": {
                "serviceAccountName": self.spec.service_account,
                "containers": [{"name": "app", "ports": ports}],
            },
            "status": {
                "phase": "Running",
                "podIP": self.addr.to_string(),
                "podIPs": [{"ip": self.addr.to_string()}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        });
        let place = match self.place.netns() {
            Some(netns) => format!("in network namespace {}", netns.name),
            None => format!("on {} without capture", self.addr),
        };
        format!(
            "# Written by `mizzen run` for the pod {place}; removed when it stops.\n{}\n",
            serde_json::to_string_pretty(&pod).unwrap_or_default()
        )
    }

    /// Removes the Pod from pilot's view, stops the processes (SIGTERM, then
    /// SIGKILL after [`STOP_TIMEOUT`]) and deletes the namespace.
    pub async fn stop(mut self, console: &Console) {
        let _ = std::fs::remove_file(&self.pod_file);
        if let Some(file) = &self.sidecar_file {
            let _ = std::fs::remove_file(file);
        }
        for p in &self.procs {
            if let Some(pid) = p.child.id().and_then(|id| Pid::from_raw(id as i32)) {
                let _ = rustix::process::kill_process(pid, Signal::TERM);
            }
        }
        for p in &mut self.procs {
            match tokio::time::timeout(STOP_TIMEOUT, p.child.wait()).await {
                Ok(_) => {}
                Err(_) => {
                    console.print(&format!(
                        "mizzen run: {}/{} did not stop within {}s of SIGTERM; killing",
                        self.spec.name,
                        p.what,
                        STOP_TIMEOUT.as_secs()
                    ));
                    let _ = p.child.kill().await;
                }
            }
        }
        console.print(&format!("mizzen run: pod {} stopped", self.spec.name));
        // The namespace, the sidecar's files and the lease go on drop.
    }
}

/// Stops every pod at once (each sidecar drains for a few seconds); returns
/// when all have stopped.
pub async fn stop_all(pods: Vec<Pod>, console: &Console) {
    let stops: Vec<_> = pods
        .into_iter()
        .map(|pod| {
            let console = console.clone();
            tokio::spawn(async move { pod.stop(&console).await })
        })
        .collect();
    for stop in stops {
        let _ = stop.await;
    }
}

/// Starts `cmd` with its output relayed behind `prefix`.
fn spawn(
    what: &'static str,
    cmd: &mut std::process::Command,
    prefix: String,
    console: &Console,
) -> Result<Proc, PodError> {
    let mut cmd =
        tokio::process::Command::from(std::mem::replace(cmd, std::process::Command::new("true")));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| PodError::Command {
        command: format!("{:?}", cmd.as_std()),
        reason: e.to_string(),
    })?;
    if let Some(out) = child.stdout.take() {
        crate::up::process::relay(out, prefix.clone(), console.clone());
    }
    if let Some(err) = child.stderr.take() {
        crate::up::process::relay(err, prefix, console.clone());
    }
    Ok(Proc { what, child })
}

/// The services pilot knows that have a virtual IP, and every service port
/// in its registry with its protocol.
async fn services(
    pilot: SocketAddr,
) -> Result<(Vec<ServiceName>, BTreeMap<u32, String>), PodError> {
    let body = crate::up::http_get(pilot, "/debug/registryz")
        .await
        .map_err(|reason| PodError::Pilot {
            addr: pilot,
            reason,
        })?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| PodError::Pilot {
        addr: pilot,
        reason: e.to_string(),
    })?;
    let list = json["services"]
        .as_array()
        .or_else(|| json.as_array())
        .cloned()
        .unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    // A port's protocol: HTTP when any service serves HTTP on it.
    let mut ports: BTreeMap<u32, String> = BTreeMap::new();
    for p in list
        .iter()
        .flat_map(|svc| svc["ports"].as_array().cloned().unwrap_or_default())
    {
        let (Some(port), Some(protocol)) = (p["port"].as_u64(), p["protocol"].as_str()) else {
            continue;
        };
        let Ok(port) = u32::try_from(port) else {
            continue;
        };
        let protocol = match protocol {
            "UNSUPPORTED" | "" => "TCP",
            other => other,
        };
        let entry = ports.entry(port).or_insert_with(|| protocol.to_string());
        if protocol == "HTTP" {
            *entry = protocol.to_string();
        }
    }
    let names = list
        .iter()
        .flat_map(|svc| {
            svc["addresses"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|a| a.as_str().map(str::to_string))
                .filter(|a| {
                    a.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| !ip.is_unspecified())
                })
                .map(|address| ServiceName {
                    name: text(&svc["name"]),
                    namespace: text(&svc["namespace"]),
                    hostname: text(&svc["hostname"]),
                    address,
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Ok((names, ports))
}

/// A DNS-1123 label, as Kubernetes requires of pod names and namespaces.
fn check_name(name: &str, what: &str) -> Result<(), PodError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(PodError::Flags(format!(
            "{what} {name:?}: use lowercase letters, digits and '-' (at most 63), as Kubernetes does"
        )))
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so pilot
/// never reads half of it.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), PodError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| PodError::io(dir, e))?;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("pod");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| PodError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| PodError::io(path, e))
}
