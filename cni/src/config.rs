use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The `[cni]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directories searched, in order, for the network configuration; in the first directory
    /// that has one, the lexicographically first `.conflist`, `.conf` or `.json` file is used.
    pub conf_dirs: Vec<PathBuf>,
    /// Directories searched, in order, for plugin executables.
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            conf_dirs: vec![PathBuf::from("/etc/cni/net.d")],
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

impl Config {
    /// Checks the values that serde cannot check by itself.
    pub fn validate(&self) -> Result<(), Error> {
        if self.conf_dirs.is_empty() {
            return Err(Error::InvalidConfig("conf_dirs must not be empty".into()));
        }
        if self.bin_dirs.is_empty() {
            return Err(Error::InvalidConfig("bin_dirs must not be empty".into()));
        }
        for dir in self.conf_dirs.iter().chain(&self.bin_dirs) {
            if !dir.is_absolute() {
                return Err(Error::InvalidConfig(format!(
                    "{} is not an absolute path",
                    dir.display()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_default_is_valid() {
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn test_config_relative_dir_rejected() {
        let config: Config = toml::from_str("conf_dirs = [\"net.d\"]").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("net.d is not an absolute path"), "{err}");
    }

    #[test]
    fn test_config_empty_bin_dirs_rejected() {
        let config: Config = toml::from_str("bin_dirs = []").unwrap();
        assert!(config.validate().is_err());
    }
}
