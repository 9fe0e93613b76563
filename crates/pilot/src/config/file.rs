//! The file source: a directory of YAML (`--config-dir`), read with
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
    path: PathBuf,
    watcher: Option<RecommendedWatcher>,
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
            .field("path", &self.path)
            .field("watching", &self.watcher.is_some())
            .finish()
    }
}

impl FileSource {
    /// A source reading `path`: a directory (`--config-dir`) or a single file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource {
            path: path.into(),
            watcher: None,
            read: None,
        }
    }

    /// The path read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The files a load would read now, stamped; `None` if any cannot be.
    fn stamps(&self) -> Result<Option<Vec<Stamp>>, SourceError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.unreadable(e))?;
        let files = if meta.is_dir() {
            config_files(&self.path).map_err(|e| self.unreadable(e))?
        } else {
            vec![self.path.clone()]
        };
        Ok(files.iter().map(|f| Stamp::of(f)).collect())
    }

    fn unreadable(&self, source: std::io::Error) -> SourceError {
        SourceError::Unreadable {
            path: self.path.clone(),
            source,
        }
    }
}

impl ConfigSource for FileSource {
    fn describe(&self) -> String {
        format!("files under {}", self.path.display())
    }

    fn load(&mut self) -> Result<Loaded, SourceError> {
        self.read = None;
        let meta = std::fs::metadata(&self.path).map_err(|e| self.unreadable(e))?;
        if !meta.is_dir() {
            let stamp = Stamp::of(&self.path);
            let loaded = load_path(&self.path);
            self.read = stamp.map(|s| vec![s]);
            return Ok(loaded);
        }
        let files = config_files(&self.path).map_err(|e| self.unreadable(e))?;
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
        let meta = std::fs::metadata(&self.path).map_err(|e| self.unreadable(e))?;
        let (target, mode) = if meta.is_dir() {
            (self.path.clone(), RecursiveMode::Recursive)
        } else {
            let parent = match self.path.parent() {
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
        self.watcher = Some(watcher);
        Ok(())
    }
}
