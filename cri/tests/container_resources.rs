//! Node tests of container resources: limits written to the container's cgroup (v1 here),
//! UpdateContainerResources on a live container, the node's pids limit, and a memory limit
//! that kills with the `OOMKilled` reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::path::PathBuf;

use common::agent::TestAgent;
use common::pod::pod;
use k8s_cri::v1::{LinuxContainerConfig, LinuxContainerResources, UpdateContainerResourcesRequest};

const MIB: i64 = 1024 * 1024;

/// A file of the container's cgroup in the host's v1 `controller` hierarchy.
fn cgroup_file(controller: &str, cgroups_path: &str, file: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join(cgroups_path.trim_start_matches('/'))
        .join(file)
}

fn read_cgroup(controller: &str, cgroups_path: &str, file: &str) -> String {
    let path = cgroup_file(controller, cgroups_path, file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

fn with_resources(resources: LinuxContainerResources) -> Option<LinuxContainerConfig> {
    Some(LinuxContainerConfig {
        resources: Some(resources),
        ..LinuxContainerConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_limits_reach_the_cgroup_and_update_changes_them() {
    let agent = TestAgent::start_with("[runtime]\npids_limit = 64\n", &[])
        .await
        .unwrap();
    let pod = pod(agent, "res-pod").await;
    let mut config = pod.config("limited", &["sleep", "1000"]);
    config.linux = with_resources(LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: 50_000,
        cpu_shares: 512,
        memory_limit_in_bytes: 64 * MIB,
        ..LinuxContainerResources::default()
    });
    let id = pod.run(config).await;
    let info = pod.info(&id).await;
    let cgroup = info["cgroupsPath"].as_str().unwrap().to_string();
    assert!(cgroup.ends_with(&id), "{cgroup}");
    assert!(info["pid"].as_i64().unwrap() > 0, "{info}");

    assert_eq!(read_cgroup("cpu", &cgroup, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read_cgroup("cpu", &cgroup, "cpu.cfs_period_us"), "100000");
    assert_eq!(read_cgroup("cpu", &cgroup, "cpu.shares"), "512");
    assert_eq!(
        read_cgroup("memory", &cgroup, "memory.limit_in_bytes"),
        (64 * MIB).to_string()
    );
    assert_eq!(read_cgroup("pids", &cgroup, "pids.max"), "64");
    // The container's own process is in that cgroup.
    let procs = read_cgroup("pids", &cgroup, "cgroup.procs");
    assert!(
        procs
            .lines()
            .any(|p| p.parse::<i64>().ok() == info["pid"].as_i64()),
        "{procs} / {info}"
    );
    let reported = pod.status(&id).await.resources.unwrap().linux.unwrap();
    assert_eq!(reported.cpu_quota, 50_000);
    assert_eq!(reported.memory_limit_in_bytes, 64 * MIB);

    // Raise the memory limit and lower the quota on the running container.
    let mut client = pod.agent.client().await.unwrap();
    client
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                cpu_quota: 20_000,
                memory_limit_in_bytes: 128 * MIB,
                ..LinuxContainerResources::default()
            }),
            ..UpdateContainerResourcesRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(read_cgroup("cpu", &cgroup, "cpu.cfs_quota_us"), "20000");
    assert_eq!(read_cgroup("cpu", &cgroup, "cpu.cfs_period_us"), "100000");
    assert_eq!(read_cgroup("cpu", &cgroup, "cpu.shares"), "512");
    assert_eq!(
        read_cgroup("memory", &cgroup, "memory.limit_in_bytes"),
        (128 * MIB).to_string()
    );
    let reported = pod.status(&id).await.resources.unwrap().linux.unwrap();
    assert_eq!(
        (
            reported.cpu_quota,
            reported.cpu_period,
            reported.memory_limit_in_bytes
        ),
        (20_000, 100_000, 128 * MIB)
    );
    // And lower the memory limit again (swap is written before or after as the kernel needs).
    client
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 32 * MIB,
                ..LinuxContainerResources::default()
            }),
            ..UpdateContainerResourcesRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(
        read_cgroup("memory", &cgroup, "memory.limit_in_bytes"),
        (32 * MIB).to_string()
    );

    let err = client
        .runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: "no-such-container".to_string(),
            linux: Some(LinuxContainerResources::default()),
            ..UpdateContainerResourcesRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    pod.tear_down().await;
    assert!(
        !cgroup_file("cpu", &cgroup, "").exists(),
        "the container's cgroup is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pids_limit_stops_a_fork_bomb() {
    let agent = TestAgent::start_with("[runtime]\npids_limit = 16\n", &[])
        .await
        .unwrap();
    let pod = pod(agent, "pids-pod").await;
    pod.run(pod.config(
        "forks",
        &[
            "sh",
            "-c",
            "( for i in $(seq 40); do sleep 30 & done ) 2>/dev/null; \
                 set -- /proc/[0-9]*; echo running=$#",
        ],
    ))
    .await;
    pod.wait_log("forks", "running=").await;
    let line = pod
        .log_lines("forks")
        .into_iter()
        .find(|l| l.starts_with("running="))
        .unwrap();
    let running: usize = line.trim_start_matches("running=").parse().unwrap();
    assert!(
        (8..=16).contains(&running),
        "{running} processes under pids.max 16"
    );
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_memory_limit_kills_with_oomkilled_reason() {
    let pod = pod(TestAgent::start().await.unwrap(), "oom-pod").await;
    let mut config = pod.config(
        "hog",
        &[
            "sh",
            "-c",
            "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived ${#x}",
        ],
    );
    config.linux = with_resources(LinuxContainerResources {
        memory_limit_in_bytes: 32 * MIB,
        ..LinuxContainerResources::default()
    });
    let id = pod.run(config).await;
    let status = pod.wait_exited(&id).await;
    assert_eq!(status.reason, "OOMKilled", "{status:?} {}", pod.log("hog"));
    assert_eq!(status.exit_code, 137);
    assert!(!pod.log("hog").contains("survived"));

    // Without the limit the same container completes (so the test above can fail).
    let id = pod
        .run(pod.config(
            "small",
            &[
                "sh",
                "-c",
                "x=$(head -c 1000000 /dev/zero | tr '\\0' a); echo ${#x}",
            ],
        ))
        .await;
    let status = pod.wait_exited(&id).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert_eq!(pod.log_lines("small"), vec!["1000000".to_string()]);
    pod.tear_down().await;
}
