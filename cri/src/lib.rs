//! Corral's CRI server: the `corral` binary's library half. `main.rs` parses the command line;
//! everything else lives here so the node tests and benchmarks can reuse the CRI client.

pub mod agent;
pub mod client;
pub mod config;
pub mod error;
pub mod image_convert;
pub mod images;
pub mod logging;
pub mod names;
pub mod pod_network;
pub mod request_log;
pub mod sandbox_record;
pub mod sandboxes;
pub mod server;
pub mod service;
pub mod socket;
pub mod state;

mod image_fs_info;
mod image_list;
mod image_pull;
mod image_remove;
mod image_status;
mod runtime_config_get;
mod runtime_config_update;
mod runtime_status;
mod runtime_version;
mod sandbox_list;
mod sandbox_remove;
mod sandbox_run;
mod sandbox_status;
mod sandbox_stop;
