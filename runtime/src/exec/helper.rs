//! The exec helper process (`corral-monitor exec ...`): starts the command in the running
//! container with libcontainer's tenant builder, captures its output, waits for it (or kills
//! it at the deadline) and writes the report on stdout.
//!
//! ```text
//!  agent --spawn--> helper --libcontainer--> intermediate --clone(CLONE_PARENT)--> command
//!                     |                      (exits)        joins namespaces, cgroup, user,
//!                     |                                     caps, seccomp (executor.rs); execvp
//!                     '-- poll: stdout/stderr pipes, command pidfd, SIGTERM/SIGINT/SIGHUP
//!                         -> report on stdout, exit 0
//! ```
//!
//! The command is the helper's child: the helper reaps it and reports its real exit status.
//! It leads its own session and process group (libcontainer's init calls `setsid`), so on
//! timeout, or when the agent stops the helper, the whole group gets SIGKILL.

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::protocol::{ExecErrorKind, ExecReport, ExecRequest, encode_report};
use super::tenant::{
    Failure, LOCK_WAIT, Target, TenantIo, block_stop_signals, failed, pidfd_open, pipe,
    set_nonblocking,
};
use crate::monitor::trace;

/// How long the output is read after the command exited: processes it left in the
/// background may hold the pipes.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long the helper waits for a killed command to be gone and its output to end.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);
/// Poll period when the kernel has no pidfd_open (the command is polled with WNOHANG).
const NO_PIDFD_TICK: Duration = Duration::from_millis(10);
/// Bytes read from an output per `read`.
const READ_CHUNK: usize = 64 * 1024;

/// The helper's `main` (its arguments after `exec`): returns the process exit code. The
/// result, good or bad, is in the report on stdout; a non-zero code means no report could
/// be written.
pub fn run(args: &[std::ffi::OsString]) -> i32 {
    let parsed = ExecRequest::parse(args);
    if let Ok(
        request @ ExecRequest {
            stream: Some(options),
            ..
        },
    ) = &parsed
    {
        return super::stream_helper::run(request, options);
    }
    trace::init();
    let started = Instant::now();
    let (report, stdout, stderr) = match parsed {
        Ok(request) => {
            let deadline = request.timeout.map(|t| started + t);
            match execute(&request, deadline) {
                Ok(Finished {
                    exit_code,
                    stdout,
                    stderr,
                }) => (
                    ExecReport {
                        ok: true,
                        exit_code,
                        stdout_truncated: stdout.truncated,
                        stderr_truncated: stderr.truncated,
                        ..ExecReport::default()
                    },
                    stdout.buf,
                    stderr.buf,
                ),
                Err((kind, message)) => (ExecReport::failed(kind, message), Vec::new(), Vec::new()),
            }
        }
        Err(message) => (
            ExecReport::failed(ExecErrorKind::Invalid, message),
            Vec::new(),
            Vec::new(),
        ),
    };
    let data = encode_report(&report, &stdout, &stderr);
    let mut out = io::stdout().lock();
    match out.write_all(&data).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(err) => {
            tracing::warn!(error = %err, "cannot write the exec report");
            1
        }
    }
}

/// The command's end and its output.
struct Finished {
    exit_code: i32,
    stdout: Capture,
    stderr: Capture,
}

fn execute(request: &ExecRequest, deadline: Option<Instant>) -> Result<Finished, Failure> {
    // Signals that stop the helper (the agent's SIGTERM, or the agent's death through the
    // parent-death signal) arrive on a signalfd, so the command is killed, not left behind.
    let signals = block_stop_signals().map_err(|err| failed(format!("signalfd: {err}")))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };

    let target = Target::open(&request.state_root, &request.id)?;
    let null =
        std::fs::File::open("/dev/null").map_err(|err| failed(format!("open /dev/null: {err}")))?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    let lock_wait = deadline.map_or(LOCK_WAIT, |d| {
        LOCK_WAIT.min(d.saturating_duration_since(Instant::now()))
    });
    let io = TenantIo::Fds {
        stdin: null.into(),
        stdout: stdout_write,
        stderr: stderr_write,
    };
    let pid = super::tenant::start(&target, &request.cmd, io, lock_wait)?;
    let mut waiter = Waiter {
        pid,
        pidfd: pidfd_open(pid),
        signals,
        outputs: [
            Capture::new(stdout_read, request.max_output),
            Capture::new(stderr_read, request.max_output),
        ],
        exit_code: None,
    };
    let result = waiter.wait(deadline);
    let [stdout, stderr] = waiter.outputs;
    result.map(|exit_code| Finished {
        exit_code,
        stdout,
        stderr,
    })
}

/// One captured output: kept up to `max` bytes, the rest read and dropped.
#[derive(Debug)]
pub(crate) struct Capture {
    fd: Option<OwnedFd>,
    pub(crate) buf: Vec<u8>,
    max: usize,
    pub(crate) truncated: bool,
}

impl Capture {
    pub(crate) fn new(fd: OwnedFd, max: usize) -> Capture {
        Capture {
            fd: Some(fd),
            buf: Vec::new(),
            max,
            truncated: false,
        }
    }

    /// Reads what is there (the fd is nonblocking) without blocking; closes it at EOF.
    pub(crate) fn read_available(&mut self) {
        let mut chunk = [0u8; READ_CHUNK];
        // Bounded, to stay fair to the other output.
        for _ in 0..64 {
            let Some(fd) = &self.fd else {
                return;
            };
            match nix::unistd::read(fd, &mut chunk) {
                Ok(0) => {
                    self.fd = None;
                    return;
                }
                Ok(n) => self.keep(&chunk[..n]),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "reading the command's output failed");
                    self.fd = None;
                    return;
                }
            }
        }
    }

    pub(crate) fn keep(&mut self, data: &[u8]) {
        let room = self.max.saturating_sub(self.buf.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn is_open(&self) -> bool {
        self.fd.is_some()
    }
}

/// What a poll entry stands for.
#[derive(Clone, Copy)]
enum Source {
    Output(usize),
    Pidfd,
    Signal,
}

struct Waiter {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    signals: SignalFd,
    outputs: [Capture; 2],
    exit_code: Option<i32>,
}

impl Waiter {
    /// Waits for the command (killing it at `deadline` or on a stop signal) and for its
    /// output; returns its exit code.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<i32, Failure> {
        for output in &self.outputs {
            if let Some(fd) = &output.fd {
                set_nonblocking(fd).map_err(|err| failed(format!("set nonblocking: {err}")))?;
            }
        }
        // Set once the command exited or was killed: stop reading at this instant.
        let mut stop_at: Option<Instant> = None;
        let mut killed: Option<Failure> = None;
        loop {
            self.reap();
            let now = Instant::now();
            if self.exit_code.is_some() && stop_at.is_none() {
                stop_at = Some(now + DRAIN_AFTER_EXIT);
            }
            if killed.is_none() && self.exit_code.is_none() && deadline.is_some_and(|d| now >= d) {
                tracing::debug!(pid = self.pid.as_raw(), "exec timed out, killing");
                self.kill();
                killed = Some((
                    ExecErrorKind::Timeout,
                    "the command did not finish before the timeout and was killed".to_string(),
                ));
                stop_at = Some(now + DRAIN_AFTER_KILL);
            }
            let outputs_open = self.outputs.iter().any(Capture::is_open);
            if self.exit_code.is_some() && (!outputs_open || killed.is_some()) {
                break;
            }
            if stop_at.is_some_and(|s| now >= s) {
                break;
            }
            let wake = [stop_at, if killed.is_none() { deadline } else { None }]
                .into_iter()
                .flatten()
                .min();
            let mut timeout = wake.map(|w| w.saturating_duration_since(now));
            if self.pidfd.is_none() && self.exit_code.is_none() {
                timeout = Some(timeout.map_or(NO_PIDFD_TICK, |t| t.min(NO_PIDFD_TICK)));
            }
            for (source, ready) in self.poll(timeout)? {
                if !ready {
                    continue;
                }
                match source {
                    Source::Output(i) => self.outputs[i].read_available(),
                    Source::Pidfd => self.pidfd = None,
                    Source::Signal => {
                        while let Ok(Some(_)) = self.signals.read_signal() {}
                        if killed.is_none() && self.exit_code.is_none() {
                            tracing::debug!(
                                pid = self.pid.as_raw(),
                                "exec helper stopped, killing"
                            );
                            self.kill();
                            killed = Some(failed(
                                "the exec was stopped and the command killed".to_string(),
                            ));
                            stop_at = Some(Instant::now() + DRAIN_AFTER_KILL);
                        }
                    }
                }
            }
        }
        if let Some(failure) = killed {
            if self.exit_code.is_none() {
                tracing::warn!(
                    pid = self.pid.as_raw(),
                    "killed command did not exit in time"
                );
            }
            return Err(failure);
        }
        self.exit_code
            .ok_or_else(|| failed("the command's exit status is unknown".to_string()))
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<Vec<(Source, bool)>, Failure> {
        let mut sources = Vec::with_capacity(4);
        let mut fds = Vec::with_capacity(4);
        for (i, output) in self.outputs.iter().enumerate() {
            if let Some(fd) = &output.fd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                sources.push(Source::Output(i));
            }
        }
        if self.exit_code.is_none() {
            if let Some(fd) = &self.pidfd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                sources.push(Source::Pidfd);
            }
        }
        fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
        sources.push(Source::Signal);
        let timeout = match timeout {
            None => PollTimeout::NONE,
            // Round up so the loop does not spin on a sub-millisecond rest.
            Some(t) => {
                PollTimeout::try_from(t + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX)
            }
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(Vec::new()),
            Err(err) => return Err(failed(format!("poll: {err}"))),
        }
        let ready = fds
            .iter()
            .map(|fd| !fd.revents().unwrap_or(PollFlags::empty()).is_empty());
        Ok(sources.into_iter().zip(ready).collect())
    }

    /// Collects the command's exit status if it has exited.
    fn reap(&mut self) {
        if self.exit_code.is_some() {
            return;
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => self.exit_code = Some(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => self.exit_code = Some(128 + signal as i32),
            Ok(_) => {}
            Err(Errno::ECHILD) => {
                // Not ours any more (cannot happen: we are its parent); do not wait forever.
                self.exit_code = Some(-1);
            }
            Err(_) => {}
        }
    }

    /// SIGKILL to the command's process group (its session: libcontainer made it the
    /// leader), and to the command itself in case it left the group.
    fn kill(&self) {
        let _ = nix::sys::signal::killpg(self.pid, Signal::SIGKILL);
        let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_capture_keeps_up_to_cap_and_flags_truncation() {
        let (read, _write) = nix::unistd::pipe().unwrap();
        let mut capture = Capture::new(read, 5);
        capture.keep(b"abc");
        assert!(!capture.truncated);
        capture.keep(b"defg");
        assert_eq!(capture.buf, b"abcde");
        assert!(capture.truncated);
        capture.keep(b"h");
        assert_eq!(capture.buf, b"abcde");
    }

    #[test]
    fn test_capture_reads_until_eof() {
        let (read, write) = nix::unistd::pipe().unwrap();
        set_nonblocking(&read).unwrap();
        let mut capture = Capture::new(read, 1024);
        nix::unistd::write(&write, b"hello\n").unwrap();
        capture.read_available();
        assert!(capture.is_open());
        drop(write);
        capture.read_available();
        assert!(!capture.is_open());
        assert_eq!(capture.buf, b"hello\n");
    }
}
