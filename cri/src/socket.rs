//! The CRI unix socket: safe parent directories, stale-socket replacement, mode 0660.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("create socket dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("socket {path} is in use by a running server")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("bind socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A bound listening socket, and what it takes to remove exactly this socket file later.
#[derive(Debug)]
pub struct BoundSocket {
    pub listener: UnixListener,
    pub path: PathBuf,
    inode: (u64, u64),
}

/// Binds `path`: creates missing parent directories with mode 0711, replaces a stale socket
/// (one no live server answers on), never replaces a live socket or a non-socket file, and
/// sets mode 0660. Blocking: call at start-up.
pub fn bind(path: &Path) -> Result<BoundSocket, SocketError> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(parent)
            .map_err(|source| SocketError::CreateDir {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(SocketError::InUse {
                    path: path.to_path_buf(),
                });
            }
            tracing::info!(socket = %path.display(), "replacing stale socket");
            let _ = std::fs::remove_file(path);
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(_) => {}
    }
    let bind_err = |source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let meta = std::fs::metadata(path).map_err(bind_err)?;
    Ok(BoundSocket {
        listener,
        path: path.to_path_buf(),
        inode: (meta.dev(), meta.ino()),
    })
}

impl BoundSocket {
    /// Removes the socket file if it is still the one we bound (another server may have
    /// replaced it meanwhile).
    pub fn remove_file(&self) {
        let ours =
            std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode);
        if ours {
            if let Err(error) = std::fs::remove_file(&self.path) {
                tracing::warn!(socket = %self.path.display(), %error, "could not remove socket");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_bind_creates_parents_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/corral.sock");
        let bound = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let parent_mode = std::fs::metadata(dir.path().join("a/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(parent_mode & 0o777, 0o711);
        bound.remove_file();
        assert!(!path.exists());
    }

    #[test]
    fn test_bind_refuses_live_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.sock");
        let _live = bind(&path).unwrap();
        assert!(matches!(bind(&path), Err(SocketError::InUse { .. })));
    }

    #[test]
    fn test_bind_replaces_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.sock");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists(), "a dropped listener leaves its file");
        bind(&path).unwrap();
    }

    #[test]
    fn test_bind_refuses_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corral.sock");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(bind(&path), Err(SocketError::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
