//! `mizzen run` from the command line, as a user types it: the built `mizzen`
//! binary starts a ratings pod in the test's mesh, the pod joins (pilot's
//! registry gains its endpoint, it answers through its sidecar), and on
//! Ctrl-C (SIGINT) it leaves: endpoint, Pod file, namespace and lease gone.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use e2e::{LocalMesh, Mizzen, bin_dir, get};
use mizzen::demo::scenarios;

#[test]
fn mizzen_run_starts_a_pod_that_joins_the_mesh_and_leaves_on_ctrl_c() {
    let gateway = Ipv4Addr::new(10, 221, 0, 1);
    let config = vec![("platform.yaml", scenarios::BOOKINFO_PLATFORM.to_string())];
    let mesh = LocalMesh::start("mze-run", gateway, &config);
    let bins = bin_dir();
    let mut args: Vec<String> = [
        "run",
        "ratings-v1",
        "-n",
        "default",
        "-s",
        "bookinfo-ratings",
        "-l",
        "app=ratings",
        "-l",
        "version=v1",
        "-p",
        "9080",
        "--bridge",
        "mze-run",
        "--subnet",
        "10.221.0.1/16",
    ]
    .map(str::to_string)
    .into();
    args.extend(["--state-dir".into(), mesh.state_dir().display().to_string()]);
    args.extend(["--bin-dir".into(), bins.display().to_string()]);
    args.push("--".into());
    args.push(bins.join("bookinfo").display().to_string());
    args.extend(["ratings", "--listen", "0.0.0.0:9080"].map(str::to_string));
    let mut run = Mizzen::start(None, &args);
    let ready = run.wait_for("is ready at");
    let ip = e2e::ready_addr(&ready);
    assert!(ip.octets()[..2] == [10, 221], "{ready}");

    mesh.wait_for_endpoints("ratings.default.svc.cluster.local", 1);
    let answer = get(SocketAddr::from((ip, 9080)), "/ratings/0", &[]);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["servedBy"], "ratings-v1");
    let netns = "mze-run-default-ratings-v1";
    assert!(std::path::Path::new("/run/netns").join(netns).exists());
    let pod_file = mesh.state_dir().join("pods/default.ratings-v1.yaml");
    assert!(pod_file.is_file());

    let stopped = run.interrupt();
    while let Ok(line) = run.lines.recv_timeout(Duration::from_millis(500)) {
        run.seen.push(line);
    }
    let seen = &run.seen;
    assert!(
        stopped,
        "mizzen run exits 0 on SIGINT:\n{}",
        seen.join("\n")
    );
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
