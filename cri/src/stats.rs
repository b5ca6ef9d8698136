//! Container and pod stats for the CRI stats calls, from the `metrics` crate's readers:
//! cgroup CPU/memory/pids, the writable layer's disk usage (measured in the background, so
//! a request never walks a directory) and the pod network namespace's interface counters
//! (a netlink socket opened once per pod).
//!
//! Everything here blocks on the kernel; the RPC handlers call it on a blocking thread, once
//! per request for the whole list.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral_metrics::cadvisor::{
    ContainerLabels, ContainerSample, ContainerSpec, PodNetworkSample, write_cadvisor,
};
use corral_metrics::{
    CgroupReader, CgroupStats, CpuRate, DiskUsageCache, Hierarchy, InterfaceStats, NetnsCounters,
};
use k8s_cri::v1::{
    ContainerAttributes, ContainerStats, CpuUsage, FilesystemIdentifier, FilesystemUsage,
    LinuxPodSandboxStats, MemoryUsage, NetworkInterfaceUsage, NetworkUsage, PodSandboxAttributes,
    PodSandboxStats, ProcessUsage, SwapUsage, UInt64Value,
};

use crate::container_record::{ContainerPhase, ContainerRecord};
use crate::sandbox_record::SandboxRecord;

/// How often the writable layers are re-measured.
const DISK_USAGE_INTERVAL: Duration = Duration::from_secs(15);
/// The interface kubelet reports as the pod's (`default_interface`).
const POD_INTERFACE: &str = "eth0";

/// The readers and the state that outlives one request (CPU samples, disk usage, sockets).
pub struct StatsCollector {
    reader: CgroupReader,
    cpu: CpuRate,
    disk: Option<DiskUsageCache>,
    /// Where the writable layers live (`fs_id.mountpoint` of the writable layer usage).
    layers_dir: PathBuf,
    /// Netlink sockets in the pods' network namespaces, by sandbox ID.
    netns: Mutex<HashMap<String, Arc<NetnsCounters>>>,
}

impl std::fmt::Debug for StatsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCollector")
            .field("layers_dir", &self.layers_dir)
            .finish_non_exhaustive()
    }
}

/// A stats sample time: now as unix nanoseconds, and as an instant for rates.
#[derive(Clone, Copy)]
struct Now {
    nanos: i64,
    instant: Instant,
}

impl Now {
    fn take() -> Now {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or_default();
        Now {
            nanos,
            instant: Instant::now(),
        }
    }
}

fn value(v: Option<u64>) -> Option<UInt64Value> {
    v.map(|value| UInt64Value { value })
}

impl StatsCollector {
    /// Reads the host's cgroup mounts and starts the disk usage thread. Blocking.
    pub fn new(layers_dir: PathBuf) -> StatsCollector {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let reader = CgroupReader::new(&Hierarchy::from_mountinfo(&mountinfo));
        let disk = match DiskUsageCache::start(DISK_USAGE_INTERVAL) {
            Ok(disk) => Some(disk),
            Err(error) => {
                tracing::warn!(%error, "writable layer usage will not be reported");
                None
            }
        };
        StatsCollector {
            reader,
            cpu: CpuRate::new(),
            disk,
            layers_dir,
            netns: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets a removed container.
    pub fn forget_container(&self, id: &str) {
        self.cpu.forget(id);
        if let Some(disk) = &self.disk {
            disk.unregister(id);
        }
    }

    /// Forgets a removed pod.
    pub fn forget_sandbox(&self, id: &str) {
        self.cpu.forget(id);
        self.netns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// One container's stats.
    pub fn container(&self, record: &ContainerRecord) -> ContainerStats {
        let now = Now::take();
        let stats = self.cgroup(record);
        self.container_stats(record, &stats, now)
    }

    /// Stats of several containers (one timestamp for all).
    pub fn containers(&self, records: &[ContainerRecord]) -> Vec<ContainerStats> {
        let now = Now::take();
        parallel_map(records, |record| {
            self.container_stats(record, &self.cgroup(record), now)
        })
    }

    /// Stats of pods with their containers.
    pub fn sandboxes(
        &self,
        sandboxes: &[SandboxRecord],
        containers: &[ContainerRecord],
    ) -> Vec<PodSandboxStats> {
        let now = Now::take();
        parallel_map(sandboxes, |sandbox| {
            let own: Vec<&ContainerRecord> = containers
                .iter()
                .filter(|c| c.sandbox_id == sandbox.id)
                .collect();
            self.sandbox_stats(sandbox, &own, now)
        })
    }

    fn cgroup(&self, record: &ContainerRecord) -> CgroupStats {
        if record.phase == ContainerPhase::Exited || record.cgroups_path.is_empty() {
            return CgroupStats::default();
        }
        self.reader.read(&record.cgroups_path)
    }

    fn container_stats(
        &self,
        record: &ContainerRecord,
        stats: &CgroupStats,
        now: Now,
    ) -> ContainerStats {
        let container = record.to_cri();
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: container.id,
                metadata: container.metadata,
                labels: container.labels,
                annotations: container.annotations,
            }),
            cpu: Some(self.cpu_usage(&record.id, stats, now)),
            memory: Some(memory_usage(stats, now)),
            writable_layer: Some(self.writable_layer(record, now)),
            swap: Some(SwapUsage {
                timestamp: now.nanos,
                swap_available_bytes: None,
                swap_usage_bytes: value(stats.memory.swap_bytes),
            }),
        }
    }

    fn cpu_usage(&self, id: &str, stats: &CgroupStats, now: Now) -> CpuUsage {
        let usage = stats.cpu.usage_ns;
        CpuUsage {
            timestamp: now.nanos,
            usage_core_nano_seconds: value(usage),
            usage_nano_cores: value(usage.and_then(|ns| self.cpu.observe(id, ns, now.instant))),
        }
    }

    fn writable_layer(&self, record: &ContainerRecord, now: Now) -> FilesystemUsage {
        let measured = self.disk.as_ref().and_then(|disk| {
            disk.register(&record.id, &record.layer_dir.join("upper"));
            disk.get(&record.id)
        });
        let timestamp = measured
            .and_then(|(_, at)| at.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_nanos()).ok())
            .unwrap_or(now.nanos);
        FilesystemUsage {
            timestamp,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: self.layers_dir.display().to_string(),
            }),
            used_bytes: Some(UInt64Value {
                value: measured.map_or(0, |(usage, _)| usage.bytes),
            }),
            inodes_used: Some(UInt64Value {
                value: measured.map_or(0, |(usage, _)| usage.inodes),
            }),
        }
    }

    fn sandbox_stats(
        &self,
        sandbox: &SandboxRecord,
        containers: &[&ContainerRecord],
        now: Now,
    ) -> PodSandboxStats {
        let per_container: Vec<CgroupStats> = containers.iter().map(|c| self.cgroup(c)).collect();
        // The pod's own cgroup when it has one (it also counts what runs outside the
        // containers); else the sum of its containers'.
        let pod = if !sandbox.cgroup_parent.is_empty() && self.reader.exists(&sandbox.cgroup_parent)
        {
            self.reader.read(&sandbox.cgroup_parent)
        } else {
            sum(&per_container)
        };
        let pod_sandbox = sandbox.to_cri();
        PodSandboxStats {
            attributes: Some(PodSandboxAttributes {
                id: pod_sandbox.id,
                metadata: pod_sandbox.metadata,
                labels: pod_sandbox.labels,
                annotations: pod_sandbox.annotations,
            }),
            linux: Some(LinuxPodSandboxStats {
                cpu: Some(self.cpu_usage(&sandbox.id, &pod, now)),
                memory: Some(memory_usage(&pod, now)),
                network: self.network(sandbox, now),
                process: Some(ProcessUsage {
                    timestamp: now.nanos,
                    process_count: value(pod.pids.current),
                }),
                containers: containers
                    .iter()
                    .zip(&per_container)
                    .map(|(record, stats)| self.container_stats(record, stats, now))
                    .collect(),
            }),
            windows: None,
        }
    }

    /// The cAdvisor-named metrics of the running containers and of the pods' interfaces, in
    /// the Prometheus text format.
    pub fn prometheus(
        &self,
        sandboxes: &[SandboxRecord],
        containers: &[ContainerRecord],
    ) -> String {
        let pods: HashMap<&str, &SandboxRecord> =
            sandboxes.iter().map(|s| (s.id.as_str(), s)).collect();
        let running: Vec<&ContainerRecord> = containers
            .iter()
            .filter(|c| c.phase == ContainerPhase::Running)
            .collect();
        let samples: Vec<ContainerSample> = parallel_map(&running, |record| {
            let pod = pods.get(record.sandbox_id.as_str());
            let resources = record.resources.clone().unwrap_or_default();
            let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
            ContainerSample {
                labels: ContainerLabels {
                    id: record.cgroups_path.clone(),
                    container: record.name.clone(),
                    pod: pod.map(|p| p.name.clone()).unwrap_or_default(),
                    namespace: pod.map(|p| p.namespace.clone()).unwrap_or_default(),
                    image: record.image.clone(),
                },
                stats: self.cgroup(record),
                spec: ContainerSpec {
                    memory_limit_bytes: positive(resources.memory_limit_in_bytes),
                    cpu_quota: (resources.cpu_quota != 0).then_some(resources.cpu_quota),
                    cpu_period: positive(resources.cpu_period),
                    cpu_shares: positive(resources.cpu_shares),
                },
                fs_usage: self.disk.as_ref().and_then(|disk| {
                    disk.register(&record.id, &record.layer_dir.join("upper"));
                    disk.get(&record.id).map(|(usage, _)| usage)
                }),
                start_time_seconds: (record.started_at > 0).then(|| record.started_at as f64 / 1e9),
            }
        });
        let networks: Vec<PodNetworkSample> = sandboxes
            .iter()
            .filter_map(|sandbox| {
                let interfaces = self.interfaces(sandbox)?;
                Some(PodNetworkSample {
                    pod: sandbox.name.clone(),
                    namespace: sandbox.namespace.clone(),
                    id: if sandbox.cgroup_parent.is_empty() {
                        sandbox.id.clone()
                    } else {
                        sandbox.cgroup_parent.clone()
                    },
                    interfaces: interfaces.into_iter().filter(|i| i.name != "lo").collect(),
                })
            })
            .collect();
        let mut out = String::new();
        write_cadvisor(&mut out, &samples, &networks);
        out
    }

    fn network(&self, sandbox: &SandboxRecord, now: Now) -> Option<NetworkUsage> {
        let interfaces: Vec<NetworkInterfaceUsage> = self
            .interfaces(sandbox)?
            .into_iter()
            .filter(|i| i.name != "lo")
            .map(|i| NetworkInterfaceUsage {
                name: i.name,
                rx_bytes: Some(UInt64Value { value: i.rx_bytes }),
                rx_errors: Some(UInt64Value { value: i.rx_errors }),
                tx_bytes: Some(UInt64Value { value: i.tx_bytes }),
                tx_errors: Some(UInt64Value { value: i.tx_errors }),
            })
            .collect();
        Some(NetworkUsage {
            timestamp: now.nanos,
            default_interface: interfaces.iter().find(|i| i.name == POD_INTERFACE).cloned(),
            interfaces,
        })
    }

    /// The counters of a pod's interfaces (its own network namespace only).
    fn interfaces(&self, sandbox: &SandboxRecord) -> Option<Vec<InterfaceStats>> {
        let netns = sandbox.netns.as_ref()?;
        let counters = {
            let mut sockets = self.netns.lock().unwrap_or_else(|e| e.into_inner());
            match sockets.get(&sandbox.id) {
                Some(counters) => Arc::clone(counters),
                None => match NetnsCounters::open(netns) {
                    Ok(counters) => {
                        let counters = Arc::new(counters);
                        sockets.insert(sandbox.id.clone(), Arc::clone(&counters));
                        counters
                    }
                    Err(error) => {
                        tracing::debug!(sandbox = %sandbox.id, %error, "no network stats");
                        return None;
                    }
                },
            }
        };
        match counters.read() {
            Ok(interfaces) => Some(interfaces),
            Err(error) => {
                tracing::debug!(sandbox = %sandbox.id, %error, "reading network stats failed");
                None
            }
        }
    }
}

/// Threads a list of cgroups is read on: the reads are system calls on cgroupfs (10-25 µs
/// each on the VMs here, about ten per cgroup), so a 2-core node reads 100 containers in
/// half the time on two threads.
const READ_THREADS: usize = 4;
/// Below this many items one thread is faster than starting more.
const PARALLEL_MIN: usize = 16;

/// `items.iter().map(f).collect()`, on up to [`READ_THREADS`] scoped threads.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(READ_THREADS);
    if threads < 2 || items.len() < PARALLEL_MIN {
        return items.iter().map(&f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                (
                    part,
                    scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>()),
                )
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|(part, handle)| {
                // A thread that could not finish: do its part here.
                handle
                    .join()
                    .unwrap_or_else(|_| part.iter().map(&f).collect())
            })
            .collect()
    })
}

fn memory_usage(stats: &CgroupStats, now: Now) -> MemoryUsage {
    let memory = &stats.memory;
    MemoryUsage {
        timestamp: now.nanos,
        working_set_bytes: value(memory.working_set_bytes),
        available_bytes: value(
            memory
                .limit_bytes
                .zip(memory.working_set_bytes)
                .map(|(limit, working_set)| limit.saturating_sub(working_set)),
        ),
        usage_bytes: value(memory.usage_bytes),
        rss_bytes: value(memory.rss_bytes),
        page_faults: value(memory.page_faults),
        major_page_faults: value(memory.major_page_faults),
    }
}

/// The sum of several cgroups' counters (a field is set when any of them has it).
fn sum(all: &[CgroupStats]) -> CgroupStats {
    fn add(total: &mut Option<u64>, part: Option<u64>) {
        if let Some(part) = part {
            *total = Some(total.unwrap_or(0).saturating_add(part));
        }
    }
    let mut total = CgroupStats::default();
    for s in all {
        add(&mut total.cpu.usage_ns, s.cpu.usage_ns);
        add(&mut total.memory.usage_bytes, s.memory.usage_bytes);
        add(
            &mut total.memory.working_set_bytes,
            s.memory.working_set_bytes,
        );
        add(&mut total.memory.rss_bytes, s.memory.rss_bytes);
        add(&mut total.memory.cache_bytes, s.memory.cache_bytes);
        add(&mut total.memory.page_faults, s.memory.page_faults);
        add(
            &mut total.memory.major_page_faults,
            s.memory.major_page_faults,
        );
        add(&mut total.memory.swap_bytes, s.memory.swap_bytes);
        add(&mut total.pids.current, s.pids.current);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parallel_map_keeps_order() {
        let items: Vec<u32> = (0..100).collect();
        let doubled = parallel_map(&items, |i| i * 2);
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(parallel_map(&items[..3], |i| *i), vec![0, 1, 2]);
    }

    #[test]
    fn test_sum_adds_present_fields_only() {
        let mut a = CgroupStats::default();
        a.cpu.usage_ns = Some(10);
        a.memory.working_set_bytes = Some(100);
        let mut b = CgroupStats::default();
        b.cpu.usage_ns = Some(5);
        b.pids.current = Some(3);
        let total = sum(&[a, b]);
        assert_eq!(total.cpu.usage_ns, Some(15));
        assert_eq!(total.memory.working_set_bytes, Some(100));
        assert_eq!(total.pids.current, Some(3));
        assert_eq!(total.memory.rss_bytes, None);
    }

    #[test]
    fn test_memory_usage_available_is_limit_minus_working_set() {
        let mut s = CgroupStats::default();
        s.memory.limit_bytes = Some(1000);
        s.memory.working_set_bytes = Some(300);
        let usage = memory_usage(&s, Now::take());
        assert_eq!(usage.available_bytes, Some(UInt64Value { value: 700 }));
    }
}
