//! Node tests of the foundation: the agent starts, answers Version/Status/RuntimeConfig/
//! UpdateRuntimeConfig, refuses a second instance, shuts down cleanly and rejects bad config.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;

use common::agent::{TestAgent, test_dir};
use k8s_cri::v1::{
    CgroupDriver, CheckpointContainerRequest, NetworkConfig, RuntimeConfig, RuntimeConfigRequest,
    StatusRequest, UpdateRuntimeConfigRequest, VersionRequest,
};

fn condition(status: &k8s_cri::v1::StatusResponse, kind: &str) -> k8s_cri::v1::RuntimeCondition {
    status
        .status
        .as_ref()
        .expect("status is set")
        .conditions
        .iter()
        .find(|c| c.r#type == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {status:?}"))
        .clone()
}

async fn status(agent: &TestAgent, verbose: bool) -> k8s_cri::v1::StatusResponse {
    let mut client = agent.client().await.unwrap();
    client
        .runtime
        .status(StatusRequest { verbose })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_version_reports_corral_and_v1() {
    let agent = TestAgent::start().await.unwrap();
    let mut client = agent.client().await.unwrap();
    let version = client
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "corral");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(version.version, "0.1.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_status_network_ready_flips_when_config_appears() {
    let agent = TestAgent::start().await.unwrap();

    let before = status(&agent, false).await;
    assert!(condition(&before, "RuntimeReady").status, "{before:?}");
    let network = condition(&before, "NetworkReady");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network
            .message
            .contains(&agent.cni_conf_dir.display().to_string()),
        "the message names the config dir: {}",
        network.message
    );
    assert!(before.info.is_empty(), "info only when verbose");

    agent
        .install_cni_config(
            "10-test.conflist",
            r#"{"cniVersion":"1.0.0","name":"testnet","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
            &["bridge", "portmap"],
        )
        .unwrap();
    let after = status(&agent, true).await;
    let network = condition(&after, "NetworkReady");
    assert!(network.status, "{network:?}");
    assert!(network.reason.is_empty());
    let info: serde_json::Value = serde_json::from_str(&after.info["network"]).unwrap();
    assert_eq!(info["name"], "testnet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_status_verbose_reports_effective_config() {
    let agent = TestAgent::start().await.unwrap();
    let status = status(&agent, true).await;
    let config: serde_json::Value = serde_json::from_str(&status.info["config"]).unwrap();
    assert_eq!(config["root"], agent.root.display().to_string());
    assert_eq!(config["socket"], agent.socket.display().to_string());
    assert_eq!(config["runtime"]["cgroup_driver"], "cgroupfs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_runtime_config_reports_cgroupfs() {
    let agent = TestAgent::start().await.unwrap();
    let mut client = agent.client().await.unwrap();
    let response = client
        .runtime
        .runtime_config(RuntimeConfigRequest::default())
        .await
        .unwrap()
        .into_inner();
    let driver = response.linux.expect("linux config").cgroup_driver;
    assert_eq!(driver, CgroupDriver::Cgroupfs as i32);
}

fn pod_cidr_request(cidr: &str) -> UpdateRuntimeConfigRequest {
    UpdateRuntimeConfigRequest {
        runtime_config: Some(RuntimeConfig {
            network_config: Some(NetworkConfig {
                pod_cidr: cidr.to_string(),
            }),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_update_runtime_config_pod_cidr_persists_across_restart() {
    let mut agent = TestAgent::start().await.unwrap();
    let mut client = agent.client().await.unwrap();
    client
        .runtime
        .update_runtime_config(pod_cidr_request("10.88.0.0/16,fd00:88::/64"))
        .await
        .unwrap();
    let cidrs = status(&agent, true).await.info["podCIDRs"].clone();
    assert_eq!(cidrs, r#"["10.88.0.0/16","fd00:88::/64"]"#);

    let err = client
        .runtime
        .update_runtime_config(pod_cidr_request("10.88.0.0/99"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("10.88.0.0/99"), "{}", err.message());

    drop(client);
    assert!(agent.terminate().await.unwrap().success());
    agent.spawn().await.unwrap();
    let cidrs = status(&agent, true).await.info["podCIDRs"].clone();
    assert_eq!(
        cidrs, r#"["10.88.0.0/16","fd00:88::/64"]"#,
        "the invalid update changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_rpc_not_built_yet_is_unimplemented() {
    let agent = TestAgent::start().await.unwrap();
    let mut client = agent.client().await.unwrap();
    let err = client
        .runtime
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_second_instance_on_same_root_refused() {
    let agent = TestAgent::start().await.unwrap();
    // Same state root, different socket: the state lock is what refuses it.
    let other_config = agent.dir.path().join("second.toml");
    let text = std::fs::read_to_string(&agent.config_path)
        .unwrap()
        .replace("run/corral.sock", "run/second.sock");
    std::fs::write(&other_config, text).unwrap();
    let output =
        TestAgent::run_corral(&["serve", "--config", other_config.to_str().unwrap()]).unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is in use by another corral"), "{stderr}");
    assert!(
        stderr.contains(&agent.pid().unwrap().to_string()),
        "{stderr}"
    );
    assert!(!agent.run_dir.join("second.sock").exists());

    // The first agent is unharmed.
    let mut client = agent.client().await.unwrap();
    client
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sigterm_removes_socket_and_exits_zero() {
    let mut agent = TestAgent::start().await.unwrap();
    let mode = std::fs::metadata(&agent.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660);
    let status = agent.terminate().await.unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}; log:\n{}", agent.log());
    assert!(!agent.socket.exists(), "socket removed");
    assert!(agent.log().contains("corral stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_restart_after_kill9_replaces_stale_socket() {
    let mut agent = TestAgent::start().await.unwrap();
    let status = agent.kill9().await.unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(
        agent.socket.exists(),
        "a crash leaves the socket file behind"
    );
    agent.spawn().await.unwrap();
    let mut client = agent.client().await.unwrap();
    client
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
    assert!(agent.log().contains("replacing stale socket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_json_logs_have_one_span_per_request() {
    let agent = TestAgent::start_with("log_level = \"debug\"", &["--log-format", "json"])
        .await
        .unwrap();
    let mut client = agent.client().await.unwrap();
    client
        .runtime
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    let log = agent.log();
    let failed: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["span"]["method"] == "CheckpointContainer")
        .collect();
    assert_eq!(failed.len(), 1, "log:\n{log}");
    assert_eq!(failed[0]["code"], "Unimplemented");
    assert!(failed[0]["duration_ms"].as_f64().is_some(), "{}", failed[0]);
}

fn bad_config_error(text: &str) -> String {
    let dir = test_dir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let output = TestAgent::run_corral(&["serve", "--config", path.to_str().unwrap()]).unwrap();
    assert!(!output.status.success(), "bad config must not start");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn test_bad_config_unknown_key_is_one_line_error() {
    let stderr = bad_config_error("root = \"/tmp/x\"\nno_such_key = true\n");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("config.toml:2:1: unknown field `no_such_key`"),
        "{stderr}"
    );
}

#[test]
fn test_bad_config_invalid_value_is_one_line_error() {
    let stderr = bad_config_error("[runtime]\ncgroup_driver = \"lxc\"\n");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("config.toml:2:"), "{stderr}");

    let stderr = bad_config_error("socket = \"relative.sock\"\n");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("socket: relative.sock is not an absolute path"),
        "{stderr}"
    );
}

#[test]
fn test_config_default_command_prints_shipped_file() {
    let output = TestAgent::run_corral(&["config", "default"]).unwrap();
    assert!(output.status.success());
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config.toml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8(output.stdout).unwrap(), shipped);
}
