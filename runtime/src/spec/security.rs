//! Capabilities, masked and read-only paths, and AppArmor.

use k8s_cri::v1::{LinuxContainerSecurityContext, SecurityProfile, security_profile::ProfileType};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::HostProbe;
use crate::Error;

/// Linux capability numbers, in order (`include/uapi/linux/capability.h`).
const BY_NUMBER: [(&str, Capability); 41] = [
    ("CHOWN", Capability::Chown),
    ("DAC_OVERRIDE", Capability::DacOverride),
    ("DAC_READ_SEARCH", Capability::DacReadSearch),
    ("FOWNER", Capability::Fowner),
    ("FSETID", Capability::Fsetid),
    ("KILL", Capability::Kill),
    ("SETGID", Capability::Setgid),
    ("SETUID", Capability::Setuid),
    ("SETPCAP", Capability::Setpcap),
    ("LINUX_IMMUTABLE", Capability::LinuxImmutable),
    ("NET_BIND_SERVICE", Capability::NetBindService),
    ("NET_BROADCAST", Capability::NetBroadcast),
    ("NET_ADMIN", Capability::NetAdmin),
    ("NET_RAW", Capability::NetRaw),
    ("IPC_LOCK", Capability::IpcLock),
    ("IPC_OWNER", Capability::IpcOwner),
    ("SYS_MODULE", Capability::SysModule),
    ("SYS_RAWIO", Capability::SysRawio),
    ("SYS_CHROOT", Capability::SysChroot),
    ("SYS_PTRACE", Capability::SysPtrace),
    ("SYS_PACCT", Capability::SysPacct),
    ("SYS_ADMIN", Capability::SysAdmin),
    ("SYS_BOOT", Capability::SysBoot),
    ("SYS_NICE", Capability::SysNice),
    ("SYS_RESOURCE", Capability::SysResource),
    ("SYS_TIME", Capability::SysTime),
    ("SYS_TTY_CONFIG", Capability::SysTtyConfig),
    ("MKNOD", Capability::Mknod),
    ("LEASE", Capability::Lease),
    ("AUDIT_WRITE", Capability::AuditWrite),
    ("AUDIT_CONTROL", Capability::AuditControl),
    ("SETFCAP", Capability::Setfcap),
    ("MAC_OVERRIDE", Capability::MacOverride),
    ("MAC_ADMIN", Capability::MacAdmin),
    ("SYSLOG", Capability::Syslog),
    ("WAKE_ALARM", Capability::WakeAlarm),
    ("BLOCK_SUSPEND", Capability::BlockSuspend),
    ("AUDIT_READ", Capability::AuditRead),
    ("PERFMON", Capability::Perfmon),
    ("BPF", Capability::Bpf),
    ("CHECKPOINT_RESTORE", Capability::CheckpointRestore),
];

/// containerd's default set (`pkg/oci` `defaultUnixCaps`), the same as Docker's.
pub(super) const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// containerd's default masked paths (`pkg/oci` `populateDefaultUnixSpec`).
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// containerd's default read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The capabilities whose bits are set in a `CapEff`-style mask (unknown bits ignored).
pub(crate) fn capabilities_from_bits(bits: u64) -> Vec<Capability> {
    BY_NUMBER
        .iter()
        .enumerate()
        .filter(|(n, _)| bits & (1u64 << n) != 0)
        .map(|(_, (_, cap))| *cap)
        .collect()
}

/// "NET_ADMIN", "CAP_NET_ADMIN", "net_admin" -> `Capability::NetAdmin`.
fn parse_capability(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    BY_NUMBER
        .iter()
        .find(|(n, _)| *n == bare)
        .map(|(_, cap)| *cap)
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL") || name.trim().eq_ignore_ascii_case("CAP_ALL")
}

/// The capability set of the process: containerd's defaults, "ALL" (the agent's own set)
/// added or dropped first, then the named ones; privileged containers get the agent's whole
/// set. Bounding, effective and permitted are equal; inheritable and ambient are empty
/// (containerd 1.7+: `WithoutAmbientCaps`, and no inheritable so that file capabilities
/// cannot be gained through exec).
pub(super) fn capabilities(
    sc: &LinuxContainerSecurityContext,
    host: &dyn HostProbe,
) -> Result<LinuxCapabilities, Error> {
    let set: Capabilities = if sc.privileged {
        host.capabilities()?.into_iter().collect()
    } else {
        let mut set: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        if let Some(requested) = &sc.capabilities {
            if !requested.add_ambient_capabilities.is_empty() {
                return Err(Error::Unsupported(
                    "add_ambient_capabilities (containerd clears ambient capabilities too)"
                        .to_string(),
                ));
            }
            if requested.add_capabilities.iter().any(|c| is_all(c)) {
                set = host.capabilities()?.into_iter().collect();
            }
            if requested.drop_capabilities.iter().any(|c| is_all(c)) {
                set.clear();
            }
            for name in requested.add_capabilities.iter().filter(|c| !is_all(c)) {
                let cap = parse_capability(name).ok_or_else(|| {
                    Error::InvalidArgument(format!("unknown capability {name:?} to add"))
                })?;
                set.insert(cap);
            }
            for name in requested.drop_capabilities.iter().filter(|c| !is_all(c)) {
                match parse_capability(name) {
                    Some(cap) => {
                        set.remove(&cap);
                    }
                    // Nothing to remove: dropping a name this build does not know is harmless.
                    None => tracing::warn!(capability = %name, "dropping an unknown capability"),
                }
            }
        }
        set
    };
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()));
    caps.set_effective(Some(set.clone()));
    caps.set_permitted(Some(set));
    caps.set_inheritable(Some(Capabilities::new()));
    caps.set_ambient(Some(Capabilities::new()));
    Ok(caps)
}

/// Masked and read-only paths. kubelet always sends both lists (its defaults, or empty for
/// `procMount: Unmasked`), and containerd applies them verbatim, so a security context's
/// lists are used as given, empty meaning "none". Without any security context Corral uses
/// containerd's defaults (containerd would mask nothing then). Privileged: none.
pub(super) fn masked_and_readonly(
    sc: Option<&LinuxContainerSecurityContext>,
) -> (Vec<String>, Vec<String>) {
    match sc {
        Some(sc) if sc.privileged => (Vec::new(), Vec::new()),
        Some(sc) => (sc.masked_paths.clone(), sc.readonly_paths.clone()),
        None => (
            DEFAULT_MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect(),
        ),
    }
}

/// The deprecated string form of a profile: "runtime/default" (or "docker/default"),
/// "unconfined", "localhost/<ref>" (containerd's `generateSecurityProfile`).
pub(super) fn profile_from_path(path: &str) -> Result<Option<SecurityProfile>, Error> {
    let profile = |profile_type: ProfileType, localhost_ref: &str| SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: localhost_ref.to_string(),
    };
    match path {
        "" => Ok(None),
        "runtime/default" | "docker/default" => Ok(Some(profile(ProfileType::RuntimeDefault, ""))),
        "unconfined" => Ok(Some(profile(ProfileType::Unconfined, ""))),
        _ => match path.strip_prefix("localhost/") {
            Some(reference) => Ok(Some(profile(ProfileType::Localhost, reference))),
            None => Err(Error::InvalidArgument(format!("invalid profile {path:?}"))),
        },
    }
}

/// Checks a profile's type and reference (containerd: a reference only with Localhost).
pub(super) fn profile_type(profile: &SecurityProfile, what: &str) -> Result<ProfileType, Error> {
    let kind = ProfileType::try_from(profile.profile_type).map_err(|_| {
        Error::InvalidArgument(format!(
            "unknown {what} profile type {}",
            profile.profile_type
        ))
    })?;
    if kind != ProfileType::Localhost && !profile.localhost_ref.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{what} localhost_ref is only allowed with profile type Localhost"
        )));
    }
    Ok(kind)
}

/// The AppArmor profile name for `process.apparmorProfile`.
///
/// As containerd: without AppArmor on the host, any requested profile but Unconfined is an
/// error ("apparmor is not supported"; containerd does not downgrade runtime/default). With
/// AppArmor: Unconfined and unset -> none (containerd would apply its generated default here;
/// Corral ships no AppArmor profile, so runtime/default is refused rather than silently
/// unconfined, except for privileged containers where containerd applies none either);
/// Localhost -> the named profile, which must be loaded.
pub(super) fn apparmor(
    sc: &LinuxContainerSecurityContext,
    supported: bool,
) -> Result<Option<String>, Error> {
    #[allow(deprecated)]
    let deprecated = &sc.apparmor_profile;
    let profile = match &sc.apparmor {
        Some(profile) => Some(profile.clone()),
        None => profile_from_path(deprecated)?,
    };
    let Some(profile) = profile else {
        return Ok(None);
    };
    let kind = profile_type(&profile, "apparmor")?;
    if !supported {
        return match kind {
            ProfileType::Unconfined => Ok(None),
            _ => Err(Error::InvalidArgument(
                "apparmor is not supported on this host".to_string(),
            )),
        };
    }
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault if sc.privileged => Ok(None),
        ProfileType::RuntimeDefault => Err(Error::Unsupported(
            "the runtime/default apparmor profile: corral ships none yet; use a localhost \
             profile or unconfined"
                .to_string(),
        )),
        ProfileType::Localhost => {
            let name = profile
                .localhost_ref
                .strip_prefix("localhost/")
                .unwrap_or(&profile.localhost_ref);
            if name.is_empty() {
                return Err(Error::InvalidArgument(
                    "apparmor profile type Localhost needs a localhost_ref".to_string(),
                ));
            }
            Ok(Some(name.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_capability_table_matches_kernel_numbers() {
        // Spot checks against capability.h.
        assert_eq!(BY_NUMBER[0].1, Capability::Chown);
        assert_eq!(BY_NUMBER[21].1, Capability::SysAdmin);
        assert_eq!(BY_NUMBER[24].1, Capability::SysResource);
        assert_eq!(BY_NUMBER[40].1, Capability::CheckpointRestore);
        let all = capabilities_from_bits(u64::MAX);
        assert_eq!(all.len(), 41);
        // CapEff of a root process without CAP_SYS_RESOURCE.
        let without = capabilities_from_bits(0x1ff_ffff_ffff & !(1 << 24));
        assert!(!without.contains(&Capability::SysResource));
        assert_eq!(without.len(), 40);
    }

    #[test]
    fn test_parse_capability_forms() {
        assert_eq!(parse_capability("NET_ADMIN"), Some(Capability::NetAdmin));
        assert_eq!(
            parse_capability("CAP_NET_ADMIN"),
            Some(Capability::NetAdmin)
        );
        assert_eq!(parse_capability("cap_sys_time"), Some(Capability::SysTime));
        assert_eq!(parse_capability("FLY"), None);
    }

    #[test]
    fn test_profile_from_path_forms() {
        let kind = |p: &str| profile_from_path(p).unwrap().map(|p| p.profile_type);
        assert_eq!(kind(""), None);
        assert_eq!(
            kind("docker/default"),
            Some(ProfileType::RuntimeDefault as i32)
        );
        assert_eq!(kind("unconfined"), Some(ProfileType::Unconfined as i32));
        let local = profile_from_path("localhost/my.json").unwrap().unwrap();
        assert_eq!(local.localhost_ref, "my.json");
        assert!(profile_from_path("bogus").is_err());
    }

    #[test]
    fn test_apparmor_refused_without_host_support() {
        let mut sc = LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        };
        let err = apparmor(&sc, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "apparmor is not supported on this host",
            "{err:?}"
        );
        sc.apparmor = Some(SecurityProfile {
            profile_type: ProfileType::Localhost as i32,
            localhost_ref: "k8s-nginx".into(),
        });
        assert!(apparmor(&sc, false).is_err());
        assert_eq!(apparmor(&sc, true).unwrap().as_deref(), Some("k8s-nginx"));
        sc.apparmor = Some(SecurityProfile {
            profile_type: ProfileType::Unconfined as i32,
            localhost_ref: String::new(),
        });
        assert_eq!(apparmor(&sc, false).unwrap(), None);
        sc.apparmor = None;
        assert_eq!(apparmor(&sc, false).unwrap(), None);
    }

    #[test]
    fn test_apparmor_deprecated_string_is_honoured() {
        #[allow(deprecated)]
        let sc = LinuxContainerSecurityContext {
            apparmor_profile: "localhost/custom".into(),
            ..Default::default()
        };
        assert!(apparmor(&sc, false).is_err());
        assert_eq!(apparmor(&sc, true).unwrap().as_deref(), Some("custom"));
    }
}
