//! Load generator and benchmark for pilot's xDS (issue 3, item 7; results in
//! `BENCHMARKS.md`, run by `scripts/bench-pilot`).
//!
//! It writes a synthetic mesh as YAML (N Kubernetes Services × M endpoints from
//! `Endpoints` objects with 10.x addresses, spread over ten namespaces; for a
//! fraction of the services a VirtualService with a header match and a 90/10
//! split plus a DestinationRule with subsets `v1`/`v2`, whose endpoints come
//! from labelled Pods) and measures, in one of three modes:
//!
//! - `push`: the time to generate CDS, EDS, LDS and RDS for one sidecar from the
//!   loaded snapshot (what a full push costs per proxy) and the encoded bytes;
//! - `converge`: an in-process pilot [`App`] on 127.0.0.1 and K delta ADS clients
//!   over real gRPC, each subscribing as Envoy does (CDS and LDS, then the EDS
//!   clusters and RDS routes they name) and ACKing every response; then one
//!   endpoint changes (a snapshot published with `endpoints_only`, as the config
//!   controller does) and each client's delay from the publish to its EDS update
//!   is reported as p50/p99/max;
//! - `rss`: a `pilot` child process serving the generated directory, its VmRSS
//!   once ready and again after a few proxies have synced.
//!
//! `cargo run --release -p pilot --example xds_load -- converge --services 1000 --endpoints 2 --clients 2000`

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use pilot::app::{App, Config};
use pilot::config::{ConfigController, ConfigOptions};
use pilot::model::{ModelHandle, Snapshot};
use pilot::proxy::Proxy;
use pilot::xds::{self, CLUSTER, ENDPOINT, LISTENER, NamedResource, ROUTE};
use prost::Message;

mod clients;
mod procfs;
mod wire;

use clients::{Clients, Report, start_clients};
use procfs::{minor_faults, process_cpu, status_kb};
use tokio::sync::{Semaphore, mpsc};

/// The allocator the `pilot` binary runs with, so the in-process pilot of
/// `converge` and `push` is measured as shipped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(about = "Synthetic mesh generator and xDS benchmark for pilot")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Full-push time and bytes for one sidecar.
    Push {
        #[command(flatten)]
        mesh: MeshArgs,
        /// Generations to time (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Convergence of K delta ADS clients after one endpoint change.
    Converge {
        #[command(flatten)]
        mesh: MeshArgs,
        /// Simulated proxies (delta ADS streams, one TCP connection each).
        #[arg(long, default_value_t = 100)]
        clients: usize,
        /// Endpoint changes to measure (latencies of all are pooled).
        #[arg(long, default_value_t = 5)]
        changes: usize,
        /// Accepted for the command line in the issue; the clients always speak delta.
        #[arg(long)]
        delta: bool,
        /// Worker threads of the clients' own runtime (default: one per core,
        /// as many as pilot's runtime has); 0 runs them on pilot's (their CPU
        /// time is then counted as pilot's). With one thread, the simulated
        /// fleet handles its updates one at a time and its thread, not pilot,
        /// sets the p99 (BENCHMARKS.md, "Pilot xDS").
        #[arg(long)]
        client_threads: Option<usize>,
    },
    /// RSS of a pilot child process serving the generated mesh.
    Rss {
        #[command(flatten)]
        mesh: MeshArgs,
        /// The pilot binary (default: `pilot` next to this example's directory).
        #[arg(long)]
        pilot: Option<PathBuf>,
        /// Delta clients to sync before the second reading.
        #[arg(long, default_value_t = 10)]
        clients: usize,
    },
}

#[derive(Args, Debug, Clone)]
struct MeshArgs {
    /// Kubernetes Services.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Endpoints per service.
    #[arg(long, default_value_t = 2)]
    endpoints: usize,
    /// Every how many services one gets a VirtualService and a DestinationRule.
    #[arg(long, default_value_t = 10)]
    routed_every: usize,
}

/// Namespaces the services are spread over.
const NAMESPACES: usize = 10;
/// The port every service serves.
const PORT: u32 = 8080;
/// The name of the simulated proxies' threads (their own runtime), so their
/// CPU time is told apart from pilot's.
const CLIENT_THREAD: &str = "xds-client";

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Ok(n) = std::env::var("EVENT_INTERVAL") {
        builder.event_interval(n.parse()?);
    }
    if let Ok(n) = std::env::var("GLOBAL_QUEUE_INTERVAL") {
        builder.global_queue_interval(n.parse()?);
    }
    let rt = builder.build()?;
    rt.block_on(async move {
        match cli.mode {
            Mode::Push { mesh, rounds } => push(&mesh, rounds),
            Mode::Converge {
                mesh,
                clients,
                changes,
                delta: _,
                client_threads,
            } => {
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                converge(&mesh, clients, changes, client_threads.unwrap_or(cores)).await
            }
            Mode::Rss {
                mesh,
                pilot,
                clients,
            } => rss(&mesh, pilot, clients).await,
        }
    })
}

// ---------------------------------------------------------------- the mesh

fn host(i: usize) -> String {
    format!("svc-{i}.ns-{}.svc.cluster.local", i % NAMESPACES)
}

fn ip(n: usize) -> String {
    format!("10.{}.{}.{}", 1 + n / 65_536, (n / 256) % 256, n % 256)
}

/// Writes the mesh as one multi-document YAML file per namespace.
fn write_mesh(dir: &Path, m: &MeshArgs) -> Result<Stats> {
    let mut files: Vec<String> = (0..NAMESPACES)
        .map(|n| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{n}\n"))
        .collect();
    let mut stats = Stats::default();
    let mut next_ip = 0;
    for i in 0..m.services {
        let ns = format!("ns-{}", i % NAMESPACES);
        let name = format!("svc-{i}");
        let routed = m.routed_every > 0 && i % m.routed_every == 0;
        let out = &mut files[i % NAMESPACES];
        write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  clusterIP: 10.96.{}.{}\n  selector: {{app: {name}}}\n  ports:\n  - {{name: http, port: {PORT}, targetPort: {PORT}}}\n",
            i / 256 % 256,
            i % 256
        )?;
        let mut addresses = String::new();
        for e in 0..m.endpoints {
            let addr = ip(next_ip);
            next_ip += 1;
            if routed {
                let pod = format!("{name}-{e}");
                let version = if e % 2 == 0 { "v1" } else { "v2" };
                write!(
                    out,
                    "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  namespace: {ns}\n  \
                     labels: {{app: {name}, version: {version}, security.istio.io/tlsMode: istio}}\n\
                     spec:\n  containers: [{{name: app, image: app}}]\nstatus: {{podIP: {addr}}}\n"
                )?;
                stats.pods += 1;
                writeln!(
                    addresses,
                    "  - {{ip: {addr}, targetRef: {{kind: Pod, name: {pod}, namespace: {ns}}}}}"
                )?;
            } else {
                writeln!(addresses, "  - {{ip: {addr}}}")?;
            }
        }
        write!(
            out,
            "---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             subsets:\n- addresses:\n{addresses}  ports:\n  - {{name: http, port: {PORT}}}\n"
        )?;
        stats.services += 1;
        stats.endpoints += m.endpoints;
        if routed {
            write!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
                 metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  host: {name}\n\
                 \x20 trafficPolicy: {{connectionPool: {{tcp: {{maxConnections: 100}}}}}}\n\
                 \x20 subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n\
                 ---\napiVersion: networking.istio.io/v1\nkind: VirtualService\n\
                 metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [{name}]\n  http:\n\
                 \x20 - match: [{{headers: {{end-user: {{exact: jason}}}}}}]\n\
                 \x20   route: [{{destination: {{host: {name}, subset: v2}}}}]\n\
                 \x20 - timeout: 5s\n    route:\n\
                 \x20   - {{destination: {{host: {name}, subset: v1}}, weight: 90}}\n\
                 \x20   - {{destination: {{host: {name}, subset: v2}}, weight: 10}}\n"
            )?;
            stats.routed += 1;
        }
    }
    for (n, body) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("ns-{n}.yaml")), body)?;
    }
    Ok(stats)
}

#[derive(Debug, Default)]
struct Stats {
    services: usize,
    endpoints: usize,
    pods: usize,
    routed: usize,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} services, {} endpoints, {} pods, {} VirtualService+DestinationRule pairs",
            self.services, self.endpoints, self.pods, self.routed
        )
    }
}

/// Writes the mesh to a fresh directory and loads it like pilot does (galley
/// validation included). Returns the model, the directory, and the load time.
fn load(m: &MeshArgs) -> Result<(ModelHandle, tempfile::TempDir, Duration)> {
    let dir = tempfile::tempdir()?;
    let stats = write_mesh(dir.path(), m)?;
    println!("mesh: {stats}");
    let model = ModelHandle::default();
    let started = Instant::now();
    let mut controller = ConfigController::from_dir(dir.path(), ConfigOptions::default());
    let reload = controller.reload_once(&model)?;
    let took = started.elapsed();
    if reload.outcome.rejected > 0 {
        bail!(
            "{} generated resources were rejected",
            reload.outcome.rejected
        );
    }
    Ok((model, dir, took))
}

fn node(i: usize) -> Node {
    let ns = format!("ns-{}", i % NAMESPACES);
    let str_value = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_string())),
    };
    let mut fields = BTreeMap::new();
    fields.insert("NAMESPACE".to_string(), str_value(&ns));
    fields.insert("CLUSTER_ID".to_string(), str_value("Kubernetes"));
    fields.insert("SERVICE_ACCOUNT".to_string(), str_value("default"));
    Node {
        id: format!(
            "sidecar~10.200.{}.{}~client-{i}.{ns}~{ns}.svc.cluster.local",
            i / 256 % 256,
            i % 256
        ),
        metadata: Some(Struct {
            fields: fields.into_iter().collect(),
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------- push

fn eds_names(clusters: &[NamedResource]) -> Vec<String> {
    clusters
        .iter()
        .filter_map(|r| {
            let c = Cluster::decode(r.resource.value.as_slice()).ok()?;
            (c.cluster_discovery_type
                == Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)))
            .then_some(c.name)
        })
        .collect()
}

fn route_names(listeners: &[NamedResource]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for r in listeners {
        let Ok(l) = Listener::decode(r.resource.value.as_slice()) else {
            continue;
        };
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                let Some(ConfigType::TypedConfig(any)) = &f.config_type else {
                    continue;
                };
                if !any.type_url.ends_with("HttpConnectionManager") {
                    continue;
                }
                if let Ok(h) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(RouteSpecifier::Rds(rds)) = h.route_specifier
                {
                    out.insert(rds.route_config_name);
                }
            }
        }
    }
    out.into_iter().collect()
}

fn bytes(rs: &[NamedResource]) -> usize {
    rs.iter()
        .map(|r| r.name.len() + r.resource.value.len())
        .sum()
}

fn push(m: &MeshArgs, rounds: usize) -> Result<()> {
    let (model, _dir, load_time) = load(m)?;
    let snapshot = model.load();
    let mut proxy = Proxy::from_node(&node(0))?;
    proxy.complete_from(&snapshot);
    let mut times: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut sizes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for _ in 0..rounds.max(1) {
        let gen_timed = |t: &'static str,
                         ty: &str,
                         names: &[String],
                         times: &mut BTreeMap<&str, Vec<Duration>>| {
            let s = Instant::now();
            let r = xds::generate(&snapshot, &proxy, ty, names).expect("served type");
            times.entry(t).or_default().push(s.elapsed());
            r
        };
        let cds = gen_timed("cds", CLUSTER, &[], &mut times);
        let eds = gen_timed("eds", ENDPOINT, &eds_names(&cds), &mut times);
        let lds = gen_timed("lds", LISTENER, &[], &mut times);
        let rds = gen_timed("rds", ROUTE, &route_names(&lds), &mut times);
        // Name extraction (decoding) is the client's work; leave it out of the total.
        let all: Duration = ["cds", "eds", "lds", "rds"]
            .iter()
            .map(|t| *times[t].last().expect("timed"))
            .sum();
        times.entry("total").or_default().push(all);
        for (t, r) in [("cds", &cds), ("eds", &eds), ("lds", &lds), ("rds", &rds)] {
            sizes.insert(t, (r.len(), bytes(r)));
        }
        let all_bytes = [&cds, &eds, &lds, &rds].iter().map(|r| bytes(r)).sum();
        let all_count = cds.len() + eds.len() + lds.len() + rds.len();
        sizes.insert("total", (all_count, all_bytes));
    }
    println!(
        "load (read + validate + build snapshot): {:.1} ms",
        ms(load_time)
    );
    println!(
        "\n| services × endpoints | type | resources | bytes | generation time (median of {rounds}) |"
    );
    println!("|---|---|---|---|---|");
    for t in ["cds", "eds", "lds", "rds", "total"] {
        let mut v = times[t].clone();
        v.sort();
        let (n, b) = sizes[t];
        println!(
            "| {} × {} | {t} | {n} | {} | {:.2} ms |",
            m.services,
            m.endpoints,
            thousands(b),
            ms(v[v.len() / 2])
        );
    }
    Ok(())
}

// ---------------------------------------------------------------- converge

async fn converge(m: &MeshArgs, k: usize, changes: usize, client_threads: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let stats = write_mesh(dir.path(), m)?;
    let on = match client_threads {
        0 => "pilot's runtime".to_string(),
        n => format!("{n} thread(s) of their own"),
    };
    println!("mesh: {stats}; {k} delta ADS clients on {on}");
    let mut config = Config::for_dir(dir.path());
    config.xds_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.xds_max_message_bytes = 256 * 1024 * 1024;
    let app = App::build(config).await?;
    let addr = app.addrs().xds;
    let model = app.model();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stop_rx.await;
    }));

    // Change an endpoint of a service without subsets (svc-1).
    let target = 1.min(m.services - 1);
    let watched_host = host(target);
    // The clients run on their own runtime (threads) unless told to share
    // pilot's: each side then drives its own sockets, as on separate machines,
    // though on the same two cores.
    let own_runtime = ClientRuntime(match client_threads {
        0 => None,
        n => Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .thread_name(CLIENT_THREAD)
                .enable_all()
                .build()?,
        ),
    });
    let runtime = own_runtime
        .0
        .as_ref()
        .map_or_else(tokio::runtime::Handle::current, |r| r.handle().clone());
    let Clients {
        mut reports,
        board,
        sync_time,
    } = start_clients(k, addr, &watched_host, &runtime).await?;
    println!("initial sync of {k} clients: {:.0} ms", ms(sync_time));
    let mut delays = Vec::new();
    let mut cpu_per_client = Vec::new();
    let mut change_p99s = Vec::new();
    // The mesh settles after the initial sync (the last ACKs, the
    // allocator returning the sync's memory) before the first change.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for change in 0..changes {
        tokio::time::sleep(Duration::from_millis(300)).await;
        while reports.try_recv().is_ok() {}
        let current = model.load();
        let mut next: Snapshot = (*current).clone();
        next.version += 1;
        let eps = next
            .endpoints
            .get_mut(&watched_host)
            .and_then(|p| p.get_mut(&PORT))
            .context("target endpoints")?;
        eps[0].address = format!("10.250.{}.{}", change / 256 % 256, change % 256);
        pilot::registry::describe_change(&current, &mut next);
        if !next.endpoints_only {
            bail!("the change was not seen as endpoints-only");
        }
        if change == 0 {
            println!(
                "endpoint change: {} host(s), {} candidate EDS cluster name(s)",
                next.endpoints_changed.len(),
                next.changed_cluster_names().len()
            );
        }
        board.clear();
        let faults_before = minor_faults()?;
        let cpu_before = process_cpu()?;
        let published = Instant::now();
        // Published from a task on pilot's runtime, as the config controller
        // does (`App::run_until`'s controller task), not from this driver's
        // thread: where a wake-up comes from decides which run queue the
        // connections' tasks land in.
        let publisher = model.clone();
        tokio::spawn(async move { publisher.publish(next) }).await?;
        let mut got = vec![None; k];
        let mut n = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while n < k {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if let Ok(Report::Failed(e)) = reports.try_recv() {
                bail!("{e}");
            }
            for (i, slot) in got.iter_mut().enumerate() {
                if slot.is_none()
                    && let Some(at) = board.get(i)
                {
                    *slot = Some(at.saturating_duration_since(published));
                    n += 1;
                }
            }
            if Instant::now() > deadline {
                bail!("only {n} of {k} clients saw change {change} within 120 s");
            }
        }
        // Let the ACKs land before reading the CPU time spent on this change.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let split = process_cpu()?.since(cpu_before);
        let cpu = split.total();
        let faults = minor_faults()?.saturating_sub(faults_before);
        cpu_per_client.push(cpu / k as u32);
        let mut this: Vec<Duration> = got.into_iter().flatten().collect();
        this.sort();
        println!(
            "change {change}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; CPU {:.1} ms ({:.1} µs per client: pilot {:.1}, clients {:.1}); {faults} page faults",
            ms(pct(&this, 50.0)),
            ms(pct(&this, 99.0)),
            ms(*this.last().expect("k > 0")),
            ms(cpu),
            cpu.as_secs_f64() * 1e6 / k as f64,
            split.pilot.as_secs_f64() * 1e6 / k as f64,
            split.clients.as_secs_f64() * 1e6 / k as f64,
        );
        change_p99s.push(pct(&this, 99.0));
        delays.extend(this);
    }
    delays.sort();
    cpu_per_client.sort();
    change_p99s.sort();
    let within = change_p99s
        .iter()
        .filter(|d| **d <= Duration::from_millis(50))
        .count();
    println!(
        "per-change p99: min {:.1} ms, median {:.1} ms, max {:.1} ms; {within} of {changes} changes at or under 50 ms",
        ms(*change_p99s.first().context("no change measured")?),
        ms(pct(&change_p99s, 50.0)),
        ms(*change_p99s.last().context("no change measured")?),
    );
    println!(
        "\n| services × endpoints | delta clients | changes | p50 | p99 | max | CPU per client per change (median) |\n|---|---|---|---|---|---|---|"
    );
    println!(
        "| {} × {} | {k} | {changes} | {:.1} ms | {:.1} ms | {:.1} ms | {:.0} µs |",
        m.services,
        m.endpoints,
        ms(pct(&delays, 50.0)),
        ms(pct(&delays, 99.0)),
        ms(*delays.last().context("no measurement")?),
        pct(&cpu_per_client, 50.0).as_secs_f64() * 1e6
    );
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    drop(own_runtime);
    Ok(())
}

/// The clients' own runtime (none when they share pilot's), shut down without
/// waiting when dropped: it is dropped inside pilot's runtime, where a
/// blocking shutdown would panic (and hide the error that ended the run early).
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------- rss

fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn rss(m: &MeshArgs, pilot_bin: Option<PathBuf>, k: usize) -> Result<()> {
    let bin = match pilot_bin {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("locating target dir")?
            .join("pilot"),
    };
    let dir = tempfile::tempdir()?;
    let stats = write_mesh(dir.path(), m)?;
    println!("mesh: {stats}");
    let (xds_addr, http_addr) = (free_port()?, free_port()?);
    let started = Instant::now();
    let child = Command::new(&bin)
        .arg("--config-dir")
        .arg(dir.path())
        .arg("--xds-addr")
        .arg(xds_addr.to_string())
        .arg("--http-addr")
        .arg(http_addr.to_string())
        .arg("--xds-max-message-bytes")
        .arg((256 * 1024 * 1024).to_string())
        .arg("--log-level")
        .arg("warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let child = Killed(child);
    let pid = child.0.id();
    loop {
        if http_get(http_addr, "/ready").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("pilot not ready within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = started.elapsed();
    let at_ready = status_kb(pid, "VmRSS:")?;
    let hwm_at_ready = status_kb(pid, "VmHWM:")?;
    // Pilot loads the directory a second time when its watcher starts; wait
    // until the resident size has not moved for 2 s (at most 30 s).
    let mut last = at_ready;
    let mut still = Duration::ZERO;
    let settling = Instant::now();
    while still < Duration::from_secs(2) && settling.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = status_kb(pid, "VmRSS:")?;
        if now == last {
            still += Duration::from_millis(250);
        } else {
            still = Duration::ZERO;
            last = now;
        }
    }
    let mut rows = vec![
        (
            format!("at /ready ({:.1} s after start)", ready.as_secs_f64()),
            at_ready,
            hwm_at_ready,
        ),
        (
            "loaded and settled".to_string(),
            status_kb(pid, "VmRSS:")?,
            status_kb(pid, "VmHWM:")?,
        ),
    ];
    if k > 0 {
        let took = start_clients(k, xds_addr, &host(0), &tokio::runtime::Handle::current())
            .await?
            .sync_time;
        tokio::time::sleep(Duration::from_millis(500)).await;
        rows.push((
            format!("{k} delta clients synced ({:.1} s)", took.as_secs_f64()),
            status_kb(pid, "VmRSS:")?,
            status_kb(pid, "VmHWM:")?,
        ));
    }
    println!("\n| services × endpoints | state | VmRSS | VmHWM (peak) |\n|---|---|---|---|");
    for (state, rss, hwm) in rows {
        println!(
            "| {} × {} | {state} | {:.0} MB | {:.0} MB |",
            m.services,
            m.endpoints,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    drop(child);
    Ok(())
}

// ---------------------------------------------------------------- helpers

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
