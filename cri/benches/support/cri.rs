//! CRI requests as the benchmarks send them: kubelet-like pods on a CNI network of the
//! series' own, and the calls they time.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use corral::client::CriClient;
use k8s_cri::v1::{
    ImageSpec, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PullImageRequest, RemovePodSandboxRequest,
    StopPodSandboxRequest,
};

use super::meter::BenchCgroups;
use crate::common::network::TestNetwork;

/// The CNI network name (the IPAM dir's subdirectory, as [`TestNetwork::leases`] reads it).
pub const NETWORK_NAME: &str = "corral-test-net";
/// The Kubernetes namespace of the benchmarks' pods.
pub const POD_NAMESPACE: &str = "corral-bench";
/// How long one CRI request may take before a benchmark gives up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A CRI call with [`REQUEST_TIMEOUT`].
pub async fn timeout<T>(
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    let response = tokio::time::timeout(REQUEST_TIMEOUT, call)
        .await
        .context("timed out")??;
    Ok(response.into_inner())
}

/// Milliseconds since `started`.
pub fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// Pulls `image` through CRI PullImage (before any clock starts).
pub async fn pull(client: &mut CriClient, image: &str) -> Result<()> {
    let request = PullImageRequest {
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..ImageSpec::default()
        }),
        ..PullImageRequest::default()
    };
    timeout(client.image.pull_image(request))
        .await
        .with_context(|| format!("pulling {image}"))?;
    Ok(())
}

pub async fn stop_pod(client: &mut CriClient, id: &str) -> Result<()> {
    let request = StopPodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    timeout(client.runtime.stop_pod_sandbox(request))
        .await
        .with_context(|| format!("StopPodSandbox {id}"))?;
    Ok(())
}

pub async fn remove_pod(client: &mut CriClient, id: &str) -> Result<()> {
    let request = RemovePodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    timeout(client.runtime.remove_pod_sandbox(request))
        .await
        .with_context(|| format!("RemovePodSandbox {id}"))?;
    Ok(())
}

pub fn pod_name(config: &PodSandboxConfig) -> &str {
    config.metadata.as_ref().map_or("", |m| m.name.as_str())
}

/// Pod `i` as kubelet would ask for it; its log directory is created here, as kubelet does.
pub fn pod_config(
    i: usize,
    network: &TestNetwork,
    dir: &Path,
    pid: NamespaceMode,
    cgroups: &BenchCgroups,
) -> Result<PodSandboxConfig> {
    let name = format!("bench-{i}");
    let uid = format!("{}-{i:04}-uid", network.bridge);
    let log_directory = dir
        .join("pod-logs")
        .join(format!("{POD_NAMESPACE}_{name}_{uid}"));
    std::fs::create_dir_all(&log_directory)?;
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: POD_NAMESPACE.to_owned(),
            attempt: 0,
        }),
        hostname: name.clone(),
        log_directory: log_directory.display().to_string(),
        labels: HashMap::from([
            ("app".to_owned(), "bench".to_owned()),
            ("io.kubernetes.pod.name".to_owned(), name),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                POD_NAMESPACE.to_owned(),
            ),
            ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroups.pod_parent(&uid),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: pid as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..NamespaceOption::default()
                }),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    })
}

/// Writes the conflist (bridge with host-local IPAM, then portmap) for network `index` into
/// `conf_dir`, with its IPAM data under `dir`; the bridge is deleted when the returned
/// network drops.
pub fn write_network(conf_dir: &Path, dir: &Path, index: u32) -> Result<TestNetwork> {
    let network = TestNetwork {
        bridge: format!("corral-test-{index}"),
        prefix: format!("10.231.{index}"),
        ipam_dir: dir.join("ipam"),
        host_port: 0,
    };
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": format!("{}.0/24", network.prefix) }]],
                    "routes": [{ "dst": format!("{}.0/24", network.prefix) }],
                    "dataDir": network.ipam_dir,
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    std::fs::write(
        conf_dir.join("10-corral-bench.conflist"),
        serde_json::to_vec_pretty(&conflist)?,
    )?;
    Ok(network)
}
