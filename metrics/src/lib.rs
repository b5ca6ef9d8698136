//! Container and pod stats for the CRI stats calls.
//!
//! - [`cgroup`]: [`CgroupReader`] reads CPU, memory and pids stats of a cgroup on cgroup v1,
//!   v2 and hybrid hosts, choosing per resource where to read; partial stats on any failure.

pub mod cgroup;
mod cpu_rate;
mod disk_usage;
mod error;

pub use cgroup::{CgroupReader, CgroupStats, CpuStats, Hierarchy, MemoryStats, PidsStats};
pub use cpu_rate::CpuRate;
pub use disk_usage::{DiskUsage, DiskUsageCache, dir_usage};
pub use error::Error;
