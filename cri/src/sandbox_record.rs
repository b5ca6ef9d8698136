//! A pod sandbox as recorded on disk, and its CRI views.
//!
//! ```text
//!   RunPodSandbox ──> Ready ──StopPodSandbox──> NotReady ──RemovePodSandbox──> (gone)
//!                       │                          ^
//!                       └── namespaces vanished ───┘  (found at recovery, e.g. after a reboot)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use k8s_cri::v1::{
    LinuxPodSandboxStatus, Namespace, NamespaceOption, PodIp, PodSandbox, PodSandboxMetadata,
    PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus,
};
use serde::{Deserialize, Serialize};

/// Sandbox states (the CRI's two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

/// A host port mapping of the pod, as given to the CNI portmap plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMappingRecord {
    pub protocol: String,
    pub container_port: u16,
    pub host_port: u16,
    pub host_ip: String,
}

/// Everything Corral keeps about a pod sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub state: SandboxState,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub runtime_handler: String,
    pub hostname: String,
    pub log_directory: String,
    pub cgroup_parent: String,
    /// The part of `cgroup_parent` that did not exist at RunPodSandbox (relative to the
    /// hierarchies' roots): made by the first container, removed with the pod.
    #[serde(default)]
    pub owned_cgroup: Option<PathBuf>,
    /// CRI NamespaceMode values.
    pub network_mode: i32,
    pub pid_mode: i32,
    pub ipc_mode: i32,
    /// Pinned namespaces (None: the host's).
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    /// The pod's shared PID namespace (pid mode POD): its pin and its init's host PID.
    #[serde(default)]
    pub pidns: Option<PathBuf>,
    #[serde(default)]
    pub pid_init: Option<u32>,
    /// The sandbox directory (hostname, hosts, resolv.conf, shm).
    pub dir: PathBuf,
    pub shm: Option<PathBuf>,
    pub port_mappings: Vec<PortMappingRecord>,
    /// The CNI network the pod was attached to (None for host network).
    pub network_name: Option<String>,
    /// Pod IPs, IPv4 first.
    pub ips: Vec<String>,
}

impl SandboxRecord {
    /// The name kubelet reserves: one sandbox per name, namespace, uid and attempt.
    pub fn name_key(&self) -> String {
        name_key(&self.name, &self.namespace, &self.uid, self.attempt)
    }

    fn metadata(&self) -> PodSandboxMetadata {
        PodSandboxMetadata {
            name: self.name.clone(),
            uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            attempt: self.attempt,
        }
    }

    fn cri_state(&self) -> i32 {
        match self.state {
            SandboxState::Ready => PodSandboxState::SandboxReady as i32,
            SandboxState::NotReady => PodSandboxState::SandboxNotready as i32,
        }
    }

    /// The ListPodSandbox item.
    pub fn to_cri(&self) -> PodSandbox {
        PodSandbox {
            id: self.id.clone(),
            metadata: Some(self.metadata()),
            state: self.cri_state(),
            created_at: self.created_at,
            labels: to_map(&self.labels),
            annotations: to_map(&self.annotations),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    /// The PodSandboxStatus answer.
    pub fn to_cri_status(&self) -> PodSandboxStatus {
        let network = self.ips.first().map(|ip| PodSandboxNetworkStatus {
            ip: ip.clone(),
            additional_ips: self.ips[1..]
                .iter()
                .map(|ip| PodIp { ip: ip.clone() })
                .collect(),
        });
        PodSandboxStatus {
            id: self.id.clone(),
            metadata: Some(self.metadata()),
            state: self.cri_state(),
            created_at: self.created_at,
            network: Some(network.unwrap_or_default()),
            linux: Some(LinuxPodSandboxStatus {
                namespaces: Some(Namespace {
                    options: Some(NamespaceOption {
                        network: self.network_mode,
                        pid: self.pid_mode,
                        ipc: self.ipc_mode,
                        target_id: String::new(),
                        userns_options: None,
                    }),
                }),
            }),
            labels: to_map(&self.labels),
            annotations: to_map(&self.annotations),
            runtime_handler: self.runtime_handler.clone(),
        }
    }
}

/// `name_namespace_uid_attempt`.
pub fn name_key(name: &str, namespace: &str, uid: &str, attempt: u32) -> String {
    format!("{name}_{namespace}_{uid}_{attempt}")
}

fn to_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}
