//! Cgroup v2 files: `cpu.stat` and `memory.*` of the unified hierarchy.

use std::path::Path;

use super::logged;
use super::parse::{keyed_u64, read_limit, read_text, read_u64};
use super::stats::{CpuStats, MemoryStats};

/// CPU usage and throttling from `cpu.stat` (microseconds, turned into nanoseconds).
pub(super) fn read_cpu(dir: &Path) -> CpuStats {
    let path = dir.join("cpu.stat");
    let Some(text) = logged(read_text(&path)) else {
        return CpuStats::default();
    };
    let key = |key| logged(keyed_u64(&text, &path, key));
    let usec = |name| key(name).map(|usec: u64| usec.saturating_mul(1_000));
    CpuStats {
        usage_ns: usec("usage_usec"),
        user_ns: usec("user_usec"),
        system_ns: usec("system_usec"),
        nr_periods: key("nr_periods"),
        nr_throttled: key("nr_throttled"),
        throttled_ns: usec("throttled_usec"),
    }
}

/// Memory stats from `memory.current`, `memory.stat`, `memory.swap.current`, `memory.max`
/// and `memory.events`.
pub(super) fn read_memory(dir: &Path) -> MemoryStats {
    let usage = logged(read_u64(&dir.join("memory.current")));
    let stat_path = dir.join("memory.stat");
    let stat = logged(read_text(&stat_path));
    let key = |key| logged(keyed_u64(stat.as_deref()?, &stat_path, key));
    let inactive_file = key("inactive_file");
    let events_path = dir.join("memory.events");
    let events = logged(read_text(&events_path));
    let event = |key| logged(keyed_u64(events.as_deref()?, &events_path, key));
    MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage
            .zip(inactive_file)
            .map(|(usage, inactive)| usage.saturating_sub(inactive)),
        rss_bytes: key("anon"),
        cache_bytes: key("file"),
        page_faults: key("pgfault"),
        major_page_faults: key("pgmajfault"),
        swap_bytes: logged(read_u64(&dir.join("memory.swap.current"))),
        limit_bytes: logged(read_limit(&dir.join("memory.max"))).and_then(|limit| limit.value()),
        oom_events: event("oom"),
        oom_kills: event("oom_kill"),
    }
}
