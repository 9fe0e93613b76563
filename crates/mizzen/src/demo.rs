//! `mizzen demo`: the whole mesh on this machine in one command. The control
//! plane (`mizzen up --in-process --pods`), bookinfo's six pods with sidecars
//! and captured traffic (`mizzen run`'s pods), then the guide's scenarios
//! ([`scenarios`]), each applied from the seed's YAML and shown with real
//! traffic: a table per scenario of what was expected and what was observed.
//! Then it stays up with URLs to try, or with `--once` stops and exits 0 when
//! every scenario matched, 1 when one did not. Without root (or with
//! `--no-capture`) the pods run without capture on loopback addresses
//! ([`crate::pod::loopback`]) beside `mizzen up` on 127.0.0.1, and it says so.
//!
//! The path: [`run`] checks root (capture or not) and finds the binaries → writes the mesh
//! config (bookinfo's platform and base networking) → starts the control plane
//! on its own thread and runtime → starts the pods → for each scenario: write
//! its YAML, [`wait_synced`] until every sidecar ACKed pilot's new version,
//! send its traffic, print its table.

pub mod scenarios;
pub mod traffic;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;

use crate::pod::{Mesh, Pod, PodSpec, SidecarKind, write_atomic};
use crate::up::{Console, UpArgs};

/// Exit status when a scenario did not match or the demo could not start.
pub const EXIT_FAILED: u8 = 1;

/// bookinfo's pods: (name, app, version, service account).
pub const BOOKINFO_PODS: &[(&str, &str, &str, &str)] = &[
    ("ratings-v1", "ratings", "v1", "bookinfo-ratings"),
    ("details-v1", "details", "v1", "bookinfo-details"),
    ("reviews-v1", "reviews", "v1", "bookinfo-reviews"),
    ("reviews-v2", "reviews", "v2", "bookinfo-reviews"),
    ("reviews-v3", "reviews", "v3", "bookinfo-reviews"),
    (
        "productpage-v1",
        "productpage",
        "v1",
        "bookinfo-productpage",
    ),
];

/// The file each scenario's YAML is written to in the mesh config.
pub const SCENARIO_FILE: &str = "scenario.yaml";

/// `mizzen demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Walk through the scenarios, then stop everything and exit (0 when every
    /// scenario matched, 1 when one did not).
    #[arg(long)]
    pub once: bool,
    /// The sidecar of every pod: Mizzen's proxy or a stock Envoy.
    #[arg(long, value_enum, default_value_t = SidecarKind::Proxy)]
    pub sidecar: SidecarKind,
    /// Where the demo keeps its state (the CA, the mesh config it writes).
    #[arg(long, env = "MIZZEN_DEMO_DIR", default_value = ".mizzen/demo")]
    pub state_dir: PathBuf,
    /// The pod network.
    #[command(flatten)]
    pub net: crate::run::NetArgs,
    /// Pods without network namespaces or capture, even as root (what the
    /// demo falls back to without root): each on an address of
    /// --loopback-subnet with its sidecar's listeners bound there.
    #[arg(long)]
    pub no_capture: bool,
    /// Where pods without capture get their addresses.
    #[arg(long, env = "MIZZEN_LOOPBACK_SUBNET", default_value = "127.77.0.1/16", value_parser = crate::run::parse_subnet)]
    pub loopback_subnet: (Ipv4Addr, u8),
    /// Where the `proxy` and `bookinfo` binaries are; by default beside this
    /// `mizzen`, then PATH.
    #[arg(long, env = "MIZZEN_BIN_DIR", value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// The Envoy binary, for `--sidecar envoy`.
    #[arg(long, env = "ENVOY_BIN", default_value = "envoy")]
    pub envoy: PathBuf,
}

/// bookinfo's command line for `app` at `version` with `flags`: on
/// 0.0.0.0:9080 in a pod's namespace; without `capture`, on
/// `$POD_IP:$MIZZEN_APP_PORT_9080`, calling out through `$MIZZEN_EGRESS_IP`
/// (the sidecar's egress listeners; `bash -c` expands them).
pub fn bookinfo_command(
    bookinfo: &Path,
    app: &str,
    version: &str,
    flags: &[&str],
    capture: bool,
) -> Vec<String> {
    let base = [app, "--service-version", version];
    if capture {
        let mut out = vec![bookinfo.display().to_string()];
        out.extend(
            base.iter()
                .chain(&["--listen", "0.0.0.0:9080"])
                .chain(flags)
                .map(|s| s.to_string()),
        );
        return out;
    }
    let quoted: Vec<String> = base
        .iter()
        .chain(flags)
        .map(|s| format!("'{}'", s.replace('\'', "'\\''")))
        .collect();
    vec![
        "bash".into(),
        "-c".into(),
        format!(
            "exec '{}' {} --listen \"$POD_IP:$MIZZEN_APP_PORT_9080\" --connect-to \"$MIZZEN_EGRESS_IP\"",
            bookinfo.display().to_string().replace('\'', "'\\''"),
            quoted.join(" ")
        ),
    ]
}

/// The specs of bookinfo's pods, `sidecar(pod)` choosing each one's sidecar,
/// with or without `capture`.
pub fn bookinfo_pods(
    bookinfo: &Path,
    sidecar: impl Fn(&str) -> SidecarKind,
    capture: bool,
) -> Vec<PodSpec> {
    BOOKINFO_PODS
        .iter()
        .map(|(name, app, version, sa)| PodSpec {
            name: name.to_string(),
            namespace: "default".into(),
            service_account: sa.to_string(),
            labels: [("app", *app), ("version", *version)]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            ports: vec![9080],
            sidecar: sidecar(name),
            command: bookinfo_command(bookinfo, app, version, &[], capture),
            env: Vec::new(),
            gateway: false,
        })
        .collect()
}

/// The ingress gateway's pod (`istio-ingressgateway` in istio-system, labels
/// `istio: ingressgateway`, serving the sample's Gateway on 8080) on `sidecar`'s
/// data plane.
pub fn ingress_gateway(sidecar: SidecarKind) -> PodSpec {
    PodSpec {
        name: "istio-ingressgateway".into(),
        namespace: "istio-system".into(),
        service_account: "istio-ingressgateway-service-account".into(),
        labels: [("istio", "ingressgateway"), ("app", "istio-ingressgateway")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ports: vec![INGRESS_PORT],
        sidecar,
        command: Vec::new(),
        env: Vec::new(),
        gateway: true,
    }
}

/// The in-mesh client pod's name.
pub const SLEEP_POD: &str = "sleep";

/// Istio's `sleep` sample: a client pod in `default` (service account `sleep`)
/// with nothing but a sidecar on `sidecar`'s data plane, from which scenarios
/// call services by name, as `kubectl exec sleep -- curl` does.
pub fn sleep_pod(sidecar: SidecarKind) -> PodSpec {
    PodSpec {
        name: SLEEP_POD.into(),
        namespace: "default".into(),
        service_account: "sleep".into(),
        labels: [("app".to_string(), "sleep".to_string())].into(),
        ports: Vec::new(),
        sidecar,
        command: vec!["sleep".into(), "infinity".into()],
        env: Vec::new(),
        gateway: false,
    }
}

/// The port the ingress gateway serves the sample's Gateway on.
pub const INGRESS_PORT: u16 = 8080;

/// Every proxy connected to pilot at `pilot` (its debug address): (node id,
/// snapshot version, all types ACKed), from `/debug/syncz`.
pub async fn connections(pilot: SocketAddr) -> Vec<(String, u64, bool)> {
    let Ok(body) = crate::up::http_get(pilot, "/debug/syncz").await else {
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    json.as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let synced = c["types"]
                .as_object()
                .into_iter()
                .flatten()
                .all(|(_, t)| t["nonce_sent"].is_null() || t["nonce_sent"] == t["nonce_acked"]);
            (
                c["proxy_id"].as_str().unwrap_or_default().to_string(),
                c["snapshot_version"].as_u64().unwrap_or(0),
                synced,
            )
        })
        .collect()
}

/// The newest snapshot version any proxy was served.
pub async fn pilot_version(pilot: SocketAddr) -> u64 {
    connections(pilot)
        .await
        .iter()
        .map(|(_, v, _)| *v)
        .max()
        .unwrap_or(0)
}

/// Waits until every connected proxy was served a snapshot newer than `after`
/// and ACKed every type; `Err` names the proxies that did not within `within`.
pub async fn wait_synced(pilot: SocketAddr, after: u64, within: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let conns = connections(pilot).await;
        let behind: Vec<&str> = conns
            .iter()
            .filter(|(_, v, synced)| *v <= after || !synced)
            .map(|(id, _, _)| id.as_str())
            .collect();
        if !conns.is_empty() && behind.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "not every sidecar ACKed the new config within {}s: {}",
                within.as_secs(),
                behind.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sidecar's admin interface: inside a pod's network namespace (on
/// 127.0.0.1:15000 there), or at an address on this host (a pod without
/// capture).
#[derive(Debug, Clone)]
pub enum Admin {
    /// In this network namespace.
    Netns(String),
    /// At this address.
    At(SocketAddr),
}

impl Admin {
    /// The admin of `pod` in `mesh`, whose address is `addr`.
    pub fn of(mesh: &Mesh, pod: &str, addr: Ipv4Addr) -> Admin {
        if mesh.capture {
            Admin::Netns(mesh.network.netns_name("default", pod))
        } else {
            Admin::At(SocketAddr::from((addr, 15000)))
        }
    }

    /// `GET path` from it; the body (empty when it could not be asked).
    async fn get(&self, path: &str) -> String {
        let client = match self {
            Admin::Netns(netns) => match crate::pod::net::Dialer::new(netns) {
                Ok(dialer) => traffic::Client::in_pod(
                    dialer,
                    SocketAddr::from((Ipv4Addr::LOCALHOST, 15000)),
                    "localhost",
                ),
                Err(_) => return String::new(),
            },
            Admin::At(addr) => traffic::Client::new(*addr),
        };
        String::from_utf8_lossy(&client.get(path, &[]).await.body).into_owned()
    }
}

/// Waits until the sidecars whose admins are `clients` list `endpoint` as a
/// healthy host of the service `host` (in a cluster of its, subsets' too) in
/// their `/clusters`; `Err` names those that did not within `within`.
pub async fn wait_for_endpoint(
    clients: &[Admin],
    host: &str,
    endpoint: SocketAddr,
    within: Duration,
) -> Result<(), String> {
    let needle = format!("|{host}::{endpoint}::health_flags::healthy");
    let deadline = tokio::time::Instant::now() + within;
    let mut waiting: Vec<&Admin> = clients.iter().collect();
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for admin in waiting {
            if !admin.get("/clusters").await.contains(&needle) {
                still.push(admin);
            }
        }
        waiting = still;
        if !waiting.is_empty() {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "the sidecars at {waiting:?} do not list {endpoint} as a healthy endpoint after {}s",
                    within.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Applies `scenario` (through `apply`, which writes the YAML where pilot reads
/// it), waits for the sidecars, runs its traffic.
pub async fn run_scenario(
    scenario: &scenarios::Scenario,
    target: &scenarios::Target,
    mesh: &Mesh,
    apply: impl FnOnce(&str),
    console: &Console,
) -> scenarios::Report {
    let pilot = mesh.pilot_http();
    let before = pilot_version(pilot).await;
    // A scenario's own pod (retries: a ratings instance that always fails).
    let mut target = target.clone();
    let extra_spec = scenario.extra_pod(&target);
    let extra_host = extra_spec.as_ref().map(|spec| {
        let app = spec.labels.get("app").map_or("", String::as_str);
        format!("{app}.{}.svc.cluster.local", spec.namespace)
    });
    let extra = match extra_spec {
        Some(spec) => match Pod::start(mesh, spec, console).await {
            Ok(pod) => {
                target.pods.insert(pod.name().to_string(), pod.addr());
                Some(pod)
            }
            Err(e) => {
                return scenarios::Report {
                    title: scenario.title,
                    checks: vec![scenarios::Check {
                        what: "the scenario's extra pod".into(),
                        expected: "starts".into(),
                        observed: e.to_string(),
                        ok: false,
                    }],
                };
            }
        },
        None => None,
    };
    // The extra pod's endpoint first: its Pod file is a change of its own,
    // which the clients' sidecars must have taken before the traffic starts.
    let before = match &extra {
        Some(pod) => {
            let clients: Vec<Admin> = ["productpage-v1", SLEEP_POD]
                .iter()
                .filter_map(|p| Some(Admin::of(mesh, p, *target.pods.get(*p)?)))
                .collect();
            let endpoint = SocketAddr::from((pod.addr(), 9080));
            let host = extra_host.as_deref().unwrap_or_default();
            if let Err(e) =
                wait_for_endpoint(&clients, host, endpoint, Duration::from_secs(20)).await
            {
                console.print(&format!("mizzen demo: {e}; going on"));
            }
            pilot_version(pilot).await
        }
        None => before,
    };
    apply(&scenario.config());
    if let Err(e) = wait_synced(pilot, before, Duration::from_secs(20)).await {
        console.print(&format!("mizzen demo: {e}; sending traffic anyway"));
    }
    let report = scenario.run(&target).await;
    if let Some(pod) = extra {
        pod.stop(console).await;
    }
    report
}

/// `mizzen demo` from the command line.
pub fn run(args: &DemoArgs, err: &mut dyn Write) -> u8 {
    match demo(args) {
        Ok(true) => crate::EXIT_OK,
        Ok(false) => EXIT_FAILED,
        Err(e) => {
            let _ = writeln!(err, "mizzen demo: {e}");
            EXIT_FAILED
        }
    }
}

fn demo(args: &DemoArgs) -> Result<bool, String> {
    if args.sidecar == SidecarKind::None {
        return Err(
            "--sidecar none: the scenarios are about what sidecars do (and the ingress gateway is one); pick proxy or envoy"
                .into(),
        );
    }
    let capture = crate::run::is_root() && !args.no_capture;
    let find = |name: &'static str| {
        crate::up::process::find_binary(name, args.bin_dir.as_deref()).map_err(|e| e.to_string())
    };
    let (proxy_bin, bookinfo_bin) = (find("proxy")?, find("bookinfo")?);
    let console = Console::new(std::io::stdout());
    if !capture {
        console.print(&format!(
            "mizzen demo: {}: the control plane listens on 127.0.0.1 and every pod gets a loopback address of {}/{} \
             with its sidecar's listeners bound there (Istio's captureMode: NONE); the app calls out through its sidecar's \
             egress address. Run as root (sudo) for pods in network namespaces with traffic capture",
            if args.no_capture {
                "--no-capture"
            } else {
                "not root, so no network namespaces or capture"
            },
            args.loopback_subnet.0,
            args.loopback_subnet.1
        ));
        if args.sidecar == SidecarKind::Envoy && !crate::run::is_root() {
            console.print(
                "mizzen demo: note: Envoy installed by pip as root may not run as this user; use --sidecar proxy if it fails",
            );
        }
    }
    let config_dir = args.state_dir.join("config");
    std::fs::create_dir_all(&config_dir).map_err(|e| format!("{}: {e}", config_dir.display()))?;
    let write = |name: &str, text: &str| {
        write_atomic(&config_dir.join(name), text).map_err(|e| e.to_string())
    };
    write("platform.yaml", scenarios::BOOKINFO_PLATFORM)?;
    write("networking.yaml", &scenarios::base_networking())?;
    let _ = std::fs::remove_file(config_dir.join(SCENARIO_FILE));

    let up_args = if capture {
        let subnet = format!("{}/{}", args.net.subnet.0, args.net.subnet.1);
        UpArgs::for_pods(
            &args.net.bridge,
            &subnet,
            &config_dir,
            &args.state_dir,
            true,
        )?
    } else {
        UpArgs::local(&config_dir, &args.state_dir, true)?
    };
    let mut mesh = Mesh::of_up(&up_args, proxy_bin, args.envoy.clone(), "warn");
    if !capture {
        let std::net::IpAddr::V4(bind) = up_args.bind else {
            return Err(format!("--bind {} is not IPv4", up_args.bind));
        };
        mesh = mesh.without_capture(args.loopback_subnet, bind)?;
    }
    let citadel_http = SocketAddr::from((mesh.control_plane, up_args.ports.citadel_http_port));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let up_console = console.clone();
    console.print("mizzen demo: [1/3] starting the control plane (galley, citadel, pilot)");
    let up = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        runtime
            .block_on(crate::up::up(&up_args, up_console, async move {
                let _ = stopped.await;
            }))
            .map_err(|e| e.to_string())
    });
    let runtime = crate::runtime("demo").map_err(|e| format!("cannot start the runtime: {e}"))?;
    let outcome = runtime.block_on(async {
        for addr in [mesh.pilot_http(), citadel_http] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while !crate::up::http_ok(addr, "/ready").await {
                if up.is_finished() || tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "the control plane did not start (no /ready at {addr})"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut pods: Vec<Pod> = Vec::new();
        let result = walk(args, &mesh, &bookinfo_bin, &config_dir, &console, &mut pods).await;
        console.print("mizzen demo: stopping the pods and the control plane");
        crate::pod::stop_all(pods, &console).await;
        result
    });
    let _ = stop.send(());
    if let Ok(Err(e)) = up.join() {
        console.print(&format!("mizzen demo: the control plane: {e}"));
    }
    outcome
}

/// Starts the pods and walks through the scenarios; whether all matched.
async fn walk(
    args: &DemoArgs,
    mesh: &Mesh,
    bookinfo: &Path,
    config_dir: &Path,
    console: &Console,
    pods: &mut Vec<Pod>,
) -> Result<bool, String> {
    let mut specs = bookinfo_pods(bookinfo, |_| args.sidecar, mesh.capture);
    specs.push(ingress_gateway(args.sidecar));
    specs.push(sleep_pod(args.sidecar));
    let total = specs.len();
    let mut addrs = BTreeMap::new();
    for (i, spec) in specs.into_iter().enumerate() {
        console.print(&format!(
            "mizzen demo: [2/3] starting pod {}/{total}: {} ({:?} {})",
            i + 1,
            spec.name,
            args.sidecar,
            if spec.gateway { "gateway" } else { "sidecar" }
        ));
        let pod = Pod::start(mesh, spec, console)
            .await
            .map_err(|e| e.to_string())?;
        addrs.insert(pod.name().to_string(), pod.addr());
        pods.push(pod);
    }
    let productpage = addrs
        .get("productpage-v1")
        .copied()
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let ingress = addrs
        .get("istio-ingressgateway")
        .map(|ip| SocketAddr::from((*ip, INGRESS_PORT)));
    let addrs_sleep = addrs.get(SLEEP_POD).copied();
    let target = scenarios::Target {
        productpage: SocketAddr::from((productpage, 9080)),
        ingress,
        sidecars: addrs
            .keys()
            .map(|name| (name.clone(), args.sidecar))
            .collect(),
        pods: addrs,
        bookinfo: bookinfo.to_path_buf(),
        client: if mesh.capture {
            Some(scenarios::ClientPod::Netns(
                mesh.network.netns_name("default", SLEEP_POD),
            ))
        } else {
            addrs_sleep.map(|ip| scenarios::ClientPod::Egress(crate::pod::net::egress_addr(ip)))
        },
        capture: mesh.capture,
    };
    let all = scenarios::all();
    let mut passed = true;
    for (i, scenario) in all.iter().enumerate() {
        console.print(&format!(
            "\nmizzen demo: [3/3] scenario {}/{}: {}",
            i + 1,
            all.len(),
            scenario.title
        ));
        let report = run_scenario(
            scenario,
            &target,
            mesh,
            |yaml| {
                if let Err(e) = write_atomic(&config_dir.join(SCENARIO_FILE), yaml) {
                    console.print(&format!("mizzen demo: {e}"));
                }
            },
            console,
        )
        .await;
        console.print(&report.table());
        passed &= report.passed();
    }
    console.print(&format!(
        "\nmizzen demo: {}",
        if passed {
            "every scenario behaved as Istio's semantics say"
        } else {
            "a scenario did not match (MISMATCH above)"
        }
    ));
    if !args.once {
        let entry = target.ingress.unwrap_or(target.productpage);
        console.print(&format!(
            "mizzen demo: bookinfo stays up behind the ingress gateway. Try:\n  curl http://{entry}/productpage\n  curl -H 'end-user: jason' http://{entry}/api/v1/products/0/reviews\n  {}    (from the sleep pod, through its sidecar)\n  mizzen proxy-status --pilot-addr {}\nThe mesh config is in {}; edit it and pilot pushes the change. Stop: Ctrl-C",
            match &target.client {
                Some(scenarios::ClientPod::Egress(egress)) => format!("curl -s -H 'Host: ratings:9080' http://{egress}:9080/ratings/0"),
                _ => format!("ip netns exec {} curl -s ratings:9080/ratings/0", mesh.network.netns_name("default", SLEEP_POD)),
            },
            mesh.pilot_http(),
            config_dir.display()
        ));
        common::runtime::shutdown_signal().await;
    }
    Ok(passed)
}
