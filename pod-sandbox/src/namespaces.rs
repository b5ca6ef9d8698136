//! Pinned pod namespaces. A dedicated thread unshares the namespaces the pod gets of its own
//! (net, IPC, UTS), sets them up from inside (hostname, `lo` up, namespaced sysctls) and
//! bind-mounts its `/proc/thread-self/ns/*` files onto pin files, as `ip netns add` does;
//! the namespaces then live as long as the pins, whatever happens to the thread or the agent.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};

use crate::Error;
use crate::sysctl::{Sysctl, SysctlNamespace};

/// `statfs` magic of nsfs, the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// What to create and where to pin it. A `None` path means the pod shares the host's.
#[derive(Debug, Clone, Default)]
pub struct PinRequest {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// Set in the new UTS namespace.
    pub hostname: Option<String>,
    /// Written from inside the new namespaces.
    pub sysctls: Vec<Sysctl>,
}

/// Creates and pins the requested namespaces. On failure nothing is left: no pin file, no
/// mount, no namespace.
pub fn pin_namespaces(request: PinRequest) -> Result<(), Error> {
    for sysctl in &request.sysctls {
        let owned = match sysctl.namespace {
            SysctlNamespace::Net => request.net.is_some(),
            SysctlNamespace::Ipc => request.ipc.is_some(),
        };
        if !owned {
            return Err(Error::InvalidArgument(format!(
                "sysctl {} needs a namespace of the pod's own, but the pod shares the host's",
                sysctl.key
            )));
        }
    }
    let pins: Vec<(&'static str, PathBuf)> = [
        ("net", &request.net),
        ("ipc", &request.ipc),
        ("uts", &request.uts),
    ]
    .into_iter()
    .filter_map(|(kind, path)| path.clone().map(|p| (kind, p)))
    .collect();
    if pins.is_empty() {
        return Ok(());
    }
    let mut created = Vec::new();
    for (_, path) in &pins {
        if let Err(error) = create_pin_file(path) {
            remove_files(&created);
            return Err(error);
        }
        created.push(path.clone());
    }
    let result = std::thread::Builder::new()
        .name("corral-netns".to_string())
        .spawn(move || setup_in_new_namespaces(&request, &pins))
        .map_err(|e| Error::Thread(e.to_string()))
        .and_then(|thread| {
            thread
                .join()
                .map_err(|_| Error::Thread("namespace thread panicked".to_string()))?
        });
    if result.is_err() {
        remove_files(&created);
    }
    result
}

/// Runs on the dedicated thread: it is the only thread that ever enters the new namespaces,
/// and it exits right after, so no other work runs in them by accident.
fn setup_in_new_namespaces(
    request: &PinRequest,
    pins: &[(&'static str, PathBuf)],
) -> Result<(), Error> {
    let mut flags = CloneFlags::empty();
    for (kind, _) in pins {
        flags |= match *kind {
            "net" => CloneFlags::CLONE_NEWNET,
            "ipc" => CloneFlags::CLONE_NEWIPC,
            _ => CloneFlags::CLONE_NEWUTS,
        };
    }
    unshare(flags).map_err(|errno| Error::sys("unshare", "namespaces", errno))?;
    if request.uts.is_some() {
        if let Some(hostname) = &request.hostname {
            nix::unistd::sethostname(hostname)
                .map_err(|errno| Error::sys("sethostname", hostname.as_str(), errno))?;
        }
    }
    if request.net.is_some() {
        loopback_up()?;
    }
    for sysctl in &request.sysctls {
        let path = sysctl.proc_path();
        std::fs::write(&path, &sysctl.value)
            .map_err(|e| Error::sys("write sysctl", path.as_str(), e))?;
    }
    let mut mounted: Vec<PathBuf> = Vec::new();
    for (kind, path) in pins {
        let source = format!("/proc/thread-self/ns/{kind}");
        if let Err(errno) = mount(
            Some(source.as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            for done in &mounted {
                let _ = umount2(done, MntFlags::MNT_DETACH);
            }
            return Err(Error::sys("bind-mount namespace", path, errno));
        }
        mounted.push(path.clone());
    }
    Ok(())
}

/// Brings `lo` up in the thread's (new) network namespace over rtnetlink. `lo` is always
/// interface 1 in a fresh namespace.
fn loopback_up() -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| Error::sys("netlink runtime", "lo", e))?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::sys("netlink socket", "lo", e))?;
        let driver = tokio::spawn(connection);
        let result = handle
            .link()
            .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
            .execute()
            .await
            .map_err(|e| Error::sys("set link up", "lo", std::io::Error::other(e.to_string())));
        driver.abort();
        result
    })
}

fn create_pin_file(path: &Path) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::sys("create dir", parent, e))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map(drop)
        .map_err(|e| Error::sys("create pin file", path, e))
}

fn remove_files(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

/// Unpins a namespace: unmounts the pin and removes the file. Missing is fine.
pub fn unpin(path: &Path) -> Result<(), Error> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(errno) => return Err(Error::sys("unmount namespace", path, errno)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::sys("remove pin file", path, e)),
    }
}

/// Opens a TCP connection to `port` on the loopback address of the network namespace pinned
/// at `netns` (the host's when `None`), as port-forwarding does: a short-lived thread joins
/// the namespace and connects (a socket stays in the namespace it was made in); the
/// caller's threads never change namespace. IPv4 first, then IPv6, like `localhost`.
/// Blocking.
pub fn connect_in_netns(netns: Option<&Path>, port: u16) -> std::io::Result<std::net::TcpStream> {
    let connect = move || {
        let v4 = std::net::TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, port));
        v4.or_else(|first| {
            std::net::TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, port)).map_err(|_| first)
        })
    };
    let Some(netns) = netns else {
        return connect();
    };
    let file = std::fs::File::open(netns)?;
    std::thread::Builder::new()
        .name("netns-connect".to_string())
        .spawn(move || {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            connect()
        })?
        .join()
        .map_err(|_| std::io::Error::other("the connecting thread panicked"))?
}

/// Whether `path` is a live namespace pin (an nsfs mount), e.g. after a reboot it is not.
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type().0 == NSFS_MAGIC)
}
