//! Atomic file replacement: write a temp file, fsync it, rename it over the target, fsync
//! the directory. A crash leaves either the old file, the new file, or a stray temp file
//! that the recovery pass removes; never a half-written record under its real name.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Every temp file the state layer writes ends with this; recovery removes them.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Replaces `dir/name` with `bytes` atomically and durably. Blocking: call it from a
/// blocking thread.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}{TEMP_SUFFIX}"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, &target)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

/// Removes `dir/name` durably; a missing file is not an error.
pub fn remove_durably(dir: &Path, name: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Ok(()) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_write_atomic_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "a.json", b"one").unwrap();
        write_atomic(dir.path(), "a.json", b"two").unwrap();
        assert_eq!(std::fs::read(dir.path().join("a.json")).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file is left behind");
    }

    #[test]
    fn test_write_atomic_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_atomic(&dir.path().join("absent"), "a.json", b"x").is_err());
    }

    #[test]
    fn test_remove_durably_missing_is_ok() {
        let dir = tempfile::tempdir().unwrap();
        remove_durably(dir.path(), "absent.json").unwrap();
    }
}
