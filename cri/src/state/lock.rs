//! The state-root lock: one agent per state root.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::StateError;

/// Held for the life of `corral serve`; the kernel releases it when the process dies, so a
/// crash never leaves a stale lock.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock file `root/corral.lock` without waiting, and writes our pid into it.
    pub fn acquire(root: &Path) -> Result<StateLock, StateError> {
        let path = root.join("corral.lock");
        let open_err = |source| StateError::OpenLock {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(open_err)?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                return Err(StateError::Locked {
                    root: root.to_path_buf(),
                    owner: if owner.is_empty() { "unknown" } else { owner }.to_string(),
                });
            }
            Err((_, errno)) => return Err(open_err(std::io::Error::from(errno))),
        };
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())?;
            file.sync_all()
        };
        write_pid(&mut lock).map_err(open_err)?;
        Ok(StateLock { _lock: lock, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_state_lock_second_acquire_fails_with_owner() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let err = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another corral"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
