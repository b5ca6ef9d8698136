//! The plain-data stats one cgroup read returns. Every field is optional: a missing
//! controller, file or value leaves it `None`.

/// Stats of one cgroup, as far as they could be read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// CPU usage and throttling.
    pub cpu: CpuStats,
    /// Memory usage, limit and OOM counters.
    pub memory: MemoryStats,
    /// Process count and limit.
    pub pids: PidsStats,
}

/// CPU stats of a cgroup. All times are cumulative nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Total CPU time used (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`).
    pub usage_ns: Option<u64>,
    /// CPU time spent in user mode (v1 `cpuacct.stat` `user`, v2 `user_usec`).
    pub user_ns: Option<u64>,
    /// CPU time spent in kernel mode (v1 `cpuacct.stat` `system`, v2 `system_usec`).
    pub system_ns: Option<u64>,
    /// Enforcement periods that elapsed (`cpu.stat` `nr_periods`).
    pub nr_periods: Option<u64>,
    /// Periods in which the cgroup was throttled (`cpu.stat` `nr_throttled`).
    pub nr_throttled: Option<u64>,
    /// Total time throttled (v1 `throttled_time`, v2 `throttled_usec`).
    pub throttled_ns: Option<u64>,
}

/// Memory stats of a cgroup, in bytes unless said otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Memory charged to the cgroup (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage_bytes: Option<u64>,
    /// Usage minus inactive file pages, floored at 0: what kubelet evicts on.
    pub working_set_bytes: Option<u64>,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss_bytes: Option<u64>,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache_bytes: Option<u64>,
    /// Page faults, a count (v1 `total_pgfault`, v2 `pgfault`).
    pub page_faults: Option<u64>,
    /// Major page faults, a count (v1 `total_pgmajfault`, v2 `pgmajfault`).
    pub major_page_faults: Option<u64>,
    /// Swap used (v1 `memory.memsw.usage_in_bytes` minus usage, v2 `memory.swap.current`).
    pub swap_bytes: Option<u64>,
    /// Memory limit; `None` when unlimited or unknown.
    pub limit_bytes: Option<u64>,
    /// Times the cgroup hit its limit and the OOM killer was invoked (v2 `memory.events`
    /// `oom`). Cgroup v1 keeps no such counter: there it is the `oom_kill` count of
    /// `memory.oom_control` (kernel 4.13 and later).
    pub oom_events: Option<u64>,
    /// Processes of the cgroup killed by the OOM killer (v2 `memory.events` `oom_kill`,
    /// v1 `memory.oom_control` `oom_kill`, kernel 4.13 and later).
    pub oom_kills: Option<u64>,
}

/// Process stats of a cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PidsStats {
    /// Processes and threads in the cgroup (`pids.current`).
    pub current: Option<u64>,
    /// Their limit (`pids.max`); `None` when unlimited (`max`) or unknown.
    pub limit: Option<u64>,
}
