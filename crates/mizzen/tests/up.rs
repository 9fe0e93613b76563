//! `mizzen up` for real: the built `mizzen` binary starts the built `galley`,
//! `citadel` and `pilot` binaries (beside it in the target directory, as
//! `cargo nextest run --workspace` builds them) on free loopback ports, serving
//! samples/bookinfo; the tests read its console, call the components, and
//! stop it with SIGINT as Ctrl-C does. The in-process mode is driven through
//! the library with the same flags.
//!
//! Every wait is bounded; a test that fails prints the console it read.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use rustix::process::{Pid, Signal};

const WAIT: Duration = Duration::from_secs(90);

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../samples/bookinfo")
}

/// Seven free loopback ports, as `mizzen up` flags.
fn port_flags() -> (Vec<String>, SocketAddr, SocketAddr) {
    let held: Vec<TcpListener> = (0..7)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let port = |i: usize| held[i].local_addr().expect("addr").port();
    let names = [
        "--pilot-xds-port",
        "--pilot-http-port",
        "--citadel-grpc-port",
        "--citadel-http-port",
        "--galley-grpc-port",
        "--galley-webhook-port",
        "--galley-http-port",
    ];
    let flags = names
        .iter()
        .enumerate()
        .flat_map(|(i, name)| [name.to_string(), port(i).to_string()])
        .collect();
    let pilot_xds = SocketAddr::from(([127, 0, 0, 1], port(0)));
    let pilot_http = SocketAddr::from(([127, 0, 0, 1], port(1)));
    (flags, pilot_xds, pilot_http)
}

/// The built binaries' directory: `mizzen`'s, where cargo puts every
/// workspace binary.
fn bin_dir() -> PathBuf {
    let mizzen = PathBuf::from(env!("CARGO_BIN_EXE_mizzen"));
    let dir = mizzen.parent().expect("a directory").to_path_buf();
    for name in ["galley", "citadel", "pilot"] {
        assert!(
            dir.join(name).is_file(),
            "{name} is not built in {}: run the workspace's tests (`cargo nextest run --workspace`) or `cargo build -p {name}` first",
            dir.display()
        );
    }
    dir
}

/// A running `mizzen up`, its console lines arriving on a channel.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(args: &[String]) -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mizzen"))
            .arg("up")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mizzen");
        let (tx, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Up {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `text`; the line.
    fn wait_for(&mut self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} within {WAIT:?}; console:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal mizzen");
    }

    /// Waits for the exit; (status code, every console line).
    fn finish(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("mizzen up did not exit; console:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        (status.code(), self.seen.join("\n"))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

/// `mizzen up` serving the sample with its state in `state`, the built
/// binaries, and `ports`.
fn process_args(state: &Path, ports: Vec<String>) -> Vec<String> {
    let mut args = vec![
        "--config".to_string(),
        sample().display().to_string(),
        "--state-dir".to_string(),
        state.display().to_string(),
        "--bin-dir".to_string(),
        bin_dir().display().to_string(),
    ];
    args.extend(ports);
    args
}

fn pid_of(started_line: &str) -> Pid {
    let pid: i32 = started_line
        .rsplit("pid ")
        .next()
        .and_then(|s| s.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {started_line:?}"));
    Pid::from_raw(pid).expect("a pid")
}

fn alive(pid: Pid) -> bool {
    // Signal 0 checks the process exists; a zombie still would, so read its state.
    std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn up_runs_the_three_binaries_relays_their_logs_and_stops_them_on_ctrl_c() {
    let state = tempfile::tempdir().expect("tempdir");
    let (ports, _, pilot_http) = port_flags();
    let mut up = Up::start(&process_args(state.path(), ports));
    let pids: Vec<Pid> = ["galley", "citadel", "pilot"]
        .iter()
        .map(|name| pid_of(&up.wait_for(&format!("started {name} ("))))
        .collect();
    up.wait_for("the control plane is ready (processes)");
    let table = up.wait_for(&format!("{pilot_http}"));
    assert!(table.starts_with("pilot"), "{table}");
    for prefix in ["galley  | ", "citadel | ", "pilot   | "] {
        assert!(
            up.seen.iter().any(|l| l.starts_with(prefix)),
            "no log line behind {prefix:?}:\n{}",
            up.seen.join("\n")
        );
    }
    // Pilot serves the sample: its services are in the registry.
    let (status, registry) = get(pilot_http, "/debug/registryz");
    assert_eq!(status, 200, "{registry}");
    assert!(
        registry.contains("productpage.default.svc.cluster.local"),
        "{registry}"
    );
    // Citadel made its root in the state directory.
    assert!(state.path().join("citadel/root-cert.pem").is_file());

    up.signal(Signal::INT);
    let (code, console) = up.finish();
    assert_eq!(code, Some(0), "{console}");
    for name in ["galley", "citadel", "pilot"] {
        assert!(
            console.contains(&format!("mizzen up: {name} stopped (exit status: 0)")),
            "{console}"
        );
    }
    for pid in pids {
        assert!(!alive(pid), "{pid:?} still runs\n{console}");
    }
    TcpListener::bind(pilot_http).expect("pilot's port is free again");
}

#[test]
fn a_busy_port_is_refused_before_anything_starts() {
    let state = tempfile::tempdir().expect("tempdir");
    let (mut ports, pilot_xds, _) = port_flags();
    let _taken = TcpListener::bind(pilot_xds).expect("take pilot's xDS port");
    ports.extend(["--bin-dir".to_string(), bin_dir().display().to_string()]);
    let out = Command::new(env!("CARGO_BIN_EXE_mizzen"))
        .args(["up", "--config"])
        .arg(sample())
        .arg("--state-dir")
        .arg(state.path())
        .args(&ports)
        .output()
        .expect("run mizzen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{pilot_xds} (pilot xDS (ADS, plaintext): sidecars and gateways) is already in use"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("move this port with --pilot-xds-port"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("started"),
        "nothing may start"
    );
}

#[test]
fn a_component_that_dies_stops_the_others_and_up_exits_1() {
    let state = tempfile::tempdir().expect("tempdir");
    let (ports, _, _) = port_flags();
    let mut up = Up::start(&process_args(state.path(), ports));
    let galley = pid_of(&up.wait_for("started galley ("));
    up.wait_for("the control plane is ready (processes)");
    rustix::process::kill_process(galley, Signal::KILL).expect("kill galley");
    let (code, console) = up.finish();
    assert_eq!(code, Some(1), "{console}");
    assert!(
        console.contains(
            "mizzen up: galley exited (signal: 9 (SIGKILL)); the other components were stopped"
        ),
        "{console}"
    );
    assert!(
        console.contains("mizzen up: pilot stopped (exit status: 0)"),
        "{console}"
    );
}

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    up: mizzen::up::UpArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_mode_serves_the_same_plan_and_stops_on_request() {
    let state = tempfile::tempdir().expect("tempdir");
    let (ports, _, pilot_http) = port_flags();
    let mut argv = vec![
        "up".to_string(),
        "--in-process".to_string(),
        "--config".to_string(),
        sample().display().to_string(),
        "--state-dir".to_string(),
        state.path().display().to_string(),
    ];
    argv.extend(ports);
    let args = Wrap::parse_from(argv).up;
    let plan = args.plan().expect("a plan");
    let console_buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let console = mizzen::up::Console::new(Shared(console_buf.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // On a runtime of its own, as the CLI runs it (citadel's ledger future is
    // not provably `Send` for `tokio::spawn`).
    let running = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        runtime.block_on(mizzen::up::up(&args, console, async move {
            let _ = stopped.await;
        }))
    });
    let text = || String::from_utf8_lossy(&console_buf.lock().expect("lock")).to_string();
    let deadline = Instant::now() + WAIT;
    while !text().contains("the control plane is ready (in-process)") {
        assert!(Instant::now() < deadline, "not ready:\n{}", text());
        assert!(!running.is_finished(), "up ended:\n{}", text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for component in mizzen::up::Component::ALL {
        let addr = plan.http_addr(component);
        let (status, body) = tokio::task::spawn_blocking(move || get(addr, "/ready"))
            .await
            .expect("get");
        assert_eq!(status, 200, "{component:?} {body}");
    }
    let (status, registry) =
        tokio::task::spawn_blocking(move || get(pilot_http, "/debug/registryz"))
            .await
            .expect("get");
    assert_eq!(status, 200);
    assert!(
        registry.contains("reviews.default.svc.cluster.local"),
        "{registry}"
    );

    stop.send(()).expect("up is running");
    let deadline = Instant::now() + WAIT;
    while !running.is_finished() {
        assert!(Instant::now() < deadline, "up did not stop:\n{}", text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let result = running.join().expect("up did not panic");
    assert!(result.is_ok(), "{result:?}\n{}", text());
    let console = text();
    for name in ["galley", "citadel", "pilot"] {
        assert!(
            console.contains(&format!("mizzen up: {name} stopped")),
            "{console}"
        );
    }
    TcpListener::bind(pilot_http).expect("pilot's port is free again");
}
