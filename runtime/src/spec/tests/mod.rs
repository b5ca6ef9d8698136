//! Whole-spec tests: a fake host, a fake rootfs and sandbox directory in temp dirs.

mod mounts;
mod resources;

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use k8s_cri::v1::{
    Capability as CriCapability, ContainerConfig, ContainerMetadata, Device, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, NamespaceMode, NamespaceOption,
    SecurityProfile, security_profile::ProfileType,
};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxDeviceType, LinuxNamespaceType, LinuxSeccompAction, Spec,
};

use super::*;

struct FakeHost {
    cgroup_v2: bool,
    swap: bool,
    hugetlb: bool,
    devices: HashMap<PathBuf, Vec<HostDevice>>,
}

impl Default for FakeHost {
    fn default() -> Self {
        let node = |path: &str, relative: &str, typ, major, minor| HostDevice {
            path: path.into(),
            relative: relative.into(),
            typ,
            major,
            minor,
            file_mode: 0o666,
            uid: 0,
            gid: 0,
        };
        let mut devices = HashMap::new();
        devices.insert(
            PathBuf::from("/dev/fuse"),
            vec![node("/dev/fuse", "", LinuxDeviceType::C, 10, 229)],
        );
        devices.insert(
            PathBuf::from("/dev/dri"),
            vec![
                node("/dev/dri/card0", "card0", LinuxDeviceType::C, 226, 0),
                node(
                    "/dev/dri/renderD128",
                    "renderD128",
                    LinuxDeviceType::C,
                    226,
                    128,
                ),
            ],
        );
        devices.insert(
            PathBuf::from("/dev"),
            vec![
                node("/dev/null", "null", LinuxDeviceType::C, 1, 3),
                node("/dev/sda", "sda", LinuxDeviceType::B, 8, 0),
                node("/dev/dri/card0", "dri/card0", LinuxDeviceType::C, 226, 0),
            ],
        );
        FakeHost {
            cgroup_v2: false,
            swap: true,
            hugetlb: true,
            devices,
        }
    }
}

impl HostProbe for FakeHost {
    fn cgroup_v2(&self) -> bool {
        self.cgroup_v2
    }
    fn swap_controller(&self) -> bool {
        self.swap
    }
    fn hugetlb_controller(&self) -> bool {
        self.hugetlb
    }
    fn hostname(&self) -> Result<String, Error> {
        Ok("node-1".to_string())
    }
    fn capabilities(&self) -> Result<Vec<Capability>, Error> {
        // Root without CAP_SYS_RESOURCE, as on the machines here.
        Ok(security::capabilities_from_bits(
            0x1ff_ffff_ffff & !(1 << 24),
        ))
    }
    fn devices(&self, host_path: &Path) -> Result<Vec<HostDevice>, Error> {
        self.devices.get(host_path).cloned().ok_or_else(|| {
            Error::io(
                "stat",
                host_path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            )
        })
    }
    fn kernel_version(&self) -> Option<(u32, u32)> {
        Some((6, 1))
    }
    fn cgroup_v1_hierarchies(&self) -> Vec<super::CgroupV1Hierarchy> {
        if self.cgroup_v2 {
            return Vec::new();
        }
        vec![
            super::CgroupV1Hierarchy {
                dir: "cpu,cpuacct".into(),
                controllers: vec!["cpu".into(), "cpuacct".into()],
            },
            super::CgroupV1Hierarchy {
                dir: "memory".into(),
                controllers: vec!["memory".into()],
            },
        ]
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    rootfs: PathBuf,
    sandbox: SandboxInfo,
    image: ImageInfo,
    limits: HostLimits,
    host: FakeHost,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        fs::create_dir_all(rootfs.join("etc")).unwrap();
        fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/var/www:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            rootfs.join("etc/group"),
            "root:x:0:\nweb:x:33:\nlog:x:4:web\n",
        )
        .unwrap();
        let sandbox_dir = dir.path().join("sandbox");
        fs::create_dir_all(sandbox_dir.join("shm")).unwrap();
        for file in ["hostname", "hosts", "resolv.conf"] {
            fs::write(sandbox_dir.join(file), "x\n").unwrap();
        }
        let profiles = dir.path().join("seccomp");
        fs::create_dir_all(&profiles).unwrap();
        let sandbox = SandboxInfo {
            id: "sb1".into(),
            name: "web-0".into(),
            namespace: "default".into(),
            uid: "uid-1".into(),
            hostname: "web-0".into(),
            netns: Some("/run/netns/corral-sb1".into()),
            ipcns: Some(sandbox_dir.join("ns/ipc")),
            utsns: Some(sandbox_dir.join("ns/uts")),
            pidns: None,
            pid_mode: NamespaceMode::Container as i32,
            ipc_mode: NamespaceMode::Pod as i32,
            network_mode: NamespaceMode::Pod as i32,
            shm: Some(sandbox_dir.join("shm")),
            sandbox_dir,
            cgroup_parent: "/kubepods/pod1".into(),
            annotations: HashMap::new(),
        };
        let image = ImageInfo {
            name: "docker.io/library/nginx:1.27".into(),
            entrypoint: vec!["/docker-entrypoint.sh".into()],
            cmd: vec!["nginx".into(), "-g".into(), "daemon off;".into()],
            env: vec!["NGINX_VERSION=1.27".into()],
            ..Default::default()
        };
        let limits = HostLimits {
            min_oom_score_adj: 0,
            apparmor_supported: false,
            seccomp_profile_root: profiles,
            volume_dir: dir.path().join("volumes"),
            pids_limit: 0,
        };
        Fixture {
            rootfs,
            sandbox,
            image,
            limits,
            host: FakeHost::default(),
            _dir: dir,
        }
    }

    fn build(&self, config: &ContainerConfig) -> Result<BuiltSpec, Error> {
        let input = SpecInput {
            container_id: "c1",
            config,
            sandbox: &self.sandbox,
            image: &self.image,
            rootfs: &self.rootfs,
            cgroups_path: cgroups_path(&self.sandbox.cgroup_parent, "c1"),
            host: &self.limits,
        };
        build(&input, &self.host)
    }

    fn spec(&self, config: &ContainerConfig) -> Spec {
        self.build(config).unwrap().spec
    }
}

fn config() -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "nginx".into(),
            attempt: 0,
        }),
        annotations: [("team".to_string(), "web".to_string())].into(),
        ..Default::default()
    }
}

fn with_sc(sc: LinuxContainerSecurityContext) -> ContainerConfig {
    let mut c = config();
    c.linux = Some(LinuxContainerConfig {
        resources: None,
        security_context: Some(sc),
    });
    c
}

fn with_resources(resources: LinuxContainerResources) -> ContainerConfig {
    let mut c = config();
    c.linux = Some(LinuxContainerConfig {
        resources: Some(resources),
        security_context: None,
    });
    c
}

fn bounding(spec: &Spec) -> Capabilities {
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    caps.bounding().clone().unwrap()
}

fn mount_list(spec: &Spec) -> Vec<(String, String, Vec<String>)> {
    spec.mounts()
        .iter()
        .flatten()
        .map(|m| {
            (
                m.destination().display().to_string(),
                m.typ().clone().unwrap_or_default(),
                m.options().clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn find_mount(spec: &Spec, dest: &str) -> Option<oci_spec::runtime::Mount> {
    spec.mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new(dest))
        .cloned()
}

fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
    spec.linux().as_ref().unwrap()
}

#[test]
fn test_build_minimal_container_defaults() {
    let f = Fixture::new();
    let spec = f.spec(&config());
    let process = spec.process().as_ref().unwrap();
    assert_eq!(
        process.args().as_deref().unwrap(),
        ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    );
    assert_eq!(
        process.env().as_deref().unwrap(),
        [
            process::DEFAULT_PATH_ENV,
            "HOSTNAME=web-0",
            "NGINX_VERSION=1.27"
        ]
    );
    assert_eq!(process.cwd(), Path::new("/"));
    assert_eq!(process.terminal(), Some(false));
    assert_eq!(process.no_new_privileges(), Some(false));
    assert_eq!(process.rlimits(), &None);
    assert_eq!(process.oom_score_adj(), None);
    assert_eq!((process.user().uid(), process.user().gid()), (0, 0));
    assert_eq!(process.user().additional_gids().as_deref(), Some(&[0][..]));
    let caps = process.capabilities().clone().unwrap();
    let default: Capabilities = security::DEFAULT_CAPABILITIES.into_iter().collect();
    assert_eq!(caps.bounding().as_ref(), Some(&default));
    assert_eq!(caps.effective().as_ref(), Some(&default));
    assert_eq!(caps.permitted().as_ref(), Some(&default));
    assert_eq!(caps.inheritable().as_ref(), Some(&Capabilities::new()));
    assert_eq!(caps.ambient().as_ref(), Some(&Capabilities::new()));

    assert_eq!(spec.hostname().as_deref(), Some("web-0"));
    assert_eq!(spec.root().as_ref().unwrap().path(), &f.rootfs);
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    let linux = linux(&spec);
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/pod1/corral-c1"))
    );
    assert!(linux.seccomp().is_none(), "unset seccomp is unconfined");
    assert_eq!(linux.masked_paths().as_ref().unwrap().len(), 11);
    assert_eq!(linux.readonly_paths().as_ref().unwrap().len(), 5);
    assert_eq!(linux.sysctl(), &None);
    let annotations = spec.annotations().clone().unwrap();
    assert_eq!(annotations[annotations::CONTAINER_TYPE], "container");
    assert_eq!(annotations[annotations::SANDBOX_ID], "sb1");
    assert_eq!(annotations[annotations::SANDBOX_NAMESPACE], "default");
    assert_eq!(annotations[annotations::CONTAINER_NAME], "nginx");
    assert_eq!(
        annotations[annotations::IMAGE_NAME],
        "docker.io/library/nginx:1.27"
    );
    assert_eq!(annotations["team"], "web");
}

#[test]
fn test_build_spec_json_roundtrip() {
    let f = Fixture::new();
    let mut c = with_sc(LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        ..Default::default()
    });
    c.devices = vec![Device {
        container_path: "/dev/fuse".into(),
        host_path: "/dev/fuse".into(),
        permissions: "rw".into(),
    }];
    let spec = f.spec(&c);
    let json = serde_json::to_string_pretty(&spec).unwrap();
    assert!(!json.contains("youki"), "a default leaked into the spec");
    let parsed: Spec = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, spec);
    let dir = tempfile::tempdir().unwrap();
    spec.save(dir.path().join("config.json")).unwrap();
    assert_eq!(Spec::load(dir.path().join("config.json")).unwrap(), spec);
}

#[test]
fn test_build_capabilities_add_drop() {
    let f = Fixture::new();
    let spec = f.spec(&with_sc(LinuxContainerSecurityContext {
        capabilities: Some(CriCapability {
            add_capabilities: vec!["NET_ADMIN".into(), "CAP_SYS_TIME".into()],
            drop_capabilities: vec!["chown".into(), "KILL".into()],
            add_ambient_capabilities: vec![],
        }),
        ..Default::default()
    }));
    let caps = bounding(&spec);
    assert!(caps.contains(&Capability::NetAdmin));
    assert!(caps.contains(&Capability::SysTime));
    assert!(!caps.contains(&Capability::Chown));
    assert!(!caps.contains(&Capability::Kill));
    assert_eq!(caps.len(), 14);
    let unknown = f.build(&with_sc(LinuxContainerSecurityContext {
        capabilities: Some(CriCapability {
            add_capabilities: vec!["FLY".into()],
            ..Default::default()
        }),
        ..Default::default()
    }));
    assert!(matches!(unknown, Err(Error::InvalidArgument(_))));
}

#[test]
fn test_build_capabilities_all() {
    let f = Fixture::new();
    let spec = f.spec(&with_sc(LinuxContainerSecurityContext {
        capabilities: Some(CriCapability {
            add_capabilities: vec!["ALL".into()],
            drop_capabilities: vec!["CHOWN".into()],
            add_ambient_capabilities: vec![],
        }),
        ..Default::default()
    }));
    let caps = bounding(&spec);
    assert_eq!(caps.len(), 39, "the agent's 40 minus CHOWN");
    assert!(caps.contains(&Capability::SysAdmin));
    assert!(!caps.contains(&Capability::SysResource));

    let spec = f.spec(&with_sc(LinuxContainerSecurityContext {
        capabilities: Some(CriCapability {
            add_capabilities: vec!["NET_BIND_SERVICE".into()],
            drop_capabilities: vec!["all".into()],
            add_ambient_capabilities: vec![],
        }),
        ..Default::default()
    }));
    assert_eq!(
        bounding(&spec),
        [Capability::NetBindService].into_iter().collect()
    );
}

#[test]
fn test_build_privileged() {
    let mut f = Fixture::new();
    f.host.cgroup_v2 = true;
    let spec = f.spec(&with_sc(LinuxContainerSecurityContext {
        privileged: true,
        seccomp: Some(SecurityProfile {
            profile_type: ProfileType::RuntimeDefault as i32,
            localhost_ref: String::new(),
        }),
        masked_paths: vec!["/proc/kcore".into()],
        readonly_paths: vec!["/proc/sys".into()],
        ..Default::default()
    }));
    assert_eq!(bounding(&spec).len(), 40);
    let linux = linux(&spec);
    assert!(linux.seccomp().is_none());
    assert_eq!(linux.masked_paths().as_deref(), Some(&[][..]));
    assert_eq!(linux.readonly_paths().as_deref(), Some(&[][..]));
    let sys = find_mount(&spec, "/sys").unwrap();
    assert!(sys.options().as_ref().unwrap().contains(&"rw".into()));
    let cgroup = find_mount(&spec, "/sys/fs/cgroup").unwrap();
    assert!(cgroup.options().as_ref().unwrap().contains(&"rw".into()));
    let devices: Vec<PathBuf> = linux
        .devices()
        .iter()
        .flatten()
        .map(|d| d.path().clone())
        .collect();
    assert_eq!(
        devices,
        [
            PathBuf::from("/dev/null"),
            "/dev/sda".into(),
            "/dev/dri/card0".into()
        ]
    );
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    assert_eq!(rules[0].access().as_deref(), Some("rwm"));
    assert!(
        !linux
            .namespaces()
            .iter()
            .flatten()
            .any(|ns| ns.typ() == LinuxNamespaceType::Cgroup),
        "no cgroup namespace for privileged containers"
    );
}

#[test]
fn test_build_masked_paths_explicit_and_unmasked() {
    let f = Fixture::new();
    let spec = f.spec(&with_sc(LinuxContainerSecurityContext {
        masked_paths: vec!["/proc/kcore".into()],
        readonly_paths: vec!["/proc/sys".into()],
        ..Default::default()
    }));
    assert_eq!(
        linux(&spec).masked_paths().as_deref(),
        Some(&["/proc/kcore".to_string()][..])
    );
    // kubelet's procMount: Unmasked sends both lists empty.
    let spec = f.spec(&with_sc(LinuxContainerSecurityContext::default()));
    assert_eq!(linux(&spec).masked_paths().as_deref(), Some(&[][..]));
    assert_eq!(linux(&spec).readonly_paths().as_deref(), Some(&[][..]));
}

fn seccomp_config(profile_type: ProfileType, localhost_ref: &str) -> ContainerConfig {
    with_sc(LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile {
            profile_type: profile_type as i32,
            localhost_ref: localhost_ref.into(),
        }),
        ..Default::default()
    })
}

#[test]
fn test_build_seccomp_runtime_default_and_unconfined() {
    let f = Fixture::new();
    let spec = f.spec(&seccomp_config(ProfileType::RuntimeDefault, ""));
    let seccomp = linux(&spec).seccomp().clone().unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActErrno);
    assert!(seccomp.syscalls().as_ref().unwrap().len() > 10);

    let spec = f.spec(&seccomp_config(ProfileType::Unconfined, ""));
    assert!(linux(&spec).seccomp().is_none());

    #[allow(deprecated)]
    let deprecated = with_sc(LinuxContainerSecurityContext {
        seccomp_profile_path: "runtime/default".into(),
        ..Default::default()
    });
    assert!(linux(&f.spec(&deprecated)).seccomp().is_some());

    let bad = seccomp_config(ProfileType::RuntimeDefault, "x.json");
    assert!(matches!(f.build(&bad), Err(Error::InvalidArgument(_))));
}

#[test]
fn test_build_seccomp_localhost_loads_file() {
    let f = Fixture::new();
    let profile = r#"{"defaultAction":"SCMP_ACT_LOG","syscalls":[
        {"names":["chmod"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#;
    fs::write(f.limits.seccomp_profile_root.join("audit.json"), profile).unwrap();
    let spec = f.spec(&seccomp_config(ProfileType::Localhost, "audit.json"));
    let seccomp = linux(&spec).seccomp().clone().unwrap();
    assert_eq!(seccomp.default_action(), LinuxSeccompAction::ScmpActLog);
    assert_eq!(seccomp.syscalls().as_ref().unwrap()[0].names(), &["chmod"]);

    let absolute = f.limits.seccomp_profile_root.join("audit.json");
    let spec = f.spec(&seccomp_config(
        ProfileType::Localhost,
        &absolute.display().to_string(),
    ));
    assert!(linux(&spec).seccomp().is_some());

    assert!(
        f.build(&seccomp_config(ProfileType::Localhost, "missing.json"))
            .is_err()
    );
    fs::write(f.limits.seccomp_profile_root.join("bad.json"), "{").unwrap();
    let err = f
        .build(&seccomp_config(ProfileType::Localhost, "bad.json"))
        .unwrap_err();
    assert!(matches!(err, Error::SeccompProfile { .. }), "{err}");
}

#[test]
fn test_build_apparmor_refused_on_host_without_it() {
    let f = Fixture::new();
    let err = f
        .build(&with_sc(LinuxContainerSecurityContext {
            apparmor: Some(SecurityProfile {
                profile_type: ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(err.to_string(), "apparmor is not supported on this host");
}

#[test]
fn test_build_host_network_pod() {
    let mut f = Fixture::new();
    f.sandbox.network_mode = NamespaceMode::Node as i32;
    f.sandbox.netns = None;
    f.sandbox.utsns = None;
    let spec = f.spec(&config());
    assert_eq!(
        spec.hostname(),
        &None,
        "libcontainer refuses a hostname without UTS ns"
    );
    let env = spec.process().as_ref().unwrap().env().clone().unwrap();
    assert!(env.contains(&"HOSTNAME=node-1".to_string()));
    let types: Vec<LinuxNamespaceType> = linux(&spec)
        .namespaces()
        .iter()
        .flatten()
        .map(|ns| ns.typ())
        .collect();
    assert_eq!(
        types,
        [
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Pid
        ]
    );
}

#[test]
fn test_build_pid_namespace_from_container_options() {
    let mut f = Fixture::new();
    f.sandbox.pid_mode = NamespaceMode::Pod as i32;
    f.sandbox.pidns = Some("/run/corral/sandboxes/sb1/ns/pid".into());
    let spec = f.spec(&with_sc(LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    }));
    let pid = linux(&spec)
        .namespaces()
        .iter()
        .flatten()
        .find(|ns| ns.typ() == LinuxNamespaceType::Pid)
        .cloned()
        .unwrap();
    assert_eq!(
        pid.path().as_deref(),
        Some(Path::new("/run/corral/sandboxes/sb1/ns/pid"))
    );
    // Joining the pod's PID namespace on v1: the container's own cgroup directories are
    // bound at /sys/fs/cgroup instead of libcontainer's `cgroup` mount.
    let mounts = spec.mounts().clone().unwrap_or_default();
    assert!(
        !mounts.iter().any(|m| m.typ().as_deref() == Some("cgroup")),
        "{mounts:?}"
    );
    let at = |dest: &str| {
        mounts
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .cloned()
            .unwrap_or_else(|| panic!("no mount at {dest}"))
    };
    assert_eq!(at("/sys/fs/cgroup").typ().as_deref(), Some("tmpfs"));
    let cgroups_path = linux(&spec).cgroups_path().clone().unwrap();
    let relative = cgroups_path.strip_prefix("/").unwrap();
    for (dest, dir) in [
        ("/sys/fs/cgroup/cpu,cpuacct", "cpu,cpuacct"),
        ("/sys/fs/cgroup/cpu", "cpu,cpuacct"),
        ("/sys/fs/cgroup/cpuacct", "cpu,cpuacct"),
        ("/sys/fs/cgroup/memory", "memory"),
    ] {
        let m = at(dest);
        assert_eq!(
            m.source().as_deref(),
            Some(
                Path::new("/sys/fs/cgroup")
                    .join(dir)
                    .join(relative)
                    .as_path()
            )
        );
        assert!(m.options().clone().unwrap().contains(&"ro".to_string()));
    }

    // A container with its own PID namespace keeps the plain cgroup mount.
    let spec = f.spec(&with_sc(LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        }),
        ..Default::default()
    }));
    let mounts = spec.mounts().clone().unwrap_or_default();
    assert!(mounts.iter().any(|m| m.typ().as_deref() == Some("cgroup")));
}

#[test]
fn test_build_unsupported_requests() {
    let f = Fixture::new();
    let mut c = config();
    c.cdi_devices = vec![k8s_cri::v1::CdiDevice {
        name: "vendor.com/gpu=0".into(),
    }];
    assert!(matches!(f.build(&c), Err(Error::Unsupported(_))));
    let c = with_sc(LinuxContainerSecurityContext {
        capabilities: Some(CriCapability {
            add_ambient_capabilities: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        }),
        ..Default::default()
    });
    assert!(matches!(f.build(&c), Err(Error::Unsupported(_))));
}
