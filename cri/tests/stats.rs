//! Node tests of the stats calls: CPU and memory of real busybox containers from their
//! cgroups, pod stats that add up their containers, and network counters of a pod's
//! interface that grow with traffic between two pods.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::agent::TestAgent;
use common::pod::pod_with;
use corral::client::CriClient;
use k8s_cri::v1::{
    ContainerStats, ContainerStatsFilter, ContainerStatsRequest, LinuxPodSandboxConfig,
    ListContainerStatsRequest, ListPodSandboxStatsRequest, PodSandboxMetadata,
    PodSandboxStatsFilter, PodSandboxStatsRequest, PodSandboxStatusRequest, RunPodSandboxRequest,
};

/// A pod cgroup parent in every v1 hierarchy (and the unified one), as kubelet's cgroupfs
/// driver makes it.
struct PodCgroup {
    dirs: Vec<std::path::PathBuf>,
}

impl PodCgroup {
    fn create(parent: &str) -> PodCgroup {
        let mut dirs = Vec::new();
        for entry in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let hierarchy = entry.path();
            let is_mount = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(hierarchy.to_str().unwrap()));
            if !is_mount || entry.file_type().unwrap().is_symlink() {
                continue;
            }
            let top = hierarchy.join(parent.trim_start_matches('/').split('/').next().unwrap());
            let dir = hierarchy.join(parent.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).unwrap();
            dirs.push(dir);
            dirs.push(top);
        }
        PodCgroup { dirs }
    }

    fn remove(self) {
        for dir in &self.dirs {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while dir.exists() && std::fs::remove_dir(dir).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{} stays busy",
                    dir.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn cpu_ns(stats: &ContainerStats) -> u64 {
    stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap()
}

fn working_set(stats: &ContainerStats) -> u64 {
    stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_container_and_pod_stats_from_cgroups() {
    let parent = format!("/corral-test-stats-{}/pod-a", std::process::id());
    // kubelet makes the pod's cgroup before the pod and removes it after: so does the test.
    let pod_cgroup = PodCgroup::create(&parent);
    let pod = pod_with(TestAgent::start().await.unwrap(), "stats-pod", |config| {
        config.linux = Some(LinuxPodSandboxConfig {
            cgroup_parent: parent.clone(),
            ..LinuxPodSandboxConfig::default()
        });
    })
    .await;
    let mut busy = pod.config("busy", &["sh", "-c", "while :; do :; done"]);
    busy.labels = HashMap::from([("role".to_string(), "busy".to_string())]);
    let busy = pod.run(busy).await;
    let hog = pod
        .run(pod.config(
            "hog",
            &[
                "sh",
                "-c",
                "head -c 30000000 /dev/zero > /dev/shm/hog; echo ready; sleep 1000",
            ],
        ))
        .await;
    pod.wait_log("hog", "ready").await;
    let mut runtime = pod.agent.client().await.unwrap().runtime;

    let first = runtime
        .container_stats(ContainerStatsRequest {
            container_id: busy.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(first.attributes.as_ref().unwrap().id, busy);
    assert!(first.cpu.as_ref().unwrap().timestamp > 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = runtime
        .container_stats(ContainerStatsRequest {
            container_id: busy.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let burnt = cpu_ns(&second) - cpu_ns(&first);
    assert!(
        burnt > 300_000_000,
        "a busy loop used only {burnt} ns in 1.5 s"
    );
    let nano_cores = second
        .cpu
        .as_ref()
        .unwrap()
        .usage_nano_cores
        .as_ref()
        .unwrap()
        .value;
    assert!(nano_cores > 200_000_000, "usage_nano_cores {nano_cores}");
    let layer = second.writable_layer.as_ref().unwrap();
    assert!(
        layer
            .fs_id
            .as_ref()
            .unwrap()
            .mountpoint
            .ends_with("containers")
    );

    // The list call with filters; the memory hog's working set holds the 30 MB of tmpfs
    // (shared memory) it wrote.
    let all = runtime
        .list_container_stats(ListContainerStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(all.len(), 2);
    let hog_stats = all
        .iter()
        .find(|s| s.attributes.as_ref().unwrap().id == hog)
        .unwrap();
    assert!(
        working_set(hog_stats) > 30_000_000,
        "working set {}: {hog_stats:?}",
        working_set(hog_stats)
    );
    let by_label = runtime
        .list_container_stats(ListContainerStatsRequest {
            filter: Some(ContainerStatsFilter {
                label_selector: HashMap::from([("role".to_string(), "busy".to_string())]),
                ..ContainerStatsFilter::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(by_label.len(), 1);
    assert_eq!(by_label[0].attributes.as_ref().unwrap().id, busy);

    // The pod's cgroup holds both containers: its numbers are at least their sum.
    let pod_stats = runtime
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod.sandbox_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    let linux = pod_stats.linux.unwrap();
    assert_eq!(linux.containers.len(), 2);
    let sum_ws: u64 = linux.containers.iter().map(working_set).sum();
    let pod_ws = linux
        .memory
        .as_ref()
        .unwrap()
        .working_set_bytes
        .as_ref()
        .unwrap()
        .value;
    assert!(pod_ws >= sum_ws, "pod {pod_ws} < containers {sum_ws}");
    let sum_cpu: u64 = linux.containers.iter().map(cpu_ns).sum();
    let pod_cpu = linux
        .cpu
        .as_ref()
        .unwrap()
        .usage_core_nano_seconds
        .as_ref()
        .unwrap()
        .value;
    assert!(pod_cpu >= sum_cpu, "pod {pod_cpu} < containers {sum_cpu}");
    let processes = linux.process.unwrap().process_count.unwrap().value;
    assert!(processes >= 2, "{processes} processes");
    pod.tear_down().await;
    pod_cgroup.remove();
}

async fn pod_stats(client: &mut CriClient, id: &str) -> Vec<k8s_cri::v1::PodSandboxStats> {
    client
        .runtime
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest {
            filter: Some(PodSandboxStatsFilter {
                id: id.to_string(),
                ..PodSandboxStatsFilter::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_network_counters_grow_with_traffic_between_pods() {
    let pod = pod_with(TestAgent::start().await.unwrap(), "net-a", |_| {}).await;
    let mut runtime = pod.agent.client().await.unwrap().runtime;
    let mut other = pod.sandbox_config.clone();
    other.metadata = Some(PodSandboxMetadata {
        name: "net-b".to_string(),
        uid: "uid-net-b".to_string(),
        namespace: "corral-test".to_string(),
        attempt: 0,
    });
    other.hostname = "net-b".to_string();
    let other_id = runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(other),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let other_ip = runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: other_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
        .network
        .unwrap()
        .ip;

    let eth0 = |stats: &k8s_cri::v1::PodSandboxStats| {
        let network = stats.linux.as_ref().unwrap().network.as_ref().unwrap();
        let eth0 = network.default_interface.as_ref().unwrap();
        assert_eq!(eth0.name, "eth0");
        (
            eth0.rx_bytes.as_ref().unwrap().value,
            eth0.tx_bytes.as_ref().unwrap().value,
        )
    };
    let mut client = pod.agent.client().await.unwrap();
    let before = pod_stats(&mut client, &pod.sandbox_id).await;
    assert_eq!(before.len(), 1, "the ID filter picks one pod");
    let (rx_before, tx_before) = eth0(&before[0]);

    let ping = pod
        .run(pod.config(
            "ping",
            &["ping", "-c", "5", "-i", "0.2", "-s", "1000", &other_ip],
        ))
        .await;
    let status = pod.wait_exited(&ping).await;
    assert_eq!(status.exit_code, 0, "{}", pod.log("ping"));
    let after = pod_stats(&mut client, &pod.sandbox_id).await;
    let (rx_after, tx_after) = eth0(&after[0]);
    assert!(
        tx_after >= tx_before + 5 * 1000,
        "tx {tx_before} -> {tx_after}"
    );
    assert!(
        rx_after >= rx_before + 5 * 1000,
        "rx {rx_before} -> {rx_after}"
    );

    let both = runtime
        .list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .stats;
    assert_eq!(both.len(), 2);
    runtime
        .stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest {
            pod_sandbox_id: other_id.clone(),
        })
        .await
        .unwrap();
    runtime
        .remove_pod_sandbox(k8s_cri::v1::RemovePodSandboxRequest {
            pod_sandbox_id: other_id,
        })
        .await
        .unwrap();
    pod.tear_down().await;
}
