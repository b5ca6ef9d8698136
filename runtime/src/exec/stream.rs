//! The agent's side of a streaming exec (CRI `Exec`, for the streaming server): spawn the
//! helper (`corral-monitor exec --stream ...`) with its pipes, and give the caller async
//! ends of them, resizes, the exit code and a way to stop it. Usable from any task of a
//! Tokio runtime with IO and timers enabled (the agent's: `enable_all`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::protocol::{
    ExecErrorKind, ExecRequest, MAX_HEADER, StreamOptions, TerminalSize, decode_report,
};
use super::stream_helper::{REPORT_FD, RESIZE_FD};
use crate::Error;

/// After SIGTERM (a dropped stream), how long the helper has to kill the command and exit
/// before it gets SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

/// A streaming exec: run `cmd` in the running container `id` (libcontainer state in
/// `<state_root>/<id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamExecRequest {
    /// libcontainer's state root (the monitor config's `state_root`).
    pub state_root: PathBuf,
    /// The container id.
    pub id: String,
    /// The command and its arguments (at least one element).
    pub cmd: Vec<String>,
    /// Give the command a pseudo-terminal (its stderr is then merged into stdout).
    pub tty: bool,
    /// Connect [`ExecStream::stdin`] to the command (else it reads /dev/null, or with a
    /// terminal gets no input).
    pub stdin: bool,
    /// The terminal's size when the command starts.
    pub size: Option<TerminalSize>,
    /// Where the helper appends its own log (e.g. the container's monitor log); without
    /// it the helper's log is discarded (errors still come back from [`ExecStream::wait`]).
    pub log: Option<PathBuf>,
}

impl StreamExecRequest {
    /// A request without terminal, stdin or log.
    pub fn new(state_root: impl Into<PathBuf>, id: &str, cmd: Vec<String>) -> StreamExecRequest {
        StreamExecRequest {
            state_root: state_root.into(),
            id: id.to_string(),
            cmd,
            tty: false,
            stdin: false,
            size: None,
            log: None,
        }
    }

    /// The helper's request.
    pub fn to_request(&self) -> ExecRequest {
        let mut request = ExecRequest::new(&self.state_root, &self.id, self.cmd.clone());
        request.stream = Some(StreamOptions {
            tty: self.tty,
            stdin: self.stdin,
            size: self.size,
            log: self.log.clone(),
        });
        request
    }
}

/// How a streaming exec's command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecExit {
    /// Its exit status; 128 + the signal number if a signal killed it.
    pub exit_code: i32,
}

/// A running streaming exec. Read [`stdout`](Self::stdout) and [`stderr`](Self::stderr)
/// while waiting: without a terminal they are the command's own pipes, and a command
/// whose output nobody reads blocks. They end when the command (and whatever it left
/// holding them) closes them; with a terminal stdout ends with the helper and stderr at
/// once.
///
/// Dropping it without [`wait`](Self::wait) stops the exec: the helper gets SIGTERM (and
/// sees the report pipe close), kills the command and is reaped in the background
/// (SIGKILL if it is still there after two seconds).
#[derive(Debug)]
pub struct ExecStream {
    /// The command's stdin, with [`StreamExecRequest::stdin`]: drop it (or shut it down)
    /// to close it. With a terminal, closing it sends the terminal's EOF character (^D).
    pub stdin: Option<ChildStdin>,
    /// The command's stdout (with a terminal: the terminal's output).
    pub stdout: Option<ChildStdout>,
    /// The command's stderr (with a terminal: empty, ends at once).
    pub stderr: Option<ChildStderr>,
    /// The helper; `None` once reaped.
    child: Option<Child>,
    pid: u32,
    tty: bool,
    /// The resize pipe's write end (nonblocking).
    resize: OwnedFd,
    /// The report pipe's read end; closing it tells the helper the agent is gone.
    report: Option<pipe::Receiver>,
}

/// Resizes the terminal of an [`ExecStream`] from another task ([`ExecStream::resizer`]).
#[derive(Debug)]
pub struct Resizer {
    tty: bool,
    fd: OwnedFd,
}

impl Resizer {
    /// As [`ExecStream::resize`].
    pub fn resize(&self, width: u16, height: u16) -> Result<(), Error> {
        write_resize(self.tty, &self.fd, width, height)
    }
}

fn write_resize(tty: bool, fd: &OwnedFd, width: u16, height: u16) -> Result<(), Error> {
    if !tty {
        return Ok(());
    }
    let line = TerminalSize { width, height }.to_line();
    // Shorter than PIPE_BUF: written whole or not at all.
    match nix::unistd::write(fd, line.as_bytes()) {
        Ok(_) => Ok(()),
        Err(err) => Err(Error::ExecStream {
            op: "resize",
            source: err.into(),
        }),
    }
}

/// Starts a streaming exec: spawns the helper `binary` (`corral-monitor`) for `request`.
/// Must be called from within a Tokio runtime (IO and timers enabled).
///
/// Errors: an empty command: [`Error::InvalidArgument`]; no runtime, or the pipes could
/// not be made: [`Error::ExecStream`]; the helper could not be started:
/// [`Error::SpawnExec`]. Whether the command itself started comes from
/// [`ExecStream::wait`].
pub fn spawn_exec_stream(binary: &Path, request: &StreamExecRequest) -> Result<ExecStream, Error> {
    if request.cmd.is_empty() {
        return Err(Error::InvalidArgument("exec needs a command".to_string()));
    }
    let io_error = |op| move |source| Error::ExecStream { op, source };
    tokio::runtime::Handle::try_current()
        .map_err(|err| io_error("spawn")(std::io::Error::other(err)))?;
    let (resize_read, resize_write) = pipe_cloexec().map_err(io_error("resize pipe"))?;
    let (report_read, report_write) = pipe_cloexec().map_err(io_error("report pipe"))?;
    // The child's ends, above the numbers they are moved to (so that moving one cannot
    // overwrite the other) and close-on-exec in the agent, so that no other process the
    // agent spawns meanwhile inherits them.
    let resize_child = dup_above(&resize_read, REPORT_FD + 1).map_err(io_error("resize pipe"))?;
    let report_child = dup_above(&report_write, REPORT_FD + 1).map_err(io_error("report pipe"))?;
    drop((resize_read, report_write));
    let (resize_raw, report_raw) = (resize_child.as_raw_fd(), report_child.as_raw_fd());

    let mut command = Command::new(binary);
    command
        .arg("exec")
        .args(request.to_request().to_args())
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // libcontainer reads the current directory when it makes a terminal.
        .current_dir("/");
    // SAFETY: the closure runs in the forked child of a multi-threaded process, so it only
    // calls dup2 (async-signal-safe) and reads errno. dup2 gives the helper its fds 3 and 4
    // without close-on-exec; the sources (above 4) close at exec. std offers no other way
    // to place a descriptor at a fixed number in the child.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(resize_raw, RESIZE_FD) < 0 || libc::dup2(report_raw, REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|source| Error::SpawnExec {
        binary: binary.to_path_buf(),
        source,
    })?;
    drop((resize_child, report_child));
    let pid = child.id().unwrap_or_default();
    // From here on a failure drops the stream, which stops the helper.
    let mut stream = ExecStream {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
        child: Some(child),
        pid,
        tty: request.tty,
        resize: resize_write,
        report: None,
    };
    crate::exec::tenant::set_nonblocking(&stream.resize).map_err(io_error("resize pipe"))?;
    stream.report =
        Some(pipe::Receiver::from_owned_fd(report_read).map_err(io_error("report pipe"))?);
    tracing::debug!(pid, id = %request.id, tty = request.tty, "exec stream started");
    Ok(stream)
}

impl ExecStream {
    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Resizes the terminal (a no-op without one). Does not block: fails only if the
    /// helper is gone or has thousands of resizes unread.
    pub fn resize(&self, width: u16, height: u16) -> Result<(), Error> {
        write_resize(self.tty, &self.resize, width, height)
    }

    /// A handle that resizes the terminal while [`wait`](Self::wait) owns the stream
    /// (a duplicate of the resize pipe).
    pub fn resizer(&self) -> Result<Resizer, Error> {
        let fd = self.resize.try_clone().map_err(|err| Error::ExecStream {
            op: "duplicate the resize pipe",
            source: err,
        })?;
        Ok(Resizer { tty: self.tty, fd })
    }

    /// Stops the exec: SIGTERM to the helper, which kills the command (its whole session)
    /// and reports; [`wait`](Self::wait) then returns [`Error::Exec`], or the exit code if
    /// the command had already exited.
    pub fn kill(&self) -> Result<(), Error> {
        if self.child.is_none() {
            return Ok(());
        }
        signal_helper(self.pid, Signal::SIGTERM).map_err(|err| Error::ExecStream {
            op: "signal the helper",
            source: err.into(),
        })
    }

    /// Waits for the command's end and the helper's report; reaps the helper.
    ///
    /// Errors: the container is missing or not running: [`Error::ContainerState`]; the
    /// command is not in the container: [`Error::ExecCommandNotFound`]; it could not be
    /// started, or the exec was stopped: [`Error::Exec`]; the helper ended without a
    /// report: [`Error::ExecHelper`].
    pub async fn wait(mut self) -> Result<ExecExit, Error> {
        let read = match self.report.as_mut() {
            Some(report) => read_report(report).await,
            None => Ok(Vec::new()),
        };
        let status = match self.child.as_mut() {
            Some(child) => child.wait().await,
            None => Err(std::io::Error::other("the helper was reaped already")),
        };
        self.child = None;
        self.report = None;
        let status = status.map_err(|source| Error::ExecStream {
            op: "wait for the helper",
            source,
        })?;
        let line = read.map_err(|source| Error::ExecStream {
            op: "read the report",
            source,
        })?;
        report_result(line, status)
    }
}

impl Drop for ExecStream {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The helper kills the command when the report pipe closes or on SIGTERM.
        self.report = None;
        let _ = signal_helper(self.pid, Signal::SIGTERM);
        let pid = self.pid;
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if tokio::time::timeout(TERM_GRACE, child.wait())
                        .await
                        .is_err()
                    {
                        tracing::warn!(pid, "exec helper ignored SIGTERM, killing it");
                        let _ = child.start_kill();
                        let _ = child.wait().await;
                    }
                });
            }
            // Tokio reaps dropped children on its own when it next runs.
            Err(_) => drop(child),
        }
    }
}

/// Signals the helper, not reaped yet (so its pid is still its own).
fn signal_helper(pid: u32, signal: Signal) -> nix::Result<()> {
    // Never 0 (kill(0) would signal the agent's own process group).
    let Ok(pid @ 1..) = i32::try_from(pid) else {
        return Ok(());
    };
    match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(err) => Err(err),
    }
}

fn pipe_cloexec() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

/// A close-on-exec duplicate of `fd` numbered at least `min`.
fn dup_above(fd: &OwnedFd, min: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a live descriptor returns a new one or -1.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just made and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The report line (up to its newline), or what came before EOF.
async fn read_report(report: &mut pipe::Receiver) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = report.read(&mut chunk).await?;
        if n == 0 {
            return Ok(line);
        }
        line.extend_from_slice(&chunk[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end + 1);
            return Ok(line);
        }
        if line.len() > MAX_HEADER {
            return Err(std::io::Error::other(format!(
                "report longer than {MAX_HEADER} bytes"
            )));
        }
    }
}

/// The exec's result from the report line and the helper's exit status.
fn report_result(line: Vec<u8>, status: ExitStatus) -> Result<ExecExit, Error> {
    let report = match decode_report(line) {
        Ok(decoded) => decoded.report,
        Err(message) => {
            let status = match status.signal() {
                Some(signal) => format!("killed by signal {signal}"),
                None => format!("exit status {}", status.code().unwrap_or(-1)),
            };
            return Err(Error::ExecHelper {
                message: format!("{message} (helper {status})"),
            });
        }
    };
    if report.ok {
        return Ok(ExecExit {
            exit_code: report.exit_code,
        });
    }
    let message = report.error.unwrap_or_else(|| "unknown error".to_string());
    Err(match report.kind {
        Some(ExecErrorKind::State) => Error::ContainerState {
            op: "exec",
            message,
        },
        Some(ExecErrorKind::Invalid) => Error::InvalidArgument(format!("exec: {message}")),
        Some(ExecErrorKind::NotFound) => Error::ExecCommandNotFound { message },
        // Streaming execs have no timeout.
        Some(ExecErrorKind::Timeout | ExecErrorKind::Failed) | None => Error::Exec { message },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn test_stream_request_args() {
        let mut request = StreamExecRequest::new("/s", "id", vec!["sh".to_string()]);
        request.tty = true;
        request.stdin = true;
        request.size = Some(TerminalSize {
            width: 100,
            height: 40,
        });
        let args: Vec<String> = request
            .to_request()
            .to_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--stream", "--tty", "--stdin", "--size", "100x40", "/s", "id", "--", "sh"
            ]
        );
        let parsed = ExecRequest::parse(&request.to_request().to_args()).unwrap();
        assert_eq!(parsed, request.to_request());
    }

    #[test]
    fn test_report_result_decodes_exit_and_failures() {
        let ok = b"{\"ok\":true,\"exit_code\":3,\"stdout\":0,\"stderr\":0}\n".to_vec();
        assert_eq!(
            report_result(ok, exited(0)).unwrap(),
            ExecExit { exit_code: 3 }
        );
        type Check = fn(&Error) -> bool;
        let cases: [(&str, Check); 4] = [
            ("state", |e| {
                matches!(e, Error::ContainerState { op: "exec", .. })
            }),
            ("invalid", |e| matches!(e, Error::InvalidArgument(_))),
            ("not_found", |e| {
                matches!(e, Error::ExecCommandNotFound { .. })
            }),
            ("failed", |e| matches!(e, Error::Exec { .. })),
        ];
        for (kind, check) in cases {
            let line = format!("{{\"ok\":false,\"kind\":\"{kind}\",\"error\":\"boom\"}}\n");
            let err = report_result(line.into_bytes(), exited(0)).unwrap_err();
            assert!(check(&err), "{kind}: {err:?}");
            assert!(err.to_string().contains("boom"), "{err}");
        }
        let err = report_result(Vec::new(), ExitStatus::from_raw(9)).unwrap_err();
        assert!(matches!(err, Error::ExecHelper { .. }), "{err:?}");
        assert!(err.to_string().contains("signal 9"), "{err}");
        let err = report_result(b"{\"ok\":tr".to_vec(), exited(2)).unwrap_err();
        assert!(err.to_string().contains("exit status 2"), "{err}");
    }

    /// A shell script stands in for the helper: the fd contract (3 and 4), the report.
    #[tokio::test]
    async fn test_exec_stream_with_a_fake_helper() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("fake-helper.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             read size <&3\n\
             echo \"out $size\"; echo err >&2\n\
             echo '{\"ok\":true,\"exit_code\":7}' >&4\n",
        )
        .unwrap();
        let mut permissions = std::fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&script, permissions).unwrap();
        // Copy so that no writer holds the file open (ETXTBSY).
        let binary = dir.path().join("fake-helper");
        std::fs::copy(&script, &binary).unwrap();

        let mut request = StreamExecRequest::new("/s", "id", vec!["true".to_string()]);
        request.tty = true;
        let mut stream = spawn_exec_stream(&binary, &request).unwrap();
        assert!(stream.stdin.is_none());
        stream.resize(120, 50).unwrap();
        let mut stdout = String::new();
        let mut stderr = String::new();
        let mut out = stream.stdout.take().unwrap();
        let mut err = stream.stderr.take().unwrap();
        out.read_to_string(&mut stdout).await.unwrap();
        err.read_to_string(&mut stderr).await.unwrap();
        assert_eq!(
            (stdout.as_str(), stderr.as_str()),
            ("out 120 50\n", "err\n")
        );
        assert_eq!(stream.wait().await.unwrap(), ExecExit { exit_code: 7 });
    }

    #[tokio::test]
    async fn test_exec_stream_errors() {
        let request = StreamExecRequest::new("/s", "id", Vec::new());
        let err = spawn_exec_stream(Path::new("/bin/true"), &request).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        let request = StreamExecRequest::new("/s", "id", vec!["true".to_string()]);
        let err = spawn_exec_stream(Path::new("/nonexistent"), &request).unwrap_err();
        assert!(matches!(err, Error::SpawnExec { .. }), "{err:?}");
        // A helper that exits without a report.
        let stream = spawn_exec_stream(Path::new("/bin/true"), &request).unwrap();
        let err = stream.wait().await.unwrap_err();
        assert!(matches!(err, Error::ExecHelper { .. }), "{err:?}");
    }
}
