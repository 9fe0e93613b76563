//! A pod's sidecar: the files istio-agent and the injector would give it
//! (bootstrap, service-account token, mesh roots) and its command lines.
//!
//! Mizzen's proxy reads a bootstrap written here, gets its certificate from
//! citadel itself (`--ca-addr`) and serves `/healthz/ready` on 15021. For a
//! stock Envoy, `proxy agent` writes the bootstrap (the same node and ADS, plus
//! the `sds-grpc` pipe and the 15021 listener, `common::bootstrap`) and serves
//! the certificate on that socket, as istio-agent does; Envoy starts once the
//! bootstrap exists. The proxy and the agent run as uid 1337,
//! Envoy as root with gid 1337 (pip installs it where only root may run it);
//! the capture exempts both, so their own traffic is not captured. Without
//! capture ([`super::loopback`]) they run as whoever runs `mizzen`, their
//! ports on the pod's loopback address.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::bootstrap::Sidecar;

use super::net::{Place, RunAs};
use super::{Mesh, PROXY_UID, PodError, PodSpec, SidecarKind};

/// Istio's sidecar health port.
pub const HEALTH_PORT: u16 = 15021;
/// Istio's sidecar status/metrics port.
pub const STATUS_PORT: u16 = 15020;
/// Envoy's admin port (Istio's), on 127.0.0.1 in the pod's namespace.
const ADMIN_PORT: u16 = 15000;

/// Where the sidecar's own ports listen: every address inside the pod's
/// namespace, the pod's address without capture.
fn own_bind(mesh: &Mesh, addr: Ipv4Addr) -> Ipv4Addr {
    if mesh.capture {
        Ipv4Addr::UNSPECIFIED
    } else {
        addr
    }
}

/// The admin address: 127.0.0.1 in the pod, the pod's address without capture.
fn admin(mesh: &Mesh, addr: Ipv4Addr) -> SocketAddr {
    let ip = if mesh.capture {
        Ipv4Addr::LOCALHOST
    } else {
        addr
    };
    SocketAddr::from((ip, ADMIN_PORT))
}
/// How long a minted service-account token is valid.
const TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A pod's sidecar files, under its run directory; removed on drop.
#[derive(Debug)]
pub struct Files {
    dir: PathBuf,
    bootstrap: PathBuf,
    token: PathBuf,
    root_cert: PathBuf,
    sds_socket: PathBuf,
    /// The pod's address (set once the files are written).
    addr: Option<Ipv4Addr>,
}

impl Files {
    /// Writes the bootstrap, token and roots for `spec` at `addr` into `dir`,
    /// owned by the proxy's uid.
    pub fn write(
        mesh: &Mesh,
        spec: &PodSpec,
        addr: Ipv4Addr,
        dir: &Path,
    ) -> Result<Files, PodError> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| PodError::io(dir, e))?;
        let mut files = Files {
            dir: dir.to_path_buf(),
            bootstrap: dir.join("bootstrap.json"),
            token: dir.join("istio-token"),
            root_cert: dir.join("root-cert.pem"),
            sds_socket: dir.join("sds.sock"),
            addr: None,
        };
        if spec.sidecar == SidecarKind::None {
            return Ok(files);
        }
        let key_dir = mesh.state_dir.join("citadel");
        let issuer = citadel::local_issuer::LocalIssuer::load_or_create(&key_dir).map_err(|e| {
            PodError::Io {
                path: key_dir.clone(),
                reason: e.to_string(),
            }
        })?;
        let token = issuer
            .mint(
                &spec.namespace,
                &spec.service_account,
                "istio-ca",
                TOKEN_TTL,
            )
            .map_err(|e| PodError::Flags(format!("pod {}: {e}", spec.name)))?;
        write_private(&files.token, &token)?;
        let roots = key_dir.join("root-cert.pem");
        let roots_text = std::fs::read_to_string(&roots).map_err(|e| PodError::Io {
            path: roots.clone(),
            reason: format!(
                "{e}: start the control plane first (`mizzen up`), which creates the mesh's root"
            ),
        })?;
        write_private(&files.root_cert, &roots_text)?;
        // Envoy's comes from `proxy agent --bootstrap-out`, as istio-agent
        // writes it; Mizzen's proxy gets one written here.
        if spec.sidecar == SidecarKind::Proxy {
            let sidecar = Sidecar {
                pod: spec.name.clone(),
                namespace: spec.namespace.clone(),
                ip: addr.into(),
                labels: spec.labels.clone(),
                service_account: spec.service_account.clone(),
                xds: mesh.pilot_xds().into(),
                delta: true,
                admin: admin(mesh, addr),
                sds_socket: None,
                router: spec.gateway,
                health_port: None,
                capture: mesh.capture,
                metadata: Default::default(),
            };
            let text = serde_json::to_string_pretty(&sidecar.bootstrap()).unwrap_or_default();
            write_private(&files.bootstrap, &text)?;
        }
        files.addr = Some(addr);
        if mesh.capture {
            chown(&files.dir)?;
            for file in [&files.token, &files.root_cert, &files.bootstrap] {
                if file.exists() {
                    chown(file)?;
                }
            }
        }
        Ok(files)
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes `text` to `path`, readable by its owner only (the proxy's uid once
/// [`Files::write`] hands the files over).
fn write_private(path: &Path, text: &str) -> Result<(), PodError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| PodError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| PodError::io(path, e))
}

fn chown(path: &Path) -> Result<(), PodError> {
    std::os::unix::fs::chown(path, Some(PROXY_UID), Some(PROXY_UID))
        .map_err(|e| PodError::io(path, e))
}

/// Envoy's name for a log level (it has `warning`, not `warn`).
fn envoy_level(level: &str) -> &str {
    match level {
        "warn" => "warning",
        "trace" | "debug" | "info" | "error" | "critical" | "off" => level,
        _ => "info",
    }
}

/// A sidecar process to start: its name (the log prefix), its command, and a
/// file to wait for before starting it.
pub struct Step {
    /// `proxy`, `agent`, `envoy`.
    pub what: &'static str,
    /// The command, inside the pod's namespace.
    pub command: Command,
    /// Start only once this file exists (Envoy waits for the agent's bootstrap).
    pub after: Option<PathBuf>,
}

/// The sidecar's processes for `spec`, each a command at `place` (in a
/// namespace as the proxy's uid; Envoy: see [`RunAs::Group`]), in start order.
pub fn commands(mesh: &Mesh, spec: &PodSpec, files: &Files, place: &Place) -> Vec<Step> {
    // In a namespace the pod's hosts file names citadel; without one, its
    // address (its serving certificate names both).
    let ca = if mesh.capture {
        format!("citadel:{}", mesh.citadel_grpc_port)
    } else {
        format!("{}:{}", mesh.control_plane, mesh.citadel_grpc_port)
    };
    let (uid, envoy_user) = if mesh.capture {
        (Some(RunAs::User(PROXY_UID)), Some(RunAs::Group(PROXY_UID)))
    } else {
        (None, None)
    };
    let addr = files.addr.unwrap_or(Ipv4Addr::LOCALHOST);
    let bind = own_bind(mesh, addr);
    match spec.sidecar {
        SidecarKind::None => Vec::new(),
        SidecarKind::Proxy => {
            let mut proxy = place.command(uid, &mesh.proxy_bin);
            proxy
                .arg("-c")
                .arg(&files.bootstrap)
                .args(["--concurrency", "1", "--ca-addr", &ca])
                .args(["--log-level", &mesh.log_level])
                .arg("--ca-root-cert")
                .arg(&files.root_cert)
                .arg("--token-file")
                .arg(&files.token)
                .args(["--health-addr", &format!("{bind}:{HEALTH_PORT}")])
                .args(["--status-addr", &format!("{bind}:{STATUS_PORT}")]);
            vec![Step {
                what: "proxy",
                command: proxy,
                after: None,
            }]
        }
        SidecarKind::Envoy => {
            let mut agent = place.command(uid, &mesh.proxy_bin);
            agent
                .args(["agent", "--ca-addr", &ca])
                .args(["--log-level", &mesh.log_level])
                .arg("--ca-root-cert")
                .arg(&files.root_cert)
                .arg("--token-file")
                .arg(&files.token)
                .args(["--namespace", &spec.namespace])
                .args(["--service-account", &spec.service_account])
                .arg("--sds-socket")
                .arg(&files.sds_socket)
                .arg("--bootstrap-out")
                .arg(&files.bootstrap)
                .args(["--pod-name", &spec.name])
                .arg("--xds-addr")
                .arg(mesh.pilot_xds().to_string())
                .args(["--health-port", &HEALTH_PORT.to_string()])
                .args(["--admin-addr", &admin(mesh, addr).to_string()]);
            if !mesh.capture {
                agent.args(["--interception-mode", "none"]);
            }
            if let Some(addr) = files.addr {
                agent.args(["--pod-ip", &addr.to_string()]);
            }
            for (k, v) in &spec.labels {
                agent.arg("--label").arg(format!("{k}={v}"));
            }
            if spec.gateway {
                agent.arg("--router");
            }
            // Root with the proxy's gid: pip installs Envoy where only root
            // may run it.
            let mut envoy = place.command(envoy_user, &mesh.envoy_bin);
            envoy
                .arg("-c")
                .arg(&files.bootstrap)
                .args(["--disable-hot-restart", "--concurrency", "1"])
                .args(["--log-level", envoy_level(&mesh.log_level)]);
            vec![
                Step {
                    what: "agent",
                    command: agent,
                    after: None,
                },
                Step {
                    what: "envoy",
                    command: envoy,
                    after: Some(files.bootstrap.clone()),
                },
            ]
        }
    }
}
