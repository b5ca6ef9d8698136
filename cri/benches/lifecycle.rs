//! Container lifecycle: N pods (default 20; `--pods N` or `CORRAL_BENCH_PODS`) with one
//! container each, driven through CRI by Corral and by Debian's containerd (1.6 + runc) in the
//! same run, with the same requests, image and CNI configuration.
//!
//! Per pod, one request at a time and client-observed: RunPodSandbox, CreateContainer and
//! StartContainer, pod after pod; once all N containers run (each checked RUNNING through
//! ContainerStatus, untimed), the runtimes' memory is read; then per pod StopContainer (10 s
//! timeout; the container exits on SIGTERM), RemoveContainer, StopPodSandbox and
//! RemovePodSandbox. Prints p50/p90/p99 per step, Create+Start and the whole lifecycle (the
//! sum of the 7 steps) per pod, the ratios Corral/containerd against the goals, the CPU time
//! of each step and phase, and the memory of the daemon and of each per-container helper
//! (Corral's `corral-monitor`, containerd's `containerd-shim-runc-v2`): RSS, PSS and USS.
//! Asserts nothing about times; it fails when a container does not run, does not exit 0 on
//! SIGTERM, or something is left behind (a lease, a veth, a helper process, a container
//! cgroup). Run as root: `scripts/bench-lifecycle.sh` (installs containerd and runc, builds,
//! installs the shipped non-PIE monitor). Without `/usr/bin/containerd` only Corral runs.
//!
//! Fairness:
//! - The kubelet-typical requests, the same for both: network and IPC namespaces per pod and
//!   PID per container, a cgroup parent per pod, the pod's log directory and the container's
//!   log subdirectory created beforehand (as kubelet does), kubelet's labels and annotations,
//!   DNS config, service environment, the `/etc/hosts`, termination-log and service-account
//!   bind mounts from a kubelet-like pod dir, Burstable resources (CPU shares, a CPU quota, a
//!   memory limit, an OOM score), masked and read-only paths and an unconfined seccomp
//!   profile (kubelet's default).
//! - One image for both: busybox (`sh` and `sleep` as symlinks: containerd would break the
//!   hard-linked applets of the node tests' busybox image), pulled through CRI PullImage
//!   before any clock starts. containerd's pause image is the same busybox sleeping until
//!   TERM (pulled likewise); Corral runs no process per pod with `pid = CONTAINER`.
//! - One CNI conflist: Debian's bridge (host-local IPAM) + portmap, each series on a bridge
//!   and /24 of its own (`corral-test-253`/`254`); see `support::cri::write_network`.
//! - Corral runs the monitor that ships: `corral-monitor` next to the `corral` binary cargo
//!   built, as `scripts/build-monitor.sh release` installs it (monitor profile, non-PIE),
//!   named in the agent's config (`[runtime] monitor_path`); its ELF type is printed.
//! - One CRI connection per runtime, reused; the benchmark does nothing else meanwhile.
//! - CPU is the runtime's own: its daemon is moved into a cpuacct cgroup of the benchmark
//!   right after it starts, so the shims, runc, monitors and CNI plugins it forks count too
//!   (containers are moved to their own cgroups by the runtime and do not). Per step, the
//!   cgroup's usage is read right before and after each request: work a runtime leaves for
//!   after its answer shows up in the phase totals, not in the step's.
//! - The teardown phase's wall and CPU time include one ContainerStatus per pod (both
//!   runtimes), the untimed check that the container exited 0 on SIGTERM.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::containerd::{CONTAINERD_BIN, PAUSE_SCRIPT, push_pause_image};
use common::registry::Registry;
use corral::client::CriClient;
use corral_runtime::spec::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, DnsConfig, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, RemoveContainerRequest, RunPodSandboxRequest, SecurityProfile,
    StartContainerRequest, StopContainerRequest, security_profile,
};
use support::cri::{POD_NAMESPACE, ms, pod_config, pod_name, pull, remove_pod, stop_pod, timeout};
use support::meter::{BenchCgroups, Memory, Meter, Phase, ProcessMemory, executable_name};
use support::report::{corral_breakdown, mean, percentile, phase_table, server_durations};
use support::series::{CORRAL_LOG_LEVEL, ContainerdSeries, CorralSeries, Target};

/// Pods per series unless `--pods N` or `CORRAL_BENCH_PODS` says otherwise.
const DEFAULT_PODS: usize = 20;
/// At most this many pods: one /24 per series, and the bench's patience.
const MAX_PODS: usize = 200;
/// The container image, and the pause image containerd runs per pod (the same busybox).
const IMAGE_REPO: &str = "bench/busybox";
const PAUSE_REPO: &str = "bench/pause";
const TAG: &str = "latest";
/// Corral's network index (bridge `corral-test-253`, `10.231.253.0/24`); containerd's is
/// the next (the pods bench uses 250..252, the node tests 20..219).
const FIRST_NETWORK: u32 = 253;
/// The container's name in its pod.
const CONTAINER: &str = "app";
/// StopContainer's timeout in seconds.
const STOP_TIMEOUT_S: i64 = 10;
/// How long helpers and containers get to exit after the last RemovePodSandbox.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// The timed steps, in the order each pod goes through them: the first three in the
/// bring-up phase, the rest in the teardown.
const STEPS: [&str; 7] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
];
const PHASES: [&str; 2] = ["up (run+create+start)", "down (stop+remove)"];
/// Indices into [`STEPS`].
const CREATE: usize = 1;
const START: usize = 2;

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lifecycle benchmark needs root (it runs corral and containerd): run it as root");
    }
    let pods = pods_wanted()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run(pods))
}

/// `--pods N` (or `--pods=N`), else `CORRAL_BENCH_PODS`, else [`DEFAULT_PODS`]. Cargo adds
/// `--bench` to a harness-less bench's arguments.
fn pods_wanted() -> Result<usize> {
    let parse = |text: &str| -> Result<usize> {
        text.trim()
            .parse()
            .with_context(|| format!("pods: {text:?} is not a number"))
    };
    let mut pods = match std::env::var("CORRAL_BENCH_PODS") {
        Ok(value) => parse(&value)?,
        Err(_) => DEFAULT_PODS,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--pods" {
            pods = parse(&args.next().context("--pods needs a number")?)?;
        } else if let Some(value) = arg.strip_prefix("--pods=") {
            pods = parse(value)?;
        } else if arg != "--bench" {
            bail!("unknown argument {arg:?}; usage: lifecycle [--pods N]");
        }
    }
    ensure!(
        (1..=MAX_PODS).contains(&pods),
        "pods must be 1..={MAX_PODS}, not {pods}"
    );
    Ok(pods)
}

async fn run(pods: usize) -> Result<()> {
    let started = Instant::now();
    let containerd = Path::new(CONTAINERD_BIN).exists();
    let version = if containerd {
        let output = Command::new(CONTAINERD_BIN).arg("--version").output()?;
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    } else {
        format!("SKIPPED, {CONTAINERD_BIN} is missing (run scripts/bench-lifecycle.sh)")
    };
    let monitor = common::agent::corral_binary().with_file_name("corral-monitor");
    ensure!(
        monitor.exists(),
        "{} is missing: install the shipped monitor with `scripts/build-monitor.sh release` \
         (scripts/bench-lifecycle.sh does)",
        monitor.display()
    );
    println!("containerd: {version}");
    println!("corral:     {}", common::agent::corral_binary().display());
    println!(
        "monitor:    {} ({})",
        monitor.display(),
        describe_elf(&monitor)
    );
    println!(
        "{pods} pods per series, one container each, one request at a time; load average before: {}",
        load_average()
    );

    let registry = Registry::start()?;
    let image = push_pause_image(registry.addr(), IMAGE_REPO, TAG).await?;
    let cgroups = BenchCgroups::new();
    let mut results = vec![bench_corral(&cgroups, pods, &image, &monitor).await?];
    if containerd {
        let pause = push_pause_image(registry.addr(), PAUSE_REPO, TAG).await?;
        results.push(bench_containerd(&cgroups, pods, registry.addr(), &image, &pause).await?);
    }
    drop(cgroups);
    println!();
    print!("{}", report(&results, pods));
    println!(
        "load average after: {}; total {:.1} s",
        load_average(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Whether an executable is position-independent (ELF `e_type` 3) or not (2), and its size.
fn describe_elf(path: &Path) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return "unreadable".to_owned();
    };
    let kind = match bytes.get(16..18) {
        Some([2, 0]) => "non-PIE",
        Some([3, 0]) => "PIE: not the shipped build, run scripts/build-monitor.sh release",
        _ => "not an ELF executable?",
    };
    format!("{kind}, {} KiB", bytes.len() / 1024)
}

/// What one series measured.
struct Series {
    name: String,
    /// Client-observed milliseconds per step (indexed like [`STEPS`]), one per pod.
    times: [Vec<f64>; 7],
    /// The runtime's CPU milliseconds during each request, one per pod and step.
    cpu_ms: [Vec<f64>; 7],
    /// Wall seconds and the runtime's CPU seconds of each of [`PHASES`].
    wall: [f64; 2],
    cpu: [Option<f64>; 2],
    /// All the runtime's processes and their descendants: before the pods, with all
    /// containers running, after removal.
    memory: [Memory; 3],
    /// With all containers running: the daemon, each per-container helper, and the
    /// processes neither (containers, pause containers).
    daemon: Option<ProcessMemory>,
    helpers: Vec<ProcessMemory>,
    helper: &'static str,
    others: Memory,
    /// Notes printed under the table (where Corral's time went).
    notes: Vec<String>,
}

impl Series {
    fn new(name: &str, helper: &'static str) -> Series {
        Series {
            name: name.to_owned(),
            times: Default::default(),
            cpu_ms: Default::default(),
            wall: [0.0; 2],
            cpu: [None; 2],
            memory: Default::default(),
            daemon: None,
            helpers: Vec::new(),
            helper,
            others: Memory::default(),
            notes: Vec::new(),
        }
    }

    /// Per pod, the sum of `steps`' times.
    fn per_pod(&self, steps: std::ops::Range<usize>) -> Vec<f64> {
        (0..self.times[0].len())
            .map(|pod| steps.clone().map(|step| self.times[step][pod]).sum())
            .collect()
    }
}

async fn bench_corral(
    cgroups: &BenchCgroups,
    pods: usize,
    image: &str,
    monitor: &Path,
) -> Result<Series> {
    let config = format!("{CORRAL_LOG_LEVEL}\n[runtime]\nmonitor_path = {monitor:?}\n");
    let mut run = CorralSeries::start(cgroups, FIRST_NETWORK, &config).await?;
    let mut series = Series::new("corral", "corral-monitor");
    let outcome = lifecycle(run.target(), &mut series, cgroups, pods, image).await;
    let ((), log) = run.finish(outcome).await?;
    series.notes = corral_breakdown(&log, &STEPS);
    series.notes.push(overhead_note(&series, &log));
    Ok(series)
}

async fn bench_containerd(
    cgroups: &BenchCgroups,
    pods: usize,
    registry: &str,
    image: &str,
    pause: &str,
) -> Result<Series> {
    let mut run = ContainerdSeries::start(cgroups, FIRST_NETWORK + 1, registry, pause).await?;
    let mut series = Series::new("containerd", "containerd-shim-runc-v2");
    let outcome = lifecycle(run.target(), &mut series, cgroups, pods, image).await;
    run.finish(outcome)?;
    Ok(series)
}

/// A pod of the run: its sandbox config and, once made, its sandbox and container IDs.
struct Pod {
    sandbox: PodSandboxConfig,
    container: ContainerConfig,
    sandbox_id: Option<String>,
    container_id: Option<String>,
}

/// Pulls the image, brings `pods` pods up and down, timing every request, and checks that
/// nothing is left. Whatever it created is removed again on failure.
async fn lifecycle(
    mut target: Target<'_>,
    series: &mut Series,
    cgroups: &BenchCgroups,
    pods: usize,
    image: &str,
) -> Result<()> {
    pull(target.client, image).await?;
    let mut list: Vec<Pod> = (0..pods)
        .map(|i| {
            let sandbox = sandbox_config(i, &target, cgroups)?;
            let container = container_config(&sandbox, image, target.dir)?;
            Ok(Pod {
                sandbox,
                container,
                sandbox_id: None,
                container_id: None,
            })
        })
        .collect::<Result<_>>()?;
    series.memory[0] = target.meter.memory();
    let outcome = timed_phases(&mut target, series, &mut list).await;
    if outcome.is_err() {
        for pod in &list {
            if let Some(id) = &pod.sandbox_id {
                let _ = stop_pod(target.client, id).await;
                let _ = remove_pod(target.client, id).await;
            }
        }
    }
    outcome?;
    let deadline = Instant::now() + EXIT_GRACE;
    let mut left = leftovers(&target, series.helper);
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = leftovers(&target, series.helper);
    }
    series.memory[2] = target.meter.memory();
    ensure!(
        left.is_empty(),
        "{}: left after removal: {}",
        series.name,
        left.join("; ")
    );
    let cgroups_left = cgroups.container_cgroups_left();
    ensure!(
        cgroups_left.is_empty(),
        "{}: container cgroups left after removal: {}",
        series.name,
        cgroups_left.join(", ")
    );
    println!(
        "{:<12} run {:>6.1}  create {:>6.1}  start {:>6.1}  stop {:>6.1}  remove {:>6.1} ms (p50); \
         {pods} containers ran, nothing left",
        series.name,
        percentile(&series.times[0], 0.5),
        percentile(&series.times[CREATE], 0.5),
        percentile(&series.times[START], 0.5),
        percentile(&series.times[3], 0.5),
        percentile(&series.times[4], 0.5),
    );
    Ok(())
}

/// What a runtime left: IP leases, veths on its bridge, and processes besides its daemon.
fn leftovers(target: &Target<'_>, helper: &str) -> Vec<String> {
    let mut left = Vec::new();
    let leases = target.network.leases();
    if !leases.is_empty() {
        left.push(format!("IP leases {leases:?}"));
    }
    let veths = target.network.attached_veths();
    if veths != 0 {
        left.push(format!("{veths} veths on {}", target.network.bridge));
    }
    let processes: Vec<String> = target
        .meter
        .processes()
        .into_iter()
        .filter(|&pid| Some(pid) != target.daemon)
        .map(|pid| {
            let name = executable_name(pid).unwrap_or_else(|| "?".to_owned());
            format!("{pid} ({name})")
        })
        .collect();
    if !processes.is_empty() {
        left.push(format!(
            "processes {} (helpers are {helper})",
            processes.join(", ")
        ));
    }
    left
}

/// Times one request: client-observed milliseconds into `times`, the runtime's CPU
/// milliseconds meanwhile into `cpu_ms`.
async fn timed<T>(
    meter: &Meter,
    times: &mut Vec<f64>,
    cpu_ms: &mut Vec<f64>,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let cpu_before = meter.cpu_seconds();
    let started = Instant::now();
    let outcome = call.await;
    let elapsed = ms(started);
    let cpu_after = meter.cpu_seconds();
    let value = outcome?;
    times.push(elapsed);
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        cpu_ms.push((after - before) * 1000.0);
    }
    Ok(value)
}

/// The two timed phases; each pod's IDs are recorded as soon as they exist (for the
/// cleanup).
async fn timed_phases(
    target: &mut Target<'_>,
    series: &mut Series,
    pods: &mut [Pod],
) -> Result<()> {
    let meter = target.meter;
    let [run_t, create_t, start_t, ..] = &mut series.times;
    let [run_c, create_c, start_c, ..] = &mut series.cpu_ms;

    let client = &mut *target.client;
    let phase = Phase::start(meter);
    for pod in pods.iter_mut() {
        let request = RunPodSandboxRequest {
            config: Some(pod.sandbox.clone()),
            runtime_handler: String::new(),
        };
        let name = pod_name(&pod.sandbox).to_owned();
        let sandbox_id = timed(meter, run_t, run_c, async {
            timeout(client.runtime.run_pod_sandbox(request))
                .await
                .with_context(|| format!("RunPodSandbox {name}"))
        })
        .await?
        .pod_sandbox_id;
        pod.sandbox_id = Some(sandbox_id.clone());

        let request = CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(pod.container.clone()),
            sandbox_config: Some(pod.sandbox.clone()),
        };
        let container_id = timed(meter, create_t, create_c, async {
            timeout(client.runtime.create_container(request))
                .await
                .with_context(|| format!("CreateContainer in {name}"))
        })
        .await?
        .container_id;
        pod.container_id = Some(container_id.clone());

        let request = StartContainerRequest {
            container_id: container_id.clone(),
        };
        timed(meter, start_t, start_c, async {
            timeout(client.runtime.start_container(request))
                .await
                .with_context(|| format!("StartContainer {container_id} in {name}"))
        })
        .await?;
    }
    (series.wall[0], series.cpu[0]) = phase.finish(meter);

    for pod in pods.iter() {
        let id = pod.container_id.as_deref().unwrap_or_default();
        let status = container_status(client, id).await?;
        ensure!(
            status.state == ContainerState::ContainerRunning as i32,
            "container {id} of {} is not running after StartContainer: {status:?}",
            pod_name(&pod.sandbox)
        );
    }
    measure_memory(target, series);
    let client = &mut *target.client;
    let [.., stop_t, rm_t, stop_pod_t, rm_pod_t] = &mut series.times;
    let [.., stop_c, rm_c, stop_pod_c, rm_pod_c] = &mut series.cpu_ms;

    let phase = Phase::start(meter);
    for pod in pods.iter_mut() {
        let name = pod_name(&pod.sandbox).to_owned();
        let sandbox_id = pod.sandbox_id.clone().unwrap_or_default();
        let container_id = pod.container_id.clone().unwrap_or_default();
        let request = StopContainerRequest {
            container_id: container_id.clone(),
            timeout: STOP_TIMEOUT_S,
        };
        timed(meter, stop_t, stop_c, async {
            timeout(client.runtime.stop_container(request))
                .await
                .with_context(|| format!("StopContainer {container_id} in {name}"))
        })
        .await?;
        let status = container_status(client, &container_id).await?;
        ensure!(
            status.state == ContainerState::ContainerExited as i32 && status.exit_code == 0,
            "container {container_id} of {name} did not exit 0 on SIGTERM: {status:?}"
        );

        let request = RemoveContainerRequest {
            container_id: container_id.clone(),
        };
        timed(meter, rm_t, rm_c, async {
            timeout(client.runtime.remove_container(request))
                .await
                .with_context(|| format!("RemoveContainer {container_id} in {name}"))
        })
        .await?;
        pod.container_id = None;

        timed(meter, stop_pod_t, stop_pod_c, stop_pod(client, &sandbox_id)).await?;
        timed(meter, rm_pod_t, rm_pod_c, remove_pod(client, &sandbox_id)).await?;
        pod.sandbox_id = None;
    }
    (series.wall[1], series.cpu[1]) = phase.finish(meter);
    Ok(())
}

async fn container_status(client: &mut CriClient, id: &str) -> Result<ContainerStatus> {
    let request = ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    };
    timeout(client.runtime.container_status(request))
        .await
        .with_context(|| format!("ContainerStatus {id}"))?
        .status
        .with_context(|| format!("ContainerStatus {id}: no status"))
}

/// With all containers running: the daemon's memory, each helper's, and the rest's.
fn measure_memory(target: &Target<'_>, series: &mut Series) {
    series.memory[1] = target.meter.memory();
    series.daemon = target.daemon.and_then(ProcessMemory::of);
    let mut others = Memory::default();
    for pid in target.meter.processes() {
        if Some(pid) == target.daemon {
            continue;
        }
        let memory = ProcessMemory::of(pid).unwrap_or_default();
        if executable_name(pid).as_deref() == Some(series.helper) {
            series.helpers.push(memory);
        } else {
            others.processes += 1;
            others.rss_kib += memory.rss_kib;
            others.pss_kib += memory.pss_kib;
        }
    }
    series.others = others;
}

/// Pod `i` as kubelet asks for it: the shared kubelet-like request plus the annotations
/// and the cluster DNS config kubelet adds.
fn sandbox_config(
    i: usize,
    target: &Target<'_>,
    cgroups: &BenchCgroups,
) -> Result<PodSandboxConfig> {
    let mut config = pod_config(
        i,
        target.network,
        target.dir,
        NamespaceMode::Container,
        cgroups,
    )?;
    config.annotations = HashMap::from([
        (
            "kubernetes.io/config.seen".to_owned(),
            "2024-01-01T00:00:00.000000000Z".to_owned(),
        ),
        ("kubernetes.io/config.source".to_owned(), "api".to_owned()),
    ]);
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".to_owned()],
        searches: vec![
            format!("{POD_NAMESPACE}.svc.cluster.local"),
            "svc.cluster.local".to_owned(),
            "cluster.local".to_owned(),
        ],
        options: vec!["ndots:5".to_owned()],
    });
    Ok(config)
}

/// The pod's container as kubelet asks for it, with what kubelet prepares first: the
/// container's log dir, and in a kubelet-like pod dir the managed `/etc/hosts`, the
/// termination-log file and a service-account token volume.
fn container_config(
    sandbox: &PodSandboxConfig,
    image: &str,
    dir: &Path,
) -> Result<ContainerConfig> {
    let metadata = sandbox.metadata.clone().unwrap_or_default();
    std::fs::create_dir_all(Path::new(&sandbox.log_directory).join(CONTAINER))?;
    let pod_dir = dir.join("kubelet/pods").join(&metadata.uid);
    let hosts = pod_dir.join("etc-hosts");
    let termination_log = pod_dir.join("containers").join(CONTAINER).join("0a1b2c3d");
    let token = pod_dir.join("volumes/kubernetes.io~projected/kube-api-access-bench");
    std::fs::create_dir_all(termination_log.parent().unwrap_or(&pod_dir))?;
    std::fs::create_dir_all(&token)?;
    std::fs::write(
        &hosts,
        format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost \
             ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n# pod {}\n",
            metadata.name
        ),
    )?;
    std::fs::write(&termination_log, "")?;
    for (file, content) in [
        ("token", "bench-token"),
        ("ca.crt", "bench-ca"),
        ("namespace", POD_NAMESPACE),
    ] {
        std::fs::write(token.join(file), content)?;
    }
    let bind = |container_path: &str, host_path: &Path, readonly: bool| Mount {
        container_path: container_path.to_owned(),
        host_path: host_path.display().to_string(),
        readonly,
        ..Mount::default()
    };
    let service = "10.96.0.1";
    let envs = [
        ("KUBERNETES_SERVICE_HOST", service.to_owned()),
        ("KUBERNETES_SERVICE_PORT", "443".to_owned()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443".to_owned()),
        ("KUBERNETES_PORT", format!("tcp://{service}:443")),
        ("KUBERNETES_PORT_443_TCP", format!("tcp://{service}:443")),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".to_owned()),
        ("KUBERNETES_PORT_443_TCP_PORT", "443".to_owned()),
        ("KUBERNETES_PORT_443_TCP_ADDR", service.to_owned()),
    ];
    let pod_label = |key: &str| {
        (
            key.to_owned(),
            sandbox.labels.get(key).cloned().unwrap_or_default(),
        )
    };
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: CONTAINER.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..ImageSpec::default()
        }),
        command: vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            PAUSE_SCRIPT.to_owned(),
        ],
        envs: envs
            .into_iter()
            .map(|(key, value)| KeyValue {
                key: key.to_owned(),
                value,
            })
            .collect(),
        mounts: vec![
            bind(
                "/var/run/secrets/kubernetes.io/serviceaccount",
                &token,
                true,
            ),
            bind("/etc/hosts", &hosts, false),
            bind("/dev/termination-log", &termination_log, false),
        ],
        labels: HashMap::from([
            (
                "io.kubernetes.container.name".to_owned(),
                CONTAINER.to_owned(),
            ),
            pod_label("io.kubernetes.pod.name"),
            pod_label("io.kubernetes.pod.namespace"),
            pod_label("io.kubernetes.pod.uid"),
        ]),
        annotations: HashMap::from([
            (
                "io.kubernetes.container.hash".to_owned(),
                "5b1a7c6e".to_owned(),
            ),
            (
                "io.kubernetes.container.restartCount".to_owned(),
                "0".to_owned(),
            ),
            (
                "io.kubernetes.container.terminationMessagePath".to_owned(),
                "/dev/termination-log".to_owned(),
            ),
            (
                "io.kubernetes.container.terminationMessagePolicy".to_owned(),
                "File".to_owned(),
            ),
            (
                "io.kubernetes.pod.terminationGracePeriod".to_owned(),
                "30".to_owned(),
            ),
        ]),
        log_path: format!("{CONTAINER}/0.log"),
        linux: Some(LinuxContainerConfig {
            // Burstable: requests cpu 100m and memory 64 MiB, limits cpu 500m and memory
            // 128 MiB; the OOM score is kubelet's for that request on a 24 GiB node.
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 102,
                memory_limit_in_bytes: 128 << 20,
                oom_score_adj: 998,
                ..LinuxContainerResources::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..NamespaceOption::default()
                }),
                // kubelet's defaults for the default procMount: containerd's lists.
                masked_paths: DEFAULT_MASKED_PATHS.map(str::to_owned).to_vec(),
                readonly_paths: DEFAULT_READONLY_PATHS.map(str::to_owned).to_vec(),
                seccomp: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::Unconfined as i32,
                    ..SecurityProfile::default()
                }),
                ..LinuxContainerSecurityContext::default()
            }),
        }),
        ..ContainerConfig::default()
    })
}

/// Client-observed minus server-side p50 per step: what the transport and the client add.
fn overhead_note(series: &Series, log: &str) -> String {
    let server = server_durations(log, &STEPS);
    let mut note = "client - server p50:".to_owned();
    for (i, step) in STEPS.iter().enumerate() {
        if let Some(durations) = server.get(*step) {
            let gap = percentile(&series.times[i], 0.5) - percentile(durations, 0.5);
            let _ = write!(note, " {step} {gap:.2}");
        }
    }
    note
}

/// The results: per series and step the client-observed times and CPU, the per-pod sums,
/// the ratios against the goals, phases and memory.
fn report(results: &[Series], pods: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<18} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
        "runtime", "step (ms)", "p50", "p90", "p99", "mean", "max", "CPU ms"
    );
    for series in results {
        for (i, step) in STEPS.iter().enumerate() {
            row(
                &mut out,
                &series.name,
                step,
                &series.times[i],
                Some(&series.cpu_ms[i]),
            );
        }
        row(
            &mut out,
            &series.name,
            "Create+Start",
            &series.per_pod(CREATE..START + 1),
            None,
        );
        row(
            &mut out,
            &series.name,
            "whole lifecycle",
            &series.per_pod(0..STEPS.len()),
            None,
        );
    }
    let _ = writeln!(
        out,
        "CPU ms = mean per pod of the runtime's CPU time during the request (its cgroup)"
    );
    let corral = results.iter().find(|s| s.name == "corral");
    let containerd = results.iter().find(|s| s.name == "containerd");
    if let (Some(corral), Some(containerd)) = (corral, containerd) {
        let _ = writeln!(
            out,
            "\n{:<31} {:>8} {:>8}",
            "ratio corral/containerd", "p50", "p90"
        );
        let ratio = |a: &[f64], b: &[f64], p| percentile(a, p) / percentile(b, p);
        let create_start = [corral, containerd].map(|s| s.per_pod(CREATE..START + 1));
        let whole = [corral, containerd].map(|s| s.per_pod(0..STEPS.len()));
        let mut ratios: Vec<(&str, &[f64], &[f64])> = STEPS
            .iter()
            .zip(corral.times.iter().zip(&containerd.times))
            .map(|(step, (a, b))| (*step, a.as_slice(), b.as_slice()))
            .collect();
        ratios.push(("Create+Start", &create_start[0], &create_start[1]));
        ratios.push(("whole lifecycle", &whole[0], &whole[1]));
        for (step, a, b) in &ratios {
            let _ = writeln!(
                out,
                "{step:<31} {:>7.2}x {:>7.2}x",
                ratio(a, b, 0.5),
                ratio(a, b, 0.9)
            );
        }
        let goals = [
            (
                "StartContainer p50",
                &corral.times[START],
                &containerd.times[START],
                0.15,
            ),
            ("Create+Start p50", &create_start[0], &create_start[1], 0.25),
            ("whole lifecycle p50", &whole[0], &whole[1], 0.40),
        ];
        out.push_str("goals:\n");
        for (name, a, b, limit) in goals {
            let value = ratio(a, b, 0.5);
            let verdict = if value <= limit { "met" } else { "NOT met" };
            let _ = writeln!(
                out,
                "  {name:<28} {value:>6.2}x (goal <= {limit:.2}x) {verdict}"
            );
        }
    }
    let rows = results.iter().flat_map(|series| {
        PHASES
            .iter()
            .enumerate()
            .map(|(i, phase)| (series.name.as_str(), *phase, series.wall[i], series.cpu[i]))
    });
    phase_table(&mut out, (12, 24), pods, rows);
    let _ = writeln!(
        out,
        "CPU = user + system time of the runtime's daemon and everything it forked (shims, \
         runc, monitors, CNI plugins), from its cgroup; down includes one ContainerStatus per pod"
    );
    memory_report(&mut out, results, pods);
    for series in results.iter().filter(|s| !s.notes.is_empty()) {
        let _ = writeln!(
            out,
            "\n{}, from its debug log (server-side, ms):",
            series.name
        );
        for note in series.notes.iter().filter(|note| !note.is_empty()) {
            let _ = writeln!(out, "  {note}");
        }
    }
    out
}

/// One line of the step table.
fn row(out: &mut String, name: &str, step: &str, times: &[f64], cpu_ms: Option<&[f64]>) {
    let max = times.iter().copied().fold(f64::NAN, f64::max);
    let cpu = cpu_ms
        .filter(|cpu| !cpu.is_empty())
        .map_or_else(|| "-".to_owned(), |cpu| format!("{:.1}", mean(cpu)));
    let _ = writeln!(
        out,
        "{name:<12} {step:<18} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {max:>8.1} {cpu:>10}",
        percentile(times, 0.5),
        percentile(times, 0.9),
        percentile(times, 0.99),
        mean(times),
    );
}

/// Memory with all containers running: daemon, per-helper averages, the rest, and the
/// totals before, up and after.
fn memory_report(out: &mut String, results: &[Series], pods: usize) {
    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(
        out,
        "\n{:<12} {:<34} {:>6} {:>9} {:>9} {:>9}",
        "memory",
        format!("with {pods} containers running"),
        "procs",
        "RSS MiB",
        "PSS MiB",
        "USS MiB"
    );
    for series in results {
        if let Some(daemon) = series.daemon {
            let _ = writeln!(
                out,
                "{:<12} {:<34} {:>6} {:>9.2} {:>9.2} {:>9.2}",
                series.name,
                "daemon",
                1,
                mib(daemon.rss_kib),
                mib(daemon.pss_kib),
                mib(daemon.uss_kib)
            );
        }
        let helpers = &series.helpers;
        let average = |field: fn(&ProcessMemory) -> u64| {
            helpers.iter().map(field).sum::<u64>() as f64 / 1024.0 / helpers.len().max(1) as f64
        };
        let _ = writeln!(
            out,
            "{:<12} {:<34} {:>6} {:>9.2} {:>9.2} {:>9.2}",
            series.name,
            format!("{} (average)", series.helper),
            helpers.len(),
            average(|m| m.rss_kib),
            average(|m| m.pss_kib),
            average(|m| m.uss_kib)
        );
        let _ = writeln!(
            out,
            "{:<12} {:<34} {:>6} {:>9.2} {:>9.2} {:>9}",
            series.name,
            "containers, pause (sum)",
            series.others.processes,
            mib(series.others.rss_kib),
            mib(series.others.pss_kib),
            "-"
        );
    }
    if let Some(corral) = results.iter().find(|s| s.name == "corral") {
        let uss = corral.helpers.iter().map(|m| m.uss_kib).sum::<u64>() as f64
            / 1024.0
            / corral.helpers.len().max(1) as f64;
        let verdict = if uss < 0.5 { "met" } else { "NOT met" };
        let _ = writeln!(
            out,
            "goal: corral-monitor USS < 0.50 MiB: {uss:.2} MiB {verdict} (containerd's shim: \
             ~13.5 MB RSS / ~3.7 MB private)"
        );
    }
    let _ = writeln!(
        out,
        "\n{:<12} {:>24} {:>24} {:>24} {:>14}",
        "MiB RSS/PSS",
        "before",
        format!("{pods} running"),
        "after removal",
        "PSS per pod"
    );
    for series in results {
        let [before, up, after] = series.memory.map(|memory| memory.to_string());
        let per_pod = (series.memory[1].pss_kib as f64 - series.memory[0].pss_kib as f64)
            / 1024.0
            / pods as f64;
        let _ = writeln!(
            out,
            "{:<12} {before:>24} {up:>24} {after:>24} {per_pod:>14.2}",
            series.name
        );
    }
    let _ = writeln!(
        out,
        "totals = the daemon, its helpers and their descendants (containers; containerd's \
         pause containers, here busybox sh + sleep); USS = Private_Clean + Private_Dirty"
    );
}
