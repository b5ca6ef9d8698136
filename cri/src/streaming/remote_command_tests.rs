//! Exec and attach end to end: the fake backend behind a real server on loopback, driven by
//! the project's client over TCP.

use super::client::{ClientError, Completion, RemoteCommandSession, StreamOptions};
use super::protocol::RemoteCommandProtocol;
use super::test_backend::*;
use super::{AttachTarget, TerminalSize};

const OUT_ERR: StreamOptions = StreamOptions {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};

async fn run(url: &str, options: StreamOptions) -> super::client::Output {
    let session = RemoteCommandSession::connect(url, options).await.unwrap();
    assert_eq!(session.protocol(), RemoteCommandProtocol::V4);
    tokio::time::timeout(WAIT, session.finish())
        .await
        .expect("session ends in time")
        .unwrap()
}

#[tokio::test]
async fn test_exec_output_and_success_status() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["echo", "hello", "world"], false, false))
        .unwrap();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(
        url.starts_with(&format!("{}/exec/", server.base_url())),
        "{url}"
    );
    let output = run(&url, OUT_ERR).await;
    assert_eq!(output.stdout, b"hello world\n");
    assert_eq!(output.stderr, b"");
    assert_eq!(output.error, br#"{"metadata":{},"status":"Success"}"#);
    assert_eq!(output.completion, Completion::Exited(0));
    eventually("sessions end", || {
        server.active_connections() == 0 && backend.live() == 0
    })
    .await;
}

#[tokio::test]
async fn test_exec_non_zero_exit_status() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["exit", "3"], false, false))
        .unwrap();
    let output = run(&url, OUT_ERR).await;
    assert_eq!(output.stderr, b"bye\n");
    assert_eq!(
        String::from_utf8(output.error).unwrap(),
        r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
    );
    assert_eq!(output.completion, Completion::Exited(3));
}

#[tokio::test]
async fn test_exec_stdin_echo() {
    let (server, _backend) = start(|_| {}).await;
    let url = server.exec_url(exec_target(&["cat"], true, false)).unwrap();
    let options = StreamOptions {
        stdin: true,
        ..OUT_ERR
    };
    let mut session = RemoteCommandSession::connect(&url, options).await.unwrap();
    session.write_stdin(b"ping ").await.unwrap();
    session.write_stdin(b"pong").await.unwrap();
    session.close_stdin().await.unwrap();
    let output = session.finish().await.unwrap();
    assert_eq!(output.stdout, b"ping pong");
    assert_eq!(output.completion, Completion::Exited(0));
}

#[tokio::test]
async fn test_exec_tty_resizes_delivered_and_no_stderr() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["resize", "2"], true, true))
        .unwrap();
    // Asking for stderr with a tty opens none (client-go does the same).
    let options = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: true,
        tty: true,
    };
    let mut session = RemoteCommandSession::connect(&url, options).await.unwrap();
    session
        .resize(TerminalSize {
            width: 80,
            height: 24,
        })
        .await
        .unwrap();
    session
        .resize(TerminalSize {
            width: 120,
            height: 40,
        })
        .await
        .unwrap();
    let output = session.finish().await.unwrap();
    assert_eq!(output.stdout, b"80x24\n120x40\n");
    assert_eq!(output.completion, Completion::Exited(0));
    let execs = super::lock(&backend.execs).clone();
    let shape = execs[0].1;
    assert!(
        shape.stdin && shape.stdout && shape.resize && !shape.stderr,
        "{shape:?}"
    );
}

#[tokio::test]
async fn test_exec_tty_stderr_is_merged_into_stdout() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["stderr", "oops"], false, true))
        .unwrap();
    let options = StreamOptions {
        tty: true,
        ..OUT_ERR
    };
    let output = run(&url, options).await;
    assert_eq!(output.stdout, b"oops");
    assert_eq!(output.stderr, b"");
}

#[tokio::test]
async fn test_exec_older_protocols() {
    let (server, _backend) = start(|_| {}).await;
    let cases = [
        (
            RemoteCommandProtocol::V3,
            Completion::Failed("command terminated with non-zero exit code: exit status 3".into()),
        ),
        (
            RemoteCommandProtocol::V2,
            Completion::Failed("command terminated with non-zero exit code: exit status 3".into()),
        ),
        // v1: the server resets the error stream right away, so no error ever arrives.
        (RemoteCommandProtocol::V1, Completion::Succeeded),
    ];
    for (protocol, expected) in cases {
        let url = server
            .exec_url(exec_target(&["exit", "3"], false, false))
            .unwrap();
        let session = RemoteCommandSession::connect_with(&url, OUT_ERR, &[protocol])
            .await
            .unwrap();
        assert_eq!(session.protocol(), protocol);
        let output = session.finish().await.unwrap();
        assert_eq!(output.stderr, b"bye\n", "{protocol:?}");
        assert_eq!(output.completion, expected, "{protocol:?}");

        let url = server
            .exec_url(exec_target(&["echo", "ok"], false, false))
            .unwrap();
        let session = RemoteCommandSession::connect_with(&url, OUT_ERR, &[protocol])
            .await
            .unwrap();
        let output = session.finish().await.unwrap();
        assert_eq!(output.stdout, b"ok\n");
        assert_eq!(output.completion, Completion::Succeeded, "{protocol:?}");
    }
}

#[tokio::test]
async fn test_exec_v2_with_tty_needs_no_resize_stream() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["echo", "t"], false, true))
        .unwrap();
    let options = StreamOptions {
        tty: true,
        ..OUT_ERR
    };
    let session = RemoteCommandSession::connect_with(&url, options, &[RemoteCommandProtocol::V2])
        .await
        .unwrap();
    let output = session.finish().await.unwrap();
    assert_eq!(output.stdout, b"t\n");
    assert!(!super::lock(&backend.execs)[0].1.resize);
}

#[tokio::test]
async fn test_protocol_follows_client_preference() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["echo"], false, false))
        .unwrap();
    let preference = [RemoteCommandProtocol::V2, RemoteCommandProtocol::V4];
    let session = RemoteCommandSession::connect_with(&url, OUT_ERR, &preference)
        .await
        .unwrap();
    assert_eq!(session.protocol(), RemoteCommandProtocol::V2);
    session.finish().await.unwrap();
}

#[tokio::test]
async fn test_backend_errors_reach_the_error_stream() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["fail"], false, false))
        .unwrap();
    let output = run(&url, OUT_ERR).await;
    assert_eq!(
        output.completion,
        Completion::Failed(
            "Internal error occurred: error executing command in container: container c1 is not running"
                .into()
        )
    );
    let json: serde_json::Value = serde_json::from_slice(&output.error).unwrap();
    assert_eq!(json["reason"], "InternalError");
    assert_eq!(json["code"], 500);

    let url = server
        .attach_url(AttachTarget {
            container_id: "missing".into(),
            tty: false,
            stdin: false,
            stdout: true,
            stderr: true,
        })
        .unwrap();
    let output = run(&url, OUT_ERR).await;
    assert_eq!(
        output.completion,
        Completion::Failed(
            "Internal error occurred: error attaching to container: container missing not found"
                .into()
        )
    );
}

#[tokio::test]
async fn test_attach_echoes_stdin() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .attach_url(AttachTarget {
            container_id: "c1".into(),
            tty: false,
            stdin: true,
            stdout: true,
            stderr: false,
        })
        .unwrap();
    let options = StreamOptions {
        stdin: true,
        stdout: true,
        stderr: false,
        tty: false,
    };
    let mut session = RemoteCommandSession::connect(&url, options).await.unwrap();
    session.write_stdin(b"attached").await.unwrap();
    session.close_stdin().await.unwrap();
    let output = session.finish().await.unwrap();
    assert_eq!(output.stdout, b"attached");
    assert_eq!(output.completion, Completion::Exited(0));
}

#[tokio::test]
async fn test_token_is_single_use() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["echo"], false, false))
        .unwrap();
    run(&url, OUT_ERR).await;
    let err = RemoteCommandSession::connect(&url, OUT_ERR)
        .await
        .err()
        .unwrap();
    match err {
        ClientError::Refused { status, body, .. } => {
            assert_eq!(status, 404);
            assert_eq!(body, "404 page not found");
        }
        other => panic!("expected a 404, got {other}"),
    }
    assert_eq!(server.pending_requests(), 0);
}

#[tokio::test]
async fn test_token_expires() {
    let (server, _backend) = start(|config| config.token_ttl_seconds = 1).await;
    let url = server
        .exec_url(exec_target(&["echo"], false, false))
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let err = RemoteCommandSession::connect(&url, OUT_ERR)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ClientError::Refused { status: 404, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn test_unsupported_protocol_is_403() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["echo"], false, false))
        .unwrap();
    let err = super::client::upgrade(&url, &["v5.channel.k8s.io"])
        .await
        .err()
        .unwrap();
    match err {
        ClientError::Refused {
            status, accepted, ..
        } => {
            assert_eq!(status, 403);
            assert_eq!(accepted.len(), 4);
            assert_eq!(accepted[0], "v4.channel.k8s.io");
        }
        other => panic!("expected a 403, got {other}"),
    }
}

#[tokio::test]
async fn test_url_requests_are_checked() {
    let (server, _backend) = start(|config| config.max_in_flight_requests = 2).await;
    let mut target = exec_target(&["echo"], false, true);
    target.stderr = true;
    assert!(matches!(
        server.exec_url(target),
        Err(super::Error::TtyWithStderr)
    ));
    let mut target = exec_target(&["echo"], false, false);
    target.container_id.clear();
    assert!(matches!(
        server.exec_url(target),
        Err(super::Error::MissingContainerId)
    ));
    let mut target = exec_target(&["echo"], false, false);
    target.stdout = false;
    target.stderr = false;
    assert!(matches!(
        server.exec_url(target),
        Err(super::Error::NoStreams)
    ));
    server
        .exec_url(exec_target(&["echo"], false, false))
        .unwrap();
    server
        .exec_url(exec_target(&["echo"], false, false))
        .unwrap();
    assert!(matches!(
        server.exec_url(exec_target(&["echo"], false, false)),
        Err(super::Error::TooManyInFlight { max: 2 })
    ));
}
