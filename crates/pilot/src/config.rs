//! Config intake: where resources come from, which versions are accepted, and when a
//! new model snapshot is published.
//!
//! It owns the path from a source to [`ModelHandle::publish`]; it does not derive
//! services ([`crate::registry`]) or generate xDS ([`crate::xds`]).
//!
//! An update travels:
//! 1. a [`ConfigSource`] ([`FileSource`]: `--config-dir`, read with
//!    [`common::load`]; [`KubeSource`]: the API server's objects, kept by kube-rs
//!    reflectors) signals a change through its [`ChangeSignal`];
//! 2. [`ConfigController::run`] debounces signals like Istio's push debouncing: it
//!    waits for [`ConfigOptions::debounce_after`] of quiet, but never longer than
//!    [`ConfigOptions::debounce_max`] after the first signal;
//! 3. it asks the source for the complete current set of resources
//!    ([`ConfigSource::load`]);
//! 4. the [`ConfigStore`] validates each resource with galley and keeps the accepted
//!    set; a rejected version never replaces the last good one, and the rejection is
//!    logged, counted and listed;
//! 5. [`crate::registry::build_snapshot`] derives the next [`crate::model::Snapshot`]
//!    (version + 1), [`crate::registry::describe_change`] marks endpoint-only
//!    changes, and the snapshot is published unless nothing visible changed.
//!
//! [`ConfigController::reload_once`] runs steps 3–5 synchronously (tests, and the app
//! at start to fail fast on an unreadable directory). [`ConfigController::run`]
//! first waits for [`ConfigSource::synced`]: the Kubernetes source is complete only
//! once every watched kind's initial list arrived, and publishing before that would
//! serve a mesh with half its services (or without its AuthorizationPolicies).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use common::load::Loaded;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::model::ModelHandle;
use crate::registry;

pub mod file;
pub mod kube;
pub mod store;

#[cfg(test)]
mod tests;

pub use file::FileSource;
pub use kube::KubeSource;
pub use store::{ApplyOutcome, ConfigStore, RejectionCounter, ResourceKey};

/// Default quiet period before a change is applied (Istio's `PILOT_DEBOUNCE_AFTER`).
pub const DEFAULT_DEBOUNCE_AFTER: Duration = Duration::from_millis(100);

/// Default longest delay of a change (Istio's `PILOT_DEBOUNCE_MAX`).
pub const DEFAULT_DEBOUNCE_MAX: Duration = Duration::from_secs(10);

/// A provider of configuration: files or the Kubernetes API. Both feed the same
/// [`ConfigStore`] and model.
///
/// A source reports the *complete current set* of resources on every
/// [`ConfigSource::load`], not deltas: the store works out what was added, changed,
/// rejected or removed. Between loads it only says *that* something may have changed,
/// through the [`ChangeSignal`] handed to [`ConfigSource::watch`]; spurious signals are
/// harmless (a reload that changes nothing publishes nothing).
pub trait ConfigSource: Send {
    /// What the source reads, for logs (`files under /etc/mizzen/config`).
    fn describe(&self) -> String;

    /// Reads every resource the source currently holds, with the documents that did
    /// not decode. An `Err` means the source as a whole could not be read (for
    /// example the directory is gone); the store then keeps its current state.
    fn load(&mut self) -> Result<Loaded, SourceError>;

    /// Starts reporting changes to `signal` and keeps doing so for as long as the
    /// source lives. Called once, before the first [`ConfigSource::load`], so that no
    /// change between the two is missed.
    fn watch(&mut self, signal: ChangeSignal) -> Result<(), SourceError>;

    /// Whether a load now would read exactly what the last successful load read
    /// (for files: the same paths, sizes and modification times). Asked once, right
    /// after [`ConfigSource::watch`], to skip a second load of an unchanged source
    /// at start. `false` (the default) when the source cannot tell.
    fn unchanged(&mut self) -> bool {
        false
    }

    /// Resolves once a [`ConfigSource::load`] would return the complete set (for
    /// the Kubernetes source: every watched kind listed once). Asked once, after
    /// [`ConfigSource::watch`] and before the controller's first load. Ready at
    /// once by default (files are complete whenever they are read).
    fn synced(&mut self) -> BoxFuture<'static, Result<(), SourceError>> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// A boxed source is a source, so the app can pick files or Kubernetes at start.
impl<S: ConfigSource + ?Sized> ConfigSource for Box<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn load(&mut self) -> Result<Loaded, SourceError> {
        (**self).load()
    }

    fn watch(&mut self, signal: ChangeSignal) -> Result<(), SourceError> {
        (**self).watch(signal)
    }

    fn unchanged(&mut self) -> bool {
        (**self).unchanged()
    }

    fn synced(&mut self) -> BoxFuture<'static, Result<(), SourceError>> {
        (**self).synced()
    }
}

/// Why a source could not be read or watched.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The configured path cannot be read or listed.
    #[error(
        "cannot read config path {path}: {source}; check that --config-dir names an existing, readable directory"
    )]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The path cannot be watched for changes.
    #[error(
        "cannot watch {path} for changes: {source}; check the path and the inotify limits (sysctl fs.inotify.max_user_watches, max_user_instances)"
    )]
    Watch {
        /// The path.
        path: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
    /// The Kubernetes source was asked for its objects before every watched kind's
    /// initial list completed.
    #[error(
        "the Kubernetes API's initial lists have not completed yet (waiting for {pending}); pilot loads once they have"
    )]
    NotSynced {
        /// The kinds still waiting, comma-separated.
        pending: String,
    },
    /// Another source's failure (the Kubernetes source's API errors).
    #[error("config source failed: {0}")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Why the config controller stopped or a reload failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The source could not be read or watched.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The source stopped signalling changes (its watcher ended).
    #[error("the config source stopped reporting changes; restart pilot to resume watching")]
    WatchEnded,
    /// A reload panicked: a bug, reported instead of bringing pilot down.
    #[error(
        "a config reload failed unexpectedly: {0}; this is a bug, please report it with the config that triggered it"
    )]
    ReloadPanicked(String),
}

/// What a change takes to reach the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOptions {
    /// Namespace of resources that set none (`default`).
    pub default_namespace: String,
    /// Quiet period: a change is applied once no other arrived for this long
    /// (`--debounce-after`, default 100 ms).
    pub debounce_after: Duration,
    /// Longest delay: a change is applied at the latest this long after it arrived,
    /// even if others keep coming (`--debounce-max`, default 10 s).
    pub debounce_max: Duration,
}

impl Default for ConfigOptions {
    fn default() -> Self {
        ConfigOptions {
            default_namespace: "default".into(),
            debounce_after: DEFAULT_DEBOUNCE_AFTER,
            debounce_max: DEFAULT_DEBOUNCE_MAX,
        }
    }
}

/// A source's way to say "something may have changed". Cheap to clone; signals that
/// arrive while one is pending merge into it, so a burst costs one wake-up.
#[derive(Debug, Clone)]
pub struct ChangeSignal {
    tx: mpsc::Sender<()>,
}

impl ChangeSignal {
    /// A signal and the receiver the controller waits on.
    pub fn channel() -> (ChangeSignal, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        (ChangeSignal { tx }, rx)
    }

    /// Reports a possible change. Never blocks; callable from any thread.
    pub fn notify(&self) {
        // Full means a signal is already pending; closed means nobody listens.
        let _ = self.tx.try_send(());
    }
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// The version published, or `None` when nothing visible changed.
    pub published: Option<u64>,
    /// Whether the published change touched endpoints only.
    pub endpoints_only: bool,
    /// What the store did with the loaded set.
    pub outcome: ApplyOutcome,
}

/// Drives a [`ConfigSource`] into the model: watch, debounce, load, validate,
/// derive, publish.
pub struct ConfigController<S = FileSource> {
    source: S,
    store: ConfigStore,
    options: ConfigOptions,
}

impl ConfigController<FileSource> {
    /// A controller for the YAML files under `dir` (`--config-dir`).
    pub fn from_dir(dir: impl Into<PathBuf>, options: ConfigOptions) -> Self {
        ConfigController::new(FileSource::new(dir), options)
    }

    /// A controller reading every one of `paths` as one set (pilot's repeated
    /// `--config-dir`).
    pub fn from_paths(paths: Vec<PathBuf>, options: ConfigOptions) -> Self {
        ConfigController::new(FileSource::many(paths), options)
    }
}

impl<S: ConfigSource> ConfigController<S> {
    /// A controller reading `source`.
    pub fn new(source: S, options: ConfigOptions) -> Self {
        ConfigController {
            source,
            store: ConfigStore::new(options.default_namespace.clone()),
            options,
        }
    }

    /// What the source reads, for logs.
    pub fn describe_source(&self) -> String {
        self.source.describe()
    }

    /// The source (for tests and embedders that look at its state).
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The options in force.
    pub fn options(&self) -> &ConfigOptions {
        &self.options
    }

    /// The store (accepted resources, current rejections).
    pub fn store(&self) -> &ConfigStore {
        &self.store
    }

    /// The count of rejected resource versions, readable after the controller has
    /// moved into [`ConfigController::run`] (for the metrics module).
    pub fn rejection_counter(&self) -> RejectionCounter {
        self.store.rejection_counter()
    }

    /// Loads the source once, applies it to the store and, when anything visible
    /// changed (or nothing was published yet), publishes the next snapshot with the
    /// model's version + 1. A source error leaves store and model untouched.
    pub fn reload_once(&mut self, model: &ModelHandle) -> Result<Reload, ConfigError> {
        let loaded = self.source.load()?;
        let outcome = self.store.apply(loaded);
        let current = model.load();
        let mut next = self.store.snapshot(current.version + 1);
        if current.version > 0 && registry::same_content(&current, &next) {
            tracing::debug!(source = %self.source.describe(), "config reloaded; nothing changed");
            return Ok(Reload {
                published: None,
                endpoints_only: false,
                outcome,
            });
        }
        registry::describe_change(&current, &mut next);
        let (version, endpoints_only) = (next.version, next.endpoints_only);
        tracing::info!(
            source = %self.source.describe(),
            version,
            resources = outcome.accepted,
            services = next.services.len(),
            rejected = next.rejected.len(),
            endpoints_only,
            hosts_with_new_endpoints = next.endpoints_changed.len(),
            "publishing config"
        );
        model.publish(next);
        Ok(Reload {
            published: Some(version),
            endpoints_only,
            outcome,
        })
    }
}

impl<S: ConfigSource + 'static> ConfigController<S> {
    /// Watches the source and keeps the model current until `shutdown` completes.
    ///
    /// Starts watching, waits until the source is synced ([`ConfigSource::synced`]),
    /// loads and publishes once (an error there is returned: the
    /// app should not start on an unreadable config; the load is skipped when this
    /// controller already published and [`ConfigSource::unchanged`] says the source
    /// is as it read it), then applies each settled
    /// burst of changes. Later load errors are logged and the last good state stays.
    /// A reload in progress when `shutdown` fires is finished first.
    pub async fn run(
        mut self,
        model: ModelHandle,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ConfigError> {
        let (signal, mut changes) = ChangeSignal::channel();
        self.source.watch(signal)?;
        let synced = self.source.synced();
        tokio::pin!(shutdown);
        tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            result = synced => result?,
        }
        let (after, max) = (self.options.debounce_after, self.options.debounce_max);
        // A load made before the watcher started (`App::build`) may have missed a
        // change: load again unless the source is provably the same.
        let loaded_before = model.load().version > 0 && self.source.unchanged();
        let shared = Arc::new(Mutex::new(self));
        if loaded_before {
            tracing::debug!("config unchanged since the last load; not reading it again");
        } else {
            reload_blocking(&shared, &model).await?;
        }

        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                change = changes.recv() => if change.is_none() {
                    return Err(ConfigError::WatchEnded);
                },
            }
            // Debounce: wait for `after` of quiet, at most `max` since the first change.
            let first = Instant::now();
            let mut last = first;
            loop {
                let deadline = (last + after).min(first + max);
                tokio::select! {
                    biased;
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep_until(deadline) => break,
                    change = changes.recv() => match change {
                        Some(()) => last = Instant::now(),
                        None => break,
                    },
                }
            }
            if let Err(e) = reload_blocking(&shared, &model).await {
                tracing::warn!(error = %e, "config reload failed; keeping the last good config");
            }
        }
    }
}

/// Runs [`ConfigController::reload_once`] on the blocking pool (file I/O, YAML
/// parsing and validation are CPU and disk work).
async fn reload_blocking<S: ConfigSource + 'static>(
    shared: &Arc<Mutex<ConfigController<S>>>,
    model: &ModelHandle,
) -> Result<Reload, ConfigError> {
    let (shared, model) = (shared.clone(), model.clone());
    tokio::task::spawn_blocking(move || {
        let mut controller = shared.lock().unwrap_or_else(PoisonError::into_inner);
        controller.reload_once(&model)
    })
    .await
    .map_err(|e| ConfigError::ReloadPanicked(e.to_string()))?
}
