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

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use common::containerd::push_pause_image;
use common::registry::Registry;
use k8s_cri::v1::{ContainerState, RemoveContainerRequest, StartContainerRequest};
use support::cri::{ms, pod_name, pull, remove_pod, stop_pod, timeout};
use support::kubelet::{Pod, container_status, ensure_nothing_left, remove_pods, stop_request};
use support::meter::{BenchCgroups, Memory, Meter, Phase, ProcessMemory, executable_name};
use support::report::{corral_breakdown, mean, percentile, phase_table, server_durations};
use support::series::{ContainerdSeries, CorralSeries, Target};
use support::setup::{Runtimes, load_average, parse_args, run_as_root};

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
    let pods = parse_args("lifecycle", DEFAULT_PODS, MAX_PODS, &mut [])?;
    run_as_root("lifecycle", run(pods))
}

async fn run(pods: usize) -> Result<()> {
    let started = Instant::now();
    let runtimes = Runtimes::announce("scripts/bench-lifecycle.sh")?;
    println!(
        "{pods} pods per series, one container each, one request at a time; load average before: {}",
        load_average()
    );

    let registry = Registry::start()?;
    let image = push_pause_image(registry.addr(), IMAGE_REPO, TAG).await?;
    let cgroups = BenchCgroups::new();
    let mut results = vec![bench_corral(&cgroups, pods, &image, &runtimes).await?];
    if runtimes.containerd {
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
    runtimes: &Runtimes,
) -> Result<Series> {
    let mut run = CorralSeries::start(cgroups, FIRST_NETWORK, &runtimes.corral_config()).await?;
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
        .map(|i| Pod::new(i, &target, cgroups, image))
        .collect::<Result<_>>()?;
    series.memory[0] = target.meter.memory();
    let outcome = timed_phases(&mut target, series, &mut list).await;
    if outcome.is_err() {
        remove_pods(target.client, &list).await;
    }
    outcome?;
    ensure_nothing_left(&target, cgroups, &series.name, series.helper).await?;
    series.memory[2] = target.meter.memory();
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
        let request = pod.run_request();
        let name = pod_name(&pod.sandbox).to_owned();
        let sandbox_id = timed(meter, run_t, run_c, async {
            timeout(client.runtime.run_pod_sandbox(request))
                .await
                .with_context(|| format!("RunPodSandbox {name}"))
        })
        .await?
        .pod_sandbox_id;
        pod.sandbox_id = Some(sandbox_id.clone());

        let request = pod.create_request(&sandbox_id);
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
        let request = stop_request(&container_id);
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
