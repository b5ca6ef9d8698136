//! The streaming exec helper (`corral-monitor exec --stream ...`): starts the command in
//! the running container (`tenant.rs`), hands it the agent's pipes or relays a terminal,
//! applies resizes, waits for it and writes the report on fd 4. Single-threaded, one
//! `poll` loop (the contract is in the module documentation of `exec`).
//!
//! ```text
//!  agent --spawn--> helper --libcontainer--> command (the helper's child, session leader)
//!   fd 0,1,2 ----------------------------->  stdio          (without --tty)
//!   fd 0 --relay--> pty master <-- pty slave: stdio        (with --tty)
//!   fd 1 <-relay-/
//!   fd 3 (resizes) -> TIOCSWINSZ on the master
//!   fd 4 <- the report, once the command exited; POLLERR there: the agent is gone
//! ```

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::console::ConsoleSocket;
use super::protocol::{ExecErrorKind, ExecReport, ExecRequest, StreamOptions, encode_report};
use super::relay::{Relay, ResizeReader};
use super::tenant::{
    Failure, LOCK_WAIT, Target, TenantIo, block_stop_signals, failed, is_not_found, pidfd_open,
};
use crate::monitor::trace;

/// The pipe the agent writes resize lines on.
pub const RESIZE_FD: i32 = 3;
/// The pipe the helper writes its report on.
pub const REPORT_FD: i32 = 4;
/// With a terminal, how long the output is relayed after the command exited: processes
/// it left in the background may hold the terminal.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// How long the helper waits for a killed command to be gone.
const REAP_AFTER_KILL: Duration = Duration::from_secs(2);
/// Poll period when the kernel has no pidfd_open (the command is polled with WNOHANG).
const NO_PIDFD_TICK: Duration = Duration::from_millis(10);
/// Rounds of the session sweep when the command is killed (its processes may fork).
const KILL_ROUNDS: usize = 4;

/// How a streaming exec ended, other than by the command's exit.
enum End {
    /// Report this failure.
    Failed(Failure),
    /// The agent closed the report pipe: nobody to report to.
    AgentGone,
}

impl From<Failure> for End {
    fn from(failure: Failure) -> End {
        End::Failed(failure)
    }
}

/// The streaming helper's `main`: returns the process exit code (0 once the report is
/// written; 2 without a report pipe; 1 when no report could be written).
pub(crate) fn run(request: &ExecRequest, options: &StreamOptions) -> i32 {
    let Some(report) = take_fd(REPORT_FD) else {
        eprintln!("corral-monitor exec --stream: no report pipe on fd {REPORT_FD}");
        return 2;
    };
    let resize = take_fd(RESIZE_FD);
    init_log(options.log.as_deref());
    let report_line = match stream(request, options, report.as_fd(), resize) {
        Ok(exit_code) => ExecReport {
            ok: true,
            exit_code,
            ..ExecReport::default()
        },
        Err(End::Failed((kind, message))) => ExecReport::failed(kind, message),
        Err(End::AgentGone) => {
            tracing::debug!("the agent closed the report pipe; the command was killed");
            return 1;
        }
    };
    let mut report = File::from(report);
    match report.write_all(&encode_report(&report_line, &[], &[])) {
        Ok(()) => 0,
        Err(err) => {
            tracing::warn!(error = %err, "cannot write the exec report");
            1
        }
    }
}

/// Takes an inherited descriptor (close-on-exec from now on), if it is open.
fn take_fd(fd: i32) -> Option<OwnedFd> {
    // SAFETY: F_GETFD/F_SETFD on a descriptor number; a closed one only fails.
    unsafe {
        if libc::fcntl(fd, libc::F_GETFD) < 0 {
            return None;
        }
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
    // SAFETY: the descriptor is open and, by the helper's contract, the agent gave it to
    // this process alone; nothing else in the process took it (it was open at start).
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The helper's log: `--log`, else nowhere (its stdout and stderr belong to the command).
fn init_log(path: Option<&Path>) {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match path {
        Some(path) => File::options()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .or_else(|_| File::options().write(true).open("/dev/null")),
        None => File::options().write(true).open("/dev/null"),
    };
    if let Ok(file) = file {
        trace::init_with(file);
    }
}

fn stream(
    request: &ExecRequest,
    options: &StreamOptions,
    report: BorrowedFd<'_>,
    resize: Option<OwnedFd>,
) -> Result<i32, End> {
    // The agent's SIGTERM (ExecStream::kill) arrives in the poll loop. There is no
    // parent-death signal: it follows the thread that spawned the helper, and a stream
    // outlives the agent's call that spawned it; the report pipe tells the agent's end.
    let signals = block_stop_signals().map_err(|err| failed(format!("signalfd: {err}")))?;
    let target = Target::open(&request.state_root, &request.id)?;
    let null = File::open("/dev/null").map_err(|err| failed(format!("open /dev/null: {err}")))?;
    let dup = |fd: BorrowedFd<'_>, what: &str| {
        fd.try_clone_to_owned()
            .map_err(|err| failed(format!("dup {what}: {err}")))
    };
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let (io, console) = if options.tty {
        let console = ConsoleSocket::bind(&target.dir)?;
        let io = TenantIo::Terminal {
            console_socket: console.relative_path(),
            size: options.size,
        };
        (io, Some(console))
    } else {
        let input = if options.stdin {
            dup(stdin.as_fd(), "stdin")?
        } else {
            dup(null.as_fd(), "/dev/null")?
        };
        let io = TenantIo::Fds {
            stdin: input,
            stdout: dup(stdout.as_fd(), "stdout")?,
            stderr: dup(std::io::stderr().as_fd(), "stderr")?,
        };
        (io, None)
    };
    let started = super::tenant::start(&target, &request.cmd, io, LOCK_WAIT);
    if let Some(console) = &console {
        console.unlink();
    }
    let pid = started.map_err(|(kind, message)| {
        if kind == ExecErrorKind::Failed && is_not_found(&message) {
            (ExecErrorKind::NotFound, message)
        } else {
            (kind, message)
        }
    })?;
    let mut session = Session {
        pid,
        pidfd: pidfd_open(pid),
        signals,
        report,
        resize: resize.map(ResizeReader::new),
        relay: None,
        exit_code: None,
    };
    if let Some(console) = console {
        let master = match console.receive_master() {
            Ok(master) => master,
            Err(failure) => {
                session.kill();
                return Err(failure.into());
            }
        };
        let input = match options.stdin {
            true => Some(dup(stdin.as_fd(), "stdin")?),
            false => None,
        };
        let relay = Relay::new(master, input, dup(stdout.as_fd(), "stdout")?)
            .map_err(|err| failed(format!("terminal relay: {err}")));
        match relay {
            Ok(relay) => session.relay = Some(relay),
            Err(failure) => {
                session.kill();
                return Err(failure.into());
            }
        }
    }
    // The command (or the relay) has what it needs of the agent's pipes: the helper's own
    // stdio goes, so the agent's readers end with the command's (with a terminal: stderr
    // at once, it is merged into stdout).
    for redirect in [
        nix::unistd::dup2_stdin,
        nix::unistd::dup2_stdout,
        nix::unistd::dup2_stderr,
    ] {
        let _ = redirect(null.as_fd());
    }
    session.run()
}

/// What a poll entry stands for.
#[derive(Clone, Copy)]
enum Source {
    Signal,
    Report,
    Pidfd,
    Resize,
    Master,
    Input,
    Output,
}

struct Session<'a> {
    pid: Pid,
    pidfd: Option<OwnedFd>,
    signals: SignalFd,
    report: BorrowedFd<'a>,
    resize: Option<ResizeReader>,
    relay: Option<Relay>,
    exit_code: Option<i32>,
}

impl Session<'_> {
    /// Relays until the command exited (and with a terminal, its output ended or the drain
    /// time passed); returns its exit code. Kills it when the helper is stopped or the
    /// agent is gone.
    fn run(&mut self) -> Result<i32, End> {
        let mut drain_until: Option<Instant> = None;
        loop {
            self.reap();
            let now = Instant::now();
            if let Some(code) = self.exit_code {
                let until = *drain_until.get_or_insert_with(|| {
                    if let Some(relay) = &mut self.relay {
                        relay.stop_input();
                    }
                    now + DRAIN_AFTER_EXIT
                });
                let relayed = self.relay.as_ref().is_none_or(Relay::finished);
                if relayed || now >= until {
                    return Ok(code);
                }
            }
            let mut timeout = drain_until.map(|until| until.saturating_duration_since(now));
            if self.pidfd.is_none() && self.exit_code.is_none() {
                timeout = Some(NO_PIDFD_TICK);
            }
            for (source, revents) in self.poll(timeout)? {
                if revents.is_empty() {
                    continue;
                }
                match source {
                    Source::Signal => {
                        while let Ok(Some(_)) = self.signals.read_signal() {}
                        if let Some(code) = self.exit_code {
                            return Ok(code);
                        }
                        tracing::debug!(pid = self.pid.as_raw(), "exec stopped, killing");
                        self.kill();
                        return Err(End::Failed(failed(
                            "the exec was stopped and the command killed".to_string(),
                        )));
                    }
                    Source::Report => {
                        if self.exit_code.is_none() {
                            tracing::debug!(pid = self.pid.as_raw(), "agent gone, killing");
                            self.kill();
                        }
                        return Err(End::AgentGone);
                    }
                    Source::Pidfd => self.pidfd = None,
                    Source::Resize => {
                        let master = self.relay.as_ref().and_then(Relay::master);
                        if let Some(resize) = &mut self.resize {
                            if !resize.read_and_apply(master) {
                                self.resize = None;
                            }
                        }
                    }
                    Source::Master | Source::Input | Source::Output => {
                        if let Some(relay) = &mut self.relay {
                            relay.on_ready(source_role(source), revents);
                        }
                    }
                }
            }
        }
    }

    fn poll(&self, timeout: Option<Duration>) -> Result<Vec<(Source, PollFlags)>, End> {
        let mut wanted: Vec<(Source, BorrowedFd<'_>, PollFlags)> = Vec::with_capacity(7);
        wanted.push((Source::Signal, self.signals.as_fd(), PollFlags::POLLIN));
        // No events asked: POLLERR comes when the agent's end closes.
        wanted.push((Source::Report, self.report, PollFlags::empty()));
        if self.exit_code.is_none() {
            if let Some(fd) = &self.pidfd {
                wanted.push((Source::Pidfd, fd.as_fd(), PollFlags::POLLIN));
            }
        }
        // Resizes before input: a resize the agent wrote before some input applies first.
        if let Some(resize) = &self.resize {
            wanted.push((Source::Resize, resize.as_fd(), PollFlags::POLLIN));
        }
        if let Some(relay) = &self.relay {
            for (role, fd, events) in relay.interest() {
                wanted.push((role_source(role), fd, events));
            }
        }
        let (sources, mut fds): (Vec<Source>, Vec<PollFd<'_>>) = wanted
            .into_iter()
            .map(|(source, fd, events)| (source, PollFd::new(fd, events)))
            .unzip();
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
            Err(err) => return Err(End::Failed(failed(format!("poll: {err}")))),
        }
        let revents = fds
            .iter()
            .map(|fd| fd.revents().unwrap_or(PollFlags::empty()));
        Ok(sources.into_iter().zip(revents).collect())
    }

    /// Collects the command's exit status if it has exited.
    fn reap(&mut self) {
        if self.exit_code.is_some() {
            return;
        }
        match waitpid(self.pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => self.exit_code = Some(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => self.exit_code = Some(128 + signal as i32),
            Ok(_) | Err(Errno::EINTR) => {}
            // Not ours (cannot happen: we are its parent); do not wait forever.
            Err(_) => self.exit_code = Some(-1),
        }
    }

    /// SIGKILL to the command's session (its processes, in whatever process group: an
    /// interactive shell puts each job in its own), then reaps the command.
    fn kill(&mut self) {
        if self.exit_code.is_some() {
            // Reaped: its pid may be another process's now.
            return;
        }
        kill_session(self.pid);
        let give_up = Instant::now() + REAP_AFTER_KILL;
        while self.exit_code.is_none() && Instant::now() < give_up {
            std::thread::sleep(Duration::from_millis(5));
            self.reap();
        }
        if self.exit_code.is_none() {
            tracing::warn!(
                pid = self.pid.as_raw(),
                "killed command did not exit in time"
            );
        }
    }
}

/// The relay's descriptors, as the loop's sources.
fn role_source(role: super::relay::Role) -> Source {
    match role {
        super::relay::Role::Master => Source::Master,
        super::relay::Role::Input => Source::Input,
        super::relay::Role::Output => Source::Output,
    }
}

fn source_role(source: Source) -> super::relay::Role {
    match source {
        Source::Input => super::relay::Role::Input,
        Source::Output => super::relay::Role::Output,
        _ => super::relay::Role::Master,
    }
}

/// SIGKILL to the process group and the session `leader` leads (the command, which
/// libcontainer made a session leader), and to every process left in that session. The
/// leader is not reaped yet, so no other session can have its id.
fn kill_session(leader: Pid) {
    let _ = nix::sys::signal::killpg(leader, Signal::SIGKILL);
    let _ = nix::sys::signal::kill(leader, Signal::SIGKILL);
    for _ in 0..KILL_ROUNDS {
        let members = session_members(leader.as_raw());
        if members.is_empty() {
            return;
        }
        for pid in members {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The live (not zombie) processes of session `sid`, from /proc.
fn session_members(sid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat_session(&stat))
                .is_some_and(|(state, session)| session == sid && state != 'Z')
        })
        .collect()
}

/// The state and session id from a `/proc/<pid>/stat` line (the command name, in
/// parentheses, may hold anything: the fields follow its last `)`).
fn stat_session(stat: &str) -> Option<(char, i32)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // ppid, pgrp, then the session.
    let session = fields.nth(2)?.parse().ok()?;
    Some((state, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_stat_session_parses_odd_command_names() {
        let stat = "4242 (a) b (c) S 1 4242 4240 34816 4242 4194560 ...";
        assert_eq!(stat_session(stat), Some(('S', 4240)));
        assert_eq!(stat_session("12 (zombie) Z 1 12 12 0"), Some(('Z', 12)));
        assert_eq!(stat_session("garbage"), None);
    }

    #[test]
    fn test_session_members_finds_our_session() {
        let sid = nix::unistd::getsid(None).unwrap().as_raw();
        let members = session_members(sid);
        assert!(
            members.contains(&(std::process::id() as i32)),
            "{members:?}"
        );
    }
}
