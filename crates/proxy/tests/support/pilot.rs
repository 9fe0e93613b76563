//! The real pilot, in-process on 127.0.0.1, serving bookinfo with its pods,
//! and the node istio-agent would write for bookinfo's productpage.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind};
use pilot::app::{App, Config};
use pilot::xds::ads::Connections;
use prost::Message;
use proxy::xds::subscriptions::{eds_names, rds_names};
use proxy::xds::{Backoff, CLUSTER, ENDPOINT, LISTENER, ROUTE, XdsConfig, XdsStore};
use tokio::sync::oneshot;

pub const NODE_ID: &str =
    "sidecar~10.1.0.10~productpage-v1-6b746f74dc-9rlmh.default~default.svc.cluster.local";
pub const WAIT: Duration = Duration::from_secs(20);

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.into())),
    }
}

/// The node istio-agent would write for bookinfo's productpage.
pub fn node() -> Node {
    let mut labels = Struct::default();
    labels.fields.insert("app".into(), string("productpage"));
    labels.fields.insert("version".into(), string("v1"));
    let mut meta = Struct::default();
    meta.fields.insert("NAMESPACE".into(), string("default"));
    meta.fields
        .insert("INSTANCE_IPS".into(), string("10.1.0.10"));
    meta.fields
        .insert("SERVICE_ACCOUNT".into(), string("bookinfo-productpage"));
    meta.fields
        .insert("WORKLOAD_NAME".into(), string("productpage-v1"));
    meta.fields
        .insert("CLUSTER_ID".into(), string("Kubernetes"));
    meta.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    Node {
        id: NODE_ID.into(),
        metadata: Some(meta),
        ..Default::default()
    }
}

pub fn config(addr: SocketAddr, delta: bool) -> XdsConfig {
    XdsConfig {
        endpoint: format!("http://{addr}"),
        node: node(),
        delta,
        tls: None,
        identity: None,
        initial_fetch_timeout: Duration::from_secs(15),
        backoff: Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_millis(400),
        },
    }
}

/// Bookinfo (samples/bookinfo) with its pods, in a fresh directory.
pub fn bookinfo_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "samples/bookinfo/platform.yaml",
        "samples/bookinfo/networking.yaml",
    ] {
        let src = repo().join(f);
        std::fs::copy(&src, dir.path().join(src.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        repo().join("crates/pilot/tests/fixtures/xds/bookinfo-workloads.yaml"),
        dir.path().join("workloads.yaml"),
    )
    .unwrap();
    dir
}

pub struct Pilot {
    pub xds: SocketAddr,
    pub app_model: pilot::model::ModelHandle,
    pub connections: Connections,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Pilot {
    pub async fn start(dir: &Path, xds: Option<SocketAddr>) -> Pilot {
        let mut config = Config::for_dir(dir);
        config.xds_addr = xds.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.http_addr = SocketAddr::from(([127, 0, 0, 1], 0));
        let app = App::build(config).await.expect("pilot starts");
        let xds = app.addrs().xds;
        let app_model = app.model();
        let connections = app.ads().connections();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = app
                .run_until(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Pilot {
            xds,
            app_model,
            connections,
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }

    /// What pilot generates for [`node`]: (clusters, endpoints, listeners, routes).
    pub fn expected(&self) -> [BTreeSet<String>; 4] {
        let snapshot = self.app_model.load();
        let mut p = pilot::proxy::Proxy::from_node(&node()).unwrap();
        p.complete_from(&snapshot);
        let produce =
            |t: &str, names: &[String]| pilot::xds::generate(&snapshot, &p, t, names).unwrap();
        let decode_all = |rs: &[pilot::xds::NamedResource]| -> Vec<Any> {
            rs.iter().map(|r| r.resource.clone()).collect()
        };
        let names = |rs: &[pilot::xds::NamedResource]| -> BTreeSet<String> {
            rs.iter().map(|r| r.name.clone()).collect()
        };
        let cds = produce(CLUSTER, &[]);
        let clusters: Vec<Cluster> = decode_all(&cds)
            .iter()
            .map(|a| Cluster::decode(a.value.as_slice()).unwrap())
            .collect();
        let eds_wanted: Vec<String> = eds_names(&clusters).into_iter().collect();
        let lds = produce(LISTENER, &[]);
        let listeners: Vec<Listener> = decode_all(&lds)
            .iter()
            .map(|a| Listener::decode(a.value.as_slice()).unwrap())
            .collect();
        let rds_wanted: Vec<String> = rds_names(&listeners).into_iter().collect();
        [
            names(&cds),
            names(&produce(ENDPOINT, &eds_wanted)),
            names(&lds),
            names(&produce(ROUTE, &rds_wanted)),
        ]
    }

    /// Whether pilot saw every type sent to our node ACKed, and no NACK.
    pub fn all_acked(&self) -> bool {
        let Some(c) = self.connections.find(NODE_ID) else {
            return false;
        };
        ["cds", "eds", "lds", "rds"].iter().all(|t| {
            c.types.get(*t).is_some_and(|s| {
                s.nonce_sent.is_some() && s.nonce_acked == s.nonce_sent && s.last_nack.is_none()
            })
        })
    }
}

pub fn held(store: &XdsStore) -> [BTreeSet<String>; 4] {
    let s = store.load();
    [
        s.clusters.keys().cloned().collect(),
        s.endpoints.keys().cloned().collect(),
        s.listeners.keys().cloned().collect(),
        s.routes.keys().cloned().collect(),
    ]
}

pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
