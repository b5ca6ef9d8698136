//! What a benchmark does before its series: its arguments, its root check and tokio runtime,
//! and the versions of the runtimes it compares.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::series::CORRAL_LOG_LEVEL;
use crate::common::agent::corral_binary;
use crate::common::containerd::CONTAINERD_BIN;

/// Runs `bench` (named `name` in errors) as root on a multi-threaded tokio runtime.
pub fn run_as_root(name: &str, bench: impl Future<Output = Result<()>>) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the {name} benchmark needs root (it runs corral and containerd): run it as root");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?
        .block_on(bench)
}

/// The pod count: `--pods N` (or `--pods=N`), else `CORRAL_BENCH_PODS`, else
/// `default_pods`, within 1..=`max_pods`. Each of `options` is a further `--NAME N` (or
/// `--NAME=N`) with its default, replaced by the argument's value. Cargo adds `--bench` to a
/// harness-less bench's arguments.
pub fn parse_args(
    name: &str,
    default_pods: usize,
    max_pods: usize,
    options: &mut [(&str, &mut u64)],
) -> Result<usize> {
    let mut pods = match std::env::var("CORRAL_BENCH_PODS") {
        Ok(value) => parse_number("pods", &value)?,
        Err(_) => default_pods as u64,
    };
    let usage = options
        .iter()
        .fold(format!("usage: {name} [--pods N]"), |usage, (option, _)| {
            format!("{usage} [--{option} N]")
        });
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--bench" {
            continue;
        }
        let Some(flag) = arg.strip_prefix("--") else {
            bail!("unknown argument {arg:?}; {usage}");
        };
        let (flag, value) = match flag.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), value.to_owned()),
            None => (
                flag.to_owned(),
                args.next()
                    .with_context(|| format!("--{flag} needs a number"))?,
            ),
        };
        let value = parse_number(&flag, &value)?;
        if flag == "pods" {
            pods = value;
        } else if let Some((_, slot)) = options.iter_mut().find(|(option, _)| *option == flag) {
            **slot = value;
        } else {
            bail!("unknown argument {arg:?}; {usage}");
        }
    }
    let pods = usize::try_from(pods)?;
    ensure!(
        (1..=max_pods).contains(&pods),
        "pods must be 1..={max_pods}, not {pods}"
    );
    Ok(pods)
}

fn parse_number(name: &str, text: &str) -> Result<u64> {
    text.trim()
        .parse()
        .with_context(|| format!("{name}: {text:?} is not a number"))
}

/// The runtimes a benchmark compares.
pub struct Runtimes {
    /// Whether Debian's containerd is installed (else only Corral runs).
    pub containerd: bool,
    /// The shipped `corral-monitor` next to the `corral` binary cargo built.
    pub monitor: PathBuf,
}

impl Runtimes {
    /// Finds the runtimes (`script` installs what is missing) and prints their versions.
    pub fn announce(script: &str) -> Result<Runtimes> {
        let containerd = Path::new(CONTAINERD_BIN).exists();
        let version = if containerd {
            let output = Command::new(CONTAINERD_BIN).arg("--version").output()?;
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        } else {
            format!("SKIPPED, {CONTAINERD_BIN} is missing (run {script})")
        };
        let monitor = corral_binary().with_file_name("corral-monitor");
        ensure!(
            monitor.exists(),
            "{} is missing: install the shipped monitor with `scripts/build-monitor.sh release` \
             ({script} does)",
            monitor.display()
        );
        println!("containerd: {version}");
        println!("corral:     {}", corral_binary().display());
        println!(
            "monitor:    {} ({})",
            monitor.display(),
            describe_elf(&monitor)
        );
        Ok(Runtimes {
            containerd,
            monitor,
        })
    }

    /// Corral's config: debug log (request durations) and the shipped monitor.
    pub fn corral_config(&self) -> String {
        format!(
            "{CORRAL_LOG_LEVEL}\n[runtime]\nmonitor_path = {:?}\n",
            self.monitor
        )
    }
}

/// `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Whether an executable is position-independent (ELF `e_type` 3) or not (2), and its size.
pub fn describe_elf(path: &Path) -> String {
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
