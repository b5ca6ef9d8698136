//! Pod sandboxes: pinned network, IPC and UTS namespaces (and a PID namespace when the pod
//! shares one), the sandbox directory with hostname, hosts, resolv.conf and /dev/shm, pod
//! sysctls, and the checking of pod cgroup parents.
//!
//! Everything here blocks (mounts, namespaces): call it from blocking threads.

mod cgroup;
mod config;
mod error;
pub mod files;
pub mod namespaces;
pub mod pid_init;
pub mod rollback;
pub mod shm;
pub mod sysctl;

pub use cgroup::validate_cgroup_parent;
pub use config::Config;
pub use error::Error;
