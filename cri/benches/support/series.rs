//! One benchmark series: a runtime started on temp roots with a CNI network of its own, its
//! CPU accounted in a cgroup of the benchmark, one CRI connection reused for every request;
//! stopped again (and whatever a failed run left mounted unmounted) by `finish`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use corral::client::CriClient;

use super::cri::{pull, write_network};
use super::meter::{BenchCgroups, Meter};
use super::report::tail;
use crate::common::agent::{TestAgent, test_dir};
use crate::common::containerd::{
    Containerd, ContainerdOptions, can_lower_oom_score_adj, unmount_under,
};
use crate::common::network::TestNetwork;

/// Corral logs every request's duration and every CNI plugin run at debug level.
pub const CORRAL_LOG_LEVEL: &str = "log_level = \"debug\"";

/// A series' runtime as a benchmark drives it.
pub struct Target<'a> {
    pub client: &'a mut CriClient,
    pub network: &'a TestNetwork,
    pub meter: &'a Meter,
    /// The series' temp dir, for what kubelet would prepare (pod log dirs, pod dirs).
    pub dir: &'a Path,
    /// The runtime's daemon.
    pub daemon: Option<u32>,
}

/// Corral (`corral serve`, the binary cargo built) with the series' network.
pub struct CorralSeries {
    pub agent: TestAgent,
    pub network: TestNetwork,
    pub meter: Meter,
    pub client: CriClient,
}

impl CorralSeries {
    /// Starts an agent whose config has `extra_toml` (top-level keys first, then any
    /// tables) on network `index`, accounted as `corral-<index>`.
    pub async fn start(cgroups: &BenchCgroups, index: u32, extra_toml: &str) -> Result<Self> {
        let agent = TestAgent::start_with(extra_toml, &[]).await?;
        let network = write_network(&agent.cni_conf_dir, agent.dir.path(), index)?;
        let meter = cgroups.account(&format!("corral-{index}"), agent.dir.path())?;
        let client = agent.client().await?;
        Ok(CorralSeries {
            agent,
            network,
            meter,
            client,
        })
    }

    /// The agent as the benchmark drives it; its temp dir is the series' dir.
    pub fn target(&mut self) -> Target<'_> {
        Target {
            client: &mut self.client,
            network: &self.network,
            meter: &self.meter,
            dir: self.agent.dir.path(),
            daemon: self.agent.pid(),
        }
    }

    /// Stops the agent and unmounts what a failed run left under its dir (pinned
    /// namespaces, /dev/shm) before the dir goes. Returns the series' `outcome`, on failure
    /// with the end of the agent's log, and the whole log.
    pub async fn finish<T>(self, outcome: Result<T>) -> Result<(T, String)> {
        let CorralSeries {
            mut agent,
            network,
            client,
            ..
        } = self;
        drop(client);
        let _ = agent.terminate().await;
        unmount_under(agent.dir.path(), "corral")?;
        let log = agent.log();
        let value = outcome.with_context(|| format!("corral log:\n{}", tail(&log)))?;
        drop(network);
        Ok((value, log))
    }
}

/// Debian's containerd with the series' network, its sandbox (pause) image `pause` pulled
/// from `registry` before the clock starts.
pub struct ContainerdSeries {
    pub containerd: Containerd,
    pub network: TestNetwork,
    pub meter: Meter,
    pub client: CriClient,
    /// The benchmark's own temp dir of the series: the conflist, IPAM data, pod log dirs.
    dir: tempfile::TempDir,
}

impl ContainerdSeries {
    /// Starts containerd on network `index`, with CNI plugins from `/usr/lib/cni` (as
    /// Corral's), network namespaces pinned under its temp state dir (as Corral's are) and,
    /// where this process lacks `CAP_SYS_RESOURCE`, `restrict_oom_score_adj`; pulls `pause`;
    /// accounts it as `containerd-<index>`.
    pub async fn start(
        cgroups: &BenchCgroups,
        index: u32,
        registry: &str,
        pause: &str,
    ) -> Result<Self> {
        let dir = test_dir()?;
        let conf_dir = dir.path().join("net.d");
        std::fs::create_dir_all(&conf_dir)?;
        let network = write_network(&conf_dir, dir.path(), index)?;
        let containerd = Containerd::start_with(ContainerdOptions {
            http_registries: vec![registry.to_owned()],
            cni_bin_dir: Some(PathBuf::from("/usr/lib/cni")),
            cni_conf_dir: Some(conf_dir),
            sandbox_image: Some(pause.to_owned()),
            netns_under_state_dir: true,
            restrict_oom_score_adj: !can_lower_oom_score_adj(),
        })
        .await?;
        let mut client = containerd.client().await?;
        pull(&mut client, pause)
            .await
            .with_context(|| format!("containerd log:\n{}", containerd.log()))?;
        let meter = cgroups.account(&format!("containerd-{index}"), containerd.dir())?;
        Ok(ContainerdSeries {
            containerd,
            network,
            meter,
            client,
            dir,
        })
    }

    /// containerd as the benchmark drives it.
    pub fn target(&mut self) -> Target<'_> {
        Target {
            client: &mut self.client,
            network: &self.network,
            meter: &self.meter,
            dir: self.dir.path(),
            daemon: self.containerd.pid(),
        }
    }

    /// Stops containerd (and any shim left) and unmounts what it left; returns the series'
    /// `outcome`, on failure with the end of containerd's log.
    pub fn finish<T>(self, outcome: Result<T>) -> Result<T> {
        let ContainerdSeries {
            containerd,
            network,
            client,
            dir,
            ..
        } = self;
        drop(client);
        let log = containerd.log();
        containerd.stop()?;
        let value = outcome.with_context(|| format!("containerd log:\n{}", tail(&log)))?;
        drop((network, dir));
        Ok(value)
    }
}
