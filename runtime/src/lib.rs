//! Containers: the OCI runtime spec built from a CRI request, the overlay root filesystem,
//! cgroups, the per-container monitor process, CRI-format logs, exec and stop.
//!
//! The foundation holds only the runtime configuration; the container machinery arrives
//! with the container issue.

mod config;
mod error;

pub use config::{CgroupDriver, Config};
pub use error::Error;
