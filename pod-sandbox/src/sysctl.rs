//! Namespaced sysctls from the pod spec: which ones a pod may set, and in which namespace.

use crate::Error;

/// The namespace a sysctl belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    Net,
    Ipc,
}

/// A checked sysctl: dotted key, value, and its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    pub key: String,
    pub value: String,
    pub namespace: SysctlNamespace,
}

impl Sysctl {
    /// The file under `/proc/sys` for this key.
    pub fn proc_path(&self) -> String {
        format!("/proc/sys/{}", self.key.replace('.', "/"))
    }
}

/// Checks a sysctl from the request (dotted or slashed notation, as kubelet accepts) and
/// finds its namespace; anything not namespaced is refused, since it would change the host.
pub fn parse_sysctl(key: &str, value: &str) -> Result<Sysctl, Error> {
    let dotted = if key.contains('/') {
        key.replace('/', ".")
    } else {
        key.to_string()
    };
    let plain = !dotted.is_empty()
        && dotted
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !dotted
            .split('.')
            .any(|part| part.is_empty() || part == "..");
    if !plain {
        return Err(Error::InvalidArgument(format!(
            "invalid sysctl name {key:?}"
        )));
    }
    if value.contains('\n') || value.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "invalid value for sysctl {key}"
        )));
    }
    let namespace = if dotted.starts_with("net.") {
        SysctlNamespace::Net
    } else if dotted.starts_with("kernel.shm")
        || dotted.starts_with("kernel.msg")
        || dotted == "kernel.sem"
        || dotted.starts_with("fs.mqueue.")
    {
        SysctlNamespace::Ipc
    } else {
        return Err(Error::InvalidArgument(format!(
            "sysctl {key} is not namespaced; a pod may not set it"
        )));
    };
    Ok(Sysctl {
        key: dotted,
        value: value.to_string(),
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_sysctl_namespaces() {
        assert_eq!(
            parse_sysctl("net.ipv4.ip_unprivileged_port_start", "0")
                .unwrap()
                .namespace,
            SysctlNamespace::Net
        );
        assert_eq!(
            parse_sysctl("kernel.shmmax", "1").unwrap().namespace,
            SysctlNamespace::Ipc
        );
        let slashed = parse_sysctl("net/ipv4/ping_group_range", "0 1").unwrap();
        assert_eq!(slashed.key, "net.ipv4.ping_group_range");
        assert_eq!(slashed.proc_path(), "/proc/sys/net/ipv4/ping_group_range");
    }

    #[test]
    fn test_parse_sysctl_refuses_host_wide_and_bad_names() {
        for bad in [
            "kernel.panic",
            "vm.swappiness",
            "net..x",
            "../etc",
            "net.ipv4/../x",
            "",
        ] {
            assert!(parse_sysctl(bad, "1").is_err(), "{bad}");
        }
        assert!(parse_sysctl("net.ipv4.x", "1\n2").is_err());
    }
}
