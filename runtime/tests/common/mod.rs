//! Fixtures shared by the node tests (root): a busybox bundle run through the monitor, and
//! checks that nothing of a container is left on the node.

#![allow(dead_code)] // each test crate uses its own part
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use corral_runtime::Error;
use corral_runtime::monitor::{self, CONFIG_FILE, ExitRecord, MonitorConfig, Started, cgroups};
use serde_json::json;

pub const MONITOR: &str = env!("CARGO_BIN_EXE_corral-monitor");

pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the monitor node tests need root (namespaces, cgroups, mounts)"
    );
}

/// A bundle in a temp dir: busybox rootfs, config.json, monitor.json.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub config: MonitorConfig,
    pub cgroup: String,
}

impl Bundle {
    pub fn new(args: &[&str], pid_namespace: bool) -> Bundle {
        Bundle::with(args, pid_namespace, |_, _| {})
    }

    /// A bundle whose spec and monitor config `change` may adjust before they are written.
    pub fn with(
        args: &[&str],
        pid_namespace: bool,
        change: impl FnOnce(&mut serde_json::Value, &mut MonitorConfig),
    ) -> Bundle {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = tempfile::Builder::new()
            .prefix("corral-test-")
            .tempdir()
            .unwrap();
        let unique = format!(
            "{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let id = format!("corral-test-{unique}");
        let cgroup = format!("corral-test-{unique}");
        let bundle = dir.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let mut namespaces = vec![
            json!({"type": "mount"}),
            json!({"type": "ipc"}),
            json!({"type": "uts"}),
        ];
        if pid_namespace {
            namespaces.insert(0, json!({"type": "pid"}));
        }
        let mut spec = json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/bin", "HOME=/"],
                "cwd": "/",
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": "corral-test",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                 "options": ["nosuid", "noexec", "nodev", "ro"]}
            ],
            "linux": {
                "namespaces": namespaces,
                "cgroupsPath": format!("/{cgroup}/ctr"),
                "resources": {"memory": {"limit": 64 * 1024 * 1024}},
                "maskedPaths": ["/proc/kcore", "/sys/firmware"],
                "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
            }
        });
        let mut config = MonitorConfig::new(&id, &bundle, &dir.path().join("state"));
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        config.log_path = dir.path().join("logs/0.log");
        change(&mut spec, &mut config);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&spec).unwrap(),
        )
        .unwrap();
        config.save(&bundle.join(CONFIG_FILE)).unwrap();
        Bundle {
            dir,
            config,
            cgroup,
        }
    }

    pub fn spawn(&self) -> Result<Started, Error> {
        monitor::spawn_monitor(Path::new(MONITOR), &self.config.bundle.join(CONFIG_FILE))
    }

    pub fn spawn_binary(&self, binary: &Path) -> Result<Started, Error> {
        monitor::spawn_monitor(binary, &self.config.bundle.join(CONFIG_FILE))
    }

    /// The container's root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.config.bundle.join("rootfs")
    }

    /// Links more busybox applets into the rootfs's /bin.
    pub fn add_applets(&self, applets: &[&str]) {
        for applet in applets {
            std::os::unix::fs::symlink("busybox", self.rootfs().join("bin").join(applet)).unwrap();
        }
    }

    pub fn socket(&self) -> &Path {
        &self.config.socket
    }

    pub fn wait_exit_record(&self) -> ExitRecord {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.config.exit_file.exists() {
            assert!(Instant::now() < deadline, "no exit record");
            std::thread::sleep(Duration::from_millis(20));
        }
        monitor::read_exit_record(&self.config.exit_file).unwrap()
    }

    /// The log records without timestamps.
    pub fn log_records(&self) -> Vec<String> {
        std::fs::read_to_string(&self.config.log_path)
            .unwrap()
            .lines()
            .map(|line| line.split_once(' ').unwrap().1.to_string())
            .collect()
    }

    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        cgroups::parse_mountinfo(&mountinfo)
            .into_iter()
            .map(|m| m.path.join(&self.cgroup))
            .filter(|p| p.exists())
            .collect()
    }

    /// Asserts that nothing of the container is left on the node.
    pub fn assert_nothing_left(&self, started: Option<Started>) {
        assert_eq!(self.cgroup_dirs(), Vec::<PathBuf>::new(), "cgroups left");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.dir.path().to_str().unwrap();
        assert!(!mountinfo.contains(root), "mounts left: {mountinfo}");
        assert!(
            !self.config.state_root.join(&self.config.id).exists(),
            "state left"
        );
        assert!(!self.config.socket.exists(), "socket left");
        if let Some(started) = started {
            wait_gone(started.monitor_pid);
            assert!(process_gone(started.container_pid), "init left");
        }
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(target) = std::fs::read_link(entry.path().join("root")) {
                assert!(
                    !target.starts_with(self.dir.path()),
                    "process {:?} left",
                    entry.file_name()
                );
            }
        }
    }
}

/// A test that failed halfway must not leave its container behind: kill and delete it.
impl Drop for Bundle {
    fn drop(&mut self) {
        if !self.config.socket.exists() {
            return;
        }
        let _ = monitor::signal(&self.config.socket, libc::SIGKILL, true);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.config.exit_file.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = monitor::delete(&self.config.socket);
    }
}

/// Gone, or a zombie waiting for a reaper that is not us.
pub fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

pub fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !process_gone(pid) {
        assert!(Instant::now() < deadline, "monitor {pid} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn status_field(pid: i32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap()
}

/// How long the stream helpers wait for output.
pub const STREAM_WAIT: Duration = Duration::from_secs(10);

/// Reads `reader` until what was read contains `needle`; returns all of it.
pub async fn read_until(reader: &mut (impl tokio::io::AsyncRead + Unpin), needle: &str) -> String {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + STREAM_WAIT;
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, tokio::io::AsyncReadExt::read(reader, &mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&seen)))
            .unwrap();
        assert!(
            n > 0,
            "EOF before {needle:?}: {:?}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(seen).unwrap()
}

/// Reads `reader` (if any) to its end.
pub async fn read_to_end(reader: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut text = String::new();
    if let Some(mut reader) = reader {
        tokio::time::timeout(
            STREAM_WAIT,
            tokio::io::AsyncReadExt::read_to_string(&mut reader, &mut text),
        )
        .await
        .expect("output did not end")
        .unwrap();
    }
    text
}
