//! AuthorizationPolicy through a stock Envoy 1.40 with real traffic, on both
//! places pilot puts RBAC filters:
//!
//! - **gateway**: the conformance [`Mesh`] (Envoy as the ingress gateway on
//!   loopback, `reviews` upstreams), policies selecting `istio: ingressgateway`
//!   in `istio-system`;
//! - **sidecar inbound**: Envoy as the `ratings-v1` sidecar in a network
//!   namespace whose inbound TCP to port 9080 is redirected to 15006
//!   (istio-iptables' inbound capture), the application a tiny HTTP server on
//!   the namespace's loopback, and the client in the test process on the host
//!   end of a veth pair. Mesh-wide PeerAuthentication DISABLE (no SDS here),
//!   so principal and namespace rules are covered at the proto level (unit
//!   tests in `src/xds/authz/tests.rs`), not here.
//!
//! Both run the same steps ([`exercise`]) with the policies of
//! `fixtures/authz/`: no policy lets everything through; an ALLOW policy lets
//! only GET /foo (and /ip/* from the client's block) through and answers the
//! rest with Envoy's `403 RBAC: access denied`; DENY policies win over it (a
//! header condition, a mesh-wide root-namespace path prefix on the port, a
//! CUSTOM policy without provider), and `/debug/configz` reports the CUSTOM
//! one as not applied; `spec: {}` denies everything. An AUDIT policy using
//! every field and condition pilot translates rides along: Envoy must reject
//! no update and warn of no deprecated field.
//!
//! Needs `envoy` on PATH; the sidecar test also needs root, `ip`,
//! `iptables` and `python3` (the application): a missing one fails the test
//! and says what to install.

#[path = "support/envoy.rs"]
mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use support::{Envoy, Mesh, REQUEST_WAIT, WAIT, stat_u64, stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ROUTE: &str = include_str!("fixtures/authz/route.yaml");
const ALLOW: &str = include_str!("fixtures/authz/allow.yaml");
const DENY: &str = include_str!("fixtures/authz/deny.yaml");
const DEFAULT_DENY: &str = include_str!("fixtures/authz/default-deny.yaml");
const AUDIT: &str = include_str!("fixtures/authz/audit.yaml");
const JWT: &str = include_str!("fixtures/authz/jwt.yaml");
/// HS256 tokens of the key in `jwt.yaml` (no expiry): issuer
/// `https://issuer.mizzen.test`, audience `authz-test`; `user-1` in group
/// `dev`, `user-2` in `ops`; and one from an issuer no rule names.
const USER1: &str = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InRlc3QifQ.eyJpc3MiOiJodHRwczovL2lzc3Vlci5taXp6ZW4udGVzdCIsInN1YiI6InVzZXItMSIsImF1ZCI6ImF1dGh6LXRlc3QiLCJncm91cHMiOlsiZGV2Il19.wKrk2E7ulLNlpWtArg6QF6MiGKTKzlkoqyF8dU0QYO0";
const USER2: &str = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InRlc3QifQ.eyJpc3MiOiJodHRwczovL2lzc3Vlci5taXp6ZW4udGVzdCIsInN1YiI6InVzZXItMiIsImF1ZCI6ImF1dGh6LXRlc3QiLCJncm91cHMiOlsib3BzIl19.r-5uLW8F-dUFoQ7OEwUEFmx2UoWAq--CNpxZ-mvneYc";
const OTHER_ISSUER: &str = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InRlc3QifQ.eyJpc3MiOiJodHRwczovL290aGVyLm1penplbi50ZXN0Iiwic3ViIjoidXNlci0xIiwiYXVkIjoiYXV0aHotdGVzdCJ9.u6-HmD8xbbkDaLtmxPl0v4hqlXzvxq9iyAsuMop6qaI";
const DENIED: &str = "RBAC: access denied";

/// One request on a fresh connection: (status, body).
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let exchange = async {
        let err = |e: std::io::Error| e.to_string();
        let mut s = TcpStream::connect(addr).await.map_err(err)?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: authz.example.com\r\nConnection: close\r\ncontent-length: 0\r\n"
        );
        for (k, v) in headers {
            req += &format!("{k}: {v}\r\n");
        }
        req += "\r\n";
        s.write_all(req.as_bytes()).await.map_err(err)?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(err)?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let status = text
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(REQUEST_WAIT, exchange)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {REQUEST_WAIT:?}"))?
}

/// Retries until `method path` answers `want` (config takes a moment to
/// reach Envoy), bounded by [`WAIT`].
async fn eventually(addr: SocketAddr, method: &str, path: &str, want: u16) {
    eventually_with(addr, method, path, &[], want).await;
}

/// [`eventually`] with request headers.
async fn eventually_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    want: u16,
) {
    let deadline = Instant::now() + WAIT;
    let mut last = Err("no attempt".to_string());
    while Instant::now() < deadline {
        last = request(addr, method, path, headers).await;
        if matches!(&last, Ok((s, _)) if *s == want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{method} {path} never answered {want} within {WAIT:?}; last: {last:?}");
}

/// One expectation: method, path, headers, status.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16);

/// Asserts each (method, path, headers) answers its status; denials must be
/// Envoy's RBAC reply.
async fn expect(addr: SocketAddr, cases: &[Case<'_>]) {
    for (method, path, headers, want) in cases {
        let (status, body) = request(addr, method, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} {headers:?}: {e}"));
        assert_eq!(
            status, *want,
            "{method} {path} {headers:?} answered {status}: {body}"
        );
        if status == 403 {
            assert_eq!(body, DENIED, "{method} {path}: a 403 not from RBAC");
        }
    }
}

fn assert_no_deprecated(log: &str) {
    let deprecated: Vec<&str> = log.lines().filter(|l| l.contains("deprecated")).collect();
    assert!(
        deprecated.is_empty(),
        "the data plane warned of deprecated fields:\n{}",
        deprecated.join("\n")
    );
}

/// Where the steps run: the authorized listener, how to write a policy file,
/// and the values the policy templates need.
struct Target<'a> {
    addr: SocketAddr,
    pilot_http: SocketAddr,
    write: &'a dyn Fn(&str, &str),
    namespace: &'a str,
    selector: &'a str,
    client_block: &'a str,
}

impl Target<'_> {
    fn render(&self, template: &str) -> String {
        let out = template
            .replace("{{NAMESPACE}}", self.namespace)
            .replace("{{SELECTOR}}", self.selector)
            .replace("{{CLIENT_BLOCK}}", self.client_block)
            .replace("{{PORT}}", &self.addr.port().to_string());
        assert!(!out.contains("{{"), "unfilled placeholder:\n{out}");
        out
    }
}

const NONE: &[(&str, &str)] = &[];

async fn exercise(t: &Target<'_>) {
    let addr = t.addr;
    // No policy: everything passes.
    eventually(addr, "GET", "/bar", 200).await;
    expect(
        addr,
        &[("POST", "/foo", NONE, 200), ("GET", "/admin/x", NONE, 200)],
    )
    .await;

    // ALLOW: only what a rule matches (the AUDIT policy beside it, with every
    // field pilot translates, changes no verdict).
    (t.write)("audit.yaml", &t.render(AUDIT));
    (t.write)("allow.yaml", &t.render(ALLOW));
    eventually(addr, "GET", "/bar", 403).await;
    expect(
        addr,
        &[
            ("GET", "/foo", NONE, 200),
            ("POST", "/foo", NONE, 403),
            ("GET", "/foo/sub", NONE, 403),
            ("GET", "/ip/anything", NONE, 200),
            ("POST", "/ip/anything", NONE, 200),
            ("GET", "/never", NONE, 403),
        ],
    )
    .await;

    // DENY beats ALLOW; CUSTOM without provider denies what it matches.
    (t.write)("deny.yaml", &t.render(DENY));
    // Wait on a request the DENY policies change (ALLOW already refuses
    // /admin/x: waiting on it raced a fast data plane past the update).
    eventually_with(addr, "GET", "/foo", &[("x-block", "yes")], 403).await;
    expect(
        addr,
        &[
            ("GET", "/foo", &[("x-block", "yes")], 403),
            ("GET", "/foo", &[("x-block", "no")], 200),
            ("GET", "/foo", NONE, 200),
            ("GET", "/ip/admin", NONE, 200),
            ("GET", "/ip/../admin", NONE, 403),
            ("GET", "/ext", NONE, 403),
        ],
    )
    .await;
    let (status, configz) = support::admin_get(t.pilot_http, "/debug/configz")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let configz: serde_json::Value = serde_json::from_str(&configz).unwrap();
    let custom = configz["authorization"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|n| n["resource"] == format!("AuthorizationPolicy ext-authz.{}", t.namespace))
        })
        .unwrap_or_else(|| panic!("CUSTOM policy not reported: {configz:#}"));
    assert_eq!(custom["applied"], false, "{custom}");

    // `spec: {}` beside the ALLOW policy: nothing is allowed any more.
    (t.write)("allow.yaml", &t.render(DEFAULT_DENY));
    eventually(addr, "GET", "/foo", 403).await;
    expect(
        addr,
        &[
            ("GET", "/ip/anything", NONE, 403),
            ("POST", "/bar", NONE, 403),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_enforces_authorization_policies() {
    let mesh = Mesh::start(ROUTE).await;
    let write = |name: &str, text: &str| mesh.write(name, text);
    exercise(&Target {
        addr: mesh.gateway,
        pilot_http: mesh.pilot_http,
        write: &write,
        namespace: "istio-system",
        selector: "istio: ingressgateway",
        client_block: "127.0.0.1/32",
    })
    .await;
    mesh.assert_no_rejects().await;
    assert_no_deprecated(&mesh.envoy_log());
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_validates_jwts_for_request_principals() {
    let mesh = Mesh::start(ROUTE).await;
    let addr = mesh.gateway;
    eventually(addr, "GET", "/user1", 200).await;
    mesh.write("jwt.yaml", JWT);
    eventually(addr, "GET", "/user1", 403).await;
    let auth = |token| [("authorization", token)];
    let (user1, user2, other) = (auth(USER1), auth(USER2), auth(OTHER_ISSUER));
    let garbage = auth("Bearer not.a.token");
    expect(
        addr,
        &[
            ("GET", "/public", NONE, 200),
            ("GET", "/public", &user1, 200),
            ("GET", "/user1", &user1, 200),
            ("GET", "/user1", &user2, 403),
            ("GET", "/dev", &user1, 200),
            ("GET", "/dev", &user2, 403),
            ("GET", "/dev", NONE, 403),
            // A token that fails validation is refused before authorization.
            ("GET", "/public", &garbage, 401),
            ("GET", "/public", &other, 401),
        ],
    )
    .await;
    let (_, configz) = support::admin_get(mesh.pilot_http, "/debug/configz")
        .await
        .unwrap();
    assert!(
        configz.contains("RequestAuthentication jwt.istio-system")
            && configz.contains("is not fetched"),
        "the unfetched JWKS is not reported: {configz}"
    );
    mesh.assert_no_rejects().await;
    assert_no_deprecated(&mesh.envoy_log());
    mesh.stop().await;
}

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

/// Root, iproute2, iptables and python3, or a panic naming what is missing.
fn require_tools() {
    support::data_plane();
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
        "the sidecar authz test creates a network namespace and iptables rules: run it as root (CI does)"
    );
    for (tool, args, hint) in [
        ("ip", &["-V"][..], "apt-get install iproute2"),
        ("iptables", &["--version"][..], "apt-get install iptables"),
        ("python3", &["--version"][..], "apt-get install python3"),
    ] {
        if let Err(e) = run(tool, args) {
            panic!("the sidecar authz test needs `{tool}` ({e}): {hint}");
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace joined to the host by a veth pair (host `.1`,
/// namespace `.2`), with Istio's inbound capture of `port`; deleted on drop.
struct Netns {
    name: String,
    prefix: String,
}

impl Netns {
    fn create(port: u16) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let id = std::process::id() % 10_000;
        let name = format!("mza-{id}-{n}");
        let prefix = format!("10.252.{}", (std::process::id() + n) % 250 + 1);
        let (host, peer) = (format!("mza{id}h{n}"), format!("mza{id}n{n}"));
        let _ = run("ip", &["netns", "del", &name]);
        let _ = run("ip", &["link", "del", &host]);
        must("ip", &["netns", "add", &name]);
        let ns = Netns { name, prefix };
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.name.as_str()];
            all.extend_from_slice(args);
            must("ip", &all);
        };
        exec(&["ip", "link", "set", "lo", "up"]);
        must(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &peer],
        );
        must("ip", &["link", "set", &peer, "netns", &ns.name]);
        must(
            "ip",
            &["addr", "add", &format!("{}/24", ns.ip(1)), "dev", &host],
        );
        must("ip", &["link", "set", &host, "up"]);
        exec(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", ns.ip(2)),
            "dev",
            &peer,
        ]);
        exec(&["ip", "link", "set", &peer, "up"]);
        // istio-iptables' inbound capture, limited to the application port.
        let port = port.to_string();
        exec(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "--dport",
            &port,
            "-j",
            "REDIRECT",
            "--to-ports",
            "15006",
        ]);
        ns
    }

    fn ip(&self, last: u8) -> String {
        format!("{}.{last}", self.prefix)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// The application: answers 200 `app` to every method and path, on the
/// namespace's loopback; killed on drop.
struct App_ {
    child: Child,
}

const APP: &str = r#"
import http.server, sys

class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        n = int(self.headers.get('content-length') or 0)
        self.rfile.read(n)
        self.send_response(200)
        self.send_header('content-length', '3')
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(b'app')
    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = answer
    def log_message(self, *a):
        pass

http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()
"#;

impl App_ {
    fn start(netns: &str, port: u16) -> App_ {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                netns,
                "python3",
                "-c",
                APP,
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the application");
        App_ { child }
    }
}

impl Drop for App_ {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SIDECAR_MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  clusterIP: 10.96.0.20
  selector: {app: ratings}
  ports:
  - {name: http, port: 9080}
---
apiVersion: v1
kind: Endpoints
metadata: {name: ratings, namespace: default}
subsets:
- addresses:
  - ip: {{POD_IP}}
    targetRef: {kind: Pod, name: ratings-v1, namespace: default}
  ports:
  - {name: http, port: 9080}
---
apiVersion: v1
kind: Pod
metadata:
  name: ratings-v1
  namespace: default
  labels: {app: ratings, version: v1}
status:
  podIP: {{POD_IP}}
---
# No SDS server here for the workload certificate: plain text inbound.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: DISABLE}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_inbound_enforces_authorization_policies() {
    require_tools();
    let ns = Netns::create(9080);
    let pod_ip = ns.ip(2);
    let _app = App_::start(&ns.name, 9080);

    let config_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        config_dir.path().join("mesh.yaml"),
        SIDECAR_MESH.replace("{{POD_IP}}", &pod_ip),
    )
    .unwrap();
    let (addrs, pilot) = support::serve_config(config_dir.path(), &ns.ip(1)).await;

    let id = format!("sidecar~{pod_ip}~ratings-v1.default~default.svc.cluster.local");
    let metadata = format!(
        "    NAMESPACE: default\n    LABELS:\n      app: ratings\n      version: v1\n    INSTANCE_IPS: {pod_ip}\n    WORKLOAD_NAME: ratings-v1\n"
    );
    let node = support::BootstrapNode {
        id: &id,
        cluster: "ratings.default",
        metadata: &metadata,
    };
    let bootstrap = support::istio_bootstrap(&node, addrs.xds, false, &pod_ip, 15000);
    let envoy_dir = tempfile::tempdir().unwrap();
    let mut envoy = Envoy::spawn(envoy_dir.path(), &bootstrap, Some(&ns.name));
    let admin = envoy.admin().await;
    let deadline = Instant::now() + WAIT;
    while stat_u64(&stats(admin).await, "listener_manager.lds.update_success") < 1 {
        assert!(
            Instant::now() < deadline,
            "the sidecar did not get its listeners within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let dir = config_dir.path().to_path_buf();
    let write = move |name: &str, text: &str| {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    };
    let client_block = format!("{}/32", ns.ip(1));
    exercise(&Target {
        addr: format!("{pod_ip}:9080").parse().unwrap(),
        pilot_http: addrs.http,
        write: &write,
        namespace: "default",
        selector: "app: ratings",
        client_block: &client_block,
    })
    .await;
    // The inbound HTTP chain counted the denials.
    let s = stats(admin).await;
    let denied: u64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("http.inbound_0.0.0.0_9080.rbac.denied"))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    assert!(denied > 0, "no RBAC denial counted on the inbound chain");
    support::assert_no_rejects(admin).await;
    assert_no_deprecated(&envoy.log());
    drop(envoy);
    pilot.abort();
}
