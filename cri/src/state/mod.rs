//! Crash-safe state: per-object records written atomically, a recovery pass at start, and
//! the lock that keeps a second agent off the same state root.

mod atomic;
mod lock;
mod store;
mod table;

pub use atomic::{TEMP_SUFFIX, write_atomic};
pub use lock::StateLock;
pub use store::RecordStore;
pub use table::Table;

use std::path::PathBuf;

/// Errors of the state layer.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("create state dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write record {path}: {source}")]
    WriteRecord {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("remove record {path}: {source}")]
    RemoveRecord {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read records in {path}: {source}")]
    ReadRecords {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encode record {id}: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
    #[error("invalid record id {id:?}")]
    InvalidId { id: String },
    #[error("open lock file {path}: {source}")]
    OpenLock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state root {root} is in use by another corral (pid {owner}); stop it first")]
    Locked { root: PathBuf, owner: String },
    #[error("state task failed: {0}")]
    Task(String),
}
