use std::io;
use std::path::PathBuf;

/// Errors of the metrics crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[metrics]` config holds a value that cannot be used.
    #[error("invalid metrics config: {0}")]
    InvalidConfig(String),
    /// A stats file (cgroup file, `/proc` file) could not be read.
    #[error("read {path}: {source}")]
    ReadStat { path: PathBuf, source: io::Error },
    /// A stats file holds something that is not the expected value.
    #[error("parse {path}: {reason}")]
    ParseStat { path: PathBuf, reason: String },
    /// A directory or entry could not be read while measuring disk usage.
    #[error("measure disk usage of {path}: {source}")]
    Walk { path: PathBuf, source: io::Error },
    /// The disk usage cache has no path registered under this id.
    #[error("no path registered for {id:?}")]
    NotRegistered { id: String },
    /// A helper thread could not be started.
    #[error("start {what} thread: {source}")]
    SpawnThread {
        what: &'static str,
        source: io::Error,
    },
    /// A helper thread panicked before it returned its result.
    #[error("{what} thread panicked")]
    ThreadPanicked { what: &'static str },
    /// A network namespace file could not be opened.
    #[error("open network namespace {path}: {source}")]
    OpenNetns { path: PathBuf, source: io::Error },
    /// Joining a network namespace failed.
    #[error("enter network namespace {path}: {source}")]
    Setns {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    /// A netlink socket operation failed.
    #[error("netlink {op}: {source}")]
    Netlink {
        op: &'static str,
        source: nix::errno::Errno,
    },
    /// The kernel answered a netlink request with an error.
    #[error("netlink {request} refused: {source}")]
    NetlinkRefused {
        request: &'static str,
        source: io::Error,
    },
    /// A netlink reply is malformed (short, bad lengths, truncated).
    #[error("malformed netlink reply: {reason}")]
    NetlinkMalformed { reason: String },
}
