//! The watcher with real files and real notify events: `ConfigController::run` on a
//! temporary directory, observed through the model. Every wait polls with a generous
//! timeout; no test asserts exact timing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pilot::config::{ConfigController, ConfigError, ConfigOptions};
use pilot::model::{ModelHandle, Snapshot};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// Polls `model` until `check` holds, or fails after [`WAIT`] with `what`.
async fn eventually(
    model: &ModelHandle,
    what: &str,
    check: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snap = model.load();
        if check(&snap) {
            return snap;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}; model at version {}: {:#?}",
                snap.version, snap.rejected
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Running {
    model: ModelHandle,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ConfigError>>,
}

impl Running {
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run stops on shutdown");
        result
            .expect("run does not panic")
            .expect("run ends cleanly");
    }
}

fn start(dir: &Path, debounce_after: Duration) -> Running {
    let model = ModelHandle::default();
    let options = ConfigOptions {
        debounce_after,
        debounce_max: Duration::from_secs(5),
        ..ConfigOptions::default()
    };
    let controller = ConfigController::from_dir(dir, options);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(controller.run(model.clone(), async move {
        let _ = stopped.await;
    }));
    Running {
        model,
        stop: Some(stop),
        task,
    }
}

fn vs(timeout: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews}}
    timeout: {timeout}
"
    )
}

const SVC: &str = "apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
";

fn timeout_of(s: &Snapshot) -> Option<String> {
    let (_, vs) = s.virtual_services().next()?;
    Some(vs.http.first()?.timeout.as_ref()?.as_str().to_string())
}

/// Writes atomically (write + rename), as editors and `kubectl cp` do.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_load_then_edits_rejections_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vs.yaml"), vs("5s")).unwrap();
    std::fs::write(dir.path().join("svc.yaml"), SVC).unwrap();
    let run = start(dir.path(), Duration::from_millis(50));
    let model = run.model.clone();

    let v1 = eventually(&model, "the initial load", |s| s.version >= 1).await;
    assert_eq!(v1.version, 1, "the initial load publishes version 1");
    assert!(
        v1.services
            .contains_key("reviews.default.svc.cluster.local")
    );
    assert_eq!(timeout_of(&v1).as_deref(), Some("5s"));

    // An edit is published as a new version.
    write(&dir.path().join("vs.yaml"), &vs("7s"));
    let v2 = eventually(&model, "the edit", |s| {
        timeout_of(s).as_deref() == Some("7s")
    })
    .await;
    assert!(v2.version > 1);
    let edited = "7s".to_string();

    // An invalid version is rejected; the previous good spec stays.
    write(&dir.path().join("vs.yaml"), &vs("0s"));
    let v3 = eventually(&model, "the rejection", |s| !s.rejected.is_empty()).await;
    assert_eq!(
        timeout_of(&v3),
        Some(edited),
        "the last good spec is still served"
    );
    let rejected = &v3.rejected[0];
    assert_eq!(rejected.resource, "VirtualService reviews.default");
    let file = dir.path().join("vs.yaml").display().to_string();
    assert_eq!(rejected.origin, format!("{file}:1"));
    assert!(
        rejected.messages[0].contains(&format!("{file}:11)"))
            && rejected.messages[0].contains("spec.http[0].timeout"),
        "Istio's format with file:line: {}",
        rejected.messages[0]
    );

    // Deleting a file removes its resources (and the rejection with it).
    std::fs::remove_file(dir.path().join("vs.yaml")).unwrap();
    let v4 = eventually(&model, "the delete", |s| s.virtual_services().count() == 0).await;
    assert!(v4.rejected.is_empty());
    assert!(
        v4.services
            .contains_key("reviews.default.svc.cluster.local"),
        "other files are untouched"
    );

    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_writes_coalesce_into_fewer_publishes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vs.yaml"), vs("1s")).unwrap();
    // A quiet period far longer than the gap between writes.
    let run = start(dir.path(), Duration::from_millis(500));
    let model = run.model.clone();
    eventually(&model, "the initial load", |s| s.version >= 1).await;

    let writes = 10;
    for i in 2..2 + writes {
        write(&dir.path().join("vs.yaml"), &vs(&format!("{i}s")));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let last = format!("{}s", 1 + writes);
    eventually(&model, "the last write", |s| {
        timeout_of(s).as_deref() == Some(last.as_str())
    })
    .await;
    // Give a straggling event the chance to publish, then count.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let publishes = model.load().version - 1;
    assert!(
        publishes >= 1 && publishes < writes,
        "{publishes} publishes for {writes} writes"
    );
    assert_eq!(timeout_of(&model.load()), Some(last));

    run.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_and_subdirectories_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let run = start(dir.path(), Duration::from_millis(50));
    let model = run.model.clone();
    eventually(&model, "the initial (empty) load", |s| s.version >= 1).await;

    let sub = dir.path().join("team-a");
    std::fs::create_dir(&sub).unwrap();
    write(&sub.join("svc.yaml"), SVC);
    eventually(&model, "the new file in a new subdirectory", |s| {
        s.services.contains_key("reviews.default.svc.cluster.local")
    })
    .await;

    run.stop().await;
}

#[tokio::test]
async fn run_refuses_a_missing_directory() {
    let controller =
        ConfigController::from_dir("/nonexistent/mizzen-config", ConfigOptions::default());
    let err = controller
        .run(ModelHandle::default(), std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--config-dir"), "{err}");
}
