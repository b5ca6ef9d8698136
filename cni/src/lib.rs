//! Pod networking through standard CNI plugins: loading the network configuration from the
//! config directories, finding plugin binaries, invoking ADD/DEL/CHECK/STATUS/GC on the
//! plugin chain, and caching ADD results on disk for DEL and CHECK.
//!
//! Everything that runs plugins blocks: call it from a blocking thread.

pub mod cache;
mod chain;
mod config;
mod error;
pub mod invoke;
mod loader;
mod network;
mod result;
#[cfg(test)]
mod testutil;

pub use cache::{CacheRecord, CachedConfig};
pub use chain::{
    AttachRequest, Attachment, DEFAULT_IFNAME, PortMapping, PortProtocol, Runner, format_cni_args,
    kubelet_args, port_mappings_capability,
};
pub use config::Config;
pub use error::Error;
pub use invoke::{Command, DEFAULT_PLUGIN_TIMEOUT, PluginEnv, exec_plugin, plugin_versions};
pub use loader::NetworkLoader;
pub use network::{NetworkConfig, load_network};
pub use result::{CniResult, Dns, Interface, IpConfig, IpPrefix, Route};
