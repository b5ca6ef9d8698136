//! The OCI runtime spec (`config.json`) for one CRI container, built the way containerd's CRI
//! plugin builds it (`internal/cri/server/container_create*.go`, `internal/cri/opts/
//! spec_linux*.go`, the `pkg/oci` defaults), for youki's libcontainer to run.
//!
//! ```text
//! ContainerConfig ─┐
//! SandboxInfo ─────┤  process.rs    args, env, cwd          user.rs      uid/gid/groups
//! ImageInfo ───────┼─ security.rs   caps, masked paths, AppArmor   seccomp.rs  filter
//! rootfs ──────────┤  namespaces.rs mounts.rs devices.rs resources.rs
//! HostLimits ──────┘        │
//!            HostProbe ─────┘ (cgroup version, capabilities, /dev, hostname: host.rs)
//!                           v
//!            BuiltSpec { spec, volumes to create, missing bind sources, warnings }
//! ```
//!
//! Everything here reads, nothing writes: the caller creates the directories it is told
//! about. Deviations from containerd are documented where they happen; the main ones: no
//! default AppArmor profile, masked paths default to containerd's list when the request has
//! no security context at all, rootfs propagation is spelled the way libcontainer wants it,
//! and no rlimits are set (the container inherits the monitor's, as containerd leaves them
//! to the runtime's defaults: set `LimitNOFILE` on the agent's unit).

mod devices;
mod host;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod seccomp;
mod security;
mod user;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{ContainerConfig, LinuxContainerSecurityContext};
use oci_spec::runtime::{Linux, LinuxNamespaceType, Process, Root, Spec, User};

pub use host::{CgroupV1Hierarchy, HostDevice, HostProbe, SystemHost};
pub use mounts::ImageVolume;
pub use resources::resources as linux_resources;
pub use seccomp::adapt_for_libcontainer;
pub use security::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};

use crate::Error;

/// Annotation keys containerd sets on a container's spec (`internal/cri/annotations`).
pub mod annotations {
    pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
    pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
    pub const SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
    pub const SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
    pub const SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
    pub const IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
    /// Corral's own: the `oom_score_adj` kubelet asked for, when it had to be raised.
    pub const OOM_SCORE_ADJ_REQUESTED: &str = "io.corral.oom-score-adj.requested";
}

/// Everything one container's spec is built from.
pub struct SpecInput<'a> {
    pub container_id: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox: &'a SandboxInfo,
    pub image: &'a ImageInfo,
    /// The container's root filesystem, already mounted; its `/etc/passwd` and `/etc/group`
    /// are read (without following symlinks out of it).
    pub rootfs: &'a Path,
    /// `linux.cgroupsPath`, computed by the caller (see [`cgroups_path`]).
    pub cgroups_path: String,
    pub host: &'a HostLimits,
}

/// The pod a container joins.
#[derive(Debug, Clone, Default)]
pub struct SandboxInfo {
    pub id: String,
    /// Pod metadata, for the `io.kubernetes.cri.sandbox-*` annotations.
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pod's hostname (used when the pod has its own UTS namespace).
    pub hostname: String,
    /// Pinned namespaces. `None` means the pod uses the host's (network/IPC mode NODE; UTS
    /// with host network) or, for PID, that the pod shares none (PID mode CONTAINER).
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    pub pidns: Option<PathBuf>,
    /// The pod's CRI `NamespaceMode` values.
    pub pid_mode: i32,
    pub ipc_mode: i32,
    pub network_mode: i32,
    /// Holds the pod's `hostname`, `hosts` and `resolv.conf` (each bound when present).
    pub sandbox_dir: PathBuf,
    /// The pod's /dev/shm tmpfs; `None` with host IPC (the host's /dev/shm is bound).
    pub shm: Option<PathBuf>,
    pub cgroup_parent: String,
    /// The pod's annotations. Not copied into the spec: containerd passes pod annotations
    /// through only when a runtime handler allow-lists them, and Corral has no such list yet.
    pub annotations: HashMap<String, String>,
}

/// What the spec needs from the image's config.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// The image reference the container was created from (`io.kubernetes.cri.image-name`).
    pub name: String,
    pub user: String,
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    /// VOLUME paths.
    pub volumes: Vec<String>,
    /// Not part of the spec (StopContainer uses it); here so the caller has one image struct.
    pub stop_signal: String,
}

/// What the host allows.
#[derive(Debug, Clone)]
pub struct HostLimits {
    /// The lowest `oom_score_adj` the agent may set (0 without CAP_SYS_RESOURCE).
    pub min_oom_score_adj: i32,
    pub apparmor_supported: bool,
    /// Where Localhost seccomp profiles live (an absolute `localhost_ref` is used as is).
    pub seccomp_profile_root: PathBuf,
    /// Where image VOLUMEs without a request mount get their per-container directory.
    pub volume_dir: PathBuf,
    /// The node's per-container pids limit (`[runtime] pids_limit`); 0 = none.
    pub pids_limit: i64,
}

/// The spec and what the caller must do or know before starting the container.
#[derive(Debug)]
pub struct BuiltSpec {
    pub spec: Spec,
    /// Image VOLUMEs to create (empty directories) under [`HostLimits::volume_dir`].
    pub volumes: Vec<ImageVolume>,
    /// Bind-mount sources that do not exist: containerd creates them (mode 0755), so
    /// kubelet's `hostPath` volumes of type "" work; so should the caller.
    pub missing_sources: Vec<PathBuf>,
    /// Things adjusted or ignored (oom_score_adj clamped, hugepage limits skipped, ...).
    pub warnings: Vec<String>,
}

/// The spec for `input`, reading the real host.
pub fn build_spec(input: &SpecInput<'_>) -> Result<Spec, Error> {
    build(input, &SystemHost).map(|built| built.spec)
}

/// `linux.cgroupsPath` for the cgroupfs driver: `<parent>/corral-<id>` (CRI-O's style, so
/// the container's cgroup is recognisable). An empty parent (kubelet always sends one)
/// means `/corral`.
pub fn cgroups_path(cgroup_parent: &str, container_id: &str) -> String {
    let parent = cgroup_parent.trim_end_matches('/');
    let parent = if parent.is_empty() { "/corral" } else { parent };
    format!("{parent}/corral-{container_id}")
}

/// The spec for `input` and what goes with it, reading host facts through `host`.
pub fn build(input: &SpecInput<'_>, host: &dyn HostProbe) -> Result<BuiltSpec, Error> {
    let config = input.config;
    if !config.cdi_devices.is_empty() {
        return Err(Error::Unsupported("CDI devices".to_string()));
    }
    let default_sc = LinuxContainerSecurityContext::default();
    let given_sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let sc = given_sc.unwrap_or(&default_sc);
    let requested_resources = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let privileged = sc.privileged;
    let mut warnings = Vec::new();

    // The process.
    let user = user::resolve(input.rootfs, sc, &input.image.user)?;
    let capabilities = security::capabilities(sc, host)?;
    let own_uts = input.sandbox.utsns.is_some();
    let hostname = if own_uts && !input.sandbox.hostname.is_empty() {
        input.sandbox.hostname.clone()
    } else {
        host.hostname()?
    };
    let (oom_score_adj, oom_requested) = resources::oom_score_adj(
        requested_resources,
        input.host.min_oom_score_adj,
        &mut warnings,
    );
    let mut process = Process::default();
    process.set_terminal(Some(config.tty));
    process.set_console_size(None);
    process.set_user(oci_user(&user));
    process.set_args(Some(process::args(config, input.image)?));
    process.set_env(Some(process::env(input.image, config, &hostname)));
    process.set_cwd(process::cwd(config, input.image));
    process.set_no_new_privileges(Some(sc.no_new_privs));
    process.set_apparmor_profile(security::apparmor(sc, input.host.apparmor_supported)?);
    process.set_oom_score_adj(oom_score_adj);
    process.set_rlimits(None);
    process.set_selinux_label(None);
    process.set_scheduler(None);
    process.set_io_priority(None);
    process.set_exec_cpu_affinity(None);
    let bounding = capabilities.bounding().clone().unwrap_or_default();
    process.set_capabilities(Some(capabilities));

    // Namespaces, mounts, devices.
    let namespaces = namespaces::namespaces(sc, input.sandbox, host.cgroup_v2())?;
    let joins_pid_namespace = namespaces
        .iter()
        .any(|ns| ns.typ() == LinuxNamespaceType::Pid && ns.path().is_some());
    let v1_hierarchies = if joins_pid_namespace && !host.cgroup_v2() {
        host.cgroup_v1_hierarchies()
    } else {
        Vec::new()
    };
    let mounts = mounts::mounts(&mounts::MountsInput {
        config,
        sandbox: input.sandbox,
        image: input.image,
        volume_dir: &input.host.volume_dir,
        readonly_rootfs: sc.readonly_rootfs,
        privileged,
        cgroup_binds: (!v1_hierarchies.is_empty()).then(|| mounts::CgroupBinds {
            hierarchies: &v1_hierarchies,
            cgroups_path: &input.cgroups_path,
        }),
    })?;
    warnings.extend(mounts.warnings);
    let devices = devices::devices(config, privileged, host)?;

    // Resources and confinement.
    let mut resources = resources::resources(requested_resources, host, &mut warnings)?;
    resources.set_devices(Some(devices.cgroup_rules));
    if input.host.pids_limit > 0 {
        let mut pids = oci_spec::runtime::LinuxPids::default();
        pids.set_limit(input.host.pids_limit);
        resources.set_pids(Some(pids));
    }
    let seccomp = seccomp::seccomp(
        sc,
        &input.host.seccomp_profile_root,
        &seccomp::Target {
            capabilities: &bounding,
            arch: seccomp::host_arch(),
            kernel: host.kernel_version(),
        },
    )?;
    let (masked, readonly) = security::masked_and_readonly(given_sc);

    let mut linux = Linux::default();
    linux.set_uid_mappings(None);
    linux.set_gid_mappings(None);
    linux.set_sysctl(None); // sysctls are pod-level, set when the pod's namespaces are made
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(PathBuf::from(&input.cgroups_path)));
    linux.set_namespaces(Some(namespaces));
    linux.set_devices(Some(devices.devices));
    linux.set_seccomp(seccomp);
    linux.set_rootfs_propagation(mounts.rootfs_propagation);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    linux.set_mount_label(None);

    let mut root = Root::default();
    root.set_path(input.rootfs.to_path_buf());
    root.set_readonly(Some(sc.readonly_rootfs));

    let mut notes: HashMap<String, String> = config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let sandbox = input.sandbox;
    let container_name = config.metadata.as_ref().map(|m| m.name.clone());
    for (key, value) in [
        (annotations::CONTAINER_TYPE, "container".to_string()),
        (annotations::SANDBOX_ID, sandbox.id.clone()),
        (annotations::SANDBOX_NAME, sandbox.name.clone()),
        (annotations::SANDBOX_NAMESPACE, sandbox.namespace.clone()),
        (annotations::SANDBOX_UID, sandbox.uid.clone()),
        (
            annotations::CONTAINER_NAME,
            container_name.unwrap_or_default(),
        ),
        (annotations::IMAGE_NAME, input.image.name.clone()),
    ] {
        notes.insert(key.to_string(), value);
    }
    if let Some(requested) = oom_requested {
        notes.insert(
            annotations::OOM_SCORE_ADJ_REQUESTED.to_string(),
            requested.to_string(),
        );
    }
    for warning in &warnings {
        tracing::warn!(container = %input.container_id, %warning, "container spec adjusted");
    }

    let mut spec = Spec::default();
    spec.set_version(oci_spec::runtime::VERSION.to_string());
    spec.set_root(Some(root));
    spec.set_mounts(Some(mounts.mounts));
    spec.set_process(Some(process));
    // libcontainer sets it only in a new UTS namespace and refuses it without one.
    spec.set_hostname((own_uts && !sandbox.hostname.is_empty()).then(|| sandbox.hostname.clone()));
    spec.set_domainname(None);
    spec.set_hooks(None);
    spec.set_annotations(Some(notes));
    spec.set_linux(Some(linux));
    Ok(BuiltSpec {
        spec,
        volumes: mounts.volumes,
        missing_sources: mounts.missing_sources,
        warnings,
    })
}

fn oci_user(user: &user::ResolvedUser) -> User {
    let mut u = User::default();
    u.set_uid(user.uid);
    u.set_gid(user.gid);
    u.set_additional_gids(Some(user.additional_gids.clone()));
    u
}
