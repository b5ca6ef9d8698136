//! Pods as kubelet asks for them (the sandbox and container requests, with what kubelet
//! prepares on the node first), bringing them down again, and what a runtime left after.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use corral::client::CriClient;
use corral_runtime::spec::{DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS};
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, DnsConfig, ImageSpec, KeyValue, LinuxContainerConfig,
    LinuxContainerResources, LinuxContainerSecurityContext, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, RunPodSandboxRequest, SecurityProfile, StopContainerRequest,
    security_profile,
};

use super::cri::{POD_NAMESPACE, pod_config, remove_pod, stop_pod, timeout};
use super::meter::{BenchCgroups, executable_name};
use super::series::Target;
use crate::common::containerd::PAUSE_SCRIPT;

/// The container's name in its pod.
pub const CONTAINER: &str = "app";
/// StopContainer's timeout in seconds (the container exits on SIGTERM).
pub const STOP_TIMEOUT_S: i64 = 10;
/// How long helpers and containers get to exit after the last RemovePodSandbox.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// A pod of the run: its sandbox config and, once made, its sandbox and container IDs.
pub struct Pod {
    pub sandbox: PodSandboxConfig,
    pub container: ContainerConfig,
    pub sandbox_id: Option<String>,
    pub container_id: Option<String>,
}

impl Pod {
    /// Pod `i` of `target` with one container running `image`, not made yet.
    pub fn new(i: usize, target: &Target<'_>, cgroups: &BenchCgroups, image: &str) -> Result<Pod> {
        let sandbox = sandbox_config(i, target, cgroups)?;
        let container = container_config(&sandbox, image, target.dir)?;
        Ok(Pod {
            sandbox,
            container,
            sandbox_id: None,
            container_id: None,
        })
    }

    /// RunPodSandbox of the pod.
    pub fn run_request(&self) -> RunPodSandboxRequest {
        RunPodSandboxRequest {
            config: Some(self.sandbox.clone()),
            runtime_handler: String::new(),
        }
    }

    /// CreateContainer of the pod's container in sandbox `sandbox_id`.
    pub fn create_request(&self, sandbox_id: &str) -> CreateContainerRequest {
        CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(self.container.clone()),
            sandbox_config: Some(self.sandbox.clone()),
        }
    }
}

/// StopContainer with [`STOP_TIMEOUT_S`].
pub fn stop_request(container_id: &str) -> StopContainerRequest {
    StopContainerRequest {
        container_id: container_id.to_owned(),
        timeout: STOP_TIMEOUT_S,
    }
}

/// Stops and removes the sandboxes of `pods` that were made, ignoring errors: the cleanup
/// after a failed run.
pub async fn remove_pods(client: &mut CriClient, pods: &[Pod]) {
    for pod in pods {
        if let Some(id) = &pod.sandbox_id {
            let _ = stop_pod(client, id).await;
            let _ = remove_pod(client, id).await;
        }
    }
}

/// Pod `i` as kubelet asks for it: the shared kubelet-like request plus the annotations
/// and the cluster DNS config kubelet adds.
pub fn sandbox_config(
    i: usize,
    target: &Target<'_>,
    cgroups: &BenchCgroups,
) -> Result<PodSandboxConfig> {
    let mut config = pod_config(
        i,
        target.network,
        target.dir,
        NamespaceMode::Container,
        cgroups,
    )?;
    config.annotations = HashMap::from([
        (
            "kubernetes.io/config.seen".to_owned(),
            "2024-01-01T00:00:00.000000000Z".to_owned(),
        ),
        ("kubernetes.io/config.source".to_owned(), "api".to_owned()),
    ]);
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".to_owned()],
        searches: vec![
            format!("{POD_NAMESPACE}.svc.cluster.local"),
            "svc.cluster.local".to_owned(),
            "cluster.local".to_owned(),
        ],
        options: vec!["ndots:5".to_owned()],
    });
    Ok(config)
}

/// The pod's container as kubelet asks for it, with what kubelet prepares first: the
/// container's log dir, and in a kubelet-like pod dir the managed `/etc/hosts`, the
/// termination-log file and a service-account token volume.
pub fn container_config(
    sandbox: &PodSandboxConfig,
    image: &str,
    dir: &Path,
) -> Result<ContainerConfig> {
    let metadata = sandbox.metadata.clone().unwrap_or_default();
    std::fs::create_dir_all(Path::new(&sandbox.log_directory).join(CONTAINER))?;
    let pod_dir = dir.join("kubelet/pods").join(&metadata.uid);
    let hosts = pod_dir.join("etc-hosts");
    let termination_log = pod_dir.join("containers").join(CONTAINER).join("0a1b2c3d");
    let token = pod_dir.join("volumes/kubernetes.io~projected/kube-api-access-bench");
    std::fs::create_dir_all(termination_log.parent().unwrap_or(&pod_dir))?;
    std::fs::create_dir_all(&token)?;
    std::fs::write(
        &hosts,
        format!(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost \
             ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n# pod {}\n",
            metadata.name
        ),
    )?;
    std::fs::write(&termination_log, "")?;
    for (file, content) in [
        ("token", "bench-token"),
        ("ca.crt", "bench-ca"),
        ("namespace", POD_NAMESPACE),
    ] {
        std::fs::write(token.join(file), content)?;
    }
    let bind = |container_path: &str, host_path: &Path, readonly: bool| Mount {
        container_path: container_path.to_owned(),
        host_path: host_path.display().to_string(),
        readonly,
        ..Mount::default()
    };
    let service = "10.96.0.1";
    let envs = [
        ("KUBERNETES_SERVICE_HOST", service.to_owned()),
        ("KUBERNETES_SERVICE_PORT", "443".to_owned()),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443".to_owned()),
        ("KUBERNETES_PORT", format!("tcp://{service}:443")),
        ("KUBERNETES_PORT_443_TCP", format!("tcp://{service}:443")),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp".to_owned()),
        ("KUBERNETES_PORT_443_TCP_PORT", "443".to_owned()),
        ("KUBERNETES_PORT_443_TCP_ADDR", service.to_owned()),
    ];
    let pod_label = |key: &str| {
        (
            key.to_owned(),
            sandbox.labels.get(key).cloned().unwrap_or_default(),
        )
    };
    Ok(ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: CONTAINER.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..ImageSpec::default()
        }),
        command: vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            PAUSE_SCRIPT.to_owned(),
        ],
        envs: envs
            .into_iter()
            .map(|(key, value)| KeyValue {
                key: key.to_owned(),
                value,
            })
            .collect(),
        mounts: vec![
            bind(
                "/var/run/secrets/kubernetes.io/serviceaccount",
                &token,
                true,
            ),
            bind("/etc/hosts", &hosts, false),
            bind("/dev/termination-log", &termination_log, false),
        ],
        labels: HashMap::from([
            (
                "io.kubernetes.container.name".to_owned(),
                CONTAINER.to_owned(),
            ),
            pod_label("io.kubernetes.pod.name"),
            pod_label("io.kubernetes.pod.namespace"),
            pod_label("io.kubernetes.pod.uid"),
        ]),
        annotations: HashMap::from([
            (
                "io.kubernetes.container.hash".to_owned(),
                "5b1a7c6e".to_owned(),
            ),
            (
                "io.kubernetes.container.restartCount".to_owned(),
                "0".to_owned(),
            ),
            (
                "io.kubernetes.container.terminationMessagePath".to_owned(),
                "/dev/termination-log".to_owned(),
            ),
            (
                "io.kubernetes.container.terminationMessagePolicy".to_owned(),
                "File".to_owned(),
            ),
            (
                "io.kubernetes.pod.terminationGracePeriod".to_owned(),
                "30".to_owned(),
            ),
        ]),
        log_path: format!("{CONTAINER}/0.log"),
        linux: Some(LinuxContainerConfig {
            // Burstable: requests cpu 100m and memory 64 MiB, limits cpu 500m and memory
            // 128 MiB; the OOM score is kubelet's for that request on a 24 GiB node.
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 102,
                memory_limit_in_bytes: 128 << 20,
                oom_score_adj: 998,
                ..LinuxContainerResources::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..NamespaceOption::default()
                }),
                // kubelet's defaults for the default procMount: containerd's lists.
                masked_paths: DEFAULT_MASKED_PATHS.map(str::to_owned).to_vec(),
                readonly_paths: DEFAULT_READONLY_PATHS.map(str::to_owned).to_vec(),
                seccomp: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::Unconfined as i32,
                    ..SecurityProfile::default()
                }),
                ..LinuxContainerSecurityContext::default()
            }),
        }),
        ..ContainerConfig::default()
    })
}

pub async fn container_status(client: &mut CriClient, id: &str) -> Result<ContainerStatus> {
    let request = ContainerStatusRequest {
        container_id: id.to_owned(),
        verbose: false,
    };
    timeout(client.runtime.container_status(request))
        .await
        .with_context(|| format!("ContainerStatus {id}"))?
        .status
        .with_context(|| format!("ContainerStatus {id}: no status"))
}

/// Waits up to [`EXIT_GRACE`] for the helpers and containers of `target` to go, then fails
/// when anything is left: a lease, a veth, a process besides the daemon (helpers are
/// `helper`), a container cgroup.
pub async fn ensure_nothing_left(
    target: &Target<'_>,
    cgroups: &BenchCgroups,
    name: &str,
    helper: &str,
) -> Result<()> {
    let deadline = Instant::now() + EXIT_GRACE;
    let mut left = leftovers(target, helper);
    while !left.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = leftovers(target, helper);
    }
    ensure!(
        left.is_empty(),
        "{name}: left after removal: {}",
        left.join("; ")
    );
    let cgroups_left = cgroups.container_cgroups_left();
    ensure!(
        cgroups_left.is_empty(),
        "{name}: container cgroups left after removal: {}",
        cgroups_left.join(", ")
    );
    Ok(())
}

/// What a runtime left: IP leases, veths on its bridge, and processes besides its daemon.
pub fn leftovers(target: &Target<'_>, helper: &str) -> Vec<String> {
    let mut left = Vec::new();
    let leases = target.network.leases();
    if !leases.is_empty() {
        left.push(format!("IP leases {leases:?}"));
    }
    let veths = target.network.attached_veths();
    if veths != 0 {
        left.push(format!("{veths} veths on {}", target.network.bridge));
    }
    let processes: Vec<String> = target
        .meter
        .processes()
        .into_iter()
        .filter(|&pid| Some(pid) != target.daemon)
        .map(|pid| {
            let name = executable_name(pid).unwrap_or_else(|| "?".to_owned());
            format!("{pid} ({name})")
        })
        .collect();
    if !processes.is_empty() {
        left.push(format!(
            "processes {} (helpers are {helper})",
            processes.join(", ")
        ));
    }
    left
}
