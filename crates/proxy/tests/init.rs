//! `proxy init` for real. Each test makes a "pod" network namespace joined by a
//! veth pair to a "peer" namespace (pod 10.200.0.2, peer 10.200.0.1, the pod's
//! default route via the peer), runs the built `proxy init` inside the pod
//! namespace, and checks what `iptables-save` shows and where real connections
//! land. Code that must run inside a namespace (listeners that call
//! [`proxy::net::original_dst`], clients) is this test binary re-executed there
//! with `ip netns exec` in a role named by an environment variable; see
//! [`inside_namespace`].
//!
//! Needs root, `ip` (iproute2), iptables and `setpriv` (util-linux); a missing
//! one fails the test with what to install. Namespaces are deleted on drop, even
//! when a test fails; every wait is bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The environment variable naming the role of a re-executed test binary.
const ROLE: &str = "MIZZEN_INIT_TEST_ROLE";
/// Ports a `listen` role binds (comma-separated).
const PORTS: &str = "MIZZEN_INIT_TEST_PORTS";
/// Address a `connect` role connects to.
const TARGET: &str = "MIZZEN_INIT_TEST_TARGET";
/// Tag a `connect` role sends, so the listener's report names the client.
const TAG: &str = "MIZZEN_INIT_TEST_TAG";
/// Prefix of the lines a role prints for the test that started it.
const REPORT: &str = "MIZZEN ";

const POD_IP: &str = "10.200.0.2";
const PEER_IP: &str = "10.200.0.1";
/// Routed out of the pod (via the peer), never answered: only capture reaches it.
const OUTSIDE: &str = "198.51.100.7:80";

/// How long any one command or wait may take.
const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The tests.

#[test]
fn install_creates_the_istio_chains_and_rules() {
    let ns = Namespaces::create();
    let out = ns.init(&[]);
    assert!(
        out.contains("IPv4: installed 4 ISTIO_ chains and 18 rules"),
        "{out}"
    );

    let v4 = ns.save("iptables-save");
    for expected in [
        ":ISTIO_INBOUND - ",
        ":ISTIO_OUTPUT - ",
        ":ISTIO_REDIRECT - ",
        ":ISTIO_IN_REDIRECT - ",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -j ISTIO_OUTPUT",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    ] {
        assert!(v4.contains(expected), "missing `{expected}` in:\n{v4}");
    }
    assert_eq!(rule_count(&v4), 18, "{v4}");

    if out.contains("IPv6: installed") {
        let v6 = ns.save("ip6tables-save");
        assert!(
            v6.contains("-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN"),
            "{v6}"
        );
        assert!(v6.contains("-A ISTIO_OUTPUT -d ::1/128 -j RETURN"), "{v6}");
        assert_eq!(rule_count(&v6), 18, "{v6}");
    } else {
        eprintln!("note: IPv6 rules were not installed here: {out}");
    }
}

#[test]
fn outbound_connections_reach_15001_with_their_original_destination() {
    let ns = Namespaces::create();
    ns.init(&[]);
    let outbound = ns.listen(Side::Pod, &[15001]);
    ns.connect(Side::Pod, &[], OUTSIDE, "app");
    let accepted = outbound.next_accept();
    assert_eq!(accepted.port, 15001, "{accepted:?}");
    assert_eq!(accepted.orig, OUTSIDE, "{accepted:?}");
    assert_eq!(accepted.tag, "app", "{accepted:?}");
}

#[test]
fn inbound_connections_reach_15006_unless_their_port_is_excluded() {
    let ns = Namespaces::create();
    ns.init(&[]);
    // 8080 is the application's port: it must not see the connection directly.
    let pod = ns.listen(Side::Pod, &[15006, 15021, 8080]);

    ns.connect(Side::Peer, &[], &format!("{POD_IP}:8080"), "to-app");
    let accepted = pod.next_accept();
    assert_eq!(accepted.port, 15006, "{accepted:?}");
    assert_eq!(accepted.orig, format!("{POD_IP}:8080"), "{accepted:?}");
    assert_eq!(accepted.tag, "to-app");

    // 15021 is excluded by default: it arrives as sent, not redirected (conntrack
    // tracked it, so its original destination is where it arrived).
    ns.connect(Side::Peer, &[], &format!("{POD_IP}:15021"), "health");
    let accepted = pod.next_accept();
    assert_eq!(accepted.port, 15021, "{accepted:?}");
    assert_eq!(accepted.orig, format!("{POD_IP}:15021"), "{accepted:?}");
    assert_eq!(accepted.tag, "health");
}

#[test]
fn the_proxy_users_traffic_is_not_captured() {
    let ns = Namespaces::create();
    ns.init(&[]);
    let outbound = ns.listen(Side::Pod, &[15001]);
    let remote = ns.listen(Side::Peer, &[80]);
    let target = format!("{PEER_IP}:80");

    // As the proxy (uid 1337), and as another user in the proxy's group: direct.
    let as_proxy = ["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups"];
    ns.connect(Side::Pod, &as_proxy, &target, "uid-1337");
    let accepted = remote.next_accept();
    assert_eq!((accepted.port, accepted.tag.as_str()), (80, "uid-1337"));
    let in_proxy_group = ["setpriv", "--reuid=4242", "--regid=1337", "--clear-groups"];
    ns.connect(Side::Pod, &in_proxy_group, &target, "gid-1337");
    let accepted = remote.next_accept();
    assert_eq!((accepted.port, accepted.tag.as_str()), (80, "gid-1337"));

    // Anyone else (root here, and an ordinary user): captured.
    ns.connect(Side::Pod, &[], &target, "root");
    let as_app = ["setpriv", "--reuid=4242", "--regid=4242", "--clear-groups"];
    ns.connect(Side::Pod, &as_app, &target, "uid-4242");
    for tag in ["root", "uid-4242"] {
        let accepted = outbound.next_accept();
        assert_eq!(accepted.port, 15001, "{accepted:?}");
        assert_eq!(accepted.orig, target, "{accepted:?}");
        assert_eq!(accepted.tag, tag, "{accepted:?}");
    }
}

#[test]
fn reinstalling_replaces_and_removing_is_complete_and_idempotent() {
    let ns = Namespaces::create();
    // Someone else's rule in OUTPUT survives everything below.
    ns.pod_must(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-d",
        "192.0.2.1/32",
        "-j",
        "RETURN",
    ]);
    ns.init(&[]);
    let first = ns.save("iptables-save");
    let out = ns.init(&[]);
    assert!(out.contains("replacing the earlier ones"), "{out}");
    let second = ns.save("iptables-save");
    assert_eq!(
        rules(&first),
        rules(&second),
        "a second install changed the rules"
    );
    assert_eq!(second.matches("-j ISTIO_OUTPUT").count(), 1, "{second}");

    // Different flags replace the rules rather than adding to them.
    ns.init(&["--envoy-port", "16001", "--inbound-ports", "8080"]);
    let changed = ns.save("iptables-save");
    assert!(changed.contains("--to-ports 16001"), "{changed}");
    assert!(!changed.contains("--to-ports 15001"), "{changed}");
    assert!(
        changed.contains("-A ISTIO_INBOUND -p tcp -m tcp --dport 8080 -j ISTIO_IN_REDIRECT"),
        "{changed}"
    );
    // The three inbound exclusions, the catch-all and its jump become the jump and
    // one port's rule.
    assert_eq!(rule_count(&changed), rule_count(&first) - 3, "{changed}");

    let out = ns.init(&["--remove"]);
    assert!(out.contains("IPv4: removed 4 ISTIO_ chains"), "{out}");
    for save in ["iptables-save", "ip6tables-save"] {
        let after = ns.save(save);
        assert!(!after.contains("ISTIO_"), "{save} after --remove:\n{after}");
    }
    let after = ns.save("iptables-save");
    assert!(
        after.contains("-A OUTPUT -d 192.0.2.1/32 -j RETURN"),
        "{after}"
    );

    let again = ns.init(&["--remove"]);
    assert!(again.contains("IPv4: no ISTIO_ rules to remove"), "{again}");
    // istio-iptables' spelling.
    ns.init(&["--clean"]);
}

#[test]
fn dry_run_prints_both_families_and_changes_nothing() {
    let ns = Namespaces::create();
    let out = ns.init(&["--dry-run", "--outbound-ip-ranges", "10.96.0.0/16"]);
    assert!(
        out.contains("# IPv4: input for `iptables-restore --noflush`"),
        "{out}"
    );
    assert!(
        out.contains("# IPv6: input for `ip6tables-restore --noflush`"),
        "{out}"
    );
    assert!(
        out.contains("-A ISTIO_OUTPUT -d 10.96.0.0/16 -j ISTIO_REDIRECT"),
        "{out}"
    );
    assert!(!ns.save("iptables-save").contains("ISTIO_"));
}

#[test]
fn unsupported_modes_and_bad_values_are_refused() {
    let out = run(Command::new(env!("CARGO_BIN_EXE_proxy")).args(["init", "-m", "TPROXY"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TPROXY is not supported"), "{stderr}");

    let out = run(Command::new(env!("CARGO_BIN_EXE_proxy")).args(["init", "-i", "10.0.0.1"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--outbound-ip-ranges"), "{stderr}");
}

/// The roles the tests above run inside a namespace (by re-executing this
/// binary with [`ROLE`] set); not a test on its own.
#[test]
#[ignore = "helper: the other tests run it inside a network namespace"]
fn inside_namespace() {
    match std::env::var(ROLE).as_deref() {
        Ok("listen") => listen_role(),
        Ok("connect") => connect_role(),
        other => panic!("run by the other tests with {ROLE}=listen|connect, not {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Roles, run inside a namespace.

/// Binds 0.0.0.0 on each of [`PORTS`], prints `MIZZEN ready`, then for each
/// connection reads the client's tag and prints `MIZZEN accepted PORT ORIG TAG`
/// (ORIG from `original_dst`, `none` when conntrack has no entry) and answers
/// `ok`.
/// Exits after [`WAIT`] × 4 at the latest (the test kills it sooner).
fn listen_role() {
    let ports: Vec<u16> = std::env::var(PORTS)
        .expect("ports")
        .split(',')
        .map(|p| p.parse().expect("port"))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        for port in ports {
            let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
                .await
                .unwrap_or_else(|e| panic!("bind 0.0.0.0:{port}: {e}"));
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.expect("accept");
                    tokio::spawn(report_accepted(stream, port));
                }
            });
        }
        println!("{REPORT}ready");
        let _ = std::io::stdout().flush();
        tokio::time::sleep(WAIT * 4).await;
    });
}

async fn report_accepted(mut stream: tokio::net::TcpStream, port: u16) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let orig = match proxy::net::original_dst(&stream) {
        Ok(addr) => addr.to_string(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => "none".to_owned(),
        Err(err) => format!("error:{}", err.to_string().replace(' ', "_")),
    };
    let mut tag = Vec::new();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
            tag.push(byte[0]);
        }
    });
    let _ = read.await;
    println!(
        "{REPORT}accepted {port} {orig} {}",
        String::from_utf8_lossy(&tag)
    );
    let _ = std::io::stdout().flush();
    let _ = stream.write_all(b"ok\n").await;
}

/// Connects to [`TARGET`], sends [`TAG`], and expects `ok` back.
fn connect_role() {
    let target: SocketAddr = std::env::var(TARGET)
        .expect("target")
        .parse()
        .expect("addr");
    let tag = std::env::var(TAG).expect("tag");
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {target}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(format!("{tag}\n").as_bytes())
        .expect("send tag");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert_eq!(reply, "ok\n", "reply from {target}");
}

// ---------------------------------------------------------------------------
// Namespaces and processes.

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Which namespace a process runs in.
#[derive(Debug, Clone, Copy)]
enum Side {
    /// The pod, where `proxy init` runs.
    Pod,
    /// Its peer on the other end of the veth pair.
    Peer,
}

/// The pod and peer namespaces; both deleted on drop.
struct Namespaces {
    pod: String,
    peer: String,
}

impl Namespaces {
    fn create() -> Namespaces {
        require_tools();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pod = format!("mizzen-init-{}-{n}", std::process::id());
        let ns = Namespaces {
            peer: format!("{pod}-peer"),
            pod,
        };
        for name in [&ns.pod, &ns.peer] {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
            must(&["ip", "netns", "add", name]);
        }
        let (pod, peer) = (ns.pod.as_str(), ns.peer.as_str());
        must(&["ip", "-n", pod, "link", "set", "lo", "up"]);
        must(&["ip", "-n", peer, "link", "set", "lo", "up"]);
        must(&[
            "ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", peer,
        ]);
        must(&[
            "ip",
            "-n",
            pod,
            "addr",
            "add",
            "10.200.0.2/24",
            "dev",
            "eth0",
        ]);
        must(&[
            "ip",
            "-n",
            peer,
            "addr",
            "add",
            "10.200.0.1/24",
            "dev",
            "eth0",
        ]);
        must(&["ip", "-n", pod, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", peer, "link", "set", "eth0", "up"]);
        must(&["ip", "-n", pod, "route", "add", "default", "via", PEER_IP]);
        ns
    }

    fn name(&self, side: Side) -> &str {
        match side {
            Side::Pod => &self.pod,
            Side::Peer => &self.peer,
        }
    }

    /// Runs `args` in the pod namespace; panics when it fails.
    fn pod_must(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.pod];
        full.extend_from_slice(args);
        must(&full)
    }

    /// `proxy init FLAGS` in the pod namespace; its stdout.
    fn init(&self, flags: &[&str]) -> String {
        let mut args = vec![env!("CARGO_BIN_EXE_proxy"), "init"];
        args.extend_from_slice(flags);
        self.pod_must(&args)
    }

    /// `iptables-save -t nat` (or `ip6tables-save`) in the pod namespace.
    fn save(&self, program: &str) -> String {
        self.pod_must(&[program, "-t", "nat"])
    }

    /// This binary in `role` in `side`'s namespace, behind `prefix` (e.g.
    /// `setpriv ...`).
    fn role(&self, side: Side, prefix: &[&str], role: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name(side)])
            .args(prefix)
            .arg(current_exe())
            .args([
                "inside_namespace",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role);
        cmd
    }

    /// Starts a listener on `ports` in `side`'s namespace, once it is ready.
    fn listen(&self, side: Side, ports: &[u16]) -> Listener {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut cmd = self.role(side, &[], "listen");
        cmd.env(PORTS, ports.join(","))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the listener");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, reports) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may have printed `test inside_namespace ... ` first.
                if let Some(at) = line.find(REPORT)
                    && tx.send(line[at + REPORT.len()..].to_owned()).is_err()
                {
                    break;
                }
            }
        });
        let listener = Listener { child, reports };
        let first = listener.next("ready");
        assert_eq!(first, "ready", "the listener's first report");
        listener
    }

    /// Connects from `side` (as `prefix` says) to `target`, sending `tag`;
    /// panics unless the connection is answered.
    fn connect(&self, side: Side, prefix: &[&str], target: &str, tag: &str) {
        let mut cmd = self.role(side, prefix, "connect");
        cmd.env(TARGET, target).env(TAG, tag);
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "the client `{tag}` to {target} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.pod, &self.peer] {
            let _ = run(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

/// A running `listen` role; killed on drop.
struct Listener {
    child: Child,
    reports: mpsc::Receiver<String>,
}

/// One `accepted` report.
#[derive(Debug)]
struct Accepted {
    port: u16,
    orig: String,
    tag: String,
}

impl Listener {
    fn next(&self, what: &str) -> String {
        self.reports
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("the listener reported no {what} within {WAIT:?}"))
    }

    fn next_accept(&self) -> Accepted {
        let report = self.next("connection");
        let words: Vec<&str> = report.split(' ').collect();
        match words[..] {
            ["accepted", port, orig, tag] => Accepted {
                port: port.parse().expect("port"),
                orig: orig.to_owned(),
                tag: tag.to_owned(),
            },
            _ => panic!("unexpected report `{report}`"),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn current_exe() -> PathBuf {
    std::env::current_exe().expect("the test binary's path")
}

/// The `-A` lines of `iptables-save` output (comments carry timestamps).
fn rules(save: &str) -> Vec<&str> {
    save.lines().filter(|l| l.starts_with("-A ")).collect()
}

fn rule_count(save: &str) -> usize {
    rules(save).len()
}

/// Root, iproute2, iptables and setpriv, or a panic naming what to install.
fn require_tools() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    assert_eq!(
        uid, "0",
        "proxy init's tests create network namespaces and iptables rules: run them as root \
         (CI does)"
    );
    for (tool, args, package) in [
        ("ip", &["netns", "list"][..], "iproute2"),
        ("iptables-save", &["--version"][..], "iptables"),
        ("iptables-restore", &["--version"][..], "iptables"),
        ("setpriv", &["--version"][..], "util-linux"),
    ] {
        let out = Command::new(tool).args(args).output();
        if !out.is_ok_and(|o| o.status.success()) {
            panic!(
                "proxy init's tests need `{tool}`: install the {package} package \
                 (apt-get install -y {package}; scripts/setup does)"
            );
        }
    }
}

/// Runs `args` (bounded by [`WAIT`]); its stdout, or a panic with its stderr.
fn must(args: &[&str]) -> String {
    let out = run(Command::new(args[0]).args(&args[1..]));
    assert!(
        out.status.success(),
        "`{}` failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` to the end, killing it after [`WAIT`].
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}
