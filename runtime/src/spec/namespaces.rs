//! Linux namespaces: a new mount namespace; the pod's pinned network, IPC and UTS
//! namespaces (none for the host's); the PID namespace by the container's own PID mode; a
//! new cgroup namespace on cgroup v2 hosts for unprivileged containers (containerd's rule:
//! never on v1, for compatibility).

use std::path::{Path, PathBuf};

use k8s_cri::v1::{LinuxContainerSecurityContext, NamespaceMode};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::SandboxInfo;
use crate::Error;

fn mode(value: i32, what: &str) -> Result<NamespaceMode, Error> {
    NamespaceMode::try_from(value)
        .map_err(|_| Error::InvalidArgument(format!("unknown {what} namespace mode {value}")))
}

fn namespace(typ: LinuxNamespaceType, path: Option<&Path>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    ns.set_path(path.map(Path::to_path_buf));
    ns
}

/// The pod's pinned namespace of one kind: joined when the pod has its own, absent (the
/// host's) when the pod uses the host's. A pod that should have its own but has no pin is a
/// broken sandbox record, never a reason to fall back to the host's namespace.
fn pod_namespace(
    typ: LinuxNamespaceType,
    pin: &Option<PathBuf>,
    host: bool,
    what: &str,
) -> Result<Option<LinuxNamespace>, Error> {
    match (pin, host) {
        (Some(path), _) => Ok(Some(namespace(typ, Some(path)))),
        (None, true) => Ok(None),
        (None, false) => Err(Error::InvalidArgument(format!(
            "sandbox has no pinned {what} namespace but does not use the host's"
        ))),
    }
}

pub(super) fn namespaces(
    sc: &LinuxContainerSecurityContext,
    sandbox: &SandboxInfo,
    cgroup_v2: bool,
) -> Result<Vec<LinuxNamespace>, Error> {
    let host_network = mode(sandbox.network_mode, "network")? == NamespaceMode::Node;
    let host_ipc = mode(sandbox.ipc_mode, "ipc")? == NamespaceMode::Node;
    let options = sc.namespace_options.clone().unwrap_or_default();
    if let Some(userns) = &options.userns_options {
        if mode(userns.mode, "user")? != NamespaceMode::Node {
            return Err(Error::Unsupported("user namespaces".to_string()));
        }
    }

    let mut out = vec![namespace(LinuxNamespaceType::Mount, None)];
    out.extend(pod_namespace(
        LinuxNamespaceType::Network,
        &sandbox.netns,
        host_network,
        "network",
    )?);
    out.extend(pod_namespace(
        LinuxNamespaceType::Ipc,
        &sandbox.ipcns,
        host_ipc,
        "ipc",
    )?);
    // kubelet gives a pod the host's UTS namespace exactly when it uses the host's network.
    out.extend(pod_namespace(
        LinuxNamespaceType::Uts,
        &sandbox.utsns,
        host_network,
        "uts",
    )?);

    match mode(options.pid, "pid")? {
        NamespaceMode::Container => out.push(namespace(LinuxNamespaceType::Pid, None)),
        NamespaceMode::Node => {}
        NamespaceMode::Pod => match (&sandbox.pidns, mode(sandbox.pid_mode, "pod pid")?) {
            (Some(path), _) => out.push(namespace(LinuxNamespaceType::Pid, Some(path))),
            (None, NamespaceMode::Node) => {}
            // The pod shares none: each container gets its own (what a container asking for
            // "the pod's" gets when there is nothing to share, e.g. crictl without
            // namespace options, whose zero value is POD).
            (None, NamespaceMode::Container) => out.push(namespace(LinuxNamespaceType::Pid, None)),
            (None, _) => {
                return Err(Error::Unsupported(
                    "the pod's shared PID namespace is not available".to_string(),
                ));
            }
        },
        NamespaceMode::Target => {
            return Err(Error::Unsupported(
                "PID namespace mode TARGET (ephemeral debug containers)".to_string(),
            ));
        }
    }

    if cgroup_v2 && !sc.privileged {
        out.push(namespace(LinuxNamespaceType::Cgroup, None));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{NamespaceOption, UserNamespace};

    fn sandbox(pid_mode: NamespaceMode) -> SandboxInfo {
        SandboxInfo {
            netns: Some("/run/netns/pod".into()),
            ipcns: Some("/run/pod/ns/ipc".into()),
            utsns: Some("/run/pod/ns/uts".into()),
            pidns: (pid_mode == NamespaceMode::Pod).then(|| "/run/pod/ns/pid".into()),
            pid_mode: pid_mode as i32,
            network_mode: NamespaceMode::Pod as i32,
            ipc_mode: NamespaceMode::Pod as i32,
            ..Default::default()
        }
    }

    fn sc(pid: NamespaceMode) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: pid as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn find(list: &[LinuxNamespace], typ: LinuxNamespaceType) -> Option<Option<PathBuf>> {
        list.iter()
            .find(|ns| ns.typ() == typ)
            .map(|ns| ns.path().clone())
    }

    #[test]
    fn test_namespaces_pod_pins_joined() {
        let list = namespaces(
            &sc(NamespaceMode::Container),
            &sandbox(NamespaceMode::Container),
            false,
        )
        .unwrap();
        assert_eq!(find(&list, LinuxNamespaceType::Mount), Some(None));
        assert_eq!(
            find(&list, LinuxNamespaceType::Network),
            Some(Some("/run/netns/pod".into()))
        );
        assert_eq!(
            find(&list, LinuxNamespaceType::Ipc),
            Some(Some("/run/pod/ns/ipc".into()))
        );
        assert_eq!(
            find(&list, LinuxNamespaceType::Uts),
            Some(Some("/run/pod/ns/uts".into()))
        );
        assert_eq!(find(&list, LinuxNamespaceType::Cgroup), None);
    }

    #[test]
    fn test_namespaces_pid_container_is_new() {
        let list = namespaces(
            &sc(NamespaceMode::Container),
            &sandbox(NamespaceMode::Container),
            false,
        )
        .unwrap();
        assert_eq!(find(&list, LinuxNamespaceType::Pid), Some(None));
    }

    #[test]
    fn test_namespaces_pid_pod_joins_pod_pin() {
        let list =
            namespaces(&sc(NamespaceMode::Pod), &sandbox(NamespaceMode::Pod), false).unwrap();
        assert_eq!(
            find(&list, LinuxNamespaceType::Pid),
            Some(Some("/run/pod/ns/pid".into()))
        );
        // POD without a pod PID namespace to share: a new one.
        let list = namespaces(
            &sc(NamespaceMode::Pod),
            &sandbox(NamespaceMode::Container),
            false,
        )
        .unwrap();
        assert_eq!(find(&list, LinuxNamespaceType::Pid), Some(None));
        // A pod that should share one but has no pin: refused.
        let mut broken = sandbox(NamespaceMode::Pod);
        broken.pidns = None;
        assert!(namespaces(&sc(NamespaceMode::Pod), &broken, false).is_err());
    }

    #[test]
    fn test_namespaces_pid_node_is_host() {
        let list = namespaces(
            &sc(NamespaceMode::Node),
            &sandbox(NamespaceMode::Node),
            false,
        )
        .unwrap();
        assert_eq!(find(&list, LinuxNamespaceType::Pid), None);
    }

    #[test]
    fn test_namespaces_pid_target_unsupported() {
        let err = namespaces(
            &sc(NamespaceMode::Target),
            &sandbox(NamespaceMode::Container),
            false,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Unsupported(_)), "{err}");
    }

    #[test]
    fn test_namespaces_host_network_and_ipc_are_omitted() {
        let mut sandbox = sandbox(NamespaceMode::Container);
        sandbox.network_mode = NamespaceMode::Node as i32;
        sandbox.ipc_mode = NamespaceMode::Node as i32;
        sandbox.netns = None;
        sandbox.ipcns = None;
        sandbox.utsns = None;
        let list = namespaces(&sc(NamespaceMode::Container), &sandbox, false).unwrap();
        assert_eq!(find(&list, LinuxNamespaceType::Network), None);
        assert_eq!(find(&list, LinuxNamespaceType::Ipc), None);
        assert_eq!(find(&list, LinuxNamespaceType::Uts), None);
    }

    #[test]
    fn test_namespaces_missing_pin_is_an_error_not_the_host() {
        let mut sandbox = sandbox(NamespaceMode::Container);
        sandbox.netns = None;
        assert!(namespaces(&sc(NamespaceMode::Container), &sandbox, false).is_err());
    }

    #[test]
    fn test_namespaces_cgroup_ns_only_v2_unprivileged() {
        let sandbox = sandbox(NamespaceMode::Container);
        let mut sc = sc(NamespaceMode::Container);
        let list = namespaces(&sc, &sandbox, true).unwrap();
        assert_eq!(find(&list, LinuxNamespaceType::Cgroup), Some(None));
        sc.privileged = true;
        let list = namespaces(&sc, &sandbox, true).unwrap();
        assert_eq!(find(&list, LinuxNamespaceType::Cgroup), None);
    }

    #[test]
    fn test_namespaces_user_namespace_pod_unsupported() {
        let mut sc = sc(NamespaceMode::Container);
        if let Some(options) = sc.namespace_options.as_mut() {
            options.userns_options = Some(UserNamespace {
                mode: NamespaceMode::Pod as i32,
                ..Default::default()
            });
        }
        let sandbox = sandbox(NamespaceMode::Container);
        assert!(matches!(
            namespaces(&sc, &sandbox, false),
            Err(Error::Unsupported(_))
        ));
    }
}
