//! Streaming: exec round trips and port-forward throughput through the CRI streaming
//! server, on Corral and on Debian's containerd (1.6 + runc) in the same run, with the same
//! requests, image and CNI configuration, driven by the project's SPDY/3.1 client
//! (`corral::streaming::client`, as crictl and kubelet's client-go speak it).
//!
//! One pod per runtime with one running busybox container (the lifecycle bench's
//! kubelet-like pod and container requests, without CPU and memory limits so that the pod's
//! side of a transfer is not throttled), which serves three ports with busybox `nc -ll`:
//! [`SOURCE_PORT`] writes `--mb` MiB of zeros to each connection (`dd`, 1 MiB writes),
//! [`SINK_PORT`] reads `--mb` MiB and answers `done`, [`PING_PORT`] answers `ready`; each
//! then closes the connection. The client never ends its side first (as kubectl
//! port-forward does not): containerd 1.6 never half-closes, it stops forwarding a
//! connection at most one second after either direction ended. So a transfer's clock
//! stops at its last expected byte, not at end of file; how long the end of file takes
//! after that is reported apart (`pf: EOF after the answer`).
//!
//! Measured, client-observed, one at a time, after untimed warm-ups:
//! - exec round trip, `--execs` times (default 50, after 5 warm-ups): CRI `Exec` (`true`,
//!   stdout and stderr, no stdin, no tty), connect to the URL, upgrade to SPDY, open the
//!   error, stdout and stderr streams, read them to their ends, exit status 0 received,
//!   session closed; with its three phases (the RPC; connect + upgrade + streams; run +
//!   exit + close) and the runtime's CPU meanwhile;
//! - ExecSync `true`, as often, for reference;
//! - port-forward setup, `--connects` times (default 20): CRI `PortForward`, connect and
//!   upgrade, open a forwarded connection to [`PING_PORT`], read its 6-byte answer (then,
//!   timed apart, the end of file after it);
//! - port-forward throughput, `--transfers` times per direction (default 5): download
//!   (read `--mb` MiB from [`SOURCE_PORT`]) and upload (write `--mb` MiB to [`SINK_PORT`],
//!   read its `done`), each on a fresh
//!   forwarded connection of one session; MB/s (10^6 bytes/s), and the runtime's CPU per GiB.
//!   The same transfers to the pod's IP directly (over the bridge and veth; port-forward
//!   reaches the pod's loopback) show the pod's servers and this client without a runtime.
//!
//! Prints p50/p90/mean/max per measure and runtime, the ratios Corral/containerd and the
//! goals (exec round trip p50 at most 0.3x containerd's, port-forward throughput at least
//! containerd's), and Corral's server-side RPC durations from its debug log. Asserts nothing
//! about times; it fails when an exec does not exit 0, a transfer comes up short, or
//! something is left behind. Run as root: `scripts/bench-streaming.sh` (installs containerd
//! and runc, builds, installs the shipped non-PIE monitor). Without `/usr/bin/containerd`
//! only Corral runs.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::containerd::push_pause_image;
use common::images::{Compression, HOST_BUSYBOX, ImageBuilder, Layer};
use common::registry::Registry;
use corral::client::CriClient;
use corral::streaming::client::{PortForwardSession, RemoteCommandSession, StreamOptions};
use k8s_cri::v1::{
    ContainerState, ExecRequest, ExecSyncRequest, PodSandboxStatusRequest, PortForwardRequest,
    RemoveContainerRequest, StartContainerRequest,
};
use support::cri::{ms, pod_name, pull, remove_pod, stop_pod, timeout};
use support::kubelet::{Pod, container_status, ensure_nothing_left, remove_pods, stop_request};
use support::meter::{BenchCgroups, Meter};
use support::report::{mean, percentile, server_durations};
use support::series::{ContainerdSeries, CorralSeries, Target};
use support::setup::{Runtimes, load_average, parse_args, run_as_root};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// The container image (busybox with the applets the container and the execs run), and
/// the pause image containerd runs per pod.
const IMAGE_REPO: &str = "bench/streaming";
const PAUSE_REPO: &str = "bench/pause";
const TAG: &str = "latest";
/// Corral's network index (bridge `corral-test-245`, `10.231.245.0/24`); containerd's is
/// the next (the stats bench uses 247/248, the pods bench 250..252, the lifecycle bench
/// 253/254, the node tests 20..219).
const FIRST_NETWORK: u32 = 245;
/// The container's ports: a source of `--mb` MiB of zeros, a sink that reads as much and
/// answers [`SINK_ANSWER`], and a ping that answers [`PING_ANSWER`].
const SOURCE_PORT: u16 = 8080;
const SINK_PORT: u16 = 8081;
const PING_PORT: u16 = 8082;
const SINK_ANSWER: &[u8] = b"done\n";
const PING_ANSWER: &[u8] = b"ready\n";
/// The applets the image links to `/bin/busybox` (symlinks: containerd applies a hard
/// link header's mode to the shared inode, see `push_pause_image`).
const APPLETS: [&str; 6] = ["sh", "sleep", "true", "nc", "dd", "echo"];
/// Untimed exec and ExecSync calls before the timed ones.
const WARM_UPS: usize = 5;
/// How long the container's servers get to listen after StartContainer.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one exec or transfer may take before the bench gives up.
const STREAM_TIMEOUT: Duration = Duration::from_secs(120);
/// The client's read and write buffer in transfers.
const CHUNK: usize = 256 * 1024;
/// The goals (from the issue): exec round trip p50 at most this fraction of containerd's,
/// port-forward throughput at least containerd's.
const EXEC_GOAL: f64 = 0.3;
const THROUGHPUT_GOAL: f64 = 1.0;

/// The timed latencies, in report order.
const LATENCIES: [&str; 8] = [
    "exec: Exec RPC",
    "exec: connect+upgrade+streams",
    "exec: run+exit+close",
    "exec round trip",
    "ExecSync true",
    "pf: PortForward RPC",
    "pf: answer (RPC..6 bytes)",
    "pf: EOF after the answer",
];
const EXEC_RPC: usize = 0;
const EXEC_CONNECT: usize = 1;
const EXEC_RUN: usize = 2;
const EXEC_TOTAL: usize = 3;
const EXEC_SYNC: usize = 4;
const PF_RPC: usize = 5;
const PF_ANSWER: usize = 6;
const PF_EOF: usize = 7;

/// The transfer kinds, in report order.
const TRANSFERS: [&str; 2] = ["download (pod -> client)", "upload (client -> pod)"];
const DOWNLOAD: usize = 0;
const UPLOAD: usize = 1;

/// What the command line asks for.
#[derive(Debug, Clone, Copy)]
struct Options {
    execs: usize,
    connects: usize,
    transfers: usize,
    /// Bytes per transfer.
    bytes: u64,
}

fn main() -> Result<()> {
    let (mut execs, mut connects, mut transfers, mut mb) = (50, 20, 5, 256);
    parse_args(
        "streaming",
        1,
        1,
        &mut [
            ("execs", &mut execs),
            ("connects", &mut connects),
            ("transfers", &mut transfers),
            ("mb", &mut mb),
        ],
    )?;
    ensure!(
        execs > 0 && connects > 0 && transfers > 0 && mb > 0,
        "execs, connects, transfers and mb must be > 0"
    );
    let options = Options {
        execs: usize::try_from(execs)?,
        connects: usize::try_from(connects)?,
        transfers: usize::try_from(transfers)?,
        bytes: mb << 20,
    };
    run_as_root("streaming", run(options))
}

async fn run(options: Options) -> Result<()> {
    let started = Instant::now();
    let runtimes = Runtimes::announce("scripts/bench-streaming.sh")?;
    println!(
        "one pod per series; {} execs and ExecSyncs ({WARM_UPS} warm-ups), {} port-forward \
         setups, {} x {} MiB per direction; load average before: {}",
        options.execs,
        options.connects,
        options.transfers,
        options.bytes >> 20,
        load_average()
    );

    let registry = Registry::start()?;
    let image = push_streaming_image(registry.addr(), &options).await?;
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

/// The image: busybox with [`APPLETS`] as symlinks; the container's command is set by the
/// bench ([`server_script`]).
async fn push_streaming_image(registry: &str, options: &Options) -> Result<String> {
    let busybox = std::fs::read(HOST_BUSYBOX)
        .with_context(|| format!("reading {HOST_BUSYBOX} (Debian package busybox-static)"))?;
    let mut layer = Layer::new().comment("corral-bench: streaming");
    for dir in ["/bin", "/dev", "/etc", "/proc", "/sys"] {
        layer = layer.dir(dir, 0o755);
    }
    layer = layer
        .dir("/tmp", 0o1777)
        .file("/bin/busybox", busybox, 0o755);
    for applet in APPLETS {
        layer = layer.symlink(&format!("/bin/{applet}"), "busybox");
    }
    ImageBuilder::new()
        .layer(layer, Compression::Gzip)
        .entrypoint(&["/bin/sh", "-c", &server_script(options.bytes)])
        .push(registry, IMAGE_REPO, TAG)
        .await?;
    Ok(format!("{registry}/{IMAGE_REPO}:{TAG}"))
}

/// The container's command: the three servers in the background (a process per
/// connection), then sleep until TERM or INT. `bytes` is whole MiB.
fn server_script(bytes: u64) -> String {
    let mib = bytes >> 20;
    format!(
        "nc -ll -p {SOURCE_PORT} -e sh -c 'dd if=/dev/zero bs=1048576 count={mib} 2>/dev/null' & \
         nc -ll -p {SINK_PORT} -e sh -c 'dd of=/dev/null bs=1048576 count={mib} iflag=fullblock \
         2>/dev/null; echo done' & \
         nc -ll -p {PING_PORT} -e echo ready & \
         trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"
    )
}

/// What one series measured.
struct Series {
    name: String,
    helper: &'static str,
    /// Client-observed milliseconds per measure of [`LATENCIES`].
    times: [Vec<f64>; 8],
    /// The runtime's CPU milliseconds per exec round trip and per ExecSync.
    exec_cpu_ms: Vec<f64>,
    exec_sync_cpu_ms: Vec<f64>,
    /// MB/s per transfer of [`TRANSFERS`] through port-forward, and to the pod's IP directly.
    forwarded: [Vec<f64>; 2],
    direct: [Vec<f64>; 2],
    /// The runtime's CPU seconds per GiB forwarded, per transfer.
    cpu_per_gib: [Vec<f64>; 2],
    notes: Vec<String>,
}

impl Series {
    fn new(name: &str, helper: &'static str) -> Series {
        Series {
            name: name.to_owned(),
            helper,
            times: Default::default(),
            exec_cpu_ms: Vec::new(),
            exec_sync_cpu_ms: Vec::new(),
            forwarded: Default::default(),
            direct: Default::default(),
            cpu_per_gib: Default::default(),
            notes: Vec::new(),
        }
    }
}

/// Pulls the image, brings the pod up, measures, and brings it down again, checking that
/// nothing is left. Whatever it created is removed again on failure.
async fn bench(
    target: Target<'_>,
    series: &mut Series,
    cgroups: &BenchCgroups,
    options: &Options,
    image: &str,
) -> Result<()> {
    pull(target.client, image).await?;
    let mut pod = Pod::new(0, &target, cgroups, image)?;
    // The image's command (the servers); no CPU quota or memory limit, so that the pod's
    // side of a transfer is not throttled.
    pod.container.command.clear();
    if let Some(linux) = pod.container.linux.as_mut() {
        linux.resources = None;
    }
    let outcome =
        bring_up_and_measure(target.client, target.meter, series, options, &mut pod).await;
    let outcome = match outcome {
        Ok(()) => tear_down(target.client, &mut pod).await,
        Err(error) => Err(error),
    };
    if outcome.is_err() {
        remove_pods(target.client, std::slice::from_ref(&pod)).await;
    }
    outcome?;
    ensure_nothing_left(&target, cgroups, &series.name, series.helper).await?;
    println!(
        "{:<12} exec round trip {:>7.2} ms (p50); download {:>7.1} MB/s, upload {:>7.1} MB/s \
         (median); nothing left",
        series.name,
        percentile(&series.times[EXEC_TOTAL], 0.5),
        percentile(&series.forwarded[DOWNLOAD], 0.5),
        percentile(&series.forwarded[UPLOAD], 0.5),
    );
    Ok(())
}

/// Runs the pod and its container (recording their IDs as they are made, for the
/// cleanup), waits for the servers, then measures.
async fn bring_up_and_measure(
    client: &mut CriClient,
    meter: &Meter,
    series: &mut Series,
    options: &Options,
    pod: &mut Pod,
) -> Result<()> {
    let name = pod_name(&pod.sandbox).to_owned();
    let sandbox_id = timeout(client.runtime.run_pod_sandbox(pod.run_request()))
        .await
        .with_context(|| format!("RunPodSandbox {name}"))?
        .pod_sandbox_id;
    pod.sandbox_id = Some(sandbox_id.clone());
    let container_id = timeout(
        client
            .runtime
            .create_container(pod.create_request(&sandbox_id)),
    )
    .await
    .with_context(|| format!("CreateContainer in {name}"))?
    .container_id;
    pod.container_id = Some(container_id.clone());
    timeout(client.runtime.start_container(StartContainerRequest {
        container_id: container_id.clone(),
    }))
    .await
    .with_context(|| format!("StartContainer in {name}"))?;
    let status = container_status(client, &container_id).await?;
    ensure!(
        status.state == ContainerState::ContainerRunning as i32,
        "{}: container {container_id} is not running: {status:?}",
        series.name
    );
    wait_ready(client, &sandbox_id).await?;
    let pod_ip = pod_ip(client, &sandbox_id).await?;

    measure_execs(client, meter, series, options, &container_id).await?;
    measure_port_forward_setup(client, series, options, &sandbox_id).await?;
    measure_transfers(client, meter, series, options, &sandbox_id, &pod_ip).await?;
    Ok(())
}

/// Waits until [`PING_PORT`] answers through port-forward (the servers listen).
async fn wait_ready(client: &mut CriClient, sandbox_id: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match ping(client, sandbox_id).await {
            Ok(_) => return Ok(()),
            Err(error) if Instant::now() > deadline => {
                return Err(error.context("the container's servers did not answer"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The pod's IP, from PodSandboxStatus.
async fn pod_ip(client: &mut CriClient, sandbox_id: &str) -> Result<String> {
    let status = timeout(client.runtime.pod_sandbox_status(PodSandboxStatusRequest {
        pod_sandbox_id: sandbox_id.to_owned(),
        verbose: false,
    }))
    .await
    .context("PodSandboxStatus")?;
    let ip = status
        .status
        .and_then(|status| status.network)
        .map(|network| network.ip)
        .unwrap_or_default();
    ensure!(!ip.is_empty(), "pod {sandbox_id} has no IP");
    Ok(ip)
}

fn exec_request(container_id: &str) -> ExecRequest {
    ExecRequest {
        container_id: container_id.to_owned(),
        cmd: vec!["true".to_owned()],
        tty: false,
        stdin: false,
        stdout: true,
        stderr: true,
    }
}

/// One exec round trip of `true`: the milliseconds of its three phases.
async fn exec_once(client: &mut CriClient, container_id: &str) -> Result<[f64; 3]> {
    let started = Instant::now();
    let url = timeout(client.runtime.exec(exec_request(container_id)))
        .await
        .context("Exec")?
        .url;
    let rpc = ms(started);
    let options = StreamOptions {
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let connected = Instant::now();
    let session =
        tokio::time::timeout(STREAM_TIMEOUT, RemoteCommandSession::connect(&url, options))
            .await
            .context("exec connect timed out")?
            .with_context(|| format!("connecting to {url}"))?;
    let connect = ms(connected);
    let running = Instant::now();
    let output = tokio::time::timeout(STREAM_TIMEOUT, session.finish())
        .await
        .context("exec timed out")?
        .context("exec stream")?;
    let run = ms(running);
    ensure!(
        output.completion.exit_code() == Some(0),
        "exec true: {:?} (stdout {:?}, stderr {:?})",
        output.completion,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok([rpc, connect, run])
}

async fn exec_sync_once(client: &mut CriClient, container_id: &str) -> Result<()> {
    let response = timeout(client.runtime.exec_sync(ExecSyncRequest {
        container_id: container_id.to_owned(),
        cmd: vec!["true".to_owned()],
        timeout: 10,
    }))
    .await
    .context("ExecSync")?;
    ensure!(
        response.exit_code == 0,
        "ExecSync true exited {}: {:?}",
        response.exit_code,
        String::from_utf8_lossy(&response.stderr)
    );
    Ok(())
}

/// The exec round trips, then the ExecSyncs, each after [`WARM_UPS`] untimed calls.
async fn measure_execs(
    client: &mut CriClient,
    meter: &Meter,
    series: &mut Series,
    options: &Options,
    container_id: &str,
) -> Result<()> {
    for _ in 0..WARM_UPS {
        exec_once(client, container_id).await?;
    }
    for _ in 0..options.execs {
        let cpu_before = meter.cpu_seconds();
        let phases = exec_once(client, container_id).await?;
        let cpu = meter.cpu_seconds().zip(cpu_before);
        series.times[EXEC_RPC].push(phases[0]);
        series.times[EXEC_CONNECT].push(phases[1]);
        series.times[EXEC_RUN].push(phases[2]);
        series.times[EXEC_TOTAL].push(phases.iter().sum());
        series
            .exec_cpu_ms
            .extend(cpu.map(|(after, before)| (after - before) * 1000.0));
    }
    for _ in 0..WARM_UPS {
        exec_sync_once(client, container_id).await?;
    }
    for _ in 0..options.execs {
        let cpu_before = meter.cpu_seconds();
        let started = Instant::now();
        exec_sync_once(client, container_id).await?;
        series.times[EXEC_SYNC].push(ms(started));
        let cpu = meter.cpu_seconds().zip(cpu_before);
        series
            .exec_sync_cpu_ms
            .extend(cpu.map(|(after, before)| (after - before) * 1000.0));
    }
    Ok(())
}

/// PortForward, connect and upgrade, one forwarded connection to [`PING_PORT`] and its
/// answer: the RPC's milliseconds, until the answer, and from the answer to end of file.
async fn ping(client: &mut CriClient, sandbox_id: &str) -> Result<(f64, f64, f64)> {
    let started = Instant::now();
    let url = port_forward_url(client, sandbox_id).await?;
    let rpc = ms(started);
    let session = PortForwardSession::connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let outcome = async {
        let mut connection = session.open(PING_PORT).await?;
        let mut answer = vec![0u8; PING_ANSWER.len()];
        tokio::time::timeout(STREAM_TIMEOUT, connection.read_exact(&mut answer))
            .await
            .context("ping timed out")??;
        let total = ms(started);
        let eof = end_of_file(&mut connection).await?;
        let error = connection.finish().await;
        ensure!(
            answer == PING_ANSWER && error.is_none(),
            "port {PING_PORT} answered {:?} (error stream: {error:?})",
            String::from_utf8_lossy(&answer)
        );
        Ok((rpc, total, eof))
    }
    .await;
    session.close();
    outcome
}

/// Milliseconds until end of file on `connection`, which must send nothing more.
async fn end_of_file<C: AsyncRead + Unpin>(connection: &mut C) -> Result<f64> {
    let started = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(STREAM_TIMEOUT, connection.read_to_end(&mut rest))
        .await
        .context("no end of file")??;
    ensure!(
        rest.is_empty(),
        "{} bytes more than expected: {:?}",
        rest.len(),
        String::from_utf8_lossy(&rest[..rest.len().min(64)])
    );
    Ok(ms(started))
}

async fn port_forward_url(client: &mut CriClient, sandbox_id: &str) -> Result<String> {
    Ok(timeout(client.runtime.port_forward(PortForwardRequest {
        pod_sandbox_id: sandbox_id.to_owned(),
        port: vec![
            i32::from(SOURCE_PORT),
            i32::from(SINK_PORT),
            i32::from(PING_PORT),
        ],
    }))
    .await
    .context("PortForward")?
    .url)
}

async fn measure_port_forward_setup(
    client: &mut CriClient,
    series: &mut Series,
    options: &Options,
    sandbox_id: &str,
) -> Result<()> {
    ping(client, sandbox_id).await?;
    for _ in 0..options.connects {
        let (rpc, answer, eof) = ping(client, sandbox_id).await?;
        series.times[PF_RPC].push(rpc);
        series.times[PF_ANSWER].push(answer);
        series.times[PF_EOF].push(eof);
    }
    Ok(())
}

/// The transfers: per repetition a download and an upload through one port-forward
/// session (a fresh forwarded connection each), then the same to the pod's IP directly.
async fn measure_transfers(
    client: &mut CriClient,
    meter: &Meter,
    series: &mut Series,
    options: &Options,
    sandbox_id: &str,
    pod_ip: &str,
) -> Result<()> {
    let url = port_forward_url(client, sandbox_id).await?;
    let session = PortForwardSession::connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let outcome = async {
        for _ in 0..options.transfers {
            for kind in [DOWNLOAD, UPLOAD] {
                let port = [SOURCE_PORT, SINK_PORT][kind];
                let cpu_before = meter.cpu_seconds();
                let connection = session.open(port).await?;
                let (mb_s, mut connection) = transfer(kind, connection, options.bytes)
                    .await
                    .with_context(|| format!("{} through port-forward", TRANSFERS[kind]))?;
                let cpu = meter.cpu_seconds().zip(cpu_before);
                end_of_file(&mut connection).await?;
                if let Some(error) = connection.finish().await {
                    bail!("{}: error stream: {error}", TRANSFERS[kind]);
                }
                series.forwarded[kind].push(mb_s);
                let gib = options.bytes as f64 / f64::from(1u32 << 30);
                series.cpu_per_gib[kind].extend(cpu.map(|(after, before)| (after - before) / gib));
            }
        }
        Ok(())
    }
    .await;
    session.close();
    outcome?;
    for _ in 0..options.transfers {
        for kind in [DOWNLOAD, UPLOAD] {
            let port = [SOURCE_PORT, SINK_PORT][kind];
            let connection = TcpStream::connect((pod_ip, port))
                .await
                .with_context(|| format!("connecting to {pod_ip}:{port}"))?;
            let _ = connection.set_nodelay(true);
            let (mb_s, mut connection) = transfer(kind, connection, options.bytes)
                .await
                .with_context(|| format!("{} to {pod_ip} directly", TRANSFERS[kind]))?;
            end_of_file(&mut connection).await?;
            series.direct[kind].push(mb_s);
        }
    }
    Ok(())
}

/// One transfer of `bytes` on `connection`: a download reads `bytes`, an upload writes
/// them and reads the sink's answer; the clock stops there, before the end of file.
/// Returns MB/s and the connection.
async fn transfer<C>(kind: usize, mut connection: C, bytes: u64) -> Result<(f64, C)>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let started = Instant::now();
    tokio::time::timeout(STREAM_TIMEOUT, async {
        let mut buffer = vec![0u8; CHUNK];
        let mut left = bytes;
        if kind == DOWNLOAD {
            while left > 0 {
                let want = usize::try_from(left.min(CHUNK as u64))?;
                let n = connection.read(&mut buffer[..want]).await?;
                ensure!(n > 0, "end of file after {} of {bytes} bytes", bytes - left);
                left -= n as u64;
            }
        } else {
            while left > 0 {
                let n = usize::try_from(left.min(CHUNK as u64))?;
                connection.write_all(&buffer[..n]).await?;
                left -= n as u64;
            }
            connection.flush().await?;
            let mut answer = vec![0u8; SINK_ANSWER.len()];
            connection.read_exact(&mut answer).await?;
            ensure!(
                answer == SINK_ANSWER,
                "the sink answered {:?}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    })
    .await
    .context("timed out")??;
    let seconds = started.elapsed().as_secs_f64();
    Ok((bytes as f64 / seconds / 1e6, connection))
}

/// Stops and removes the container and the pod, dropping their IDs once gone.
async fn tear_down(client: &mut CriClient, pod: &mut Pod) -> Result<()> {
    if let Some(container_id) = pod.container_id.clone() {
        timeout(client.runtime.stop_container(stop_request(&container_id)))
            .await
            .with_context(|| format!("StopContainer {container_id}"))?;
        timeout(client.runtime.remove_container(RemoveContainerRequest {
            container_id: container_id.clone(),
        }))
        .await
        .with_context(|| format!("RemoveContainer {container_id}"))?;
        pod.container_id = None;
    }
    if let Some(sandbox_id) = pod.sandbox_id.clone() {
        stop_pod(client, &sandbox_id).await?;
        remove_pod(client, &sandbox_id).await?;
        pod.sandbox_id = None;
    }
    Ok(())
}

/// Corral's server-side durations of the RPCs (from its debug log), and what the
/// transport and the client add to each.
fn server_notes(series: &Series, log: &str) -> Vec<String> {
    let rpcs = [
        ("Exec", EXEC_RPC),
        ("ExecSync", EXEC_SYNC),
        ("PortForward", PF_RPC),
    ];
    let server = server_durations(log, &rpcs.map(|(rpc, _)| rpc));
    rpcs.iter()
        .filter_map(|(rpc, index)| {
            let durations = server.get(*rpc)?;
            let p50 = percentile(durations, 0.5);
            Some(format!(
                "{rpc:<12} server n={:<3} p50 {p50:>7.3}  p90 {:>7.3}; client - server p50 {:.3}",
                durations.len(),
                percentile(durations, 0.9),
                percentile(&series.times[*index], 0.5) - p50
            ))
        })
        .collect()
}

fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::max)
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NAN, f64::min)
}

/// The results: latencies, throughput, the ratios and the goals.
fn report(results: &[Series], options: &Options) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<30} {:>4} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "runtime", "latency (ms)", "n", "p50", "p90", "mean", "max", "CPU ms"
    );
    for series in results {
        for (index, measure) in LATENCIES.iter().enumerate() {
            let times = &series.times[index];
            let cpu = match index {
                EXEC_TOTAL => Some(&series.exec_cpu_ms),
                EXEC_SYNC => Some(&series.exec_sync_cpu_ms),
                _ => None,
            }
            .filter(|cpu| !cpu.is_empty())
            .map_or_else(|| "-".to_owned(), |cpu| format!("{:.2}", mean(cpu)));
            let _ = writeln!(
                out,
                "{:<12} {measure:<30} {:>4} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {cpu:>8}",
                series.name,
                times.len(),
                percentile(times, 0.5),
                percentile(times, 0.9),
                mean(times),
                max(times),
            );
        }
    }
    let _ = writeln!(
        out,
        "CPU ms = mean of the runtime's CPU (daemon, helpers, shims, runc: its cgroup) per \
         call; pf answer = PortForward RPC + connect + upgrade + open to port {PING_PORT} + \
         its 6-byte answer; EOF after the answer = until the client sees the pod's close"
    );

    let _ = writeln!(
        out,
        "\n{:<12} {:<30} {:>4} {:>9} {:>9} {:>9} {:>10}",
        format!("{} MiB", options.bytes >> 20),
        "throughput (MB/s)",
        "n",
        "median",
        "min",
        "max",
        "CPU s/GiB"
    );
    for series in results {
        for (kind, name) in TRANSFERS.iter().enumerate() {
            for (path, values, cpu) in [
                (
                    "port-forward",
                    &series.forwarded[kind],
                    Some(&series.cpu_per_gib[kind]),
                ),
                ("direct to pod IP", &series.direct[kind], None),
            ] {
                let cpu = cpu
                    .filter(|cpu| !cpu.is_empty())
                    .map_or_else(|| "-".to_owned(), |cpu| format!("{:.2}", mean(cpu)));
                let _ = writeln!(
                    out,
                    "{:<12} {:<30} {:>4} {:>9.1} {:>9.1} {:>9.1} {cpu:>10}",
                    series.name,
                    format!("{} {}", path, name.split(' ').next().unwrap_or(name)),
                    values.len(),
                    percentile(values, 0.5),
                    min(values),
                    max(values),
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "MB = 10^6 bytes; download = {SOURCE_PORT} (dd from /dev/zero) to the client, upload = \
         the client to {SINK_PORT} (dd to /dev/null, then its answer), timed to the last \
         byte; direct = the same servers over the pod's IP and veth, no runtime in the path; \
         CPU s/GiB = the runtime's CPU per GiB forwarded"
    );

    let corral = results.iter().find(|s| s.name == "corral");
    let containerd = results.iter().find(|s| s.name == "containerd");
    if let (Some(corral), Some(containerd)) = (corral, containerd) {
        let _ = writeln!(
            out,
            "\n{:<42} {:>8} {:>8}",
            "ratio corral/containerd", "p50", "p90"
        );
        for (index, measure) in LATENCIES.iter().enumerate() {
            let (a, b) = (&corral.times[index], &containerd.times[index]);
            let _ = writeln!(
                out,
                "{measure:<42} {:>7.3}x {:>7.3}x",
                percentile(a, 0.5) / percentile(b, 0.5),
                percentile(a, 0.9) / percentile(b, 0.9)
            );
        }
        for (kind, name) in TRANSFERS.iter().enumerate() {
            let (a, b) = (&corral.forwarded[kind], &containerd.forwarded[kind]);
            let _ = writeln!(
                out,
                "{:<42} {:>7.3}x (median MB/s)",
                format!("port-forward {name}"),
                percentile(a, 0.5) / percentile(b, 0.5)
            );
        }
        out.push_str("goals (from the issue):\n");
        let exec = percentile(&corral.times[EXEC_TOTAL], 0.5)
            / percentile(&containerd.times[EXEC_TOTAL], 0.5);
        let verdict = if exec <= EXEC_GOAL { "met" } else { "NOT met" };
        let _ = writeln!(
            out,
            "  exec round trip p50                 {exec:>6.3}x containerd's (goal <= \
             {EXEC_GOAL}x) {verdict}"
        );
        for (kind, name) in TRANSFERS.iter().enumerate() {
            let ratio = percentile(&corral.forwarded[kind], 0.5)
                / percentile(&containerd.forwarded[kind], 0.5);
            let verdict = if ratio >= THROUGHPUT_GOAL {
                "met"
            } else {
                "NOT met"
            };
            let _ = writeln!(
                out,
                "  port-forward {:<22} {ratio:>6.3}x containerd's (goal >= \
                 {THROUGHPUT_GOAL}x) {verdict}",
                name.split(' ').next().unwrap_or(name)
            );
        }
    }
    for series in results.iter().filter(|s| !s.notes.is_empty()) {
        let _ = writeln!(
            out,
            "\n{}, from its debug log (server-side, ms, all calls incl. warm-ups):",
            series.name
        );
        for note in &series.notes {
            let _ = writeln!(out, "  {note}");
        }
    }
    out
}
