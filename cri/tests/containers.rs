//! Node tests of containers: real busybox containers in real pods, driven over CRI, with
//! their output in the CRI log format, exit codes and reasons, stop escalation, and the
//! monitor that outlives an agent crash.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::agent::TestAgent;
use common::pod::{pod, pod_with};
use k8s_cri::v1::{
    ContainerState, ContainerStatusRequest, CreateContainerRequest, ImageSpec, KeyValue,
    RemoveContainerRequest, StopContainerRequest,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_output_reaches_cri_log_and_exit_code_is_recorded() {
    let pod = pod(TestAgent::start().await.unwrap(), "ctr-pod").await;
    let id = pod
        .run(pod.config("hello", &["sh", "-c", "echo out; echo err >&2; exit 3"]))
        .await;
    let status = pod.wait_exited(&id).await;
    assert_eq!(status.exit_code, 3);
    assert_eq!(status.reason, "Error");
    assert!(status.finished_at >= status.started_at && status.started_at > 0);
    let log = pod.log("hello");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in &lines {
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        assert!(
            fields[0].ends_with('Z') && fields[0].contains('T'),
            "{line}"
        );
        assert_eq!(fields[2], "F", "{line}");
    }
    assert!(log.contains(" stdout F out\n"), "{log}");
    assert!(log.contains(" stderr F err\n"), "{log}");

    let ok = pod.run(pod.config("ok", &["true"])).await;
    let status = pod.wait_exited(&ok).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_env_cwd_user_and_pod_files() {
    let pod = pod(TestAgent::start().await.unwrap(), "ctr-pod").await;
    let mut config = pod.config(
        "env",
        &[
            "sh",
            "-c",
            "echo $GREETING; pwd; id -u; id -g; hostname; cat /etc/hosts | grep -c localhost",
        ],
    );
    config.envs = vec![KeyValue {
        key: "GREETING".to_string(),
        value: "hello-env".to_string(),
    }];
    config.working_dir = "/tmp".to_string();
    config.linux = Some(k8s_cri::v1::LinuxContainerConfig {
        security_context: Some(k8s_cri::v1::LinuxContainerSecurityContext {
            run_as_user: Some(k8s_cri::v1::Int64Value { value: 1000 }),
            run_as_group: Some(k8s_cri::v1::Int64Value { value: 2000 }),
            ..k8s_cri::v1::LinuxContainerSecurityContext::default()
        }),
        ..k8s_cri::v1::LinuxContainerConfig::default()
    });
    let id = pod.run(config).await;
    let status = pod.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0, "{}", pod.log("env"));
    let lines = pod.log_lines("env");
    assert_eq!(lines[0], "hello-env");
    assert_eq!(lines[1], "/tmp");
    assert_eq!(lines[2], "1000");
    assert_eq!(lines[3], "2000");
    assert_eq!(lines[4], "ctr-pod");
    assert_ne!(lines[5], "0", "the pod's hosts file is mounted");
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_stop_falls_back_to_sigkill_and_remove_is_idempotent() {
    let pod = pod(TestAgent::start().await.unwrap(), "ctr-pod").await;
    let id = pod
        .run(pod.config(
            "stubborn",
            &["sh", "-c", "trap '' TERM; echo ready; sleep 1000"],
        ))
        .await;
    assert_eq!(
        pod.status(&id).await.state,
        ContainerState::ContainerRunning as i32
    );
    let started = Instant::now();
    let mut client = pod.agent.client().await.unwrap();
    client
        .runtime
        .stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 1,
        })
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for the timeout"
    );
    let status = pod.status(&id).await;
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 137, "killed by SIGKILL");
    for _ in 0..2 {
        client
            .runtime
            .stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await
            .unwrap();
        client
            .runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap();
    }
    let err = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_running_container_survives_agent_kill9_and_exit_meanwhile_is_recorded() {
    let agent = TestAgent::start().await.unwrap();
    let mut pod = pod(agent, "ctr-pod").await;
    let long = pod.run(pod.config("long", &["sleep", "1000"])).await;
    let short = pod
        .run(pod.config("short", &["sh", "-c", "sleep 2; exit 7"]))
        .await;
    pod.agent.kill9().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // `short` exits while the agent is down
    pod.agent.spawn().await.unwrap();
    assert_eq!(
        pod.status(&long).await.state,
        ContainerState::ContainerRunning as i32
    );
    let status = pod.status(&short).await;
    assert_eq!(status.state, ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 7);
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_create_rejects_unknown_image_and_sandbox() {
    let pod = pod(TestAgent::start().await.unwrap(), "ctr-pod").await;
    let mut config = pod.config("missing", &["true"]);
    config.image = Some(ImageSpec {
        image: "corral-test/not-pulled:latest".to_string(),
        ..ImageSpec::default()
    });
    let err = pod.create(config).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let mut client = pod.agent.client().await.unwrap();
    let err = client
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: "no-such-sandbox".to_string(),
            config: Some(pod.config("orphan", &["true"])),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let labels: HashMap<String, String> = HashMap::new();
    assert!(labels.is_empty());
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_reopen_container_log_after_rename() {
    let pod = pod(TestAgent::start().await.unwrap(), "ctr-pod").await;
    let id = pod
        .run(pod.config(
            "rotating",
            &[
                "sh",
                "-c",
                "echo before; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo after; sleep 1000",
            ],
        ))
        .await;
    let log = pod.agent.dir.path().join("logs/rotating.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pod.log("rotating").contains("before") {
        assert!(Instant::now() < deadline, "no output");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::rename(&log, log.with_extension("log.1")).unwrap();
    let mut client = pod.agent.client().await.unwrap();
    client
        .runtime
        .reopen_container_log(k8s_cri::v1::ReopenContainerLogRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    // Let the container print again: it waits for a file in its own rootfs.
    let rootfs_marker = pod
        .agent
        .run_dir
        .join("containers")
        .join(&id)
        .join("rootfs/tmp/go");
    std::fs::write(&rootfs_marker, b"").unwrap();
    while !pod.log("rotating").contains("after") {
        assert!(Instant::now() < deadline, "no output after reopen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !pod.log("rotating").contains("before"),
        "a new file at the same path"
    );
    let old = std::fs::read_to_string(log.with_extension("log.1")).unwrap();
    assert!(old.contains("before") && !old.contains("after"));
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_runtime_default_seccomp_is_applied_without_no_new_privs() {
    let pod = pod(TestAgent::start().await.unwrap(), "ctr-pod").await;
    let mut config = pod.config("seccomp", &["grep", "^Seccomp:", "/proc/self/status"]);
    config.linux = Some(k8s_cri::v1::LinuxContainerConfig {
        security_context: Some(k8s_cri::v1::LinuxContainerSecurityContext {
            seccomp: Some(k8s_cri::v1::SecurityProfile {
                profile_type: k8s_cri::v1::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            no_new_privs: false,
            ..k8s_cri::v1::LinuxContainerSecurityContext::default()
        }),
        ..k8s_cri::v1::LinuxContainerConfig::default()
    });
    let id = pod.run(config).await;
    let status = pod.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0, "{}", pod.log("seccomp"));
    // Only the container's own output: nothing the runtime logged leaks into it.
    assert_eq!(pod.log_lines("seccomp"), vec!["Seccomp:\t2".to_string()]);
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_restart_removes_a_container_left_without_a_record() {
    let agent = TestAgent::start().await.unwrap();
    let mut pod = pod(agent, "ctr-pod").await;
    let id = pod
        .create(pod.config("orphan", &["sleep", "1000"]))
        .await
        .unwrap();
    let rootfs = pod
        .agent
        .run_dir
        .join("containers")
        .join(&id)
        .join("rootfs");
    let monitor_mentions = |id: &str| -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(id))
                    .unwrap_or(false)
            })
            .count()
    };
    // The monitor, and the container's init waiting for its start (a fork of the monitor).
    assert!(monitor_mentions(&id) > 0, "the container's processes run");
    // An agent killed between starting the monitor and writing the record leaves exactly
    // this behind: drop the record while the agent is down.
    pod.agent.kill9().await.unwrap();
    std::fs::remove_file(
        pod.agent
            .root
            .join("state/containers")
            .join(format!("{id}.json")),
    )
    .unwrap();
    pod.agent.spawn().await.unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&rootfs.display().to_string()),
        "rootfs unmounted"
    );
    assert!(!rootfs.parent().unwrap().exists(), "bundle removed");
    assert!(
        !pod.agent.root.join("containers").join(&id).exists(),
        "writable layer removed"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while monitor_mentions(&id) > 0 {
        assert!(Instant::now() < deadline, "the monitor is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The name is free again.
    let again = pod.create(pod.config("orphan", &["true"])).await.unwrap();
    assert_ne!(again, id);
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_remove_frees_the_name_at_once_and_cleanup_finishes_before_exit() {
    let agent = TestAgent::start().await.unwrap();
    let mut pod = pod(agent, "ctr-pod").await;
    let id = pod.run(pod.config("gone", &["sleep", "1000"])).await;
    let bundle = pod.agent.run_dir.join("containers").join(&id);
    let mut client = pod.agent.client().await.unwrap();
    client
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let err = client
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let again = pod.create(pod.config("gone", &["true"])).await.unwrap();
    assert_ne!(again, id);
    // A clean shutdown waits for the background cleanup of the removed container.
    let status = pod.agent.terminate().await.unwrap();
    assert!(status.success());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&bundle.display().to_string()),
        "rootfs unmounted"
    );
    assert!(!bundle.exists(), "bundle removed");
    assert!(!pod.agent.root.join("containers").join(&id).exists());
    pod.agent.spawn().await.unwrap();
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_stop_and_remove_after_the_monitor_died_kill_the_container_and_its_cgroup() {
    let pod = pod(TestAgent::start().await.unwrap(), "ctr-pod").await;
    let id = pod.run(pod.config("orphaned", &["sleep", "1000"])).await;
    let info = pod.info(&id).await;
    let init = info["pid"].as_i64().unwrap() as i32;
    let cgroup = info["cgroupsPath"].as_str().unwrap().to_string();
    let memory_cgroup =
        std::path::Path::new("/sys/fs/cgroup/memory").join(cgroup.trim_start_matches('/'));
    assert!(memory_cgroup.is_dir());
    // The monitor dies (killed, or out of memory); the container keeps running.
    let config = pod
        .agent
        .run_dir
        .join("containers")
        .join(&id)
        .join("monitor.json")
        .display()
        .to_string();
    let monitors: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&config))
                && *pid != init
        })
        .collect();
    assert_eq!(monitors.len(), 1, "{monitors:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitors[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // A zombie is dead: the host's init reaps orphans when it gets to them.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(monitors[0]) {
        assert!(Instant::now() < deadline, "the monitor did not die");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(alive(init), "the container outlives its monitor");

    // Stopping kills it through its cgroup and records the kill in the monitor's place.
    let mut client = pod.agent.client().await.unwrap();
    client
        .runtime
        .stop_container(k8s_cri::v1::StopContainerRequest {
            container_id: id.clone(),
            timeout: 30,
        })
        .await
        .unwrap();
    let status = pod.status(&id).await;
    assert_eq!(
        (status.state, status.exit_code),
        (k8s_cri::v1::ContainerState::ContainerExited as i32, 137)
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(init) {
        assert!(
            Instant::now() < deadline,
            "the container's init survived the stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Removal still removes its cgroup.
    client
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    pod.tear_down().await; // waits for the background teardown
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(init) {
        assert!(Instant::now() < deadline, "the container's init survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!memory_cgroup.exists(), "{} left", memory_cgroup.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_a_cgroup_parent_corral_made_goes_with_the_pod() {
    // A crictl user's cgroup parent that does not exist (kubelet makes its own first).
    let top = format!("corral-test-made-{}", std::process::id());
    let parent = format!("/{top}/pod-b");
    let pod = pod_with(TestAgent::start().await.unwrap(), "made-pod", |config| {
        config.linux = Some(k8s_cri::v1::LinuxPodSandboxConfig {
            cgroup_parent: parent.clone(),
            ..k8s_cri::v1::LinuxPodSandboxConfig::default()
        });
    })
    .await;
    for name in ["one", "two"] {
        pod.run(pod.config(name, &["sleep", "1000"])).await;
    }
    let memory = std::path::Path::new("/sys/fs/cgroup/memory");
    assert!(
        memory.join(&top).join("pod-b").is_dir(),
        "the parent was made"
    );
    pod.tear_down().await;
    let left: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|hierarchy| hierarchy.path().join(&top))
        .filter(|dir| dir.exists())
        .collect();
    assert!(left.is_empty(), "left: {left:?}");
}
