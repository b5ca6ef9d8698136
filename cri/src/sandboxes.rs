//! Pod sandboxes: name reservation, creation with rollback, stop, removal and recovery.
//! Records are written before the in-memory state changes; every step of a creation is
//! undone when a later one fails, so a failed RunPodSandbox leaves nothing behind.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use corral_pod_sandbox::files::{self, DnsSettings};
use corral_pod_sandbox::namespaces::{self, PinRequest};
use corral_pod_sandbox::pid_init::{self, PodNamespaces};
use corral_pod_sandbox::rollback::Rollback;
use corral_pod_sandbox::{shm, sysctl};
use k8s_cri::v1::{NamespaceMode, PodSandboxConfig};

use crate::error::Error;
use crate::names::{NameRegistry, Reservation};
use crate::pod_network::{self, PodNetwork};
use crate::sandbox_record::{SandboxRecord, SandboxState, name_key};
use crate::state::Table;

/// Where sandboxes keep their files.
#[derive(Debug, Clone)]
pub struct SandboxPaths {
    /// `<run_dir>/sandboxes`: one directory per sandbox.
    pub sandboxes_dir: PathBuf,
    /// Where network namespaces are pinned.
    pub netns_dir: PathBuf,
    /// The host's resolv.conf, for pods without DNS settings.
    pub host_resolv_conf: PathBuf,
    pub shm_size_bytes: u64,
}

/// All pod sandboxes.
pub struct SandboxManager {
    records: Table<SandboxRecord>,
    names: NameRegistry,
    /// Serialises stop/remove of one sandbox.
    operations: corral_image_service::keyed_lock::KeyedLocks,
    network: PodNetwork,
    paths: SandboxPaths,
}

impl std::fmt::Debug for SandboxManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxManager")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl SandboxManager {
    /// Loads the records; a Ready sandbox whose namespaces are gone (after a reboot) becomes
    /// NotReady.
    pub async fn open(
        state_dir: &Path,
        network: PodNetwork,
        paths: SandboxPaths,
    ) -> Result<SandboxManager, Error> {
        let records: Table<SandboxRecord> = Table::open(state_dir).await?;
        let names = NameRegistry::default();
        for record in records.list() {
            names.insert(record.name_key(), record.id.clone());
            if record.state == SandboxState::Ready {
                let pins: Vec<PathBuf> = [&record.netns, &record.ipcns, &record.utsns]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                let init = record.pid_init.zip(record.pidns.clone());
                let alive = tokio::task::spawn_blocking(move || {
                    pins.iter().all(|p| namespaces::is_pinned(p))
                        && init.is_none_or(|(pid, pin)| pid_init::is_pod_init(pid, &pin))
                })
                .await
                .unwrap_or(false);
                if !alive {
                    tracing::warn!(sandbox = %record.id, "pod namespaces are gone; marking NotReady");
                    let mut updated = record.clone();
                    updated.state = SandboxState::NotReady;
                    records.put(&updated.id, updated.clone()).await?;
                }
            }
        }
        tracing::info!(sandboxes = records.list().len(), "sandboxes recovered");
        let manager = SandboxManager {
            records,
            names,
            operations: corral_image_service::keyed_lock::KeyedLocks::default(),
            network,
            paths,
        };
        manager.sweep_unfinished().await;
        Ok(manager)
    }

    /// Undoes the creations an agent killed inside RunPodSandbox left behind: a marker with
    /// the sandbox's record but no record in the state. Its network is detached (a DEL with
    /// the current config), its pod init killed, its namespaces unpinned, its files removed.
    async fn sweep_unfinished(&self) {
        let dir = self.paths.sandboxes_dir.clone();
        let markers = tokio::task::spawn_blocking(move || read_markers(&dir))
            .await
            .unwrap_or_default();
        for (marker, record) in markers {
            if self.records.get(&record.id).is_none() {
                tracing::warn!(sandbox = %record.id, pod = %record.name, "removing a pod sandbox whose creation was cut short");
                if record.netns.is_some() {
                    self.network.detach_uncached(&record).await;
                }
                tear_down_local(&record).await;
            }
            if let Err(error) = tokio::fs::remove_file(&marker).await {
                tracing::warn!(marker = %marker.display(), %error, "could not remove a creation marker");
            }
        }
    }

    /// `<sandboxes_dir>/<id>.creating`: the record of a sandbox while it is being created.
    fn creation_marker(&self, id: &str) -> PathBuf {
        self.paths
            .sandboxes_dir
            .join(format!("{id}{CREATION_MARKER}"))
    }

    async fn write_creation_marker(&self, record: &SandboxRecord) -> Result<(), Error> {
        let path = self.creation_marker(&record.id);
        let text = serde_json::to_vec(record)
            .map_err(|e| Error::Internal(format!("encode sandbox record: {e}")))?;
        tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text)
        })
        .await
        .map_err(|e| Error::Internal(format!("sandbox task failed: {e}")))?
        .map_err(|e| Error::Internal(format!("write sandbox creation marker: {e}")))
    }

    /// A sandbox by full ID or unique prefix.
    pub fn get(&self, id: &str) -> Option<SandboxRecord> {
        self.records.find(id)
    }

    /// Every sandbox.
    pub fn list(&self) -> Vec<SandboxRecord> {
        self.records.list()
    }

    /// The cached CNI result of a sandbox, for verbose status.
    pub async fn network_result(&self, record: &SandboxRecord) -> Option<serde_json::Value> {
        let network_name = record.network_name.clone()?;
        self.network.cached_result(&network_name, &record.id).await
    }

    /// RunPodSandbox. A retry with the same name while the first attempt runs waits for it;
    /// a retry after it succeeded gets the same sandbox.
    pub async fn run(
        &self,
        config: PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String, Error> {
        let metadata = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("sandbox config has no metadata".into()))?;
        for (field, value) in [
            ("name", &metadata.name),
            ("namespace", &metadata.namespace),
            ("uid", &metadata.uid),
        ] {
            if value.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "sandbox metadata {field} is required"
                )));
            }
        }
        if !runtime_handler.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "unknown runtime handler {runtime_handler:?}; corral has only the default handler"
            )));
        }
        let key = name_key(
            &metadata.name,
            &metadata.namespace,
            &metadata.uid,
            metadata.attempt,
        );
        let guard = match self.names.reserve(&key).await {
            Reservation::Existing(id) => return Ok(id),
            Reservation::Reserved(guard) => guard,
        };
        let record = self.new_record(&config, &metadata)?;
        let id = record.id.clone();
        self.write_creation_marker(&record).await?;
        let created = self.create(record, config).await;
        let marker = self.creation_marker(&id);
        if let Err(error) = tokio::fs::remove_file(&marker).await {
            tracing::warn!(sandbox = %id, %error, "could not remove the creation marker");
        }
        created?;
        guard.finish(&id);
        Ok(id)
    }

    /// Sets up the sandbox of `record` and writes its record; undoes every step on failure.
    async fn create(
        &self,
        mut record: SandboxRecord,
        config: PodSandboxConfig,
    ) -> Result<(), Error> {
        let linux = config.linux.clone().unwrap_or_default();
        let sysctls = linux
            .sysctls
            .iter()
            .map(|(k, v)| sysctl::parse_sysctl(k, v))
            .collect::<Result<Vec<_>, _>>()?;
        let dns = config
            .dns_config
            .clone()
            .map(|d| DnsSettings {
                servers: d.servers,
                searches: d.searches,
                options: d.options,
            })
            .unwrap_or_default();

        let parent = record.cgroup_parent.clone();
        record.owned_cgroup =
            tokio::task::spawn_blocking(move || crate::pod_cgroup::missing_part(&parent))
                .await
                .map_err(|e| Error::Internal(format!("sandbox task failed: {e}")))?;
        let local = record.clone();
        let host_resolv_conf = self.paths.host_resolv_conf.clone();
        let shm_size = self.paths.shm_size_bytes;
        record.pid_init = tokio::task::spawn_blocking(move || {
            set_up_local(&local, sysctls, &dns, &host_resolv_conf, shm_size)
        })
        .await
        .map_err(|e| Error::Internal(format!("sandbox task failed: {e}")))??;
        if record.pid_init.is_some() {
            // The sweep after a crash must find the pod init to kill it.
            if let Err(error) = self.write_creation_marker(&record).await {
                tear_down_local(&record).await;
                return Err(error);
            }
        }

        if record.netns.is_some() {
            match self.network.attach(&record).await {
                Ok((network_name, ips)) => {
                    record.network_name = Some(network_name);
                    record.ips = ips.iter().map(IpAddr::to_string).collect();
                }
                Err(error) => {
                    self.network.detach_uncached(&record).await;
                    tear_down_local(&record).await;
                    return Err(error);
                }
            }
        }
        let finish = async {
            let ips: Vec<IpAddr> = record.ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            let hosts = files::hosts_file(&record.hostname, &ips);
            let hosts_path = record.dir.join("hosts");
            tokio::task::spawn_blocking(move || files::write_file(&hosts_path, &hosts))
                .await
                .map_err(|e| Error::Internal(format!("sandbox task failed: {e}")))??;
            self.records.put(&record.id, record.clone()).await?;
            Ok::<(), Error>(())
        };
        if let Err(error) = finish.await {
            if let Some(network_name) = &record.network_name {
                if let Err(del_error) = self.network.detach(&record, network_name).await {
                    tracing::warn!(sandbox = %record.id, error = %del_error, "CNI DEL during rollback failed");
                }
            }
            tear_down_local(&record).await;
            return Err(error);
        }
        tracing::info!(sandbox = %record.id, pod = %record.name, namespace = %record.namespace,
            ips = ?record.ips, "pod sandbox ready");
        Ok(())
    }

    fn new_record(
        &self,
        config: &PodSandboxConfig,
        metadata: &k8s_cri::v1::PodSandboxMetadata,
    ) -> Result<SandboxRecord, Error> {
        let linux = config.linux.clone().unwrap_or_default();
        let options = linux
            .security_context
            .as_ref()
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default();
        let mode = |value: i32| NamespaceMode::try_from(value).unwrap_or(NamespaceMode::Pod);
        let host_network = mode(options.network) == NamespaceMode::Node;
        let host_ipc = mode(options.ipc) == NamespaceMode::Node;
        let pod_pid = mode(options.pid) == NamespaceMode::Pod;
        corral_pod_sandbox::validate_cgroup_parent(&linux.cgroup_parent)?;
        let hostname = if config.hostname.is_empty() {
            metadata.name.chars().take(63).collect()
        } else {
            config.hostname.clone()
        };
        if !host_network {
            files::validate_hostname(&hostname)?;
        }
        let id = new_id()?;
        let dir = self.paths.sandboxes_dir.join(&id);
        let created_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        Ok(SandboxRecord {
            name: metadata.name.clone(),
            namespace: metadata.namespace.clone(),
            uid: metadata.uid.clone(),
            attempt: metadata.attempt,
            state: SandboxState::Ready,
            created_at,
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            annotations: config
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            runtime_handler: String::new(),
            hostname,
            log_directory: config.log_directory.clone(),
            cgroup_parent: linux.cgroup_parent.clone(),
            owned_cgroup: None,
            network_mode: options.network,
            pid_mode: options.pid,
            ipc_mode: options.ipc,
            netns: (!host_network)
                .then(|| self.paths.netns_dir.join(format!("corral-{}", &id[..24]))),
            ipcns: (!host_ipc).then(|| dir.join("ns").join("ipc")),
            utsns: (!host_network).then(|| dir.join("ns").join("uts")),
            pidns: pod_pid.then(|| dir.join("ns").join("pid")),
            pid_init: None,
            shm: (!host_ipc).then(|| dir.join("shm")),
            port_mappings: pod_network::port_mappings(&config.port_mappings)?,
            network_name: None,
            ips: Vec::new(),
            dir,
            id,
        })
    }

    /// StopPodSandbox: detaches the network, unpins the network namespace and unmounts
    /// /dev/shm. Idempotent; an unknown ID is success.
    pub async fn stop(&self, id: &str) -> Result<(), Error> {
        let Some(record) = self.get(id) else {
            return Ok(());
        };
        let _operation = self.operations.lock(&record.id).await;
        let Some(mut record) = self.records.get(&record.id) else {
            return Ok(());
        };
        if let Some(network_name) = &record.network_name {
            self.network.detach(&record, network_name).await?;
        }
        let released = record.clone();
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            if let (Some(pid), Some(pin)) = (released.pid_init, &released.pidns) {
                pid_init::kill_pod_init(pid, Some(pin));
            }
            if let Some(netns) = &released.netns {
                namespaces::unpin(netns)?;
            }
            if let Some(path) = &released.shm {
                shm::unmount_shm(path)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(format!("sandbox task failed: {e}")))??;
        if record.state != SandboxState::NotReady {
            record.state = SandboxState::NotReady;
            self.records.put(&record.id, record.clone()).await?;
            tracing::info!(sandbox = %record.id, "pod sandbox stopped");
        }
        Ok(())
    }

    /// RemovePodSandbox: stops it if needed, then removes namespaces, files and the record.
    /// Idempotent; an unknown ID is success.
    pub async fn remove(&self, id: &str) -> Result<(), Error> {
        let Some(record) = self.get(id) else {
            return Ok(());
        };
        self.stop(&record.id).await?;
        let _operation = self.operations.lock(&record.id).await;
        let Some(record) = self.records.get(&record.id) else {
            return Ok(());
        };
        tear_down_local(&record).await;
        if let Some(owned) = record.owned_cgroup.clone() {
            let parent = record.cgroup_parent.clone();
            let removed = tokio::task::spawn_blocking(move || {
                crate::pod_cgroup::remove_owned(&parent, &owned);
            })
            .await;
            if let Err(error) = removed {
                tracing::warn!(sandbox = %record.id, %error, "pod cgroup removal task failed");
            }
        }
        self.records.remove(&record.id).await?;
        self.names.release(&record.name_key());
        tracing::info!(sandbox = %record.id, "pod sandbox removed");
        Ok(())
    }
}

/// Sandbox directory, namespaces, files, /dev/shm and the pod's init (when it shares a PID
/// namespace, whose init's PID is returned); undone step by step on failure.
fn set_up_local(
    record: &SandboxRecord,
    sysctls: Vec<sysctl::Sysctl>,
    dns: &DnsSettings,
    host_resolv_conf: &Path,
    shm_size: u64,
) -> Result<Option<u32>, Error> {
    let mut rollback = Rollback::new();
    std::fs::create_dir_all(&record.dir)
        .map_err(|e| Error::Internal(format!("create {}: {e}", record.dir.display())))?;
    let dir = record.dir.clone();
    rollback.push("sandbox dir", move || {
        let _ = std::fs::remove_dir_all(&dir);
    });
    let resolv = files::resolv_conf(dns, host_resolv_conf)?;
    files::write_file(&record.dir.join("resolv.conf"), &resolv)?;
    files::write_file(
        &record.dir.join("hostname"),
        &format!("{}\n", record.hostname),
    )?;
    files::write_file(
        &record.dir.join("hosts"),
        &files::hosts_file(&record.hostname, &[]),
    )?;

    let request = PinRequest {
        net: record.netns.clone(),
        ipc: record.ipcns.clone(),
        uts: record.utsns.clone(),
        hostname: Some(record.hostname.clone()),
        sysctls,
    };
    namespaces::pin_namespaces(request)?;
    let pins: Vec<PathBuf> = [&record.netns, &record.ipcns, &record.utsns]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    rollback.push("pinned namespaces", move || {
        for pin in &pins {
            let _ = namespaces::unpin(pin);
        }
    });
    if let Some(path) = &record.shm {
        shm::mount_shm(path, shm_size)?;
        let path = path.clone();
        rollback.push("shm", move || {
            let _ = shm::unmount_shm(&path);
        });
    }
    let mut init = None;
    if let Some(pin) = &record.pidns {
        // The running binary itself, even after an upgrade replaced the file on disk.
        let exe = PathBuf::from("/proc/self/exe");
        let pod = PodNamespaces {
            net: record.netns.clone(),
            ipc: record.ipcns.clone(),
            uts: record.utsns.clone(),
        };
        let pid = pid_init::start_pod_init(&exe, &pod, pin)?;
        let pin = pin.clone();
        rollback.push("pod init", move || {
            pid_init::kill_pod_init(pid, Some(&pin));
            let _ = namespaces::unpin(&pin);
        });
        init = Some(pid);
    }
    rollback.disarm();
    Ok(init)
}

/// The suffix of a creation marker's file name.
const CREATION_MARKER: &str = ".creating";

/// The creation markers in `dir` and the records they hold (unreadable ones are removed).
fn read_markers(dir: &Path) -> Vec<(PathBuf, SandboxRecord)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut markers = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.to_string_lossy().ends_with(CREATION_MARKER) {
            continue;
        }
        match std::fs::read(&path)
            .ok()
            .and_then(|text| serde_json::from_slice::<SandboxRecord>(&text).ok())
        {
            Some(record) => markers.push((path, record)),
            None => {
                tracing::warn!(marker = %path.display(), "unreadable creation marker removed");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    markers
}

/// Undoes everything local to the sandbox: pins, shm, directory. Missing parts are fine.
async fn tear_down_local(record: &SandboxRecord) {
    let record = record.clone();
    let result = tokio::task::spawn_blocking(move || {
        if let (Some(pid), Some(pin)) = (record.pid_init, &record.pidns) {
            pid_init::kill_pod_init(pid, Some(pin));
        }
        for pin in [&record.netns, &record.ipcns, &record.utsns, &record.pidns]
            .into_iter()
            .flatten()
        {
            if let Err(error) = namespaces::unpin(pin) {
                tracing::warn!(sandbox = %record.id, %error, "could not unpin namespace");
            }
        }
        if let Some(path) = &record.shm {
            if let Err(error) = shm::unmount_shm(path) {
                tracing::warn!(sandbox = %record.id, %error, "could not unmount shm");
            }
        }
        match std::fs::remove_dir_all(&record.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(sandbox = %record.id, %error, "could not remove sandbox dir")
            }
        }
    })
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, "sandbox teardown task failed");
    }
}

/// A new 64-hex-character sandbox ID.
pub(crate) fn new_id() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Internal(format!("random id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
