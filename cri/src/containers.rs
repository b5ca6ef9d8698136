//! Containers: creation (overlay rootfs, OCI spec, a monitor per container), start, stop,
//! removal, recovery and exits. Every step of a creation is undone if a later one fails;
//! records are written before the in-memory state changes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use corral_image_service::digest::Digest;
use corral_image_service::index::ImageRecord;
use corral_image_service::keyed_lock::KeyedLocks;
use corral_pod_sandbox::rollback::Rollback;
use corral_runtime::monitor::{self, MonitorConfig};
use corral_runtime::overlay::{self, OverlayRootfs};
use corral_runtime::spec::{self, HostLimits, ImageInfo, SandboxInfo, SpecInput};
use k8s_cri::v1::{
    ContainerConfig, ContainerEventType, LinuxContainerResources, LinuxContainerUser,
};

use crate::container_record::{ContainerPhase, ContainerRecord, exit_reason, name_key};
use crate::error::Error;
use crate::events::ContainerChanges;
use crate::images::ImageCatalog;
use crate::names::{NameRegistry, Reservation};
use crate::sandbox_record::SandboxRecord;
use crate::state::Table;

/// Where containers keep their files, and the host facts specs need.
#[derive(Debug, Clone)]
pub struct ContainerPaths {
    /// `<root>/containers`: writable layers and volumes.
    pub layers_dir: PathBuf,
    /// `<run_dir>/containers`: bundles, monitor sockets, rootfs mounts.
    pub bundles_dir: PathBuf,
    /// `<run_dir>/exits`: exit records the monitors write.
    pub exits_dir: PathBuf,
    /// `<run_dir>/sockets`: the monitors' sockets.
    pub sockets_dir: PathBuf,
    /// libcontainer's state root.
    pub libcontainer_root: PathBuf,
    /// The `corral-monitor` binary.
    pub monitor_binary: PathBuf,
    pub log_max_line_bytes: usize,
    pub host: HostLimits,
}

/// All containers.
pub struct ContainerManager {
    records: Table<ContainerRecord>,
    names: NameRegistry,
    paths: ContainerPaths,
    /// Exits reported by the watcher, until the server takes them.
    exits: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<String>>>,
    /// Lifecycle changes for GetContainerEvents.
    changes: ContainerChanges,
    /// Serialises the read-modify-write of one container's record (start, exit, update,
    /// remove), so an exit recorded meanwhile is never overwritten and events keep order.
    transitions: KeyedLocks,
    /// Teardowns of removed containers still running in the background.
    teardowns: std::sync::Mutex<Vec<Teardown>>,
}

/// A removed container whose monitor, mounts and directories are being cleaned up.
struct Teardown {
    sandbox_id: String,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ContainerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerManager")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl ContainerManager {
    /// Loads the container records (before the image catalog, which must know the layers
    /// containers hold).
    pub async fn load(state_dir: &Path) -> Result<Table<ContainerRecord>, Error> {
        Ok(Table::open(state_dir).await?)
    }

    /// Layers held by each container, for the image catalog.
    pub fn held_layers(records: &Table<ContainerRecord>) -> HashMap<String, Vec<String>> {
        records
            .list()
            .into_iter()
            .map(|r| (r.id.clone(), r.chain_ids.clone()))
            .collect()
    }

    /// Recovers: containers that exited while the agent was down get their exit recorded.
    pub async fn open(
        records: Table<ContainerRecord>,
        paths: ContainerPaths,
    ) -> Result<ContainerManager, Error> {
        let names = NameRegistry::default();
        for dir in [
            &paths.layers_dir,
            &paths.bundles_dir,
            &paths.exits_dir,
            &paths.sockets_dir,
        ] {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
        }
        for record in records.list() {
            names.insert(record.name_key(), record.id.clone());
        }
        let known: std::collections::HashSet<String> =
            records.list().into_iter().map(|r| r.id).collect();
        let sweep_paths = paths.clone();
        let swept = tokio::task::spawn_blocking(move || sweep_orphans(&sweep_paths, &known))
            .await
            .map_err(|e| Error::Internal(format!("container task failed: {e}")))?;
        if swept > 0 {
            remove_default_cgroup_parent_blocking().await;
        }
        // Watch first, then look: an exit between the two is seen twice, never missed.
        let exits = crate::exit_watch::watch_exits(&paths.exits_dir)
            .map_err(|e| Error::Internal(format!("watch {}: {e}", paths.exits_dir.display())))?;
        let manager = ContainerManager {
            records,
            names,
            paths,
            exits: std::sync::Mutex::new(Some(exits)),
            changes: ContainerChanges::default(),
            transitions: KeyedLocks::default(),
            teardowns: std::sync::Mutex::new(Vec::new()),
        };
        for record in manager.records.list() {
            if record.phase == ContainerPhase::Running {
                manager.collect_exit(&record.id).await?;
            }
        }
        tracing::info!(
            containers = manager.records.list().len(),
            "containers recovered"
        );
        Ok(manager)
    }

    /// A container by full ID or unique prefix.
    pub fn get(&self, id: &str) -> Option<ContainerRecord> {
        self.records.find(id)
    }

    /// A running container by ID or unique prefix: `NotFound`, or `FailedPrecondition` when
    /// it is not running.
    pub fn running(&self, id: &str) -> Result<ContainerRecord, Error> {
        let record = self
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        if record.phase != ContainerPhase::Running {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not running",
                record.id, record.phase
            )));
        }
        Ok(record)
    }

    /// Every container.
    pub fn list(&self) -> Vec<ContainerRecord> {
        self.records.list()
    }

    /// Lifecycle changes from now on (GetContainerEvents).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::events::ContainerChange> {
        self.changes.subscribe()
    }

    /// The stream of exited container IDs (once: the server consumes it).
    pub fn take_exit_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        self.exits.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// CreateContainer.
    pub async fn create(
        &self,
        sandbox: &SandboxRecord,
        config: ContainerConfig,
        image: ImageRecord,
        images: &ImageCatalog,
    ) -> Result<String, Error> {
        let metadata = config
            .metadata
            .clone()
            .ok_or_else(|| Error::InvalidArgument("container config has no metadata".into()))?;
        if metadata.name.is_empty() {
            return Err(Error::InvalidArgument("container name is required".into()));
        }
        let key = name_key(&metadata.name, &sandbox.id, metadata.attempt);
        let guard = match self.names.reserve(&key).await {
            Reservation::Existing(id) => return Ok(id),
            Reservation::Reserved(guard) => guard,
        };
        let id = crate::sandboxes::new_id()?;
        images.hold_layers(&id, image.chain_ids.clone());
        let result = self
            .create_reserved(&id, sandbox, config, &image, images)
            .await;
        match result {
            Ok(()) => {
                guard.finish(&id);
                Ok(id)
            }
            Err(error) => {
                images.release_layers(&id).await;
                Err(error)
            }
        }
    }

    async fn create_reserved(
        &self,
        id: &str,
        sandbox: &SandboxRecord,
        config: ContainerConfig,
        image: &ImageRecord,
        images: &ImageCatalog,
    ) -> Result<(), Error> {
        let metadata = config.metadata.clone().unwrap_or_default();
        let log_path = if sandbox.log_directory.is_empty() || config.log_path.is_empty() {
            String::new()
        } else {
            Path::new(&sandbox.log_directory)
                .join(&config.log_path)
                .display()
                .to_string()
        };
        let record = ContainerRecord {
            id: id.to_string(),
            sandbox_id: sandbox.id.clone(),
            name: metadata.name.clone(),
            attempt: metadata.attempt,
            image: config
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default(),
            image_id: image.id.clone(),
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
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
            phase: ContainerPhase::Created,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path,
            stop_signal: image.config.stop_signal.clone(),
            chain_ids: image.chain_ids.clone(),
            layer_dir: self.paths.layers_dir.join(id),
            bundle: self.paths.bundles_dir.join(id),
            exit_file: self.paths.exits_dir.join(format!("{id}.json")),
            socket: self.paths.sockets_dir.join(format!("{}.sock", &id[..16])),
            mounts: config.mounts.clone(),
            cgroups_path: spec::cgroups_path(&sandbox.cgroup_parent, id),
            resources: config.linux.as_ref().and_then(|l| l.resources.clone()),
            user: None,
            pid: 0,
        };
        let lower: Vec<PathBuf> = image
            .chain_ids
            .iter()
            .rev()
            .map(|c| Digest::parse(c).map(|d| images.layer_short_path(&d)))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Internal(format!("image record: {e}")))?;
        let job = CreateJob {
            record: record.clone(),
            sandbox: sandbox_info(sandbox),
            image: ImageInfo {
                name: record.image.clone(),
                user: image.config.user.clone(),
                env: image.config.env.clone(),
                entrypoint: image.config.entrypoint.clone(),
                cmd: image.config.cmd.clone(),
                working_dir: image.config.working_dir.clone(),
                volumes: image.config.volumes.clone(),
                stop_signal: image.config.stop_signal.clone(),
            },
            config,
            lower,
            paths: self.paths.clone(),
        };
        let (mut rollback, record) = tokio::task::spawn_blocking(move || job.run())
            .await
            .map_err(|e| Error::Internal(format!("container task failed: {e}")))??;
        let created_at = record.created_at;
        self.records.put(id, record).await?;
        rollback.disarm_steps();
        self.changes.publish(
            id,
            &sandbox.id,
            ContainerEventType::ContainerCreatedEvent,
            created_at,
        );
        if let Some(metrics) = crate::agent_metrics::get() {
            metrics.container_created();
        }
        tracing::info!(container = %id, sandbox = %sandbox.id, "container created");
        Ok(())
    }

    /// StartContainer.
    pub async fn start(&self, id: &str) -> Result<(), Error> {
        let found = self
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        let transition = self.transitions.lock(&found.id).await;
        let record = self
            .get(&found.id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        if record.phase != ContainerPhase::Created {
            return Err(Error::FailedPrecondition(format!(
                "container {} is {:?}, not created",
                record.id, record.phase
            )));
        }
        let socket = record.socket();
        tokio::task::spawn_blocking(move || monitor::start(&socket))
            .await
            .map_err(|e| Error::Internal(format!("container task failed: {e}")))?
            .map_err(Error::Runtime)?;
        let mut updated = record;
        updated.phase = ContainerPhase::Running;
        updated.started_at = now_nanos();
        self.records.put(&updated.id, updated.clone()).await?;
        self.changes.publish(
            &updated.id,
            &updated.sandbox_id,
            ContainerEventType::ContainerStartedEvent,
            updated.started_at,
        );
        if let Some(metrics) = crate::agent_metrics::get() {
            metrics.container_started();
        }
        drop(transition);
        // It may already have exited (a short command).
        self.collect_exit(&updated.id).await?;
        Ok(())
    }

    /// UpdateContainerResources: `update` merged over the current limits and written to the
    /// live cgroup of a created or running container, then recorded.
    pub async fn update_resources(
        &self,
        id: &str,
        update: LinuxContainerResources,
    ) -> Result<(), Error> {
        let found = self
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        let transition = self.transitions.lock(&found.id).await;
        let record = self
            .get(&found.id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))?;
        if record.phase == ContainerPhase::Exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited",
                record.id
            )));
        }
        let merged = corral_runtime::update::merge_resources(
            &record.resources.clone().unwrap_or_default(),
            &update,
        );
        let (cgroups_path, container_id, resources) = (
            record.cgroups_path.clone(),
            record.id.clone(),
            merged.clone(),
        );
        let warnings = tokio::task::spawn_blocking(move || {
            corral_runtime::update::apply_resources(
                &cgroups_path,
                &container_id,
                &resources,
                &spec::SystemHost,
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("container task failed: {e}")))?
        .map_err(Error::Runtime)?;
        for warning in &warnings {
            tracing::warn!(container = %record.id, %warning, "resource update adjusted");
        }
        let mut updated = record;
        updated.resources = Some(merged);
        self.records.put(&updated.id, updated.clone()).await?;
        drop(transition);
        // An exit that happened meanwhile is recorded now.
        self.collect_exit(&updated.id).await?;
        tracing::info!(container = %updated.id, "container resources updated");
        Ok(())
    }

    /// StopContainer: the stop signal, then SIGKILL to every process after `timeout`.
    /// Idempotent; an unknown ID is success.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let Some(record) = self.get(id) else {
            return Ok(());
        };
        if record.phase == ContainerPhase::Exited {
            return Ok(());
        }
        let signal = parse_signal(&record.stop_signal).unwrap_or(libc::SIGTERM);
        if record.phase == ContainerPhase::Running {
            if !self.signal(&record, signal, false).await {
                return self.stop_without_monitor(&record).await;
            }
            if self.wait_exit(&record, timeout).await? {
                return Ok(());
            }
            tracing::info!(container = %record.id, "stop timed out, killing");
        }
        if !self.signal(&record, libc::SIGKILL, true).await {
            return self.stop_without_monitor(&record).await;
        }
        if !self.wait_exit(&record, Duration::from_secs(10)).await?
            && record.phase == ContainerPhase::Running
        {
            return Err(Error::Internal(format!(
                "container {} did not exit after SIGKILL",
                record.id
            )));
        }
        Ok(())
    }

    /// RemoveContainer: kills it if needed, deletes it, unmounts, removes files and the
    /// record. Idempotent; an unknown ID is success.
    ///
    /// The record goes first (so the container is gone for every later request and its
    /// name is free); its monitor, cgroups, rootfs mount and directories are removed by a
    /// background task, which [`ContainerManager::settle`] waits for (RemovePodSandbox and
    /// shutdown do). A crash before that task ends leaves files without a record, which the
    /// next start sweeps.
    pub async fn remove(&self, id: &str, images: &ImageCatalog) -> Result<(), Error> {
        let Some(record) = self.get(id) else {
            return Ok(());
        };
        if record.phase == ContainerPhase::Running {
            if let Err(error) = self.stop(&record.id, Duration::ZERO).await {
                // Its monitor is gone: the teardown kills what is left through the cgroup.
                tracing::warn!(container = %record.id, %error, "stop before removal failed");
            }
        }
        let doomed = record.clone();
        let paths = self.paths.clone();
        let task = tokio::task::spawn_blocking(move || {
            tear_down_files(&ContainerFiles::of(&paths, &doomed.id));
            remove_default_cgroup_parent();
        });
        self.teardowns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Teardown {
                sandbox_id: record.sandbox_id.clone(),
                task,
            });
        let transition = self.transitions.lock(&record.id).await;
        self.records.remove(&record.id).await?;
        drop(transition);
        self.changes.publish(
            &record.id,
            &record.sandbox_id,
            ContainerEventType::ContainerDeletedEvent,
            now_nanos(),
        );
        self.names.release(&record.name_key());
        images.release_layers(&record.id).await;
        tracing::info!(container = %record.id, "container removed");
        Ok(())
    }

    /// Waits for the background teardowns of removed containers: those of one sandbox, or
    /// all of them.
    pub async fn settle(&self, sandbox_id: Option<&str>) {
        let waiting: Vec<Teardown> = {
            let mut teardowns = self.teardowns.lock().unwrap_or_else(|e| e.into_inner());
            teardowns.retain(|t| !t.task.is_finished());
            let (mine, others): (Vec<Teardown>, Vec<Teardown>) = std::mem::take(&mut *teardowns)
                .into_iter()
                .partition(|t| sandbox_id.is_none_or(|id| t.sandbox_id == id));
            *teardowns = others;
            mine
        };
        for teardown in waiting {
            if let Err(error) = teardown.task.await {
                tracing::warn!(sandbox = %teardown.sandbox_id, %error, "container teardown failed");
            }
        }
    }

    /// Removes every container of a sandbox (RemovePodSandbox), and waits until their
    /// teardowns are done.
    pub async fn remove_all_in(
        &self,
        sandbox_id: &str,
        images: &ImageCatalog,
    ) -> Result<(), Error> {
        for record in self
            .list()
            .into_iter()
            .filter(|r| r.sandbox_id == sandbox_id)
        {
            self.remove(&record.id, images).await?;
        }
        self.settle(Some(sandbox_id)).await;
        Ok(())
    }

    /// Stops every container of a sandbox (StopPodSandbox).
    pub async fn stop_all_in(&self, sandbox_id: &str) -> Result<(), Error> {
        for record in self
            .list()
            .into_iter()
            .filter(|r| r.sandbox_id == sandbox_id)
        {
            self.stop(&record.id, Duration::ZERO).await?;
        }
        Ok(())
    }

    /// Records the exit of a running container if its monitor has written one; returns
    /// whether the container has exited.
    pub async fn collect_exit(&self, id: &str) -> Result<bool, Error> {
        let _transition = self.transitions.lock(id).await;
        let Some(record) = self.records.get(id) else {
            return Ok(true);
        };
        if record.phase == ContainerPhase::Exited {
            return Ok(true);
        }
        let exit_file = record.exit_file.clone();
        let exit = tokio::task::spawn_blocking(move || {
            exit_file
                .exists()
                .then(|| monitor::read_exit_record(&exit_file))
        })
        .await
        .map_err(|e| Error::Internal(format!("container task failed: {e}")))?;
        let Some(exit) = exit else {
            return Ok(false);
        };
        let exit = exit.map_err(Error::Runtime)?;
        let mut updated = record;
        updated.phase = ContainerPhase::Exited;
        updated.exit_code = exit.exit_code;
        updated.finished_at = exit.finished_at;
        if exit.started_at > 0 {
            updated.started_at = exit.started_at;
        }
        updated.reason = exit_reason(exit.exit_code, exit.oom_killed).to_string();
        self.records.put(&updated.id, updated.clone()).await?;
        self.changes.publish(
            &updated.id,
            &updated.sandbox_id,
            ContainerEventType::ContainerStoppedEvent,
            updated.finished_at,
        );
        if exit.oom_killed {
            if let Some(metrics) = crate::agent_metrics::get() {
                metrics.container_oom_killed();
            }
        }
        tracing::info!(container = %updated.id, exit_code = exit.exit_code, reason = %updated.reason, "container exited");
        Ok(true)
    }

    /// Signals the container through its monitor; false when there is no monitor to ask.
    async fn signal(&self, record: &ContainerRecord, signal: i32, all: bool) -> bool {
        let socket = record.socket();
        let result =
            tokio::task::spawn_blocking(move || monitor::signal(&socket, signal, all)).await;
        match result {
            Ok(Err(corral_runtime::Error::MonitorUnavailable { .. })) => false,
            Ok(Err(error)) => {
                tracing::debug!(container = %record.id, %error, "signal not delivered");
                true
            }
            _ => true,
        }
    }

    /// Stops a container whose monitor is gone (killed, or out of memory): kills its
    /// processes through its cgroup and writes the exit record in the monitor's place, with
    /// exit code 137 when processes were killed, or 255 (unknown, as containerd reports the
    /// tasks of a dead shim) when none was left and how the init ended is lost.
    async fn stop_without_monitor(&self, record: &ContainerRecord) -> Result<(), Error> {
        tracing::warn!(container = %record.id, "no monitor answers: stopping through the cgroup");
        let bundle = record.bundle.clone();
        let exit_file = record.exit_file.clone();
        let started_at = record.started_at;
        tokio::task::spawn_blocking(move || {
            let killed = monitor::cgroups::kill_bundle_processes(&bundle)?;
            if exit_file.exists() {
                // The monitor recorded the exit before it went.
                return Ok(());
            }
            let (code, signal) = if killed > 0 {
                (128 + libc::SIGKILL, Some(libc::SIGKILL))
            } else {
                (255, None)
            };
            let exit = monitor::ExitRecord::new(
                code,
                signal,
                started_at,
                monitor::unix_nanos_now(),
                false,
            );
            monitor::write_exit_record(&exit_file, &exit)
        })
        .await
        .map_err(|e| Error::Internal(format!("container task failed: {e}")))?
        .map_err(Error::Runtime)?;
        self.collect_exit(&record.id).await?;
        Ok(())
    }

    async fn wait_exit(&self, record: &ContainerRecord, timeout: Duration) -> Result<bool, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.collect_exit(&record.id).await? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl ContainerManager {
    /// ExecSync: runs `cmd` in the running container through the exec helper
    /// (`corral-monitor exec`, from a blocking thread) and returns its output (each stream
    /// capped at 16 MiB) and exit code. `timeout: None` waits as long as the command runs;
    /// past the timeout the command is killed and the answer is `DeadlineExceeded`.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Option<Duration>,
    ) -> Result<corral_runtime::exec::ExecOutput, Error> {
        use corral_runtime::exec::{self, ExecRequest};
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let record = self.running(id)?;
        let mut request = ExecRequest::new(&self.paths.libcontainer_root, &record.id, cmd);
        request.timeout = timeout;
        let binary = self.paths.monitor_binary.clone();
        let result = tokio::task::spawn_blocking(move || exec::exec_sync(&binary, &request))
            .await
            .map_err(|e| Error::Internal(format!("exec task failed: {e}")))?;
        match result {
            Ok(output) => {
                if output.stdout_truncated || output.stderr_truncated {
                    tracing::debug!(container = %record.id, "exec output truncated");
                }
                Ok(output)
            }
            // It stopped after the phase check (the exit watcher has not caught up yet).
            Err(corral_runtime::Error::ContainerState { message, .. }) => {
                Err(Error::FailedPrecondition(message))
            }
            Err(error @ corral_runtime::Error::ExecTimeout { .. }) => Err(Error::DeadlineExceeded(
                format!("container {}: {error}", record.id),
            )),
            Err(error) => Err(Error::Runtime(error)),
        }
    }
}

impl ContainerManager {
    /// Starts an interactive exec (the streaming `Exec`): a `corral-monitor exec --stream`
    /// helper whose pipes the caller connects to the client's streams.
    pub fn exec_stream(
        &self,
        id: &str,
        cmd: Vec<String>,
        tty: bool,
        stdin: bool,
    ) -> Result<corral_runtime::exec::ExecStream, Error> {
        use corral_runtime::exec::{StreamExecRequest, spawn_exec_stream};
        if cmd.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let record = self.running(id)?;
        let mut request = StreamExecRequest::new(&self.paths.libcontainer_root, &record.id, cmd);
        request.tty = tty;
        request.stdin = stdin;
        request.log = Some(record.bundle.join(monitor::MONITOR_LOG));
        spawn_exec_stream(&self.paths.monitor_binary, &request).map_err(Error::Runtime)
    }

    /// Attaches to the running container `id`'s own stdio through its monitor: the returned
    /// connection carries the attach stream (`corral_runtime::monitor::relay_attach`).
    pub async fn attach(
        &self,
        id: &str,
        options: monitor::AttachOptions,
    ) -> Result<std::os::unix::net::UnixStream, Error> {
        let record = self.running(id)?;
        let socket = record.socket();
        tokio::task::spawn_blocking(move || monitor::attach(&socket, options))
            .await
            .map_err(|err| Error::Internal(format!("attach task failed: {err}")))?
            .map_err(Error::Runtime)
    }
}

/// The blocking part of a creation, undone step by step on failure.
struct CreateJob {
    record: ContainerRecord,
    sandbox: SandboxInfo,
    image: ImageInfo,
    config: ContainerConfig,
    lower: Vec<PathBuf>,
    paths: ContainerPaths,
}

/// Undo steps that survive until the record is persisted.
pub struct CreateRollback(Rollback);

impl CreateRollback {
    fn disarm_steps(&mut self) {
        std::mem::take(&mut self.0).disarm();
    }
}

impl CreateJob {
    /// Returns the undo steps and the record completed with what the spec resolved.
    fn run(self) -> Result<(CreateRollback, ContainerRecord), Error> {
        let record = &self.record;
        let mut rollback = Rollback::new();
        let started_at = Instant::now();
        let io = |what: &str, path: &Path, e: std::io::Error| {
            Error::Internal(format!("{what} {}: {e}", path.display()))
        };
        std::fs::create_dir_all(&record.bundle).map_err(|e| io("create", &record.bundle, e))?;
        std::fs::create_dir_all(&record.layer_dir)
            .map_err(|e| io("create", &record.layer_dir, e))?;
        let (bundle, layer_dir) = (record.bundle.clone(), record.layer_dir.clone());
        rollback.push("container dirs", move || {
            let _ = std::fs::remove_dir_all(&bundle);
            let _ = std::fs::remove_dir_all(&layer_dir);
        });
        let rootfs = OverlayRootfs {
            lower: self.lower.clone(),
            upper: record.layer_dir.join("upper"),
            work: record.layer_dir.join("work"),
            target: record.rootfs(),
        };
        rootfs.mount().map_err(Error::Runtime)?;
        let mounted_ms = started_at.elapsed().as_secs_f64() * 1000.0;
        let target = rootfs.target.clone();
        rollback.push("rootfs mount", move || {
            let _ = overlay::unmount(&target);
        });

        let mut host = self.paths.host.clone();
        host.volume_dir = record.layer_dir.join("volumes");
        let input = SpecInput {
            container_id: &record.id,
            config: &self.config,
            sandbox: &self.sandbox,
            image: &self.image,
            rootfs: &rootfs.target,
            cgroups_path: record.cgroups_path.clone(),
            host: &host,
        };
        let built = spec::build(&input, &spec::SystemHost).map_err(Error::Runtime)?;
        let spec_ms = started_at.elapsed().as_secs_f64() * 1000.0;
        for warning in &built.warnings {
            tracing::warn!(container = %record.id, %warning, "spec adjusted");
        }
        for volume in &built.volumes {
            std::fs::create_dir_all(&volume.host_path)
                .map_err(|e| io("create volume", &volume.host_path, e))?;
        }
        for source in &built.missing_sources {
            std::fs::create_dir_all(source).map_err(|e| io("create mount source", source, e))?;
        }
        let mut oci = built.spec;
        let user = oci.process().as_ref().map(|p| LinuxContainerUser {
            uid: i64::from(p.user().uid()),
            gid: i64::from(p.user().gid()),
            supplemental_groups: p
                .user()
                .additional_gids()
                .iter()
                .flatten()
                .map(|g| i64::from(*g))
                .collect(),
        });
        spec::adapt_for_libcontainer(&mut oci);
        let config_path = record.bundle.join("config.json");
        oci.save(&config_path)
            .map_err(|e| Error::Internal(format!("write {}: {e}", config_path.display())))?;

        if !record.log_path.is_empty() {
            if let Some(parent) = Path::new(&record.log_path).parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("create log dir", parent, e))?;
            }
        }
        let mut monitor_config =
            MonitorConfig::new(&record.id, &record.bundle, &self.paths.libcontainer_root);
        monitor_config.socket = record.socket();
        monitor_config.exit_file = record.exit_file.clone();
        monitor_config.log_path = PathBuf::from(&record.log_path);
        monitor_config.log_max_line_bytes = self.paths.log_max_line_bytes;
        monitor_config.tty = self.config.tty;
        monitor_config.stdin = self.config.stdin;
        monitor_config.stdin_once = self.config.stdin_once;
        let monitor_config_path = record.bundle.join(monitor::CONFIG_FILE);
        monitor_config
            .save(&monitor_config_path)
            .map_err(Error::Runtime)?;
        let bundle_ms = started_at.elapsed().as_secs_f64() * 1000.0;
        let started = monitor::spawn_monitor(&self.paths.monitor_binary, &monitor_config_path)
            .map_err(Error::Runtime)?;
        tracing::debug!(
            container = %record.id,
            mounted_ms,
            spec_ms,
            bundle_ms,
            monitor_ms = started_at.elapsed().as_secs_f64() * 1000.0,
            "container create steps (cumulative)"
        );
        let socket = record.socket();
        rollback.push("monitor", move || {
            let _ = monitor::delete(&socket);
        });
        let mut record = self.record;
        record.user = user;
        record.pid = started.container_pid;
        Ok((CreateRollback(rollback), record))
    }
}

async fn remove_default_cgroup_parent_blocking() {
    let _ = tokio::task::spawn_blocking(remove_default_cgroup_parent).await;
}

/// The cgroup parent of containers whose pod names none (`spec::cgroups_path`): removed
/// when its last container goes (an `rmdir` of a cgroup still in use just fails).
fn remove_default_cgroup_parent() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let _ = std::fs::remove_dir(hierarchy.path().join("corral"));
    }
    let _ = std::fs::remove_dir("/sys/fs/cgroup/corral");
}

/// Where a container's files are, by ID (as [`ContainerManager::create`] places them).
struct ContainerFiles {
    id: String,
    socket: PathBuf,
    bundle: PathBuf,
    layer_dir: PathBuf,
    exit_file: PathBuf,
    /// libcontainer's state directory of the container.
    state_dir: PathBuf,
}

impl ContainerFiles {
    fn of(paths: &ContainerPaths, id: &str) -> ContainerFiles {
        ContainerFiles {
            id: id.to_string(),
            socket: paths
                .sockets_dir
                .join(format!("{}.sock", id.get(..16).unwrap_or(id))),
            bundle: paths.bundles_dir.join(id),
            layer_dir: paths.layers_dir.join(id),
            exit_file: paths.exits_dir.join(format!("{id}.json")),
            state_dir: paths.libcontainer_root.join(id),
        }
    }
}

/// Deletes the container through its monitor (or, without one, through its cgroup),
/// unmounts and removes its files.
fn tear_down_files(files: &ContainerFiles) {
    let deleted = files.socket.exists()
        && match monitor::delete(&files.socket) {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(container = %files.id, %error, "monitor delete failed");
                false
            }
        };
    if !deleted {
        remove_without_monitor(files);
    }
    if let Err(error) = overlay::unmount(&files.bundle.join("rootfs")) {
        tracing::warn!(container = %files.id, %error, "could not unmount rootfs");
    }
    for dir in [&files.bundle, &files.layer_dir] {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(container = %files.id, %error, "could not remove dir"),
        }
    }
    let _ = std::fs::remove_file(&files.exit_file);
    let _ = std::fs::remove_file(&files.socket);
}

/// What the monitor's delete does, for a container whose monitor is gone (killed, or out
/// of memory): kill what is left in the container's cgroup (from its bundle's spec), remove
/// the cgroup and libcontainer's state.
fn remove_without_monitor(files: &ContainerFiles) {
    if let Err(error) = monitor::cgroups::remove_bundle_cgroup(&files.bundle) {
        tracing::warn!(container = %files.id, %error, "could not remove the cgroup");
    }
    match std::fs::remove_dir_all(&files.state_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(container = %files.id, %error, "could not remove state"),
    }
}

/// Removes containers that have files but no record: an agent killed during a
/// CreateContainer, after the monitor started and before the record was written. Their
/// monitor kills and deletes the never-started container; their mounts and dirs go.
fn sweep_orphans(paths: &ContainerPaths, known: &std::collections::HashSet<String>) -> usize {
    let mut orphans = std::collections::BTreeSet::new();
    for dir in [&paths.bundles_dir, &paths.layers_dir] {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_id = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if is_id && !known.contains(&name) {
                orphans.insert(name);
            }
        }
    }
    for id in &orphans {
        tracing::warn!(container = %id, "removing a container left without a record");
        let files = ContainerFiles::of(paths, id);
        let running = |socket: &Path| {
            monitor::state(socket).is_ok_and(|s| s.status == monitor::Status::Running)
        };
        if files.socket.exists() && running(&files.socket) {
            let _ = monitor::signal(&files.socket, libc::SIGKILL, true);
            let deadline = Instant::now() + Duration::from_secs(5);
            while running(&files.socket) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        tear_down_files(&files);
    }
    orphans.len()
}

fn sandbox_info(sandbox: &SandboxRecord) -> SandboxInfo {
    SandboxInfo {
        id: sandbox.id.clone(),
        name: sandbox.name.clone(),
        namespace: sandbox.namespace.clone(),
        uid: sandbox.uid.clone(),
        hostname: sandbox.hostname.clone(),
        netns: sandbox.netns.clone(),
        ipcns: sandbox.ipcns.clone(),
        utsns: sandbox.utsns.clone(),
        pidns: sandbox.pidns.clone(),
        pid_mode: sandbox.pid_mode,
        ipc_mode: sandbox.ipc_mode,
        network_mode: sandbox.network_mode,
        sandbox_dir: sandbox.dir.clone(),
        shm: sandbox.shm.clone(),
        cgroup_parent: sandbox.cgroup_parent.clone(),
        annotations: sandbox
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// A signal by name (`SIGTERM`, `TERM`) or number.
fn parse_signal(name: &str) -> Option<i32> {
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    if let Ok(number) = name.parse::<i32>() {
        return Some(number);
    }
    let full = if name.starts_with("SIG") {
        name.to_string()
    } else {
        format!("SIG{name}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_signal_forms() {
        assert_eq!(parse_signal("SIGINT"), Some(libc::SIGINT));
        assert_eq!(parse_signal("QUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal(""), None);
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
}
