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

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::oci_spec::runtime::{Process, Spec};
use libcontainer::syscall::syscall::SyscallType;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::executor::{ExecExecutor, SeccompLoad, plan_seccomp};
use super::protocol::{ExecErrorKind, ExecReport, ExecRequest, encode_report};
use crate::monitor::trace;

/// How long the output is read after the command exited: processes it left in the
/// background may hold the pipes open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long the helper waits for a killed command to be gone and its output to end.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);
/// Poll period when the kernel has no pidfd_open (the command is polled with WNOHANG).
const NO_PIDFD_TICK: Duration = Duration::from_millis(10);
/// Per-exec notify sockets that libcontainer leaves in the container's state directory;
/// removed when they are older than this (ours is removed right away when it is known).
const STALE_NOTIFY_SOCKET: Duration = Duration::from_secs(60);
const TENANT_NOTIFY_PREFIX: &str = "tenant-notify-";
/// How long a helper waits for another one's build to end (builds take milliseconds).
const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_POLL: Duration = Duration::from_millis(2);
/// Bytes read from an output per `read`.
const READ_CHUNK: usize = 64 * 1024;

type Failure = (ExecErrorKind, String);

/// The helper's `main` (its arguments after `exec`): returns the process exit code. The
/// result, good or bad, is in the report on stdout; a non-zero code means no report could
/// be written.
pub fn run(args: &[OsString]) -> i32 {
    trace::init();
    let started = Instant::now();
    let (report, stdout, stderr) = match ExecRequest::parse(args) {
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
    check_id(&request.id)?;
    // Signals that stop the helper (the agent's SIGTERM, or the agent's death through the
    // parent-death signal) arrive on a signalfd, so the command is killed, not left behind.
    let signals = block_stop_signals().map_err(|err| failed(format!("signalfd: {err}")))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0) };

    let container_dir = request.state_root.join(&request.id);
    let spec = load_running(&container_dir, &request.id)?;
    let mut process = exec_process(&spec, &request.cmd)?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    let load = match seccomp {
        Some(_) => plan_seccomp(&mut process),
        None => SeccompLoad::Direct,
    };
    let process_file = process_file(&process)?;
    let process_path = PathBuf::from(format!("/proc/self/fd/{}", process_file.as_raw_fd()));

    let null = File::open("/dev/null").map_err(|err| failed(format!("open /dev/null: {err}")))?;
    let (stdout_read, stdout_write) = pipe()?;
    let (stderr_read, stderr_write) = pipe()?;
    // Execs into one container build one at a time (the command runs unserialized), so
    // the notify socket that appears during our build is ours to remove. The lock only
    // serves that cleanup: if it cannot be had soon, build anyway and leave the socket to
    // the age sweep.
    let lock_wait = deadline.map_or(LOCK_WAIT, |d| {
        LOCK_WAIT.min(d.saturating_duration_since(Instant::now()))
    });
    let lock = lock_dir(&container_dir, lock_wait);
    let sockets_before = lock.as_ref().map(|_| notify_sockets(&container_dir));
    trace::clear_first_error();
    let built = ContainerBuilder::new(request.id.clone(), SyscallType::default())
        .with_executor(ExecExecutor { seccomp, load })
        .with_root_path(&request.state_root)
        .and_then(|builder| {
            builder
                .with_stdin(null)
                .with_stdout(stdout_write)
                .with_stderr(stderr_write)
                .as_tenant()
                .with_process(Some(&process_path))
                .with_detach(false)
                .build()
        });
    // The builder is gone: the pipes' write ends are closed in the helper, so the outputs
    // end when the command (and whatever inherited them) closes them.
    drop(process_file);
    match &sockets_before {
        Some(before) => remove_new_notify_sockets(&container_dir, before),
        None => sweep_stale_notify_sockets(&container_dir),
    }
    drop(lock);
    let pid = match built {
        // libcontainer's nix is another version than ours.
        Ok(pid) => Pid::from_raw(pid.as_raw()),
        Err(err) => {
            // A half-started command must not wait forever for a start that never comes.
            kill_children();
            let message = trace::explain(crate::monitor::error_chain(&err));
            return Err(build_failure(&container_dir, &request.id, message));
        }
    };
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

fn failed(message: String) -> Failure {
    (ExecErrorKind::Failed, message)
}

/// The id names a directory under the state root: no separators, no `.`/`..`.
fn check_id(id: &str) -> Result<(), Failure> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err((
            ExecErrorKind::Invalid,
            format!("invalid container id {id:?}"),
        ));
    }
    Ok(())
}

/// Loads the container's state and spec; the container must be running.
fn load_running(container_dir: &Path, id: &str) -> Result<Spec, Failure> {
    if !container_dir.exists() {
        return Err((
            ExecErrorKind::State,
            format!("container {id} does not exist"),
        ));
    }
    let container = Container::load(container_dir.to_path_buf()).map_err(|err| {
        failed(format!(
            "load state of container {id}: {}",
            crate::monitor::error_chain(&err)
        ))
    })?;
    if container.status() != ContainerStatus::Running {
        return Err((
            ExecErrorKind::State,
            format!(
                "container {id} is {}, not running",
                container.status().to_string().to_lowercase()
            ),
        ));
    }
    let spec_path = container.bundle().join("config.json");
    Spec::load(&spec_path).map_err(|err| {
        failed(format!(
            "load spec {}: {}",
            spec_path.display(),
            crate::monitor::error_chain(&err)
        ))
    })
}

/// A failed build: the container may have stopped meanwhile (then it is a state error).
fn build_failure(container_dir: &Path, id: &str, message: String) -> Failure {
    let running = Container::load(container_dir.to_path_buf())
        .is_ok_and(|c| c.status() == ContainerStatus::Running);
    if running {
        failed(format!("container {id}: {message}"))
    } else {
        (
            ExecErrorKind::State,
            format!("container {id} is not running ({message})"),
        )
    }
}

/// The container's process with the exec's command: the same user, groups, capabilities,
/// no_new_privs, environment, cwd, rlimits, AppArmor profile and OOM score; no terminal.
pub(crate) fn exec_process(spec: &Spec, cmd: &[String]) -> Result<Process, Failure> {
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| failed("the container's spec has no process".to_string()))?;
    process.set_args(Some(cmd.to_vec()));
    process.set_terminal(Some(false));
    process.set_console_size(None);
    Ok(process)
}

/// The process as JSON in a memfd, for libcontainer's `with_process` (read through
/// `/proc/self/fd/N`, so no file is left anywhere).
fn process_file(process: &Process) -> Result<OwnedFd, Failure> {
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let json =
        serde_json::to_vec(process).map_err(|err| failed(format!("encode process: {err}")))?;
    let fd = memfd_create(c"corral-exec-process", MFdFlags::MFD_CLOEXEC)
        .map_err(|err| failed(format!("memfd_create: {err}")))?;
    let mut file = File::from(fd);
    file.write_all(&json)
        .map_err(|err| failed(format!("write process: {err}")))?;
    Ok(OwnedFd::from(file))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Failure> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|err| failed(format!("pipe: {err}")))
}

fn block_stop_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(signal);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// A pidfd for the command: readable once it exits. `None` on kernels without pidfd_open.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The `tenant-notify-*` sockets in the container's state directory.
fn notify_sockets(container_dir: &Path) -> HashSet<OsString> {
    let Ok(entries) = std::fs::read_dir(container_dir) else {
        return HashSet::new();
    };
    entries
        .flatten()
        .map(|entry| entry.file_name())
        .filter(|name| {
            name.to_str()
                .is_some_and(|n| n.starts_with(TENANT_NOTIFY_PREFIX))
        })
        .collect()
}

/// An exclusive `flock` on the container's state directory, released on drop (and by the
/// kernel when the helper dies); `None` if it is not free within `wait`.
fn lock_dir(container_dir: &Path, wait: Duration) -> Option<File> {
    let dir = File::open(container_dir).ok()?;
    let give_up = Instant::now() + wait;
    loop {
        // SAFETY: flock on a descriptor we own, with integer flags.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Some(dir);
        }
        let err = io::Error::last_os_error();
        let busy = matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        );
        if !busy || Instant::now() >= give_up {
            tracing::warn!(dir = %container_dir.display(), error = %err, "exec lock not taken");
            return None;
        }
        std::thread::sleep(LOCK_POLL);
    }
}

/// SIGKILL to the helper's children, then reaps them (after a failed build, which may
/// leave a command waiting for its start signal).
fn kill_children() {
    let path = format!("/proc/self/task/{}/children", std::process::id());
    let Ok(children) = std::fs::read_to_string(path) else {
        return;
    };
    for pid in children.split_whitespace().filter_map(|p| p.parse().ok()) {
        let pid = Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

/// libcontainer binds a `tenant-notify-<random>.sock` per exec and never removes it. Under
/// the lock, the ones that appeared during our build are ours. Older leftovers (a helper
/// killed mid-build) go once they are stale.
fn remove_new_notify_sockets(container_dir: &Path, before: &HashSet<OsString>) {
    for ours in notify_sockets(container_dir).difference(before) {
        let _ = std::fs::remove_file(container_dir.join(ours));
    }
    sweep_stale_notify_sockets(container_dir);
}

/// Removes notify sockets old enough that no exec can still be using them.
fn sweep_stale_notify_sockets(container_dir: &Path) {
    let now = SystemTime::now();
    for name in notify_sockets(container_dir) {
        let path = container_dir.join(name);
        let stale = std::fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_NOTIFY_SOCKET);
        if stale {
            let _ = std::fs::remove_file(path);
        }
    }
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

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
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

    #[test]
    fn test_exec_process_keeps_container_identity() {
        use libcontainer::oci_spec::runtime::{ProcessBuilder, SpecBuilder, UserBuilder};
        let spec = SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .args(vec!["sleep".to_string(), "1000".to_string()])
                    .terminal(true)
                    .cwd("/work")
                    .env(vec!["A=b".to_string()])
                    .no_new_privileges(true)
                    .user(
                        UserBuilder::default()
                            .uid(1000u32)
                            .gid(2000u32)
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let process = exec_process(&spec, &["id".to_string(), "-u".to_string()]).unwrap();
        assert_eq!(
            process.args().as_deref(),
            Some(&["id".to_string(), "-u".to_string()][..])
        );
        assert_eq!(process.terminal(), Some(false));
        assert_eq!(process.cwd(), Path::new("/work"));
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.user().gid(), 2000);
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.env().as_deref(), Some(&["A=b".to_string()][..]));
    }

    #[test]
    fn test_check_id_rejects_paths() {
        for id in ["", ".", "..", "a/b", "../x"] {
            assert!(check_id(id).is_err(), "{id}");
        }
        check_id("0123abcd").unwrap();
    }

    #[test]
    fn test_load_running_missing_container_is_state_error() {
        let dir = tempfile::tempdir().unwrap();
        let (kind, message) = load_running(&dir.path().join("nope"), "nope").unwrap_err();
        assert_eq!(kind, ExecErrorKind::State);
        assert!(message.contains("does not exist"), "{message}");
    }

    #[test]
    fn test_notify_socket_cleanup_removes_new_and_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("state.json"), "{}").unwrap();
        std::fs::write(path("tenant-notify-old.sock"), "").unwrap();
        let lock = lock_dir(dir.path(), LOCK_WAIT).unwrap();
        assert!(
            lock_dir(dir.path(), Duration::from_millis(10)).is_none(),
            "held"
        );
        let before = notify_sockets(dir.path());
        std::fs::write(path("tenant-notify-ours.sock"), "").unwrap();
        remove_new_notify_sockets(dir.path(), &before);
        drop(lock);
        assert!(!path("tenant-notify-ours.sock").exists());
        assert!(path("tenant-notify-old.sock").exists(), "not stale yet");
        assert!(path("state.json").exists());

        let old = SystemTime::now() - Duration::from_secs(120);
        File::options()
            .write(true)
            .open(path("tenant-notify-old.sock"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        sweep_stale_notify_sockets(dir.path());
        assert!(!path("tenant-notify-old.sock").exists());
    }
}
