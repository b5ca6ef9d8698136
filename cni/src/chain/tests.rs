use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::testutil::{calls, env_of, env_var, recording_plugin, stdin_of, write_script};
use crate::{Config, load_network};

const BRIDGE_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"eth0","sandbox":"/run/netns/pod1"}],"ips":[{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":1}],"dns":{}}"#;
const PORTMAP_RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"eth0","sandbox":"/run/netns/pod1"}],"ips":[{"address":"10.88.0.5/16","gateway":"10.88.0.1","interface":1},{"address":"fd00::5/64","interface":1}],"dns":{"nameservers":["10.96.0.10"]}}"#;
const TUNING_RESULT: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.88.0.9/16"}]}"#;

struct Fixture {
    dir: tempfile::TempDir,
    config: Config,
    runner: Runner,
}

impl Fixture {
    fn record(&self) -> PathBuf {
        self.dir.path().join("record")
    }

    fn conf_file(&self) -> PathBuf {
        self.config.conf_dirs[0].join("10-podnet.conflist")
    }

    fn write_conf(&self, cni_version: &str, plugins: Value) {
        let doc = json!({"cniVersion": cni_version, "name": "podnet", "plugins": plugins});
        std::fs::write(self.conf_file(), doc.to_string()).unwrap();
    }

    fn network(&self) -> NetworkConfig {
        load_network(&self.config).unwrap()
    }
}

/// Three recording plugins (bridge, portmap, tuning) and a conflist of the first two.
fn fixture(cni_version: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let conf = dir.path().join("net.d");
    let record = dir.path().join("record");
    for d in [&bin, &conf, &record] {
        std::fs::create_dir_all(d).unwrap();
    }
    recording_plugin(&bin, "bridge", &record, BRIDGE_RESULT);
    recording_plugin(&bin, "portmap", &record, PORTMAP_RESULT);
    recording_plugin(&bin, "tuning", &record, TUNING_RESULT);
    let config = Config {
        conf_dirs: vec![conf],
        bin_dirs: vec![bin],
    };
    let runner = Runner::new(config.bin_dirs.clone(), dir.path().join("cache"))
        .with_timeout(Duration::from_secs(20));
    let f = Fixture {
        dir,
        config,
        runner,
    };
    f.write_conf(
        cni_version,
        json!([
            {"type": "bridge", "bridge": "cni0", "capabilities": {"io.kubernetes.cri.pod-annotations": true}},
            {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}
        ]),
    );
    f
}

fn request(f: &Fixture) -> AttachRequest {
    // An existing path stands in for the pinned namespace.
    let netns = f.dir.path().join("netns");
    std::fs::write(&netns, "").unwrap();
    let mut req = AttachRequest::new("sandbox1", netns);
    req.args = kubelet_args("default", "web-0", "sandbox1", "uid-1");
    req.capability_args.insert(
        "portMappings".into(),
        port_mappings_capability(&[PortMapping {
            container_port: 80,
            host_port: 8080,
            protocol: "TCP".parse().unwrap(),
            host_ip: String::new(),
        }]),
    );
    req.capability_args
        .insert("bandwidth".into(), json!({"ingressRate": 1000}));
    req.capability_args.insert(
        "io.kubernetes.cri.pod-annotations".into(),
        json!({"team": "a"}),
    );
    req
}

#[test]
fn test_add_runs_plugins_in_order_with_prev_result() {
    let f = fixture("1.0.0");
    let result = f.runner.add(&f.network(), &request(&f)).unwrap();
    assert_eq!(calls(&f.record()), vec!["ADD bridge", "ADD portmap"]);

    let first = stdin_of(&f.record(), "ADD", "bridge");
    assert_eq!(first["name"], "podnet");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["bridge"], "cni0");
    assert!(
        first.get("prevResult").is_none(),
        "first plugin gets no prevResult"
    );
    assert!(
        first.get("capabilities").is_none(),
        "capabilities are not passed on"
    );

    let second = stdin_of(&f.record(), "ADD", "portmap");
    let bridge: Value = serde_json::from_str(BRIDGE_RESULT).unwrap();
    assert_eq!(second["prevResult"], bridge);
    assert_eq!(second["name"], "podnet");

    // The last plugin's result is the chain's result.
    let expected: Value = serde_json::from_str(PORTMAP_RESULT).unwrap();
    assert_eq!(result.raw(), &expected);
    assert_eq!(
        result.pod_ips(),
        vec![
            "10.88.0.5".parse::<std::net::IpAddr>().unwrap(),
            "fd00::5".parse().unwrap()
        ]
    );
    let cached = f
        .runner
        .cached_result("podnet", "sandbox1", "eth0")
        .unwrap()
        .unwrap();
    assert_eq!(cached, result);
}

#[test]
fn test_add_runtime_config_only_declared_capabilities() {
    let f = fixture("1.0.0");
    f.runner.add(&f.network(), &request(&f)).unwrap();
    let bridge = stdin_of(&f.record(), "ADD", "bridge");
    assert_eq!(
        bridge["runtimeConfig"],
        json!({"io.kubernetes.cri.pod-annotations": {"team": "a"}})
    );
    let portmap = stdin_of(&f.record(), "ADD", "portmap");
    // "bandwidth" is offered but declared false: not passed.
    assert_eq!(
        portmap["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})
    );
}

#[test]
fn test_add_no_runtime_config_without_capabilities() {
    let f = fixture("1.0.0");
    f.write_conf("1.0.0", json!([{"type": "tuning"}]));
    f.runner.add(&f.network(), &request(&f)).unwrap();
    assert!(
        stdin_of(&f.record(), "ADD", "tuning")
            .get("runtimeConfig")
            .is_none()
    );
}

#[test]
fn test_add_env_and_cni_args_format() {
    let f = fixture("1.0.0");
    let req = request(&f);
    f.runner.add(&f.network(), &req).unwrap();
    let env = env_of(&f.record(), "ADD", "portmap");
    assert_eq!(env_var(&env, "CNI_COMMAND"), Some("ADD"));
    assert_eq!(env_var(&env, "CNI_CONTAINERID"), Some("sandbox1"));
    assert_eq!(env_var(&env, "CNI_IFNAME"), Some("eth0"));
    assert_eq!(
        env_var(&env, "CNI_NETNS"),
        Some(req.netns_path.to_str().unwrap())
    );
    assert_eq!(
        env_var(&env, "CNI_ARGS"),
        Some(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=uid-1"
        )
    );
    assert_eq!(
        env_var(&env, "CNI_PATH"),
        Some(f.config.bin_dirs[0].to_str().unwrap())
    );
}

#[test]
fn test_add_invalid_request_rejected_before_running() {
    let f = fixture("1.0.0");
    let mut req = request(&f);
    req.container_id = "../etc".into();
    assert!(matches!(
        f.runner.add(&f.network(), &req),
        Err(Error::InvalidAttachment(_))
    ));
    let mut req = request(&f);
    req.args.push(("EVIL".into(), "a;b=c".into()));
    assert!(f.runner.add(&f.network(), &req).is_err());
    assert!(calls(&f.record()).is_empty());
}

#[test]
fn test_add_plugin_error_stops_chain_and_caches_nothing() {
    let f = fixture("1.0.0");
    write_script(
        &f.config.bin_dirs[0],
        "bridge",
        "cat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no free addresses\"}'\nexit 1\n",
    );
    let err = f.runner.add(&f.network(), &request(&f)).unwrap_err();
    assert!(
        matches!(&err, Error::PluginFailed { code: 11, msg, plugin, .. } if msg == "no free addresses" && plugin == "bridge"),
        "{err:?}"
    );
    assert!(calls(&f.record()).is_empty(), "portmap did not run");
    assert!(
        f.runner
            .cached_result("podnet", "sandbox1", "eth0")
            .unwrap()
            .is_none()
    );
}

#[test]
fn test_del_reverse_order_with_cached_prev_result() {
    let f = fixture("1.0.0");
    let req = request(&f);
    f.runner.add(&f.network(), &req).unwrap();
    f.runner.del(&f.network(), &req).unwrap();
    assert_eq!(
        calls(&f.record()),
        vec!["ADD bridge", "ADD portmap", "DEL portmap", "DEL bridge"]
    );
    let final_result: Value = serde_json::from_str(PORTMAP_RESULT).unwrap();
    for plugin in ["portmap", "bridge"] {
        let stdin = stdin_of(&f.record(), "DEL", plugin);
        assert_eq!(stdin["prevResult"], final_result, "{plugin}");
    }
    assert_eq!(
        stdin_of(&f.record(), "DEL", "portmap")["runtimeConfig"]["portMappings"][0]["hostPort"],
        8080
    );
    assert!(
        f.runner
            .cached_result("podnet", "sandbox1", "eth0")
            .unwrap()
            .is_none()
    );
    // A second DEL without a cache entry still runs the chain (DEL is idempotent).
    f.runner.del(&f.network(), &req).unwrap();
    assert!(
        stdin_of(&f.record(), "DEL", "bridge")
            .get("prevResult")
            .is_none()
    );
}

#[test]
fn test_del_after_conf_changed_uses_cached_config_and_args() {
    let f = fixture("1.0.0");
    let req = request(&f);
    f.runner.add(&f.network(), &req).unwrap();
    // The conf file now names another chain.
    f.write_conf("1.0.0", json!([{"type": "tuning"}]));
    let changed = f.network();
    // The caller no longer knows the CNI_ARGS or capability args (agent restart).
    let bare = AttachRequest::new("sandbox1", req.netns_path.clone());
    f.runner.del(&changed, &bare).unwrap();
    assert_eq!(
        calls(&f.record())[2..],
        ["DEL portmap".to_string(), "DEL bridge".to_string()]
    );
    let env = env_of(&f.record(), "DEL", "bridge");
    assert!(
        env_var(&env, "CNI_ARGS")
            .unwrap()
            .contains("K8S_POD_NAME=web-0")
    );
    assert_eq!(stdin_of(&f.record(), "DEL", "bridge")["bridge"], "cni0");
}

#[test]
fn test_del_cached_after_conf_deleted_and_netns_gone() {
    let f = fixture("1.0.0");
    let req = request(&f);
    f.runner.add(&f.network(), &req).unwrap();
    std::fs::remove_file(f.conf_file()).unwrap();
    std::fs::remove_file(&req.netns_path).unwrap();
    assert!(load_network(&f.config).is_err(), "no config any more");
    assert!(f.runner.del_cached("podnet", &req).unwrap());
    assert_eq!(calls(&f.record())[2..], ["DEL portmap", "DEL bridge"]);
    let env = env_of(&f.record(), "DEL", "portmap");
    assert_eq!(
        env_var(&env, "CNI_NETNS"),
        Some(""),
        "a gone netns is passed empty"
    );
    // Nothing cached any more: nothing to do.
    assert!(!f.runner.del_cached("podnet", &req).unwrap());
}

#[test]
fn test_del_continues_past_errors_and_keeps_cache() {
    let f = fixture("1.0.0");
    let req = request(&f);
    f.runner.add(&f.network(), &req).unwrap();
    write_script(
        &f.config.bin_dirs[0],
        "portmap",
        "cat >/dev/null\necho '{\"code\":5,\"msg\":\"iptables failed\"}'\nexit 1\n",
    );
    let err = f.runner.del(&f.network(), &req).unwrap_err();
    match &err {
        Error::ChainFailed {
            command, errors, ..
        } => {
            assert_eq!(*command, Command::Del);
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].plugin_code(), Some(5));
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("iptables failed"), "{err}");
    assert_eq!(
        calls(&f.record()).last().unwrap(),
        "DEL bridge",
        "bridge still ran"
    );
    assert!(
        f.runner
            .cached_result("podnet", "sandbox1", "eth0")
            .unwrap()
            .is_some(),
        "kept for a retry"
    );
}

#[test]
fn test_del_old_version_sends_no_prev_result() {
    let f = fixture("0.3.1");
    let req = request(&f);
    f.runner.add(&f.network(), &req).unwrap();
    f.runner.del(&f.network(), &req).unwrap();
    assert!(
        stdin_of(&f.record(), "DEL", "portmap")
            .get("prevResult")
            .is_none()
    );
    assert_eq!(
        stdin_of(&f.record(), "DEL", "portmap")["cniVersion"],
        "0.3.1"
    );
}

#[test]
fn test_check_sends_cached_result_in_order() {
    let f = fixture("1.0.0");
    let req = request(&f);
    let missing = f.runner.check(&f.network(), &req).unwrap_err();
    assert!(
        matches!(missing, Error::NoCachedResult { .. }),
        "{missing:?}"
    );
    f.runner.add(&f.network(), &req).unwrap();
    f.runner.check(&f.network(), &req).unwrap();
    assert_eq!(calls(&f.record())[2..], ["CHECK bridge", "CHECK portmap"]);
    let final_result: Value = serde_json::from_str(PORTMAP_RESULT).unwrap();
    assert_eq!(
        stdin_of(&f.record(), "CHECK", "bridge")["prevResult"],
        final_result
    );
}

#[test]
fn test_status_gc_refused_for_cni_1_0_0() {
    let f = fixture("1.0.0");
    let network = f.network();
    for err in [
        f.runner.status(&network).unwrap_err(),
        f.runner.gc(&network, &[]).unwrap_err(),
    ] {
        assert!(matches!(err, Error::UnsupportedByVersion { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("not supported by cniVersion 1.0.0"),
            "{err}"
        );
    }
    assert!(calls(&f.record()).is_empty());
    let old = fixture("0.3.1");
    let err = old
        .runner
        .check(&old.network(), &request(&old))
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedByVersion { .. }), "{err:?}");
}

#[test]
fn test_status_and_gc_for_cni_1_1_0() {
    let f = fixture("1.1.0");
    let network = f.network();
    f.runner.status(&network).unwrap();
    let valid = [Attachment {
        container_id: "sandbox1".into(),
        ifname: "eth0".into(),
    }];
    f.runner.gc(&network, &valid).unwrap();
    assert_eq!(
        calls(&f.record()),
        vec!["STATUS bridge", "STATUS portmap", "GC bridge", "GC portmap"]
    );
    let gc = stdin_of(&f.record(), "GC", "portmap");
    assert_eq!(
        gc["cni.dev/valid-attachments"],
        json!([{"containerID": "sandbox1", "ifname": "eth0"}])
    );
    assert!(gc.get("runtimeConfig").is_none());
    let env = env_of(&f.record(), "GC", "portmap");
    assert_eq!(env_var(&env, "CNI_CONTAINERID"), Some(""));
    assert!(!env_var(&env, "CNI_PATH").unwrap_or_default().is_empty());
}

#[test]
fn test_add_timeout_returns_promptly() {
    let f = fixture("1.0.0");
    write_script(
        &f.config.bin_dirs[0],
        "bridge",
        "cat >/dev/null\nsleep 30\n",
    );
    let runner = f.runner.clone().with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = runner.add(&f.network(), &request(&f)).unwrap_err();
    assert!(matches!(err, Error::PluginTimeout { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn test_port_mappings_capability_shape() {
    let mappings = [
        PortMapping {
            container_port: 53,
            host_port: 5353,
            protocol: "UDP".parse().unwrap(),
            host_ip: "127.0.0.1".into(),
        },
        PortMapping {
            container_port: 80,
            host_port: 0,
            protocol: PortProtocol::Tcp,
            host_ip: String::new(),
        },
        PortMapping {
            container_port: 9,
            host_port: 9,
            protocol: "sctp".parse().unwrap(),
            host_ip: String::new(),
        },
    ];
    assert_eq!(
        port_mappings_capability(&mappings),
        json!([
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            {"hostPort": 9, "containerPort": 9, "protocol": "sctp"}
        ])
    );
    assert!("icmp".parse::<PortProtocol>().is_err());
}

#[test]
fn test_format_cni_args_rejects_separators() {
    let ok = format_cni_args(&kubelet_args("ns", "pod", "id", "uid")).unwrap();
    assert_eq!(
        ok,
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=pod;K8S_POD_INFRA_CONTAINER_ID=id;K8S_POD_UID=uid"
    );
    assert!(format_cni_args(&[("A".into(), "b;c".into())]).is_err());
    assert!(format_cni_args(&[("A=B".into(), "c".into())]).is_err());
    assert!(format_cni_args(&[(String::new(), "c".into())]).is_err());
    assert_eq!(format_cni_args(&[]).unwrap(), "");
}

#[test]
fn test_parse_version_forms() {
    assert_eq!(parse_version("1.1.0"), Some((1, 1, 0)));
    assert_eq!(parse_version("0.3"), Some((0, 3, 0)));
    assert_eq!(parse_version("1.0.0-rc1"), None);
    assert_eq!(parse_version(""), None);
    assert!(parse_version("0.4.0").unwrap() >= (0, 4, 0));
    assert!(parse_version("0.10.0").unwrap() > (0, 4, 0));
}
