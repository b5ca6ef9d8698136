//! Starts the real `corral` binary on temp roots and a temp socket.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use corral::client::CriClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The prefix of every temp dir, netns, cgroup and process the node tests create; the leak
/// check after the suite looks for it.
pub const TEST_PREFIX: &str = "corral-test-";

/// The `corral` binary cargo built for these tests.
pub fn corral_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corral"))
}

/// Node tests run as root; they fail loudly instead of passing silently without it.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "node tests need root (run `make test` as root)"
    );
}

/// A temp dir named with the test prefix.
pub fn test_dir() -> anyhow::Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new().prefix(TEST_PREFIX).tempdir()?)
}

/// A running `corral serve` on its own temp roots.
#[derive(Debug)]
pub struct TestAgent {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dir: PathBuf,
    pub certs_dir: PathBuf,
    pub netns_dir: PathBuf,
    pub log_path: PathBuf,
    extra_args: Vec<String>,
    child: Option<Child>,
}

impl TestAgent {
    /// Starts an agent with the default test config.
    pub async fn start() -> anyhow::Result<TestAgent> {
        TestAgent::start_with("", &[]).await
    }

    /// Starts an agent whose config file has `extra_toml` appended (top-level keys only:
    /// it is written before the tables) and whose command line has `args` appended.
    pub async fn start_with(extra_toml: &str, args: &[&str]) -> anyhow::Result<TestAgent> {
        TestAgent::start_full(extra_toml, "", args).await
    }

    /// Starts an agent with extra keys for the `[images]` section.
    pub async fn start_with_images(images_toml: &str) -> anyhow::Result<TestAgent> {
        TestAgent::start_full("", images_toml, &[]).await
    }

    async fn start_full(
        extra_toml: &str,
        images_toml: &str,
        args: &[&str],
    ) -> anyhow::Result<TestAgent> {
        require_root();
        let dir = test_dir()?;
        let base = dir.path().to_path_buf();
        let agent = TestAgent {
            config_path: base.join("config.toml"),
            socket: base.join("run/corral.sock"),
            root: base.join("root"),
            run_dir: base.join("run"),
            cni_conf_dir: base.join("net.d"),
            cni_bin_dir: base.join("cni-bin"),
            certs_dir: base.join("certs.d"),
            netns_dir: base.join("netns"),
            log_path: base.join("corral.log"),
            extra_args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            dir,
        };
        std::fs::create_dir_all(&agent.cni_conf_dir)?;
        std::fs::create_dir_all(&agent.cni_bin_dir)?;
        std::fs::create_dir_all(&agent.certs_dir)?;
        let config = format!(
            "root = {root:?}\nrun_dir = {run:?}\nsocket = {socket:?}\n{extra_toml}\n\
             [images]\ncerts_dir = {certs:?}\n{images_toml}\n\
             [pod_sandbox]\nnetns_dir = {netns:?}\n\
             [cni]\nconf_dirs = [{conf:?}]\nbin_dirs = [{bin:?}, \"/usr/lib/cni\", \"/opt/cni/bin\"]\n\
             [metrics]\naddress = \"127.0.0.1:0\"\n",
            certs = agent.certs_dir,
            netns = agent.netns_dir,
            root = agent.root,
            run = agent.run_dir,
            socket = agent.socket,
            conf = agent.cni_conf_dir,
            bin = agent.cni_bin_dir,
        );
        std::fs::write(&agent.config_path, config)?;
        let mut agent = agent;
        agent.spawn().await?;
        Ok(agent)
    }

    /// Starts (or restarts) the process and waits until it answers on its socket.
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(corral_binary())
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn corral serve")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut client) = CriClient::connect(&self.socket).await {
                if client
                    .runtime
                    .version(k8s_cri::v1::VersionRequest::default())
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!("corral exited early ({status}); log:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "corral did not answer on {}; log:\n{}",
                    self.socket.display(),
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A fresh client connection.
    pub async fn client(&self) -> anyhow::Result<CriClient> {
        Ok(CriClient::connect(&self.socket).await?)
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The agent's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits for the exit. Async, so that this test's own client
    /// connections keep answering the server's HTTP/2 shutdown handshake meanwhile.
    pub async fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal_and_wait(Signal::SIGTERM).await
    }

    /// Kills the agent with SIGKILL, as a crash would.
    pub async fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal_and_wait(Signal::SIGKILL).await
    }

    async fn signal_and_wait(&mut self, signal: Signal) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("agent is not running")?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, signal)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("corral did not exit after {signal}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Runs `corral` with `args` to completion (for one-shot commands and refused starts).
    pub fn run_corral(args: &[&str]) -> anyhow::Result<std::process::Output> {
        Ok(Command::new(corral_binary())
            .args(args)
            .stdin(Stdio::null())
            .output()?)
    }

    /// Writes `<certs_dir>/<host>/hosts.toml`.
    pub fn write_hosts_toml(&self, host: &str, body: &str) -> anyhow::Result<()> {
        let dir = self.certs_dir.join(host);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("hosts.toml"), body)?;
        Ok(())
    }

    /// Installs a CNI network config and fake plugin executables named by it.
    pub fn install_cni_config(
        &self,
        file: &str,
        body: &str,
        plugins: &[&str],
    ) -> anyhow::Result<()> {
        for plugin in plugins {
            write_executable(&self.cni_bin_dir.join(plugin), "#!/bin/sh\nexit 0\n")?;
        }
        std::fs::write(self.cni_conf_dir.join(file), body)?;
        Ok(())
    }
}

impl Drop for TestAgent {
    /// Stops an agent the test left running: SIGTERM, then SIGKILL if it has not exited
    /// within a few seconds (a client connection that can no longer answer the HTTP/2
    /// shutdown handshake would otherwise hold it for the whole grace period).
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

pub fn write_executable(path: &Path, body: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o755)
        .open(path)?;
    file.write_all(body.as_bytes())?;
    Ok(())
}
