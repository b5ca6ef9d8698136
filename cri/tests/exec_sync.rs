//! Node tests of ExecSync: commands run inside real busybox containers in real pods, driven
//! over CRI: their output and exit codes, the container's identity (user, hostname, env,
//! capabilities, seccomp), timeouts that kill the command and leave nothing behind, and the
//! errors for unknown, created and stopped containers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::{Duration, Instant};

use common::agent::TestAgent;
use common::pod::{Pod, pod};
use k8s_cri::v1::{
    ContainerState, ExecSyncRequest, ExecSyncResponse, KeyValue, StopContainerRequest,
};

impl Pod {
    async fn exec(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        let mut client = self.agent.client().await.unwrap();
        Ok(client
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            })
            .await?
            .into_inner())
    }

    /// Runs `cmd`, which must succeed; returns its stdout as text.
    async fn exec_ok(&self, id: &str, cmd: &[&str]) -> String {
        let out = self.exec(id, cmd, 10).await.unwrap();
        assert_eq!(
            out.exit_code,
            0,
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// libcontainer's state directory of a container.
    fn state_dir(&self, id: &str) -> std::path::PathBuf {
        self.agent.run_dir.join("libcontainer").join(id)
    }

    /// Removes the pod, then checks that no exec helper outlived it.
    async fn finish(self) {
        self.tear_down().await;
        assert!(helpers_of(&self.agent).is_empty(), "exec helpers left");
    }
}

fn security_context(user: Option<i64>, no_new_privs: bool) -> k8s_cri::v1::LinuxContainerConfig {
    k8s_cri::v1::LinuxContainerConfig {
        security_context: Some(k8s_cri::v1::LinuxContainerSecurityContext {
            run_as_user: user.map(|value| k8s_cri::v1::Int64Value { value }),
            run_as_group: user.map(|_| k8s_cri::v1::Int64Value { value: 2000 }),
            seccomp: Some(k8s_cri::v1::SecurityProfile {
                profile_type: k8s_cri::v1::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            no_new_privs,
            ..k8s_cri::v1::LinuxContainerSecurityContext::default()
        }),
        ..k8s_cri::v1::LinuxContainerConfig::default()
    }
}

/// Command lines (NULs as spaces) of the processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if line.contains(needle) {
            found.push(format!("{pid}: {line}"));
        }
    }
    found
}

/// `corral-monitor exec` helpers of this agent still running.
fn helpers_of(agent: &TestAgent) -> Vec<String> {
    let root = agent.run_dir.join("libcontainer").display().to_string();
    processes_with(&root)
        .into_iter()
        .filter(|line| line.contains(" exec "))
        .collect()
}

/// The identity lines of a /proc/<pid>/status that an exec must share with the init.
const IDENTITY: &str = "^(Uid|Gid|Groups|NoNewPrivs|Seccomp|CapInh|CapPrm|CapEff|CapBnd|CapAmb):";

/// A shell script printing the identity lines of the process whose command line is `init`,
/// `---`, then its own.
fn compare(init: &str) -> String {
    format!(
        "for p in /proc/[0-9]*; do \
           [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = '{init} ' ] && i=$p; \
         done; \
         grep -E '{IDENTITY}' $i/status; echo ---; grep -E '{IDENTITY}' /proc/self/status"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_sync_output_exit_codes_and_container_identity() {
    let pod = pod(TestAgent::start().await.unwrap(), "exec-pod").await;
    // Root, RuntimeDefault seccomp, no no_new_privs: the filter needs CAP_SYS_ADMIN to load.
    let mut config = pod.config("main", &["sleep", "1000"]);
    config.linux = Some(security_context(None, false));
    let main = pod.run(config).await;

    let out = pod.exec(&main, &["echo", "hello"], 0).await.unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"hello\n"[..], &b""[..], 0)
    );
    let out = pod
        .exec(&main, &["sh", "-c", "echo err >&2; exit 3"], 10)
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b""[..], &b"err\n"[..], 3)
    );
    let out = pod
        .exec(&main, &["sh", "-c", "kill -9 $$"], 10)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 137, "killed by SIGKILL: 128 + 9");
    assert_eq!(pod.exec_ok(&main, &["hostname"]).await, "exec-pod\n");
    // Large output arrives whole (64 KiB pipes, many reads).
    let big = pod
        .exec_ok(
            &main,
            &[
                "sh",
                "-c",
                "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done",
            ],
        )
        .await;
    assert_eq!(big.lines().count(), 20000);
    assert_eq!(big.lines().last(), Some("line-19999"));

    // The exec'd process has the init's identity: capabilities, seccomp, no_new_privs
    // (the pod shares one PID namespace: the init is found by its command line).
    let text = pod
        .exec_ok(&main, &["sh", "-c", &compare("sleep 1000")])
        .await;
    let (init, exec) = text.split_once("---\n").unwrap();
    assert_eq!(init, exec, "{text}");
    assert!(init.contains("Seccomp:\t2"), "{text}");
    assert!(init.contains("NoNewPrivs:\t0"), "{text}");

    // A non-root container with env, working dir and no_new_privs.
    let mut config = pod.config("user", &["sleep", "1001"]);
    config.linux = Some(security_context(Some(1000), true));
    config.envs = vec![KeyValue {
        key: "GREETING".to_string(),
        value: "hello-env".to_string(),
    }];
    config.working_dir = "/tmp".to_string();
    let user = pod.run(config).await;
    assert_eq!(pod.exec_ok(&user, &["id", "-u"]).await, "1000\n");
    assert_eq!(pod.exec_ok(&user, &["id", "-g"]).await, "2000\n");
    assert_eq!(
        pod.exec_ok(&user, &["sh", "-c", "echo $GREETING; pwd; hostname"])
            .await,
        "hello-env\n/tmp\nexec-pod\n"
    );
    let text = pod
        .exec_ok(&user, &["sh", "-c", &compare("sleep 1001")])
        .await;
    let (init, exec) = text.split_once("---\n").unwrap();
    assert_eq!(init, exec, "{text}");
    assert!(
        init.contains("Seccomp:\t2") && init.contains("NoNewPrivs:\t1"),
        "{text}"
    );
    assert!(init.contains("Uid:\t1000\t1000\t1000\t1000"), "{text}");

    // Concurrent execs into one container.
    let (a, b, c, d) = tokio::join!(
        pod.exec(&main, &["echo", "a"], 10),
        pod.exec(&main, &["echo", "b"], 10),
        pod.exec(&user, &["echo", "c"], 10),
        pod.exec(&main, &["echo", "d"], 10),
    );
    for (out, want) in [(a, "a\n"), (b, "b\n"), (c, "c\n"), (d, "d\n")] {
        assert_eq!(String::from_utf8(out.unwrap().stdout).unwrap(), want);
    }

    // Round trips over one connection, and the helper alone (printed, never asserted).
    let rounds = 20;
    let mut client = pod.agent.client().await.unwrap();
    let started = Instant::now();
    for _ in 0..rounds {
        let out = client
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: main.clone(),
                cmd: vec!["true".to_string()],
                timeout: 10,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(out.exit_code, 0);
    }
    let round_trip = started.elapsed() / rounds;
    let helper = common::agent::corral_binary().with_file_name("corral-monitor");
    let state_root = pod.agent.run_dir.join("libcontainer");
    let started = Instant::now();
    for _ in 0..rounds {
        let out = std::process::Command::new(&helper)
            .arg("exec")
            .arg(&state_root)
            .arg(&main)
            .args(["--", "true"])
            .output()
            .unwrap();
        assert!(out.stdout.starts_with(b"{\"ok\":true"));
    }
    let alone = started.elapsed() / rounds;
    eprintln!("exec round trip: {round_trip:?}, helper alone: {alone:?} (mean of {rounds})");

    // libcontainer's per-exec notify sockets are removed.
    for id in [&main, &user] {
        let left: Vec<_> = std::fs::read_dir(pod.state_dir(id))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("tenant-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    pod.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_sync_timeout_kills_the_command_and_leaves_nothing() {
    let pod = pod(TestAgent::start().await.unwrap(), "exec-pod").await;
    let id = pod.run(pod.config("sleeper", &["sleep", "1000"])).await;

    let started = Instant::now();
    let err = pod
        .exec(&id, &["sh", "-c", "sleep 1234; echo never"], 1)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // The command and its child are gone, and so is the helper.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = processes_with("sleep 1234");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(helpers_of(&pod.agent).is_empty());

    // A command that finishes before its timeout is not cut short.
    let out = pod
        .exec(&id, &["sh", "-c", "sleep 0.2; echo in-time"], 5)
        .await
        .unwrap();
    assert_eq!(out.stdout, b"in-time\n");
    // A background process holding the output open does not hold the answer.
    let started = Instant::now();
    let out = pod
        .exec(&id, &["sh", "-c", "sleep 1235 & echo started"], 30)
        .await
        .unwrap();
    assert_eq!(
        (out.stdout.as_slice(), out.exit_code),
        (&b"started\n"[..], 0)
    );
    assert!(started.elapsed() < Duration::from_secs(4));

    // The container still runs and takes more execs.
    assert_eq!(
        pod.status(&id).await.state,
        ContainerState::ContainerRunning as i32
    );
    assert_eq!(pod.exec_ok(&id, &["echo", "still"]).await, "still\n");
    pod.finish().await;
    assert!(processes_with("sleep 1235").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_sync_errors() {
    let pod = pod(TestAgent::start().await.unwrap(), "exec-pod").await;
    let err = pod
        .exec("no-such-container", &["true"], 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    let running = pod.run(pod.config("running", &["sleep", "1000"])).await;
    let err = pod.exec(&running, &[], 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let err = pod
        .exec(&running, &["no-such-command"], 5)
        .await
        .unwrap_err();
    assert!(err.message().contains("no-such-command"), "{err:?}");

    let created = pod
        .create(pod.config("created", &["sleep", "1000"]))
        .await
        .unwrap();
    let err = pod.exec(&created, &["true"], 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    let exited = pod.run(pod.config("exited", &["true"])).await;
    pod.wait_exited(&exited).await;
    let err = pod.exec(&exited, &["true"], 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");

    let mut client = pod.agent.client().await.unwrap();
    client
        .runtime
        .stop_container(StopContainerRequest {
            container_id: running.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let err = pod.exec(&running, &["true"], 0).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    pod.finish().await;
}
