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
#[path = "support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use common::containerd::{CONTAINERD_BIN, push_pause_image};
use common::network::TestNetwork;
use common::registry::Registry;
use corral::client::CriClient;
use k8s_cri::v1::{NamespaceMode, PodSandboxConfig, PodSandboxStatusRequest, RunPodSandboxRequest};
use support::cri::{ms, pod_config, pod_name, remove_pod, stop_pod, timeout};
use support::meter::{BenchCgroups, Memory, Meter, Phase};
use support::report::{corral_breakdown, mean, percentile, phase_table};
use support::series::{CORRAL_LOG_LEVEL, ContainerdSeries, CorralSeries, Target};

/// Pods per series.
const PODS: usize = 50;
/// The pause image containerd runs as each pod's sandbox container.
const PAUSE_REPO: &str = "bench/pause";
const PAUSE_TAG: &str = "latest";
/// The first series' network index: bridge `corral-test-250`, subnet `10.231.250.0/24`
/// (the node tests use 20..219).
const FIRST_NETWORK: u32 = 250;
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
    let mut run = CorralSeries::start(cgroups, index, CORRAL_LOG_LEVEL).await?;
    let outcome = lifecycle(run.target(), &name, pid, cgroups).await;
    let (mut series, log) = run.finish(outcome).await?;
    series.notes = corral_breakdown(&log, &STEPS);
    Ok(series)
}

/// One series of containerd, with the kubelet-typical `pid = CONTAINER`.
async fn bench_containerd(cgroups: &BenchCgroups, index: u32) -> Result<Series> {
    let name = "containerd".to_owned();
    let registry = Registry::start()?;
    let pause = push_pause_image(registry.addr(), PAUSE_REPO, PAUSE_TAG).await?;
    let mut run = ContainerdSeries::start(cgroups, index, registry.addr(), &pause).await?;
    let outcome = lifecycle(run.target(), &name, NamespaceMode::Container, cgroups).await;
    run.finish(outcome)
}

/// Runs, stops and removes [`PODS`] pods, timing every request; checks that every pod got
/// an address on `network` and that nothing is left on it after. Whatever it created is
/// removed again on failure.
async fn lifecycle(
    target: Target<'_>,
    name: &str,
    pid: NamespaceMode,
    cgroups: &BenchCgroups,
) -> Result<Series> {
    let Target {
        client,
        network,
        meter,
        dir,
        ..
    } = target;
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
            let _ = stop_pod(client, id).await;
            let _ = remove_pod(client, id).await;
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
        stop_pod(client, id).await?;
        series.times[1].push(ms(started));
    }
    (series.wall[1], series.cpu[1]) = phase.finish(meter);

    let phase = Phase::start(meter);
    for id in ids.iter() {
        let started = Instant::now();
        remove_pod(client, id).await?;
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
    let rows = results.iter().flat_map(|series| {
        STEPS
            .iter()
            .enumerate()
            .map(|(i, phase)| (series.name.as_str(), *phase, series.wall[i], series.cpu[i]))
    });
    phase_table(&mut out, (24, 17), PODS, rows);
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
