//! Debian's containerd (1.6, `apt-get install containerd runc`) as a child process on temp
//! roots, for the benchmarks that compare Corral with it through the same CRI requests.
//!
//! Everything of an instance lives in one `corral-test-*` temp dir: config, root, state,
//! socket, `certs.d` and log, except what containerd 1.6 puts in fixed host paths (shim
//! sockets and runc state in `/run/containerd`, libcni's result cache in `/var/lib/cni`).
//! [`Containerd::stop`] (or drop) stops it, kills the shims it started, lazily unmounts
//! whatever is still mounted under the dir, removes the dir, and removes those host dirs
//! again when they were created meanwhile and are empty.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corral::client::CriClient;
use k8s_cri::v1::VersionRequest;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::agent::test_dir;
use super::images::{Compression, HOST_BUSYBOX, ImageBuilder, Layer};

/// Debian's containerd.
pub const CONTAINERD_BIN: &str = "/usr/bin/containerd";
/// How long a containerd start may take.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long containerd and its shims get to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Host dirs containerd, its shims and libcni create outside the instance's dir.
const HOST_DIRS: [&str; 3] = ["/run/containerd", "/var/lib/cni", "/var/run/netns"];
/// The command of the pause image [`push_pause_image`] builds: sleeps until TERM or INT.
pub const PAUSE_SCRIPT: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done";

/// What an instance is configured with beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct ContainerdOptions {
    /// `127.0.0.1:PORT` registries reached over plain HTTP (a `hosts.toml` each).
    pub http_registries: Vec<String>,
    /// CNI plugin and config dirs; by default empty dirs in the instance's temp dir.
    pub cni_bin_dir: Option<PathBuf>,
    pub cni_conf_dir: Option<PathBuf>,
    /// The CRI plugin's `sandbox_image` (the pause image); containerd's default if unset.
    pub sandbox_image: Option<String>,
    /// Pin pod network namespaces under the state dir (in the temp dir) rather than in
    /// `/var/run/netns`.
    pub netns_under_state_dir: bool,
    /// Never give a container an `oom_score_adj` below containerd's own (the sandbox
    /// container asks for -998): needed where the host withholds `CAP_SYS_RESOURCE`.
    pub restrict_oom_score_adj: bool,
}

/// A containerd with its own config, root, state, socket and `certs.d` in a `corral-test-*`
/// temp dir; stopped, unmounted and removed on [`Containerd::stop`] or drop.
pub struct Containerd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// [`HOST_DIRS`] that did not exist at the start.
    new_host_dirs: Vec<PathBuf>,
}

impl Containerd {
    /// Starts a fresh instance that reaches `registry` (`127.0.0.1:PORT`) over plain HTTP
    /// and waits until its CRI service answers.
    pub async fn start(registry: &str) -> Result<Containerd> {
        Containerd::start_with(ContainerdOptions {
            http_registries: vec![registry.to_owned()],
            ..ContainerdOptions::default()
        })
        .await
    }

    /// Starts a fresh instance configured with `options` and waits until its CRI service
    /// answers.
    pub async fn start_with(options: ContainerdOptions) -> Result<Containerd> {
        let new_host_dirs = HOST_DIRS
            .iter()
            .map(PathBuf::from)
            .filter(|dir| !dir.exists())
            .collect();
        let dir = test_dir()?;
        let base = dir.path().to_path_buf();
        for registry in &options.http_registries {
            let hosts = base.join("certs.d").join(registry);
            std::fs::create_dir_all(&hosts)?;
            std::fs::write(
                hosts.join("hosts.toml"),
                format!(
                    "server = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  \
                     capabilities = [\"pull\", \"resolve\"]\n"
                ),
            )?;
        }
        for sub in ["certs.d", "net.d", "cni-bin", "tmp"] {
            std::fs::create_dir_all(base.join(sub))?;
        }
        let socket = base.join("containerd.sock");
        let cni_bin = options.cni_bin_dir.unwrap_or_else(|| base.join("cni-bin"));
        let cni_conf = options.cni_conf_dir.unwrap_or_else(|| base.join("net.d"));
        let mut cri = String::new();
        if let Some(image) = &options.sandbox_image {
            cri.push_str(&format!("  sandbox_image = {image:?}\n"));
        }
        if options.netns_under_state_dir {
            cri.push_str("  netns_mounts_under_state_dir = true\n");
        }
        if options.restrict_oom_score_adj {
            cri.push_str("  restrict_oom_score_adj = true\n");
        }
        // Defaults everywhere that touches the benchmarks (overlayfs, 3 downloads at once,
        // layers kept after unpack, runc through the v2 shim); only paths are moved into
        // the temp dir, and snapshotters that cannot work here are not loaded.
        let config = format!(
            "version = 2\n\
             root = {root:?}\n\
             state = {state:?}\n\
             temp = {temp:?}\n\
             disabled_plugins = [\"io.containerd.snapshotter.v1.btrfs\", \
             \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \
             \"io.containerd.snapshotter.v1.aufs\"]\n\n\
             [grpc]\n  address = {socket:?}\n\n\
             [plugins]\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n  \
             max_concurrent_downloads = 3\n{cri}\
             [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  snapshotter = \"overlayfs\"\n  \
             discard_unpacked_layers = false\n\
             [plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = {cni_bin:?}\n  \
             conf_dir = {cni_conf:?}\n\
             [plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = {certs:?}\n",
            root = base.join("root"),
            state = base.join("state"),
            temp = base.join("tmp"),
            opt = base.join("opt"),
            certs = base.join("certs.d"),
        );
        let config_path = base.join("config.toml");
        std::fs::write(&config_path, config)?;
        let log_path = base.join("containerd.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(CONTAINERD_BIN)
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning containerd")?;
        let mut containerd = Containerd {
            dir,
            socket,
            log_path,
            child: Some(child),
            new_host_dirs,
        };
        containerd.wait_ready().await?;
        Ok(containerd)
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(mut client) = CriClient::connect(&self.socket).await {
                if client
                    .runtime
                    .version(VersionRequest::default())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("containerd exited early ({status}); log:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd's CRI service did not answer on {}; log:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The instance's temp dir (root in `root/`, state in `state/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CRI socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A fresh CRI client connection.
    pub async fn client(&self) -> Result<CriClient> {
        Ok(CriClient::connect(&self.socket).await?)
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The shims this instance started (`containerd-shim-runc-v2 ... -address <socket>`):
    /// they are daemons, not children, found by the socket path on their command line.
    pub fn shim_pids(&self) -> Vec<u32> {
        let socket = self.socket.to_string_lossy().into_owned();
        processes_mentioning(&socket)
            .into_iter()
            .filter(|&pid| Some(pid) != self.pid())
            .collect()
    }

    /// Stops containerd, kills its shims, unmounts anything left under its dir and removes
    /// the dir.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()?;
        Ok(())
    }

    fn shutdown(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id())?);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Shims outlive containerd by design; a run that removed all its pods has none left.
        let shims = self.shim_pids();
        for &pid in &shims {
            eprintln!("killing containerd shim {pid} left running");
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while shims
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        unmount_under(self.dir.path(), "containerd")?;
        for dir in &self.new_host_dirs {
            for below in dirs_below(dir) {
                // Fails, and leaves the dir alone, when something is still in it.
                let _ = std::fs::remove_dir(below);
            }
        }
        Ok(())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            eprintln!("cleaning up containerd: {error:#}");
        }
        // The temp dir is removed after this, when `dir` drops.
    }
}

/// Pids of the processes whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
        })
        .collect()
}

/// Lazily unmounts every mount point under `dir`, deepest first; `owner` names who left
/// them, for the message.
pub fn unmount_under(dir: &Path, owner: &str) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|point| PathBuf::from(point.replace("\\040", " ")))
        .filter(|point| point.starts_with(dir))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    for point in points {
        eprintln!("unmounting {} left by {owner}", point.display());
        nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", point.display()))?;
    }
    Ok(())
}

/// `dir` and every directory below it, deepest first (the order to remove them in).
pub fn dirs_below(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        out.push(dir.to_path_buf());
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&entry.path(), out);
            }
        }
    }
    let mut dirs = Vec::new();
    walk(dir, &mut dirs);
    dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
    dirs
}

/// Whether this process may lower an `oom_score_adj` (`CAP_SYS_RESOURCE`, bit 24 of
/// `CapEff`). Without it, set [`ContainerdOptions::restrict_oom_score_adj`]: containerd asks
/// for -998 for its sandbox containers, and runc fails to set it.
pub fn can_lower_oom_score_adj() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|caps| u64::from_str_radix(caps.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Builds a pause image (busybox running [`PAUSE_SCRIPT`]) for containerd's `sandbox_image`,
/// pushes it as `registry/repo:tag` and returns that reference.
///
/// Its layer holds busybox and the two applets the script runs as symlinks, not
/// [`Layer::busybox`]: that layer's applets are hard links whose tar headers say 0644, and
/// containerd (as Docker) applies a hard link header's mode to the shared inode, which
/// leaves `/bin/busybox` not executable.
pub async fn push_pause_image(registry: &str, repo: &str, tag: &str) -> Result<String> {
    let busybox = std::fs::read(HOST_BUSYBOX)
        .with_context(|| format!("reading {HOST_BUSYBOX} (Debian package busybox-static)"))?;
    let mut layer = Layer::new().comment("corral-test: pause");
    for dir in ["/bin", "/dev", "/etc", "/proc", "/sys"] {
        layer = layer.dir(dir, 0o755);
    }
    let layer = layer
        .dir("/tmp", 0o1777)
        .file("/bin/busybox", busybox, 0o755)
        .symlink("/bin/sh", "busybox")
        .symlink("/bin/sleep", "busybox");
    ImageBuilder::new()
        .layer(layer, Compression::Gzip)
        .entrypoint(&["/bin/sh", "-c", PAUSE_SCRIPT])
        .push(registry, repo, tag)
        .await?;
    Ok(format!("{registry}/{repo}:{tag}"))
}
