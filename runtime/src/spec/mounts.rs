//! Mounts: the standard filesystems (`/proc`, `/dev`, `/dev/pts`, `/dev/shm`, `/dev/mqueue`,
//! `/sys`, `/sys/fs/cgroup`), the pod's `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` and
//! `/dev/shm`, the request's bind mounts and the image's VOLUMEs, laid out as containerd's
//! `WithMounts` does: standard mounts first (minus any the binds replace, and everything under
//! `/dev` when `/dev` itself is bound), then all binds sorted by path depth so that a parent
//! is mounted before what goes inside it.

use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, MountPropagation};
use oci_spec::runtime::Mount;

use super::{ImageInfo, SandboxInfo};
use crate::Error;

/// An image VOLUME that no request mount covers: the caller creates `host_path` (an empty
/// directory, per container) before the container starts; the spec binds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageVolume {
    pub container_path: String,
    pub host_path: PathBuf,
}

/// What the mount step produces.
#[derive(Debug, Default)]
pub(super) struct Mounts {
    pub mounts: Vec<Mount>,
    /// youki's spelling: "shared" or "slave" (it rejects runc's "rshared"/"rslave" here).
    pub rootfs_propagation: Option<String>,
    pub volumes: Vec<ImageVolume>,
    /// Bind sources that do not exist yet (containerd creates them, mode 0755).
    pub missing_sources: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

pub(super) struct MountsInput<'a> {
    pub config: &'a ContainerConfig,
    pub sandbox: &'a SandboxInfo,
    pub image: &'a ImageInfo,
    pub volume_dir: &'a Path,
    pub readonly_rootfs: bool,
    pub privileged: bool,
    /// Bind the container's own v1 cgroup directories at `/sys/fs/cgroup` instead of a
    /// `cgroup` mount (see [`cgroup_v1_binds`]).
    pub cgroup_binds: Option<CgroupBinds<'a>>,
}

/// The container's cgroup directories in each v1 hierarchy of the host.
pub(super) struct CgroupBinds<'a> {
    pub hierarchies: &'a [super::CgroupV1Hierarchy],
    pub cgroups_path: &'a str,
}

struct Bind {
    container_path: String,
    host_path: PathBuf,
    readonly: bool,
    propagation: MountPropagation,
}

/// Go's `filepath.Clean` for absolute container paths ("/a//b/../c/" -> "/a/c").
pub(super) fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

fn depth(path: &str) -> usize {
    path.matches('/').count()
}

/// A directory name for an image VOLUME path: injective, readable ("/var/lib/data" ->
/// "var%2Flib%2Fdata"), never `.`/`..` and never containing `/`.
pub(super) fn volume_dir_name(container_path: &str) -> String {
    let mut name = String::new();
    for byte in clean(container_path).trim_start_matches('/').bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            name.push(char::from(byte));
        } else {
            name.push_str(&format!("%{byte:02X}"));
        }
    }
    name
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| o.to_string()).collect()));
    m
}

/// `/sys/fs/cgroup` as a tmpfs holding a bind of the container's own cgroup directory per
/// v1 hierarchy (under its directory name and each controller's name, as the host's
/// symlinks), which is what runc mounts. Used instead of libcontainer's `cgroup` mount for
/// containers that join an existing PID namespace: libcontainer 0.7 finds the "root"
/// cgroups there by reading the host's `/proc/<its pid in the container's namespace>`,
/// which is another process or none ("failed to prepare rootfs ... NotFound /proc/11").
fn cgroup_v1_binds(binds: &CgroupBinds<'_>, privileged: bool) -> Vec<Mount> {
    let access = if privileged { "rw" } else { "ro" };
    let mut out = vec![mount(
        "/sys/fs/cgroup",
        "tmpfs",
        "tmpfs",
        &["nosuid", "noexec", "nodev", "mode=755"],
    )];
    let relative = binds.cgroups_path.trim_start_matches('/');
    for hierarchy in binds.hierarchies {
        let source = Path::new("/sys/fs/cgroup")
            .join(&hierarchy.dir)
            .join(relative);
        let mut names = vec![hierarchy.dir.clone()];
        names.extend(
            hierarchy
                .controllers
                .iter()
                .filter(|c| **c != hierarchy.dir)
                .cloned(),
        );
        for name in names {
            let mut m = mount(
                &format!("/sys/fs/cgroup/{name}"),
                "bind",
                "",
                &["rbind", "rprivate", "nosuid", "noexec", "nodev", access],
            );
            m.set_source(Some(source.clone()));
            out.push(m);
        }
    }
    out
}

fn standard_mounts(privileged: bool) -> Vec<Mount> {
    let mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", mode],
        ),
    ]
}

fn request_binds(config: &ContainerConfig) -> Result<Vec<Bind>, Error> {
    let mut binds = Vec::new();
    for m in &config.mounts {
        let invalid = |why: &str| {
            Error::InvalidArgument(format!(
                "mount {:?} -> {:?}: {why}",
                m.host_path, m.container_path
            ))
        };
        if !m.container_path.starts_with('/') {
            return Err(invalid("container_path must be absolute"));
        }
        if !m.host_path.starts_with('/') {
            return Err(invalid("host_path must be absolute"));
        }
        if m.recursive_read_only {
            return Err(invalid("recursive read-only mounts are not supported"));
        }
        if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
            return Err(Error::Unsupported(format!(
                "image volume mount at {:?}",
                m.container_path
            )));
        }
        if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
            return Err(Error::Unsupported(format!(
                "id-mapped mount at {:?}",
                m.container_path
            )));
        }
        let propagation = MountPropagation::try_from(m.propagation)
            .map_err(|_| invalid(&format!("unknown propagation {}", m.propagation)))?;
        // selinux_relabel is ignored: Corral does not do SELinux.
        binds.push(Bind {
            container_path: clean(&m.container_path),
            host_path: PathBuf::from(&m.host_path),
            readonly: m.readonly,
            propagation,
        });
    }
    Ok(binds)
}

pub(super) fn mounts(input: &MountsInput<'_>) -> Result<Mounts, Error> {
    let mut out = Mounts::default();
    let mut binds = request_binds(input.config)?;
    let requested = |binds: &[Bind], path: &str| binds.iter().any(|b| b.container_path == path);

    // The pod's files (containerd skips a file that does not exist).
    let mut extra = Vec::new();
    for (file, path) in [
        ("hostname", "/etc/hostname"),
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        let source = input.sandbox.sandbox_dir.join(file);
        if !requested(&binds, path) && source.is_file() {
            extra.push(Bind {
                container_path: path.to_string(),
                host_path: source,
                readonly: input.readonly_rootfs,
                propagation: MountPropagation::PropagationPrivate,
            });
        }
    }
    // /dev/shm: the pod's tmpfs, or the host's with host IPC; else the standard tmpfs.
    if !requested(&binds, "/dev/shm") {
        let host_ipc = input.sandbox.ipc_mode == k8s_cri::v1::NamespaceMode::Node as i32;
        let source = match &input.sandbox.shm {
            Some(shm) => Some(shm.clone()),
            None if host_ipc && Path::new("/dev/shm").exists() => Some(PathBuf::from("/dev/shm")),
            None => None,
        };
        if let Some(source) = source {
            extra.push(Bind {
                container_path: "/dev/shm".to_string(),
                host_path: source,
                readonly: false,
                propagation: MountPropagation::PropagationPrivate,
            });
        }
    }
    // Image VOLUMEs that no request mount covers.
    for volume in &input.image.volumes {
        let container_path = clean(volume);
        if container_path == "/" {
            out.warnings
                .push(format!("image VOLUME {volume:?} at / ignored"));
            continue;
        }
        if requested(&binds, &container_path)
            || out
                .volumes
                .iter()
                .any(|v| v.container_path == container_path)
        {
            continue;
        }
        let host_path = input.volume_dir.join(volume_dir_name(&container_path));
        out.volumes.push(ImageVolume {
            container_path: container_path.clone(),
            host_path: host_path.clone(),
        });
        extra.push(Bind {
            container_path,
            host_path,
            readonly: false,
            propagation: MountPropagation::PropagationPrivate,
        });
    }

    for bind in &binds {
        match bind.host_path.try_exists() {
            Ok(true) => {}
            Ok(false) => out.missing_sources.push(bind.host_path.clone()),
            Err(e) => return Err(Error::io("stat", &bind.host_path, e)),
        }
        out.rootfs_propagation = match (bind.propagation, out.rootfs_propagation.take()) {
            (MountPropagation::PropagationBidirectional, _) => Some("shared".to_string()),
            (MountPropagation::PropagationHostToContainer, None) => Some("slave".to_string()),
            (_, current) => current,
        };
    }

    binds.extend(extra);
    binds.sort_by_key(|b| depth(&b.container_path)); // stable: request order kept per depth

    let bound_dev = requested(&binds, "/dev");
    out.mounts = standard_mounts(input.privileged)
        .into_iter()
        .filter(|m| {
            let dest = m.destination().to_string_lossy();
            let replaced_dev = bound_dev && dest.starts_with("/dev/");
            let replaced_cgroup = input.cgroup_binds.is_some() && dest == "/sys/fs/cgroup";
            !replaced_dev && !replaced_cgroup && !requested(&binds, &dest)
        })
        .collect();
    if let Some(cgroup_binds) = &input.cgroup_binds {
        if !requested(&binds, "/sys/fs/cgroup") {
            out.mounts
                .extend(cgroup_v1_binds(cgroup_binds, input.privileged));
        }
    }
    for bind in &binds {
        let propagation = match bind.propagation {
            MountPropagation::PropagationPrivate => "rprivate",
            MountPropagation::PropagationHostToContainer => "rslave",
            MountPropagation::PropagationBidirectional => "rshared",
        };
        let access = if bind.readonly { "ro" } else { "rw" };
        let mut m = mount(
            &bind.container_path,
            "bind",
            "",
            &["rbind", propagation, access],
        );
        m.set_source(Some(bind.host_path.clone()));
        out.mounts.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clean_paths() {
        assert_eq!(clean("/a//b/../c/"), "/a/c");
        assert_eq!(clean("/"), "/");
        assert_eq!(clean("/../x"), "/x");
        assert_eq!(clean("data"), "/data");
    }

    #[test]
    fn test_volume_dir_name_is_injective_and_flat() {
        assert_eq!(volume_dir_name("/var/lib/data"), "var%2Flib%2Fdata");
        assert_ne!(volume_dir_name("/a_b"), volume_dir_name("/a/b"));
        assert_ne!(volume_dir_name("/a%2Fb"), volume_dir_name("/a/b"));
        assert_eq!(volume_dir_name("/a/../.."), "");
        assert!(!volume_dir_name("/x/../../etc").contains('/'));
        assert_eq!(volume_dir_name("/.hidden"), "%2Ehidden");
    }
}
