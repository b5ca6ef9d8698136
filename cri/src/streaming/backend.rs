//! The seam between the streaming server and the runtime: what a session asks of it.
//!
//! The server speaks the protocols (SPDY and WebSocket hand the same types) and calls
//! a [`StreamingBackend`] with plain byte streams. A backend built on a helper process maps
//! them one to one: copy `stdin` into the process's stdin pipe (and close the pipe at the end
//! of `stdin`), copy its stdout and stderr pipes into `stdout` and `stderr`, call its resize
//! method for each [`TerminalSize`] from `resize`, and resolve with its exit code.

use std::future::Future;
use std::io;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// What a backend call returns.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// What the client sends (its stdin); at its end, `read` returns 0.
pub type RemoteReader = Box<dyn AsyncRead + Send + Unpin>;
/// Where output for the client goes (its stdout or stderr). Dropping it (or `shutdown`) ends
/// the stream: the client reads end of file once it has read everything before.
pub type RemoteWriter = Box<dyn AsyncWrite + Send + Unpin>;
/// Both directions of one forwarded connection.
pub type DuplexIo = Box<dyn AsyncDuplex + Send + Unpin>;

/// A byte stream both ways (what [`DuplexIo`] boxes).
pub trait AsyncDuplex: AsyncRead + AsyncWrite {}

impl<T: AsyncRead + AsyncWrite + ?Sized> AsyncDuplex for T {}

/// Runs what the streaming sessions ask for. Implementations must be cancel-safe in one sense:
/// when the client goes away, the session times out or the server shuts down, the future is
/// dropped. Whatever it started must then be cleaned up on drop (a helper process spawned
/// with `kill_on_drop`, for example), not left running forever.
pub trait StreamingBackend: Send + Sync + 'static {
    /// Runs `target.cmd` in the container with `io` and resolves with its exit status once the
    /// command has exited and its output has been written out.
    fn exec(&self, target: ExecTarget, io: RemoteIo) -> BackendFuture<'_, ExitStatus>;

    /// Connects `io` to the container's own streams (its main process) and resolves when the
    /// attachment ends: the container's output ended, or the client's stdin did and the
    /// container has no more to say.
    fn attach(&self, target: AttachTarget, io: RemoteIo) -> BackendFuture<'_, ()>;

    /// Connects `stream` to `port` on the pod sandbox's loopback (inside its network
    /// namespace) and copies both ways until both directions have ended.
    fn port_forward<'a>(
        &'a self,
        sandbox_id: &'a str,
        port: u16,
        stream: DuplexIo,
    ) -> BackendFuture<'a, ()>;
}

/// A command to run in a container (CRI `ExecRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    pub container_id: String,
    pub cmd: Vec<String>,
    /// Run the command on a terminal: stdout carries the terminal's output (stderr merged), and
    /// resizes arrive on [`RemoteIo::resize`].
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A container to attach to (CRI `AttachRequest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachTarget {
    pub container_id: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A pod sandbox to forward ports of (CRI `PortForwardRequest`). The ports of the request are
/// informational: as in kubelet's streaming server, a SPDY client names the port of each
/// forwarded connection itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardTarget {
    pub sandbox_id: String,
    pub ports: Vec<i32>,
}

impl From<k8s_cri::v1::ExecRequest> for ExecTarget {
    fn from(request: k8s_cri::v1::ExecRequest) -> ExecTarget {
        ExecTarget {
            container_id: request.container_id,
            cmd: request.cmd,
            tty: request.tty,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        }
    }
}

impl From<k8s_cri::v1::AttachRequest> for AttachTarget {
    fn from(request: k8s_cri::v1::AttachRequest) -> AttachTarget {
        AttachTarget {
            container_id: request.container_id,
            tty: request.tty,
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: request.stderr,
        }
    }
}

impl From<k8s_cri::v1::PortForwardRequest> for PortForwardTarget {
    fn from(request: k8s_cri::v1::PortForwardRequest) -> PortForwardTarget {
        PortForwardTarget {
            sandbox_id: request.pod_sandbox_id,
            ports: request.port,
        }
    }
}

/// The client's streams for an exec or attach: each is present when the request asked for it
/// and the client opened it. With a tty there is no `stderr` (the terminal merges it into
/// `stdout`); `resize` is present with a tty when the protocol carries resizes (v3 and up).
pub struct RemoteIo {
    pub stdin: Option<RemoteReader>,
    pub stdout: Option<RemoteWriter>,
    pub stderr: Option<RemoteWriter>,
    /// Terminal sizes the client sends, in order; ends when the client stops sending them.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

impl std::fmt::Debug for RemoteIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteIo")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("resize", &self.resize.is_some())
            .finish()
    }
}

/// A terminal size, as the resize stream carries it: `{"Width":80,"Height":24}`. Clients may
/// send zeros (containerd skips sizes with a zero side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How an exec'd command ended: its exit code. A command killed by signal N should report
/// 128 + N, as shells and runtimes do; codes outside 0-255 reach the client as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus(pub i32);

impl ExitStatus {
    /// Exit code 0.
    pub const SUCCESS: ExitStatus = ExitStatus(0);

    /// The exit code.
    pub fn code(self) -> i32 {
        self.0
    }

    /// Whether the code is 0.
    pub fn success(self) -> bool {
        self.0 == 0
    }
}

/// Why a backend could not do what a session asked. The message (with its sources) is what
/// the client reads on the error stream.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("container {container_id} not found")]
    ContainerNotFound { container_id: String },
    #[error("container {container_id} is not running")]
    ContainerNotRunning { container_id: String },
    #[error("pod sandbox {sandbox_id} not found")]
    SandboxNotFound { sandbox_id: String },
    #[error("pod sandbox {sandbox_id} is not ready")]
    SandboxNotReady { sandbox_id: String },
    #[error("{what} is not supported")]
    Unsupported { what: String },
    /// An I/O step failed: `op` says which (for example "connect to port 8080").
    #[error("{op}")]
    Io {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// `error` and its sources, joined by ": " (what the client is shown).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
