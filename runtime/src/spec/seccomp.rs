//! Seccomp: the request's profile (RuntimeDefault, Unconfined, Localhost, or the deprecated
//! `seccomp_profile_path` string) turned into `linux.seccomp`.
//!
//! Profiles are read in Docker's format, a superset of the OCI one: `archMap` picks the
//! architectures for this host, and each syscall rule may be limited with `includes` /
//! `excludes` by capability (of the container's bounding set), architecture (Go names:
//! `amd64`, `arm64`, ...) and `minKernel`. The shipped RuntimeDefault profile,
//! `default_seccomp.json`, is written that way: deny with EPERM by default, allow what
//! ordinary programs use, more with more capabilities.
//!
//! No profile unless one is asked for (Kubernetes' CRI default is Unconfined), and none for
//! privileged containers, as in containerd.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{LinuxContainerSecurityContext, security_profile::ProfileType};
use oci_spec::runtime::{
    Arch, Capabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall, Spec,
};
use serde::Deserialize;

use super::security::{profile_from_path, profile_type};
use crate::Error;

const DEFAULT_PROFILE: &str = include_str!("default_seccomp.json");

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Vec<Arch>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
    #[serde(default)]
    flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    listener_path: Option<PathBuf>,
    #[serde(default)]
    listener_metadata: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    #[serde(default)]
    sub_architectures: Vec<Arch>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    name: String,
    #[serde(default)]
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Vec<LinuxSeccompArg>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// The host facts a profile is specialised for.
pub(super) struct Target<'a> {
    /// The container's bounding set.
    pub capabilities: &'a Capabilities,
    /// Go's name of this architecture (`amd64`, `arm64`, ...).
    pub arch: &'a str,
    pub kernel: Option<(u32, u32)>,
}

/// Go's `GOARCH` for the architecture this binary runs on.
pub(super) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

fn native_arch(go_arch: &str) -> Option<Arch> {
    Some(match go_arch {
        "amd64" => Arch::ScmpArchX86_64,
        "386" => Arch::ScmpArchX86,
        "arm64" => Arch::ScmpArchAarch64,
        "arm" => Arch::ScmpArchArm,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "s390x" => Arch::ScmpArchS390x,
        "riscv64" => Arch::ScmpArchRiscv64,
        "loong64" => Arch::ScmpArchLoongarch64,
        _ => return None,
    })
}

/// `linux.seccomp` for the request, or `None` for no filter.
pub(super) fn seccomp(
    sc: &LinuxContainerSecurityContext,
    profile_root: &Path,
    target: &Target<'_>,
) -> Result<Option<LinuxSeccomp>, Error> {
    #[allow(deprecated)]
    let deprecated = &sc.seccomp_profile_path;
    let profile = match &sc.seccomp {
        Some(profile) => Some(profile.clone()),
        None => profile_from_path(deprecated)?,
    };
    let Some(profile) = profile else {
        return Ok(None);
    };
    let kind = profile_type(&profile, "seccomp")?;
    if sc.privileged {
        return Ok(None);
    }
    match kind {
        ProfileType::Unconfined => Ok(None),
        ProfileType::RuntimeDefault => default_profile(target).map(Some),
        ProfileType::Localhost => {
            let reference = profile
                .localhost_ref
                .strip_prefix("localhost/")
                .unwrap_or(&profile.localhost_ref);
            if reference.is_empty() {
                return Err(Error::InvalidArgument(
                    "seccomp profile type Localhost needs a localhost_ref".to_string(),
                ));
            }
            let path = profile_root.join(reference); // an absolute reference replaces the root
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io("read seccomp profile", &path, e))?;
            convert(&text, target)
                .map(Some)
                .map_err(|message| Error::SeccompProfile {
                    profile: path.display().to_string(),
                    message,
                })
        }
    }
}

/// The shipped RuntimeDefault profile, specialised for `target`.
pub(super) fn default_profile(target: &Target<'_>) -> Result<LinuxSeccomp, Error> {
    convert(DEFAULT_PROFILE, target).map_err(|message| Error::SeccompProfile {
        profile: "runtime/default".to_string(),
        message,
    })
}

fn convert(text: &str, target: &Target<'_>) -> Result<LinuxSeccomp, String> {
    let profile: Profile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !profile.architectures.is_empty() && !profile.arch_map.is_empty() {
        return Err("architectures and archMap are mutually exclusive".to_string());
    }
    let mut arches = profile.architectures.clone();
    if let Some(native) = native_arch(target.arch) {
        if let Some(entry) = profile.arch_map.iter().find(|a| a.architecture == native) {
            arches.push(entry.architecture);
            arches.extend(entry.sub_architectures.iter().copied());
        }
    }

    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut syscalls = Vec::new();
    for rule in &profile.syscalls {
        if !applies(rule, target) {
            continue;
        }
        if !rule.name.is_empty() && !rule.names.is_empty() {
            return Err("a syscall rule has both name and names".to_string());
        }
        let names: Vec<String> = if rule.name.is_empty() {
            rule.names.clone()
        } else {
            vec![rule.name.clone()]
        };
        // Unconditional rules: each syscall once per action (libseccomp refuses a second,
        // different action for the same syscall).
        let names: Vec<String> = if rule.args.is_empty() {
            let action = format!("{:?}/{:?}", rule.action, rule.errno_ret);
            names
                .into_iter()
                .filter(|n| seen.insert((n.clone(), action.clone())))
                .collect()
        } else {
            names
        };
        if names.is_empty() {
            continue;
        }
        let mut syscall = LinuxSyscall::default();
        syscall.set_names(names);
        syscall.set_action(rule.action);
        syscall.set_errno_ret(rule.errno_ret);
        syscall.set_args((!rule.args.is_empty()).then(|| rule.args.clone()));
        syscalls.push(syscall);
    }

    let mut seccomp = LinuxSeccomp::default();
    seccomp.set_default_action(profile.default_action);
    seccomp.set_default_errno_ret(profile.default_errno_ret);
    seccomp.set_architectures((!arches.is_empty()).then_some(arches));
    seccomp.set_flags((!profile.flags.is_empty()).then_some(profile.flags));
    seccomp.set_listener_path(profile.listener_path);
    seccomp.set_listener_metadata(profile.listener_metadata);
    seccomp.set_syscalls(Some(syscalls));
    Ok(seccomp)
}

fn has_cap(target: &Target<'_>, name: &str) -> bool {
    target
        .capabilities
        .iter()
        .any(|c| format!("CAP_{c}").eq_ignore_ascii_case(name) || c.to_string() == name)
}

fn kernel_at_least(target: &Target<'_>, min: &str) -> bool {
    match (target.kernel, super::host::parse_kernel_version(min)) {
        (Some(running), Some(wanted)) => running >= wanted,
        // Unknown: assume a modern kernel.
        _ => true,
    }
}

/// Docker's rule: every included capability present, none excluded; the architecture
/// listed (if a list is given) and not excluded; the kernel new enough.
fn applies(rule: &Rule, target: &Target<'_>) -> bool {
    let inc = &rule.includes;
    let exc = &rule.excludes;
    inc.caps.iter().all(|c| has_cap(target, c))
        && !exc.caps.iter().any(|c| has_cap(target, c))
        && (inc.arches.is_empty() || inc.arches.iter().any(|a| a == target.arch))
        && !exc.arches.iter().any(|a| a == target.arch)
        && inc
            .min_kernel
            .as_deref()
            .is_none_or(|k| kernel_at_least(target, k))
        && exc
            .min_kernel
            .as_deref()
            .is_none_or(|k| !kernel_at_least(target, k))
}

/// youki's libcontainer (0.7 and its main branch as of this writing) reads a
/// `SCMP_CMP_MASKED_EQ` argument the other way round from runc and the OCI runtime spec: it
/// masks with `valueTwo` and compares with `value`, where runc masks with `value` and compares
/// with `valueTwo`. Without this swap the default profile's "clone without namespace flags"
/// rule becomes "any clone" under libcontainer. Call this on the spec handed to
/// libcontainer only (not on a `config.json` for runc or crun).
pub fn adapt_for_libcontainer(spec: &mut Spec) {
    // libcontainer loads a seccomp filter while the process still holds CAP_SYS_ADMIN only
    // when `noNewPrivileges` is absent; an explicit `false` makes it load the filter after
    // dropping capabilities, which the kernel refuses ("failed to load seccomp context").
    if let Some(process) = spec.process_mut().as_mut() {
        if process.no_new_privileges() == Some(false) {
            process.set_no_new_privileges(None);
        }
    }
    let Some(seccomp) = spec.linux_mut().as_mut().and_then(|l| l.seccomp().clone()) else {
        return;
    };
    let mut seccomp = seccomp;
    let syscalls = seccomp.syscalls().clone().map(|syscalls| {
        syscalls
            .into_iter()
            .map(|mut syscall| {
                let args = syscall
                    .args()
                    .clone()
                    .map(|args| args.into_iter().map(swap_masked).collect::<Vec<_>>());
                syscall.set_args(args);
                syscall
            })
            .collect()
    });
    seccomp.set_syscalls(syscalls);
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_seccomp(Some(seccomp));
    }
}

fn swap_masked(arg: LinuxSeccompArg) -> LinuxSeccompArg {
    if arg.op() != LinuxSeccompOperator::ScmpCmpMaskedEq {
        return arg;
    }
    LinuxSeccompArgBuilder::default()
        .index(arg.index())
        .op(arg.op())
        .value(arg.value_two().unwrap_or(0))
        .value_two(arg.value())
        .build()
        .unwrap_or(arg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Capability;

    fn target(caps: &Capabilities) -> Target<'_> {
        Target {
            capabilities: caps,
            arch: "amd64",
            kernel: Some((6, 1)),
        }
    }

    fn names(seccomp: &LinuxSeccomp) -> Vec<String> {
        seccomp
            .syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow)
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn test_default_profile_denies_by_default_and_allows_basics() {
        let caps: Capabilities = super::super::security::DEFAULT_CAPABILITIES
            .into_iter()
            .collect();
        let profile = default_profile(&target(&caps)).unwrap();
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(
            profile.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let allowed = names(&profile);
        for needed in [
            "read",
            "write",
            "execve",
            "openat",
            "socket",
            "arch_prctl",
            "chroot",
        ] {
            assert!(allowed.iter().any(|n| n == needed), "{needed} not allowed");
        }
        for denied in [
            "mount",
            "unshare",
            "reboot",
            "bpf",
            "init_module",
            "riscv_hwprobe",
        ] {
            assert!(!allowed.iter().any(|n| n == denied), "{denied} allowed");
        }
        // Without CAP_SYS_ADMIN, clone is conditional and clone3 says ENOSYS.
        let syscalls = profile.syscalls().clone().unwrap_or_default();
        let clone = syscalls
            .iter()
            .find(|s| s.names().iter().any(|n| n == "clone"))
            .unwrap();
        let arg = clone.args().as_ref().unwrap()[0];
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        assert_eq!((arg.value(), arg.value_two()), (0x7E02_0000, Some(0)));
        let clone3 = syscalls
            .iter()
            .find(|s| s.names().iter().any(|n| n == "clone3"))
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(38));
    }

    #[test]
    fn test_default_profile_follows_capabilities() {
        let mut caps: Capabilities = super::super::security::DEFAULT_CAPABILITIES
            .into_iter()
            .collect();
        caps.insert(Capability::SysAdmin);
        caps.remove(&Capability::SysChroot);
        let profile = default_profile(&target(&caps)).unwrap();
        let allowed = names(&profile);
        assert!(allowed.iter().any(|n| n == "mount"));
        assert!(!allowed.iter().any(|n| n == "chroot"));
        // clone is unconditional with CAP_SYS_ADMIN: no clone3 ENOSYS rule.
        assert!(
            !profile
                .syscalls()
                .iter()
                .flatten()
                .any(|s| s.action() == LinuxSeccompAction::ScmpActErrno)
        );
        // Each syscall appears once per action (syslog, bpf, perf_event_open are in two groups).
        let mut sorted = allowed.clone();
        sorted.retain(|n| n != "clone" && n != "socket" && n != "personality");
        let before = sorted.len();
        sorted.sort();
        sorted.dedup();
        assert_eq!(before, sorted.len());
    }

    #[test]
    fn test_default_profile_arm64_arches() {
        let caps = Capabilities::new();
        let t = Target {
            capabilities: &caps,
            arch: "arm64",
            kernel: None,
        };
        let profile = default_profile(&t).unwrap();
        assert_eq!(
            profile.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        assert!(names(&profile).iter().any(|n| n == "cacheflush"));
        assert!(!names(&profile).iter().any(|n| n == "arch_prctl"));
    }

    #[test]
    fn test_profile_min_kernel_and_oci_format() {
        let caps = Capabilities::new();
        let mut t = target(&caps);
        t.kernel = Some((4, 4));
        let profile = default_profile(&t).unwrap();
        assert!(!names(&profile).iter().any(|n| n == "ptrace"));

        let oci = r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#;
        let profile = convert(oci, &target(&caps)).unwrap();
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(
            profile.syscalls().as_ref().unwrap()[0].errno_ret(),
            Some(13)
        );
        assert!(convert(r#"{"defaultAction":"BOGUS"}"#, &target(&caps)).is_err());
    }

    #[test]
    fn test_adapt_for_libcontainer_swaps_masked_eq_only() {
        let caps = Capabilities::new();
        let mut linux = oci_spec::runtime::Linux::default();
        linux.set_seccomp(Some(default_profile(&target(&caps)).unwrap()));
        let mut spec = Spec::default();
        spec.set_linux(Some(linux));
        adapt_for_libcontainer(&mut spec);
        let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
        let args: Vec<LinuxSeccompArg> = seccomp
            .syscalls()
            .iter()
            .flatten()
            .flat_map(|s| s.args().clone().unwrap_or_default())
            .collect();
        let masked = args
            .iter()
            .find(|a| a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq)
            .unwrap();
        assert_eq!((masked.value(), masked.value_two()), (0, Some(0x7E02_0000)));
        let lt = args
            .iter()
            .find(|a| a.op() == LinuxSeccompOperator::ScmpCmpLt)
            .unwrap();
        assert_eq!((lt.value(), lt.value_two()), (38, None));
    }
}
