//! The mesh without traffic capture, from the command line as a user types
//! it: `mizzen up` on a loopback address, then `mizzen run --no-capture`
//! (what `mizzen run` falls back to without root) for reviews (a stock Envoy
//! beside `proxy agent`) and productpage (Mizzen's proxy). No network
//! namespace, no iptables: each pod gets a 127.56.0.x address where its
//! sidecar's listeners are bound (Istio's `captureMode: NONE`), the app listens
//! at `$POD_IP:$MIZZEN_APP_PORT_9080` and calls reviews through its sidecar at
//! `$MIZZEN_EGRESS_IP:9080` (bookinfo's `--connect-to`). A request to
//! productpage's pod crosses both sidecars over mTLS: reviews sees
//! productpage's SPIFFE identity.
//!
//! Run by `.ci/run` as root (for `--sidecar envoy`, which pip installs where only
//! root may run it); nothing in the path needs root. The second test runs it all
//! as `nobody` (uid 65534, through `setpriv`), where `mizzen run` falls back to
//! this mode by itself and says so.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::{Mizzen, bin_dir, envoy_bin, get};
use mizzen::demo::scenarios;

/// `nobody`.
const NOBODY: u32 = 65534;

/// The mesh of `mizzen up` on `control_plane` and two pods of `mizzen run`
/// without capture on `subnet` (reviews on `reviews_sidecar`, productpage on
/// Mizzen's proxy), everything run as `user` (none: root, with
/// `--no-capture`): productpage reaches reviews over mTLS.
fn mesh_without_capture(
    user: Option<u32>,
    control_plane: Ipv4Addr,
    subnet: &str,
    reviews_sidecar: &str,
) {
    e2e::require_root_and_tools();
    let bins = bin_dir();
    let config = tempfile::tempdir().expect("a config directory");
    std::fs::write(
        config.path().join("platform.yaml"),
        scenarios::BOOKINFO_PLATFORM,
    )
    .expect("write the config");
    let state = tempfile::tempdir().expect("a state directory");
    if let Some(uid) = user {
        for dir in [config.path(), state.path()] {
            std::os::unix::fs::chown(dir, Some(uid), Some(uid)).expect("chown");
        }
        std::os::unix::fs::chown(config.path().join("platform.yaml"), Some(uid), Some(uid))
            .expect("chown");
    }
    let path = |p: &Path| p.display().to_string();
    let mut up = Mizzen::start(
        user,
        &[
            "up",
            "--in-process",
            "--bind",
            &control_plane.to_string(),
            "--config",
            &path(config.path()),
            "--state-dir",
            &path(state.path()),
        ]
        .map(str::to_string),
    );
    for port in [15014, 15024] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(SocketAddr::from((control_plane, port)), "/ready", &[]).status != 200 {
            assert!(
                Instant::now() < deadline,
                "the control plane is not ready:\n{}",
                up.seen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let bookinfo = path(&bins.join("bookinfo"));
    let run = |name: &str, app: &str, sa: &str, sidecar: &str| -> Vec<String> {
        let mut args: Vec<String> = ["run", name, "-s", sa, "-l"].map(str::to_string).into();
        args.push(format!("app={app}"));
        args.extend(
            [
                "-l",
                "version=v1",
                "-p",
                "9080",
                "--sidecar",
                sidecar,
                "--loopback-subnet",
                subnet,
                "--control-plane",
            ]
            .map(str::to_string),
        );
        args.push(control_plane.to_string());
        if user.is_none() {
            args.push("--no-capture".into());
        }
        args.extend(["--state-dir".to_string(), path(state.path())]);
        args.extend(["--bin-dir".to_string(), path(&bins)]);
        args.extend(["--envoy".to_string(), path(&envoy_bin())]);
        args.push("--".into());
        args.extend(["bash", "-c"].map(str::to_string));
        args.push(format!(
            "exec {bookinfo} {app} --service-version v1 --listen $POD_IP:$MIZZEN_APP_PORT_9080 --connect-to $MIZZEN_EGRESS_IP"
        ));
        args
    };
    let mut reviews = Mizzen::start(
        user,
        &run("reviews-v1", "reviews", "bookinfo-reviews", reviews_sidecar),
    );
    reviews.wait_for(&format!(
        "{}: the pod gets an address of {subnet}",
        if user.is_some() {
            "not root, so no network namespace or capture"
        } else {
            "--no-capture"
        }
    ));
    reviews.wait_for("is ready at");
    let mut productpage = Mizzen::start(
        user,
        &run(
            "productpage-v1",
            "productpage",
            "bookinfo-productpage",
            "proxy",
        ),
    );
    let pod = e2e::ready_addr(&productpage.wait_for("is ready at"));
    let first: Ipv4Addr = subnet
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .expect("the subnet's first address");
    assert_eq!(
        pod.octets()[..2],
        first.octets()[..2],
        "an address of {subnet}: {pod}"
    );
    for name in ["reviews-v1", "productpage-v1"] {
        let netns = Path::new("/run/netns").join(format!("lo-default-{name}"));
        assert!(!netns.exists(), "no network namespace for {name}");
        let sidecar = state
            .path()
            .join(format!("pods/default.{name}.sidecar.yaml"));
        assert!(sidecar.is_file(), "{name}'s Sidecar resource");
    }

    // Through productpage's inbound listener to the app, out through its
    // egress listener to reviews' sidecar, over mTLS.
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let a = get(
            SocketAddr::from((pod, 9080)),
            "/api/v1/products/0/reviews",
            &[],
        );
        if a.status == 200 && a.json()["servedBy"] == "reviews-v1" {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "productpage never reached reviews: {a:?}\n{}\n{}",
            productpage.seen.join("\n"),
            reviews.seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let xfcc = answer.json()["forwardedClientCert"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/bookinfo-productpage"),
        "reviews' sidecar saw productpage's identity: {answer:?}"
    );
    assert!(
        xfcc.contains("By=spiffe://cluster.local/ns/default/sa/bookinfo-reviews"),
        "{answer:?}"
    );

    for (name, pod) in [
        ("productpage-v1", &mut productpage),
        ("reviews-v1", &mut reviews),
    ] {
        assert!(pod.interrupt(), "mizzen run {name} exits 0");
        let sidecar = state
            .path()
            .join(format!("pods/default.{name}.sidecar.yaml"));
        assert!(!sidecar.exists(), "{name}'s Sidecar is removed with it");
    }
    assert!(up.interrupt(), "mizzen up exits 0");
}

#[test]
fn pods_without_capture_join_the_mesh_over_mtls_on_loopback() {
    mesh_without_capture(None, Ipv4Addr::new(127, 0, 56, 1), "127.56.0.1/16", "envoy");
}

#[test]
fn without_root_mizzen_run_falls_back_to_pods_without_capture() {
    mesh_without_capture(
        Some(NOBODY),
        Ipv4Addr::new(127, 0, 58, 1),
        "127.58.0.1/16",
        "proxy",
    );
}

/// `mizzen demo --once` as `nobody`: without root it says so and falls back to
/// pods without capture, and every scenario still matches (exit 0).
#[test]
fn without_root_the_demo_walks_every_scenario_on_loopback() {
    e2e::require_root_and_tools();
    let state = tempfile::tempdir().expect("a state directory");
    std::os::unix::fs::chown(state.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
    let mut demo = Mizzen::start(
        Some(NOBODY),
        &[
            "demo".to_string(),
            "--once".into(),
            "--sidecar".into(),
            "proxy".into(),
            "--loopback-subnet".into(),
            "127.60.0.1/16".into(),
            "--state-dir".into(),
            state.path().display().to_string(),
            "--bin-dir".into(),
            bin_dir().display().to_string(),
        ],
    );
    demo.wait_for("not root, so no network namespaces or capture");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        while let Ok(line) = demo.lines.try_recv() {
            demo.seen.push(line);
        }
        if let Some(status) = demo.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not finish within 300s:\n{}",
            demo.seen.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    while let Ok(line) = demo.lines.recv_timeout(Duration::from_millis(500)) {
        demo.seen.push(line);
    }
    let out = demo.seen.join("\n");
    assert!(status.success(), "{status}:\n{out}");
    assert!(
        out.contains("every scenario behaved as Istio's semantics say"),
        "{out}"
    );
    let n = scenarios::all().len();
    assert_eq!(
        out.matches(&format!("scenario {n}/{n}")).count(),
        1,
        "every scenario ran: {out}"
    );
    assert!(!out.contains("MISMATCH"), "{out}");
}
