//! Exec, attach and port-forward over WebSocket end to end: the fake backend behind a real
//! server on loopback, driven by the project's WebSocket client (and raw frames for garbage).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::client::{
    ClientError, Completion, PortForwardSession, WebSocket, WebSocketCommandSession,
    connect_websocket,
};
use super::protocol::ChannelProtocol;
use super::test_backend::*;
use super::{AttachTarget, PortForwardTarget, TerminalSize};

const EXIT_3_JSON: &str = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;

async fn finish(session: WebSocketCommandSession) -> super::client::Output {
    tokio::time::timeout(WAIT, session.finish())
        .await
        .expect("session ends in time")
        .unwrap()
}

/// The next data or close message, skipping pings.
async fn next_message(ws: &mut WebSocket) -> Option<Message> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
        {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(_)) | None => return None,
        }
    }
}

#[tokio::test]
async fn test_ws_exec_v5_output_status_and_clean_end() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["echo", "hello", "world"], false, false))
        .unwrap();
    let session = WebSocketCommandSession::connect(&url).await.unwrap();
    assert_eq!(session.protocol(), ChannelProtocol::V5);
    let output = finish(session).await;
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
async fn test_ws_first_message_is_empty_on_lowest_channel_and_close_is_normal() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["exit", "3"], false, false))
        .unwrap();
    let (mut ws, chosen) = connect_websocket(&url, &["v4.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    assert_eq!(chosen, "v4.channel.k8s.io");
    // kubelet's "connection established": channel 1, no data.
    assert_eq!(next_message(&mut ws).await, Some(Message::binary(vec![1])));
    assert_eq!(
        next_message(&mut ws).await,
        Some(Message::binary(b"\x02bye\n".to_vec()))
    );
    let mut status = vec![3];
    status.extend_from_slice(EXIT_3_JSON.as_bytes());
    assert_eq!(next_message(&mut ws).await, Some(Message::binary(status)));
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("want a normal close, got {other:?}"),
    }
}

#[tokio::test]
async fn test_ws_every_protocol_frames_and_reports_exit_codes() {
    let (server, _backend) = start(|_| {}).await;
    let v1_failure =
        Completion::Failed("command terminated with non-zero exit code: exit status 3".into());
    let cases = [
        (ChannelProtocol::V5, Completion::Exited(3)),
        (ChannelProtocol::V4, Completion::Exited(3)),
        (ChannelProtocol::V4Base64, Completion::Exited(3)),
        (ChannelProtocol::V1, v1_failure.clone()),
        (ChannelProtocol::V1Base64, v1_failure.clone()),
        (ChannelProtocol::Unnamed, v1_failure),
    ];
    for (protocol, completion) in cases {
        let url = server
            .exec_url(exec_target(&["exit", "3"], false, false))
            .unwrap();
        let session = WebSocketCommandSession::connect_with(&url, &[protocol])
            .await
            .unwrap();
        assert_eq!(session.protocol(), protocol);
        let output = finish(session).await;
        assert_eq!(output.stderr, b"bye\n", "{protocol:?}");
        assert_eq!(output.completion, completion, "{protocol:?}");
        // Before v4 a success writes nothing on the error channel.
        let url = server
            .exec_url(exec_target(&["echo", "ok"], false, false))
            .unwrap();
        let session = WebSocketCommandSession::connect_with(&url, &[protocol])
            .await
            .unwrap();
        let output = finish(session).await;
        assert_eq!(output.stdout, b"ok\n", "{protocol:?}");
        assert_eq!(output.completion.exit_code(), Some(0), "{protocol:?}");
        assert_eq!(
            output.error.is_empty(),
            !protocol.has_status(),
            "{protocol:?}"
        );
    }
}

#[tokio::test]
async fn test_ws_base64_is_text_on_the_wire() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["echo", "hi"], false, false))
        .unwrap();
    let (mut ws, _) = connect_websocket(&url, &["base64.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("1")));
    // "hi\n" in base64.
    assert_eq!(next_message(&mut ws).await, Some(Message::text("1aGkK")));
}

#[tokio::test]
async fn test_ws_stdin_ends_with_v5_close_signal() {
    let (server, _backend) = start(|_| {}).await;
    let url = server.exec_url(exec_target(&["cat"], true, false)).unwrap();
    let mut session = WebSocketCommandSession::connect(&url).await.unwrap();
    session.write_stdin(b"ping ").await.unwrap();
    session.write_stdin(b"pong").await.unwrap();
    session.close_stdin().await.unwrap();
    let output = finish(session).await;
    assert_eq!(output.stdout, b"ping pong");
    assert_eq!(output.completion, Completion::Exited(0));
}

#[tokio::test]
async fn test_ws_stdin_base64_echoes_while_running() {
    let (server, _backend) = start(|_| {}).await;
    let url = server.exec_url(exec_target(&["cat"], true, false)).unwrap();
    let (mut ws, _) = connect_websocket(&url, &["v4.base64.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("1")));
    // "\0binary\xff" in base64 on channel '0'; it comes back on '1'.
    ws.send(Message::text("0AGJpbmFyef8=")).await.unwrap();
    assert_eq!(
        next_message(&mut ws).await,
        Some(Message::text("1AGJpbmFyef8="))
    );
    drop(ws);
    eventually("session over", || server.active_connections() == 0).await;
}

#[tokio::test]
async fn test_ws_tty_resizes_delivered_and_no_stderr() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["resize", "2"], true, true))
        .unwrap();
    let mut session = WebSocketCommandSession::connect(&url).await.unwrap();
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
    let output = finish(session).await;
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
async fn test_ws_backend_errors_and_attach() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["fail"], false, false))
        .unwrap();
    let output = finish(WebSocketCommandSession::connect(&url).await.unwrap()).await;
    assert_eq!(
        output.completion,
        Completion::Failed(
            "Internal error occurred: error executing command in container: container c1 is not running"
                .into()
        )
    );
    let attach = |id: &str| AttachTarget {
        container_id: id.into(),
        tty: false,
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let url = server.attach_url(attach("missing")).unwrap();
    let output = finish(WebSocketCommandSession::connect(&url).await.unwrap()).await;
    assert_eq!(
        output.completion,
        Completion::Failed(
            "Internal error occurred: error attaching to container: container missing not found"
                .into()
        )
    );
    let url = server.attach_url(attach("c1")).unwrap();
    let mut session = WebSocketCommandSession::connect(&url).await.unwrap();
    session.write_stdin(b"attached").await.unwrap();
    session.close_stdin().await.unwrap();
    let output = finish(session).await;
    assert_eq!(output.stdout, b"attached");
    assert_eq!(output.completion, Completion::Exited(0));
}

#[tokio::test]
async fn test_ws_negotiation_refusals() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["echo"], false, false))
        .unwrap();
    let refused = connect_websocket(&url, &["v3.channel.k8s.io"], 1 << 20).await;
    match refused {
        Err(ClientError::Refused {
            status, accepted, ..
        }) => {
            assert_eq!(status, 403);
            assert!(accepted.contains(&"v5.channel.k8s.io".to_string()));
        }
        other => panic!("want 403, got {:?}", other.map(|(_, chosen)| chosen)),
    }
    // The refusal used the token.
    let again = connect_websocket(&url, &["v5.channel.k8s.io"], 1 << 20).await;
    assert!(matches!(
        again,
        Err(ClientError::Refused { status: 404, .. })
    ));
}

#[tokio::test]
async fn test_ws_garbage_close_signal_closes_with_protocol_error() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["sleep"], true, false))
        .unwrap();
    let (mut ws, _) = connect_websocket(&url, &["v5.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::binary(vec![1])));
    eventually("backend runs", || backend.live() == 1).await;
    ws.send(Message::binary(vec![255, 0, 0])).await.unwrap();
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Protocol),
        other => panic!("want a protocol close, got {other:?}"),
    }
    eventually("backend call dropped", || {
        backend.live() == 0 && server.active_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn test_ws_oversized_message_closes_with_size_error() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["sleep"], true, false))
        .unwrap();
    // The client itself may send big messages; the server's limit is what is tested.
    let (mut ws, _) = connect_websocket(&url, &["v5.channel.k8s.io"], 64 << 20)
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::binary(vec![1])));
    let mut big = vec![0u8; 2 << 20];
    big[0] = 0;
    let _ = ws.send(Message::binary(big)).await;
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
        // The server may have closed before the whole message was written.
        None => {}
        other => panic!("want a size close, got {other:?}"),
    }
    eventually("backend call dropped", || {
        backend.live() == 0 && server.active_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn test_ws_garbage_base64_and_unknown_channels_are_skipped() {
    let (server, _backend) = start(|_| {}).await;
    let url = server.exec_url(exec_target(&["cat"], true, false)).unwrap();
    let (mut ws, _) = connect_websocket(&url, &["v4.base64.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("1")));
    for garbage in ["0!!!not base64", "x", "9AAAA", "", "1b3V0"] {
        ws.send(Message::text(garbage)).await.unwrap();
    }
    ws.send(Message::binary(vec![0xff, 0x00])).await.unwrap();
    // Still alive: stdin goes through ("ok" in base64).
    ws.send(Message::text("0b2s=")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::text("1b2s=")));
    drop(ws);
    eventually("session over", || server.active_connections() == 0).await;
}

#[tokio::test]
async fn test_ws_client_gone_drops_the_backend_call() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["sleep"], false, false))
        .unwrap();
    let session = WebSocketCommandSession::connect(&url).await.unwrap();
    eventually("backend runs", || backend.live() == 1).await;
    drop(session);
    eventually("backend call dropped", || {
        backend.live() == 0 && server.active_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn test_ws_idle_timeout_closes_the_session() {
    let (server, backend) = start(|config| config.stream_idle_timeout_seconds = 1).await;
    let url = server
        .exec_url(exec_target(&["sleep"], false, false))
        .unwrap();
    let (mut ws, _) = connect_websocket(&url, &["v5.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await, Some(Message::binary(vec![1])));
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("want an idle close, got {other:?}"),
    }
    eventually("backend call dropped", || {
        backend.live() == 0 && server.active_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn test_ws_shutdown_ends_sessions() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["sleep"], false, false))
        .unwrap();
    let (mut ws, _) = connect_websocket(&url, &["v5.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    eventually("backend runs", || backend.live() == 1).await;
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown in time");
    assert_eq!(backend.live(), 0);
    assert_eq!(server.active_connections(), 0);
    let _ = next_message(&mut ws).await;
}

fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x2545_f491;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

#[tokio::test]
async fn test_ws_port_forward_tunnel_carries_data_intact() {
    let (server, backend) = start(|_| {}).await;
    let port = echo_server().await;
    let url = server
        .port_forward_url(PortForwardTarget {
            sandbox_id: "sandbox-1".into(),
            ports: vec![],
        })
        .unwrap();
    let session = PortForwardSession::connect_websocket(&url).await.unwrap();
    let connection = session.open(port).await.unwrap();
    let sent = pattern(5 * 1024 * 1024);
    let (mut read, mut write) = tokio::io::split(connection);
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            write.write_all(&sent).await.unwrap();
            write.shutdown().await.unwrap();
            write
        })
    };
    let mut received = Vec::with_capacity(sent.len());
    tokio::time::timeout(Duration::from_secs(60), read.read_to_end(&mut received))
        .await
        .expect("the echo comes back in time")
        .unwrap();
    assert!(received == sent, "the echoed bytes differ");
    let connection = read.unsplit(writer.await.unwrap());
    assert_eq!(connection.finish().await, None);
    // A port nobody listens on: the error stream says so, the session goes on.
    let refused = session.open(1).await.unwrap();
    let message = refused.finish().await.unwrap_or_default();
    assert!(message.contains("error forwarding port 1"), "{message:?}");
    session.close();
    eventually("session over", || {
        server.active_connections() == 0 && backend.live() == 0
    })
    .await;
}

#[tokio::test]
async fn test_ws_port_forward_channel_pairs() {
    let (server, backend) = start(|_| {}).await;
    let port = echo_server().await;
    let url = server
        .port_forward_url(PortForwardTarget {
            sandbox_id: "sandbox-1".into(),
            ports: vec![i32::from(port), 1],
        })
        .unwrap();
    let (mut ws, chosen) = connect_websocket(&url, &["v4.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    assert_eq!(chosen, "v4.channel.k8s.io");
    // Each port on its data and error channels, two little-endian bytes.
    let [low, high] = port.to_le_bytes();
    for expected in [
        vec![0, low, high],
        vec![1, low, high],
        vec![2, 1, 0],
        vec![3, 1, 0],
    ] {
        assert_eq!(next_message(&mut ws).await, Some(Message::binary(expected)));
    }
    let sent = pattern(200 * 1024);
    for chunk in sent.chunks(30 * 1024) {
        let mut message = vec![0];
        message.extend_from_slice(chunk);
        ws.send(Message::binary(message)).await.unwrap();
    }
    let (mut echoed, mut error) = (Vec::new(), String::new());
    while echoed.len() < sent.len() || error.is_empty() {
        let Some(Message::Binary(data)) = next_message(&mut ws).await else {
            panic!("connection ended early");
        };
        match data[0] {
            0 => echoed.extend_from_slice(&data[1..]),
            3 => error.push_str(&String::from_utf8_lossy(&data[1..])),
            other => panic!("unexpected channel {other}"),
        }
    }
    assert!(echoed == sent, "the echoed bytes differ");
    assert!(
        error.starts_with("error forwarding port 1 to pod sandbox-1, uid : connect to port 1"),
        "{error}"
    );
    drop(ws);
    eventually("session over", || {
        server.active_connections() == 0 && backend.live() == 0
    })
    .await;
}

#[tokio::test]
async fn test_ws_port_forward_channel_pairs_base64_without_ports_ends_at_once() {
    let (server, _backend) = start(|_| {}).await;
    let url = server
        .port_forward_url(PortForwardTarget {
            sandbox_id: "sandbox-1".into(),
            ports: vec![],
        })
        .unwrap();
    let (mut ws, _) = connect_websocket(&url, &["v4.base64.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    match next_message(&mut ws).await {
        Some(Message::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("want a normal close, got {other:?}"),
    }
    let url = server
        .port_forward_url(PortForwardTarget {
            sandbox_id: "sandbox-1".into(),
            ports: vec![8080],
        })
        .unwrap();
    let (mut ws, _) = connect_websocket(&url, &["v4.base64.channel.k8s.io"], 1 << 20)
        .await
        .unwrap();
    // 8080 = 0x1f90: bytes 90 1f, "kB8=" in base64.
    assert_eq!(next_message(&mut ws).await, Some(Message::text("0kB8=")));
    assert_eq!(next_message(&mut ws).await, Some(Message::text("1kB8=")));
}
