//! UpdateContainerResources: new limits merged over the current ones and written to the
//! container's live cgroup, as containerd's `updateOCIResource` + task update do.
//!
//! A zero (or empty) field in the update means "leave as is", the CRI convention for every
//! number in `LinuxContainerResources`. The merged limits are written through libcgroups
//! (the same code that set them at create), so v1 memory/swap ordering and v2 file names are
//! handled once. `oom_score_adj` is not changed on a live container (containerd leaves it too).

use std::path::PathBuf;

use k8s_cri::v1::LinuxContainerResources;
use libcgroups::common::{CgroupConfig, CgroupManager, ControllerOpt, create_cgroup_manager};

use crate::Error;
use crate::spec::{HostProbe, linux_resources};

/// `update` laid over `current`: every non-zero, non-empty field of `update` wins.
pub fn merge_resources(
    current: &LinuxContainerResources,
    update: &LinuxContainerResources,
) -> LinuxContainerResources {
    fn pick<T: Default + PartialEq + Clone>(current: &T, update: &T) -> T {
        if *update == T::default() {
            current.clone()
        } else {
            update.clone()
        }
    }
    LinuxContainerResources {
        cpu_period: pick(&current.cpu_period, &update.cpu_period),
        cpu_quota: pick(&current.cpu_quota, &update.cpu_quota),
        cpu_shares: pick(&current.cpu_shares, &update.cpu_shares),
        memory_limit_in_bytes: pick(
            &current.memory_limit_in_bytes,
            &update.memory_limit_in_bytes,
        ),
        oom_score_adj: current.oom_score_adj,
        cpuset_cpus: pick(&current.cpuset_cpus, &update.cpuset_cpus),
        cpuset_mems: pick(&current.cpuset_mems, &update.cpuset_mems),
        hugepage_limits: pick(&current.hugepage_limits, &update.hugepage_limits),
        unified: {
            let mut unified = current.unified.clone();
            unified.extend(update.unified.iter().map(|(k, v)| (k.clone(), v.clone())));
            unified
        },
        memory_swap_limit_in_bytes: pick(
            &current.memory_swap_limit_in_bytes,
            &update.memory_swap_limit_in_bytes,
        ),
    }
}

/// Writes `resources` to the cgroup at `cgroups_path` (the container's `linux.cgroupsPath`).
/// Blocking: call it from a blocking thread. Returns warnings (limits the host cannot set).
pub fn apply_resources(
    cgroups_path: &str,
    container_id: &str,
    resources: &LinuxContainerResources,
    host: &dyn HostProbe,
) -> Result<Vec<String>, Error> {
    let mut warnings = Vec::new();
    let linux = linux_resources(Some(resources), host, &mut warnings)?;
    let failed = |message: String| Error::UpdateCgroup {
        cgroup: cgroups_path.to_string(),
        message,
    };
    let manager = create_cgroup_manager(CgroupConfig {
        cgroup_path: PathBuf::from(cgroups_path),
        systemd_cgroup: false,
        container_name: container_id.to_string(),
    })
    .map_err(|e| failed(e.to_string()))?;
    let options = ControllerOpt {
        resources: &linux,
        freezer_state: None,
        oom_score_adj: None,
        disable_oom_killer: false,
    };
    manager
        .apply(&options)
        .map_err(|e| failed(error_chain(&e)))?;
    Ok(warnings)
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_merge_resources_zero_keeps_current() {
        let current = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: 5,
            cpuset_cpus: "0".into(),
            ..Default::default()
        };
        let update = LinuxContainerResources {
            cpu_quota: 20_000,
            memory_limit_in_bytes: 128 << 20,
            oom_score_adj: -999,
            ..Default::default()
        };
        let merged = merge_resources(&current, &update);
        assert_eq!(merged.cpu_period, 100_000);
        assert_eq!(merged.cpu_quota, 20_000);
        assert_eq!(merged.cpu_shares, 512);
        assert_eq!(merged.memory_limit_in_bytes, 128 << 20);
        assert_eq!(merged.cpuset_cpus, "0");
        assert_eq!(merged.oom_score_adj, 5, "oom_score_adj is not updated live");
    }

    #[test]
    fn test_merge_resources_unified_adds_keys() {
        let current = LinuxContainerResources {
            unified: [("memory.high".to_string(), "1M".to_string())].into(),
            ..Default::default()
        };
        let update = LinuxContainerResources {
            unified: [("pids.max".to_string(), "10".to_string())].into(),
            ..Default::default()
        };
        let merged = merge_resources(&current, &update);
        assert_eq!(merged.unified.len(), 2);
    }
}
