use std::path::{Path, PathBuf};

/// Errors of the runtime crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration asks for something this build cannot do.
    #[error("invalid runtime config: {0}")]
    InvalidConfig(String),
    /// A request value that cannot be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// A filesystem or system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The CRI log file could not be opened.
    #[error("open container log {path}: {source}")]
    OpenLog {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A record could not be written to the CRI log file.
    #[error("write container log {path}: {source}")]
    WriteLog {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The monitor config file could not be read or parsed.
    #[error("read monitor config {path}: {message}")]
    ReadMonitorConfig { path: PathBuf, message: String },
    /// The monitor config holds values the monitor cannot use.
    #[error("invalid monitor config: {0}")]
    InvalidMonitorConfig(String),
    /// The monitor binary could not be started.
    #[error("start monitor {binary}: {source}")]
    SpawnMonitor {
        binary: PathBuf,
        source: std::io::Error,
    },
    /// The monitor started but reported that it could not create the container (it has
    /// cleaned up what it made).
    #[error("monitor: {message}")]
    MonitorCreate { message: String },
    /// The monitor did not report within the timeout. It removes the container by itself
    /// when it finds nobody reading its report; if it reported just as the agent gave up,
    /// the container exists and a `delete` on its socket removes it.
    #[error("monitor did not report within {timeout:?}")]
    MonitorTimeout { timeout: std::time::Duration },
    /// Nothing answers on the monitor socket: the monitor is gone (or never started).
    #[error("monitor socket {socket}: {source}")]
    MonitorUnavailable {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// Talking to the monitor failed halfway, or its answer made no sense.
    #[error("monitor socket {socket}: {message}")]
    MonitorProtocol { socket: PathBuf, message: String },
    /// The container is in the wrong state for the request (e.g. delete while running).
    #[error("{op}: {message}")]
    ContainerState { op: &'static str, message: String },
    /// The monitor tried the request and failed.
    #[error("{op}: {message}")]
    MonitorRequest { op: &'static str, message: String },
    /// youki's libcontainer failed (with the error chain and its last logged error).
    #[error("{op} container: {message}")]
    Libcontainer { op: &'static str, message: String },
    /// An exit record could not be read or parsed.
    #[error("read exit record {path}: {message}")]
    ReadExitRecord { path: PathBuf, message: String },
    /// A CRI request asks for a feature Corral does not implement (yet): user namespaces,
    /// image volumes, CDI devices, a TARGET PID namespace, ...
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A seccomp profile (shipped default or localhost) could not be read, parsed or used.
    #[error("seccomp profile {profile}: {message}")]
    SeccompProfile { profile: String, message: String },
    /// The exec helper (`corral-monitor exec`) could not be started.
    #[error("start exec helper {binary}: {source}")]
    SpawnExec {
        binary: PathBuf,
        source: std::io::Error,
    },
    /// The exec helper ended without a usable report.
    #[error("exec helper: {message}")]
    ExecHelper { message: String },
    /// The command could not be started in the container (e.g. not found there), or a
    /// streaming exec was stopped.
    #[error("exec: {message}")]
    Exec { message: String },
    /// The command was not found in the container (streaming execs tell it apart; the
    /// message names it).
    #[error("exec: {message}")]
    ExecCommandNotFound { message: String },
    /// A streaming exec's pipes to its helper failed (`op` names the step).
    #[error("exec stream: {op}: {source}")]
    ExecStream {
        op: &'static str,
        source: std::io::Error,
    },
    /// The container's live cgroup could not be changed.
    #[error("update cgroup {cgroup}: {message}")]
    UpdateCgroup { cgroup: String, message: String },
    /// The command ran past the exec's timeout and was killed.
    #[error("exec timed out after {timeout:?}")]
    ExecTimeout { timeout: std::time::Duration },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
