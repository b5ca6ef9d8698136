//! The exit record: how the container's init ended, written once by the monitor.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::Error;

/// How the init ended. Written as JSON to the config's `exit_file` atomically (temp file,
/// fsync, rename, fsync of the directory) before the monitor reports `stopped`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit status; 128 + the signal number when a signal killed it (as containerd
    /// reports it, e.g. 137 for SIGKILL).
    pub exit_code: i32,
    /// The signal that killed the init, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// When the container was started (unix nanoseconds; 0 if it never was).
    pub started_at: i64,
    /// When the monitor saw the init exit (unix nanoseconds).
    pub finished_at: i64,
    /// The kernel's OOM killer killed a process of the container's memory cgroup.
    #[serde(default)]
    pub oom_killed: bool,
}

impl ExitRecord {
    /// The record for an exit status (`signal` = the killing signal, if any).
    pub fn new(
        status: i32,
        signal: Option<i32>,
        started_at: i64,
        finished_at: i64,
        oom_killed: bool,
    ) -> ExitRecord {
        ExitRecord {
            exit_code: match signal {
                Some(signal) => 128 + signal,
                None => status,
            },
            signal,
            started_at,
            finished_at,
            oom_killed,
        }
    }
}

/// Reads an exit record written by a monitor.
pub fn read_exit_record(path: &Path) -> Result<ExitRecord, Error> {
    let failed = |message: String| Error::ReadExitRecord {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read(path).map_err(|err| failed(err.to_string()))?;
    serde_json::from_slice(&text).map_err(|err| failed(err.to_string()))
}

/// Writes an exit record atomically.
pub fn write_exit_record(path: &Path, record: &ExitRecord) -> Result<(), Error> {
    let text = serde_json::to_vec(record).map_err(|err| Error::ReadExitRecord {
        path: path.to_path_buf(),
        message: err.to_string(),
    })?;
    write_atomic(path, &text)
}

/// Writes `data` to `path` so that a reader sees the old file or the whole new one, even
/// after a crash: a temp file in the same directory, fsync, rename, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(path.file_name().unwrap_or_default());
    temp_name.push(".tmp");
    let temp = dir.join(temp_name);
    let io = |op: &'static str, at: &Path| {
        let at = at.to_path_buf();
        move |source| Error::Io {
            op,
            path: at,
            source,
        }
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&temp)
        .map_err(io("create", &temp))?;
    let written = file
        .write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(io("write", &temp))
        .and_then(|()| std::fs::rename(&temp, path).map_err(io("rename", &temp)));
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(err);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync", dir))
}

/// Now, in unix nanoseconds.
pub fn unix_nanos_now() -> i64 {
    unix_nanos(SystemTime::now())
}

/// A time in unix nanoseconds (0 before 1970, saturating in 2262).
pub fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exit_record_code_from_signal() {
        let killed = ExitRecord::new(0, Some(15), 1, 2, false);
        assert_eq!((killed.exit_code, killed.signal), (143, Some(15)));
        let exited = ExitRecord::new(3, None, 1, 2, false);
        assert_eq!((exited.exit_code, exited.signal), (3, None));
    }

    #[test]
    fn test_exit_record_write_read_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        let record = ExitRecord::new(0, Some(9), 10, 20, true);
        write_exit_record(&path, &record).unwrap();
        assert_eq!(read_exit_record(&path).unwrap(), record);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["exit.json"], "no temp file is left");
    }

    #[test]
    fn test_exit_record_replaces_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        std::fs::write(
            &path,
            "garbage that is longer than the record itself ........",
        )
        .unwrap();
        let record = ExitRecord::new(1, None, 0, 5, false);
        write_exit_record(&path, &record).unwrap();
        assert_eq!(read_exit_record(&path).unwrap(), record);
    }

    #[test]
    fn test_read_exit_record_errors_name_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        let err = read_exit_record(&path).unwrap_err().to_string();
        assert!(err.contains("exit.json"), "{err}");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            read_exit_record(&path),
            Err(Error::ReadExitRecord { .. })
        ));
    }

    #[test]
    fn test_unix_nanos() {
        assert_eq!(unix_nanos(UNIX_EPOCH), 0);
        let t = UNIX_EPOCH + std::time::Duration::new(2, 5);
        assert_eq!(unix_nanos(t), 2_000_000_005);
        assert!(unix_nanos_now() > 1_600_000_000_000_000_000);
    }
}
