//! Creating the container inside the monitor with youki's libcontainer, and undoing a
//! half-made creation.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::runtime::Spec;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::fcntl::OFlag;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use super::cgroups::{self, CreatedDirs};
use super::config::MonitorConfig;
use super::error_chain;
use super::trace;
use crate::Error;

/// A created (not yet started) container and the monitor's ends of its stdio.
pub(crate) struct Created {
    /// libcontainer's handle.
    pub container: Container,
    /// The init's pid.
    pub pid: i32,
    /// Read ends of the container's stdout and stderr pipes (no tty).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Write end of the container's stdin pipe, kept open (`stdin` without a tty).
    pub stdin: Option<OwnedFd>,
    /// The terminal's master side (tty): output and input.
    pub console: Option<OwnedFd>,
    /// The cgroup directories the creation made.
    pub cgroups: CreatedDirs,
    /// The OOM-kill counter of the memory cgroup and its value at creation.
    pub oom_file: Option<PathBuf>,
    pub oom_baseline: u64,
    /// The init is not the only init of its PID namespace (the pod's or the host's): its
    /// exit does not end the other processes of the container.
    pub shares_pid_namespace: bool,
}

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// Whether the spec joins an existing PID namespace (a path) or has none (the host's).
fn shares_pid_namespace(spec: &Spec) -> bool {
    let pid = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().as_ref())
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Pid)
        });
    pid.is_none_or(|ns| ns.path().is_some())
}

/// The console socket's path: next to the monitor socket, `.tty` instead of `.sock`.
pub(crate) fn console_socket_path(config: &MonitorConfig) -> PathBuf {
    config.socket.with_extension("tty")
}

/// Creates the container. On failure everything made so far is removed before returning.
pub(crate) fn create(config: &MonitorConfig) -> Result<Created, Error> {
    let spec_path = config.bundle.join("config.json");
    let spec = Spec::load(&spec_path).map_err(|err| Error::Libcontainer {
        op: "load spec of",
        message: format!("{}: {}", spec_path.display(), error_chain(&err)),
    })?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    if terminal != config.tty {
        return Err(Error::InvalidMonitorConfig(format!(
            "tty is {} but the spec's process.terminal is {terminal}",
            config.tty
        )));
    }
    let shares_pid_namespace = shares_pid_namespace(&spec);
    // libcontainer's default when the spec names none.
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .unwrap_or_else(|| PathBuf::from(format!(":youki:{}", config.id)));
    let own_oom_score_adj = std::fs::read_to_string(OOM_SCORE_ADJ).ok();
    clamp_oom_score_adj(spec, &spec_path)?;

    let relative = cgroups::relative_cgroup_path(&cgroups_path);
    let mounts = cgroups::host_mounts()?;
    let mut rollback = Rollback {
        state_dir: Some(config.state_root.join(&config.id)),
        cgroups: relative
            .as_deref()
            .map(|r| CreatedDirs::before_create(&mounts, r))
            .unwrap_or_default(),
        console: None,
    };
    if rollback.state_dir.as_deref().is_some_and(Path::exists) {
        return Err(Error::Libcontainer {
            op: "create",
            message: format!("state of container {} already exists", config.id),
        });
    }
    let built = build(config, &mut rollback);
    // libcontainer set the container's value on the monitor itself (the init inherited it);
    // go back to ours so a BestEffort container's 1000 does not make its monitor the OOM
    // killer's first pick. Raising back is allowed without privileges.
    if let Some(own) = own_oom_score_adj {
        let _ = std::fs::write(OOM_SCORE_ADJ, own.trim());
    }
    match built {
        Ok(mut created) => {
            created.shares_pid_namespace = shares_pid_namespace;
            rollback.cgroups.after_create();
            created.cgroups = std::mem::take(&mut rollback.cgroups);
            if let Some(relative) = relative {
                created.oom_file = cgroups::oom_counter_file(&mounts, &relative);
                created.oom_baseline = created
                    .oom_file
                    .as_deref()
                    .and_then(cgroups::read_oom_kill)
                    .unwrap_or(0);
            }
            rollback.state_dir = None;
            rollback.run();
            Ok(created)
        }
        Err(err) => {
            rollback.run();
            Err(err)
        }
    }
}

/// Undoes a creation that failed; `run` with `state_dir: None` only removes the console
/// socket.
struct Rollback {
    state_dir: Option<PathBuf>,
    cgroups: CreatedDirs,
    console: Option<PathBuf>,
}

impl Rollback {
    fn run(mut self) {
        if let Some(console) = self.console.take() {
            let _ = std::fs::remove_file(console);
        }
        let Some(state_dir) = self.state_dir.take() else {
            return;
        };
        // libcontainer kills and removes what it made when its create fails; reap what it
        // killed, then remove what it leaves: its state directory, the parent cgroups.
        reap_children(Duration::from_secs(2));
        if state_dir.exists() {
            if let Err(err) = std::fs::remove_dir_all(&state_dir) {
                tracing::warn!(dir = %state_dir.display(), error = %err, "cannot remove state");
            }
        }
        self.cgroups.after_create();
        let _ = self.cgroups.remove();
    }
}

/// Reaps exited children until none is left or `limit` passes.
fn reap_children(limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// libcontainer writes the spec's `oom_score_adj` to the monitor's own
/// `/proc/self/oom_score_adj` (the init inherits it), and fails with a bare "io error" when
/// lowering it needs CAP_SYS_RESOURCE that we lack. Try first; if refused, rewrite the spec
/// with the lowest value allowed: the current one.
fn clamp_oom_score_adj(mut spec: Spec, spec_path: &Path) -> Result<(), Error> {
    let Some(process) = spec.process_mut().as_mut() else {
        return Ok(());
    };
    let Some(wanted) = process.oom_score_adj() else {
        return Ok(());
    };
    let file = Path::new(OOM_SCORE_ADJ);
    match std::fs::write(file, wanted.to_string()) {
        Ok(()) => return Ok(()),
        Err(err) if matches!(err.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {}
        Err(err) => return Err(Error::io("write", file, err)),
    }
    let current: i32 = std::fs::read_to_string(file)
        .map_err(|err| Error::io("read", file, err))?
        .trim()
        .parse()
        .map_err(|_| Error::io("parse", file, io::ErrorKind::InvalidData.into()))?;
    tracing::warn!(
        wanted,
        clamped = current,
        "oom_score_adj not allowed, clamping"
    );
    process.set_oom_score_adj(Some(current));
    let text = serde_json::to_vec_pretty(&spec)
        .map_err(|err| Error::InvalidMonitorConfig(format!("spec: {err}")))?;
    super::exit::write_atomic(spec_path, &text)
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|err| Error::io("pipe", Path::new("stdio"), err.into()))
}

fn build(config: &MonitorConfig, rollback: &mut Rollback) -> Result<Created, Error> {
    let libcontainer = |op: &'static str| {
        move |err: libcontainer::error::LibcontainerError| Error::Libcontainer {
            op,
            message: trace::explain(error_chain(&err)),
        }
    };
    trace::clear_first_error();
    let mut builder = ContainerBuilder::new(config.id.clone(), SyscallType::default())
        .with_root_path(&config.state_root)
        .map_err(libcontainer("create"))?
        .with_executor(MonitorExecutor);
    let (mut stdin, mut stdout, mut stderr) = (None, None, None);
    let mut console = None;
    if config.tty {
        let path = console_socket_path(config);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|err| Error::io("bind console socket", &path, err))?;
        rollback.console = Some(path.clone());
        builder = builder.with_console_socket(Some(&path));
        console = Some(listener);
    } else {
        let null =
            File::open("/dev/null").map_err(|err| Error::io("open", "/dev/null".as_ref(), err))?;
        builder = if config.stdin {
            let (read, write) = pipe()?;
            stdin = Some(write);
            builder.with_stdin(read)
        } else {
            builder.with_stdin(null)
        };
        let (read, write) = pipe()?;
        stdout = Some(read);
        builder = builder.with_stdout(write);
        let (read, write) = pipe()?;
        stderr = Some(read);
        builder = builder.with_stderr(write);
    }
    let mut container = builder
        .as_init(&config.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(libcontainer("create"))?;
    let pid = container.pid().map(|pid| pid.as_raw());
    match finish(pid, console, [&stdout, &stderr]) {
        Ok((pid, console)) => Ok(Created {
            container,
            pid,
            stdout,
            stderr,
            stdin,
            console,
            cgroups: CreatedDirs::default(),
            oom_file: None,
            oom_baseline: 0,
            shares_pid_namespace: false,
        }),
        Err(err) => {
            // The container exists: remove it (kills the init) before the rollback.
            if let Err(delete) = container.delete(true) {
                tracing::warn!(container = %config.id, error = %delete, "cannot delete");
            }
            Err(err)
        }
    }
}

/// The steps after libcontainer created the container: its pid, the terminal, nonblocking
/// outputs.
fn finish(
    pid: Option<i32>,
    console: Option<UnixListener>,
    pipes: [&Option<OwnedFd>; 2],
) -> Result<(i32, Option<OwnedFd>), Error> {
    let pid = pid.ok_or_else(|| Error::Libcontainer {
        op: "create",
        message: "no init pid in the state".to_string(),
    })?;
    let console = match console {
        Some(listener) => Some(
            receive_console(&listener).map_err(|err| Error::Libcontainer {
                op: "receive terminal of",
                message: err.to_string(),
            })?,
        ),
        None => None,
    };
    for fd in pipes.into_iter().flatten().chain(console.as_ref()) {
        set_nonblocking(fd).map_err(|err| Error::io("set nonblocking", "stdio".as_ref(), err))?;
    }
    Ok((pid, console))
}

/// Takes the terminal master that the init sent on the console socket (libcontainer
/// connected before the init started, so the connection and the message are queued).
fn receive_console(listener: &UnixListener) -> io::Result<OwnedFd> {
    listener.set_nonblocking(true)?;
    let (stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = [0u8; 256];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut received = None;
    for cmsg in message.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in our table for this message and
                // nothing else owns it; taking ownership closes it exactly once.
                let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                received.get_or_insert(owned);
            }
        }
    }
    received.ok_or_else(|| io::Error::other("no terminal fd in the console message"))
}

pub(crate) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// libcontainer's default executor, after undoing what the monitor's process state would
/// leak into the container: ignored signals stay ignored across exec (Rust ignores SIGPIPE,
/// so `yes | head` would misbehave; the agent's environment may ignore others), and the
/// monitor blocks SIGCHLD for its signalfd.
#[derive(Clone)]
struct MonitorExecutor;

impl Executor for MonitorExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // The kernel's sigaction with every field zero: SIG_DFL, no flags, empty mask, on
        // every layout of the struct. Raw syscalls, because glibc refuses its own signals
        // 32 and 33, which an agent may still pass down ignored.
        let default_action = [0u64; 4];
        for signal in 1..=libc::SIGRTMAX() {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            // SAFETY: rt_sigaction reads a zeroed kernel sigaction from a live array and
            // writes nothing back (null old action); sigsetsize is the kernel's 8 bytes.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    default_action.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
        // SAFETY: sigprocmask with a valid, initialized empty set and no old set.
        unsafe {
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// The ends of the status of a waited child: (exit status, killing signal).
pub(crate) fn exit_of(status: WaitStatus) -> Option<(i32, Option<i32>)> {
    match status {
        WaitStatus::Exited(_, code) => Some((code, None)),
        WaitStatus::Signaled(_, signal, _) => Some((0, Some(signal as i32))),
        _ => None,
    }
}
