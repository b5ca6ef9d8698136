//! The agent's side: start a monitor and talk to it. Everything here blocks (with
//! timeouts); call it from `spawn_blocking`.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::protocol::{ContainerState, ErrorKind, MAX_LINE, ReadyReport, Request, Response};
use super::protocol::{decode, encode};
use crate::Error;

/// How long [`spawn_monitor`] waits for the monitor's report.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request may take (a `start` runs poststart hooks).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The monitor's own log (its stderr), next to its config file.
pub const MONITOR_LOG: &str = "monitor.log";

/// A monitor that created its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The daemonized monitor's pid.
    pub monitor_pid: i32,
    /// The container init's pid.
    pub container_pid: i32,
}

/// Starts `binary` (the `corral-monitor`) for the config at `config_path` and waits until it
/// created the container ([`SPAWN_TIMEOUT`]). The monitor's stderr goes to `monitor.log`
/// next to the config. On failure the monitor has removed what it made before reporting.
pub fn spawn_monitor(binary: &Path, config_path: &Path) -> Result<Started, Error> {
    spawn_monitor_with_timeout(binary, config_path, SPAWN_TIMEOUT)
}

/// [`spawn_monitor`] with a chosen timeout. After a timeout the monitor finishes by itself:
/// when it finds the report pipe closed it removes the container and exits.
pub fn spawn_monitor_with_timeout(
    binary: &Path,
    config_path: &Path,
    timeout: Duration,
) -> Result<Started, Error> {
    let log_path = config_path.with_file_name(MONITOR_LOG);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|err| Error::io("open", &log_path, err))?;
    let spawn_error = |source| Error::SpawnMonitor {
        binary: binary.to_path_buf(),
        source,
    };
    // std spawns with fork+exec (or posix_spawn/vfork): no Rust code runs in the child.
    let mut child = Command::new(binary)
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(spawn_error)?;
    let report = match child.stdout.take() {
        Some(mut stdout) => read_report(&mut stdout, timeout),
        None => Err(io::Error::other("no stdout pipe")),
    };
    // The first monitor process exits right after its fork; collect it.
    let status = reap_launcher(&mut child);
    let line = match report {
        Ok(Some(line)) => line,
        Ok(None) => {
            return Err(Error::MonitorCreate {
                message: format!(
                    "monitor exited without a report ({status}); see {}",
                    log_path.display()
                ),
            });
        }
        Err(err) if err.kind() == io::ErrorKind::TimedOut => {
            return Err(Error::MonitorTimeout { timeout });
        }
        Err(err) => return Err(spawn_error(err)),
    };
    let report: ReadyReport = decode(&line).map_err(|err| Error::MonitorCreate {
        message: format!("unreadable monitor report: {err}"),
    })?;
    match report {
        ReadyReport {
            ok: true,
            pid: Some(container_pid),
            monitor_pid: Some(monitor_pid),
            ..
        } => Ok(Started {
            monitor_pid,
            container_pid,
        }),
        ReadyReport { ok: true, .. } => Err(Error::MonitorCreate {
            message: "monitor report without pids".to_string(),
        }),
        ReadyReport { error, .. } => {
            let mut message = error.unwrap_or_else(|| "unknown error".to_string());
            // The container init is a fork of the monitor: what it logged before failing
            // (the detail behind "failed to prepare rootfs") is only in the log file.
            if let Some(detail) = init_errors(&log_path) {
                if !message.contains(&detail) {
                    message = format!("{message} [init: {detail}]");
                }
            }
            Err(Error::MonitorCreate { message })
        }
    }
}

/// The error lines libcontainer's container init wrote to the monitor log (the last ones,
/// without timestamps, bounded).
fn init_errors(log_path: &Path) -> Option<String> {
    const TAIL: u64 = 16 * 1024;
    let mut file = std::fs::File::open(log_path).ok()?;
    let size = file.metadata().ok()?.len();
    io::Seek::seek(&mut file, io::SeekFrom::Start(size.saturating_sub(TAIL))).ok()?;
    let mut text = String::new();
    file.take(TAIL).read_to_string(&mut text).ok()?;
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_once(" ERROR ").map(|(_, rest)| rest))
        .filter(|rest| rest.starts_with("libcontainer") && rest.contains('='))
        .collect();
    let mut detail = lines.join("; ");
    if detail.len() > 1000 {
        let mut end = 1000;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
    (!detail.is_empty()).then_some(detail)
}

/// Reads the report line; `Ok(None)` at EOF without one.
fn read_report(stdout: &mut ChildStdout, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + timeout;
    let mut line = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::POLLIN)];
        let wait = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, wait) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(err) => return Err(err.into()),
        }
        match stdout.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                line.extend_from_slice(&chunk[..n]);
                if let Some(end) = line.iter().position(|&b| b == b'\n') {
                    line.truncate(end);
                    return Ok(Some(line));
                }
                if line.len() > MAX_LINE {
                    return Err(io::Error::other("monitor report too long"));
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

/// Waits for the exec'd monitor process, which only forks and exits; kills it if it
/// lingers (a wrong binary). Returns its status for error messages.
fn reap_launcher(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                return child
                    .wait()
                    .map_or_else(|e| e.to_string(), |s| s.to_string());
            }
            Err(err) => return err.to_string(),
        }
    }
}

/// Connects to the monitor and sends `request`; reads and writes on the returned connection
/// time out after `timeout`.
pub(super) fn send(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<UnixStream, Error> {
    let mut stream = UnixStream::connect(socket).map_err(|source| Error::MonitorUnavailable {
        socket: socket.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| stream.write_all(&encode(request)))
        .map_err(|err| Error::MonitorProtocol {
            socket: socket.to_path_buf(),
            message: format!("send {}: {err}", request.op()),
        })?;
    Ok(stream)
}

/// Sends one request and reads its answer (one connection per request).
pub fn request(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, Error> {
    let broken = |message: String| Error::MonitorProtocol {
        socket: socket.to_path_buf(),
        message,
    };
    let mut stream = send(socket, request, timeout)?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.contains(&b'\n') || answer.len() > MAX_LINE {
                    break;
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(broken(format!(
                    "no answer to {} within {timeout:?}",
                    request.op()
                )));
            }
            Err(err) => return Err(broken(format!("read answer to {}: {err}", request.op()))),
        }
    }
    let end = answer.iter().position(|&b| b == b'\n').ok_or_else(|| {
        broken(format!(
            "connection closed before the answer to {}",
            request.op()
        ))
    })?;
    decode(&answer[..end]).map_err(|err| broken(format!("bad answer to {}: {err}", request.op())))
}

/// A request whose failure answer becomes a typed error.
fn call(socket: &Path, request: Request) -> Result<Response, Error> {
    let response = self::request(socket, &request, REQUEST_TIMEOUT)?;
    if response.ok {
        return Ok(response);
    }
    Err(failure(request.op(), response))
}

/// The typed error of a failure answer to `op`.
pub(super) fn failure(op: &'static str, response: Response) -> Error {
    let message = response.error.unwrap_or_default();
    match response.kind {
        Some(ErrorKind::State) => Error::ContainerState { op, message },
        Some(ErrorKind::Invalid) => Error::InvalidArgument(format!("{op}: {message}")),
        Some(ErrorKind::Failed) | None => Error::MonitorRequest { op, message },
    }
}

/// Starts the created container; returns once its process runs.
pub fn start(socket: &Path) -> Result<(), Error> {
    call(socket, Request::Start).map(drop)
}

/// Sends `signal` to the init, or with `all` to every process of the container's cgroup.
/// Signalling a stopped container's init succeeds and does nothing.
pub fn signal(socket: &Path, signal: i32, all: bool) -> Result<(), Error> {
    call(socket, Request::Signal { signal, all }).map(drop)
}

/// Makes the monitor reopen the CRI log file (after kubelet renamed it).
pub fn reopen_log(socket: &Path) -> Result<(), Error> {
    call(socket, Request::ReopenLog).map(drop)
}

/// The container's state as the monitor knows it.
pub fn state(socket: &Path) -> Result<ContainerState, Error> {
    call(socket, Request::State)?
        .state
        .ok_or_else(|| Error::MonitorProtocol {
            socket: socket.to_path_buf(),
            message: "state answer without a state".to_string(),
        })
}

/// Deletes a stopped or never-started container; the monitor exits after answering.
/// A running container is an [`Error::ContainerState`]; no monitor is
/// [`Error::MonitorUnavailable`] (the caller decides whether that means "already deleted").
pub fn delete(socket: &Path) -> Result<(), Error> {
    call(socket, Request::Delete).map(drop)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;

    /// A fake monitor answering each connection with the next canned line.
    fn fake_monitor(answers: Vec<&'static str>) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("m.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            for answer in answers {
                let (mut stream, _) = listener.accept().unwrap();
                let mut got = Vec::new();
                let mut byte = [0u8; 1];
                while stream.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
                    got.push(byte[0]);
                }
                decode::<Request>(&got).unwrap();
                stream.write_all(answer.as_bytes()).unwrap();
            }
        });
        (dir, socket)
    }

    #[test]
    fn test_client_maps_answers_to_results() {
        let (_dir, socket) = fake_monitor(vec![
            "{\"ok\":true}\n",
            "{\"ok\":false,\"kind\":\"state\",\"error\":\"cannot delete a running container\"}\n",
            "{\"ok\":false,\"kind\":\"invalid\",\"error\":\"invalid signal 99\"}\n",
            "{\"ok\":false,\"kind\":\"failed\",\"error\":\"boom\"}\n",
            "{\"ok\":true,\"state\":{\"status\":\"running\",\"pid\":5,\"created_at\":1,\"started_at\":2}}\n",
            "garbage\n",
            "",
        ]);
        start(&socket).unwrap();
        assert!(matches!(
            delete(&socket),
            Err(Error::ContainerState { op: "delete", .. })
        ));
        assert!(matches!(
            signal(&socket, 99, false),
            Err(Error::InvalidArgument(_))
        ));
        let err = reopen_log(&socket).unwrap_err();
        assert!(
            matches!(
                err,
                Error::MonitorRequest {
                    op: "reopen_log",
                    ..
                }
            ),
            "{err}"
        );
        let got = state(&socket).unwrap();
        assert_eq!(
            (got.status, got.pid, got.exit),
            (super::super::Status::Running, 5, None)
        );
        assert!(matches!(start(&socket), Err(Error::MonitorProtocol { .. })));
        let err = start(&socket).unwrap_err().to_string();
        assert!(err.contains("closed before the answer"), "{err}");
    }

    #[test]
    fn test_client_no_monitor_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let err = state(&dir.path().join("none.sock")).unwrap_err();
        assert!(matches!(err, Error::MonitorUnavailable { .. }), "{err}");
    }

    #[test]
    fn test_client_request_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("slow.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        let err = request(&socket, &Request::State, Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("no answer"), "{err}");
    }

    #[test]
    fn test_spawn_monitor_reports_silent_exit() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("monitor.json");
        let err = spawn_monitor(Path::new("/bin/true"), &config).unwrap_err();
        assert!(err.to_string().contains("without a report"), "{err}");
    }

    /// A shell script standing in for the monitor: `sh <script>` (the script is the
    /// "config path" argument, so no freshly written file is exec'd: no ETXTBSY).
    fn fake_spawn(script: &str, timeout: Duration) -> Result<Started, Error> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake-monitor.sh");
        std::fs::write(&path, script).unwrap();
        spawn_monitor_with_timeout(Path::new("/bin/sh"), &path, timeout)
    }

    #[test]
    fn test_spawn_monitor_passes_error_report() {
        let err = fake_spawn(
            "echo '{\"ok\":false,\"error\":\"no rootfs\"}'\n",
            SPAWN_TIMEOUT,
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::MonitorCreate { message } if message == "no rootfs"),
            "{err}"
        );
    }

    #[test]
    fn test_spawn_monitor_reads_success_report() {
        let started = fake_spawn(
            "echo '{\"ok\":true,\"pid\":12,\"monitor_pid\":10}'\n",
            SPAWN_TIMEOUT,
        )
        .unwrap();
        assert_eq!(
            started,
            Started {
                monitor_pid: 10,
                container_pid: 12
            }
        );
    }

    #[test]
    fn test_spawn_monitor_times_out() {
        let started = Instant::now();
        let err = fake_spawn("sleep 5\n", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::MonitorTimeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
