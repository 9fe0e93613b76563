//! The store's keep-the-last-good rules and the controller's publishing, with an
//! in-memory source (the file source and the watcher are covered by
//! `tests/config_watch.rs`).

use std::collections::BTreeMap;

use common::load::{Loaded, load_str};

use super::*;
use crate::model::Snapshot;

/// In-memory files, loaded in name order like a directory.
#[derive(Default)]
struct Memory {
    files: BTreeMap<String, String>,
    fail: bool,
}

impl Memory {
    fn with(files: &[(&str, &str)]) -> Memory {
        Memory {
            files: files
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fail: false,
        }
    }
}

impl ConfigSource for Memory {
    fn describe(&self) -> String {
        "memory".into()
    }
    fn load(&mut self) -> Result<Loaded, SourceError> {
        if self.fail {
            return Err(SourceError::Other("gone".into()));
        }
        let mut out = Loaded::default();
        for (name, text) in &self.files {
            out.extend(load_str(text, name));
        }
        Ok(out)
    }
    fn watch(&mut self, _signal: ChangeSignal) -> Result<(), SourceError> {
        Ok(())
    }
}

const VS_GOOD: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 5s
";

fn store_with(files: &[(&str, &str)]) -> (ConfigStore, ApplyOutcome) {
    let mut store = ConfigStore::new("default");
    let outcome = store.apply(Memory::with(files).load().unwrap());
    (store, outcome)
}

fn vs_key() -> ResourceKey {
    ResourceKey {
        group: "networking.istio.io".into(),
        kind: "VirtualService".into(),
        namespace: "default".into(),
        name: "reviews".into(),
    }
}

fn timeout_of(store: &ConfigStore) -> String {
    let snap = store.snapshot(1);
    let (_, vs) = snap.virtual_services().next().expect("a VirtualService");
    format!("{:?}", vs.http[0].timeout)
}

#[test]
fn accepts_valid_resources_and_defaults_the_namespace() {
    let (store, outcome) = store_with(&[("vs.yaml", VS_GOOD)]);
    assert_eq!(
        (outcome.accepted, outcome.added, outcome.rejected),
        (1, 1, 0)
    );
    assert_eq!(
        store.get(&vs_key()).unwrap().meta.namespace.as_deref(),
        Some("default")
    );
    assert!(store.rejected().is_empty());
    assert_eq!(store.rejected_total(), 0);
}

#[test]
fn invalid_version_keeps_last_good_and_is_listed_with_file_and_line() {
    let (mut store, _) = store_with(&[("vs.yaml", VS_GOOD)]);
    let good = timeout_of(&store);
    let bad = VS_GOOD.replace("timeout: 5s", "timeout: 0s");
    let outcome = store.apply(Memory::with(&[("vs.yaml", &bad)]).load().unwrap());
    assert_eq!(
        (
            outcome.rejected,
            outcome.new_rejections,
            outcome.kept_last_good
        ),
        (1, 1, 1)
    );
    assert_eq!(timeout_of(&store), good, "the last good spec stays");
    let r = &store.rejected()[0];
    assert_eq!(r.resource, "VirtualService reviews.default");
    assert_eq!(r.origin, "vs.yaml:1");
    assert!(
        r.messages[0].starts_with("Error [IST0106] (VirtualService reviews.default vs.yaml:10) Schema validation error: spec.http[0].timeout"),
        "{}",
        r.messages[0]
    );
    assert_eq!(store.rejected_total(), 1);

    // The same rejection on the next load is not counted again.
    store.apply(Memory::with(&[("vs.yaml", &bad)]).load().unwrap());
    assert_eq!(store.rejected_total(), 1);
    // Fixed: accepted, rejection gone.
    let fixed = VS_GOOD.replace("timeout: 5s", "timeout: 7s");
    store.apply(Memory::with(&[("vs.yaml", &fixed)]).load().unwrap());
    assert!(store.rejected().is_empty());
    assert!(timeout_of(&store).contains('7'));
}

#[test]
fn undecodable_version_keeps_last_good() {
    let (mut store, _) = store_with(&[("vs.yaml", VS_GOOD)]);
    let typo = VS_GOOD.replace(
        "timeout: 5s",
        "timeout: 5s\n    retries: {attempts: 2, perTryTimout: 1s}",
    );
    let outcome = store.apply(Memory::with(&[("vs.yaml", &typo)]).load().unwrap());
    assert_eq!(outcome.kept_last_good, 1);
    assert!(store.get(&vs_key()).is_some());
    assert!(
        store.rejected()[0].messages[0].contains("perTryTimout"),
        "{:?}",
        store.rejected()
    );
}

#[test]
fn a_new_resource_that_is_rejected_is_simply_absent() {
    let bad = VS_GOOD.replace("timeout: 5s", "timeout: 0s");
    let (store, outcome) = store_with(&[("vs.yaml", &bad)]);
    assert_eq!(
        (outcome.accepted, outcome.kept_last_good, outcome.rejected),
        (0, 0, 1)
    );
    assert!(store.get(&vs_key()).is_none());
}

#[test]
fn yaml_syntax_error_keeps_everything_from_that_file() {
    let two = format!(
        "{VS_GOOD}---\napiVersion: v1\nkind: Service\nmetadata: {{name: reviews}}\nspec: {{ports: [{{port: 80}}]}}\n"
    );
    let (mut store, _) = store_with(&[
        ("a.yaml", &two),
        ("b.yaml", VS_GOOD.replace("reviews", "other").as_str()),
    ]);
    assert_eq!(store.accepted().len(), 3);
    let outcome = store.apply(
        Memory::with(&[
            ("a.yaml", "kind: [unclosed"),
            ("b.yaml", VS_GOOD.replace("reviews", "other").as_str()),
        ])
        .load()
        .unwrap(),
    );
    assert_eq!(
        (outcome.accepted, outcome.kept_last_good, outcome.rejected),
        (3, 2, 1)
    );
    assert_eq!(store.rejected()[0].resource, "document");
}

#[test]
fn resources_that_disappear_are_removed() {
    let (mut store, _) = store_with(&[("vs.yaml", VS_GOOD)]);
    let outcome = store.apply(Memory::with(&[]).load().unwrap());
    assert_eq!((outcome.accepted, outcome.removed), (0, 1));
}

#[test]
fn second_definition_of_a_resource_is_refused() {
    let (store, outcome) = store_with(&[("a.yaml", VS_GOOD), ("b.yaml", VS_GOOD)]);
    assert_eq!((outcome.accepted, outcome.rejected), (1, 1));
    assert_eq!(store.get(&vs_key()).unwrap().origin.file.as_ref(), "a.yaml");
    assert!(store.rejected()[0].messages[0].contains("defined more than once"));
}

#[test]
fn kubernetes_objects_that_do_not_decode_keep_their_last_good_version() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
    let (mut store, _) = store_with(&[("svc.yaml", svc)]);
    let bad = svc.replace("port: 80", "port: eighty");
    let outcome = store.apply(Memory::with(&[("svc.yaml", &bad)]).load().unwrap());
    assert_eq!((outcome.rejected, outcome.kept_last_good), (1, 1));
    assert!(
        store
            .snapshot(1)
            .services
            .contains_key("web.default.svc.cluster.local")
    );
}

#[test]
fn reload_once_publishes_versions_and_skips_no_op_reloads() {
    let model = ModelHandle::default();
    let mut c = ConfigController::new(
        Memory::with(&[("vs.yaml", VS_GOOD)]),
        ConfigOptions::default(),
    );
    let first = c.reload_once(&model).unwrap();
    assert_eq!(first.published, Some(1));
    assert_eq!(model.load().version, 1);
    assert_eq!(
        c.reload_once(&model).unwrap().published,
        None,
        "nothing changed"
    );

    c.source.files.insert(
        "vs.yaml".into(),
        VS_GOOD.replace("timeout: 5s", "timeout: 0s"),
    );
    let bad = c.reload_once(&model).unwrap();
    assert_eq!(
        bad.published,
        Some(2),
        "the rejection is visible on the debug API"
    );
    let snap: Arc<Snapshot> = model.load();
    assert_eq!(snap.rejected.len(), 1);
    assert_eq!(snap.virtual_services().count(), 1);
    assert_eq!(c.rejection_counter().get(), 1);

    c.source.fail = true;
    assert!(c.reload_once(&model).is_err());
    assert_eq!(model.load().version, 2, "a source error publishes nothing");
}

#[test]
fn endpoint_changes_are_published_as_endpoints_only() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{name: http, port: 80}]}\n";
    let eps = |ip: &str| {
        format!(
            "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: web}}\nsubsets: [{{addresses: [{{ip: {ip}}}], ports: [{{name: http, port: 8080}}]}}]\n"
        )
    };
    let model = ModelHandle::default();
    let mut c = ConfigController::new(
        Memory::with(&[("svc.yaml", svc), ("eps.yaml", &eps("10.0.0.1"))]),
        ConfigOptions::default(),
    );
    assert!(!c.reload_once(&model).unwrap().endpoints_only);
    c.source.files.insert("eps.yaml".into(), eps("10.0.0.2"));
    let r = c.reload_once(&model).unwrap();
    assert!(r.endpoints_only);
    assert!(
        model
            .load()
            .endpoints_changed
            .contains("web.default.svc.cluster.local")
    );
}

#[test]
fn the_file_source_tells_when_a_load_would_read_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.yaml");
    std::fs::write(
        &a,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: one}\n",
    )
    .unwrap();
    let mut source = FileSource::new(dir.path());
    assert!(!source.unchanged(), "nothing was loaded yet");
    source.load().unwrap();
    assert!(source.unchanged());
    std::fs::write(
        dir.path().join("b.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: two}\n",
    )
    .unwrap();
    assert!(!source.unchanged(), "a new file");
    source.load().unwrap();
    assert!(source.unchanged());
    std::fs::write(
        &a,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: three}\n",
    )
    .unwrap();
    assert!(!source.unchanged(), "an edited file");
    std::fs::remove_file(&a).unwrap();
    source.load().unwrap();
    assert!(source.unchanged());
    // A single file works the same way.
    let b = dir.path().join("b.yaml");
    let mut single = FileSource::new(&b);
    single.load().unwrap();
    assert!(single.unchanged());
    std::fs::remove_file(&b).unwrap();
    assert!(!single.unchanged(), "a file that went away");
}

#[test]
fn several_paths_are_read_as_one_set_and_each_is_watched() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ns = |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
    std::fs::write(one.path().join("a.yaml"), ns("from-one")).unwrap();
    std::fs::write(two.path().join("b.yaml"), ns("from-two")).unwrap();
    let mut source = FileSource::many(vec![one.path().to_path_buf(), two.path().to_path_buf()]);
    let loaded = source.load().unwrap();
    let names: Vec<&str> = loaded
        .resources
        .iter()
        .filter_map(|r| r.meta.name.as_deref())
        .collect();
    assert_eq!(names, ["from-one", "from-two"]);
    assert!(source.describe().contains(", "), "{}", source.describe());

    let (signal, mut changes) = ChangeSignal::channel();
    source.watch(signal).unwrap();
    assert!(source.unchanged());
    std::fs::write(two.path().join("c.yaml"), ns("later")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while changes.try_recv().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "no change reported for the second path"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!source.unchanged());
    assert_eq!(source.load().unwrap().resources.len(), 3);

    // A missing path makes the whole load fail, naming it.
    let mut broken = FileSource::many(vec![one.path().to_path_buf(), "/nonexistent/pods".into()]);
    let err = broken.load().unwrap_err().to_string();
    assert!(err.contains("/nonexistent/pods"), "{err}");
}
