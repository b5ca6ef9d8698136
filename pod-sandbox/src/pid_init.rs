//! The pod's PID namespace, for pods whose containers share one: a tiny init (`corral
//! pod-init`, the agent binary re-executed) is PID 1 of a new PID namespace inside the pod's
//! other namespaces, reaps orphans, and holds the namespace for the pod's containers.
//!
//! ```text
//! agent ──fork+exec──> corral pod-init (joins the pod's net/ipc/uts, unshares PID)
//!                          └──fork──> init: PID 1 of the pod, reaps zombies until SIGTERM
//!                      prints the init's host PID and exits; the init is re-parented
//! ```

use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{ForkResult, Pid, fork, setsid};

use crate::Error;

/// The pod namespaces the init joins before creating the PID namespace.
#[derive(Debug, Clone, Default)]
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
}

impl PodNamespaces {
    /// Command-line arguments for `corral pod-init`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, path) in [
            ("--netns", &self.net),
            ("--ipcns", &self.ipc),
            ("--utsns", &self.uts),
        ] {
            if let Some(path) = path {
                args.push(flag.to_string());
                args.push(path.display().to_string());
            }
        }
        args
    }
}

/// Agent side: starts the pod's init with `exe pod-init`, pins its PID namespace at `pin`
/// and returns the init's PID. Blocking.
pub fn start_pod_init(exe: &Path, namespaces: &PodNamespaces, pin: &Path) -> Result<u32, Error> {
    let output = Command::new(exe)
        .arg("pod-init")
        .args(namespaces.to_args())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| Error::sys("start pod init", exe, e))?;
    if !output.status.success() {
        return Err(Error::Thread(format!(
            "pod init failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    let pid: u32 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| Error::Thread("pod init did not report its pid".to_string()))?;
    if let Err(error) = pin_pid_namespace(pid, pin) {
        kill_pod_init(pid, None);
        return Err(error);
    }
    Ok(pid)
}

fn pin_pid_namespace(pid: u32, pin: &Path) -> Result<(), Error> {
    if let Some(parent) = pin.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::sys("create dir", parent, e))?;
    }
    std::fs::write(pin, b"").map_err(|e| Error::sys("create pin file", pin, e))?;
    let source = format!("/proc/{pid}/ns/pid");
    mount(
        Some(source.as_str()),
        pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| {
        let _ = std::fs::remove_file(pin);
        Error::sys("bind-mount pid namespace", pin, errno)
    })
}

/// Whether `pid` is still the init of the PID namespace pinned at `pin` (a recycled PID is
/// not).
pub fn is_pod_init(pid: u32, pin: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let live = std::fs::metadata(format!("/proc/{pid}/ns/pid"));
    let pinned = std::fs::metadata(pin);
    matches!((live, pinned), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev())
}

/// Kills the pod's init (and with it every process of the PID namespace), if `pid` is still
/// it. Without a pin to check against, the PID is trusted.
pub fn kill_pod_init(pid: u32, pin: Option<&Path>) {
    if pin.is_some_and(|pin| !is_pod_init(pid, pin)) {
        return;
    }
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// The `corral pod-init` process. Runs before any thread exists; never returns on success
/// paths of the init itself.
pub fn run_pod_init(namespaces: &PodNamespaces) -> Result<(), Error> {
    for (path, flag) in [
        (&namespaces.net, CloneFlags::CLONE_NEWNET),
        (&namespaces.ipc, CloneFlags::CLONE_NEWIPC),
        (&namespaces.uts, CloneFlags::CLONE_NEWUTS),
    ] {
        if let Some(path) = path {
            let file =
                std::fs::File::open(path).map_err(|e| Error::sys("open namespace", path, e))?;
            setns(file.as_fd(), flag).map_err(|errno| Error::sys("setns", path, errno))?;
        }
    }
    unshare(CloneFlags::CLONE_NEWPID)
        .map_err(|errno| Error::sys("unshare", "pid namespace", errno))?;
    // SAFETY: this process is single-threaded (it runs before any runtime or thread starts),
    // so the child may run arbitrary code after fork.
    match unsafe { fork() }.map_err(|errno| Error::sys("fork", "pod init", errno))? {
        ForkResult::Parent { child } => {
            let mut stdout = std::io::stdout();
            writeln!(stdout, "{child}").map_err(|e| Error::sys("report pid", "stdout", e))?;
            stdout
                .flush()
                .map_err(|e| Error::sys("report pid", "stdout", e))?;
            Ok(())
        }
        ForkResult::Child => init_loop(),
    }
}

/// PID 1 of the pod: reaps every child that exits; SIGTERM, SIGINT or SIGHUP end it.
fn init_loop() -> ! {
    let _ = setsid();
    let _ = std::env::set_current_dir("/");
    // Stdio belonged to the agent's pipes: leave them.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
            unsafe {
                libc::dup2(null.as_raw_fd(), target);
            }
        }
    }
    let mut signals = SigSet::empty();
    for signal in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(signal);
    }
    let _ = signals.thread_block();
    loop {
        match signals.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if status == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => std::process::exit(0),
            Err(_) => {}
        }
    }
}
