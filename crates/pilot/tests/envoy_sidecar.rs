//! The seed examples through a stock Envoy 1.40 running as a SIDECAR, the way
//! a pod runs it: Envoy (node `sidecar~POD_IP~productpage-v1.default~…`) and
//! the client live in a network namespace whose outbound TCP to the service
//! range 10.96.0.0/16 is redirected to Envoy's 15001 (`iptables -t nat -A
//! OUTPUT … -j REDIRECT --to-ports 15001`, istio-iptables' capture limited to
//! the service CIDR so Envoy's own upstream and xDS traffic is not captured).
//! Pilot and the `reviews` pods stay in the test process, on the host end of a
//! veth pair. Pilot serves the seed VirtualService and DestinationRule
//! (`testdata/corpus/seed/02-*`, `03-*`) unchanged, bound to `mesh`; a client
//! in the namespace calls `http://reviews:9080` by its virtual IP and must be
//! routed as the seed describes: `end-user: jason` → v2, else v1/v3 75/25.
//!
//! Needs root, `ip` (iproute2), `iptables` and `curl` and `envoy` on PATH; a
//! missing one fails the test with what to install. Every wait is bounded;
//! Envoy's log is printed on failure.

#[path = "support/envoy.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use support::{Envoy, Upstream, WAIT, envoy_binary, percent, stat_u64, stats};

const MESH: &str = include_str!("fixtures/conformance/sidecar-mesh.yaml");
const SEED_VS: &str = include_str!("../../../testdata/corpus/seed/02-virtualservice-reviews.yaml");
const SEED_DR: &str = include_str!("../../../testdata/corpus/seed/03-destinationrule-reviews.yaml");
const REVIEWS_VIP: &str = "10.96.0.12";

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{cmd}`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{cmd} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn must(cmd: &str, args: &[&str]) -> String {
    run(cmd, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Root, iproute2, iptables and curl, or a panic naming what is missing.
fn require_tools() {
    envoy_binary();
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "the sidecar conformance test creates a network namespace and iptables rules: run it as root (CI does)"
    );
    for (tool, args, hint) in [
        ("ip", &["-V"][..], "apt-get install iproute2"),
        ("iptables", &["--version"][..], "apt-get install iptables"),
        ("curl", &["--version"][..], "apt-get install curl"),
    ] {
        if let Err(e) = run(tool, args) {
            panic!("the sidecar conformance test needs `{tool}` ({e}): {hint}");
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace joined to the host by a veth pair; deleted on drop.
struct Netns {
    name: String,
    /// The subnet's first three octets, `10.251.X`.
    prefix: String,
}

impl Netns {
    /// Host end `.1` (plus `extra` host addresses), namespace end `.2`.
    fn create(extra: &[u8]) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 10_000;
        let name = format!("mzc-{id}-{n}");
        let prefix = format!("10.251.{}", (std::process::id() + n) % 250 + 1);
        let (host, peer) = (format!("mzc{id}h{n}"), format!("mzc{id}n{n}"));
        let _ = run("ip", &["netns", "del", &name]);
        let _ = run("ip", &["link", "del", &host]);
        must("ip", &["netns", "add", &name]);
        let ns = Netns { name, prefix };
        let name = ns.name.as_str();
        must(
            "ip",
            &["netns", "exec", name, "ip", "link", "set", "lo", "up"],
        );
        must(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &peer],
        );
        must("ip", &["link", "set", &peer, "netns", name]);
        for last in std::iter::once(1).chain(extra.iter().copied()) {
            must(
                "ip",
                &[
                    "addr",
                    "add",
                    &format!("{}.{last}/24", ns.prefix),
                    "dev",
                    &host,
                ],
            );
        }
        must("ip", &["link", "set", &host, "up"]);
        let peer_addr = format!("{}/24", ns.ip(2));
        must(
            "ip",
            &[
                "netns", "exec", name, "ip", "addr", "add", &peer_addr, "dev", &peer,
            ],
        );
        must(
            "ip",
            &["netns", "exec", name, "ip", "link", "set", &peer, "up"],
        );
        // A route for the service range (NAT OUTPUT runs after routing). It points
        // at the namespace's own loopback, not at the host: captured traffic is
        // redirected to 15001 anyway, and anything uncaptured can never leave the
        // namespace for a real network.
        must(
            "ip",
            &[
                "netns",
                "exec",
                name,
                "ip",
                "route",
                "add",
                "10.96.0.0/16",
                "dev",
                "lo",
            ],
        );
        // istio-iptables' outbound capture, limited to the service range.
        must(
            "ip",
            &[
                "netns",
                "exec",
                name,
                "iptables",
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                "10.96.0.0/16",
                "-j",
                "REDIRECT",
                "--to-ports",
                "15001",
            ],
        );
        ns
    }

    fn ip(&self, last: u8) -> String {
        format!("{}.{last}", self.prefix)
    }

    /// `curl` inside the namespace: `count` GETs of `http://reviews:9080/` on
    /// one keep-alive connection; each answer as (status, body).
    fn curl(&self, count: usize, headers: &[&str]) -> Vec<(u16, String)> {
        self.curl_raw(count, headers).0
    }

    /// As [`Netns::curl`], with curl's output (or error) as text.
    fn curl_raw(&self, count: usize, headers: &[&str]) -> (Vec<(u16, String)>, String) {
        let url = format!("http://{REVIEWS_VIP}:9080/r[1-{count}]");
        let mut args = vec![
            "netns",
            "exec",
            &self.name,
            "curl",
            "-sS",
            "-m",
            "20",
            "-H",
            "Host: reviews",
        ];
        for h in headers {
            args.extend(["-H", h]);
        }
        args.extend(["-w", " %{http_code}\\n", &url]);
        let out = run("ip", &args).unwrap_or_else(|e| e);
        let answers = out
            .lines()
            .filter_map(|l| {
                let (body, status) = l.rsplit_once(' ')?;
                Some((status.parse().ok()?, body.to_string()))
            })
            .collect();
        (answers, out)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

fn tally(answers: &[(u16, String)]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for (status, body) in answers {
        let key = if *status == 200 {
            body.clone()
        } else {
            format!("<{status}>")
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

fn sidecar_bootstrap(pod_ip: &str, xds: std::net::SocketAddr) -> String {
    let id = format!("sidecar~{pod_ip}~productpage-v1.default~default.svc.cluster.local");
    let metadata = format!(
        "    NAMESPACE: default\n    LABELS:\n      app: productpage\n      version: v1\n    INSTANCE_IPS: {pod_ip}\n    WORKLOAD_NAME: productpage-v1\n"
    );
    let node = support::BootstrapNode {
        id: &id,
        cluster: "productpage.default",
        metadata: &metadata,
    };
    support::istio_bootstrap(&node, xds, false, pod_ip, 15000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_route_a_sidecars_captured_traffic() {
    require_tools();
    let ns = Netns::create(&[11, 12, 13]);
    let pod_ip = ns.ip(2);
    let mut values = vec![
        ("POD_IP".to_string(), pod_ip.clone()),
        ("V1_IP".to_string(), ns.ip(11)),
        ("V2_IP".to_string(), ns.ip(12)),
        ("V3_IP".to_string(), ns.ip(13)),
    ];
    let mut upstreams = BTreeMap::new();
    for (name, last, placeholder) in [
        ("reviews-v1", 11, "REVIEWS_V1_PORT"),
        ("reviews-v2", 12, "REVIEWS_V2_PORT"),
        ("reviews-v3", 13, "REVIEWS_V3_PORT"),
    ] {
        let ip: &'static str = Box::leak(ns.ip(last).into_boxed_str());
        let up = Upstream::start(ip, name).await;
        values.push((placeholder.to_string(), up.port.to_string()));
        upstreams.insert(name, up);
    }
    let mesh = values.iter().fold(MESH.to_string(), |t, (k, v)| {
        t.replace(&format!("{{{{{k}}}}}"), v)
    });
    assert!(!mesh.contains("{{"), "unfilled placeholder:\n{mesh}");

    let config_dir = tempfile::tempdir().unwrap();
    for (file, text) in [
        ("mesh.yaml", mesh.as_str()),
        ("02-virtualservice-reviews.yaml", SEED_VS),
        ("03-destinationrule-reviews.yaml", SEED_DR),
    ] {
        std::fs::write(config_dir.path().join(file), text).unwrap();
    }
    let (addrs, pilot) = support::serve_config(config_dir.path(), &ns.ip(1)).await;

    let envoy_dir = tempfile::tempdir().unwrap();
    let mut envoy = Envoy::spawn(
        envoy_dir.path(),
        &sidecar_bootstrap(&pod_ip, addrs.xds),
        Some(&ns.name),
    );
    let admin = envoy.admin().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let s = stats(admin).await;
        if stat_u64(&s, "cluster_manager.cds.update_success") >= 1
            && stat_u64(&s, "listener_manager.lds.update_success") >= 1
            && stat_u64(&s, "listener_manager.total_listeners_active") >= 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar did not get its config within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The first answer from v2 shows routes and endpoints are in place.
    let deadline = Instant::now() + WAIT;
    let (mut last, mut raw) = (Vec::new(), String::new());
    while Instant::now() < deadline {
        (last, raw) = tokio::task::block_in_place(|| ns.curl_raw(1, &["end-user: jason"]));
        if last
            .first()
            .is_some_and(|(s, b)| *s == 200 && b == "reviews-v2")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        last.first().map(|(s, b)| (*s, b.as_str())),
        Some((200, "reviews-v2")),
        "captured traffic to reviews never reached v2 within {WAIT:?}; curl said: {raw}\nsidecar listeners: {}",
        support::admin_get(admin, "/listeners")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    );

    upstreams["reviews-v2"].reset();
    let jason = tally(&tokio::task::block_in_place(|| {
        ns.curl(200, &["end-user: jason"])
    }));
    assert_eq!(jason.get("reviews-v2"), Some(&200), "{jason:?}");

    let n = 2_000;
    let counts = tally(&tokio::task::block_in_place(|| ns.curl(n, &[])));
    let v1 = counts.get("reviews-v1").copied().unwrap_or(0);
    let v3 = counts.get("reviews-v3").copied().unwrap_or(0);
    assert_eq!(v1 + v3, n, "only v1 and v3 without the header: {counts:?}");
    let share = percent(v1, n);
    eprintln!("sidecar: jason {jason:?}; others {counts:?}; v1 share {share:.1}%");
    assert!(
        (share - 75.0).abs() <= 5.0,
        "seed 75/25 split through the sidecar: v1 {share:.1}%"
    );
    assert_eq!(
        upstreams["reviews-v2"].hits(),
        200,
        "v2 saw only jason's requests"
    );

    support::assert_no_rejects(admin).await;
    drop(envoy);
    pilot.abort();
}
