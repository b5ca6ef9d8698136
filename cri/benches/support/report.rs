//! Statistics of the benchmarks' reports, and reading the runtimes' logs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Linear interpolation between the closest ranks (`p` in 0..=1) of `values`.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The phase table: per runtime and phase (`rows`: runtime, phase, wall seconds, the
/// runtime's CPU seconds) the wall time, the CPU time and the CPU time per pod, in columns
/// `widths` (runtime, phase) wide.
pub fn phase_table<'a>(
    out: &mut String,
    widths: (usize, usize),
    pods: usize,
    rows: impl IntoIterator<Item = (&'a str, &'a str, f64, Option<f64>)>,
) {
    let (name_width, phase_width) = widths;
    let _ = writeln!(
        out,
        "\n{:<name_width$} {:<phase_width$} {:>8} {:>12} {:>12}",
        "runtime", "phase", "wall s", "CPU s", "CPU ms/pod"
    );
    for (name, phase, wall, cpu) in rows {
        let seconds = cpu.map_or_else(|| "-".to_owned(), |cpu| format!("{cpu:.2}"));
        let per_pod = cpu.map_or_else(
            || "-".to_owned(),
            |cpu| format!("{:.1}", cpu * 1000.0 / pods as f64),
        );
        let _ = writeln!(
            out,
            "{name:<name_width$} {phase:<phase_width$} {wall:>8.2} {seconds:>12} {per_pod:>12}"
        );
    }
}

/// Where Corral's time went: per RPC of `steps` the server-side duration, and per CNI
/// plugin and command the plugin's run time, p50 and p90.
pub fn corral_breakdown(log: &str, steps: &[&str]) -> Vec<String> {
    let mut groups: BTreeMap<String, Vec<f64>> = server_durations(log, steps)
        .into_iter()
        .map(|(method, durations)| (format!("{method} (server)"), durations))
        .collect();
    for line in log
        .lines()
        .filter(|line| line.contains("cni plugin finished"))
    {
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

/// The server-side durations (ms) Corral's debug log gives for each RPC of `steps`
/// (`request done method=... duration_ms=...`), by method.
pub fn server_durations(log: &str, steps: &[&str]) -> BTreeMap<String, Vec<f64>> {
    let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in log.lines().filter(|line| line.contains("request done")) {
        let method = log_field(line, "method").map(|m| m.trim_end_matches(['}', ':']));
        let duration = log_field(line, "duration_ms").and_then(|d| d.parse().ok());
        if let (Some(method), Some(duration)) = (method, duration) {
            if steps.contains(&method) {
                durations
                    .entry(method.to_owned())
                    .or_default()
                    .push(duration);
            }
        }
    }
    durations
}

/// The value of `name=value` in a text log line.
pub fn log_field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split_whitespace().next()
}

/// The last lines of a log, for an error message.
pub fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}
