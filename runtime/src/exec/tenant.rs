//! Starting a command in a running container with libcontainer's tenant builder, shared by
//! the ExecSync helper (`helper.rs`) and the streaming one (`stream_helper.rs`): the
//! container's identity (executor.rs), the per-container build lock and the cleanup of the
//! sockets libcontainer leaves in the container's state directory.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::{Container, ContainerStatus};
use libcontainer::oci_spec::runtime::{Process, Spec};
use libcontainer::syscall::syscall::SyscallType;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::executor::{ExecExecutor, SeccompLoad, plan_seccomp};
use super::protocol::{ExecErrorKind, TerminalSize};
use crate::monitor::trace;

/// Sockets that libcontainer leaves in the container's state directory: a notify socket
/// per exec, and with a terminal a symlink to the console socket. Removed when they are
/// older than [`STALE_SOCKET`] (ours are removed right away when they are known).
const LIBCONTAINER_PREFIXES: [&str; 2] = ["tenant-notify-", "tenant-tty-"];
/// The console sockets streaming helpers listen on (`stream_helper.rs`), bound in the
/// state directory before the build lock is taken: the helper removes its own, and the age
/// sweep those of helpers killed before they could.
pub(crate) const CONSOLE_SOCKET_PREFIX: &str = "corral-exec-tty-";
const STALE_SOCKET: Duration = Duration::from_secs(60);
/// How long a helper waits for another one's build to end (builds take milliseconds).
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(2);
const LOCK_POLL: Duration = Duration::from_millis(2);

/// Why an exec failed, and the message.
pub(crate) type Failure = (ExecErrorKind, String);

pub(crate) fn failed(message: String) -> Failure {
    (ExecErrorKind::Failed, message)
}

/// A running container to start a command in.
pub(crate) struct Target {
    pub state_root: PathBuf,
    pub id: String,
    /// `<state_root>/<id>`: libcontainer's state directory.
    pub dir: PathBuf,
    /// The container's spec (its bundle's config.json).
    pub spec: Spec,
}

impl Target {
    /// The container `id` under `state_root`, which must be running.
    pub(crate) fn open(state_root: &Path, id: &str) -> Result<Target, Failure> {
        check_id(id)?;
        let dir = state_root.join(id);
        let spec = load_running(&dir, id)?;
        Ok(Target {
            state_root: state_root.to_path_buf(),
            id: id.to_string(),
            dir,
            spec,
        })
    }
}

/// The command's standard streams.
pub(crate) enum TenantIo {
    /// These descriptors (closed in the helper once the command has them).
    Fds {
        stdin: OwnedFd,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// A new pseudo-terminal, made in the container, its master sent to the unix socket
    /// `console_socket` listens on (a path relative to the state directory); the command's
    /// stdio is the terminal, sized to `size` before the command runs.
    Terminal {
        console_socket: PathBuf,
        size: Option<TerminalSize>,
    },
}

/// Starts `cmd` in `target` with the container's process settings and `io`; returns the
/// command's pid (the helper's child). Waits at most `lock_wait` for the build lock.
pub(crate) fn start(
    target: &Target,
    cmd: &[String],
    io: TenantIo,
    lock_wait: Duration,
) -> Result<Pid, Failure> {
    let terminal = matches!(io, TenantIo::Terminal { .. });
    let mut process = exec_process(&target.spec, cmd, terminal)?;
    let seccomp = target
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().clone());
    let load = match seccomp {
        Some(_) => plan_seccomp(&mut process),
        None => SeccompLoad::Direct,
    };
    let process_file = process_file(&process)?;
    let process_path = PathBuf::from(format!("/proc/self/fd/{}", process_file.as_raw_fd()));
    let console_size = match &io {
        TenantIo::Terminal { size, .. } => *size,
        TenantIo::Fds { .. } => None,
    };
    // Execs into one container build one at a time (the command runs unserialized), so
    // the sockets that appear during our build are ours to remove. The lock only serves
    // that cleanup: if it cannot be had soon, build anyway and leave the sockets to the
    // age sweep.
    let lock = lock_dir(&target.dir, lock_wait);
    let sockets_before = lock
        .as_ref()
        .map(|_| sockets(&target.dir, &LIBCONTAINER_PREFIXES));
    trace::clear_first_error();
    let executor = ExecExecutor {
        seccomp,
        load,
        console_size,
    };
    let built = ContainerBuilder::new(target.id.clone(), SyscallType::default())
        .with_executor(executor)
        .with_root_path(&target.state_root)
        .and_then(|builder| {
            let builder = match io {
                TenantIo::Fds {
                    stdin,
                    stdout,
                    stderr,
                } => builder
                    .with_stdin(stdin)
                    .with_stdout(stdout)
                    .with_stderr(stderr),
                TenantIo::Terminal { console_socket, .. } => {
                    builder.with_console_socket(Some(console_socket))
                }
            };
            builder
                .as_tenant()
                .with_process(Some(&process_path))
                // libcontainer takes a console socket only for a detached process; it
                // means nothing else to a tenant build.
                .with_detach(terminal)
                .build()
        });
    // The builder is gone: our copies of the command's descriptors are closed, so its
    // streams end when the command (and whatever inherited them) closes them.
    drop(process_file);
    match &sockets_before {
        Some(before) => remove_new_sockets(&target.dir, before),
        None => sweep_stale_sockets(&target.dir),
    }
    drop(lock);
    match built {
        // libcontainer's nix is another version than ours.
        Ok(pid) => Ok(Pid::from_raw(pid.as_raw())),
        Err(err) => {
            // A half-started command must not wait forever for a start that never comes.
            kill_children();
            let message = trace::explain(crate::monitor::error_chain(&err));
            Err(build_failure(&target.dir, &target.id, message))
        }
    }
}

/// Whether a failed start's message says the command was not found: libcontainer's
/// executor checks, in the container, that the command exists (on its `PATH`, or at the
/// path given) before it runs it: `executable '..' not found in $PATH`.
pub(crate) fn is_not_found(message: &str) -> bool {
    message.contains("not found in $PATH")
}

/// The id names a directory under the state root: no separators, no `.`/`..`.
pub(crate) fn check_id(id: &str) -> Result<(), Failure> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err((
            ExecErrorKind::Invalid,
            format!("invalid container id {id:?}"),
        ));
    }
    Ok(())
}

/// Loads the container's state and spec; the container must be running.
pub(crate) fn load_running(container_dir: &Path, id: &str) -> Result<Spec, Failure> {
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
/// no_new_privs, environment, cwd, rlimits, AppArmor profile and OOM score; a terminal if
/// `terminal` (its size is set by the executor).
pub(crate) fn exec_process(
    spec: &Spec,
    cmd: &[String],
    terminal: bool,
) -> Result<Process, Failure> {
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| failed("the container's spec has no process".to_string()))?;
    process.set_args(Some(cmd.to_vec()));
    process.set_terminal(Some(terminal));
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

pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), Failure> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|err| failed(format!("pipe: {err}")))
}

/// Blocks SIGTERM, SIGINT and SIGHUP and returns a signalfd for them: signals that stop the
/// helper arrive in its poll loop, so the command is killed, not left behind. (The
/// executor unblocks them in the command.)
pub(crate) fn block_stop_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(signal);
    }
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// A pidfd for the command: readable once it exits. `None` on kernels without pidfd_open.
pub(crate) fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

pub(crate) fn set_nonblocking(fd: &impl std::os::fd::AsFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, fcntl};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// The entries of the container's state directory whose names start with one of
/// `prefixes`.
fn sockets(container_dir: &Path, prefixes: &[&str]) -> HashSet<OsString> {
    let Ok(entries) = std::fs::read_dir(container_dir) else {
        return HashSet::new();
    };
    entries
        .flatten()
        .map(|entry| entry.file_name())
        .filter(|name| {
            name.to_str()
                .is_some_and(|n| prefixes.iter().any(|p| n.starts_with(p)))
        })
        .collect()
}

/// An exclusive `flock` on the container's state directory, released on drop (and by the
/// kernel when the helper dies); `None` if it is not free within `wait`.
pub(crate) fn lock_dir(container_dir: &Path, wait: Duration) -> Option<File> {
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

/// libcontainer makes a notify socket (and with a terminal a console symlink) per exec and
/// never removes them. Under the lock, the ones that appeared during our build are ours.
/// Older leftovers (a helper killed mid-build) go once they are stale.
fn remove_new_sockets(container_dir: &Path, before: &HashSet<OsString>) {
    for ours in sockets(container_dir, &LIBCONTAINER_PREFIXES).difference(before) {
        let _ = std::fs::remove_file(container_dir.join(ours));
    }
    sweep_stale_sockets(container_dir);
}

/// Removes leftover sockets old enough that no exec can still be using them.
fn sweep_stale_sockets(container_dir: &Path) {
    let now = SystemTime::now();
    let prefixes = [
        LIBCONTAINER_PREFIXES[0],
        LIBCONTAINER_PREFIXES[1],
        CONSOLE_SOCKET_PREFIX,
    ];
    for name in sockets(container_dir, &prefixes) {
        let path = container_dir.join(name);
        let stale = std::fs::symlink_metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_SOCKET);
        if stale {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let cmd = ["id".to_string(), "-u".to_string()];
        let process = exec_process(&spec, &cmd, false).unwrap();
        assert_eq!(process.args().as_deref(), Some(&cmd[..]));
        assert_eq!(process.terminal(), Some(false));
        assert_eq!(process.cwd(), Path::new("/work"));
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.user().gid(), 2000);
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.env().as_deref(), Some(&["A=b".to_string()][..]));
        let process = exec_process(&spec, &cmd, true).unwrap();
        assert_eq!(process.terminal(), Some(true));
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
        let (kind, _) = Target::open(dir.path(), "../x").err().unwrap();
        assert_eq!(kind, ExecErrorKind::Invalid);
    }

    /// libcontainer's wording is what tells a missing command from other failures: pin it.
    #[test]
    fn test_not_found_matches_libcontainer_validation() {
        use libcontainer::oci_spec::runtime::{ProcessBuilder, SpecBuilder};
        use libcontainer::workload::Executor;
        use libcontainer::workload::default::DefaultExecutor;
        let dir = tempfile::tempdir().unwrap();
        let spec = SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .args(vec!["corral-no-such-command".to_string()])
                    .env(vec![format!("PATH={}", dir.path().display())])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let err = DefaultExecutor {}.validate(&spec).unwrap_err().to_string();
        assert!(is_not_found(&err), "{err}");
        assert!(!is_not_found("container abc: failed to apply cgroup"));
    }

    #[test]
    fn test_socket_cleanup_removes_new_and_stale() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("state.json"), "{}").unwrap();
        std::fs::write(path("tenant-notify-old.sock"), "").unwrap();
        std::fs::write(path("corral-exec-tty-1.sock"), "").unwrap();
        let lock = lock_dir(dir.path(), LOCK_WAIT).unwrap();
        assert!(
            lock_dir(dir.path(), Duration::from_millis(10)).is_none(),
            "held"
        );
        let before = sockets(dir.path(), &LIBCONTAINER_PREFIXES);
        std::fs::write(path("tenant-notify-ours.sock"), "").unwrap();
        std::fs::write(path("tenant-tty-ours.sock"), "").unwrap();
        // Another helper's console socket, bound while we build: not ours to remove.
        std::fs::write(path("corral-exec-tty-2.sock"), "").unwrap();
        remove_new_sockets(dir.path(), &before);
        drop(lock);
        assert!(!path("tenant-notify-ours.sock").exists());
        assert!(!path("tenant-tty-ours.sock").exists());
        assert!(path("corral-exec-tty-2.sock").exists());
        assert!(path("tenant-notify-old.sock").exists(), "not stale yet");
        assert!(path("state.json").exists());

        let old = SystemTime::now() - Duration::from_secs(120);
        for name in ["tenant-notify-old.sock", "corral-exec-tty-1.sock"] {
            File::options()
                .write(true)
                .open(path(name))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        sweep_stale_sockets(dir.path());
        assert!(!path("tenant-notify-old.sock").exists());
        assert!(!path("corral-exec-tty-1.sock").exists());
        assert!(path("corral-exec-tty-2.sock").exists());
    }
}
