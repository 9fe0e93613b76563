//! `mizzen run` from the command line, as a user types it: the built `mizzen`
//! binary starts a ratings pod in the test's mesh, the pod joins (pilot's
//! registry gains its endpoint, it answers through its sidecar), and on
//! Ctrl-C (SIGINT) it leaves: endpoint, Pod file, namespace and lease gone.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use e2e::{LocalMesh, bin_dir, get};
use mizzen::demo::scenarios;

#[test]
fn mizzen_run_starts_a_pod_that_joins_the_mesh_and_leaves_on_ctrl_c() {
    let gateway = Ipv4Addr::new(10, 221, 0, 1);
    let config = vec![("platform.yaml", scenarios::BOOKINFO_PLATFORM.to_string())];
    let mesh = LocalMesh::start("mze-run", gateway, &config);
    let bins = bin_dir();
    let mut child = Command::new(bins.join("mizzen"))
        .args([
            "run",
            "ratings-v1",
            "-n",
            "default",
            "-s",
            "bookinfo-ratings",
        ])
        .args(["-l", "app=ratings", "-l", "version=v1", "-p", "9080"])
        .args(["--bridge", "mze-run", "--subnet", "10.221.0.1/16"])
        .arg("--state-dir")
        .arg(mesh.state_dir())
        .arg("--bin-dir")
        .arg(&bins)
        .arg("--")
        .arg(bins.join("bookinfo"))
        .args(["ratings", "--listen", "0.0.0.0:9080"])
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
                let _ = tx.send(line);
            }
        });
    }
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let ready = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("is ready at") => break line,
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("the pod did not become ready:\n{}", seen.join("\n"));
            }
        }
    };
    let ip: Ipv4Addr = ready
        .split("is ready at ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {ready:?}"));
    assert!(ip.octets()[..2] == [10, 221], "{ready}");

    mesh.wait_for_endpoints("ratings.default.svc.cluster.local", 1);
    let answer = get(SocketAddr::from((ip, 9080)), "/ratings/0", &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["servedBy"], "ratings-v1");
    let netns = "mze-run-default-ratings-v1";
    assert!(std::path::Path::new("/run/netns").join(netns).exists());
    let pod_file = mesh.state_dir().join("pods/default.ratings-v1.yaml");
    assert!(pod_file.is_file());

    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "mizzen run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(500)) {
        seen.push(line);
    }
    assert!(status.success(), "{status}:\n{}", seen.join("\n"));
    assert!(
        seen.iter().any(|l| l.contains("pod ratings-v1 stopped")),
        "{}",
        seen.join("\n")
    );
    mesh.wait_for_endpoints("ratings.default.svc.cluster.local", 0);
    assert!(!pod_file.exists(), "the Pod file is removed");
    assert!(!std::path::Path::new("/run/netns").join(netns).exists());
    assert!(
        std::fs::read_dir(mesh.mesh.network.lease_dir())
            .map(|d| d.count() == 0)
            .unwrap_or(true),
        "the address lease is released"
    );
}
