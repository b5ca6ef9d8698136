//! CPU and memory of a runtime under benchmark: a cgroup of the benchmark per runtime (CPU)
//! and the runtime's processes found by their temp dir (memory).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::common::containerd::{dirs_below, processes_mentioning};

/// Wall and CPU time of one phase.
pub struct Phase {
    started: Instant,
    cpu: Option<f64>,
}

impl Phase {
    pub fn start(meter: &Meter) -> Phase {
        Phase {
            started: Instant::now(),
            cpu: meter.cpu_seconds(),
        }
    }

    pub fn finish(self, meter: &Meter) -> (f64, Option<f64>) {
        let cpu = self
            .cpu
            .zip(meter.cpu_seconds())
            .map(|(before, after)| after - before);
        (self.started.elapsed().as_secs_f64(), cpu)
    }
}

/// Processes and memory of a runtime: the sum of their RSS (which counts pages they share,
/// such as 50 shims' text, once per process) and of their PSS (which splits shared pages).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub processes: usize,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl std::fmt::Display for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |kib: u64| kib as f64 / 1024.0;
        write!(
            f,
            "{:>3} proc {:>6.1} / {:>5.1}",
            self.processes,
            mib(self.rss_kib),
            mib(self.pss_kib)
        )
    }
}

/// One process's memory in KiB: resident (RSS), proportional (PSS: shared pages split among
/// their users) and unique (USS: `Private_Clean + Private_Dirty`, what its exit would free).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessMemory {
    pub rss_kib: u64,
    pub pss_kib: u64,
    pub uss_kib: u64,
}

impl ProcessMemory {
    /// `/proc/<pid>/smaps_rollup` of a live process.
    pub fn of(pid: u32) -> Option<ProcessMemory> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
        let field = |name| kib_field(&text, name);
        Some(ProcessMemory {
            rss_kib: field("Rss:")?,
            pss_kib: field("Pss:")?,
            uss_kib: field("Private_Clean:")? + field("Private_Dirty:")?,
        })
    }
}

/// The number after `name` on its line of a `/proc` text (sizes in KiB).
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix(name))?;
    line.split_whitespace().next()?.parse().ok()
}

/// A numeric field of `/proc/<pid>/<file>`: `PPid:` or `VmRSS:` of `status`, `Pss:` of
/// `smaps_rollup` (sizes in KiB).
pub fn proc_field(pid: u32, file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    kib_field(&text, name)
}

/// The file name of a process's executable (`corral-monitor`, `containerd-shim-runc-v2`).
pub fn executable_name(pid: u32) -> Option<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    Some(exe.file_name()?.to_string_lossy().into_owned())
}

/// Measures a runtime's CPU and memory: its processes sit in a cgroup of their own (CPU),
/// and are found by their temp dir on their command line (the daemon by its config path,
/// containerd's shims by its socket path, Corral's pod-inits by their pins), with all their
/// descendants (memory).
pub struct Meter {
    usage: Option<PathBuf>,
    dir: String,
}

impl Meter {
    /// CPU seconds the cgroup's processes (and their reaped children) have used.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let usage = self.usage.as_ref()?;
        let text = std::fs::read_to_string(usage).ok()?;
        if usage.ends_with("cpu.stat") {
            let usec = text.lines().find_map(|l| l.strip_prefix("usage_usec "))?;
            Some(usec.trim().parse::<f64>().ok()? / 1e6)
        } else {
            Some(text.trim().parse::<f64>().ok()? / 1e9)
        }
    }

    /// The runtime's processes and their descendants (pause containers, containers).
    pub fn processes(&self) -> HashSet<u32> {
        let roots = processes_mentioning(&self.dir);
        let mut parents: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = proc_field(pid, "status", "PPid:") {
                parents.entry(ppid).or_default().push(pid);
            }
        }
        let mut all: HashSet<u32> = HashSet::new();
        let mut queue = roots;
        while let Some(pid) = queue.pop() {
            if all.insert(pid) {
                queue.extend(parents.get(&u64::from(pid)).into_iter().flatten());
            }
        }
        all
    }

    /// The runtime's processes, their descendants and their memory.
    pub fn memory(&self) -> Memory {
        let all = self.processes();
        let sum = |file, name| {
            all.iter()
                .filter_map(|&pid| proc_field(pid, file, name))
                .sum()
        };
        Memory {
            processes: all.len(),
            rss_kib: sum("status", "VmRSS:"),
            pss_kib: sum("smaps_rollup", "Pss:"),
        }
    }
}

/// `corral-test-bench-<pid>` in every cgroup hierarchy: the pods' cgroup parents go under
/// it, and a cpuacct cgroup per runtime; everything in it is killed and removed on drop.
pub struct BenchCgroups {
    name: String,
}

impl BenchCgroups {
    pub fn new() -> BenchCgroups {
        BenchCgroups {
            name: format!(
                "{}bench-{}",
                crate::common::agent::TEST_PREFIX,
                std::process::id()
            ),
        }
    }

    /// The cgroup parent of pod `uid` (cgroupfs driver, as kubelet names it).
    pub fn pod_parent(&self, uid: &str) -> String {
        format!("/{}/pod{uid}", self.name)
    }

    /// Moves the runtime found by its temp dir `dir` (its daemon, before it has forked
    /// anything) into a cgroup of its own, named `runtime`; the meter reads the cgroup's CPU
    /// usage (cgroup v1 cpuacct or v2) and the memory of the processes that mention `dir`.
    pub fn account(&self, runtime: &str, dir: &Path) -> Result<Meter> {
        let dir = dir.display().to_string();
        let (cgroup, usage) = if Path::new("/sys/fs/cgroup/cpuacct/cpuacct.usage").exists() {
            let cgroup = Path::new("/sys/fs/cgroup/cpuacct")
                .join(&self.name)
                .join(runtime);
            (cgroup.clone(), cgroup.join("cpuacct.usage"))
        } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            let cgroup = Path::new("/sys/fs/cgroup").join(&self.name).join(runtime);
            (cgroup.clone(), cgroup.join("cpu.stat"))
        } else {
            eprintln!("no cpuacct or cgroup2 hierarchy: CPU time is not measured");
            return Ok(Meter { usage: None, dir });
        };
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("creating {}", cgroup.display()))?;
        for pid in processes_mentioning(&dir) {
            std::fs::write(cgroup.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("moving {pid} into {}", cgroup.display()))?;
        }
        Ok(Meter {
            usage: Some(usage),
            dir,
        })
    }
}

impl BenchCgroups {
    /// The benchmark's cgroup in every hierarchy (`/sys/fs/cgroup/<hierarchy>/<name>` for
    /// v1, `/sys/fs/cgroup/<name>` for v2), whether it exists or not.
    fn roots(&self) -> Vec<PathBuf> {
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .chain([PathBuf::from("/sys/fs/cgroup")])
            .map(|hierarchy| hierarchy.join(&self.name))
            .collect()
    }

    /// Every cgroup of the benchmark in every hierarchy, deepest first.
    fn dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .roots()
            .iter()
            .flat_map(|root| dirs_below(root))
            .collect();
        dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
        dirs
    }

    /// What the runtimes left of their containers' cgroups: any cgroup below a pod's cgroup
    /// parent, with the number of processes in it. (Pod parents are kubelet's to remove, as
    /// the runtimes' accounting cgroups are the benchmark's.)
    pub fn container_cgroups_left(&self) -> Vec<String> {
        let mut left = Vec::new();
        for root in self.roots() {
            for dir in dirs_below(&root) {
                let depth = dir
                    .strip_prefix(&root)
                    .map_or(0, |rel| rel.components().count());
                if depth >= 2 {
                    let procs =
                        std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                    left.push(format!(
                        "{} ({} processes)",
                        dir.display(),
                        procs.lines().count()
                    ));
                }
            }
        }
        left
    }
}

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        let dirs = self.dirs();
        for dir in &dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .lines()
                .filter_map(|line| line.trim().parse::<i32>().ok())
            {
                eprintln!("killing {pid} left in {}", dir.display());
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        for dir in dirs {
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(error) = std::fs::remove_dir(&dir) {
                if Instant::now() > deadline {
                    eprintln!("removing cgroup {}: {error}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}
