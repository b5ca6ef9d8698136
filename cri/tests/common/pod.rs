//! A pod with a pulled busybox image, and the container helpers the node tests share.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on failure

use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ImageSpec, ListContainersRequest, PodSandboxConfig, PodSandboxMetadata,
    PullImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};

use super::agent::TestAgent;
use super::images::push_test_images;
use super::network::TestNetwork;
use super::registry::Registry;

pub struct Pod {
    pub agent: TestAgent,
    _registry: Registry,
    _network: TestNetwork,
    pub sandbox_id: String,
    pub sandbox_config: PodSandboxConfig,
    pub image: String,
}

pub async fn pod(agent: TestAgent, name: &str) -> Pod {
    pod_with(agent, name, |_| {}).await
}

/// A pod whose sandbox config `edit` adjusts (namespace modes, cgroup parent, ...).
pub async fn pod_with(
    agent: TestAgent,
    name: &str,
    edit: impl FnOnce(&mut PodSandboxConfig),
) -> Pod {
    let registry = Registry::start().unwrap();
    push_test_images(registry.addr()).await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let image = format!("{}/corral-test/busybox:latest", registry.addr());
    let mut client = agent.client().await.unwrap();
    client
        .image
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: image.clone(),
                ..ImageSpec::default()
            }),
            ..PullImageRequest::default()
        })
        .await
        .unwrap();
    let mut sandbox_config = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "corral-test".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: agent.dir.path().join("logs").display().to_string(),
        ..PodSandboxConfig::default()
    };
    edit(&mut sandbox_config);
    let sandbox_id = client
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    Pod {
        agent,
        _registry: registry,
        _network: network,
        sandbox_id,
        sandbox_config,
        image,
    }
}

impl Pod {
    pub fn config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..ImageSpec::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..ContainerConfig::default()
        }
    }

    pub async fn create(&self, config: ContainerConfig) -> Result<String, tonic::Status> {
        let mut client = self.agent.client().await.unwrap();
        Ok(client
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: self.sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(self.sandbox_config.clone()),
            })
            .await?
            .into_inner()
            .container_id)
    }

    pub async fn start(&self, id: &str) {
        let mut client = self.agent.client().await.unwrap();
        client
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .unwrap();
    }

    pub async fn run(&self, config: ContainerConfig) -> String {
        let id = self.create(config).await.unwrap();
        self.start(&id).await;
        id
    }

    pub async fn status(&self, id: &str) -> ContainerStatus {
        let mut client = self.agent.client().await.unwrap();
        client
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
    }

    /// The `info` JSON of a verbose ContainerStatus (pid, cgroupsPath, bundle, ...).
    pub async fn info(&self, id: &str) -> serde_json::Value {
        let mut client = self.agent.client().await.unwrap();
        let response = client
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        serde_json::from_str(&response.info["info"]).unwrap()
    }

    /// Waits until the container's log has a line containing `needle`.
    pub async fn wait_log(&self, name: &str, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log(name).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} never reached the log of {name}: {}",
                self.log(name)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_exited(&self, id: &str) -> ContainerStatus {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.status(id).await;
            if status.state == ContainerState::ContainerExited as i32 {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "container never exited: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(
            self.agent
                .dir
                .path()
                .join("logs")
                .join(format!("{name}.log")),
        )
        .unwrap_or_default()
    }

    /// The log's content lines without the timestamp, stream and tag.
    pub fn log_lines(&self, name: &str) -> Vec<String> {
        self.log(name)
            .lines()
            .map(|line| line.splitn(4, ' ').nth(3).unwrap_or_default().to_string())
            .collect()
    }

    pub async fn tear_down(&self) {
        let mut client = self.agent.client().await.unwrap();
        let id = self.sandbox_id.clone();
        client
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
        client
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
        let left = client
            .runtime
            .list_containers(ListContainersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(left.is_empty(), "{left:?}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.agent.dir.path().display().to_string();
        assert!(!mounts.contains(&root), "mounts left under {root}");
    }
}
