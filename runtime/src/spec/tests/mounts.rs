//! Mounts, devices and the user of whole specs.

use k8s_cri::v1::{Mount, MountPropagation};

use super::*;

fn bind(container: &str, host: &str, propagation: MountPropagation, readonly: bool) -> Mount {
    Mount {
        container_path: container.into(),
        host_path: host.into(),
        readonly,
        propagation: propagation as i32,
        ..Default::default()
    }
}

#[test]
fn test_build_mounts_order_and_propagation() {
    let mut f = Fixture::new();
    f.image.volumes = vec!["/cache".into(), "/data".into()];
    let tmp = f.rootfs.parent().unwrap().to_path_buf();
    let host = |p: &str| {
        let path = tmp.join(p);
        fs::create_dir_all(&path).unwrap();
        path.display().to_string()
    };
    let mut c = config();
    c.mounts = vec![
        bind(
            "/data/sub",
            &host("h/sub"),
            MountPropagation::PropagationBidirectional,
            false,
        ),
        bind(
            "/data",
            &host("h/data"),
            MountPropagation::PropagationHostToContainer,
            false,
        ),
        bind(
            "/etc/hosts",
            &host("h/hosts"),
            MountPropagation::PropagationPrivate,
            true,
        ),
        bind(
            "/var/log/",
            &host("h/log"),
            MountPropagation::PropagationPrivate,
            true,
        ),
    ];
    let built = f.build(&c).unwrap();
    let mounts = mount_list(&built.spec);
    let order: Vec<&str> = mounts.iter().map(|(d, _, _)| d.as_str()).collect();
    assert_eq!(
        order,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/data",
            "/cache",
            "/data/sub",
            "/etc/hosts",
            "/var/log",
            "/etc/hostname",
            "/etc/resolv.conf",
            "/dev/shm",
        ]
    );
    let options = |dest: &str| {
        mounts
            .iter()
            .find(|(d, _, _)| d == dest)
            .map(|(_, _, o)| o.clone())
            .unwrap()
    };
    assert_eq!(options("/data/sub"), ["rbind", "rshared", "rw"]);
    assert_eq!(options("/data"), ["rbind", "rslave", "rw"]);
    assert_eq!(options("/var/log"), ["rbind", "rprivate", "ro"]);
    assert_eq!(options("/sys"), ["nosuid", "noexec", "nodev", "ro"]);
    assert_eq!(
        options("/sys/fs/cgroup"),
        ["nosuid", "noexec", "nodev", "relatime", "ro"]
    );
    assert_eq!(
        find_mount(&built.spec, "/etc/hosts")
            .unwrap()
            .source()
            .as_deref(),
        Some(tmp.join("h/hosts").as_path())
    );
    assert_eq!(
        find_mount(&built.spec, "/dev/shm")
            .unwrap()
            .source()
            .as_deref(),
        f.sandbox.shm.as_deref()
    );
    assert_eq!(
        linux(&built.spec).rootfs_propagation().as_deref(),
        Some("shared")
    );
    // /data is covered by a request mount; /cache gets a per-container directory.
    assert_eq!(
        built.volumes,
        [ImageVolume {
            container_path: "/cache".into(),
            host_path: f.limits.volume_dir.join("cache"),
        }]
    );
    assert!(built.missing_sources.is_empty());
}

#[test]
fn test_build_dev_shm_choices() {
    let mut f = Fixture::new();
    // The pod's own IPC without a shm mount: the standard tmpfs.
    f.sandbox.shm = None;
    let spec = f.spec(&config());
    assert_eq!(
        find_mount(&spec, "/dev/shm").unwrap().typ().as_deref(),
        Some("tmpfs")
    );
    // Host IPC: the host's /dev/shm.
    f.sandbox.ipc_mode = NamespaceMode::Node as i32;
    f.sandbox.ipcns = None;
    let spec = f.spec(&config());
    let shm = find_mount(&spec, "/dev/shm").unwrap();
    if Path::new("/dev/shm").exists() {
        assert_eq!(shm.typ().as_deref(), Some("bind"));
        assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
    }
    assert!(
        !linux(&spec)
            .namespaces()
            .iter()
            .flatten()
            .any(|ns| ns.typ() == LinuxNamespaceType::Ipc)
    );
}

#[test]
fn test_build_request_dev_mount_replaces_dev_submounts() {
    let f = Fixture::new();
    let mut c = config();
    c.mounts = vec![bind(
        "/dev",
        "/dev",
        MountPropagation::PropagationPrivate,
        false,
    )];
    let spec = f.spec(&c);
    let dev: Vec<String> = mount_list(&spec)
        .into_iter()
        .map(|(d, _, _)| d)
        .filter(|d| d.starts_with("/dev"))
        .collect();
    assert_eq!(dev, ["/dev", "/dev/shm"], "the pod's shm still goes on top");
}

#[test]
fn test_build_mount_errors_and_missing_sources() {
    let f = Fixture::new();
    let mut c = config();
    c.mounts = vec![Mount {
        recursive_read_only: true,
        ..bind("/x", "/tmp", MountPropagation::PropagationPrivate, true)
    }];
    assert!(matches!(f.build(&c), Err(Error::InvalidArgument(_))));
    c.mounts = vec![bind(
        "relative",
        "/tmp",
        MountPropagation::PropagationPrivate,
        true,
    )];
    assert!(matches!(f.build(&c), Err(Error::InvalidArgument(_))));
    let missing = f.rootfs.parent().unwrap().join("not-yet");
    c.mounts = vec![bind(
        "/x",
        &missing.display().to_string(),
        MountPropagation::PropagationPrivate,
        false,
    )];
    assert_eq!(f.build(&c).unwrap().missing_sources, [missing]);
}

#[test]
fn test_build_request_devices() {
    let f = Fixture::new();
    let mut c = config();
    c.devices = vec![
        Device {
            container_path: "/dev/fuse".into(),
            host_path: "/dev/fuse".into(),
            permissions: "rw".into(),
        },
        Device {
            container_path: "/dev/gpu".into(),
            host_path: "/dev/dri".into(),
            permissions: "rwm".into(),
        },
    ];
    let spec = f.spec(&c);
    let linux = linux(&spec);
    let devices: Vec<(PathBuf, i64, i64)> = linux
        .devices()
        .iter()
        .flatten()
        .map(|d| (d.path().clone(), d.major(), d.minor()))
        .collect();
    assert_eq!(
        devices,
        [
            (PathBuf::from("/dev/fuse"), 10, 229),
            ("/dev/gpu/card0".into(), 226, 0),
            ("/dev/gpu/renderD128".into(), 226, 128),
        ]
    );
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap();
    assert_eq!(rules.len(), 4);
    assert!(!rules[0].allow(), "deny all first");
    assert_eq!(
        (
            rules[1].major(),
            rules[1].minor(),
            rules[1].access().as_deref()
        ),
        (Some(10), Some(229), Some("rw"))
    );
    c.devices[0].permissions = "rwx".into();
    assert!(matches!(f.build(&c), Err(Error::InvalidArgument(_))));
}

#[test]
fn test_build_readonly_rootfs_and_user() {
    let f = Fixture::new();
    let spec = f.spec(&with_sc(LinuxContainerSecurityContext {
        readonly_rootfs: true,
        run_as_username: "web".into(),
        no_new_privs: true,
        supplemental_groups: vec![5000],
        ..Default::default()
    }));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let hosts = find_mount(&spec, "/etc/hosts").unwrap();
    assert!(hosts.options().as_ref().unwrap().contains(&"ro".into()));
    let process = spec.process().as_ref().unwrap();
    assert_eq!((process.user().uid(), process.user().gid()), (33, 33));
    assert_eq!(
        process.user().additional_gids().as_deref(),
        Some(&[4, 33, 5000][..])
    );
    assert_eq!(process.no_new_privileges(), Some(true));
}
