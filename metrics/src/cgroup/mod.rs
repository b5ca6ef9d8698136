//! The cgroup stats reader for cgroup v1, v2 and hybrid hosts.
//!
//! [`CgroupReader::new`] decides once, per resource, which hierarchy to read: a v1
//! hierarchy carrying the controller wins, else a v2 hierarchy whose root
//! `cgroup.controllers` lists it (on a hybrid host the unified mount usually has no
//! controllers, so v1 is read). [`CgroupReader::read`] then never fails as a whole: whatever
//! cannot be read or parsed stays `None` (and is logged at debug), the rest comes back.
//!
//! Everything here does blocking file I/O: call it from a blocking thread.

mod mountinfo;
pub mod parse;
mod stats;
mod v1;
mod v2;

use std::path::{Component, Path, PathBuf};

pub use stats::{CgroupStats, CpuStats, MemoryStats, PidsStats};

use crate::Error;

/// A mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory` or `/sys/fs/cgroup`.
    pub path: PathBuf,
    /// Whether it is the unified (cgroup2) hierarchy.
    pub v2: bool,
    /// For v1, the controllers as named in the mount options (`cpu`, `cpuacct`, `memory`,
    /// `pids`, `name=systemd`, ...). Ignored for v2, whose root `cgroup.controllers` is read.
    pub controllers: Vec<String>,
}

/// Where one resource is read from: a hierarchy root and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    V1(PathBuf),
    V2(PathBuf),
}

impl Source {
    fn root(&self) -> &Path {
        match self {
            Source::V1(root) | Source::V2(root) => root,
        }
    }
}

/// Reads [`CgroupStats`] of cgroups by their cgroupfs path. Cheap to clone.
#[derive(Clone, Debug)]
pub struct CgroupReader {
    /// CPU usage, user and system time: v1 `cpuacct`, v2 `cpu`.
    cpu_usage: Option<Source>,
    /// CFS throttling: v1 `cpu`, v2 `cpu`.
    cpu_throttling: Option<Source>,
    memory: Option<Source>,
    pids: Option<Source>,
    /// USER_HZ, the unit of v1 `cpuacct.stat`.
    clk_tck: Option<u64>,
}

impl CgroupReader {
    /// Chooses, per resource, the hierarchy to read from. Reads the root
    /// `cgroup.controllers` of each v2 hierarchy (a missing file counts as no controllers).
    pub fn new(hierarchies: &[Hierarchy]) -> CgroupReader {
        let v2_controllers: Vec<Vec<String>> = hierarchies
            .iter()
            .map(|hierarchy| {
                if !hierarchy.v2 {
                    return Vec::new();
                }
                let path = hierarchy.path.join("cgroup.controllers");
                logged(parse::read_text(&path))
                    .map(|text| text.split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default()
            })
            .collect();
        let select = |v1_name: &str, v2_name: &str| {
            let v1 = hierarchies
                .iter()
                .find(|h| !h.v2 && h.controllers.iter().any(|c| c == v1_name))
                .map(|h| Source::V1(h.path.clone()));
            v1.or_else(|| {
                hierarchies
                    .iter()
                    .zip(&v2_controllers)
                    .find(|(h, listed)| h.v2 && listed.iter().any(|c| c == v2_name))
                    .map(|(h, _)| Source::V2(h.path.clone()))
            })
        };
        let clk_tck = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
            Ok(Some(ticks)) if ticks > 0 => u64::try_from(ticks).ok(),
            other => {
                tracing::warn!(result = ?other, "sysconf(_SC_CLK_TCK) gave no tick rate");
                None
            }
        };
        let reader = CgroupReader {
            cpu_usage: select("cpuacct", "cpu"),
            cpu_throttling: select("cpu", "cpu"),
            memory: select("memory", "memory"),
            pids: select("pids", "pids"),
            clk_tck,
        };
        tracing::debug!(
            cpu_usage = ?reader.cpu_usage,
            cpu_throttling = ?reader.cpu_throttling,
            memory = ?reader.memory,
            pids = ?reader.pids,
            "cgroup stats sources chosen"
        );
        reader
    }

    /// Reads the stats of the cgroup at `cgroup_path`, the cgroupfs path relative to each
    /// hierarchy root (e.g. `/kubepods/pod123/abc`). Never fails: fields that cannot be read
    /// are `None`. A path with `.` or `..` components reads as nothing.
    pub fn read(&self, cgroup_path: &str) -> CgroupStats {
        let Some(relative) = relative_path(cgroup_path) else {
            tracing::debug!(cgroup = cgroup_path, "cgroup path is not a plain path");
            return CgroupStats::default();
        };
        let usage = self.cpu_usage.as_ref().map(|source| {
            let dir = source.root().join(&relative);
            match source {
                Source::V1(_) => v1::read_cpuacct(&dir, self.clk_tck),
                Source::V2(_) => v2::read_cpu(&dir),
            }
        });
        let throttling = self.cpu_throttling.as_ref().map(|source| {
            let dir = source.root().join(&relative);
            match source {
                // v2 `cpu.stat` has both halves: do not read it twice.
                Source::V2(_) if self.cpu_usage.as_ref() == Some(source) => {
                    usage.clone().unwrap_or_default()
                }
                Source::V2(_) => v2::read_cpu(&dir),
                Source::V1(_) => v1::read_cpu_throttling(&dir),
            }
        });
        let usage = usage.unwrap_or_default();
        let throttling = throttling.unwrap_or_default();
        let cpu = CpuStats {
            usage_ns: usage.usage_ns,
            user_ns: usage.user_ns,
            system_ns: usage.system_ns,
            nr_periods: throttling.nr_periods,
            nr_throttled: throttling.nr_throttled,
            throttled_ns: throttling.throttled_ns,
        };
        let memory = self
            .memory
            .as_ref()
            .map(|source| {
                let dir = source.root().join(&relative);
                match source {
                    Source::V1(_) => v1::read_memory(&dir),
                    Source::V2(_) => v2::read_memory(&dir),
                }
            })
            .unwrap_or_default();
        let pids = self
            .pids
            .as_ref()
            .map(|source| read_pids(&source.root().join(&relative)))
            .unwrap_or_default();
        CgroupStats { cpu, memory, pids }
    }

    /// Whether the cgroup exists in at least one hierarchy this reader reads from.
    pub fn exists(&self, cgroup_path: &str) -> bool {
        let Some(relative) = relative_path(cgroup_path) else {
            return false;
        };
        [
            &self.cpu_usage,
            &self.cpu_throttling,
            &self.memory,
            &self.pids,
        ]
        .into_iter()
        .flatten()
        .any(|source| source.root().join(&relative).is_dir())
    }
}

/// `pids.current` and `pids.max`, the same files in v1 and v2.
fn read_pids(dir: &Path) -> PidsStats {
    PidsStats {
        current: logged(parse::read_u64(&dir.join("pids.current"))),
        limit: logged(parse::read_limit(&dir.join("pids.max"))).and_then(|limit| limit.value()),
    }
}

/// The cgroup path without its leading slash, to join onto a hierarchy root; `None` when it
/// has `.` or `..` components (it could leave the hierarchy).
fn relative_path(cgroup_path: &str) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in Path::new(cgroup_path).components() {
        match component {
            Component::RootDir => {}
            Component::Normal(name) => relative.push(name),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(relative)
}

/// The value, or `None` after logging why there is none.
fn logged<T>(result: Result<T, Error>) -> Option<T> {
    result
        .inspect_err(|error| tracing::debug!(%error, "cgroup stat unavailable"))
        .ok()
}

/// USER_HZ ticks to nanoseconds, saturating.
fn ticks_to_ns(ticks: u64, clk_tck: u64) -> Option<u64> {
    if clk_tck == 0 {
        return None;
    }
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(clk_tck);
    Some(u64::try_from(ns).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
