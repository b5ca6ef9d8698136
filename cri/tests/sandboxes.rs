//! Node tests of pod sandboxes with Debian's CNI plugins: addresses that answer, pods that
//! reach each other, host ports, sandbox files, host-network pods, rollback of a failed ADD,
//! idempotent stop/remove, restarts and vanished namespaces. Everything is checked gone after.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::agent::TestAgent;
use common::network::{TestNetwork, failing_plugin, recording_plugin};
use k8s_cri::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest,
    NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata,
    PodSandboxState, PodSandboxStateValue, PodSandboxStatus, PodSandboxStatusRequest, PortMapping,
    RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.to_string(),
            uid: format!("uid-{name}"),
            namespace: "corral-test".to_string(),
            attempt: 0,
        }),
        hostname: name.to_string(),
        log_directory: "/var/log/pods/corral-test".to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        ..PodSandboxConfig::default()
    }
}

async fn run(agent: &TestAgent, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    let mut client = agent.client().await.unwrap();
    let request = RunPodSandboxRequest {
        config: Some(config),
        runtime_handler: String::new(),
    };
    Ok(client
        .runtime
        .run_pod_sandbox(request)
        .await?
        .into_inner()
        .pod_sandbox_id)
}

async fn status(agent: &TestAgent, id: &str) -> PodSandboxStatus {
    let mut client = agent.client().await.unwrap();
    let request = PodSandboxStatusRequest {
        pod_sandbox_id: id.to_string(),
        verbose: false,
    };
    client
        .runtime
        .pod_sandbox_status(request)
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap()
}

async fn stop_and_remove(agent: &TestAgent, id: &str) {
    let mut client = agent.client().await.unwrap();
    for _ in 0..2 {
        client
            .runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .unwrap();
    }
    for _ in 0..2 {
        client
            .runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .unwrap();
    }
}

async fn list_ids(agent: &TestAgent, filter: Option<PodSandboxFilter>) -> Vec<String> {
    let mut client = agent.client().await.unwrap();
    client
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest { filter })
        .await
        .unwrap()
        .into_inner()
        .items
        .into_iter()
        .map(|item| item.id)
        .collect()
}

fn ping(from_netns: Option<&Path>, ip: &str) -> bool {
    let mut command = match from_netns {
        Some(netns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", netns.display())).arg("ping");
            c
        }
        None => Command::new("ping"),
    };
    command
        .args(["-c", "1", "-W", "2", ip])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn mounts_under(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|line| line.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|e| e.count()).unwrap_or(0)
}

/// Nothing of any pod is left: no mount, pin, sandbox dir, lease or veth.
fn assert_nothing_left(agent: &TestAgent, network: Option<&TestNetwork>) {
    assert!(
        mounts_under(agent.dir.path()).is_empty(),
        "{:?}",
        mounts_under(agent.dir.path())
    );
    assert_eq!(entries(&agent.netns_dir), 0, "pinned netns left");
    assert_eq!(
        entries(&agent.run_dir.join("sandboxes")),
        0,
        "sandbox dirs left"
    );
    if let Some(network) = network {
        assert!(
            network.leases().is_empty(),
            "leases left: {:?}",
            network.leases()
        );
        assert_eq!(
            network.attached_veths(),
            0,
            "veths left on {}",
            network.bridge
        );
    }
}

/// The host PID of the pod's init (pods share a PID namespace by default).
async fn pod_init_pid(agent: &TestAgent, id: &str) -> u32 {
    let mut client = agent.client().await.unwrap();
    let verbose = client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    u32::try_from(info["podInitPid"].as_u64().expect("init pid")).unwrap()
}

fn netns_path(agent: &TestAgent, id: &str) -> std::path::PathBuf {
    agent.netns_dir.join(format!("corral-{}", &id[..24]))
}

fn sandbox_dir(agent: &TestAgent, id: &str) -> std::path::PathBuf {
    agent.run_dir.join("sandboxes").join(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pod_gets_ip_that_answers_and_right_files() {
    let agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let mut config = pod_config("web");
    config.hostname = "web-0".to_string();
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["corral-test.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    config.linux = Some(LinuxPodSandboxConfig {
        sysctls: HashMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_string(),
            "0".to_string(),
        )]),
        ..LinuxPodSandboxConfig::default()
    });
    let id = run(&agent, config).await.unwrap();
    let pod = status(&agent, &id).await;
    assert_eq!(pod.state, PodSandboxState::SandboxReady as i32);
    let ip = pod.network.unwrap().ip;
    assert!(ip.starts_with(&format!("{}.", network.prefix)), "{ip}");
    assert!(ping(None, &ip), "pod {ip} answers ping from the host");

    let dir = sandbox_dir(&agent, &id);
    let hostname = Command::new("nsenter")
        .arg(format!("--uts={}", dir.join("ns/uts").display()))
        .arg("hostname")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hostname.stdout).trim(), "web-0");
    assert_eq!(
        std::fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        "search corral-test.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );
    let hosts = std::fs::read_to_string(dir.join("hosts")).unwrap();
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");
    assert!(hosts.contains(&format!("{ip}\tweb-0")), "{hosts}");
    let sysctl = Command::new("nsenter")
        .arg(format!("--net={}", netns_path(&agent, &id).display()))
        .args(["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&sysctl.stdout).trim(), "0");
    assert!(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&dir.join("shm").display().to_string()),
        "pod /dev/shm is a mount of its own"
    );

    stop_and_remove(&agent, &id).await;
    assert!(!ping(None, &ip), "address released");
    assert!(list_ids(&agent, None).await.is_empty());
    assert_nothing_left(&agent, Some(&network));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_two_pods_reach_each_other() {
    let agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let a = run(&agent, pod_config("pod-a")).await.unwrap();
    let b = run(&agent, pod_config("pod-b")).await.unwrap();
    let ip_a = status(&agent, &a).await.network.unwrap().ip;
    let ip_b = status(&agent, &b).await.network.unwrap().ip;
    assert_ne!(ip_a, ip_b);
    assert!(ping(Some(&netns_path(&agent, &a)), &ip_b), "a reaches b");
    assert!(ping(Some(&netns_path(&agent, &b)), &ip_a), "b reaches a");
    stop_and_remove(&agent, &a).await;
    stop_and_remove(&agent, &b).await;
    assert_nothing_left(&agent, Some(&network));
}

/// Kills the listener if the test fails before it exits.
struct Listener(std::process::Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_host_port_reaches_listener_in_pod() {
    let agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let mut config = pod_config("ports");
    config.port_mappings = vec![PortMapping {
        protocol: 0,
        container_port: 8080,
        host_port: i32::from(network.host_port),
        host_ip: String::new(),
    }];
    let id = run(&agent, config).await.unwrap();
    let _listener = Listener(
        Command::new("nsenter")
            .arg(format!("--net={}", netns_path(&agent, &id).display()))
            .args([
                "busybox",
                "nc",
                "-l",
                "-p",
                "8080",
                "-e",
                "echo",
                "hello-from-pod",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", network.host_port)) {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            if !text.is_empty() {
                break text;
            }
        }
        assert!(Instant::now() < deadline, "host port never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(answer.trim(), "hello-from-pod");
    drop(_listener);
    stop_and_remove(&agent, &id).await;
    assert_nothing_left(&agent, Some(&network));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_host_network_pod_gets_no_namespace_and_no_cni_call() {
    let agent = TestAgent::start().await.unwrap();
    let (plugin, calls) = recording_plugin(&agent).unwrap();
    std::fs::write(
        agent.cni_conf_dir.join("10-record.conflist"),
        format!(r#"{{"cniVersion":"1.0.0","name":"corral-test-record","plugins":[{plugin}]}}"#),
    )
    .unwrap();
    let mut config = pod_config("hostnet");
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                network: NamespaceMode::Node as i32,
                pid: NamespaceMode::Node as i32,
                ipc: NamespaceMode::Node as i32,
                ..NamespaceOption::default()
            }),
            ..LinuxSandboxSecurityContext::default()
        }),
        ..LinuxPodSandboxConfig::default()
    });
    let id = run(&agent, config).await.unwrap();
    let pod = status(&agent, &id).await;
    assert_eq!(pod.network.unwrap_or_default().ip, "");
    let options = pod.linux.unwrap().namespaces.unwrap().options.unwrap();
    assert_eq!(options.network, NamespaceMode::Node as i32);
    assert_eq!(entries(&agent.netns_dir), 0, "no network namespace");
    assert!(
        !sandbox_dir(&agent, &id).join("ns").exists(),
        "no namespace pins at all"
    );
    stop_and_remove(&agent, &id).await;
    assert!(
        !calls.exists(),
        "no CNI call: {:?}",
        std::fs::read_to_string(&calls)
    );
    assert_nothing_left(&agent, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_failing_plugin_on_add_leaves_nothing() {
    let agent = TestAgent::start().await.unwrap();
    let fail = failing_plugin(&agent).unwrap();
    let network = TestNetwork::install(&agent, &[fail]).unwrap();
    let err = run(&agent, pod_config("doomed")).await.unwrap_err();
    assert!(
        err.message().contains("corral-test-fail refuses"),
        "{err:?}"
    );
    assert!(list_ids(&agent, None).await.is_empty());
    assert!(
        entries(&agent.root.join("state/sandboxes")) == 0,
        "no record"
    );
    assert_nothing_left(&agent, Some(&network));
    // The name is free again: a retry gets a clear answer (the same failure), not "reserved".
    let again = run(&agent, pod_config("doomed")).await.unwrap_err();
    assert!(
        again.message().contains("corral-test-fail refuses"),
        "{again:?}"
    );
    assert_nothing_left(&agent, Some(&network));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_invalid_requests_rejected_and_leave_nothing() {
    let agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let mut bad_sysctl = pod_config("bad-sysctl");
    bad_sysctl.linux = Some(LinuxPodSandboxConfig {
        sysctls: HashMap::from([("kernel.panic".to_string(), "1".to_string())]),
        ..LinuxPodSandboxConfig::default()
    });
    let mut no_metadata = pod_config("x");
    no_metadata.metadata = None;
    let mut bad_dns = pod_config("bad-dns");
    bad_dns.dns_config = Some(DnsConfig {
        servers: vec!["not-an-ip".into()],
        ..DnsConfig::default()
    });
    for config in [bad_sysctl, no_metadata, bad_dns] {
        let err = run(&agent, config).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    }
    let mut client = agent.client().await.unwrap();
    let err = client
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("handler")),
            runtime_handler: "kata".to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(list_ids(&agent, None).await.is_empty());
    assert_nothing_left(&agent, Some(&network));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_same_name_retry_gets_the_same_sandbox() {
    let agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let (first, second) = tokio::join!(
        run(&agent, pod_config("twice")),
        run(&agent, pod_config("twice"))
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(first, second);
    assert_eq!(run(&agent, pod_config("twice")).await.unwrap(), first);
    assert_eq!(list_ids(&agent, None).await, vec![first.clone()]);
    stop_and_remove(&agent, &first).await;
    assert_nothing_left(&agent, Some(&network));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_list_filters_by_id_state_and_labels() {
    let agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let a = run(&agent, pod_config("list-a")).await.unwrap();
    let b = run(&agent, pod_config("list-b")).await.unwrap();
    let mut client = agent.client().await.unwrap();
    client
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: b.clone(),
        })
        .await
        .unwrap();
    let by_id = PodSandboxFilter {
        id: a[..12].to_string(),
        ..PodSandboxFilter::default()
    };
    assert_eq!(list_ids(&agent, Some(by_id)).await, vec![a.clone()]);
    let ready = PodSandboxFilter {
        state: Some(PodSandboxStateValue {
            state: PodSandboxState::SandboxReady as i32,
        }),
        ..PodSandboxFilter::default()
    };
    assert_eq!(list_ids(&agent, Some(ready)).await, vec![a.clone()]);
    let labelled = PodSandboxFilter {
        label_selector: HashMap::from([("app".to_string(), "list-b".to_string())]),
        ..PodSandboxFilter::default()
    };
    assert_eq!(list_ids(&agent, Some(labelled)).await, vec![b.clone()]);
    assert_eq!(list_ids(&agent, None).await.len(), 2);
    stop_and_remove(&agent, &a).await;
    stop_and_remove(&agent, &b).await;
    assert_nothing_left(&agent, Some(&network));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_unknown_ids_stop_and_remove_succeed_status_not_found() {
    let agent = TestAgent::start().await.unwrap();
    stop_and_remove(&agent, "0123456789abcdef").await;
    let mut client = agent.client().await.unwrap();
    let err = client
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: "0123456789abcdef".to_string(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pods_survive_agent_kill9_and_restart() {
    let mut agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let id = run(&agent, pod_config("survivor")).await.unwrap();
    let ip = status(&agent, &id).await.network.unwrap().ip;
    agent.kill9().await.unwrap();
    assert!(
        ping(None, &ip),
        "the pod keeps its network while the agent is down"
    );
    agent.spawn().await.unwrap();
    let pod = status(&agent, &id).await;
    assert_eq!(pod.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(pod.network.unwrap().ip, ip);
    // The name is still taken by the recovered pod.
    assert_eq!(run(&agent, pod_config("survivor")).await.unwrap(), id);
    stop_and_remove(&agent, &id).await;
    assert_nothing_left(&agent, Some(&network));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_restart_undoes_a_creation_cut_short() {
    let mut agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let id = run(&agent, pod_config("cut-short")).await.unwrap();
    let init_pid = pod_init_pid(&agent, &id).await;
    // An agent killed inside RunPodSandbox, after the setup and before the record: the
    // record exists only as the creation marker.
    agent.kill9().await.unwrap();
    let state = agent
        .root
        .join("state/sandboxes")
        .join(format!("{id}.json"));
    let marker = agent
        .run_dir
        .join("sandboxes")
        .join(format!("{id}.creating"));
    std::fs::rename(&state, &marker).unwrap();
    agent.spawn().await.unwrap();
    assert!(list_ids(&agent, None).await.is_empty());
    assert!(!marker.exists(), "marker left");
    assert!(!sandbox_dir(&agent, &id).exists(), "sandbox dir left");
    assert!(!netns_path(&agent, &id).exists(), "netns pin left");
    let stat = std::fs::read_to_string(format!("/proc/{init_pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "pod init left: {stat}"
    );
    // The name is free again.
    let again = run(&agent, pod_config("cut-short")).await.unwrap();
    assert_ne!(again, id);
    stop_and_remove(&agent, &again).await;
    assert_nothing_left(&agent, Some(&network));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pod_whose_namespaces_vanished_is_not_ready_and_removable() {
    let mut agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let id = run(&agent, pod_config("rebooted")).await.unwrap();
    let init_pid = pod_init_pid(&agent, &id).await;
    agent.kill9().await.unwrap();
    // As after a reboot: the pod's processes, the pins and the sandbox directory are gone.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(init_pid).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let dir = sandbox_dir(&agent, &id);
    for pin in [
        netns_path(&agent, &id),
        dir.join("ns/ipc"),
        dir.join("ns/uts"),
        dir.join("ns/pid"),
        dir.join("shm"),
    ] {
        let _ = nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(netns_path(&agent, &id)).unwrap();
    agent.spawn().await.unwrap();
    assert_eq!(
        status(&agent, &id).await.state,
        PodSandboxState::SandboxNotready as i32
    );
    stop_and_remove(&agent, &id).await;
    assert!(list_ids(&agent, None).await.is_empty());
    assert_nothing_left(&agent, Some(&network));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pod_pid_namespace_has_an_init_that_goes_with_the_pod() {
    let agent = TestAgent::start().await.unwrap();
    let network = TestNetwork::install(&agent, &[]).unwrap();
    let mut config = pod_config("shared-pid");
    config.linux = Some(LinuxPodSandboxConfig {
        security_context: Some(LinuxSandboxSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: NamespaceMode::Pod as i32,
                ..NamespaceOption::default()
            }),
            ..LinuxSandboxSecurityContext::default()
        }),
        ..LinuxPodSandboxConfig::default()
    });
    let id = run(&agent, config).await.unwrap();
    let init_pid = pod_init_pid(&agent, &id).await;
    // PID 1 of its namespace: the last NSpid entry.
    let proc_status = std::fs::read_to_string(format!("/proc/{init_pid}/status")).unwrap();
    let nspid = proc_status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap();
    assert!(nspid.split_whitespace().last() == Some("1"), "{nspid}");
    let cmdline = std::fs::read(format!("/proc/{init_pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("pod-init"),
        "{cmdline:?}"
    );
    let init_ns = std::fs::read_link(format!("/proc/{init_pid}/ns/pid")).unwrap();
    let self_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    assert_ne!(
        init_ns, self_ns,
        "the init lives in a PID namespace of its own"
    );
    let init_net = std::fs::read_link(format!("/proc/{init_pid}/ns/net")).unwrap();
    let pod_net = std::fs::metadata(netns_path(&agent, &id)).unwrap();
    assert!(
        init_net
            .to_string_lossy()
            .contains(&std::os::unix::fs::MetadataExt::ino(&pod_net).to_string())
    );
    stop_and_remove(&agent, &id).await;
    assert!(
        !Path::new(&format!("/proc/{init_pid}/cmdline")).exists() || {
            // A zombie until the host's init reaps it: not running any more.
            let stat =
                std::fs::read_to_string(format!("/proc/{init_pid}/stat")).unwrap_or_default();
            stat.contains(") Z ")
        },
        "the pod's init is gone"
    );
    assert_nothing_left(&agent, Some(&network));
}
