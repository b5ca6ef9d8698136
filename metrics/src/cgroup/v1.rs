//! Cgroup v1 files: `cpuacct.*`, `cpu.stat` and `memory.*`, each read from the hierarchy
//! that carries its controller.

use std::path::Path;

use super::parse::{keyed_u64, read_text, read_u64};
use super::stats::{CpuStats, MemoryStats};
use super::{logged, ticks_to_ns};

/// `memory.limit_in_bytes` at or above this means "no limit" (the kernel writes its page
/// counter maximum, 0x7FFF_FFFF_FFFF_F000 on 4 KiB pages).
const UNLIMITED_THRESHOLD: u64 = 1 << 62;

/// CPU usage from the cpuacct controller: `cpuacct.usage` (ns) and `cpuacct.stat` (user and
/// system in USER_HZ ticks, `clk_tck` a second).
pub(super) fn read_cpuacct(dir: &Path, clk_tck: Option<u64>) -> CpuStats {
    let stat_path = dir.join("cpuacct.stat");
    let stat = logged(read_text(&stat_path));
    let ticks = |key| {
        let text = stat.as_deref()?;
        let ticks = logged(keyed_u64(text, &stat_path, key))?;
        ticks_to_ns(ticks, clk_tck?)
    };
    CpuStats {
        usage_ns: logged(read_u64(&dir.join("cpuacct.usage"))),
        user_ns: ticks("user"),
        system_ns: ticks("system"),
        ..CpuStats::default()
    }
}

/// CFS throttling from the cpu controller's `cpu.stat` (`throttled_time` is in ns).
pub(super) fn read_cpu_throttling(dir: &Path) -> CpuStats {
    let path = dir.join("cpu.stat");
    let Some(text) = logged(read_text(&path)) else {
        return CpuStats::default();
    };
    let key = |key| logged(keyed_u64(&text, &path, key));
    CpuStats {
        nr_periods: key("nr_periods"),
        nr_throttled: key("nr_throttled"),
        throttled_ns: key("throttled_time"),
        ..CpuStats::default()
    }
}

/// Memory stats from the memory controller. The `total_*` lines of `memory.stat` cover the
/// whole subtree, like the usage counter.
pub(super) fn read_memory(dir: &Path) -> MemoryStats {
    let usage = logged(read_u64(&dir.join("memory.usage_in_bytes")));
    let stat_path = dir.join("memory.stat");
    let stat = logged(read_text(&stat_path));
    let key = |key| logged(keyed_u64(stat.as_deref()?, &stat_path, key));
    let inactive_file = key("total_inactive_file");
    // Swap accounting is off unless the kernel was booted with it: the file is then absent.
    let swap_bytes = logged(read_u64(&dir.join("memory.memsw.usage_in_bytes")))
        .zip(usage)
        .map(|(memsw, usage)| memsw.saturating_sub(usage));
    let limit_bytes = logged(read_u64(&dir.join("memory.limit_in_bytes")))
        .filter(|limit| *limit < UNLIMITED_THRESHOLD);
    let oom_path = dir.join("memory.oom_control");
    let oom_kills = logged(read_text(&oom_path))
        .and_then(|text| logged(keyed_u64(&text, &oom_path, "oom_kill")));
    MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage
            .zip(inactive_file)
            .map(|(usage, inactive)| usage.saturating_sub(inactive)),
        rss_bytes: key("total_rss"),
        cache_bytes: key("total_cache"),
        page_faults: key("total_pgfault"),
        major_page_faults: key("total_pgmajfault"),
        swap_bytes,
        limit_bytes,
        oom_events: oom_kills,
        oom_kills,
    }
}
