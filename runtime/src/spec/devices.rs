//! Devices: the request's devices (a node, or every node below a directory) with a cgroup
//! rule each, as containerd's `WithDevices`; privileged containers get every host device and
//! an allow-all rule (`WithHostDevices`, `WithAllDevicesAllowed`). libcontainer adds the
//! standard nodes (`/dev/null`, `/dev/zero`, ...) and their cgroup rules itself.

use std::path::{Path, PathBuf};

use k8s_cri::v1::ContainerConfig;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup};

use super::{HostDevice, HostProbe};
use crate::Error;

pub(super) struct Devices {
    pub devices: Vec<LinuxDevice>,
    pub cgroup_rules: Vec<LinuxDeviceCgroup>,
}

fn linux_device(device: &HostDevice, container_path: PathBuf) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(container_path);
    d.set_typ(device.typ);
    d.set_major(device.major);
    d.set_minor(device.minor);
    d.set_file_mode(Some(device.file_mode));
    d.set_uid(Some(device.uid));
    d.set_gid(Some(device.gid));
    d
}

/// `base/relative`, or `base` itself for an empty `relative` (`join` would add a slash).
fn below(base: &Path, relative: &Path) -> PathBuf {
    if relative.as_os_str().is_empty() {
        base.to_path_buf()
    } else {
        base.join(relative)
    }
}

fn rule(allow: bool, device: Option<&HostDevice>, access: &str) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    if let Some(device) = device {
        r.set_typ(Some(device.typ));
        r.set_major(Some(device.major));
        r.set_minor(Some(device.minor));
    }
    r.set_access(Some(access.to_string()));
    r
}

pub(super) fn devices(
    config: &ContainerConfig,
    privileged: bool,
    host: &dyn HostProbe,
) -> Result<Devices, Error> {
    let mut devices: Vec<LinuxDevice> = Vec::new();
    // Deny everything, then allow each device (libcontainer adds the standard nodes).
    let mut rules = vec![rule(false, None, "rwm")];
    for request in &config.devices {
        let permissions = if request.permissions.is_empty() {
            "rwm"
        } else {
            request.permissions.as_str()
        };
        if !permissions.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
            return Err(Error::InvalidArgument(format!(
                "device {}: invalid permissions {permissions:?}",
                request.host_path
            )));
        }
        let container_path = if request.container_path.is_empty() {
            &request.host_path
        } else {
            &request.container_path
        };
        if !container_path.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "device {}: container_path {container_path:?} must be absolute",
                request.host_path
            )));
        }
        for device in &host.devices(Path::new(&request.host_path))? {
            // A directory maps its nodes below the container path, keeping their layout.
            let target = below(Path::new(container_path), &device.relative);
            devices.retain(|d| d.path() != &target);
            devices.push(linux_device(device, target));
            rules.push(rule(true, Some(device), permissions));
        }
    }
    if privileged {
        for device in host.devices(Path::new("/dev"))? {
            let target = below(Path::new("/dev"), &device.relative);
            if !devices.iter().any(|d| d.path() == &target) {
                devices.push(linux_device(&device, target));
            }
        }
        rules = vec![rule(true, None, "rwm")];
    }
    Ok(Devices {
        devices,
        cgroup_rules: rules,
    })
}
