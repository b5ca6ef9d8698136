use std::path::PathBuf;

/// Errors of the pod sandbox crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[pod_sandbox]` section of the config file is invalid.
    #[error("invalid pod sandbox config: {0}")]
    InvalidConfig(String),
    /// A request value that cannot be used (sysctl, hostname, DNS option, cgroup parent).
    #[error("{0}")]
    InvalidArgument(String),
    /// A system call failed.
    #[error("{op} {path}: {source}")]
    Sys {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The thread that creates namespaces failed or died.
    #[error("namespace thread: {0}")]
    Thread(String),
}

impl Error {
    pub(crate) fn sys(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: impl Into<std::io::Error>,
    ) -> Error {
        Error::Sys {
            op,
            path: path.into(),
            source: source.into(),
        }
    }
}
