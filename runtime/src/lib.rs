//! Containers: the OCI runtime spec built from a CRI request, the overlay root filesystem,
//! cgroups, the per-container monitor process, CRI-format logs, exec and stop.

mod config;
mod error;
pub mod exec;
pub mod logs;
pub mod monitor;
pub mod overlay;
pub mod spec;
pub mod update;

pub use config::{CgroupDriver, Config};
pub use error::Error;
