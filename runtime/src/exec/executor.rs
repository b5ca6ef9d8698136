//! What runs in the exec'd process right before `execve`: signals back to their defaults,
//! the terminal's initial size (streaming execs with a terminal), the container's seccomp
//! filter, then libcontainer's default executor.
//!
//! libcontainer 0.7 drops `linux.seccomp` from a tenant's spec, so the filter is loaded
//! here, after libcontainer set the user and dropped the capabilities. Loading a filter
//! needs no_new_privs or CAP_SYS_ADMIN. With no_new_privs set, the filter loads as it is.
//! Without it (Kubernetes' default, allowPrivilegeEscalation), the container's init loaded
//! its filter while it still held CAP_SYS_ADMIN; to do the same, [`plan_seccomp`] adds
//! CAP_SYS_ADMIN (and CAP_SETPCAP, to trim the bounding set back) to the exec process's
//! permitted and bounding sets, and the executor raises them, trims the bounding set to the
//! container's, loads the filter, and lowers the effective and permitted sets to the
//! container's before `execve`. The command ends with exactly the container's capability
//! sets, no_new_privs bit and filter, as runc's `exec` gives it.

use libcontainer::capabilities::CapabilityExt;
use libcontainer::oci_spec::runtime::{Capabilities, Capability, LinuxSeccomp, Process, Spec};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};

use super::protocol::TerminalSize;

const CAP_SETPCAP: u32 = 8;
const CAP_SYS_ADMIN: u32 = 21;

/// How the executor loads the seccomp filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SeccompLoad {
    /// no_new_privs is set, or CAP_SYS_ADMIN stays effective: load it as it is.
    Direct,
    /// Raise CAP_SYS_ADMIN and CAP_SETPCAP (added to the permitted set), drop
    /// `drop_bounding` from the bounding set, load the filter, then set the effective and
    /// permitted sets to these masks (bit n = capability n).
    Privileged {
        effective: u64,
        permitted: u64,
        drop_bounding: Vec<u32>,
    },
}

fn cap_index(cap: &Capability) -> u32 {
    u32::from(cap.to_cap().index())
}

fn mask(caps: &Capabilities) -> u64 {
    caps.iter()
        .map(cap_index)
        .filter(|&i| i < 64)
        .fold(0, |mask, i| mask | (1u64 << i))
}

/// Decides how the filter will be loaded and, when CAP_SYS_ADMIN is needed for it, adds it
/// (and CAP_SETPCAP) to `process`'s permitted and bounding sets.
pub(crate) fn plan_seccomp(process: &mut Process) -> SeccompLoad {
    if process.no_new_privileges() == Some(true) {
        return SeccompLoad::Direct;
    }
    // No capabilities in the spec: libcontainer keeps the full set of root.
    let Some(mut caps) = process.capabilities().clone() else {
        return SeccompLoad::Direct;
    };
    let effective = caps.effective().clone().unwrap_or_default();
    if effective.contains(&Capability::SysAdmin) {
        return SeccompLoad::Direct;
    }
    let mut permitted = caps.permitted().clone().unwrap_or_default();
    let mut bounding = caps.bounding().clone().unwrap_or_default();
    let load = SeccompLoad::Privileged {
        effective: mask(&effective),
        permitted: mask(&permitted),
        drop_bounding: [Capability::SysAdmin, Capability::Setpcap]
            .iter()
            .filter(|cap| !bounding.contains(cap))
            .map(cap_index)
            .collect(),
    };
    for cap in [Capability::SysAdmin, Capability::Setpcap] {
        permitted.insert(cap);
        bounding.insert(cap);
    }
    caps.set_permitted(Some(permitted));
    caps.set_bounding(Some(bounding));
    process.set_capabilities(Some(caps));
    load
}

/// libcontainer's default executor, after undoing what the helper's process state would
/// leak into the command (ignored signals stay ignored across exec: Rust ignores SIGPIPE;
/// the helper blocks its stop signals), and after loading the container's seccomp filter.
#[derive(Clone)]
pub(crate) struct ExecExecutor {
    pub seccomp: Option<LinuxSeccomp>,
    pub load: SeccompLoad,
    /// With a terminal (stdin is the pty's slave here): its size, set before the command
    /// runs so that it never sees the terminal at another size. The helper only gets the
    /// master once the command runs.
    pub console_size: Option<TerminalSize>,
}

impl Executor for ExecExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        reset_signals();
        if let Some(size) = self.console_size {
            set_window_size(0, size).map_err(|err| {
                ExecutorError::Other(format!("set the terminal size to {size}: {err}"))
            })?;
        }
        if let Some(seccomp) = &self.seccomp {
            load_seccomp(seccomp, &self.load).map_err(ExecutorError::Other)?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Every signal to its default action, none blocked.
fn reset_signals() {
    // The kernel's sigaction with every field zero: SIG_DFL, no flags, empty mask, on every
    // layout of the struct. Raw syscalls, because glibc refuses its own signals 32 and 33.
    let default_action = [0u64; 4];
    for signal in 1..=libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a zeroed kernel sigaction from a live array and writes
        // nothing back (null old action); sigsetsize is the kernel's 8 bytes.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default_action.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
    // SAFETY: sigprocmask with a valid, initialized empty set and no old set.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// TIOCSWINSZ on a terminal descriptor (master or slave: they share the size).
pub(crate) fn set_window_size(fd: libc::c_int, size: TerminalSize) -> std::io::Result<()> {
    let winsize = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from a live value; a bad fd only fails.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &winsize) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn load_seccomp(seccomp: &LinuxSeccomp, load: &SeccompLoad) -> Result<(), String> {
    if libcontainer::seccomp::is_notify(seccomp) {
        return Err("seccomp notify profiles are not supported for exec".to_string());
    }
    let initialize = || {
        libcontainer::seccomp::initialize_seccomp(seccomp)
            .map(drop)
            .map_err(|err| format!("load seccomp filter: {err}"))
    };
    let SeccompLoad::Privileged {
        effective,
        permitted,
        drop_bounding,
    } = load
    else {
        return initialize();
    };
    let current = capget().map_err(|err| format!("capget: {err}"))?;
    let raise = ((1u64 << CAP_SYS_ADMIN) | (1u64 << CAP_SETPCAP)) & current.permitted;
    capset(&CapSets {
        effective: current.effective | raise,
        ..current
    })
    .map_err(|err| format!("raise CAP_SYS_ADMIN to load seccomp: {err}"))?;
    for &cap in drop_bounding {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            let err = std::io::Error::last_os_error();
            return Err(format!(
                "drop capability {cap} from the bounding set: {err}"
            ));
        }
    }
    initialize()?;
    capset(&CapSets {
        effective: *effective,
        permitted: *permitted,
        inheritable: current.inheritable,
    })
    .map_err(|err| format!("drop CAP_SYS_ADMIN after loading seccomp: {err}"))
}

/// A thread's effective, permitted and inheritable capability sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capability sets.
pub(crate) fn capget() -> std::io::Result<CapSets> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two `CapData` (version 3) into the live array and reads the
    // header, both valid for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let join = |low: u32, high: u32| u64::from(low) | (u64::from(high) << 32);
    Ok(CapSets {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// Sets the calling thread's capability sets.
pub(crate) fn capset(sets: &CapSets) -> std::io::Result<()> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let split = |set: u64| (set as u32, (set >> 32) as u32);
    let (e0, e1) = split(sets.effective);
    let (p0, p1) = split(sets.permitted);
    let (i0, i1) = split(sets.inheritable);
    let data = [
        CapData {
            effective: e0,
            permitted: p0,
            inheritable: i0,
        },
        CapData {
            effective: e1,
            permitted: p1,
            inheritable: i1,
        },
    ];
    // SAFETY: capset reads the header and two `CapData` (version 3) from live values.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use libcontainer::oci_spec::runtime::{LinuxCapabilities, ProcessBuilder};

    use super::*;

    fn caps(list: &[Capability]) -> Option<Capabilities> {
        Some(list.iter().copied().collect())
    }

    fn process(nnp: Option<bool>, effective: &[Capability], bounding: &[Capability]) -> Process {
        let mut linux_caps = LinuxCapabilities::default();
        linux_caps
            .set_effective(caps(effective))
            .set_permitted(caps(effective))
            .set_bounding(caps(bounding))
            .set_inheritable(None)
            .set_ambient(None);
        let mut process = ProcessBuilder::default()
            .capabilities(linux_caps)
            .build()
            .unwrap();
        process.set_no_new_privileges(nnp);
        process
    }

    #[test]
    fn test_plan_seccomp_direct_with_nnp_or_sys_admin() {
        use Capability::*;
        let mut p = process(Some(true), &[Chown], &[Chown]);
        let before = p.clone();
        assert_eq!(plan_seccomp(&mut p), SeccompLoad::Direct);
        assert_eq!(p, before, "unchanged");
        let mut p = process(None, &[Chown, SysAdmin], &[Chown, SysAdmin]);
        assert_eq!(plan_seccomp(&mut p), SeccompLoad::Direct);
    }

    #[test]
    fn test_plan_seccomp_privileged_adds_and_restores_caps() {
        use Capability::*;
        let mut p = process(Some(false), &[Chown, Kill], &[Chown, Kill, Setpcap]);
        let load = plan_seccomp(&mut p);
        let want = (1 << 0) | (1 << 5); // CAP_CHOWN, CAP_KILL
        assert_eq!(
            load,
            SeccompLoad::Privileged {
                effective: want,
                permitted: want,
                drop_bounding: vec![CAP_SYS_ADMIN],
            }
        );
        let linux = p.capabilities().clone().unwrap();
        let permitted = linux.permitted().clone().unwrap();
        assert!(permitted.contains(&SysAdmin) && permitted.contains(&Setpcap));
        assert!(linux.bounding().clone().unwrap().contains(&SysAdmin));
        assert_eq!(linux.effective().clone(), caps(&[Chown, Kill]));
    }

    #[test]
    fn test_capget_capset_roundtrip() {
        let sets = capget().unwrap();
        assert_eq!(sets.effective & !sets.permitted, 0);
        // Setting the same sets needs no privilege.
        capset(&sets).unwrap();
        assert_eq!(capget().unwrap(), sets);
    }
}
