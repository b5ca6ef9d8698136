//! The agent's shared state: config, records, and what the handlers need.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::containers::{ContainerManager, ContainerPaths};
use crate::error::Error;
use crate::images::ImageCatalog;
use crate::pod_network::PodNetwork;
use crate::sandboxes::{SandboxManager, SandboxPaths};
use crate::state::{StateError, StateLock, Table};

/// The id of the single node-wide record.
pub const NODE_RECORD_ID: &str = "runtime-config";

/// What kubelet told us about the node through `UpdateRuntimeConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The pod CIDRs (one per IP family) the CNI layer allocates pod addresses from.
    pub pod_cidrs: Vec<String>,
}

/// Everything the CRI handlers share.
#[derive(Debug)]
pub struct Agent {
    pub config: Config,
    pub started_at: SystemTime,
    pub node: Table<NodeRecord>,
    pub network: Arc<corral_cni::NetworkLoader>,
    pub images: ImageCatalog,
    pub sandboxes: SandboxManager,
    pub containers: ContainerManager,
    pub stats: crate::stats::StatsCollector,
    /// Where the metrics endpoint listens, once bound.
    pub metrics_address: std::sync::OnceLock<std::net::SocketAddr>,
    /// The Exec/Attach/PortForward streaming server, once started.
    pub streaming: std::sync::OnceLock<crate::streaming::StreamingServer>,
    pub host: HostChecks,
    _lock: StateLock,
}

/// Host prerequisites checked once at start (they do not change while the kernel runs).
#[derive(Debug, Clone)]
pub struct HostChecks {
    /// Missing prerequisites, each a short sentence.
    pub missing: Vec<String>,
}

impl Agent {
    /// Creates the state and run directories, takes the state-root lock and recovers the
    /// records. Blocking parts run on blocking threads.
    pub async fn open(config: Config) -> Result<Agent, Error> {
        let (lock, host) = {
            let config = config.clone();
            tokio::task::spawn_blocking(move || -> Result<_, StateError> {
                create_dir(&config.root, 0o711)?;
                create_dir(&config.run_dir, 0o711)?;
                let lock = StateLock::acquire(&config.root)?;
                Ok((lock, HostChecks::run(Path::new("/proc/filesystems"))))
            })
            .await
            .map_err(|e| StateError::Task(e.to_string()))??
        };
        let node = Table::open(&config.root.join("state").join("node")).await?;
        let container_records =
            ContainerManager::load(&config.root.join("state").join("containers")).await?;
        let images = ImageCatalog::open(
            config.root.join("images"),
            config.root.join("state").join("images"),
            config.images.clone(),
            ContainerManager::held_layers(&container_records),
        )
        .await?;
        let containers =
            ContainerManager::open(container_records, container_paths(&config)?).await?;
        let network = Arc::new(corral_cni::NetworkLoader::new(config.cni.clone()));
        let pod_network = PodNetwork::new(
            Arc::clone(&network),
            config.cni.bin_dirs.clone(),
            config.root.join("cni").join("results"),
        );
        let sandboxes = SandboxManager::open(
            &config.root.join("state").join("sandboxes"),
            pod_network,
            SandboxPaths {
                sandboxes_dir: config.run_dir.join("sandboxes"),
                netns_dir: config.pod_sandbox.netns_dir.clone(),
                host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
                shm_size_bytes: config.pod_sandbox.shm_size_bytes,
            },
        )
        .await?;
        let layers_dir = config.root.join("containers");
        let stats =
            tokio::task::spawn_blocking(move || crate::stats::StatsCollector::new(layers_dir))
                .await
                .map_err(|e| StateError::Task(e.to_string()))?;
        tracing::info!(root = %config.root.display(), lock = %lock.path().display(),
            "state recovered");
        Ok(Agent {
            config,
            started_at: SystemTime::now(),
            node,
            network,
            images,
            sandboxes,
            containers,
            stats,
            metrics_address: std::sync::OnceLock::new(),
            streaming: std::sync::OnceLock::new(),
            host,
            _lock: lock,
        })
    }
}

impl HostChecks {
    /// Checks that the kernel has overlayfs and that cgroups are mounted.
    pub fn run(proc_filesystems: &Path) -> HostChecks {
        let mut missing = Vec::new();
        match std::fs::read_to_string(proc_filesystems) {
            Ok(list) => {
                if !list
                    .lines()
                    .any(|l| l.split_whitespace().last() == Some("overlay"))
                {
                    missing.push("the kernel has no overlay filesystem (modprobe overlay)".into());
                }
            }
            Err(e) => missing.push(format!("cannot read {}: {e}", proc_filesystems.display())),
        }
        let cgroup_root = PathBuf::from("/sys/fs/cgroup");
        let v2 = cgroup_root.join("cgroup.controllers").exists();
        let v1 = cgroup_root.join("memory").is_dir() || cgroup_root.join("cpu").is_dir();
        if !v1 && !v2 {
            missing.push("no cgroup filesystem is mounted at /sys/fs/cgroup".into());
        }
        HostChecks { missing }
    }
}

fn container_paths(config: &Config) -> Result<ContainerPaths, Error> {
    let monitor_binary = if config.runtime.monitor_path.as_os_str().is_empty() {
        let exe =
            std::env::current_exe().map_err(|e| Error::Internal(format!("own executable: {e}")))?;
        exe.with_file_name("corral-monitor")
    } else {
        config.runtime.monitor_path.clone()
    };
    Ok(ContainerPaths {
        layers_dir: config.root.join("containers"),
        bundles_dir: config.run_dir.join("containers"),
        exits_dir: config.run_dir.join("exits"),
        sockets_dir: config.run_dir.join("sockets"),
        libcontainer_root: config.run_dir.join("libcontainer"),
        monitor_binary,
        log_max_line_bytes: config.runtime.log_max_line_bytes,
        host: corral_runtime::spec::HostLimits {
            // Negative values need CAP_SYS_RESOURCE, which this agent may lack; the spec
            // clamps to what an unprivileged write accepts.
            min_oom_score_adj: 0,
            apparmor_supported: std::path::Path::new("/sys/kernel/security/apparmor").exists(),
            seccomp_profile_root: config.runtime.seccomp_profile_root.clone(),
            volume_dir: config.root.join("containers"),
            pids_limit: config.runtime.pids_limit,
        },
    })
}

fn create_dir(path: &Path, mode: u32) -> Result<(), StateError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| StateError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_host_checks_missing_overlay_reported() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("filesystems");
        std::fs::write(&list, "nodev\tsysfs\nnodev\ttmpfs\n\text4\n").unwrap();
        let checks = HostChecks::run(&list);
        assert!(
            checks.missing.iter().any(|m| m.contains("overlay")),
            "{checks:?}"
        );
    }

    #[test]
    fn test_host_checks_overlay_present() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("filesystems");
        std::fs::write(&list, "nodev\tsysfs\nnodev\toverlay\n").unwrap();
        let checks = HostChecks::run(&list);
        assert!(
            !checks.missing.iter().any(|m| m.contains("overlay")),
            "{checks:?}"
        );
    }
}
