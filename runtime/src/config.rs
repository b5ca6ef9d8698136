use serde::{Deserialize, Serialize};

use crate::Error;

/// How container and pod cgroups are named and created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// Cgroups are directories that Corral creates in the cgroup filesystem.
    Cgroupfs,
    /// Cgroups are systemd slices and scopes (not supported yet).
    Systemd,
}

impl CgroupDriver {
    /// The name kubelet and the config file use for this driver.
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }
}

/// The `[runtime]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The cgroup driver reported to kubelet through the RuntimeConfig RPC and used for
    /// pod and container cgroups.
    pub cgroup_driver: CgroupDriver,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cgroup_driver: CgroupDriver::Cgroupfs,
        }
    }
}

impl Config {
    /// Checks the values that serde cannot check by itself.
    pub fn validate(&self) -> Result<(), Error> {
        match self.cgroup_driver {
            CgroupDriver::Cgroupfs => Ok(()),
            CgroupDriver::Systemd => Err(Error::InvalidConfig(
                "cgroup_driver = \"systemd\" is not supported yet; use \"cgroupfs\"".to_string(),
            )),
        }
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
    fn test_config_systemd_driver_rejected() {
        let config: Config = toml::from_str("cgroup_driver = \"systemd\"").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("systemd"), "{err}");
    }

    #[test]
    fn test_config_unknown_driver_is_a_parse_error() {
        assert!(toml::from_str::<Config>("cgroup_driver = \"lxc\"").is_err());
    }
}
