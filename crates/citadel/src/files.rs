//! The CA's file writes, in one place: private directories (0700), files replaced
//! atomically (a temporary file, fsync, rename) and files created only if absent.
//! Callers wrap the `io::Error` in their own error, naming the file.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Creates `dir` and its parents with mode 0700 if missing.
pub(crate) fn private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Replaces `path` with `data` (mode `mode`) through a temporary file in the same
/// directory, synced, then renamed: readers see the old or the new file, never half.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Creates `path` with `data` and mode `mode` only if it does not exist; `false`
/// when it did (another process won the race, or it was there already).
pub(crate) fn create_new(path: &Path, data: &[u8], mode: u32) -> io::Result<bool> {
    let mut f = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    };
    f.write_all(data)?;
    f.sync_all()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn modes_and_atomic_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("a/b");
        private_dir(&keys).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&keys), 0o700);

        let key = keys.join("key.pem");
        assert!(create_new(&key, b"one", 0o600).unwrap());
        assert!(!create_new(&key, b"two", 0o600).unwrap(), "kept");
        assert_eq!(fs::read(&key).unwrap(), b"one");
        assert_eq!(mode(&key), 0o600);

        let cert = keys.join("cert.pem");
        write_atomic(&cert, b"v1", 0o644).unwrap();
        write_atomic(&cert, b"v2", 0o644).unwrap();
        assert_eq!(fs::read(&cert).unwrap(), b"v2");
        assert_eq!(mode(&cert), 0o644);
        let names: Vec<_> = fs::read_dir(&keys)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }
}
