//! Pull throughput: a generated image of about 1 GiB in 6 gzip layers, served by the local
//! registry fixture, pulled and unpacked by Corral and by Debian's containerd (through its CRI
//! `PullImage`) in the same run.
//!
//! Prints seconds, MB/s and CPU time of every run, the medians and the ratio Corral/containerd.
//! Asserts nothing about times. Run as root: `cargo bench -p corral --bench pull` (or
//! `scripts/bench-pull.sh`, which installs containerd first). Without `/usr/bin/containerd`
//! only Corral is measured.
//!
//! Fairness: both pull the same reference from the same registry over loopback HTTP, with 3
//! layer downloads at once (both defaults), into roots on the same filesystem (both under the
//! temp dir). Every run downloads and unpacks everything: Corral removes the image between
//! runs (which removes its unpacked layers; the pull checks in Corral's log that every blob
//! was downloaded), containerd gets a fresh instance and root per run, started before the
//! clock starts (the pull checks that every layer became a snapshot). Dirty pages are flushed
//! (`sync`) before every timed pull. Corral syncs each layer it unpacks; containerd 1.6
//! fsyncs the blobs but not the unpacked files, so the comparison favours containerd there.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::agent::TestAgent;
use common::containerd::{CONTAINERD_BIN, Containerd};
use common::images::{Compression, ImageBuilder, Layer};
use common::registry::{PushedImage, Registry};
use corral::client::CriClient;
use k8s_cri::v1::{ImageSpec, PullImageRequest, RemoveImageRequest};

/// Pulls per runtime; the median is reported.
const RUNS: usize = 3;
/// Layers of the generated image.
const LAYERS: usize = 6;
/// File bytes of the whole image (1 GiB), split evenly over the layers.
const IMAGE_BYTES: u64 = 1 << 30;
/// Smallest and largest generated file.
const MIN_FILE: u64 = 4 << 10;
const MAX_FILE: u64 = 4 << 20;
/// Files per directory of a layer.
const FILES_PER_DIR: usize = 64;
/// Words of the text vocabulary, and text lines and code functions in the recurring pools
/// (small enough that a piece recurs within gzip's 32 KiB window).
const WORDS: usize = 4096;
const POOL: usize = 256;
/// Percent of text lines and code functions that are fresh rather than from the pools.
const FRESH_PERCENT: u64 = 10;
/// Seed of the content generator: the image (and its digests) is the same on every run.
const SEED: u64 = 0x00c0_7a11_be4c_0001;
/// Repository and tag of the benchmark image.
const REPO: &str = "bench/big";
const TAG: &str = "latest";
/// How long a Corral layer removal may take.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the pull benchmark needs root (it runs corral and containerd): run it as root");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run())
}

async fn run() -> Result<()> {
    let registry = Registry::start()?;
    let started = Instant::now();
    let (image, data_bytes, files) = push_bench_image(registry.addr()).await?;
    let reference = format!("{}/{REPO}:{TAG}", registry.addr());
    println!(
        "image {reference}: {LAYERS} gzip layers, {files} files, {:.1} MB of file data, \
         {:.1} MB compressed (ratio {:.2}), generated and pushed in {:.1} s",
        data_bytes as f64 / 1e6,
        image.total_compressed_size as f64 / 1e6,
        data_bytes as f64 / image.total_compressed_size as f64,
        started.elapsed().as_secs_f64(),
    );

    let containerd = if Path::new(CONTAINERD_BIN).exists() {
        let version = Command::new(CONTAINERD_BIN).arg("--version").output()?;
        println!(
            "containerd: {}",
            String::from_utf8_lossy(&version.stdout).trim()
        );
        true
    } else {
        println!(
            "containerd: SKIPPED, {CONTAINERD_BIN} is missing (apt-get install containerd runc, \
             or run scripts/bench-pull.sh)"
        );
        false
    };

    let agent = TestAgent::start().await?;
    let mut corral_runs = Vec::with_capacity(RUNS);
    let mut containerd_runs = Vec::with_capacity(RUNS);
    // Interleaved, so that a slow phase of the machine hits both runtimes alike.
    for run in 1..=RUNS {
        let sample = pull_corral(&agent, &reference, &image).await?;
        println!("run {run}: corral     {sample}");
        corral_runs.push(sample);
        if containerd {
            let instance = Containerd::start(registry.addr()).await?;
            let sample = pull_containerd(&instance, &reference).await?;
            instance.stop()?;
            println!("run {run}: containerd {sample}");
            containerd_runs.push(sample);
        }
    }
    let kept = kept_blob_bytes(&agent.root.join("images"), &image);
    let pulled = pulled_lines(&agent);
    drop(agent);

    println!();
    print!(
        "{}",
        report(
            image.total_compressed_size,
            data_bytes,
            &corral_runs,
            &containerd_runs
        )
    );
    if kept > 0 {
        println!(
            "\nnote: corral kept {:.1} MB of this image's layer blobs after RemoveImage \
             (each pull downloads and rewrites them anyway)",
            kept as f64 / 1e6
        );
    }
    println!("\ncorral log, per pull:");
    for line in pulled {
        println!("  {line}");
    }
    Ok(())
}

/// One timed pull: wall-clock seconds, and the CPU seconds (user + system) the runtime's
/// process used meanwhile, when readable.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    cpu: Option<f64>,
}

impl std::fmt::Display for Sample {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:7.2} s", self.seconds)?;
        match self.cpu {
            Some(cpu) => write!(f, " ({cpu:.2} s CPU)"),
            None => Ok(()),
        }
    }
}

/// The results table: per run and median, seconds, compressed MB/s, file-data MB/s and the
/// runtime's CPU seconds.
fn report(compressed: u64, data: u64, corral: &[Sample], containerd: &[Sample]) -> String {
    let mut out = String::new();
    let mb = |bytes: u64, seconds: f64| bytes as f64 / 1e6 / seconds;
    let cpu = |cpu: Option<f64>| cpu.map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.2}"));
    let _ = writeln!(
        out,
        "{:<11} {:>6} {:>9} {:>14} {:>14} {:>9}",
        "runtime", "run", "seconds", "MB/s (gzip)", "MB/s (data)", "CPU s"
    );
    let mut medians = Vec::new();
    for (name, runs) in [("corral", corral), ("containerd", containerd)] {
        if runs.is_empty() {
            let _ = writeln!(out, "{name:<11} skipped");
            continue;
        }
        for (index, sample) in runs.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name:<11} {:>6} {:>9.2} {:>14.1} {:>14.1} {:>9}",
                index + 1,
                sample.seconds,
                mb(compressed, sample.seconds),
                mb(data, sample.seconds),
                cpu(sample.cpu)
            );
        }
        let seconds: Vec<f64> = runs.iter().map(|sample| sample.seconds).collect();
        let cpus: Option<Vec<f64>> = runs.iter().map(|sample| sample.cpu).collect();
        let median_seconds = median(&seconds);
        let _ = writeln!(
            out,
            "{name:<11} {:>6} {median_seconds:>9.2} {:>14.1} {:>14.1} {:>9}",
            "median",
            mb(compressed, median_seconds),
            mb(data, median_seconds),
            cpu(cpus.map(|cpus| median(&cpus)))
        );
        medians.push(median_seconds);
    }
    let _ = writeln!(
        out,
        "MB = bytes / 1e6; gzip = layer blobs downloaded ({:.1} MB), data = file bytes \
         unpacked ({:.1} MB); CPU = user + system time of the runtime's process",
        compressed as f64 / 1e6,
        data as f64 / 1e6
    );
    if let [corral, containerd] = medians[..] {
        let _ = writeln!(
            out,
            "throughput ratio corral/containerd (median): {:.2}x (goal: at least 2x)",
            containerd / corral
        );
    }
    out
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    }
}

fn image_spec(reference: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: reference.to_owned(),
        ..ImageSpec::default()
    })
}

/// User + system CPU seconds process `pid` has used so far (its threads included), from
/// `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces) start with field 3, state;
    // utime and stime are fields 14 and 15.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant; any name is valid to ask for.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (user + system) as f64 / ticks as f64)
}

/// One timed `PullImage` over `client`, measuring the CPU of the runtime process `pid`.
async fn timed_pull(client: &mut CriClient, reference: &str, pid: Option<u32>) -> Result<Sample> {
    // Flush what earlier runs left dirty, so that its writeback does not land in this run.
    nix::unistd::sync();
    let cpu_before = pid.and_then(cpu_seconds);
    let started = Instant::now();
    let response = client
        .image
        .pull_image(PullImageRequest {
            image: image_spec(reference),
            ..PullImageRequest::default()
        })
        .await
        .with_context(|| format!("PullImage {reference}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = pid.and_then(cpu_seconds);
    if response.into_inner().image_ref.is_empty() {
        bail!("PullImage {reference} answered without an image ref");
    }
    let cpu = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| after - before);
    Ok(Sample { seconds, cpu })
}

/// Pulls with Corral, then removes the image and waits until its unpacked layers are gone,
/// so that the next run downloads and unpacks everything again (a pull skips only layers
/// that are unpacked). Checks in the log that the pull downloaded every layer blob.
async fn pull_corral(agent: &TestAgent, reference: &str, image: &PushedImage) -> Result<Sample> {
    let mut client = agent.client().await?;
    let sample = timed_pull(&mut client, reference, agent.pid()).await?;
    let downloaded = pulled_lines(agent)
        .last()
        .and_then(|line| log_field(line, "downloaded_bytes"))
        .and_then(|value| value.parse::<u64>().ok())
        .context("no downloaded_bytes in corral's last `image pulled` log line")?;
    if downloaded < image.total_compressed_size {
        bail!(
            "corral downloaded {downloaded} bytes, the layers have {}: not a full pull",
            image.total_compressed_size
        );
    }
    client
        .image
        .remove_image(RemoveImageRequest {
            image: image_spec(reference),
        })
        .await
        .with_context(|| format!("RemoveImage {reference}"))?;
    let layers = agent.root.join("images/layers");
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let left = unpacked_layers(&layers)?;
        if left == 0 {
            return Ok(sample);
        }
        if Instant::now() > deadline {
            bail!("corral kept {left} unpacked layers after RemoveImage");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Corral's `image pulled` log lines so far, without terminal colours.
fn pulled_lines(agent: &TestAgent) -> Vec<String> {
    agent
        .log()
        .lines()
        .filter(|line| line.contains("image pulled"))
        .map(strip_ansi)
        .collect()
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `name=value` in a text log line.
fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()
}

/// Unpacked layers (directories named by a chain ID) in Corral's layer store.
fn unpacked_layers(layers: &Path) -> Result<usize> {
    if !layers.is_dir() {
        return Ok(0);
    }
    let mut count = 0;
    for entry in std::fs::read_dir(layers)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            count += 1;
        }
    }
    Ok(count)
}

/// Bytes of `image`'s layer blobs still in Corral's content store.
fn kept_blob_bytes(images: &Path, image: &PushedImage) -> u64 {
    image
        .layer_digests
        .iter()
        .filter_map(|digest| {
            let hex = digest.trim_start_matches("sha256:");
            std::fs::metadata(images.join("content/blobs/sha256").join(hex)).ok()
        })
        .map(|metadata| metadata.len())
        .sum()
}

/// One timed pull by `containerd`; checks that every layer was unpacked into an overlayfs
/// snapshot.
async fn pull_containerd(containerd: &Containerd, reference: &str) -> Result<Sample> {
    let mut client = containerd.client().await?;
    let sample = timed_pull(&mut client, reference, containerd.pid())
        .await
        .with_context(|| format!("containerd log:\n{}", containerd.log()))?;
    let snapshots = containerd
        .dir()
        .join("root/io.containerd.snapshotter.v1.overlayfs/snapshots");
    let unpacked = std::fs::read_dir(&snapshots)
        .with_context(|| format!("reading {}", snapshots.display()))?
        .count();
    if unpacked != LAYERS {
        bail!("containerd has {unpacked} snapshots after the pull, expected {LAYERS}");
    }
    Ok(sample)
}

/// Generates the benchmark image and pushes it; returns it with its file bytes and file count.
async fn push_bench_image(registry: &str) -> Result<(PushedImage, u64, usize)> {
    let mut rng = Rng(SEED);
    let corpus = Corpus::new(&mut rng);
    let mut builder = ImageBuilder::new();
    let (mut data, mut files) = (0, 0);
    for index in 0..LAYERS {
        let (layer, layer_data, layer_files) = generate_layer(&mut rng, &corpus, index);
        builder = builder.layer(layer, Compression::Gzip);
        data += layer_data;
        files += layer_files;
    }
    let image = builder.push(registry, REPO, TAG).await?;
    Ok((image, data, files))
}

/// One layer of about `IMAGE_BYTES / LAYERS` bytes of files, log-uniformly sized between
/// `MIN_FILE` and `MAX_FILE` (many small files, most bytes in big ones), in directories of
/// `FILES_PER_DIR`.
fn generate_layer(rng: &mut Rng, corpus: &Corpus, index: usize) -> (Layer, u64, usize) {
    let target = IMAGE_BYTES / LAYERS as u64;
    let root = format!("/opt/bench/layer{index}");
    let mut layer = Layer::new()
        .comment(&format!("corral-bench: layer {index}"))
        .dir("/opt", 0o755)
        .dir("/opt/bench", 0o755)
        .dir(&root, 0o755);
    let (mut bytes, mut count) = (0u64, 0usize);
    while bytes < target {
        if count % FILES_PER_DIR == 0 {
            layer = layer.dir(&format!("{root}/d{:03}", count / FILES_PER_DIR), 0o755);
        }
        let (lo, hi) = ((MIN_FILE as f64).ln(), (MAX_FILE as f64).ln());
        let size = ((lo + rng.unit() * (hi - lo)).exp() as u64).min(target - bytes);
        let (content, extension) = corpus.file(rng, size as usize);
        let path = format!(
            "{root}/d{:03}/f{count:05}.{extension}",
            count / FILES_PER_DIR
        );
        let mode = if extension == "so" { 0o755 } else { 0o644 };
        layer = layer.file(&path, content, mode);
        bytes += size;
        count += 1;
    }
    (layer, bytes, count)
}

/// What generated files are made of: a vocabulary, and pools of text lines and machine-code
/// functions that recur across files (as boilerplate, headers and inlined code do), so that
/// gzip finds matches in its window the way it does in real images.
struct Corpus {
    words: Vec<Vec<u8>>,
    lines: Vec<Vec<u8>>,
    functions: Vec<Vec<u8>>,
}

impl Corpus {
    fn new(rng: &mut Rng) -> Corpus {
        let words = (0..WORDS)
            .map(|_| {
                let len = 2 + rng.below(10) as usize;
                (0..len).map(|_| b'a' + rng.below(26) as u8).collect()
            })
            .collect::<Vec<Vec<u8>>>();
        let lines = (0..POOL)
            .map(|_| {
                let mut line = Vec::new();
                text_line(rng, &words, &mut line);
                line
            })
            .collect();
        let functions = (0..POOL)
            .map(|_| {
                let mut function = Vec::new();
                code_function(rng, &mut function);
                function
            })
            .collect();
        Corpus {
            words,
            lines,
            functions,
        }
    }

    /// File content of one of three kinds: already-compressed assets (random bytes), text
    /// and machine code, each mostly recurring pieces with some fresh ones. gzip (level 1,
    /// as the image helper writes it) makes the mix about 2.3 times smaller.
    fn file(&self, rng: &mut Rng, size: usize) -> (Vec<u8>, &'static str) {
        let mut out = Vec::with_capacity(size + 1024);
        let kind = rng.below(100);
        let extension = if kind < 12 {
            while out.len() < size {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
            "gz"
        } else if kind < 52 {
            while out.len() < size {
                if rng.below(100) < FRESH_PERCENT {
                    text_line(rng, &self.words, &mut out);
                } else {
                    out.extend_from_slice(&self.lines[rng.skewed(POOL)]);
                }
            }
            "txt"
        } else {
            while out.len() < size {
                if rng.below(100) < FRESH_PERCENT {
                    code_function(rng, &mut out);
                } else {
                    out.extend_from_slice(&self.functions[rng.skewed(POOL)]);
                }
            }
            "so"
        };
        out.truncate(size);
        (out, extension)
    }
}

/// A line of 4 to 15 words, the common ones more often.
fn text_line(rng: &mut Rng, words: &[Vec<u8>], out: &mut Vec<u8>) {
    for _ in 0..4 + rng.below(12) {
        out.extend_from_slice(&words[rng.skewed(words.len())]);
        out.push(b' ');
    }
    out.push(b'\n');
}

/// 8 to 47 instructions: a recurring opcode, then a 1-byte or 4-byte random operand.
fn code_function(rng: &mut Rng, out: &mut Vec<u8>) {
    for _ in 0..8 + rng.below(40) {
        let random = rng.next();
        out.extend_from_slice(OPCODES[(random & 0xf) as usize]);
        let operand = (random >> 8).to_le_bytes();
        let len = if random & 0x30 == 0 { 4 } else { 1 };
        out.extend_from_slice(&operand[..len]);
    }
}

/// x86-64-like instruction prefixes of the machine-code pieces.
const OPCODES: [&[u8]; 16] = [
    &[0x48, 0x89, 0xe5],
    &[0x48, 0x8b, 0x45],
    &[0x48, 0x83, 0xec],
    &[0xe8],
    &[0x89, 0x45],
    &[0x8b, 0x45],
    &[0x48, 0x8d, 0x3d],
    &[0x0f, 0x84],
    &[0x74],
    &[0x75],
    &[0xc3, 0x90, 0x90],
    &[0x55, 0x48, 0x89, 0xe5],
    &[0x41, 0x57, 0x41, 0x56],
    &[0x48, 0x85, 0xc0],
    &[0x31, 0xc0],
    &[0xff, 0x15],
];

/// SplitMix64: small, fast and deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// An index below `n`, small ones far more likely (the square of a uniform choice).
    fn skewed(&mut self, n: usize) -> usize {
        let pick = (self.next() & 0xffff) as usize;
        (pick * pick * n) >> 32
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
