//! A container as recorded on disk, and its CRI views.
//!
//! ```text
//!   CreateContainer ──> Created ──StartContainer──> Running ──exit / StopContainer──> Exited
//!                          │                                                          │
//!                          └───────────────RemoveContainer (kills if needed)──────────┴──> (gone)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use k8s_cri::v1::{
    Container, ContainerMetadata, ContainerResources, ContainerState, ContainerStatus,
    ContainerUser, ImageSpec, LinuxContainerResources, LinuxContainerUser, Mount,
};
use serde::{Deserialize, Serialize};

/// Container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerPhase {
    Created,
    Running,
    Exited,
}

/// Everything Corral keeps about a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the request named it.
    pub image: String,
    /// The image ID (config digest).
    pub image_id: String,
    /// A repo digest of the image, else its ID.
    pub image_ref: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub phase: ContainerPhase,
    /// Unix nanoseconds; 0 when not yet.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The CRI log file (the sandbox's log directory joined with the container's log path).
    pub log_path: String,
    /// The image's stop signal (empty: SIGTERM).
    pub stop_signal: String,
    /// Layers the rootfs uses (chain IDs), held while the container exists.
    pub chain_ids: Vec<String>,
    /// The container's writable layer and volumes: `<root>/containers/<id>`.
    pub layer_dir: PathBuf,
    /// The OCI bundle, monitor socket and rootfs mount: `<run_dir>/containers/<id>`.
    pub bundle: PathBuf,
    pub exit_file: PathBuf,
    /// The monitor's socket (short: socket paths are limited to 107 bytes).
    pub socket: PathBuf,
    /// The mounts the request asked for (reported in the status).
    pub mounts: Vec<Mount>,
    /// `linux.cgroupsPath` of the container (under its pod's cgroup parent).
    #[serde(default)]
    pub cgroups_path: String,
    /// The resources as requested at create and changed by UpdateContainerResources.
    #[serde(default)]
    pub resources: Option<LinuxContainerResources>,
    /// The user the container's process runs as (resolved at create).
    #[serde(default)]
    pub user: Option<LinuxContainerUser>,
    /// The container init's pid on the host (0 before the monitor reported it).
    #[serde(default)]
    pub pid: i32,
}

impl ContainerRecord {
    /// The name kubelet reserves: one container per name, sandbox and attempt.
    pub fn name_key(&self) -> String {
        name_key(&self.name, &self.sandbox_id, self.attempt)
    }

    /// The monitor's socket.
    pub fn socket(&self) -> PathBuf {
        self.socket.clone()
    }

    /// The merged root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    fn metadata(&self) -> ContainerMetadata {
        ContainerMetadata {
            name: self.name.clone(),
            attempt: self.attempt,
        }
    }

    fn cri_state(&self) -> i32 {
        match self.phase {
            ContainerPhase::Created => ContainerState::ContainerCreated as i32,
            ContainerPhase::Running => ContainerState::ContainerRunning as i32,
            ContainerPhase::Exited => ContainerState::ContainerExited as i32,
        }
    }

    fn image_spec(&self) -> Option<ImageSpec> {
        Some(ImageSpec {
            image: self.image.clone(),
            ..ImageSpec::default()
        })
    }

    /// The ListContainers item.
    pub fn to_cri(&self) -> Container {
        Container {
            id: self.id.clone(),
            pod_sandbox_id: self.sandbox_id.clone(),
            metadata: Some(self.metadata()),
            image: self.image_spec(),
            image_ref: self.image_ref.clone(),
            state: self.cri_state(),
            created_at: self.created_at,
            labels: to_map(&self.labels),
            annotations: to_map(&self.annotations),
            image_id: self.image_id.clone(),
        }
    }

    /// The ContainerStatus answer.
    pub fn to_cri_status(&self) -> ContainerStatus {
        ContainerStatus {
            id: self.id.clone(),
            metadata: Some(self.metadata()),
            state: self.cri_state(),
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: self.image_spec(),
            image_ref: self.image_ref.clone(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            labels: to_map(&self.labels),
            annotations: to_map(&self.annotations),
            mounts: self.mounts.clone(),
            log_path: self.log_path.clone(),
            resources: self.resources.clone().map(|linux| ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
            image_id: self.image_id.clone(),
            user: self
                .user
                .clone()
                .map(|linux| ContainerUser { linux: Some(linux) }),
        }
    }
}

/// `name_sandbox_attempt`.
pub fn name_key(name: &str, sandbox_id: &str, attempt: u32) -> String {
    format!("{name}_{sandbox_id}_{attempt}")
}

/// The CRI reason for an exit.
pub fn exit_reason(exit_code: i32, oom_killed: bool) -> &'static str {
    if oom_killed {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    }
}

fn to_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_exit_reason() {
        assert_eq!(exit_reason(0, false), "Completed");
        assert_eq!(exit_reason(137, true), "OOMKilled");
        assert_eq!(exit_reason(3, false), "Error");
    }
}
