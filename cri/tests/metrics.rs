//! Node test of the Prometheus endpoint: a scrape with a running container holds the
//! cAdvisor-named metrics with the container's labels, the pod's network counters and the
//! agent's own metrics, and passes `promtool check metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};

use common::agent::TestAgent;
use common::pod::pod;
use k8s_cri::v1::{LinuxContainerConfig, LinuxContainerResources, StatusRequest};

async fn scrape(address: &str) -> (String, String) {
    let response = reqwest::get(format!("http://{address}/metrics"))
        .await
        .unwrap();
    assert!(response.status().is_success());
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    (content_type, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_scrape_has_cadvisor_metrics_and_passes_promtool() {
    let pod = pod(TestAgent::start().await.unwrap(), "metrics-pod").await;
    let mut config = pod.config("web", &["sh", "-c", "while :; do :; done"]);
    config.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 64 * 1024 * 1024,
            ..LinuxContainerResources::default()
        }),
        ..LinuxContainerConfig::default()
    });
    let id = pod.run(config).await;
    let cgroup = pod.info(&id).await["cgroupsPath"]
        .as_str()
        .unwrap()
        .to_string();

    let mut client = pod.agent.client().await.unwrap();
    let info = client
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner()
        .info;
    let address: String = serde_json::from_str(&info["metricsAddress"]).unwrap();
    assert!(address.starts_with("127.0.0.1:"), "{address}");

    let labels = format!(
        "{{container=\"web\",id=\"{cgroup}\",image=\"{}\",namespace=\"corral-test\",pod=\"metrics-pod\"}}",
        pod.image
    );
    // The writable layer is measured in the background: its first value comes soon after
    // the container is first seen.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (content_type, text) = loop {
        let (content_type, text) = scrape(&address).await;
        if text.contains(&format!("container_fs_usage_bytes{labels} ")) {
            break (content_type, text);
        }
        assert!(std::time::Instant::now() < deadline, "no fs usage:\n{text}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    for name in [
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_memory_usage_bytes",
        "container_memory_rss",
        "container_memory_cache",
        "container_oom_events_total",
        "container_fs_usage_bytes",
        "container_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("{name}{labels} ")),
            "{name}{labels} missing from:\n{text}"
        );
    }
    assert!(text.contains(&format!(
        "container_spec_memory_limit_bytes{labels} 67108864\n"
    )));
    assert!(text.contains(&format!("container_spec_cpu_quota{labels} 50000\n")));
    for name in [
        "container_network_receive_bytes_total",
        "container_network_transmit_bytes_total",
    ] {
        assert!(
            text.contains(&format!("{name}{{container=\"\""))
                && text.contains("interface=\"eth0\""),
            "{name} missing"
        );
    }
    assert!(text.contains("corral_containers{state=\"running\"} 1\n"));
    assert!(text.contains("corral_pods{state=\"ready\"} 1\n"));
    assert!(text.contains("corral_grpc_requests_total{code=\"OK\",method=\"RunPodSandbox\"} 1\n"));
    assert!(text.contains("corral_containers_started_total 1\n"));
    assert!(
        text.contains("corral_grpc_request_duration_seconds_bucket{method=\"CreateContainer\"")
    );

    // CPU time grows between scrapes of a busy container.
    let cpu = |text: &str| -> f64 {
        let prefix = format!("container_cpu_usage_seconds_total{labels} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap()
            .parse()
            .unwrap()
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, later) = scrape(&address).await;
    assert!(
        cpu(&later) > cpu(&text),
        "{} -> {}",
        cpu(&text),
        cpu(&later)
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/install-deps.sh test)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(later.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    pod.tear_down().await;
}
