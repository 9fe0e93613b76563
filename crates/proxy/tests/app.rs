//! The proxy as a service against the real pilot, in-process (bookinfo with its
//! pods): the bootstrap's ADS cluster points at pilot, the admin interface
//! reports `PRE_INITIALIZING` until the first full config and `LIVE` after,
//! `/config_dump` holds what pilot generates for the node, `/stats` shows the
//! connection and the ACKs, and `/quitquitquit` ends `run_until`. The real
//! binary is run once the same way.

#[allow(dead_code)]
#[path = "support/pilot.rs"]
mod pilot_support;

// Wrapped so that `cargo test -p proxy app` selects these tests by path.
mod app {
    use super::pilot_support::*;

    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    use proxy::app::{App, Error};
    use proxy::config::Config;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::oneshot;

    /// One HTTP/1.1 request; the status and the body.
    async fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("admin accepts connections");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("admin answers within 20 s")
            .expect("read");
        let text = String::from_utf8(response).expect("UTF-8 answer");
        let (head, body) = text.split_once("\r\n\r\n").expect("a header block");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        (status, body.to_owned())
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port()
    }

    /// The bootstrap istio-agent would write for productpage, ADS at
    /// `127.0.0.1:ads_port`, admin at `127.0.0.1:admin_port`.
    fn write_bootstrap(dir: &Path, ads_port: u16, admin_port: u16) -> std::path::PathBuf {
        let yaml = format!(
            r#"
node:
  id: "{NODE_ID}"
  cluster: productpage.default
  metadata:
    NAMESPACE: default
    INSTANCE_IPS: 10.1.0.10
    SERVICE_ACCOUNT: bookinfo-productpage
    WORKLOAD_NAME: productpage-v1
    CLUSTER_ID: Kubernetes
    LABELS: {{ app: productpage, version: v1 }}
admin:
  address:
    socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    grpc_services:
      - envoy_grpc: {{ cluster_name: xds-grpc }}
  lds_config: {{ ads: {{}}, resource_api_version: V3 }}
  cds_config: {{ ads: {{}}, resource_api_version: V3 }}
static_resources:
  clusters:
    - name: xds-grpc
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: xds-grpc
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{ address: 127.0.0.1, port_value: {ads_port} }}
"#
        );
        let path = dir.join("bootstrap.yaml");
        std::fs::write(&path, yaml).expect("write bootstrap");
        path
    }

    fn config(path: &Path) -> Config {
        let mut config = Config::for_path(path);
        config.concurrency = 1;
        config
    }

    fn stat(stats: &str, name: &str) -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no stat {name} in:\n{stats}"))
    }

    fn names<'a>(
        items: &'a serde_json::Value,
        pick: impl Fn(&'a serde_json::Value) -> &'a serde_json::Value,
    ) -> BTreeSet<String> {
        items
            .as_array()
            .expect("a list")
            .iter()
            .map(|i| pick(i).as_str().expect("a name").to_owned())
            .collect()
    }

    async fn get_ok(addr: SocketAddr, path: &str) -> String {
        let (status, body) = http(addr, "GET", path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn wait_ready(addr: SocketAddr) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr))
                    .await
            {
                let _ = s.shutdown().await;
                if http(addr, "GET", "/ready").await == (200, "LIVE\n".to_owned()) {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready did not turn LIVE within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn app_syncs_from_pilot_and_serves_envoys_admin() {
        let pilot_dir = bookinfo_dir();
        let dir = tempfile::tempdir().expect("tempdir");
        let pilot_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let path = write_bootstrap(dir.path(), pilot_addr.port(), 0);
        let app = App::build(config(&path)).await.expect("proxy builds");
        let admin = app.addrs().admin.expect("admin is bound");
        assert_ne!(admin.port(), 0);
        assert_eq!(
            app.xds_config().map(|x| (x.endpoint.clone(), x.delta)),
            Some((format!("http://{pilot_addr}"), true))
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));

        // Pilot is not up yet: not ready, not connected.
        assert_eq!(
            http(admin, "GET", "/ready").await,
            (503, "PRE_INITIALIZING\n".to_owned())
        );
        let stats = get_ok(admin, "/stats").await;
        assert_eq!(stat(&stats, "control_plane.connected_state"), 0);
        assert_eq!(stat(&stats, "server.state"), 2);

        let pilot = Pilot::start(pilot_dir.path(), Some(pilot_addr)).await;
        wait_ready(admin).await;
        eventually("pilot to see every type ACKed", || pilot.all_acked()).await;

        // /config_dump holds what pilot generates for this node.
        let expected = pilot.expected();
        let text = get_ok(admin, "/config_dump").await;
        assert!(
            !text.contains("mizzen_dump_error"),
            "every resource is shown in full"
        );
        let dump: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let configs = dump["configs"].as_array().expect("configs");
        let by_type = |suffix: &str| -> &serde_json::Value {
            configs
                .iter()
                .find(|c| {
                    c["@type"].as_str().is_some_and(|t| {
                        t == format!("type.googleapis.com/envoy.admin.v3.{suffix}")
                    })
                })
                .unwrap_or_else(|| panic!("no {suffix} in the dump"))
        };
        assert_eq!(
            by_type("BootstrapConfigDump")["bootstrap"]["node"]["id"],
            NODE_ID
        );
        let clusters = by_type("ClustersConfigDump");
        assert_eq!(
            names(
                &clusters["dynamic_active_clusters"],
                |c| &c["cluster"]["name"]
            ),
            expected[0]
        );
        assert!(
            clusters["dynamic_active_clusters"][0]["cluster"]["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("envoy.config.cluster.v3.Cluster"))
        );
        assert!(
            clusters["dynamic_active_clusters"][0]["version_info"]
                .as_str()
                .is_some_and(|v| !v.is_empty())
        );
        assert_eq!(
            names(&clusters["static_clusters"], |c| &c["cluster"]["name"]),
            BTreeSet::from(["xds-grpc".to_owned()])
        );
        assert_eq!(
            names(
                &by_type("EndpointsConfigDump")["dynamic_endpoint_configs"],
                |e| &e["endpoint_config"]["cluster_name"]
            ),
            expected[1]
        );
        let listeners = &by_type("ListenersConfigDump")["dynamic_listeners"];
        assert_eq!(names(listeners, |l| &l["name"]), expected[2]);
        assert_eq!(
            names(listeners, |l| &l["active_state"]["listener"]["name"]),
            expected[2]
        );
        assert_eq!(
            names(&by_type("RoutesConfigDump")["dynamic_route_configs"], |r| {
                &r["route_config"]["name"]
            }),
            expected[3]
        );

        // /stats: connected, CDS and LDS applied, nothing rejected.
        let stats = get_ok(admin, "/stats").await;
        assert_eq!(stat(&stats, "control_plane.connected_state"), 1);
        assert_eq!(stat(&stats, "server.state"), 0);
        assert!(stat(&stats, "cluster_manager.cds.update_success") >= 1);
        assert!(stat(&stats, "listener_manager.lds.update_success") >= 1);
        assert_eq!(stat(&stats, "cluster_manager.cds.update_rejected"), 0);
        assert_eq!(stat(&stats, "listener_manager.lds.update_rejected"), 0);
        assert_eq!(stat(&stats, "mizzen.xds.updates_rejected"), 0);
        assert_eq!(
            stat(&stats, "cluster_manager.active_clusters") as usize,
            expected[0].len() + 1
        );
        let prom = get_ok(admin, "/stats/prometheus").await;
        assert!(
            prom.contains("\nenvoy_control_plane_connected_state 1\n"),
            "{prom}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&get_ok(admin, "/stats?format=json").await).expect("JSON");
        assert!(json["stats"].as_array().is_some_and(|s| !s.is_empty()));

        // /server_info.
        let info: serde_json::Value =
            serde_json::from_str(&get_ok(admin, "/server_info").await).expect("JSON");
        assert_eq!(info["state"], "LIVE");
        assert_eq!(info["node"]["id"], NODE_ID);
        assert_eq!(info["command_line_options"]["concurrency"], 1);

        // Health check flag.
        assert_eq!(http(admin, "POST", "/healthcheck/fail").await.0, 200);
        assert_eq!(
            http(admin, "GET", "/ready").await,
            (503, "DRAINING\n".to_owned())
        );
        assert_eq!(http(admin, "POST", "/healthcheck/ok").await.0, 200);
        assert_eq!(http(admin, "GET", "/ready").await.0, 200);

        // Logging is not managed by an in-process app without a handle.
        assert_eq!(http(admin, "POST", "/logging?level=debug").await.0, 404);

        // Unknown paths list the endpoints; mutations need POST.
        let (status, body) = http(admin, "GET", "/no/such/thing").await;
        assert_eq!(status, 404);
        assert!(
            body.contains("/config_dump") && body.contains("/quitquitquit"),
            "{body}"
        );
        assert_eq!(http(admin, "GET", "/quitquitquit").await.0, 405);

        // /quitquitquit ends run_until.
        assert_eq!(
            http(admin, "POST", "/quitquitquit").await,
            (200, "OK\n".to_owned())
        );
        let result = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("run_until returns after /quitquitquit")
            .expect("no panic");
        assert!(result.is_ok(), "{result:?}");
        drop(stop);
        pilot.stop().await;
    }

    #[tokio::test]
    async fn app_without_ads_is_live_at_once_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("static.yaml");
        std::fs::write(
            &path,
            "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n",
        )
        .expect("write");
        let app = App::build(config(&path)).await.expect("builds");
        assert!(app.xds_config().is_none());
        let admin = app.addrs().admin.expect("admin bound");
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        assert_eq!(
            http(admin, "GET", "/ready").await,
            (200, "LIVE\n".to_owned())
        );
        let dump = get_ok(admin, "/config_dump").await;
        assert!(dump.contains("ClustersConfigDump"), "{dump}");
        let _ = stop.send(());
        let result = tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("run_until returns on shutdown")
            .expect("no panic");
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn app_refuses_a_bad_bootstrap_naming_the_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "admin:\n  adress: {}\n").expect("write");
        let err = App::build(config(&path)).await.expect_err("refused");
        assert!(matches!(err, Error::Bootstrap(_)), "{err:?}");
        assert!(err.to_string().contains("admin.adress"), "{err}");

        // An admin port in use names `admin.address`.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        let path = write_bootstrap(dir.path(), 15010, port);
        let err = App::build(config(&path)).await.expect_err("port taken");
        assert!(matches!(err, Error::AdminBind { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("admin.address") && text.contains(&port.to_string()),
            "{text}"
        );
    }

    /// The binary reads its bootstrap in a child process of itself
    /// (`proxy::bootstrap::isolated`): a refusal still names the field, and
    /// nothing falls back to reading it in-process.
    #[test]
    fn app_binary_relays_the_bootstrap_refusal_from_its_child() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, "admin:\n  adress: {}\n").expect("write");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
            .arg("-c")
            .arg(&path)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(stderr.contains("admin.adress"), "{stderr}");
        assert!(
            !stderr.contains("could not read the bootstrap in a child process"),
            "{stderr}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn app_binary_runs_until_quitquitquit() {
        let pilot_dir = bookinfo_dir();
        let pilot = Pilot::start(pilot_dir.path(), None).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let path = write_bootstrap(dir.path(), pilot.xds.port(), admin.port());
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", "1", "-l", "warning"])
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy binary starts");
        wait_ready(admin).await;
        let stats = get_ok(admin, "/stats").await;
        assert_eq!(stat(&stats, "server.concurrency"), 1);
        assert_eq!(stat(&stats, "control_plane.connected_state"), 1);
        assert_eq!(
            http(admin, "POST", "/logging?level=debug").await.0,
            200,
            "the binary manages its log level"
        );
        assert_eq!(
            http(admin, "POST", "/quitquitquit").await,
            (200, "OK\n".to_owned())
        );
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the proxy exits within 10 s of /quitquitquit")
            .expect("wait");
        assert!(status.success(), "{status}");
        pilot.stop().await;
    }

    #[test]
    fn app_binary_help_works() {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxy"))
            .arg("--help")
            .output()
            .expect("runs");
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("--concurrency"));
    }
}
