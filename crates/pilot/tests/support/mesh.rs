//! The [`Mesh`] of the Envoy suites: pilot in-process, a stock Envoy as the
//! ingress gateway, and the upstreams, started and stopped together (see the
//! harness's module doc in `envoy.rs`), plus tallies of their answers.

use super::*;

const MESH: &str = include_str!("../fixtures/conformance/mesh.yaml");

/// Upstream names of the mesh fixture: (name, loopback IP, port placeholder).
/// `reviews-v1b` is a second `version: v1`-like pod that only subset `pair`
/// (label `pool: pair`, shared with `reviews-v1`) selects.
const UPSTREAMS: [(&str, &str, &str); 4] = [
    ("reviews-v1", "127.0.0.2", "REVIEWS_V1_PORT"),
    ("reviews-v2", "127.0.0.3", "REVIEWS_V2_PORT"),
    ("reviews-v3", "127.0.0.4", "REVIEWS_V3_PORT"),
    ("reviews-v1b", "127.0.0.5", "REVIEWS_V1B_PORT"),
];

/// What a [`Mesh`] serves and how its Envoy asks for it.
pub struct MeshSpec<'a> {
    /// Files (name, template) of pilot's config dir; `{{GATEWAY_PORT}}` is the
    /// gateway listener's port (from [`free_port`]).
    pub files: &'a [(&'a str, &'a str)],
    /// Upstreams to start: (name, loopback IP, port placeholder).
    pub upstreams: &'a [(&'static str, &'static str, &'static str)],
    /// Delta ADS (DELTA_GRPC) rather than SotW.
    pub delta: bool,
}

/// One pilot, one Envoy gateway and its upstreams (by default `reviews`').
pub struct Mesh {
    pub upstreams: BTreeMap<&'static str, Upstream>,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub pilot_http: SocketAddr,
    ports: Vec<(String, u16)>,
    config_dir: tempfile::TempDir,
    // Dropped before the directory so its log is still there.
    envoy: Envoy,
    envoy_dir: tempfile::TempDir,
    pilot: tokio::task::JoinHandle<()>,
    stop_pilot: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Mesh {
    /// Starts everything with `routing` (a template) beside the mesh fixture
    /// and waits until Envoy accepted clusters and listeners.
    pub async fn start(routing: &str) -> Mesh {
        Mesh::start_with(routing, &[]).await
    }

    /// As [`Mesh::start`], with extra files (name, content) in the config dir.
    pub async fn start_with(routing: &str, extra: &[(&str, &str)]) -> Mesh {
        let mut files = vec![("mesh.yaml", MESH), ("routing.yaml", routing)];
        files.extend_from_slice(extra);
        Mesh::start_spec(&MeshSpec {
            files: &files,
            upstreams: &UPSTREAMS,
            delta: false,
        })
        .await
    }

    /// Starts the upstreams, pilot on `spec.files` and Envoy, and waits until
    /// Envoy accepted clusters and listeners.
    pub async fn start_spec(spec: &MeshSpec<'_>) -> Mesh {
        Mesh::start_spec_at(spec, None).await
    }

    /// As [`Mesh::start_spec`], with Envoy's node in `locality`
    /// (`region/zone/subzone`) when given.
    pub async fn start_spec_at(spec: &MeshSpec<'_>, locality: Option<&str>) -> Mesh {
        data_plane();
        let mut upstreams = BTreeMap::new();
        let mut ports = vec![("GATEWAY_PORT".to_string(), free_port())];
        for &(name, ip, placeholder) in spec.upstreams {
            let up = Upstream::start(ip, name).await;
            ports.push((placeholder.to_string(), up.port));
            upstreams.insert(name, up);
        }
        let config_dir = tempfile::tempdir().unwrap();
        for (name, text) in spec.files {
            std::fs::write(config_dir.path().join(name), render(text, &ports)).unwrap();
        }

        let mut config = Config::for_dir(config_dir.path());
        config.xds_addr = "127.0.0.1:0".parse().unwrap();
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        config.debounce_after = "20ms".parse().unwrap();
        let app = App::build(config).await.expect("pilot starts");
        let addrs = app.addrs();
        let (stop_pilot, stopped) = tokio::sync::oneshot::channel::<()>();
        let pilot = tokio::spawn(async move {
            // Only `stop` stops pilot; a dropped Mesh aborts the task.
            app.run_until(async {
                if stopped.await.is_err() {
                    std::future::pending::<()>().await;
                }
            })
            .await
            .expect("pilot ran cleanly");
        });
        let (status, configz) = admin_get(addrs.http, "/debug/configz").await.unwrap();
        assert_eq!(status, 200, "{configz}");
        let configz: Value = serde_json::from_str(&configz).unwrap();
        assert!(
            configz["rejected"].as_array().is_some_and(|r| r.is_empty()),
            "pilot rejected part of the config: {configz:#}"
        );

        let envoy_dir = tempfile::tempdir().unwrap();
        let mut envoy = Envoy::start_at(envoy_dir.path(), addrs.xds, spec.delta, locality);
        let admin = envoy.admin().await;
        let deadline = Instant::now() + WAIT;
        loop {
            let s = stats(admin).await;
            assert_eq!(
                stat_u64(&s, "listener_manager.lds.update_rejected"),
                0,
                "envoy rejected its listeners (a port taken? see its log)"
            );
            if stat_u64(&s, "cluster_manager.cds.update_success") >= 1
                && stat_u64(&s, "listener_manager.lds.update_success") >= 1
                && stat_u64(&s, "listener_manager.total_listeners_active") >= 1
            {
                break;
            }
            if Instant::now() > deadline {
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
        let gateway = ([127, 0, 0, 1], ports[0].1).into();
        Mesh {
            upstreams,
            gateway,
            admin,
            pilot_http: addrs.http,
            ports,
            config_dir,
            envoy,
            envoy_dir,
            pilot,
            stop_pilot: Some(stop_pilot),
        }
    }

    /// Stops Envoy, then pilot, which must drain and return cleanly within
    /// [`WAIT`].
    pub async fn stop(mut self) {
        self.envoy.kill();
        if let Some(stop) = self.stop_pilot.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.pilot)
            .await
            .expect("pilot stops within the drain bound")
            .expect("pilot task");
    }

    pub fn upstream(&self, name: &str) -> &Upstream {
        &self.upstreams[name]
    }

    pub fn client(&self) -> Client {
        Client::new(self.gateway)
    }

    pub fn envoy_log(&self) -> String {
        self.envoy.log()
    }

    /// Replaces the routing file on disk (atomically, by rename).
    pub fn apply(&self, routing: &str) {
        self.write("routing.yaml", routing);
    }

    /// Replaces config file `name` with `template` rendered (atomically, by
    /// rename).
    pub fn write(&self, name: &str, template: &str) {
        let tmp = self.config_dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, render(template, &self.ports)).unwrap();
        std::fs::rename(&tmp, self.config_dir.path().join(name)).unwrap();
    }

    /// Retries `GET path` until the body is `want` (bounded by [`WAIT`]).
    pub async fn eventually_routes(&self, path: &str, headers: &[(&str, &str)], want: &str) {
        let deadline = Instant::now() + WAIT;
        let mut last = Err("no attempt".to_string());
        while Instant::now() < deadline {
            last = self.client().get(path, headers).await;
            if matches!(&last, Ok(r) if r.status == 200 && r.body == want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "GET {path} {headers:?} through the gateway never reached {want} within {WAIT:?}; last answer: {last:?}"
        );
    }

    /// See [`assert_no_rejects`].
    pub async fn assert_no_rejects(&self) {
        assert_no_rejects(self.admin).await;
    }

    /// `n` GETs over `conns` keep-alive connections in parallel; every answer
    /// (or transport error) in arrival order.
    pub async fn load(
        &self,
        n: usize,
        conns: usize,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Vec<Result<Response, String>> {
        let per = n.div_ceil(conns);
        let mut tasks = Vec::new();
        for i in 0..conns {
            let count = per.min(n.saturating_sub(i * per));
            let mut client = self.client();
            let path = path.to_string();
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            tasks.push(tokio::spawn(async move {
                let h: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut out = Vec::with_capacity(count);
                for _ in 0..count {
                    out.push(client.get(&path, &h).await);
                }
                out
            }));
        }
        let mut all = Vec::with_capacity(n);
        for t in tasks {
            all.extend(t.await.expect("client task"));
        }
        all
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.pilot.abort();
    }
}

/// Bodies of successful answers → count; errors and non-200s under
/// `"<status>"` / `"error"`.
pub fn tally(rs: &[Result<Response, String>]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in rs {
        let key = match r {
            Ok(r) if r.status == 200 => r.body.clone(),
            Ok(r) => format!("<{}>", r.status),
            Err(_) => "error".to_string(),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

/// `part / whole` in percent.
pub fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole as f64
}
