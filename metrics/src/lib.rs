//! Container and pod stats for the CRI stats calls (`ContainerStats`, `PodSandboxStats` and
//! their list forms). Plain synchronous library code: everything that touches the kernel or
//! the filesystem blocks, so async callers run it on a blocking thread.
//!
//! - [`cgroup`]: [`CgroupReader`] reads CPU, memory and pids stats of a cgroup on cgroup v1,
//!   v2 and hybrid hosts, choosing per resource which hierarchy to read
//!   ([`Hierarchy::from_mountinfo`] finds them). A read never fails as a whole: what cannot
//!   be read stays `None`.
//! - [`CpuRate`]: turns cumulative CPU usage into nanocores, per container or pod id.
//! - [`dir_usage`] measures a writable layer like `du -x` (bytes and inodes);
//!   [`DiskUsageCache`] re-measures registered layers on a background thread so requests
//!   only read the last value.
//! - [`NetnsCounters`] reads the interface counters of a pod's network namespace over a
//!   netlink socket opened inside it; [`parse_proc_net_dev`] parses `/proc/net/dev` text.
//!
//! - [`cadvisor`] writes per-container and per-pod metrics under cAdvisor's names in the
//!   Prometheus text format ([`exposition`]); [`Config`] is the endpoint's `[metrics]` section.
//!
//! Errors are [`Error`].

pub mod cadvisor;
pub mod cgroup;
mod config;
mod cpu_rate;
mod disk_usage;
mod error;
pub mod exposition;
mod netdev;

pub use cgroup::{CgroupReader, CgroupStats, CpuStats, Hierarchy, MemoryStats, PidsStats};
pub use config::Config;
pub use cpu_rate::CpuRate;
pub use disk_usage::{DiskUsage, DiskUsageCache, dir_usage};
pub use error::Error;
pub use netdev::{InterfaceStats, NetnsCounters, parse_proc_net_dev};
