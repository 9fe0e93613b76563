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

use std::path::{Path, PathBuf};

use common::load::{Loaded, config_files, load_path};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::{ChangeSignal, ConfigSource, SourceError};

/// YAML files under a directory (or one file), watched for changes.
pub struct FileSource {
    path: PathBuf,
    watcher: Option<RecommendedWatcher>,
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
        }
    }

    /// The path read.
    pub fn path(&self) -> &Path {
        &self.path
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
        let meta = std::fs::metadata(&self.path).map_err(|e| self.unreadable(e))?;
        if !meta.is_dir() {
            return Ok(load_path(&self.path));
        }
        let files = config_files(&self.path).map_err(|e| self.unreadable(e))?;
        let mut out = Loaded::default();
        for f in files {
            // A file that vanishes between listing and reading becomes a decode error
            // naming it; the store keeps that file's resources until the next load.
            out.extend(load_path(&f));
        }
        Ok(out)
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
