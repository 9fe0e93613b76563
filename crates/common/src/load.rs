//! Loading resources from files, directories and standard input.
//!
//! Each input is read as a YAML stream (JSON is YAML too); every document becomes a
//! [`Resource`] or a [`DecodeError`], so one bad document never hides the others.
//! Directories are walked recursively in name order, taking `*.yaml`, `*.yml` and
//! `*.json` and skipping hidden entries.

use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use crate::path::Path;
use crate::resource::{DecodeError, Origin, Resource, decode};
use crate::yaml;

/// Largest input file accepted.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// What loading produced: the resources that decoded and the documents that did not.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Resources in input order.
    pub resources: Vec<Resource>,
    /// Problems, each naming its file and line.
    pub errors: Vec<DecodeError>,
}

impl Loaded {
    /// Appends another load's results.
    pub fn extend(&mut self, other: Loaded) {
        self.resources.extend(other.resources);
        self.errors.extend(other.errors);
    }
}

fn file_error(file: &Arc<str>, line: usize, message: String) -> DecodeError {
    DecodeError {
        origin: Origin {
            file: file.clone(),
            line,
        },
        line,
        kind: None,
        api_version: None,
        name: None,
        namespace: None,
        path: Path::empty(),
        message,
    }
}

/// Loads every document of YAML `text`, labelling origins with `file`.
pub fn load_str(text: &str, file: &str) -> Loaded {
    let file: Arc<str> = Arc::from(file);
    let mut out = Loaded::default();
    let docs = match yaml::parse_bounded(text) {
        Ok(d) => d,
        Err(e) => {
            out.errors.push(file_error(
                &file,
                e.line,
                format!("YAML syntax error at column {}: {}", e.column, e.message),
            ));
            return out;
        }
    };
    for doc in docs {
        let Some(root) = doc.root else { continue };
        let origin = Origin {
            file: file.clone(),
            line: doc.line,
        };
        match decode(root, origin) {
            Ok(r) => out.resources.push(r),
            Err(e) => out.errors.push(*e),
        }
    }
    out
}

/// Loads a file, or every YAML/JSON file under a directory; `-` reads standard input.
pub fn load_path(path: &FsPath) -> Loaded {
    if path.as_os_str() == "-" {
        return load_reader(std::io::stdin().lock(), "-");
    }
    let label: Arc<str> = Arc::from(path.display().to_string());
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let mut out = Loaded::default();
            out.errors.push(file_error(
                &label,
                0,
                format!("cannot read: {e}; check the path"),
            ));
            return out;
        }
    };
    if meta.is_dir() {
        let mut out = Loaded::default();
        match config_files(path) {
            Ok(files) => {
                for f in files {
                    out.extend(load_path(&f));
                }
            }
            Err(e) => out
                .errors
                .push(file_error(&label, 0, format!("cannot list directory: {e}"))),
        }
        return out;
    }
    match std::fs::File::open(path) {
        Ok(f) => load_reader(f, &label),
        Err(e) => {
            let mut out = Loaded::default();
            out.errors
                .push(file_error(&label, 0, format!("cannot read: {e}")));
            out
        }
    }
}

/// Loads YAML from a reader, bounded by [`MAX_FILE_BYTES`].
pub fn load_reader(reader: impl Read, label: &str) -> Loaded {
    let mut text = String::new();
    let mut limited = reader.take(MAX_FILE_BYTES + 1);
    if let Err(e) = limited.read_to_string(&mut text) {
        let mut out = Loaded::default();
        out.errors.push(file_error(
            &Arc::from(label),
            0,
            format!("cannot read: {e} (is it UTF-8 text?)"),
        ));
        return out;
    }
    if text.len() as u64 > MAX_FILE_BYTES {
        let mut out = Loaded::default();
        out.errors.push(file_error(
            &Arc::from(label),
            0,
            format!("input is larger than {MAX_FILE_BYTES} bytes; split it into several files"),
        ));
        return out;
    }
    load_str(&text, label)
}

/// The YAML/JSON files under `dir`, recursively, in name order, hidden entries skipped.
pub fn config_files(dir: &FsPath) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for e in entries {
            let name = e.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let p = e.path();
            if e.file_type()?.is_dir() {
                subdirs.push(p);
            } else if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
        // Visit subdirectories in name order after this directory's files.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}
