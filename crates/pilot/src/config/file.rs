//! The file source: directories of YAML (`--config-dir`, one or more), read with
//! [`common::load`] and watched with `notify`.
//!
//! Every load lists the directory again (recursively, `*.yaml`, `*.yml`, `*.json`,
//! hidden entries skipped, name order) and reads every file, so the result is always
//! the complete current set. The watcher reports every event except reads (pilot's
//! own loads would otherwise wake it); events on editor swap files or Kubernetes'
//! ConfigMap `..data` symlink swaps cause a reload that finds what changed, or
//! nothing. A single file may be given instead of a directory; its directory is
//! watched then.
//!
//! Each load also records what it read (every file's path, size and modification
//! time, taken before reading it), so [`ConfigSource::unchanged`] can tell the
//! controller that the load made when the watcher starts would read the same
//! bytes as the one `App::build` just made, and skip it (with 10,000 services
//! that second load doubled pilot's resident memory at start).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::load::{Loaded, config_files, load_path};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{ChangeSignal, ConfigSource, SourceError};

/// YAML files under a directory (or one file), watched for changes.
pub struct FileSource {
    /// What is read, in order: directories or single files.
    paths: Vec<PathBuf>,
    watchers: Vec<RecommendedWatcher>,
    /// What the last successful load read.
    read: Option<Vec<Stamp>>,
}

/// One file as a load saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// `None` when the file cannot be read: nothing to compare with, so a
    /// fingerprint containing it never counts as unchanged.
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            path: path.to_path_buf(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource")
            .field("paths", &self.paths)
            .field("watching", &!self.watchers.is_empty())
            .finish()
    }
}

impl FileSource {
    /// A source reading `path`: a directory (`--config-dir`) or a single file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource::many(vec![path.into()])
    }

    /// A source reading every one of `paths` (directories or files) as one set,
    /// in order: `mizzen up` gives pilot the user's config and the directory
    /// where its pod launcher writes Pods.
    pub fn many(paths: Vec<PathBuf>) -> Self {
        FileSource {
            paths,
            watchers: Vec::new(),
            read: None,
        }
    }

    /// The paths read.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// The files a load would read now, in order.
    fn files(&self) -> Result<Vec<PathBuf>, SourceError> {
        let mut files = Vec::new();
        for path in &self.paths {
            let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
            if meta.is_dir() {
                files.extend(config_files(path).map_err(|e| unreadable(path, e))?);
            } else {
                files.push(path.clone());
            }
        }
        Ok(files)
    }

    /// The files a load would read now, stamped; `None` if any cannot be.
    fn stamps(&self) -> Result<Option<Vec<Stamp>>, SourceError> {
        Ok(self.files()?.iter().map(|f| Stamp::of(f)).collect())
    }
}

fn unreadable(path: &Path, source: std::io::Error) -> SourceError {
    SourceError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

impl ConfigSource for FileSource {
    fn describe(&self) -> String {
        let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
        format!("files under {}", paths.join(", "))
    }

    fn load(&mut self) -> Result<Loaded, SourceError> {
        self.read = None;
        let files = self.files()?;
        let mut out = Loaded::default();
        let mut stamps = Some(Vec::with_capacity(files.len()));
        for f in files {
            // Stamped before reading: a write during the read shows as a change.
            let stamp = Stamp::of(&f);
            stamps = stamps.zip(stamp).map(|(mut v, s)| {
                v.push(s);
                v
            });
            // A file that vanishes between listing and reading becomes a decode error
            // naming it; the store keeps that file's resources until the next load.
            out.extend(load_path(&f));
        }
        self.read = stamps;
        Ok(out)
    }

    fn unchanged(&mut self) -> bool {
        match (&self.read, self.stamps()) {
            (Some(read), Ok(Some(now))) => *read == now,
            _ => false,
        }
    }

    fn watch(&mut self, signal: ChangeSignal) -> Result<(), SourceError> {
        for path in self.paths.clone() {
            let watcher = watch_path(&path, signal.clone())?;
            self.watchers.push(watcher);
        }
        Ok(())
    }
}

/// Watches `path` (recursively for a directory, its parent for a file), every
/// change but reads reported to `signal`.
fn watch_path(path: &Path, signal: ChangeSignal) -> Result<RecommendedWatcher, SourceError> {
    {
        let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
        let (target, mode) = if meta.is_dir() {
            (path.to_path_buf(), RecursiveMode::Recursive)
        } else {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (parent, RecursiveMode::NonRecursive)
        };
        let watch_error = |source| SourceError::Watch {
            path: target.clone(),
            source,
        };
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(e) if matches!(e.kind, EventKind::Access(_)) => {}
            Ok(_) => signal.notify(),
            Err(e) => {
                tracing::warn!(error = %e, "file watcher reported an error; reloading to be safe");
                signal.notify();
            }
        })
        .map_err(watch_error)?;
        watcher.watch(&target, mode).map_err(watch_error)?;
        tracing::info!(path = %target.display(), "watching config files");
        Ok(watcher)
    }
}
