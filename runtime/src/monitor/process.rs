//! The monitor process: daemonize, create the container, report on the ready pipe, then
//! serve requests and copy output to the CRI log from one `poll()` loop until `delete`.
//!
//! ```text
//!  agent --exec--> monitor (P0) --setsid, fork--> monitor (P1, the daemon)   P0 exits at once
//!                                                   |-- libcontainer create  (init = our child)
//!                                                   |-- ready line on the pipe (was stdout)
//!                                                   '-- poll: socket, clients, stdout/stderr
//!                                                       or tty, init pidfd, SIGCHLD signalfd
//! ```
//!
//! State machine: see [`Status`].

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use libcontainer::container::{Container, ContainerStatus};
use libcontainer::signal::Signal;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal as NixSignal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::attachers::{Attachers, Wants};
use super::cgroups::{self, CreatedDirs};
use super::config::MonitorConfig;
use super::create::{self, Created};
use super::exit::{ExitRecord, unix_nanos_now, write_exit_record};
use super::protocol::{
    ContainerState, ErrorKind, MAX_LINE, ReadyReport, Request, Response, Status, decode, encode,
};
use super::{error_chain, trace};
use crate::Error;
use crate::logs::{LogWriter, Stream};

/// How long the monitor waits for the rest of the output after the init exited before it
/// writes the exit record (processes outside a pid namespace may keep the pipes open).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Concurrent client connections; more are closed at once.
const MAX_CLIENTS: usize = 32;
/// Bytes read from an output per `read` (on the stack; not kept).
const READ_CHUNK: usize = 8192;

/// The monitor's `main`: returns the process exit code.
pub fn run(config_path: &Path) -> i32 {
    let ready = match daemonize() {
        Ok(ready) => ready,
        Err(err) => {
            eprintln!("corral-monitor: daemonize: {err}");
            return 1;
        }
    };
    trace::init();
    let mut ready = std::fs::File::from(ready);
    let report = |ready: &mut std::fs::File, report: ReadyReport| ready.write_all(&encode(&report));
    let failed = |message: String| ReadyReport {
        ok: false,
        pid: None,
        monitor_pid: Some(std::process::id() as i32),
        error: Some(message),
    };
    let mut monitor = match start(config_path) {
        Ok(monitor) => monitor,
        Err(err) => {
            tracing::warn!(error = %err, "create failed");
            let _ = report(&mut ready, failed(err.to_string()));
            return 1;
        }
    };
    let ok = ReadyReport {
        ok: true,
        pid: Some(monitor.pid),
        monitor_pid: Some(std::process::id() as i32),
        error: None,
    };
    if let Err(err) = report(&mut ready, ok) {
        // Nobody reads the report (the agent timed out or died): undo the creation.
        tracing::warn!(container = %monitor.config.id, error = %err, "cannot report, removing");
        monitor.remove_all();
        return 1;
    }
    drop(ready);
    monitor.serve();
    0
}

/// Detaches from the agent: the ready pipe (our stdout) moves to a new descriptor, stdin and
/// stdout become /dev/null, a new session, and a fork whose parent exits at once (the agent
/// reaps it), so the monitor is adopted by init (or the nearest subreaper).
fn daemonize() -> io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, fcntl};
    let ready =
        fcntl(io::stdout().as_fd(), FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(io::Error::from)?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    let ready = unsafe { OwnedFd::from_raw_fd(ready) };
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [0, 1] {
        // SAFETY: dup2 onto the standard descriptors; `null` stays open across the call
        // and no Rust object owns descriptors 0 and 1 in a way this invalidates.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Not a group leader after exec by the agent, so this succeeds; if not, we still fork.
    let _ = nix::unistd::setsid();
    // SAFETY: the monitor is single-threaded here (nothing has spawned a thread since exec),
    // so the child may run any code; the parent only calls _exit.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { .. } => {
            // SAFETY: _exit ends the process without running destructors or atexit hooks,
            // which belong to the child now.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Child => {}
    }
    std::env::set_current_dir("/")?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    Ok(ready)
}

/// Everything before the report: subreaper, config, socket, log, the container.
fn start(config_path: &Path) -> Result<Monitor, Error> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        let err = io::Error::last_os_error();
        return Err(Error::io("set child subreaper", config_path, err));
    }
    let config = MonitorConfig::load(config_path)?;
    let listener = bind(&config.socket)?;
    let log = if config.log_path.as_os_str().is_empty() {
        None
    } else {
        Some(LogWriter::open(
            &config.log_path,
            config.log_max_line_bytes,
        )?)
    };
    let created = match create::create(&config) {
        Ok(created) => created,
        Err(err) => {
            let _ = std::fs::remove_file(&config.socket);
            return Err(err);
        }
    };
    let Created {
        container,
        pid,
        stdout,
        stderr,
        stdin,
        console,
        cgroups,
        oom_file,
        oom_baseline,
        shares_pid_namespace,
    } = created;
    tracing::info!(container = %config.id, pid, "container created");
    let attachers = attachers_for(&config, stdin, console.as_ref())?;
    let mut monitor = Monitor {
        listener,
        clients: Vec::new(),
        container,
        pid,
        pidfd: pidfd_open(pid),
        sigchld: None,
        outputs: [stdout, stderr, console],
        attachers,
        log,
        log_failing: false,
        status: Status::Created,
        created_at: unix_nanos_now(),
        started_at: 0,
        exit: None,
        cgroups,
        oom_file,
        oom_baseline,
        shares_pid_namespace,
        done: false,
        config,
    };
    match block_sigchld() {
        Ok(fd) => monitor.sigchld = Some(fd),
        Err(err) => tracing::warn!(error = %err, "no SIGCHLD signalfd, reaping on init exit only"),
    }
    Ok(monitor)
}

fn bind(socket: &Path) -> Result<UnixListener, Error> {
    let listener = match UnixListener::bind(socket) {
        Err(err) if err.kind() == io::ErrorKind::AddrInUse => {
            if UnixStream::connect(socket).is_ok() {
                return Err(Error::io("bind", socket, err));
            }
            // A socket file that nobody serves: left by a dead monitor.
            let _ = std::fs::remove_file(socket);
            UnixListener::bind(socket)
        }
        other => other,
    }
    .map_err(|err| Error::io("bind", socket, err))?;
    listener
        .set_nonblocking(true)
        .map_err(|err| Error::io("bind", socket, err))?;
    Ok(listener)
}

/// The attach side: the container's stdin (the pipe's write end, or with a terminal a
/// duplicate of its master) and the terminal for resizes, both nonblocking.
fn attachers_for(
    config: &MonitorConfig,
    stdin_pipe: Option<OwnedFd>,
    console: Option<&OwnedFd>,
) -> Result<Attachers, Error> {
    let duplicate = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|err| Error::io("duplicate", Path::new("terminal"), err))
    };
    let terminal = console.map(duplicate).transpose()?;
    let stdin = match (console, stdin_pipe) {
        (Some(console), _) if config.stdin => Some(duplicate(console)?),
        (Some(_), _) => None,
        (None, Some(pipe)) => {
            create::set_nonblocking(&pipe)
                .map_err(|err| Error::io("set nonblocking", Path::new("stdin"), err))?;
            Some(pipe)
        }
        (None, None) => None,
    };
    Ok(Attachers::new(stdin, terminal, config.stdin_once))
}

/// A pidfd for the init: readable once it exits. `None` on kernels without pidfd_open.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        tracing::warn!(pid, error = %io::Error::last_os_error(), "pidfd_open failed");
        return None;
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Blocks SIGCHLD and returns a signalfd for it (after the container exists, so its init
/// does not inherit the mask; later children of libcontainer are spawned by std, which
/// resets the mask).
fn block_sigchld() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(NixSignal::SIGCHLD);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// What a poll entry stands for.
#[derive(Clone, Copy)]
enum Source {
    Listener,
    Client(usize),
    /// Index of an attacher.
    Attacher(usize),
    /// The container's stdin, writable.
    Stdin,
    /// Index into `outputs`: stdout, stderr, console.
    Output(usize),
    Pidfd,
    Sigchld,
}

struct Monitor {
    config: MonitorConfig,
    listener: UnixListener,
    clients: Vec<Client>,
    container: Container,
    pid: i32,
    pidfd: Option<OwnedFd>,
    sigchld: Option<SignalFd>,
    /// stdout pipe, stderr pipe, tty master (read ends); `None` once at EOF.
    outputs: [Option<OwnedFd>; 3],
    /// Clients attached to the container's stdio, and its stdin (held open so the
    /// container does not see the end of its input until `stdin_once` says so).
    attachers: Attachers,
    log: Option<LogWriter>,
    log_failing: bool,
    status: Status,
    created_at: i64,
    started_at: i64,
    exit: Option<ExitRecord>,
    cgroups: CreatedDirs,
    oom_file: Option<std::path::PathBuf>,
    oom_baseline: u64,
    /// Kill what is left of the container when its init exits (see [`Monitor::init_exited`]).
    shares_pid_namespace: bool,
    done: bool,
}

fn stream_of(output: usize) -> Stream {
    if output == 1 {
        Stream::Stderr
    } else {
        Stream::Stdout
    }
}

impl Monitor {
    fn serve(&mut self) {
        self.reap();
        while !self.done {
            let mut sources = Vec::with_capacity(8 + self.clients.len());
            let mut ready = Vec::with_capacity(sources.capacity());
            {
                let mut fds = Vec::with_capacity(sources.capacity());
                macro_rules! add {
                    ($fd:expr, $source:expr) => {{ add!($fd, $source, PollFlags::POLLIN) }};
                    ($fd:expr, $source:expr, $flags:expr) => {{
                        fds.push(PollFd::new($fd, $flags));
                        sources.push($source);
                    }};
                }
                add!(self.listener.as_fd(), Source::Listener);
                for (i, client) in self.clients.iter().enumerate() {
                    add!(client.stream.as_fd(), Source::Client(i));
                }
                for (i, output) in self.outputs.iter().enumerate() {
                    if let Some(fd) = output {
                        add!(fd.as_fd(), Source::Output(i));
                    }
                }
                for (i, fd, flags) in self.attachers.poll_entries() {
                    add!(fd, Source::Attacher(i), flags);
                }
                if let Some(fd) = self.attachers.stdin_poll_entry() {
                    add!(fd, Source::Stdin, PollFlags::POLLOUT);
                }
                if let Some(fd) = &self.pidfd {
                    add!(fd.as_fd(), Source::Pidfd);
                }
                if let Some(fd) = &self.sigchld {
                    add!(fd.as_fd(), Source::Sigchld);
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(err) => {
                        tracing::error!(error = %err, "poll failed");
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
                ready.extend(
                    fds.iter()
                        .map(|fd| fd.revents().unwrap_or(PollFlags::empty())),
                );
            }
            let mut ready_clients = Vec::new();
            for (source, revents) in sources.into_iter().zip(ready) {
                match (source, !revents.is_empty()) {
                    (_, false) => {}
                    (Source::Listener, true) => self.accept(),
                    (Source::Client(i), true) => ready_clients.push(i),
                    (Source::Attacher(i), true) => self.attachers.ready(i, revents),
                    (Source::Stdin, true) => self.attachers.stdin_writable(),
                    (Source::Output(i), true) => {
                        self.read_output(i);
                    }
                    (Source::Pidfd, true) => self.reap(),
                    (Source::Sigchld, true) => {
                        if let Some(fd) = &self.sigchld {
                            while let Ok(Some(_)) = fd.read_signal() {}
                        }
                        self.reap();
                    }
                }
            }
            // Highest index first, so removing a client keeps the others' indices.
            for i in ready_clients.into_iter().rev() {
                if !self.done {
                    self.serve_client(i);
                }
            }
            self.attachers.sweep();
        }
        tracing::info!(container = %self.config.id, "monitor exiting");
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) if self.clients.len() < MAX_CLIENTS => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            stream,
                            buf: Vec::new(),
                        });
                    }
                }
                Ok(_) => tracing::warn!("too many clients, dropping a connection"),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed");
                    return;
                }
            }
        }
    }

    /// Reads a client's request; once a whole line is in, answers and closes it.
    fn serve_client(&mut self, i: usize) {
        let client = &mut self.clients[i];
        let mut chunk = [0u8; 1024];
        let line_end = loop {
            match client.stream.read(&mut chunk) {
                Ok(0) => break None,
                Ok(n) => {
                    client.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = client.buf.iter().position(|&b| b == b'\n') {
                        break Some(end);
                    }
                    if client.buf.len() > MAX_LINE {
                        break None;
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break None,
            }
        };
        let client = self.clients.remove(i);
        let Some(end) = line_end else {
            return;
        };
        let request = decode::<Request>(&client.buf[..end]);
        let response = match request {
            Ok(Request::Attach {
                stdin,
                stdout,
                stderr,
            }) => {
                let wants = Wants {
                    stdin,
                    stdout,
                    stderr,
                };
                return self.attach(client.stream, wants);
            }
            Ok(request) => self.handle(request),
            Err(err) => Response::error(ErrorKind::Invalid, format!("bad request: {err}")),
        };
        answer(client.stream, &response);
    }

    /// Answers an attach request and, when accepted, keeps the connection as an attacher.
    fn attach(&mut self, stream: UnixStream, wants: Wants) {
        let refused = if self.status == Status::Stopped {
            Some(self.wrong_state("attach to"))
        } else {
            self.attachers
                .check(wants)
                .err()
                .map(|message| (ErrorKind::State, message))
        };
        if let Some((kind, message)) = refused {
            tracing::info!(container = %self.config.id, error = %message, "attach refused");
            answer(stream, &Response::error(kind, message));
            return;
        }
        let Some(stream) = answer(stream, &Response::ok()) else {
            return;
        };
        match self.attachers.add(stream, wants) {
            Ok(()) => tracing::info!(container = %self.config.id, ?wants, "client attached"),
            Err(err) => tracing::warn!(container = %self.config.id, error = %err, "attach failed"),
        }
    }

    fn handle(&mut self, request: Request) -> Response {
        trace::clear_first_error();
        let result = match request {
            Request::Start => self.start(),
            Request::Signal { signal, all } => self.signal(signal, all),
            Request::ReopenLog => self.reopen_log(),
            Request::State => return Response::with_state(self.state()),
            Request::Delete => self.delete(),
            Request::Attach { .. } => {
                return Response::error(ErrorKind::Invalid, "attach needs its own connection");
            }
        };
        match result {
            Ok(()) => Response::ok(),
            Err((kind, message)) => {
                tracing::warn!(container = %self.config.id, op = request.op(), error = %message, "request failed");
                Response::error(kind, message)
            }
        }
    }

    fn state(&self) -> ContainerState {
        ContainerState {
            status: self.status,
            pid: self.pid,
            created_at: self.created_at,
            started_at: self.started_at,
            exit: self.exit.clone(),
        }
    }

    fn wrong_state(&self, op: &str) -> (ErrorKind, String) {
        let status = match self.status {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
        };
        (
            ErrorKind::State,
            format!("cannot {op} a {status} container"),
        )
    }

    fn start(&mut self) -> Result<(), (ErrorKind, String)> {
        if self.status != Status::Created {
            return Err(self.wrong_state("start"));
        }
        self.container.start().map_err(failed)?;
        self.started_at = unix_nanos_now();
        self.status = Status::Running;
        tracing::info!(container = %self.config.id, "container started");
        Ok(())
    }

    fn signal(&mut self, signal: i32, all: bool) -> Result<(), (ErrorKind, String)> {
        let sig = Signal::try_from(signal)
            .map_err(|_| (ErrorKind::Invalid, format!("invalid signal {signal}")))?;
        if self.status == Status::Stopped && !all {
            // The init is gone (and reaped: its pid may belong to someone else now).
            return Ok(());
        }
        self.container.kill(sig, all).map_err(failed)?;
        if self.status == Status::Created {
            // libcontainer marks a signalled container stopped, even if the signal did
            // not end it; keep it startable.
            let _ = self.container.set_status(ContainerStatus::Created).save();
        }
        Ok(())
    }

    fn reopen_log(&mut self) -> Result<(), (ErrorKind, String)> {
        if let Some(log) = &mut self.log {
            log.reopen()
                .map_err(|err| (ErrorKind::Failed, err.to_string()))?;
            self.log_failing = false;
        }
        Ok(())
    }

    fn delete(&mut self) -> Result<(), (ErrorKind, String)> {
        match self.status {
            Status::Running => return Err(self.wrong_state("delete")),
            Status::Created => {
                // Never started: kill it and record its end like any other.
                let kill = Signal::try_from(libc::SIGKILL)
                    .map_err(|err| (ErrorKind::Failed, err.to_string()))?;
                self.container.kill(kill, true).map_err(failed)?;
                match waitpid(Pid::from_raw(self.pid), None) {
                    Ok(status) => {
                        let (code, signal) = create::exit_of(status).unwrap_or((0, Some(9)));
                        self.init_exited(code, signal);
                    }
                    Err(err) => return Err((ErrorKind::Failed, format!("wait for init: {err}"))),
                }
            }
            Status::Stopped => {}
        }
        self.container.delete(true).map_err(failed)?;
        self.cgroups
            .remove()
            .map_err(|err| (ErrorKind::Failed, err.to_string()))?;
        let _ = std::fs::remove_file(&self.config.socket);
        tracing::info!(container = %self.config.id, "container deleted");
        self.done = true;
        Ok(())
    }

    /// Removes everything (the agent is gone before it learnt about the container).
    fn remove_all(&mut self) {
        let _ = self.container.delete(true);
        let _ = waitpid(Pid::from_raw(self.pid), None);
        let _ = self.cgroups.remove();
        let _ = std::fs::remove_file(&self.config.socket);
    }

    /// Reaps every exited child; handles the init's exit.
    fn reap(&mut self) {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(status) => {
                    if status.pid() == Some(Pid::from_raw(self.pid)) && self.exit.is_none() {
                        if let Some((code, signal)) = create::exit_of(status) {
                            self.init_exited(code, signal);
                        }
                    }
                }
            }
        }
    }

    /// The init exited: end what is left of the container, drain its output for a while,
    /// write the exit record, stop.
    ///
    /// In its own PID namespace the init's exit killed every other process of the
    /// container. Sharing the pod's (or the host's) namespace, they would live on (execs,
    /// daemons the init started) holding the container's outputs, its attachers and exec
    /// sessions: they are killed through the cgroup, as containerd's shim does.
    fn init_exited(&mut self, code: i32, signal: Option<i32>) {
        let finished_at = unix_nanos_now();
        self.pidfd = None;
        if self.shares_pid_namespace {
            if let Ok(kill) = Signal::try_from(libc::SIGKILL) {
                if let Err(err) = self.container.kill(kill, true) {
                    tracing::warn!(container = %self.config.id, error = %error_chain(&err), "cannot kill the container's other processes");
                }
            }
        }
        self.drain(Instant::now() + DRAIN_TIMEOUT);
        let oom_killed = self
            .oom_file
            .as_deref()
            .and_then(cgroups::read_oom_kill)
            .is_some_and(|count| count > self.oom_baseline);
        let record = ExitRecord::new(code, signal, self.started_at, finished_at, oom_killed);
        if let Err(err) = write_exit_record(&self.config.exit_file, &record) {
            tracing::error!(container = %self.config.id, error = %err, "cannot write exit record");
        }
        tracing::info!(container = %self.config.id, exit_code = record.exit_code, oom_killed, "container exited");
        self.exit = Some(record);
        self.status = Status::Stopped;
        self.attachers.close_all();
    }

    /// Reads the outputs until they all end or `deadline` passes.
    fn drain(&mut self, deadline: Instant) {
        loop {
            let open: Vec<usize> = (0..self.outputs.len())
                .filter(|&i| self.outputs[i].is_some())
                .collect();
            let now = Instant::now();
            if open.is_empty() || now >= deadline {
                return;
            }
            let timeout = PollTimeout::try_from(deadline - now).unwrap_or(PollTimeout::ZERO);
            let ready: Vec<bool> = {
                let mut fds: Vec<PollFd<'_>> = open
                    .iter()
                    .filter_map(|&i| self.outputs[i].as_ref())
                    .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(_) => return,
                }
                fds.iter()
                    .map(|fd| !fd.revents().unwrap_or(PollFlags::empty()).is_empty())
                    .collect()
            };
            for (i, ready) in open.into_iter().zip(ready) {
                if ready {
                    self.read_output(i);
                }
            }
        }
    }

    /// Reads what an output has (a bounded number of chunks, to stay fair to the others)
    /// into the log; at its end, writes the unfinished line and closes it.
    fn read_output(&mut self, i: usize) {
        let Some(fd) = &self.outputs[i] else {
            return;
        };
        let stream = stream_of(i);
        let mut buf = [0u8; READ_CHUNK];
        let mut ended = false;
        for _ in 0..16 {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(n) => {
                    if let Some(log) = &mut self.log {
                        let result = log.write(stream, &buf[..n]);
                        note_log_result(&mut self.log_failing, result);
                    }
                    self.attachers.broadcast(stream, &buf[..n]);
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                // EIO: the terminal's other side is closed.
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            self.outputs[i] = None;
            if let Some(log) = &mut self.log {
                let result = log.finish(stream);
                note_log_result(&mut self.log_failing, result);
            }
        }
    }
}

/// Writes `response` on a client connection (blocking, briefly); returns the connection if
/// that worked.
fn answer(mut stream: UnixStream, response: &Response) -> Option<UnixStream> {
    let sent = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(1))))
        .and_then(|()| stream.write_all(&encode(response)));
    match sent {
        Ok(()) => Some(stream),
        Err(err) => {
            tracing::warn!(error = %err, "cannot answer a client");
            None
        }
    }
}

/// Logs the first of a run of log write failures (a full disk must not flood stderr).
fn note_log_result(failing: &mut bool, result: Result<(), Error>) {
    match result {
        Ok(()) => *failing = false,
        Err(err) => {
            if !*failing {
                tracing::warn!(error = %err, "container log write failed");
            }
            *failing = true;
        }
    }
}

fn failed(err: libcontainer::error::LibcontainerError) -> (ErrorKind, String) {
    (ErrorKind::Failed, trace::explain(error_chain(&err)))
}
