use std::path::PathBuf;

/// Errors of the CNI crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `[cni]` section of the config file is invalid.
    #[error("invalid cni config: {0}")]
    InvalidConfig(String),
    /// None of the config directories holds a network configuration.
    #[error("no network config found in {}", display_dirs(.dirs))]
    NoNetworkConfig { dirs: Vec<PathBuf> },
    /// A config directory could not be read.
    #[error("read cni config dir {path}: {source}")]
    ReadConfigDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A network configuration file could not be read.
    #[error("read cni config {path}: {source}")]
    ReadConfigFile {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A network configuration file is not valid.
    #[error("invalid cni config {path}: {reason}")]
    InvalidNetworkConfig { path: PathBuf, reason: String },
    /// A plugin named by the network configuration is in none of the plugin directories.
    #[error("cni plugin {plugin:?} (network {network:?}) not found in {}", display_dirs(.dirs))]
    PluginNotFound {
        plugin: String,
        network: String,
        dirs: Vec<PathBuf>,
    },
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    names.join(", ")
}
