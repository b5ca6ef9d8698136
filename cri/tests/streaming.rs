//! Node tests of Exec, Attach and PortForward through the streaming server, driven by the
//! project's own client over SPDY and over WebSocket (as crictl's `--transport websocket`):
//! output and exit codes, a terminal with stdin and resizes, single-use URLs, a container's
//! own stdio shared by two attachers, 100 MB (SPDY) or 20 MB (WebSocket) carried intact from
//! a web server inside a pod, and exec over TLS.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on failure

mod common;

use std::time::Duration;

use common::agent::TestAgent;
use common::pod::pod;
use corral::streaming::TerminalSize;
use corral::streaming::client::{
    PortForwardSession, RemoteCommandSession, StreamOptions, WebSocketCommandSession,
};
use k8s_cri::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn exec_request(id: &str, cmd: &[&str], tty: bool, stdin: bool) -> ExecRequest {
    ExecRequest {
        container_id: id.to_string(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout: true,
        stderr: !tty,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_output_exit_codes_tty_and_single_use_urls() {
    let pod = pod(TestAgent::start().await.unwrap(), "stream-pod").await;
    let id = pod.run(pod.config("shell", &["sleep", "1000"])).await;
    let mut client = pod.agent.client().await.unwrap();

    // Without a terminal: separate stdout and stderr, the exit code in the v4 status.
    let url = client
        .runtime
        .exec(exec_request(
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        ))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let options = StreamOptions {
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let session = RemoteCommandSession::connect(&url, options).await.unwrap();
    let output = session.finish().await.unwrap();
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
    assert_eq!(output.completion.exit_code(), Some(3));
    // The URL was used: a second connection is refused.
    assert!(RemoteCommandSession::connect(&url, options).await.is_err());

    let url = client
        .runtime
        .exec(exec_request(&id, &["id", "-u"], false, false))
        .await
        .unwrap()
        .into_inner()
        .url;
    let output = RemoteCommandSession::connect(&url, options)
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    assert_eq!(
        (output.stdout.as_slice(), output.completion.exit_code()),
        (&b"0\n"[..], Some(0))
    );

    // A terminal with stdin: resizes reach it, typed commands run, the exit code returns.
    let url = client
        .runtime
        .exec(exec_request(&id, &["sh"], true, true))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = RemoteCommandSession::connect(
        &url,
        StreamOptions {
            stdin: true,
            stdout: true,
            stderr: false,
            tty: true,
        },
    )
    .await
    .unwrap();
    session
        .resize(TerminalSize {
            width: 120,
            height: 50,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.write_stdin(b"stty size; tty\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    session
        .resize(TerminalSize {
            width: 90,
            height: 30,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.write_stdin(b"stty size; exit 5\n").await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), session.finish())
        .await
        .expect("the shell exits")
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    assert!(text.contains("50 120\n"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("30 90\n"), "{text:?}");
    assert_eq!(output.completion.exit_code(), Some(5));

    // Sessions leave no descriptors behind in the agent (pipes to the helpers, sockets).
    let agent_pid = pod.agent.pid().unwrap();
    let fds = || {
        std::fs::read_dir(format!("/proc/{agent_pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    for _ in 0..10 {
        let url = client
            .runtime
            .exec(exec_request(&id, &["true"], false, false))
            .await
            .unwrap()
            .into_inner()
            .url;
        let output = RemoteCommandSession::connect(&url, options)
            .await
            .unwrap()
            .finish()
            .await
            .unwrap();
        assert_eq!(output.completion.exit_code(), Some(0));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fds() > before {
        assert!(
            std::time::Instant::now() < deadline,
            "agent descriptors: {before} before 10 execs, {} after",
            fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Exec into a container that is not running is refused by the RPC.
    let done = pod.run(pod.config("done", &["true"])).await;
    pod.wait_exited(&done).await;
    let err = client
        .runtime
        .exec(exec_request(&done, &["true"], false, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    pod.tear_down().await;
}

fn attach_request(id: &str, stdin: bool) -> AttachRequest {
    AttachRequest {
        container_id: id.to_string(),
        stdin,
        tty: false,
        stdout: true,
        stderr: true,
    }
}

/// Reads `reader` until what was read contains `needle`.
async fn read_until(reader: &mut (impl tokio::io::AsyncRead + Unpin), needle: &str) {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(20), reader.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&seen)))
            .unwrap();
        assert!(n > 0, "EOF before {needle:?}");
        seen.extend_from_slice(&chunk[..n]);
    }
}

/// Runs a container that echoes each line of its stdin to stdout (`got <line>`) and stderr
/// (`err <line>`), and at the end of its input (`stdin_once`) says `bye` and exits 3.
async fn run_line_reader(pod: &common::pod::Pod) -> String {
    let mut config = pod.config(
        "reader",
        &[
            "sh",
            "-c",
            "while read line; do echo \"got $line\"; echo \"err $line\" >&2; done; echo bye; exit 3",
        ],
    );
    config.stdin = true;
    config.stdin_once = true;
    pod.run(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_attach_sees_output_feeds_stdin_and_ends_with_the_container() {
    let pod = pod(TestAgent::start().await.unwrap(), "attach-pod").await;
    let id = run_line_reader(&pod).await;
    let mut client = pod.agent.client().await.unwrap();
    let url = |stdin| {
        let mut client = client.clone();
        let id = id.clone();
        async move {
            client
                .runtime
                .attach(attach_request(&id, stdin))
                .await
                .unwrap()
                .into_inner()
                .url
        }
    };
    let with_stdin = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let mut typing = RemoteCommandSession::connect(&url(true).await, with_stdin)
        .await
        .unwrap();
    let watching = RemoteCommandSession::connect(
        &url(false).await,
        StreamOptions {
            stdin: false,
            ..with_stdin
        },
    )
    .await
    .unwrap();
    // Both are attached once the monitor logged them (the backend attaches after the
    // session's streams are open).
    let monitor_log = pod
        .agent
        .run_dir
        .join("containers")
        .join(&id)
        .join("monitor.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&monitor_log)
        .unwrap_or_default()
        .matches("client attached")
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "not attached");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    typing.write_stdin(b"one\n").await.unwrap();
    let mut typing_out = typing.take_stdout().unwrap();
    read_until(&mut typing_out, "got one").await;
    read_until(&mut typing.take_stderr().unwrap(), "err one").await;
    // The end of the typing client's stdin ends the container's (stdin_once): the script
    // says bye and exits, and both attachments end with success.
    typing.close_stdin().await.unwrap();
    read_until(&mut typing_out, "bye").await;
    let output = tokio::time::timeout(Duration::from_secs(20), watching.finish())
        .await
        .expect("the attachment ends with the container")
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "got one\nbye\n",
        "the watcher attached before the first line"
    );
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err one\n");
    assert_eq!(output.completion.exit_code(), Some(0));
    drop(typing_out);
    let status = pod.wait_exited(&id).await;
    assert_eq!(status.exit_code, 3);

    // Attach to a container that is not running is refused by the RPC.
    let err = client
        .runtime
        .attach(attach_request(&id, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_websocket_attach_feeds_stdin_and_ends_with_the_container() {
    let pod = pod(TestAgent::start().await.unwrap(), "ws-attach-pod").await;
    let id = run_line_reader(&pod).await;
    let mut client = pod.agent.client().await.unwrap();
    let url = client
        .runtime
        .attach(attach_request(&id, true))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = WebSocketCommandSession::connect(&url).await.unwrap();
    session.write_stdin(b"ws\n").await.unwrap();
    // v5's close signal ends the client's stdin; with stdin_once the container's ends too.
    session.close_stdin().await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), session.finish())
        .await
        .expect("the attachment ends with the container")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "got ws\nbye\n");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "err ws\n");
    assert_eq!(pod.wait_exited(&id).await.exit_code, 3);
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_container_exit_mid_exec_ends_the_stream_with_its_status() {
    let pod = pod(TestAgent::start().await.unwrap(), "exit-pod").await;
    let mut config = pod.config("short", &["sleep", "1000"]);
    config.linux = Some(k8s_cri::v1::LinuxContainerConfig {
        security_context: Some(k8s_cri::v1::LinuxContainerSecurityContext {
            namespace_options: Some(k8s_cri::v1::NamespaceOption {
                pid: k8s_cri::v1::NamespaceMode::Container as i32,
                ..k8s_cri::v1::NamespaceOption::default()
            }),
            ..k8s_cri::v1::LinuxContainerSecurityContext::default()
        }),
        ..k8s_cri::v1::LinuxContainerConfig::default()
    });
    let id = pod.run(config).await;
    let mut client = pod.agent.client().await.unwrap();
    let url = client
        .runtime
        .exec(exec_request(
            &id,
            &["sh", "-c", "echo started; sleep 100"],
            false,
            false,
        ))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = RemoteCommandSession::connect(
        &url,
        StreamOptions {
            stdin: false,
            stdout: true,
            stderr: true,
            tty: false,
        },
    )
    .await
    .unwrap();
    let mut stdout = session.take_stdout().unwrap();
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"started\n");
    // The container dies (its PID namespace with it) while the exec runs.
    client
        .runtime
        .stop_container(k8s_cri::v1::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), session.finish())
        .await
        .expect("the stream ends when the container exits")
        .unwrap();
    assert_ne!(
        output.completion.exit_code(),
        Some(0),
        "{:?}",
        output.completion
    );
    pod.tear_down().await;
}

/// A pod whose busybox httpd serves `/big` (`size` pseudo-random bytes from `seed`) on its
/// loopback port 8080; returns it, the file's sha256 and a PortForward URL for it.
async fn web_pod(name: &str, size: usize, seed: u64) -> (common::pod::Pod, Vec<u8>, String) {
    let pod = pod(TestAgent::start().await.unwrap(), name).await;
    let id = pod
        .create(pod.config(
            "web",
            &[
                "busybox",
                "httpd",
                "-f",
                "-p",
                "127.0.0.1:8080",
                "-h",
                "/www",
            ],
        ))
        .await
        .unwrap();
    // The page, written into the container's root filesystem before it starts.
    let www = pod
        .agent
        .run_dir
        .join("containers")
        .join(&id)
        .join("rootfs/www");
    std::fs::create_dir_all(&www).unwrap();
    let mut body = vec![0u8; size];
    let mut state = seed;
    for chunk in body.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(www.join("big"), &body).unwrap();
    let expected = Sha256::digest(&body).to_vec();
    drop(body);
    pod.start(&id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut client = pod.agent.client().await.unwrap();
    let url = client
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.sandbox_id.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    (pod, expected, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_port_forward_carries_100_mb_intact_from_a_pod() {
    let (pod, expected, url) =
        web_pod("forward-pod", 100 * 1024 * 1024, 0x9e37_79b9_7f4a_7c15).await;
    let session = PortForwardSession::connect(&url).await.unwrap();
    let mut connection = session.open(8080).await.unwrap();
    connection
        .write_all(b"GET /big HTTP/1.0\r\nHost: pod\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::with_capacity(101 * 1024 * 1024);
    tokio::time::timeout(
        Duration::from_secs(120),
        connection.read_to_end(&mut response),
    )
    .await
    .expect("the transfer ends")
    .unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP header")
        + 4;
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    assert!(
        head.starts_with("HTTP/1.") && head.contains(" 200 "),
        "{head}"
    );
    assert_eq!(response.len() - split, 100 * 1024 * 1024);
    assert_eq!(Sha256::digest(&response[split..]).to_vec(), expected);
    assert_eq!(
        connection.finish().await,
        None,
        "no error on the error stream"
    );

    // A port nobody listens on: the error stream says so, the session goes on.
    let refused = session.open(9).await.unwrap();
    let message = refused.finish().await.unwrap_or_default();
    assert!(message.contains("9"), "{message:?}");
    session.close();
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_exec_over_tls_with_a_self_signed_certificate() {
    let agent = TestAgent::start_with("[streaming]\ntls = true", &[])
        .await
        .unwrap();
    let pod = pod(agent, "tls-pod").await;
    let id = pod.run(pod.config("shell", &["sleep", "1000"])).await;
    let mut client = pod.agent.client().await.unwrap();
    let options = StreamOptions {
        stdin: false,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let url = client
        .runtime
        .exec(exec_request(
            &id,
            &["sh", "-c", "echo secure; exit 4"],
            false,
            false,
        ))
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    // Plain HTTP to the TLS port gets no upgrade.
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        RemoteCommandSession::connect(&plain, options)
            .await
            .is_err()
    );
    // That consumed nothing: the token is only read after the TLS handshake.
    let output = RemoteCommandSession::connect(&url, options)
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    assert_eq!(output.stdout, b"secure\n");
    assert_eq!(output.completion.exit_code(), Some(4));
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_websocket_exec_output_exit_code_and_tty() {
    let pod = pod(TestAgent::start().await.unwrap(), "ws-exec-pod").await;
    let id = pod.run(pod.config("shell", &["sleep", "1000"])).await;
    let mut client = pod.agent.client().await.unwrap();

    // v5, as crictl offers: separate stdout and stderr, the exit code in the status.
    let url = client
        .runtime
        .exec(exec_request(
            &id,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        ))
        .await
        .unwrap()
        .into_inner()
        .url;
    let session = WebSocketCommandSession::connect(&url).await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), session.finish())
        .await
        .expect("the command ends")
        .unwrap();
    assert_eq!(output.stdout, b"out\n");
    assert_eq!(output.stderr, b"err\n");
    assert_eq!(output.completion.exit_code(), Some(3));
    // The URL was used.
    assert!(WebSocketCommandSession::connect(&url).await.is_err());

    // stdin ended by v5's close signal reaches the command as end of file.
    let url = client
        .runtime
        .exec(ExecRequest {
            stdin: true,
            ..exec_request(&id, &["wc", "-c"], false, false)
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = WebSocketCommandSession::connect(&url).await.unwrap();
    session.write_stdin(b"twelve bytes").await.unwrap();
    session.close_stdin().await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), session.finish())
        .await
        .expect("wc ends at end of stdin")
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "12");
    assert_eq!(output.completion.exit_code(), Some(0));

    // A terminal with stdin: resizes reach it, typed commands run, the exit code returns.
    let url = client
        .runtime
        .exec(exec_request(&id, &["sh"], true, true))
        .await
        .unwrap()
        .into_inner()
        .url;
    let mut session = WebSocketCommandSession::connect(&url).await.unwrap();
    session
        .resize(TerminalSize {
            width: 120,
            height: 50,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.write_stdin(b"stty size; tty\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    session
        .resize(TerminalSize {
            width: 90,
            height: 30,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    session.write_stdin(b"stty size; exit 5\n").await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), session.finish())
        .await
        .expect("the shell exits")
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "");
    assert!(text.contains("50 120\n"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("30 90\n"), "{text:?}");
    assert_eq!(output.completion.exit_code(), Some(5));
    pod.tear_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_websocket_port_forward_carries_data_intact_from_a_pod() {
    let (pod, expected, url) =
        web_pod("ws-forward-pod", 20 * 1024 * 1024, 0x2545_f491_4f6c_dd1d).await;
    let session = PortForwardSession::connect_websocket(&url).await.unwrap();
    // Two connections on one session, one after the other.
    for _ in 0..2 {
        let mut connection = session.open(8080).await.unwrap();
        connection
            .write_all(b"GET /big HTTP/1.0\r\nHost: pod\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::with_capacity(21 * 1024 * 1024);
        tokio::time::timeout(
            Duration::from_secs(120),
            connection.read_to_end(&mut response),
        )
        .await
        .expect("the transfer ends")
        .unwrap();
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP header")
            + 4;
        let head = String::from_utf8_lossy(&response[..split]).to_string();
        assert!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        assert_eq!(response.len() - split, 20 * 1024 * 1024);
        assert_eq!(Sha256::digest(&response[split..]).to_vec(), expected);
        assert_eq!(connection.finish().await, None);
    }
    let refused = session.open(9).await.unwrap();
    let message = refused.finish().await.unwrap_or_default();
    assert!(message.contains("9"), "{message:?}");
    session.close();
    pod.tear_down().await;
}
