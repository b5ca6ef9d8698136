//! A pod network for node tests: Debian's bridge + host-local + portmap + loopback plugins
//! on a bridge and subnet of the test's own, removed again when the test ends.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::agent::{TestAgent, write_executable};

static NEXT_INDEX: AtomicU32 = AtomicU32::new(0);

/// The test's bridge (deleted on drop) and its subnet.
#[derive(Debug)]
pub struct TestNetwork {
    pub bridge: String,
    /// `10.231.<n>` — the /24 the pods get addresses from.
    pub prefix: String,
    pub ipam_dir: PathBuf,
    /// A host port of this network's own, for port-mapping tests.
    pub host_port: u16,
}

impl TestNetwork {
    /// Installs a conflist for `agent`; `extra_plugins` (JSON objects) are appended to the
    /// chain, e.g. a failing fake plugin.
    pub fn install(agent: &TestAgent, extra_plugins: &[&str]) -> anyhow::Result<TestNetwork> {
        // One bridge and subnet per test (test binaries run one at a time); the pid keeps
        // two concurrent runs of the suite apart.
        let index =
            (std::process::id() % 50) * 4 + NEXT_INDEX.fetch_add(1, Ordering::Relaxed) % 4 + 20;
        let network = TestNetwork {
            bridge: format!("corral-test-{index}"),
            prefix: format!("10.231.{index}"),
            ipam_dir: agent.dir.path().join("ipam"),
            host_port: 18000 + index as u16,
        };
        let mut plugins = vec![
            format!(
                r#"{{"type":"bridge","bridge":"{bridge}","isGateway":true,"ipMasq":false,"hairpinMode":true,
                "ipam":{{"type":"host-local","ranges":[[{{"subnet":"{prefix}.0/24"}}]],
                "routes":[{{"dst":"{prefix}.0/24"}}],"dataDir":{ipam:?}}}}}"#,
                bridge = network.bridge,
                prefix = network.prefix,
                ipam = network.ipam_dir,
            ),
            r#"{"type":"portmap","capabilities":{"portMappings":true}}"#.to_string(),
        ];
        plugins.extend(extra_plugins.iter().map(|p| p.to_string()));
        let conflist = format!(
            r#"{{"cniVersion":"1.0.0","name":"corral-test-net","plugins":[{}]}}"#,
            plugins.join(",")
        );
        std::fs::write(agent.cni_conf_dir.join("10-corral-test.conflist"), conflist)?;
        Ok(network)
    }

    /// IP leases host-local still holds.
    pub fn leases(&self) -> Vec<String> {
        std::fs::read_dir(self.ipam_dir.join("corral-test-net"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("10."))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// veth interfaces still attached to the bridge.
    pub fn attached_veths(&self) -> usize {
        let output = std::process::Command::new("ip")
            .args(["-o", "link", "show", "master", &self.bridge])
            .output();
        output
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
            .unwrap_or(0)
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

/// Installs a fake CNI plugin that fails every ADD with a CNI error, and returns the JSON
/// of its conflist entry.
pub fn failing_plugin(agent: &TestAgent) -> anyhow::Result<&'static str> {
    write_executable(
        &agent.cni_bin_dir.join("corral-test-fail"),
        "#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then\n\
         echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"corral-test-fail refuses\"}'\nexit 1\nfi\n\
         if [ \"$CNI_COMMAND\" = VERSION ]; then echo '{\"cniVersion\":\"1.0.0\",\"supportedVersions\":[\"1.0.0\"]}'; fi\nexit 0\n",
    )?;
    Ok(r#"{"type":"corral-test-fail"}"#)
}

/// Installs a fake CNI plugin that records every call in `<agent dir>/cni-calls`, and
/// returns the JSON of its conflist entry.
pub fn recording_plugin(agent: &TestAgent) -> anyhow::Result<(&'static str, PathBuf)> {
    let calls = agent.dir.path().join("cni-calls");
    write_executable(
        &agent.cni_bin_dir.join("corral-test-record"),
        &format!(
            "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND\" >> {calls:?}\n\
             echo '{{\"cniVersion\":\"1.0.0\"}}'\n"
        ),
    )?;
    Ok((r#"{"type":"corral-test-record"}"#, calls))
}
