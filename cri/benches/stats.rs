//! Stats: N pods (default 100; `--pods N` or `CORRAL_BENCH_PODS`) with one running busybox
//! container each, asked for their statistics by a kubelet-like client, on Corral and on
//! Debian's containerd (1.6 + runc) in the same run, with the same requests (the lifecycle
//! bench's), image and CNI configuration.
//!
//! With all N containers running (brought up untimed, checked RUNNING through
//! ListContainers), client-observed and one request at a time, `--repetitions` times each
//! (default 20, after one untimed warm-up call): ListContainerStats and ListPodSandboxStats
//! without a filter and, for Corral, a full `GET /metrics` scrape of its Prometheus endpoint
//! (the address from the CRI Status verbose info, `metricsAddress`). containerd 1.6's CRI
//! plugin has no per-container Prometheus endpoint comparable to cAdvisor's (its `[metrics]`
//! serves its own Go and gRPC metrics), so the scrape is Corral's only.
//!
//! Then the runtime's CPU: first `--idle-seconds` (default 10) without requests, then a
//! kubelet-like steady load for `--load-seconds` (default 60): ListPodSandbox and
//! ListContainers every second, Status every 5 s, ImageFsInfo every 10 s, ListContainerStats
//! and ListPodSandboxStats every 15 s (and for Corral a scrape every 15 s), each schedule
//! starting at second 0. The CPU is that of the runtime's cgroup: the daemon and everything
//! it forked (Corral's monitors, containerd's shims, runc), not the containers, which the
//! runtimes move to their own cgroups; cores = CPU seconds / wall seconds.
//!
//! Finally every container and pod is stopped and removed; the bench fails when anything is
//! left (a lease, a veth, a helper, a container cgroup). Prints p50/p90/max per call and
//! runtime, the ratios, the CPU in cores and the goals. Asserts nothing about times. Run as
//! root: `scripts/bench-stats.sh` (installs containerd and runc, builds, installs the shipped
//! non-PIE monitor). Without `/usr/bin/containerd` only Corral runs.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::containerd::push_pause_image;
use common::registry::Registry;
use corral::client::CriClient;
use k8s_cri::v1::{
    ContainerState, ImageFsInfoRequest, ListContainerStatsRequest, ListContainersRequest,
    ListPodSandboxRequest, ListPodSandboxStatsRequest, RemoveContainerRequest,
    StartContainerRequest, StatusRequest,
};
use support::cri::{ms, pod_name, pull, remove_pod, stop_pod, timeout};
use support::kubelet::{Pod, ensure_nothing_left, remove_pods, stop_request};
use support::meter::{BenchCgroups, Meter, Phase};
use support::report::{percentile, server_durations};
use support::series::{ContainerdSeries, CorralSeries, Target};
use support::setup::{Runtimes, load_average, parse_args, run_as_root};

/// Pods per series unless `--pods N` or `CORRAL_BENCH_PODS` says otherwise.
const DEFAULT_PODS: usize = 100;
/// At most this many pods: one /24 per series.
const MAX_PODS: usize = 200;
/// The container image, and the pause image containerd runs per pod (the same busybox).
const IMAGE_REPO: &str = "bench/busybox";
const PAUSE_REPO: &str = "bench/pause";
const TAG: &str = "latest";
/// Corral's network index (bridge `corral-test-247`, `10.231.247.0/24`); containerd's is
/// the next (the pods bench uses 250..252, the lifecycle bench 253/254).
const FIRST_NETWORK: u32 = 247;
/// The timed calls; the scrape is Corral's only.
const CALLS: [&str; 3] = ["ListContainerStats", "ListPodSandboxStats", "GET /metrics"];
const CONTAINER_STATS: usize = 0;
const SANDBOX_STATS: usize = 1;
const SCRAPE: usize = 2;
/// The goal for each call at 100 pods, in ms (from the issue).
const CALL_GOAL_MS: f64 = 10.0;
/// The goal for the CPU under the load: at most this fraction of containerd's.
const LOAD_GOAL: f64 = 0.25;

/// What the command line asks for.
struct Options {
    pods: usize,
    repetitions: u64,
    idle_seconds: u64,
    load_seconds: u64,
}

fn main() -> Result<()> {
    let (mut repetitions, mut idle_seconds, mut load_seconds) = (20, 10, 60);
    let pods = parse_args(
        "stats",
        DEFAULT_PODS,
        MAX_PODS,
        &mut [
            ("repetitions", &mut repetitions),
            ("idle-seconds", &mut idle_seconds),
            ("load-seconds", &mut load_seconds),
        ],
    )?;
    ensure!(
        repetitions > 0 && load_seconds > 0,
        "repetitions and load-seconds must be > 0"
    );
    let options = Options {
        pods,
        repetitions,
        idle_seconds,
        load_seconds,
    };
    run_as_root("stats", run(options))
}

async fn run(options: Options) -> Result<()> {
    let started = Instant::now();
    let runtimes = Runtimes::announce("scripts/bench-stats.sh")?;
    println!(
        "{} pods per series, one running container each; {} repetitions per call; {} s idle, \
         {} s load; load average before: {}",
        options.pods,
        options.repetitions,
        options.idle_seconds,
        options.load_seconds,
        load_average()
    );

    let registry = Registry::start()?;
    let image = push_pause_image(registry.addr(), IMAGE_REPO, TAG).await?;
    let cgroups = BenchCgroups::new();
    let mut results = Vec::new();
    {
        let mut run =
            CorralSeries::start(&cgroups, FIRST_NETWORK, &runtimes.corral_config()).await?;
        let mut series = Series::new("corral", "corral-monitor");
        let outcome = bench(run.target(), &mut series, &cgroups, &options, &image).await;
        let ((), log) = run.finish(outcome).await?;
        series.notes = server_notes(&series, &log);
        results.push(series);
    }
    if runtimes.containerd {
        let pause = push_pause_image(registry.addr(), PAUSE_REPO, TAG).await?;
        let mut run =
            ContainerdSeries::start(&cgroups, FIRST_NETWORK + 1, registry.addr(), &pause).await?;
        let mut series = Series::new("containerd", "containerd-shim-runc-v2");
        let outcome = bench(run.target(), &mut series, &cgroups, &options, &image).await;
        run.finish(outcome)?;
        results.push(series);
    }
    drop(cgroups);
    println!();
    print!("{}", report(&results, &options));
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
    helper: &'static str,
    /// Client-observed milliseconds per call of [`CALLS`], one per repetition.
    times: [Vec<f64>; 3],
    /// The runtime's CPU milliseconds during each call.
    cpu_ms: [Vec<f64>; 3],
    /// What the last call returned: stats entries, or the scrape's bytes.
    sizes: [usize; 3],
    /// Wall and CPU seconds without requests, and under the load.
    idle: (f64, Option<f64>),
    load: (f64, Option<f64>),
    /// Client-observed milliseconds per request kind during the load.
    load_times: BTreeMap<&'static str, Vec<f64>>,
    notes: Vec<String>,
}

impl Series {
    fn new(name: &str, helper: &'static str) -> Series {
        Series {
            name: name.to_owned(),
            helper,
            times: Default::default(),
            cpu_ms: Default::default(),
            sizes: [0; 3],
            idle: (0.0, None),
            load: (0.0, None),
            load_times: BTreeMap::new(),
            notes: Vec::new(),
        }
    }
}

/// Pulls the image, brings the pods up, measures, and brings them down again, checking
/// that nothing is left. Whatever it created is removed again on failure.
async fn bench(
    mut target: Target<'_>,
    series: &mut Series,
    cgroups: &BenchCgroups,
    options: &Options,
    image: &str,
) -> Result<()> {
    pull(target.client, image).await?;
    let mut pods: Vec<Pod> = (0..options.pods)
        .map(|i| Pod::new(i, &target, cgroups, image))
        .collect::<Result<_>>()?;
    let outcome = bring_up_and_measure(&mut target, series, options, &mut pods).await;
    let outcome = match outcome {
        Ok(()) => tear_down(target.client, &mut pods).await,
        Err(error) => Err(error),
    };
    if outcome.is_err() {
        remove_pods(target.client, &pods).await;
    }
    outcome?;
    ensure_nothing_left(&target, cgroups, &series.name, series.helper).await?;
    println!(
        "{:<12} ListContainerStats {:>8.1}  ListPodSandboxStats {:>8.1} ms (p50); load {:.3} \
         cores; {} containers ran, nothing left",
        series.name,
        percentile(&series.times[CONTAINER_STATS], 0.5),
        percentile(&series.times[SANDBOX_STATS], 0.5),
        cores(series.load).unwrap_or(f64::NAN),
        options.pods
    );
    Ok(())
}

/// Brings the pods up (recording their IDs as they are made, for the cleanup), then
/// measures the calls, the idle CPU and the load.
async fn bring_up_and_measure(
    target: &mut Target<'_>,
    series: &mut Series,
    options: &Options,
    pods: &mut [Pod],
) -> Result<()> {
    let client = &mut *target.client;
    let brought_up = Instant::now();
    for pod in pods.iter_mut() {
        bring_up(client, pod).await?;
    }
    println!(
        "{:<12} {} pods up in {:.1} s",
        series.name,
        pods.len(),
        brought_up.elapsed().as_secs_f64()
    );
    let running = timeout(
        client
            .runtime
            .list_containers(ListContainersRequest::default()),
    )
    .await?
    .containers
    .iter()
    .filter(|c| c.state == ContainerState::ContainerRunning as i32)
    .count();
    ensure!(
        running == pods.len(),
        "{}: {running} of {} containers running",
        series.name,
        pods.len()
    );
    let mut kubelet = Kubelet::new(client, target.meter).await?;
    kubelet.measure_calls(series, options.repetitions).await?;
    series.idle = idle(target.meter, options.idle_seconds).await;
    kubelet.load(series, options.load_seconds).await?;
    Ok(())
}

async fn bring_up(client: &mut CriClient, pod: &mut Pod) -> Result<()> {
    let name = pod_name(&pod.sandbox).to_owned();
    let request = pod.run_request();
    let sandbox_id = timeout(client.runtime.run_pod_sandbox(request))
        .await
        .with_context(|| format!("RunPodSandbox {name}"))?
        .pod_sandbox_id;
    pod.sandbox_id = Some(sandbox_id.clone());
    let request = pod.create_request(&sandbox_id);
    let container_id = timeout(client.runtime.create_container(request))
        .await
        .with_context(|| format!("CreateContainer in {name}"))?
        .container_id;
    pod.container_id = Some(container_id.clone());
    let request = StartContainerRequest { container_id };
    timeout(client.runtime.start_container(request))
        .await
        .with_context(|| format!("StartContainer in {name}"))?;
    Ok(())
}

/// Stops and removes every container and pod, each pod's IDs dropped once it is gone.
async fn tear_down(client: &mut CriClient, pods: &mut [Pod]) -> Result<()> {
    for pod in pods.iter_mut() {
        if let Some(container_id) = pod.container_id.clone() {
            let request = stop_request(&container_id);
            timeout(client.runtime.stop_container(request))
                .await
                .with_context(|| format!("StopContainer {container_id}"))?;
            let request = RemoveContainerRequest {
                container_id: container_id.clone(),
            };
            timeout(client.runtime.remove_container(request))
                .await
                .with_context(|| format!("RemoveContainer {container_id}"))?;
            pod.container_id = None;
        }
        if let Some(sandbox_id) = pod.sandbox_id.clone() {
            stop_pod(client, &sandbox_id).await?;
            remove_pod(client, &sandbox_id).await?;
            pod.sandbox_id = None;
        }
    }
    Ok(())
}

/// The runtime's CPU while nobody asks it anything for `seconds`.
async fn idle(meter: &Meter, seconds: u64) -> (f64, Option<f64>) {
    let phase = Phase::start(meter);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    phase.finish(meter)
}

/// CPU seconds per wall second of a phase.
fn cores((wall, cpu): (f64, Option<f64>)) -> Option<f64> {
    cpu.filter(|_| wall > 0.0).map(|cpu| cpu / wall)
}

/// A kubelet-like client of one runtime: its CRI connection and, where the runtime serves
/// one, the Prometheus endpoint it scrapes.
struct Kubelet<'a> {
    client: &'a mut CriClient,
    meter: &'a Meter,
    http: reqwest::Client,
    /// `http://ADDRESS/metrics` from the Status verbose info's `metricsAddress`.
    metrics_url: Option<String>,
}

impl<'a> Kubelet<'a> {
    async fn new(client: &'a mut CriClient, meter: &'a Meter) -> Result<Kubelet<'a>> {
        let info = timeout(client.runtime.status(StatusRequest { verbose: true }))
            .await
            .context("Status")?
            .info;
        let metrics_url = match info.get("metricsAddress") {
            Some(json) => {
                let address: String = serde_json::from_str(json)
                    .with_context(|| format!("metricsAddress {json:?}"))?;
                Some(format!("http://{address}/metrics"))
            }
            None => None,
        };
        Ok(Kubelet {
            client,
            meter,
            http: reqwest::Client::new(),
            metrics_url,
        })
    }

    /// Call `index` of [`CALLS`] once: client-observed ms, the runtime's CPU ms meanwhile
    /// (`None` without a cgroup), and its size. `None` for a scrape without an endpoint.
    async fn call(&mut self, index: usize) -> Result<Option<(f64, Option<f64>, usize)>> {
        if index == SCRAPE && self.metrics_url.is_none() {
            return Ok(None);
        }
        let cpu_before = self.meter.cpu_seconds();
        let started = Instant::now();
        let size = match index {
            CONTAINER_STATS => {
                let request = ListContainerStatsRequest::default();
                timeout(self.client.runtime.list_container_stats(request))
                    .await
                    .context("ListContainerStats")?
                    .stats
                    .len()
            }
            SANDBOX_STATS => {
                let request = ListPodSandboxStatsRequest::default();
                timeout(self.client.runtime.list_pod_sandbox_stats(request))
                    .await
                    .context("ListPodSandboxStats")?
                    .stats
                    .len()
            }
            _ => self.scrape().await?,
        };
        let elapsed = ms(started);
        let cpu = self
            .meter
            .cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| (after - before) * 1000.0);
        Ok(Some((elapsed, cpu, size)))
    }

    /// A full scrape: its bytes.
    async fn scrape(&self) -> Result<usize> {
        let url = self.metrics_url.as_deref().unwrap_or_default();
        let response = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        ensure!(
            response.status().is_success(),
            "GET {url}: {}",
            response.status()
        );
        Ok(response.bytes().await?.len())
    }

    /// Each call once untimed (a warm-up), then `repetitions` times timed.
    async fn measure_calls(&mut self, series: &mut Series, repetitions: u64) -> Result<()> {
        for index in 0..CALLS.len() {
            self.call(index).await?;
            for _ in 0..repetitions {
                if let Some((elapsed, cpu, size)) = self.call(index).await? {
                    series.times[index].push(elapsed);
                    series.cpu_ms[index].extend(cpu);
                    series.sizes[index] = size;
                }
            }
        }
        Ok(())
    }

    /// The kubelet-like steady load for `seconds`, one tick a second: the runtime's CPU and
    /// every request's client-observed time.
    async fn load(&mut self, series: &mut Series, seconds: u64) -> Result<()> {
        let phase = Phase::start(self.meter);
        let start = tokio::time::Instant::now();
        for tick in 0..seconds {
            tokio::time::sleep_until(start + Duration::from_secs(tick)).await;
            let mut record = |name, started: Instant| {
                series.load_times.entry(name).or_default().push(ms(started));
            };
            let client = &mut *self.client;
            let started = Instant::now();
            timeout(
                client
                    .runtime
                    .list_pod_sandbox(ListPodSandboxRequest::default()),
            )
            .await?;
            record("ListPodSandbox", started);
            let started = Instant::now();
            timeout(
                client
                    .runtime
                    .list_containers(ListContainersRequest::default()),
            )
            .await?;
            record("ListContainers", started);
            if tick % 5 == 0 {
                let started = Instant::now();
                timeout(client.runtime.status(StatusRequest::default())).await?;
                record("Status", started);
            }
            if tick % 10 == 0 {
                let started = Instant::now();
                timeout(client.image.image_fs_info(ImageFsInfoRequest::default())).await?;
                record("ImageFsInfo", started);
            }
            if tick % 15 == 0 {
                for (index, &name) in CALLS.iter().enumerate() {
                    if let Some((elapsed, ..)) = self.call(index).await? {
                        series.load_times.entry(name).or_default().push(elapsed);
                    }
                }
            }
        }
        tokio::time::sleep_until(start + Duration::from_secs(seconds)).await;
        series.load = phase.finish(self.meter);
        Ok(())
    }
}

/// Corral's server-side durations of the stats calls (from its debug log), and what the
/// transport and the client add.
fn server_notes(series: &Series, log: &str) -> Vec<String> {
    let server = server_durations(log, &CALLS[..SCRAPE]);
    CALLS[..SCRAPE]
        .iter()
        .enumerate()
        .filter_map(|(index, call)| {
            let durations = server.get(*call)?;
            let client = percentile(&series.times[index], 0.5);
            let p50 = percentile(durations, 0.5);
            Some(format!(
                "{call:<20} server n={:<3} p50 {p50:>7.2}  p90 {:>7.2}  max {:>7.2}; client - \
                 server p50 {:.2}",
                durations.len(),
                percentile(durations, 0.9),
                durations.iter().copied().fold(f64::NAN, f64::max),
                client - p50
            ))
        })
        .collect()
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

/// The results: per call and runtime the times, the ratios, the CPU under the load, the
/// goals, and the times under the load.
fn report(results: &[Series], options: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:<12} {:>9} {:>9} {:>9} {:>8} {:>10}",
        format!("call (ms), {} pods", options.pods),
        "runtime",
        "p50",
        "p90",
        "max",
        "CPU ms",
        "entries"
    );
    for (index, call) in CALLS.iter().enumerate() {
        for series in results.iter().filter(|s| !s.times[index].is_empty()) {
            let times = &series.times[index];
            let cpu = if series.cpu_ms[index].is_empty() {
                "-".to_owned()
            } else {
                format!("{:.2}", percentile(&series.cpu_ms[index], 0.5))
            };
            let size = if index == SCRAPE {
                format!("{} KiB", series.sizes[index] / 1024)
            } else {
                series.sizes[index].to_string()
            };
            let _ = writeln!(
                out,
                "{call:<22} {:<12} {:>9.2} {:>9.2} {:>9.2} {cpu:>8} {size:>10}",
                series.name,
                percentile(times, 0.5),
                percentile(times, 0.9),
                max(times),
            );
        }
    }
    let _ = writeln!(
        out,
        "CPU ms = p50 of the runtime's CPU during the call (its cgroup); containerd 1.6 serves \
         no per-container Prometheus metrics, so the scrape is Corral's only"
    );
    let corral = results.iter().find(|s| s.name == "corral");
    let containerd = results.iter().find(|s| s.name == "containerd");
    if let (Some(corral), Some(containerd)) = (corral, containerd) {
        let _ = writeln!(
            out,
            "\n{:<22} {:>9} {:>9} {:>9}",
            "ratio corral/containerd", "p50", "p90", "max"
        );
        for (index, call) in CALLS[..SCRAPE].iter().enumerate() {
            let (a, b) = (&corral.times[index], &containerd.times[index]);
            let _ = writeln!(
                out,
                "{call:<22} {:>8.4}x {:>8.4}x {:>8.4}x",
                percentile(a, 0.5) / percentile(b, 0.5),
                percentile(a, 0.9) / percentile(b, 0.9),
                max(a) / max(b)
            );
        }
    }

    let _ = writeln!(
        out,
        "\n{:<12} {:<28} {:>8} {:>8} {:>8}",
        "runtime", "CPU of runtime + helpers", "wall s", "CPU s", "cores"
    );
    for series in results {
        for (phase, (wall, cpu)) in [
            ("idle (no requests)", series.idle),
            ("kubelet-like load", series.load),
        ] {
            let cpu_text = cpu.map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.3}"));
            let cores_text =
                cores((wall, cpu)).map_or_else(|| "-".to_owned(), |c| format!("{c:.4}"));
            let _ = writeln!(
                out,
                "{:<12} {phase:<28} {wall:>8.1} {cpu_text:>8} {cores_text:>8}",
                series.name
            );
        }
    }
    let _ = writeln!(
        out,
        "load: ListPodSandbox + ListContainers every 1 s, Status every 5 s, ImageFsInfo every \
         10 s, ListContainerStats + ListPodSandboxStats (+ Corral's scrape) every 15 s; CPU = \
         user + system of the daemon and everything it forked (monitors / shims, runc), from \
         its cgroup"
    );
    let load_ratio = corral
        .zip(containerd)
        .and_then(|(a, b)| Some(cores(a.load)? / cores(b.load)?));
    if let Some(ratio) = load_ratio {
        let _ = writeln!(out, "load cores corral/containerd: {ratio:.3}x");
    }

    out.push_str("\ngoals (from the issue):\n");
    if let Some(corral) = corral {
        for (index, call) in CALLS.iter().enumerate() {
            let p50 = percentile(&corral.times[index], 0.5);
            let verdict = if p50 < CALL_GOAL_MS { "met" } else { "NOT met" };
            let _ = writeln!(
                out,
                "  corral {call:<22} p50 {p50:>8.2} ms (goal < {CALL_GOAL_MS} ms at 100 pods, \
                 here {}) {verdict}",
                options.pods
            );
        }
        if let Some(ratio) = load_ratio {
            let verdict = if ratio <= LOAD_GOAL { "met" } else { "NOT met" };
            let _ = writeln!(
                out,
                "  corral load CPU                   {ratio:>8.3}x containerd's (goal <= \
                 {LOAD_GOAL}x) {verdict}"
            );
        }
    }
    out.push_str(
        "  containerd, from the issue at 100 pods: ListContainerStats 80-130 ms, \
         ListPodSandboxStats 1.1-1.2 s, 0.07-0.14 cores under this load\n",
    );

    let _ = writeln!(
        out,
        "\n{:<22} {:<12} {:>5} {:>9} {:>9}",
        "during the load (ms)", "runtime", "n", "p50", "max"
    );
    for series in results {
        for (name, times) in &series.load_times {
            let _ = writeln!(
                out,
                "{name:<22} {:<12} {:>5} {:>9.2} {:>9.2}",
                series.name,
                times.len(),
                percentile(times, 0.5),
                max(times)
            );
        }
    }
    for series in results.iter().filter(|s| !s.notes.is_empty()) {
        let _ = writeln!(
            out,
            "\n{}, from its debug log (server-side, ms, all calls incl. warm-up and load):",
            series.name
        );
        for note in &series.notes {
            let _ = writeln!(out, "  {note}");
        }
    }
    out
}
