use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The `[images]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Registry host configuration in containerd's format: `<certs_dir>/<host>/hosts.toml`
    /// (mirrors, plain HTTP, skip_verify, CA certificates).
    pub certs_dir: PathBuf,
    /// How many layers of one pull download at once.
    pub max_concurrent_downloads: usize,
    /// A pull that receives no bytes for this many seconds is cancelled.
    pub pull_progress_timeout_seconds: u64,
    /// Images reported as pinned (never garbage-collected by kubelet), e.g. the sandbox image.
    pub pinned_images: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            certs_dir: PathBuf::from("/etc/corral/certs.d"),
            max_concurrent_downloads: 3,
            pull_progress_timeout_seconds: 60,
            pinned_images: vec!["registry.k8s.io/pause:3.10".to_string()],
        }
    }
}

impl Config {
    /// Checks the values that serde cannot check by itself.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.certs_dir.is_absolute() {
            return Err(Error::InvalidConfig(format!(
                "certs_dir: {} is not an absolute path",
                self.certs_dir.display()
            )));
        }
        if !(1..=64).contains(&self.max_concurrent_downloads) {
            return Err(Error::InvalidConfig(
                "max_concurrent_downloads: must be between 1 and 64".to_string(),
            ));
        }
        if self.pull_progress_timeout_seconds == 0 {
            return Err(Error::InvalidConfig(
                "pull_progress_timeout_seconds: must be at least 1".to_string(),
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
    fn test_config_zero_downloads_rejected() {
        let config = Config {
            max_concurrent_downloads: 0,
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
