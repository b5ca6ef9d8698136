//! The seam between the spec builder and the host: the few facts it reads from the machine
//! (cgroup version and controllers, the agent's capabilities, device nodes, hostname, kernel
//! version). [`SystemHost`] reads the real host; unit tests pass a fake.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, LinuxDeviceType};

use crate::Error;

/// What the spec builder needs to know about the host.
pub trait HostProbe {
    /// Whether `/sys/fs/cgroup` is the cgroup v2 unified hierarchy (it holds
    /// `cgroup.controllers`). A hybrid v1 host answers false.
    fn cgroup_v2(&self) -> bool;
    /// Whether memory+swap limits can be set (v1 `memory.memsw.*`, v2 `memory.swap.max`).
    fn swap_controller(&self) -> bool;
    /// Whether the hugetlb controller is available.
    fn hugetlb_controller(&self) -> bool;
    /// The host's hostname (for `HOSTNAME` in pods that share the host's UTS namespace).
    fn hostname(&self) -> Result<String, Error>;
    /// The capabilities the agent holds (its effective set): what "ALL" and privileged
    /// containers get, as containerd's `cap.Current()`.
    fn capabilities(&self) -> Result<Vec<Capability>, Error>;
    /// The device nodes at `host_path` after resolving symlinks: the node itself, or every
    /// node below a directory (FIFOs and `pts`, `shm`, `fd`, `mqueue` skipped, as containerd).
    fn devices(&self, host_path: &Path) -> Result<Vec<HostDevice>, Error>;
    /// The running kernel's (major, minor) version, when known.
    fn kernel_version(&self) -> Option<(u32, u32)>;
    /// The cgroup v1 hierarchies mounted under `/sys/fs/cgroup` that container cgroups are
    /// made in (libcgroups' controllers; not `name=systemd`): empty on a v2 host.
    fn cgroup_v1_hierarchies(&self) -> Vec<CgroupV1Hierarchy>;
}

/// A cgroup v1 hierarchy mounted at `/sys/fs/cgroup/<dir>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupV1Hierarchy {
    /// Its directory name (`cpu,cpuacct`, `memory`, ...).
    pub dir: String,
    /// Its controllers (`cpu`, `cpuacct`): each is also a name the hierarchy is known by.
    pub controllers: Vec<String>,
}

/// The v1 controllers libcgroups makes container cgroups in.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// A device node on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// The node's path on the host (symlinks resolved).
    pub path: PathBuf,
    /// Its path below the directory that was asked for (empty when a node was asked for).
    pub relative: PathBuf,
    /// `b` or `c`.
    pub typ: LinuxDeviceType,
    pub major: i64,
    pub minor: i64,
    /// Permission bits (without the file type).
    pub file_mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The real host.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemHost;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

impl HostProbe for SystemHost {
    fn cgroup_v2(&self) -> bool {
        Path::new(CGROUP_ROOT).join("cgroup.controllers").exists()
    }

    fn swap_controller(&self) -> bool {
        if !self.cgroup_v2() {
            return Path::new(CGROUP_ROOT)
                .join("memory/memory.memsw.limit_in_bytes")
                .exists();
        }
        // memory.swap.max does not exist at the root: look at our own cgroup.
        let Ok(own) = fs::read_to_string("/proc/self/cgroup") else {
            return false;
        };
        own.lines()
            .find_map(|line| line.strip_prefix("0::"))
            .is_some_and(|path| {
                Path::new(CGROUP_ROOT)
                    .join(path.trim_start_matches('/'))
                    .join("memory.swap.max")
                    .exists()
            })
    }

    fn cgroup_v1_hierarchies(&self) -> Vec<CgroupV1Hierarchy> {
        let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
            return Vec::new();
        };
        v1_hierarchies(&crate::monitor::cgroups::parse_mountinfo(&mountinfo))
    }

    fn hugetlb_controller(&self) -> bool {
        if self.cgroup_v2() {
            fs::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|name| name == "hugetlb"))
        } else {
            Path::new(CGROUP_ROOT).join("hugetlb").is_dir()
        }
    }

    fn hostname(&self) -> Result<String, Error> {
        let path = Path::new("/proc/sys/kernel/hostname");
        fs::read_to_string(path)
            .map(|h| h.trim().to_string())
            .map_err(|e| Error::io("read", path, e))
    }

    fn capabilities(&self) -> Result<Vec<Capability>, Error> {
        let path = Path::new("/proc/self/status");
        let status = fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        let bits = status
            .lines()
            .find_map(|line| line.strip_prefix("CapEff:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .ok_or_else(|| {
                Error::io(
                    "parse CapEff in",
                    path,
                    io::Error::new(io::ErrorKind::InvalidData, "no CapEff line"),
                )
            })?;
        Ok(crate::spec::security::capabilities_from_bits(bits))
    }

    fn devices(&self, host_path: &Path) -> Result<Vec<HostDevice>, Error> {
        let resolved =
            fs::canonicalize(host_path).map_err(|e| Error::io("resolve", host_path, e))?;
        let meta = fs::metadata(&resolved).map_err(|e| Error::io("stat", &resolved, e))?;
        if meta.is_dir() {
            let mut out = Vec::new();
            walk_devices(&resolved, &resolved, &mut out)?;
            return Ok(out);
        }
        match device_from_metadata(&resolved, Path::new(""), &meta) {
            Some(device) => Ok(vec![device]),
            None => Err(Error::InvalidArgument(format!(
                "device {}: not a block or character device",
                host_path.display()
            ))),
        }
    }

    fn kernel_version(&self) -> Option<(u32, u32)> {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        parse_kernel_version(&release)
    }
}

/// Parses "6.1.0-18-amd64" into (6, 1).
/// The v1 hierarchies directly under `/sys/fs/cgroup` that hold a libcgroups controller.
pub(crate) fn v1_hierarchies(
    mounts: &[crate::monitor::cgroups::CgroupMount],
) -> Vec<CgroupV1Hierarchy> {
    mounts
        .iter()
        .filter(|m| !m.v2 && m.path.parent() == Some(Path::new(CGROUP_ROOT)))
        .filter(|m| {
            m.controllers
                .iter()
                .any(|c| V1_CONTROLLERS.contains(&c.as_str()))
        })
        .filter_map(|m| {
            Some(CgroupV1Hierarchy {
                dir: m.path.file_name()?.to_str()?.to_string(),
                controllers: m
                    .controllers
                    .iter()
                    .filter(|c| V1_CONTROLLERS.contains(&c.as_str()))
                    .cloned()
                    .collect(),
            })
        })
        .collect()
}

pub(crate) fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_default();
    Some((major, minor))
}

fn walk_devices(base: &Path, dir: &Path, out: &mut Vec<HostDevice>) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue; // gone meanwhile
        };
        if meta.is_dir() {
            let skipped = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
            if !skipped.iter().any(|s| name == *s) {
                walk_devices(base, &path, out)?;
            }
            continue;
        }
        if name == "console" {
            continue;
        }
        let relative = path.strip_prefix(base).unwrap_or(&path);
        if let Some(device) = device_from_metadata(&path, relative, &meta) {
            out.push(device);
        }
    }
    Ok(())
}

fn device_from_metadata(path: &Path, relative: &Path, meta: &fs::Metadata) -> Option<HostDevice> {
    let file_type = meta.file_type();
    let typ = if file_type.is_block_device() {
        LinuxDeviceType::B
    } else if file_type.is_char_device() {
        LinuxDeviceType::C
    } else {
        return None;
    };
    let rdev = meta.rdev();
    Some(HostDevice {
        path: path.to_path_buf(),
        relative: relative.to_path_buf(),
        typ,
        major: i64::from(libc::major(rdev)),
        minor: i64::from(libc::minor(rdev)),
        file_mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_v1_hierarchies_of_a_hybrid_host() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/misc rw - cgroup cgroup rw,misc
";
        let found = v1_hierarchies(&crate::monitor::cgroups::parse_mountinfo(mountinfo));
        assert_eq!(
            found,
            vec![
                CgroupV1Hierarchy {
                    dir: "cpu,cpuacct".into(),
                    controllers: vec!["cpu".into(), "cpuacct".into()],
                },
                CgroupV1Hierarchy {
                    dir: "memory".into(),
                    controllers: vec!["memory".into()],
                },
            ]
        );
    }

    #[test]
    fn test_parse_kernel_version_variants() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64\n"), Some((6, 1)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(parse_kernel_version("5"), Some((5, 0)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn test_system_host_reads_dev_null() {
        let devices = SystemHost.devices(Path::new("/dev/null")).unwrap();
        assert_eq!(devices.len(), 1);
        assert_eq!(devices[0].typ, LinuxDeviceType::C);
        assert_eq!((devices[0].major, devices[0].minor), (1, 3));
    }

    #[test]
    fn test_system_host_refuses_regular_file_as_device() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        let err = SystemHost.devices(&file).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn test_system_host_capabilities_parse() {
        // Whatever the test runs with, parsing /proc/self/status must work.
        SystemHost.capabilities().unwrap();
    }
}
