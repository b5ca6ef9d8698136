//! Pod sandbox lifecycle: 50 pods run one after the other (RunPodSandbox), then stopped
//! (StopPodSandbox), then removed (RemovePodSandbox), by Corral and by Debian's containerd
//! in the same run, through the same CRI requests and the same CNI configuration.
//!
//! Prints p50, p90, mean and max of every step per runtime, the ratio Corral/containerd per
//! step, the wall time and the CPU time of each phase, and the runtimes' memory. Asserts
//! nothing about times; it fails only when a pod gets no address in its subnet (the first
//! and last pod must answer a ping) or something is left behind (a lease, a veth). Run as
//! root: `cargo bench -p corral --bench pods` (or `scripts/bench-pods.sh`, which installs
//! containerd first). Without `/usr/bin/containerd` only Corral is measured.
//!
//! Fairness:
//! - One CNI conflist for both: Debian's bridge (host-local IPAM) + portmap from
//!   `/usr/lib/cni`, each series on a bridge and /24 of its own (`corral-test-25N`,
//!   `10.231.25N.0/24`, outside the node tests' range) with its own IPAM dir. Loopback is
//!   each runtime's own way: containerd runs the `loopback` plugin, Corral sets `lo` up
//!   itself over netlink.
//! - The kubelet-typical request: network and IPC namespaces per pod, PID per container
//!   (kubelet sends `pid = CONTAINER` unless `shareProcessNamespace` is set), a cgroup parent
//!   per pod, a log directory (created beforehand, as kubelet does), hostname, labels.
//!   A second Corral series uses `pid = POD`, where Corral starts its `corral pod-init`.
//! - containerd runs its sandbox (pause) container: a busybox image built here whose
//!   entrypoint sleeps until TERM, pulled through CRI PullImage before the clock starts. Its
//!   network namespaces are pinned under its temp state dir, as Corral's are under its own.
//!   Where this process lacks `CAP_SYS_RESOURCE` (some sandboxed hosts), containerd gets
//!   `restrict_oom_score_adj`, or runc could not give the pause container its -998.
//! - One CRI connection per runtime, reused for every request; times are client-observed.
//! - CPU is the runtime's own: its daemon is moved into a cpuacct cgroup of the benchmark
//!   right after it starts, so the plugins, shims, runc and pod-inits it forks are counted
//!   too (the machine may run other work meanwhile; CPU time is less disturbed by it than
//!   wall time).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::agent::{TestAgent, test_dir};
use common::containerd::{
    CONTAINERD_BIN, Containerd, ContainerdOptions, can_lower_oom_score_adj, dirs_below,
    processes_mentioning, push_pause_image,
};
use common::network::TestNetwork;
use common::registry::Registry;
use corral::client::CriClient;
use k8s_cri::v1::{
    ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PullImageRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Pods per series.
const PODS: usize = 50;
/// The pause image containerd runs as each pod's sandbox container.
const PAUSE_REPO: &str = "bench/pause";
const PAUSE_TAG: &str = "latest";
/// The first series' network index: bridge `corral-test-250`, subnet `10.231.250.0/24`
/// (the node tests use 20..219).
const FIRST_NETWORK: u32 = 250;
/// The CNI network name (the IPAM dir's subdirectory, as [`TestNetwork::leases`] reads it).
const NETWORK_NAME: &str = "corral-test-net";
/// The Kubernetes namespace of the benchmark's pods.
const POD_NAMESPACE: &str = "corral-bench";
/// Corral logs every request's duration and every CNI plugin run at debug level.
const CORRAL_LOG_LEVEL: &str = "log_level = \"debug\"";
/// How long one CRI request may take before the benchmark gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The lifecycle steps, in order.
const STEPS: [&str; 3] = ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"];

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the pods benchmark needs root (it runs corral and containerd): run it as root");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let started = Instant::now();
    let cgroups = BenchCgroups::new();
    let containerd = Path::new(CONTAINERD_BIN).exists();
    let version = if containerd {
        let output = Command::new(CONTAINERD_BIN).arg("--version").output()?;
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    } else {
        format!("SKIPPED, {CONTAINERD_BIN} is missing (run scripts/bench-pods.sh)")
    };
    println!("containerd: {version}");
    println!(
        "{PODS} pods per series, one request at a time; load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let mut results = Vec::new();
    let mut index = FIRST_NETWORK;
    results.push(bench_corral(&cgroups, index, NamespaceMode::Container).await?);
    if containerd {
        index += 1;
        results.push(bench_containerd(&cgroups, index).await?);
    }
    index += 1;
    results.push(bench_corral(&cgroups, index, NamespaceMode::Pod).await?);

    println!();
    print!("{}", report(&results));
    drop(cgroups);
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// What one series measured.
struct Series {
    name: String,
    /// Client-observed milliseconds per step (indexed like [`STEPS`]), one per pod.
    times: [Vec<f64>; 3],
    /// Wall seconds and the runtime's CPU seconds of each phase.
    wall: [f64; 3],
    cpu: [Option<f64>; 3],
    /// The runtime's processes and memory: before the pods, with all pods up, after removal.
    memory: [Memory; 3],
    /// Notes printed under the table (e.g. where Corral's time went).
    notes: Vec<String>,
}

/// One series of Corral, with pods' PID namespace mode `pid`.
async fn bench_corral(cgroups: &BenchCgroups, index: u32, pid: NamespaceMode) -> Result<Series> {
    let name = format!("corral (pid={})", pid.as_str_name());
    let mut agent = TestAgent::start_with(CORRAL_LOG_LEVEL, &[]).await?;
    let network = write_network(&agent.cni_conf_dir, agent.dir.path(), index)?;
    let meter = cgroups.account(&format!("corral-{index}"), agent.dir.path())?;
    let mut client = agent.client().await?;
    let dir = agent.dir.path().to_path_buf();
    let outcome = lifecycle(&mut client, &network, &meter, &dir, &name, pid, cgroups).await;
    drop(client);
    let _ = agent.terminate().await;
    // Leftovers of a failed run (pinned namespaces, /dev/shm) go before the dir does.
    common::containerd::unmount_under(agent.dir.path(), "corral")?;
    let mut series = outcome.with_context(|| format!("corral log:\n{}", tail(&agent.log())))?;
    series.notes = corral_breakdown(&agent.log());
    Ok(series)
}

/// One series of containerd, with the kubelet-typical `pid = CONTAINER`.
async fn bench_containerd(cgroups: &BenchCgroups, index: u32) -> Result<Series> {
    let name = "containerd".to_owned();
    let registry = Registry::start()?;
    let pause = push_pause_image(registry.addr(), PAUSE_REPO, PAUSE_TAG).await?;
    let dir = test_dir()?;
    let conf_dir = dir.path().join("net.d");
    std::fs::create_dir_all(&conf_dir)?;
    let network = write_network(&conf_dir, dir.path(), index)?;
    let containerd = Containerd::start_with(ContainerdOptions {
        http_registries: vec![registry.addr().to_owned()],
        cni_bin_dir: Some(PathBuf::from("/usr/lib/cni")),
        cni_conf_dir: Some(conf_dir),
        sandbox_image: Some(pause.clone()),
        netns_under_state_dir: true,
        restrict_oom_score_adj: !can_lower_oom_score_adj(),
    })
    .await?;
    let mut client = containerd.client().await?;
    client
        .image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: pause.clone(),
                ..ImageSpec::default()
            }),
            ..PullImageRequest::default()
        })
        .await
        .with_context(|| format!("pre-pulling {pause}; containerd log:\n{}", containerd.log()))?;
    let meter = cgroups.account(&format!("containerd-{index}"), containerd.dir())?;
    let outcome = lifecycle(
        &mut client,
        &network,
        &meter,
        dir.path(),
        &name,
        NamespaceMode::Container,
        cgroups,
    )
    .await;
    drop(client);
    let log = containerd.log();
    containerd.stop()?;
    outcome.with_context(|| format!("containerd log:\n{}", tail(&log)))
}

/// Runs, stops and removes [`PODS`] pods, timing every request; checks that every pod got
/// an address on `network` and that nothing is left on it after. Whatever it created is
/// removed again on failure.
async fn lifecycle(
    client: &mut CriClient,
    network: &TestNetwork,
    meter: &Meter,
    dir: &Path,
    name: &str,
    pid: NamespaceMode,
    cgroups: &BenchCgroups,
) -> Result<Series> {
    let mut series = Series {
        name: name.to_owned(),
        times: Default::default(),
        wall: [0.0; 3],
        cpu: [None; 3],
        memory: Default::default(),
        notes: Vec::new(),
    };
    let configs: Vec<PodSandboxConfig> = (0..PODS)
        .map(|i| pod_config(i, network, dir, pid, cgroups))
        .collect::<Result<_>>()?;
    series.memory[0] = meter.memory();
    let mut ids = Vec::with_capacity(PODS);
    let outcome = timed_phases(client, network, meter, &configs, &mut ids, &mut series).await;
    if outcome.is_err() {
        for id in &ids {
            let _ = stop(client, id).await;
            let _ = remove(client, id).await;
        }
    }
    outcome?;
    series.memory[2] = meter.memory();
    let leases = network.leases();
    ensure!(
        leases.is_empty(),
        "{name}: IP leases left after removal: {leases:?}"
    );
    let veths = network.attached_veths();
    ensure!(
        veths == 0,
        "{name}: {veths} veths left on {}",
        network.bridge
    );
    println!(
        "{:<24} run {:>6.1} ms  stop {:>6.1} ms  remove {:>6.1} ms (p50); {PODS} addresses, nothing left",
        series.name,
        percentile(&series.times[0], 0.5),
        percentile(&series.times[1], 0.5),
        percentile(&series.times[2], 0.5),
    );
    Ok(series)
}

/// The three timed phases; `ids` collects the pods created so far (for the cleanup).
async fn timed_phases(
    client: &mut CriClient,
    network: &TestNetwork,
    meter: &Meter,
    configs: &[PodSandboxConfig],
    ids: &mut Vec<String>,
    series: &mut Series,
) -> Result<()> {
    let phase = Phase::start(meter);
    for config in configs {
        let started = Instant::now();
        let request = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let response = timeout(client.runtime.run_pod_sandbox(request)).await;
        let elapsed = ms(started);
        let id = response
            .with_context(|| format!("RunPodSandbox {}", pod_name(config)))?
            .pod_sandbox_id;
        ids.push(id);
        series.times[0].push(elapsed);
    }
    (series.wall[0], series.cpu[0]) = phase.finish(meter);
    series.memory[1] = meter.memory();
    check_addresses(client, network, ids).await?;

    let phase = Phase::start(meter);
    for id in ids.iter() {
        let started = Instant::now();
        stop(client, id).await?;
        series.times[1].push(ms(started));
    }
    (series.wall[1], series.cpu[1]) = phase.finish(meter);

    let phase = Phase::start(meter);
    for id in ids.iter() {
        let started = Instant::now();
        remove(client, id).await?;
        series.times[2].push(ms(started));
    }
    (series.wall[2], series.cpu[2]) = phase.finish(meter);
    Ok(())
}

/// Every pod has a distinct address in the network's subnet; the first and the last answer
/// a ping from the host.
async fn check_addresses(
    client: &mut CriClient,
    network: &TestNetwork,
    ids: &[String],
) -> Result<()> {
    let mut seen = HashSet::new();
    let mut addresses = Vec::new();
    for id in ids {
        let request = PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        };
        let status = timeout(client.runtime.pod_sandbox_status(request))
            .await
            .with_context(|| format!("PodSandboxStatus {id}"))?;
        let ip = status
            .status
            .and_then(|status| status.network)
            .map(|network| network.ip)
            .unwrap_or_default();
        ensure!(
            ip.starts_with(&format!("{}.", network.prefix)),
            "pod {id} has address {ip:?}, expected one in {}.0/24",
            network.prefix
        );
        ensure!(seen.insert(ip.clone()), "two pods have address {ip}");
        addresses.push(ip);
    }
    for ip in [addresses.first(), addresses.last()].into_iter().flatten() {
        let answered = Command::new("ping")
            .args(["-c", "1", "-W", "2", ip])
            .output()
            .is_ok_and(|output| output.status.success());
        ensure!(answered, "pod address {ip} does not answer a ping");
    }
    Ok(())
}

async fn stop(client: &mut CriClient, id: &str) -> Result<()> {
    let request = StopPodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    timeout(client.runtime.stop_pod_sandbox(request))
        .await
        .with_context(|| format!("StopPodSandbox {id}"))?;
    Ok(())
}

async fn remove(client: &mut CriClient, id: &str) -> Result<()> {
    let request = RemovePodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    timeout(client.runtime.remove_pod_sandbox(request))
        .await
        .with_context(|| format!("RemovePodSandbox {id}"))?;
    Ok(())
}

/// A CRI call with [`REQUEST_TIMEOUT`].
async fn timeout<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    let response = tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .context("timed out")??;
    Ok(response.into_inner())
}

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

fn pod_name(config: &PodSandboxConfig) -> &str {
    config.metadata.as_ref().map_or("", |m| m.name.as_str())
}

/// Pod `i` as kubelet would ask for it; its log directory is created here, as kubelet does.
fn pod_config(
    i: usize,
    network: &TestNetwork,
    dir: &Path,
    pid: NamespaceMode,
    cgroups: &BenchCgroups,
) -> Result<PodSandboxConfig> {
    let name = format!("bench-{i}");
    let uid = format!("{}-{i:04}-uid", network.bridge);
    let log_directory = dir
        .join("pod-logs")
        .join(format!("{POD_NAMESPACE}_{name}_{uid}"));
    std::fs::create_dir_all(&log_directory)?;
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: POD_NAMESPACE.to_owned(),
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: log_directory.display().to_string(),
        labels: HashMap::from([
            ("app".to_owned(), "bench".to_owned()),
            ("io.kubernetes.pod.name".to_owned(), name),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                POD_NAMESPACE.to_owned(),
            ),
            ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroups.pod_parent(&uid),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: pid as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    })
}

/// Writes the conflist (bridge with host-local IPAM, then portmap) for network `index` into
/// `conf_dir`, with its IPAM data under `dir`; the bridge is deleted when the returned
/// network drops.
fn write_network(conf_dir: &Path, dir: &Path, index: u32) -> Result<TestNetwork> {
    let network = TestNetwork {
        bridge: format!("corral-test-{index}"),
        prefix: format!("10.231.{index}"),
        ipam_dir: dir.join("ipam"),
        host_port: 0,
    };
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": format!("{}.0/24", network.prefix) }]],
                    "routes": [{ "dst": format!("{}.0/24", network.prefix) }],
                    "dataDir": network.ipam_dir,
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    std::fs::write(
        conf_dir.join("10-corral-bench.conflist"),
        serde_json::to_vec_pretty(&conflist)?,
    )?;
    Ok(network)
}

/// Wall and CPU time of one phase.
struct Phase {
    started: Instant,
    cpu: Option<f64>,
}

impl Phase {
    fn start(meter: &Meter) -> Phase {
        Phase {
            started: Instant::now(),
            cpu: meter.cpu_seconds(),
        }
    }

    fn finish(self, meter: &Meter) -> (f64, Option<f64>) {
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
struct Memory {
    processes: usize,
    rss_kib: u64,
    pss_kib: u64,
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

/// Measures a runtime's CPU and memory: its processes sit in a cgroup of their own (CPU),
/// and are found by their temp dir on their command line (the daemon by its config path,
/// containerd's shims by its socket path, Corral's pod-inits by their pins), with all their
/// descendants (memory).
struct Meter {
    usage: Option<PathBuf>,
    dir: String,
}

impl Meter {
    /// CPU seconds the cgroup's processes (and their reaped children) have used.
    fn cpu_seconds(&self) -> Option<f64> {
        let usage = self.usage.as_ref()?;
        let text = std::fs::read_to_string(usage).ok()?;
        if usage.ends_with("cpu.stat") {
            let usec = text.lines().find_map(|l| l.strip_prefix("usage_usec "))?;
            Some(usec.trim().parse::<f64>().ok()? / 1e6)
        } else {
            Some(text.trim().parse::<f64>().ok()? / 1e9)
        }
    }

    /// The runtime's processes, their descendants (pause containers) and their memory.
    fn memory(&self) -> Memory {
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

/// A numeric field of `/proc/<pid>/<file>`: `PPid:` or `VmRSS:` of `status`, `Pss:` of
/// `smaps_rollup` (sizes in KiB).
fn proc_field(pid: u32, file: &str, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = text.lines().find_map(|line| line.strip_prefix(name))?;
    line.split_whitespace().next()?.parse().ok()
}

/// `corral-test-bench-<pid>` in every cgroup hierarchy: the pods' cgroup parents go under
/// it, and a cpuacct cgroup per runtime; everything in it is killed and removed on drop.
struct BenchCgroups {
    name: String,
}

impl BenchCgroups {
    fn new() -> BenchCgroups {
        BenchCgroups {
            name: format!("{}bench-{}", common::agent::TEST_PREFIX, std::process::id()),
        }
    }

    /// The cgroup parent of pod `uid` (cgroupfs driver, as kubelet names it).
    fn pod_parent(&self, uid: &str) -> String {
        format!("/{}/pod{uid}", self.name)
    }

    /// Moves the runtime found by its temp dir `dir` (its daemon, before it has forked
    /// anything) into a cgroup of its own, named `runtime`; the meter reads the cgroup's CPU
    /// usage (cgroup v1 cpuacct or v2) and the memory of the processes that mention `dir`.
    fn account(&self, runtime: &str, dir: &Path) -> Result<Meter> {
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

impl Drop for BenchCgroups {
    fn drop(&mut self) {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .chain([PathBuf::from("/sys/fs/cgroup")])
            .flat_map(|hierarchy| dirs_below(&hierarchy.join(&self.name)))
            .collect();
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
        dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
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

/// Linear interpolation between the closest ranks (`p` in 0..=1) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The results: per series and step the client-observed times, then ratios, phases and
/// memory.
fn report(results: &[Series]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24} {:<17} {:>8} {:>8} {:>8} {:>8}",
        "runtime", "step (ms)", "p50", "p90", "mean", "max"
    );
    for series in results {
        for (step, times) in STEPS.iter().zip(&series.times) {
            let max = times.iter().copied().fold(f64::NAN, f64::max);
            let _ = writeln!(
                out,
                "{:<24} {step:<17} {:>8.1} {:>8.1} {:>8.1} {max:>8.1}",
                series.name,
                percentile(times, 0.5),
                percentile(times, 0.9),
                mean(times),
            );
        }
    }
    let containerd = results.iter().find(|s| s.name == "containerd");
    if let Some(containerd) = containerd {
        let _ = writeln!(
            out,
            "\nratio to containerd     {:<17} {:>8} {:>8}",
            "step", "p50", "p90"
        );
        for series in results.iter().filter(|s| s.name != "containerd") {
            for (i, step) in STEPS.iter().enumerate() {
                let ratio =
                    |p| percentile(&series.times[i], p) / percentile(&containerd.times[i], p);
                let _ = writeln!(
                    out,
                    "{:<24} {step:<17} {:>7.2}x {:>7.2}x",
                    series.name,
                    ratio(0.5),
                    ratio(0.9)
                );
            }
        }
        let _ = writeln!(out, "goal: RunPodSandbox p50 at most 0.35x containerd's");
    }
    let _ = writeln!(
        out,
        "\n{:<24} {:<17} {:>8} {:>12} {:>12}",
        "runtime", "phase", "wall s", "CPU s", "CPU ms/pod"
    );
    for series in results {
        for (i, step) in STEPS.iter().enumerate() {
            let cpu = series.cpu[i].map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.2}"));
            let per_pod = series.cpu[i].map_or_else(
                || "-".to_owned(),
                |cpu| format!("{:.1}", cpu * 1000.0 / PODS as f64),
            );
            let _ = writeln!(
                out,
                "{:<24} {step:<17} {:>8.2} {cpu:>12} {per_pod:>12}",
                series.name, series.wall[i]
            );
        }
    }
    let _ = writeln!(
        out,
        "CPU = user + system time of the runtime's daemon and everything it forked (CNI \
         plugins, shims, runc, pod-inits), from its cgroup"
    );
    let _ = writeln!(
        out,
        "\n{:<24} {:>24} {:>24} {:>24}",
        "memory (MiB RSS / PSS)",
        "before",
        format!("{PODS} pods up"),
        "after removal"
    );
    for series in results {
        let [before, up, after] = series.memory.map(|memory| memory.to_string());
        let _ = writeln!(out, "{:<24} {before:>24} {up:>24} {after:>24}", series.name);
    }
    let _ = writeln!(
        out,
        "memory = the daemon, its shims and pod-inits, and their descendants (pause containers); \
         RSS counts shared pages once per process, PSS splits them"
    );
    for series in results.iter().filter(|s| !s.notes.is_empty()) {
        let _ = writeln!(
            out,
            "\n{}, from its debug log (server-side, ms):",
            series.name
        );
        for note in &series.notes {
            let _ = writeln!(out, "  {note}");
        }
    }
    out
}

/// Where Corral's time went: per RPC the server-side duration, and per CNI plugin and
/// command the plugin's run time, p50 and p90.
fn corral_breakdown(log: &str) -> Vec<String> {
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in log.lines() {
        if line.contains("request done") {
            let method = log_field(line, "method").map(|m| m.trim_end_matches(['}', ':']));
            let duration = log_field(line, "duration_ms").and_then(|d| d.parse().ok());
            if let (Some(method), Some(duration)) = (method, duration) {
                if STEPS.contains(&method) {
                    groups
                        .entry(format!("{method} (server)"))
                        .or_default()
                        .push(duration);
                }
            }
        } else if line.contains("cni plugin finished") {
            let plugin = log_field(line, "plugin").map(|p| p.rsplit('/').next().unwrap_or(p));
            let command = log_field(line, "command");
            let elapsed = log_field(line, "elapsed_ms").and_then(|e| e.parse().ok());
            if let (Some(plugin), Some(command), Some(elapsed)) = (plugin, command, elapsed) {
                groups
                    .entry(format!("cni {plugin} {command}"))
                    .or_default()
                    .push(elapsed);
            }
        }
    }
    groups
        .iter()
        .map(|(name, values)| {
            format!(
                "{name:<32} n={:<4} p50 {:>6.1}  p90 {:>6.1}",
                values.len(),
                percentile(values, 0.5),
                percentile(values, 0.9)
            )
        })
        .collect()
}

/// The value of `name=value` in a text log line.
fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()
}

/// The last lines of a log, for an error message.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
