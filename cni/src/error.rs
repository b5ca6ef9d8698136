use std::path::PathBuf;
use std::time::Duration;

use crate::invoke::Command;

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
    /// The attachment parameters (container id, interface name, CNI_ARGS, ...) are not valid.
    #[error("invalid cni attachment: {0}")]
    InvalidAttachment(String),
    /// The operation needs a newer CNI spec version than the network configuration declares.
    #[error(
        "cni {command} not supported by cniVersion {cni_version} of network {network:?} (needs {needs})"
    )]
    UnsupportedByVersion {
        command: Command,
        network: String,
        cni_version: String,
        needs: &'static str,
    },
    /// A plugin executable could not be started.
    #[error("start cni plugin {plugin:?} ({path}) for {command}: {source}")]
    SpawnPlugin {
        plugin: String,
        command: Command,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Waiting for a plugin or reading its output failed.
    #[error("cni plugin {plugin:?} {command}: {source}")]
    PluginIo {
        plugin: String,
        command: Command,
        source: std::io::Error,
    },
    /// A plugin did not finish within the timeout; it and its process group were killed.
    #[error("cni plugin {plugin:?} {command} timed out after {timeout:?} and was killed")]
    PluginTimeout {
        plugin: String,
        command: Command,
        timeout: Duration,
    },
    /// A plugin failed and reported a CNI error (`{code, msg, details}`).
    #[error("cni plugin {plugin:?} {command} failed with code {code}: {msg}{}{}",
        suffix("details", .details), suffix("stderr", .stderr))]
    PluginFailed {
        plugin: String,
        command: Command,
        /// The CNI error code (1-99 well-known, 100+ plugin specific).
        code: u32,
        msg: String,
        details: String,
        /// The last lines the plugin wrote to stderr.
        stderr: String,
    },
    /// A plugin failed without a CNI error on stdout.
    #[error("cni plugin {plugin:?} {command} failed ({status}){}{}",
        suffix("output", .stdout), suffix("stderr", .stderr))]
    PluginExited {
        plugin: String,
        command: Command,
        /// How the process ended, for example "exit status: 2".
        status: String,
        /// The end of what it wrote to stdout.
        stdout: String,
        /// The end of what it wrote to stderr.
        stderr: String,
    },
    /// A plugin succeeded but its output is not what the command returns.
    #[error("cni plugin {plugin:?} {command} returned invalid output: {reason}")]
    InvalidPluginOutput {
        plugin: String,
        command: Command,
        reason: String,
    },
    /// A CNI result is not valid.
    #[error("invalid cni result: {0}")]
    InvalidResult(String),
    /// CHECK needs the result of the ADD, and none is cached.
    #[error(
        "no cached cni result for network {network:?}, container {container_id}, interface {ifname}"
    )]
    NoCachedResult {
        network: String,
        container_id: String,
        ifname: String,
    },
    /// Some plugins of a best-effort chain (DEL, GC) failed; the others ran.
    #[error("cni {command} of network {network:?} failed: {}", display_errors(.errors))]
    ChainFailed {
        command: Command,
        network: String,
        errors: Vec<Error>,
    },
    /// A result cache file or directory could not be read or written.
    #[error("cni result cache {path}: {source}")]
    CacheIo {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A result cache record could not be parsed or encoded.
    #[error("invalid cni result cache record {path}: {reason}")]
    InvalidCacheRecord { path: PathBuf, reason: String },
}

impl Error {
    /// The CNI error code a plugin reported, if this is a plugin error.
    pub fn plugin_code(&self) -> Option<u32> {
        match self {
            Error::PluginFailed { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    names.join(", ")
}

fn display_errors(errors: &[Error]) -> String {
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    messages.join("; ")
}

fn suffix(label: &str, text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!("; {label}: {text}")
    }
}
