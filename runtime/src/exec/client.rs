//! The agent's side of an exec: run the helper, read its report. Blocks (bounded by the
//! request's timeout): call it from `spawn_blocking`, never fork the agent for it.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::protocol::{ExecErrorKind, ExecRequest, MAX_HEADER, decode_report};
use crate::Error;

/// How long past the request's timeout the helper may take before the agent stops it
/// (SIGTERM: it kills the command and reports). The helper kills the command itself at the
/// timeout; this covers a helper that is slow to start or stuck.
pub const HELPER_GRACE: Duration = Duration::from_secs(5);
/// After SIGTERM, how long the helper has to finish before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);
/// After SIGKILL, how long its pipes may stay open (a child it left may hold them).
const KILL_GRACE: Duration = Duration::from_secs(1);
/// The most of the helper's own stderr (its log) kept for error messages.
const MAX_HELPER_LOG: usize = 16 * 1024;

/// A finished exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit status; 128 + the signal number if a signal killed it.
    pub exit_code: i32,
    /// What it wrote on stdout, up to the request's `max_output`.
    pub stdout: Vec<u8>,
    /// What it wrote on stderr, up to the request's `max_output`.
    pub stderr: Vec<u8>,
    /// Stdout went past the cap.
    pub stdout_truncated: bool,
    /// Stderr went past the cap.
    pub stderr_truncated: bool,
}

/// Runs `request` through the helper `binary` (`corral-monitor exec ...`) and returns the
/// command's output and exit code.
///
/// Errors: the container is missing or not running: [`Error::ContainerState`]; the command
/// ran past the timeout (it was killed): [`Error::ExecTimeout`]; it could not be started
/// (e.g. not found in the container): [`Error::Exec`]; the helper failed:
/// [`Error::SpawnExec`] or [`Error::ExecHelper`].
pub fn exec_sync(binary: &Path, request: &ExecRequest) -> Result<ExecOutput, Error> {
    run_helper(Command::new(binary), request, HELPER_GRACE)
}

/// [`exec_sync`] with the helper's command (`exec` and the request's arguments are
/// appended) and the grace past the timeout given.
fn run_helper(
    mut command: Command,
    request: &ExecRequest,
    grace: Duration,
) -> Result<ExecOutput, Error> {
    if request.cmd.is_empty() {
        return Err(Error::InvalidArgument("exec needs a command".to_string()));
    }
    let binary = std::path::PathBuf::from(command.get_program());
    // std spawns with posix_spawn or fork+exec: no Rust code runs in the child, so this is
    // safe from a multi-threaded agent.
    let mut child = command
        .arg("exec")
        .args(request.to_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::SpawnExec { binary, source })?;
    let max_report = MAX_HEADER
        .saturating_add(request.max_output)
        .saturating_add(request.max_output);
    let guard = request.timeout.map(|t| Instant::now() + t + grace);
    let read = read_helper(&mut child, guard, max_report);
    let status = child
        .wait()
        .map_or_else(|e| e.to_string(), |s| s.to_string());
    let timed_out = || Error::ExecTimeout {
        timeout: request.timeout.unwrap_or_default(),
    };
    let read = match read {
        Ok(read) => read,
        Err(err) => {
            return Err(Error::ExecHelper {
                message: format!("read report: {err}"),
            });
        }
    };
    let decoded = match decode_report(read.stdout) {
        Ok(decoded) => decoded,
        Err(_) if read.stopped => return Err(timed_out()),
        Err(message) => {
            let log = String::from_utf8_lossy(&read.stderr);
            return Err(Error::ExecHelper {
                message: format!("{message} (helper {status}): {}", log.trim()),
            });
        }
    };
    let report = decoded.report;
    if report.ok {
        return Ok(ExecOutput {
            exit_code: report.exit_code,
            stdout: decoded.stdout,
            stderr: decoded.stderr,
            stdout_truncated: report.stdout_truncated,
            stderr_truncated: report.stderr_truncated,
        });
    }
    let message = report.error.unwrap_or_else(|| "unknown error".to_string());
    Err(match report.kind {
        Some(ExecErrorKind::Timeout) => timed_out(),
        Some(ExecErrorKind::State) => Error::ContainerState {
            op: "exec",
            message,
        },
        Some(ExecErrorKind::Invalid) => Error::InvalidArgument(format!("exec: {message}")),
        Some(ExecErrorKind::Failed) if read.stopped => timed_out(),
        Some(ExecErrorKind::Failed) | None => Error::Exec { message },
        // Only streaming helpers report it.
        Some(ExecErrorKind::NotFound) => Error::ExecCommandNotFound { message },
    })
}

/// The helper's stdout (the report) and stderr (its log), and whether the agent had to stop
/// it.
struct HelperRead {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stopped: bool,
}

/// Reads both pipes until they end. Past `guard` the helper gets SIGTERM, then SIGKILL.
fn read_helper(
    child: &mut Child,
    guard: Option<Instant>,
    max_report: usize,
) -> io::Result<HelperRead> {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut read = HelperRead {
        stdout: Vec::new(),
        stderr: Vec::new(),
        stopped: false,
    };
    let mut deadline = guard;
    // 0: running, 1: sent SIGTERM, 2: sent SIGKILL.
    let mut stage = 0;
    let mut chunk = vec![0u8; 64 * 1024];
    while stdout.is_some() || stderr.is_some() {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            match stage {
                0 => {
                    tracing::warn!(
                        pid = child.id(),
                        "exec helper overran its timeout, stopping it"
                    );
                    signal(child, libc::SIGTERM);
                    deadline = Some(now + TERM_GRACE);
                }
                1 => {
                    tracing::warn!(pid = child.id(), "exec helper ignored SIGTERM, killing it");
                    let _ = child.kill();
                    deadline = Some(now + KILL_GRACE);
                }
                _ => break,
            }
            read.stopped = true;
            stage += 1;
            continue;
        }
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                PollTimeout::try_from(d.saturating_duration_since(now)).unwrap_or(PollTimeout::MAX)
            }
        };
        let (out_ready, err_ready) = {
            let mut fds = Vec::with_capacity(2);
            if let Some(out) = &stdout {
                fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
            }
            if let Some(err) = &stderr {
                fds.push(PollFd::new(err.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(err) => return Err(err.into()),
            }
            let mut ready = fds
                .iter()
                .map(|fd| !fd.revents().unwrap_or(PollFlags::empty()).is_empty());
            let out_ready = stdout.is_some() && ready.next().unwrap_or(false);
            let err_ready = stderr.is_some() && ready.next().unwrap_or(false);
            (out_ready, err_ready)
        };
        if out_ready {
            if let Some(out) = &mut stdout {
                if !read_into(out, &mut chunk, &mut read.stdout, max_report)? {
                    stdout = None;
                }
            }
        }
        if err_ready {
            if let Some(err) = &mut stderr {
                if !read_into(err, &mut chunk, &mut read.stderr, MAX_HELPER_LOG)? {
                    stderr = None;
                }
            }
        }
    }
    if read.stdout.len() > max_report {
        return Err(io::Error::other(format!(
            "report longer than {max_report} bytes"
        )));
    }
    Ok(read)
}

/// One read; `false` at EOF. Keeps at most `max` + one chunk (enough to see the overflow).
fn read_into(
    source: &mut impl Read,
    chunk: &mut [u8],
    into: &mut Vec<u8>,
    max: usize,
) -> io::Result<bool> {
    match source.read(chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            if into.len() <= max {
                into.extend_from_slice(&chunk[..n]);
            }
            Ok(true)
        }
        Err(err) if err.kind() == io::ErrorKind::Interrupted => Ok(true),
        Err(err) => Err(err),
    }
}

fn signal(child: &Child, signal: i32) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // The child is not reaped yet (we wait for it later), so its pid is still its own.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::try_from(signal).ok(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a shell script standing in for the helper: `sh <script> exec <args>` (sh reads
    /// the script: no freshly written file is exec'd, so no ETXTBSY).
    fn fake_with(
        script: &str,
        request: &ExecRequest,
        grace: Duration,
    ) -> Result<ExecOutput, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake-helper.sh");
        std::fs::write(&path, script).unwrap();
        let mut command = Command::new("/bin/sh");
        command.arg(&path);
        run_helper(command, request, grace)
    }

    fn fake(script: &str, request: &ExecRequest) -> Result<ExecOutput, Error> {
        fake_with(script, request, HELPER_GRACE)
    }

    fn request() -> ExecRequest {
        ExecRequest::new("/s", "id", vec!["true".to_string()])
    }

    #[test]
    fn test_exec_sync_reads_report_and_output() {
        let out = fake(
            "printf '{\"ok\":true,\"exit_code\":3,\"stdout\":3,\"stderr\":2}\\nouter'\n",
            &request(),
        )
        .unwrap();
        assert_eq!(out.exit_code, 3);
        assert_eq!(out.stdout, b"out");
        assert_eq!(out.stderr, b"er");
    }

    #[test]
    fn test_exec_sync_maps_failure_kinds() {
        type Check = fn(&Error) -> bool;
        let cases: [(&str, Check); 4] = [
            ("state", |e| {
                matches!(e, Error::ContainerState { op: "exec", .. })
            }),
            ("timeout", |e| matches!(e, Error::ExecTimeout { .. })),
            ("invalid", |e| matches!(e, Error::InvalidArgument(_))),
            ("failed", |e| matches!(e, Error::Exec { .. })),
        ];
        for (kind, check) in cases {
            let script =
                format!("echo '{{\"ok\":false,\"kind\":\"{kind}\",\"error\":\"boom\"}}'\n");
            let err = fake(&script, &request()).unwrap_err();
            assert!(check(&err), "{kind}: {err:?}");
        }
    }

    #[test]
    fn test_exec_sync_helper_without_report_names_its_log() {
        let err = fake("echo 'it broke' >&2; exit 1\n", &request()).unwrap_err();
        assert!(matches!(err, Error::ExecHelper { .. }), "{err:?}");
        assert!(err.to_string().contains("it broke"), "{err}");
    }

    #[test]
    fn test_exec_sync_stops_a_helper_that_overruns() {
        let mut request = request();
        request.timeout = Some(Duration::from_millis(100));
        let started = Instant::now();
        // Ignores SIGTERM (and so does the sleep it becomes): needs the SIGKILL stage.
        let grace = Duration::from_millis(100);
        let err = fake_with("trap '' TERM; exec sleep 30\n", &request, grace).unwrap_err();
        assert!(matches!(err, Error::ExecTimeout { .. }), "{err:?}");
        let took = started.elapsed();
        let least = Duration::from_millis(200) + TERM_GRACE;
        assert!(
            took >= least && took < least + Duration::from_secs(3),
            "{took:?}"
        );
    }

    #[test]
    fn test_exec_sync_rejects_empty_command() {
        let mut request = request();
        request.cmd.clear();
        let err = exec_sync(Path::new("/nonexistent"), &request).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    }
}
