//! Node tests of what a container may see and touch: a read-only rootfs, masked /proc paths,
//! its own PID namespace (or the pod's), the pod's shared network and IPC namespaces, and
//! bind mounts as configured.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use common::agent::TestAgent;
use common::pod::{pod, pod_with};
use k8s_cri::v1::{
    LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, Mount, MountPropagation, NamespaceMode, NamespaceOption,
};

fn security(edit: impl FnOnce(&mut LinuxContainerSecurityContext)) -> LinuxContainerConfig {
    let mut context = LinuxContainerSecurityContext::default();
    edit(&mut context);
    LinuxContainerConfig {
        security_context: Some(context),
        ..LinuxContainerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_readonly_rootfs_masked_proc_and_hidden_host_processes() {
    let pod = pod(TestAgent::start().await.unwrap(), "iso-pod").await;

    // A read-only rootfs refuses writes; /tmp-less images have nowhere else to write.
    let mut config = pod.config(
        "readonly",
        &[
            "sh",
            "-c",
            "touch /probe && echo wrote; echo rc=$?; [ -e /probe ] && echo exists || echo absent",
        ],
    );
    config.linux = Some(security(|c| c.readonly_rootfs = true));
    let id = pod.run(config).await;
    assert_eq!(pod.wait_exited(&id).await.exit_code, 0);
    let log = pod.log("readonly");
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(!log.contains("wrote"), "{log}");
    assert!(log.contains("absent"), "{log}");

    // The same write succeeds on a writable rootfs (the test above can fail).
    let id = pod
        .run(pod.config("writable", &["sh", "-c", "touch /probe && echo wrote"]))
        .await;
    assert_eq!(pod.wait_exited(&id).await.exit_code, 0);
    assert_eq!(pod.log_lines("writable"), vec!["wrote".to_string()]);

    // Masked /proc files are /dev/null bound over them (char 1:3, empty); /proc/sys is
    // read-only. This host's kernel has no /proc/kcore: it is checked where it exists.
    let id = pod
        .run(pod.config(
            "masked",
            &[
                "sh",
                "-c",
                "for f in /proc/kcore /proc/keys /proc/timer_list; do \
                   [ -e $f ] && echo $f=$(stat -c %t:%T $f):$(wc -c < $f); done; \
                 awk '$5 == \"/proc/sys\" { split($6, o, \",\"); print \"sys=\" o[1] }' \
                   /proc/self/mountinfo",
            ],
        ))
        .await;
    assert_eq!(pod.wait_exited(&id).await.exit_code, 0);
    let lines = pod.log_lines("masked");
    for file in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if std::path::Path::new(file).exists() {
            assert!(
                lines.contains(&format!("{file}=1:3:0")),
                "{file}: {lines:?}"
            );
        }
    }
    assert!(
        lines.iter().any(|l| l.starts_with("/proc/keys=")),
        "{lines:?}"
    );
    assert!(lines.contains(&"sys=ro".to_string()), "{lines:?}");

    // Its own PID namespace (kubelet's default): it is PID 1 and sees no host process.
    let mut config = pod.config(
        "pids",
        &[
            "sh",
            "-c",
            "echo self=$$; echo count=$(ls -d /proc/[0-9]* | wc -l); ps -o comm",
        ],
    );
    config.linux = Some(security(|c| {
        c.namespace_options = Some(NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..NamespaceOption::default()
        })
    }));
    let id = pod.run(config).await;
    assert_eq!(pod.wait_exited(&id).await.exit_code, 0);
    let lines = pod.log_lines("pids");
    assert_eq!(lines[0], "self=1", "{lines:?}");
    let count: usize = lines[1].trim_start_matches("count=").parse().unwrap();
    assert!(
        count <= 5,
        "the container sees {count} processes: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("corral")),
        "host processes visible: {lines:?}"
    );
    let host_processes = std::fs::read_dir("/proc")
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .parse::<u32>()
                .is_ok()
        })
        .count();
    assert!(host_processes > count, "the host has more processes");
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_containers_of_a_pod_share_localhost_ipc_and_pod_pid_namespace() {
    let pod = pod_with(TestAgent::start().await.unwrap(), "shared-pod", |config| {
        config.linux = Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    pid: NamespaceMode::Pod as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        });
    })
    .await;

    // A web server on the pod's loopback address only.
    pod.run(pod.config(
        "server",
        &[
            "sh",
            "-c",
            "echo from-server > /dev/shm/marker; \
             readlink /proc/self/ns/ipc; readlink /proc/self/ns/net; \
             mkdir -p /www && echo hello-from-server > /www/index.html && \
             exec busybox httpd -f -p 127.0.0.1:7777 -h /www",
        ],
    ))
    .await;
    pod.wait_log("server", "net:[").await;
    let client = pod
        .run(pod.config(
            "client",
            &[
                "sh",
                "-c",
                "readlink /proc/self/ns/ipc; readlink /proc/self/ns/net; \
                 cat /dev/shm/marker; \
                 for i in 1 2 3 4 5 6 7 8 9 10; do \
                   wget -q -O - http://127.0.0.1:7777/index.html && break; sleep 0.3; done; \
                 ps -o pid,args",
            ],
        ))
        .await;
    let status = pod.wait_exited(&client).await;
    assert_eq!(status.exit_code, 0, "{}", pod.log("client"));
    let server_lines = pod.log_lines("server");
    let client_lines = pod.log_lines("client");
    assert_eq!(client_lines[0], server_lines[0], "same IPC namespace");
    assert_eq!(client_lines[1], server_lines[1], "same network namespace");
    assert_eq!(
        client_lines[2], "from-server",
        "the pod's /dev/shm is shared"
    );
    assert!(
        client_lines.contains(&"hello-from-server".to_string()),
        "reached the server over localhost: {client_lines:?}"
    );
    // The pod's PID namespace: the client sees the server's processes and the pod init.
    let ps: Vec<&String> = client_lines.iter().skip(4).collect();
    assert!(ps.iter().any(|l| l.contains("httpd")), "{ps:?}");
    assert!(
        ps.iter().any(|l| l.trim_start().starts_with("1 ")),
        "{ps:?}"
    );
    assert!(ps.len() <= 8, "only the pod's processes: {ps:?}");

    // A container of another pod does not share them.
    let other = pod_with(TestAgent::start().await.unwrap(), "other-pod", |_| {}).await;
    let id = other
        .run(other.config(
            "other",
            &[
                "sh",
                "-c",
                "readlink /proc/self/ns/ipc; readlink /proc/self/ns/net",
            ],
        ))
        .await;
    other.wait_exited(&id).await;
    let other_lines = other.log_lines("other");
    assert_ne!(other_lines[0], server_lines[0]);
    assert_ne!(other_lines[1], server_lines[1]);
    other.tear_down().await;

    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_bind_mounts_are_readonly_or_writable_as_configured() {
    let pod = pod(TestAgent::start().await.unwrap(), "mount-pod").await;
    let host = pod.agent.dir.path().join("volumes");
    let (ro, rw) = (host.join("ro"), host.join("rw"));
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("input"), "from-host\n").unwrap();
    let mut config = pod.config(
        "mounts",
        &[
            "sh",
            "-c",
            "cat /data/ro/input; \
             touch /data/ro/new && echo ro-writable || echo ro-refused; \
             echo from-container > /data/rw/output && echo rw-written",
        ],
    );
    config.mounts = vec![
        Mount {
            container_path: "/data/ro".to_string(),
            host_path: ro.display().to_string(),
            readonly: true,
            ..Mount::default()
        },
        Mount {
            container_path: "/data/rw".to_string(),
            host_path: rw.display().to_string(),
            readonly: false,
            propagation: MountPropagation::PropagationPrivate as i32,
            ..Mount::default()
        },
    ];
    let id = pod.run(config).await;
    assert_eq!(
        pod.wait_exited(&id).await.exit_code,
        0,
        "{}",
        pod.log("mounts")
    );
    let lines = pod.log_lines("mounts");
    assert_eq!(lines[0], "from-host");
    assert!(lines.contains(&"ro-refused".to_string()), "{lines:?}");
    assert!(lines.contains(&"rw-written".to_string()), "{lines:?}");
    assert!(!ro.join("new").exists());
    assert_eq!(
        std::fs::read_to_string(rw.join("output")).unwrap(),
        "from-container\n"
    );
    let status = pod.status(&id).await;
    assert_eq!(status.mounts.len(), 2, "the status reports the mounts");
    pod.tear_down().await;
}
