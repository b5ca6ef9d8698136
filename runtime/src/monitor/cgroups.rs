//! The container's cgroup directories as the monitor sees them: which ones libcontainer made
//! (so `delete` can remove the parents it leaves behind, and never one that existed before),
//! and the OOM-kill counter of its memory cgroup.
//!
//! Everything takes the mount table and paths as arguments, so tests use temp dirs.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub path: PathBuf,
    /// A cgroup2 (unified) hierarchy.
    pub v2: bool,
    /// The v1 controllers of the hierarchy (`cpu`, `memory`, `name=systemd`, ...).
    pub controllers: Vec<String>,
}

/// The cgroup hierarchies in a `/proc/<pid>/mountinfo` text.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts: Vec<CgroupMount> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fs_type = right.next().unwrap_or_default();
        let options = right.nth(1).unwrap_or_default();
        let mount = match fs_type {
            "cgroup2" => CgroupMount {
                path: PathBuf::from(unescape(mount_point)),
                v2: true,
                controllers: Vec::new(),
            },
            "cgroup" => CgroupMount {
                path: PathBuf::from(unescape(mount_point)),
                v2: false,
                controllers: options
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                    .map(str::to_string)
                    .collect(),
            },
            _ => continue,
        };
        if !mounts.iter().any(|m| m.path == mount.path) {
            mounts.push(mount);
        }
    }
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup hierarchies mounted in the monitor's mount namespace.
pub fn host_mounts() -> Result<Vec<CgroupMount>, Error> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).map_err(|source| Error::io("read", path, source))?;
    Ok(parse_mountinfo(&text))
}

/// The spec's `cgroupsPath` as a path below a hierarchy's mount point, as libcontainer's
/// cgroupfs managers join it; `None` if it would leave the hierarchy.
pub fn relative_cgroup_path(cgroups_path: &Path) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in cgroups_path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => relative.push(name),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!relative.as_os_str().is_empty()).then_some(relative)
}

/// The cgroup directories created for the container, per hierarchy, parents first.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CreatedDirs {
    dirs: Vec<Vec<PathBuf>>,
}

impl CreatedDirs {
    /// Before the container is created: the directories of `relative` that do not exist yet
    /// in each hierarchy.
    pub fn before_create(mounts: &[CgroupMount], relative: &Path) -> CreatedDirs {
        let mut dirs = Vec::new();
        for mount in mounts {
            let mut missing = Vec::new();
            let mut path = mount.path.clone();
            for component in relative.components() {
                path.push(component);
                if !missing.is_empty() || path.symlink_metadata().is_err() {
                    missing.push(path.clone());
                }
            }
            if !missing.is_empty() {
                dirs.push(missing);
            }
        }
        CreatedDirs { dirs }
    }

    /// After the container is created: keeps only the directories that now exist, the ones
    /// the creation made.
    pub fn after_create(&mut self) {
        for missing in &mut self.dirs {
            missing.retain(|dir| dir.is_dir());
        }
        self.dirs.retain(|missing| !missing.is_empty());
    }

    /// The directories recorded, parents first.
    pub fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.dirs.iter().flatten()
    }

    /// Removes the recorded directories, leaves first. Gone already is fine, and so is a
    /// parent still in use (another container created at the same time lives in it: the
    /// last one out removes it). The first other failure is returned after trying the rest.
    pub fn remove(&self) -> Result<(), Error> {
        let mut first_error = None;
        for missing in &self.dirs {
            let leaf = missing.len().saturating_sub(1);
            for (index, dir) in missing.iter().enumerate().rev() {
                match std::fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) if index < leaf && err.raw_os_error() == Some(libc::EBUSY) => {}
                    Err(err) => {
                        tracing::warn!(dir = %dir.display(), error = %err, "cannot remove cgroup");
                        first_error.get_or_insert(Error::io("remove cgroup", dir, err));
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Kills every process left in the container's cgroup (`relative` below each hierarchy)
/// and removes the cgroup's own directories: what the monitor's `delete` does, for a
/// container whose monitor is gone (killed, or out of memory). Parents are left: the pod
/// owns them. Waits up to two seconds for the killed processes to leave.
pub fn kill_and_remove(mounts: &[CgroupMount], relative: &Path) -> Result<(), Error> {
    let dirs = existing_dirs(mounts, relative);
    kill_all_in(&dirs);
    let mut first_error = None;
    for dir in &dirs {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "cannot remove cgroup");
                first_error.get_or_insert(Error::io("remove cgroup", dir, err));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn existing_dirs(mounts: &[CgroupMount], relative: &Path) -> Vec<PathBuf> {
    mounts
        .iter()
        .map(|mount| mount.path.join(relative))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// SIGKILLs the processes of the cgroup directories until they are empty (at most two
/// seconds); returns how many processes it signalled.
fn kill_all_in(dirs: &[PathBuf]) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    let mut killed = std::collections::HashSet::new();
    for dir in dirs {
        loop {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            // A killed process stays listed until its parent (the host's init, for an
            // orphan) reaps it: a zombie counts as gone.
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .filter(|&pid| !is_zombie(pid))
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let signalled = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                if signalled.is_ok() {
                    killed.insert(pid);
                }
            }
            if std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    killed.len()
}

/// Whether `pid` has exited and waits to be reaped (or is gone already).
fn is_zombie(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// The container's cgroup below the hierarchies, from its OCI bundle's spec
/// (`cgroupsPath`); `None` for a bundle without a spec or a cgroup.
fn bundle_cgroup(bundle: &Path) -> Option<PathBuf> {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok()?;
    spec.linux()
        .as_ref()
        .and_then(|linux| linux.cgroups_path().as_deref())
        .and_then(relative_cgroup_path)
}

/// [`kill_and_remove`] for the container of the OCI bundle at `bundle` (its spec's
/// `cgroupsPath`, in every hierarchy mounted on the host). A bundle without a spec has
/// nothing to remove.
pub fn remove_bundle_cgroup(bundle: &Path) -> Result<(), Error> {
    let Some(relative) = bundle_cgroup(bundle) else {
        return Ok(());
    };
    kill_and_remove(&host_mounts()?, &relative)
}

/// Kills every process of the container of the OCI bundle at `bundle` through its cgroup
/// (for a container whose monitor is gone) and returns how many there were. The cgroup
/// stays.
pub fn kill_bundle_processes(bundle: &Path) -> Result<usize, Error> {
    let Some(relative) = bundle_cgroup(bundle) else {
        return Ok(0);
    };
    Ok(kill_all_in(&existing_dirs(&host_mounts()?, &relative)))
}

/// The file holding the OOM-kill counter of the container's memory cgroup: v1
/// `memory.oom_control` (`oom_kill`, kernel >= 4.13), else v2 `memory.events`.
pub fn oom_counter_file(mounts: &[CgroupMount], relative: &Path) -> Option<PathBuf> {
    if let Some(memory) = mounts
        .iter()
        .find(|m| !m.v2 && m.controllers.iter().any(|c| c == "memory"))
    {
        return Some(memory.path.join(relative).join("memory.oom_control"));
    }
    mounts
        .iter()
        .find(|m| m.v2)
        .map(|m| m.path.join(relative).join("memory.events"))
}

/// The `oom_kill` counter in a `memory.oom_control` or `memory.events` text.
pub fn parse_oom_kill(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

/// Reads the OOM-kill counter; `None` if the file or the field is missing.
pub fn read_oom_kill(file: &Path) -> Option<u64> {
    parse_oom_kill(&std::fs::read_to_string(file).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
42 31 0:38 / /mnt/with\\040space rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn test_parse_mountinfo_finds_v1_and_v2() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let paths: Vec<_> = mounts.iter().map(|m| m.path.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/memory",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/unified",
                "/mnt/with space"
            ]
        );
        assert_eq!(mounts[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(mounts[2].controllers, ["xattr", "name=systemd"]);
        assert!(mounts[3].v2 && !mounts[1].v2);
    }

    #[test]
    fn test_relative_cgroup_path() {
        let rel = |p: &str| relative_cgroup_path(Path::new(p));
        assert_eq!(
            rel("/kubepods/pod1/c1"),
            Some(PathBuf::from("kubepods/pod1/c1"))
        );
        assert_eq!(rel("corral/c1"), Some(PathBuf::from("corral/c1")));
        assert_eq!(rel("/a/../../etc"), None);
        assert_eq!(rel("/"), None);
    }

    fn fake_mounts(root: &Path) -> Vec<CgroupMount> {
        ["cpu", "memory"]
            .iter()
            .map(|c| {
                std::fs::create_dir_all(root.join(c)).unwrap();
                CgroupMount {
                    path: root.join(c),
                    v2: false,
                    controllers: vec![c.to_string()],
                }
            })
            .collect()
    }

    #[test]
    fn test_created_dirs_removes_only_what_creation_made() {
        let root = tempfile::tempdir().unwrap();
        let mounts = fake_mounts(root.path());
        // The pod cgroup exists in cpu only; the container cgroup nowhere.
        std::fs::create_dir_all(root.path().join("cpu/kubepods/pod1")).unwrap();
        let relative = Path::new("kubepods/pod1/c1");
        let mut dirs = CreatedDirs::before_create(&mounts, relative);
        // "Creation" makes the container cgroup (and missing parents) in both.
        for m in &mounts {
            std::fs::create_dir_all(m.path.join(relative)).unwrap();
        }
        dirs.after_create();
        let listed: Vec<_> = dirs.dirs().cloned().collect();
        assert_eq!(
            listed,
            [
                root.path().join("cpu/kubepods/pod1/c1"),
                root.path().join("memory/kubepods"),
                root.path().join("memory/kubepods/pod1"),
                root.path().join("memory/kubepods/pod1/c1"),
            ]
        );
        dirs.remove().unwrap();
        assert!(
            root.path().join("cpu/kubepods/pod1").is_dir(),
            "pre-existing parent kept"
        );
        assert!(!root.path().join("cpu/kubepods/pod1/c1").exists());
        assert!(!root.path().join("memory/kubepods").exists());
        // Removing again is fine.
        dirs.remove().unwrap();
    }

    #[test]
    fn test_created_dirs_after_create_drops_dirs_never_made() {
        let root = tempfile::tempdir().unwrap();
        let mounts = fake_mounts(root.path());
        let relative = Path::new("a/b");
        let mut dirs = CreatedDirs::before_create(&mounts, relative);
        std::fs::create_dir_all(root.path().join("cpu/a/b")).unwrap();
        dirs.after_create();
        assert_eq!(dirs.dirs().count(), 2);
        assert!(dirs.dirs().all(|d| d.starts_with(root.path().join("cpu"))));
    }

    #[test]
    fn test_created_dirs_remove_reports_non_empty_dir() {
        let root = tempfile::tempdir().unwrap();
        let mounts = fake_mounts(root.path());
        let relative = Path::new("x");
        let mut dirs = CreatedDirs::before_create(&mounts, relative);
        std::fs::create_dir_all(root.path().join("cpu/x/busy")).unwrap();
        dirs.after_create();
        assert!(dirs.remove().is_err());
    }

    #[test]
    fn test_kill_and_remove_removes_empty_container_dirs_only() {
        let root = tempfile::tempdir().unwrap();
        let mounts = fake_mounts(root.path());
        let relative = Path::new("pod/ctr");
        for mount in &mounts {
            std::fs::create_dir_all(mount.path.join(relative)).unwrap();
        }
        kill_and_remove(&mounts, relative).unwrap();
        for mount in &mounts {
            assert!(!mount.path.join(relative).exists());
            assert!(mount.path.join("pod").is_dir(), "the pod's parent stays");
        }
    }

    #[test]
    fn test_oom_counter_file_prefers_v1_memory() {
        let mounts = parse_mountinfo(MOUNTINFO);
        let rel = Path::new("c1");
        assert_eq!(
            oom_counter_file(&mounts, rel),
            Some(PathBuf::from("/sys/fs/cgroup/memory/c1/memory.oom_control"))
        );
        let v2_only: Vec<_> = mounts.into_iter().filter(|m| m.v2).collect();
        assert_eq!(
            oom_counter_file(&v2_only, rel),
            Some(PathBuf::from("/sys/fs/cgroup/unified/c1/memory.events"))
        );
    }

    #[test]
    fn test_parse_oom_kill_v1_and_v2() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            Some(2)
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"),
            Some(1)
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\nunder_oom 0\n"), None);
    }

    #[test]
    fn test_read_oom_kill_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("memory.oom_control");
        assert_eq!(read_oom_kill(&file), None);
        std::fs::write(&file, "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n").unwrap();
        assert_eq!(read_oom_kill(&file), Some(0));
    }
}
