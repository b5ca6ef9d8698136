use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The `[pod_sandbox]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where pod network namespaces are pinned (bind-mounted); `/run/netns` is where
    /// `ip netns` and CNI tooling look for them.
    pub netns_dir: PathBuf,
    /// Size of each pod's /dev/shm tmpfs, in bytes.
    pub shm_size_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            netns_dir: PathBuf::from("/run/netns"),
            shm_size_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Checks the values that serde cannot check by itself.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.netns_dir.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "netns_dir: {} is not an absolute path",
                self.netns_dir.display()
            )));
        }
        if self.shm_size_bytes < 4096 {
            return Err(Error::InvalidConfig(
                "shm_size_bytes: must be at least 4096".to_string(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn test_config_relative_netns_dir_rejected() {
        let config: Config = toml::from_str("netns_dir = \"netns\"").unwrap();
        assert!(config.validate().is_err());
    }
}
