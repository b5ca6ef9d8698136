//! Cgroup resources from `LinuxContainerResources`, as containerd's `WithResources`, and the
//! process's `oom_score_adj` (`WithOOMScoreAdj`, clamped to what the agent may set).

use k8s_cri::v1::LinuxContainerResources;
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxResources};

use super::HostProbe;
use crate::Error;

/// Zero means "not set" for every CRI number, as in containerd. The memory limit also caps
/// swap (swap = limit, so no swapping) when the request sets no swap limit and the host can
/// limit swap; hugepage limits are skipped with a warning when the hugetlb controller is
/// missing (containerd's default `tolerate_missing_hugetlb_controller = true`); `unified`
/// entries need cgroup v2 (libcgroups ignores them on v1, so they are refused there).
pub fn resources(
    requested: Option<&LinuxContainerResources>,
    host: &dyn HostProbe,
    warnings: &mut Vec<String>,
) -> Result<LinuxResources, Error> {
    let mut resources = LinuxResources::default();
    let Some(r) = requested else {
        return Ok(resources);
    };

    let mut cpu = LinuxCpu::default();
    if r.cpu_period != 0 {
        let period = u64::try_from(r.cpu_period).map_err(|_| {
            Error::InvalidArgument(format!("cpu_period {} is negative", r.cpu_period))
        })?;
        cpu.set_period(Some(period));
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
    }
    if r.cpu_shares != 0 {
        let shares = u64::try_from(r.cpu_shares).map_err(|_| {
            Error::InvalidArgument(format!("cpu_shares {} is negative", r.cpu_shares))
        })?;
        cpu.set_shares(Some(shares));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
    }
    if cpu != LinuxCpu::default() {
        resources.set_cpu(Some(cpu));
    }

    let mut memory = LinuxMemory::default();
    let swap = host.swap_controller();
    if r.memory_limit_in_bytes != 0 {
        memory.set_limit(Some(r.memory_limit_in_bytes));
        if r.memory_swap_limit_in_bytes == 0 && swap {
            memory.set_swap(Some(r.memory_limit_in_bytes));
        }
    }
    if r.memory_swap_limit_in_bytes != 0 {
        if swap {
            memory.set_swap(Some(r.memory_swap_limit_in_bytes));
        } else {
            warnings.push("the host cannot limit swap: memory_swap_limit_in_bytes ignored".into());
        }
    }
    if memory != LinuxMemory::default() {
        resources.set_memory(Some(memory));
    }

    if !r.hugepage_limits.is_empty() {
        if host.hugetlb_controller() {
            let mut limits = Vec::new();
            for h in &r.hugepage_limits {
                let limit = i64::try_from(h.limit).map_err(|_| {
                    Error::InvalidArgument(format!("hugepage limit {} is too large", h.limit))
                })?;
                let mut l = LinuxHugepageLimit::default();
                l.set_page_size(h.page_size.clone());
                l.set_limit(limit);
                limits.push(l);
            }
            resources.set_hugepage_limits(Some(limits));
        } else {
            warnings.push("hugetlb cgroup controller is absent: hugepage limits skipped".into());
        }
    }

    if !r.unified.is_empty() {
        if !host.cgroup_v2() {
            return Err(Error::InvalidArgument(
                "unified cgroup resources need cgroup v2; this host runs v1".to_string(),
            ));
        }
        resources.set_unified(Some(
            r.unified
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    Ok(resources)
}

/// The requested `oom_score_adj`, clamped to `min` (lowering it needs CAP_SYS_RESOURCE, and
/// kubelet asks for -997 for Guaranteed pods). `None` when the request has no resources
/// (the container inherits the monitor's score, as with containerd).
pub(super) fn oom_score_adj(
    requested: Option<&LinuxContainerResources>,
    min: i32,
    warnings: &mut Vec<String>,
) -> (Option<i32>, Option<i64>) {
    let Some(r) = requested else {
        return (None, None);
    };
    let wanted = r.oom_score_adj.clamp(-1000, 1000);
    let wanted = i32::try_from(wanted).unwrap_or_default();
    if wanted < min {
        warnings.push(format!(
            "oom_score_adj {} clamped to {min}: lower values need CAP_SYS_RESOURCE",
            r.oom_score_adj
        ));
        return (Some(min), Some(r.oom_score_adj));
    }
    (Some(wanted), None)
}
