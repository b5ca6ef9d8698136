//! Pod networking through standard CNI plugins: loading the network configuration from the
//! config directories, finding plugin binaries, and (with the pod sandbox issue) invoking
//! ADD/DEL/CHECK with a result cache.

mod config;
mod error;
mod loader;
mod network;

pub use config::Config;
pub use error::Error;
pub use loader::NetworkLoader;
pub use network::{NetworkConfig, load_network};
