//! The pod's cgroup parent when Corral makes it: kubelet creates a pod's cgroup before
//! RunPodSandbox and removes it after RemovePodSandbox, but a crictl user's `cgroup_parent`
//! may not exist. The first container's creation then makes it (libcontainer creates the
//! missing directories), and nobody would remove it. The part that was missing at
//! RunPodSandbox is recorded and removed with the pod.
//!
//! Blocking (cgroupfs): call from `spawn_blocking`.

use std::path::{Path, PathBuf};

use corral_runtime::monitor::cgroups;

/// The shallowest part of `cgroup_parent` that exists in no cgroup hierarchy (relative to
/// the hierarchies' roots), or `None` when it all exists, is empty or is a systemd slice
/// (systemd owns those).
pub fn missing_part(cgroup_parent: &str) -> Option<PathBuf> {
    if cgroup_parent.is_empty() || cgroup_parent.ends_with(".slice") {
        return None;
    }
    let relative = cgroups::relative_cgroup_path(Path::new(cgroup_parent))?;
    let mounts = cgroups::host_mounts().ok()?;
    let exists = |part: &Path| mounts.iter().any(|m| m.path.join(part).is_dir());
    let mut part = PathBuf::new();
    for component in relative.components() {
        part.push(component);
        if !exists(&part) {
            return Some(part);
        }
    }
    None
}

/// Removes `cgroup_parent` and its parents up to `owned` (the part [`missing_part`] found
/// missing), deepest first, in every hierarchy. A directory that is gone is fine; one that
/// is still in use (processes, child cgroups) is left and logged.
pub fn remove_owned(cgroup_parent: &str, owned: &Path) {
    let Some(relative) = cgroups::relative_cgroup_path(Path::new(cgroup_parent)) else {
        return;
    };
    if !relative.starts_with(owned) {
        return;
    }
    let Ok(mounts) = cgroups::host_mounts() else {
        return;
    };
    // Deepest first: `ancestors` starts with the path itself.
    let parts: Vec<&Path> = relative
        .ancestors()
        .filter(|p| p.starts_with(owned))
        .collect();
    for mount in &mounts {
        for part in &parts {
            let dir = mount.path.join(part);
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "could not remove the pod's cgroup");
                    break;
                }
            }
        }
    }
}
