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
    /// The per-container monitor binary; empty = `corral-monitor` next to the `corral` binary.
    pub monitor_path: std::path::PathBuf,
    /// Container log lines longer than this are split into partial (`P`) records.
    pub log_max_line_bytes: usize,
    /// Where `Localhost` seccomp profiles given by a relative name are looked up.
    pub seccomp_profile_root: std::path::PathBuf,
    /// The most processes (tasks) one container may have, written to its `pids.max`;
    /// 0 = no limit from Corral (kubelet's pod-level pids limit still applies). As CRI-O's
    /// `pids_limit`: the CRI has no per-container field for it.
    pub pids_limit: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cgroup_driver: CgroupDriver::Cgroupfs,
            monitor_path: std::path::PathBuf::new(),
            log_max_line_bytes: 16 * 1024,
            seccomp_profile_root: std::path::PathBuf::from("/etc/corral/seccomp"),
            pids_limit: 0,
        }
    }
}

impl Config {
    /// Checks the values that serde cannot check by itself.
    pub fn validate(&self) -> Result<(), Error> {
        if !self.monitor_path.as_os_str().is_empty() && !self.monitor_path.is_absolute() {
            return Err(Error::InvalidConfig(
                "monitor_path must be absolute (or empty)".into(),
            ));
        }
        if !(256..=1024 * 1024).contains(&self.log_max_line_bytes) {
            return Err(Error::InvalidConfig(
                "log_max_line_bytes must be between 256 and 1048576".into(),
            ));
        }
        if !self.seccomp_profile_root.is_absolute() {
            return Err(Error::InvalidConfig(
                "seccomp_profile_root must be absolute".into(),
            ));
        }
        if self.pids_limit < 0 {
            return Err(Error::InvalidConfig(
                "pids_limit must be 0 (no limit) or positive".into(),
            ));
        }
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
