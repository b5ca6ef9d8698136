//! How connections and sessions end: bad requests, bad frames, clients that leave or stall,
//! timeouts and server shutdown. Nothing may be left running afterwards.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::{self, Completion, RemoteCommandSession, StreamOptions};
use super::test_backend::*;

/// What `exec_target(.., false, false)` asks for.
const OUT: StreamOptions = StreamOptions {
    stdin: false,
    stdout: true,
    stderr: true,
    tty: false,
};

/// Sends `request` as is and returns everything the server answers until it closes.
async fn raw_exchange(server: &super::StreamingServer, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(server.local_address()).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn path_of(url: &str) -> String {
    let uri: http::Uri = url.parse().unwrap();
    uri.path().to_string()
}

#[tokio::test]
async fn test_garbage_requests_get_clean_4xx() {
    let (server, _backend) = start(|_| {}).await;
    let answer = raw_exchange(&server, b"\x00\x01\x02 garbage\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let answer = raw_exchange(&server, b"GET /exec/nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.ends_with("404 page not found\n"), "{answer}");

    // A valid token without the upgrade headers: 400, and the token is used up.
    let url = server
        .exec_url(exec_target(&["echo"], false, false))
        .unwrap();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        path_of(&url)
    );
    let answer = raw_exchange(&server, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("missing upgrade headers"), "{answer}");
    let request = format!("GET {} HTTP/1.1\r\nHost: x\r\n\r\n", path_of(&url));
    let answer = raw_exchange(&server, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    eventually("connections end", || server.active_connections() == 0).await;
}

#[tokio::test]
async fn test_malformed_spdy_frame_closes_the_connection() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["sleep"], false, false))
        .unwrap();
    let mut tcp = TcpStream::connect(server.local_address()).await.unwrap();
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n",
        path_of(&url)
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    // Not `Upgrade, close`: client-go drops such an upgrade.
    assert!(head.contains("connection: Upgrade\r\n"), "{head}");
    // A control frame of SPDY version 2: a protocol error.
    tcp.write_all(&[0x80, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, 0x0a])
        .await
        .unwrap();
    tcp.write_all(&[0u8; 10]).await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection")
        .unwrap();
    // What came back is a GOAWAY (control frame type 7) with PROTOCOL_ERROR.
    assert_eq!(&rest[..4], &[0x80, 0x03, 0x00, 0x07], "{rest:?}");
    assert_eq!(&rest[rest.len() - 4..], &[0, 0, 0, 1], "{rest:?}");
    eventually("the session ends", || server.active_connections() == 0).await;
    assert_eq!(backend.live(), 0);
    // The server still serves.
    let url = server
        .exec_url(exec_target(&["echo", "still"], false, false))
        .unwrap();
    let session = RemoteCommandSession::connect(&url, OUT).await.unwrap();
    assert_eq!(session.finish().await.unwrap().stdout, b"still\n");
}

#[tokio::test]
async fn test_client_gone_drops_the_backend_call() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["sleep"], false, false))
        .unwrap();
    let session = RemoteCommandSession::connect(&url, OUT).await.unwrap();
    eventually("the command runs", || backend.live() == 1).await;
    session.session().close();
    drop(session);
    eventually("backend call dropped and connection gone", || {
        backend.live() == 0 && server.active_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn test_stream_creation_timeout_ends_the_session() {
    let (server, backend) = start(|config| config.stream_creation_timeout_seconds = 1).await;
    let url = server
        .exec_url(exec_target(&["echo"], false, false))
        .unwrap();
    // Upgrade, then open only the error stream of the two wanted.
    let upgraded = client::upgrade(&url, &["v4.channel.k8s.io"]).await.unwrap();
    let mut headers = super::spdy::Headers::new();
    headers.push("streamtype", "error");
    let _error = upgraded.session.open_stream(headers).await.unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(WAIT, upgraded.session.closed())
        .await
        .expect("the server closes the session")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert!(super::lock(&backend.execs).is_empty());
    eventually("connection gone", || server.active_connections() == 0).await;
}

#[tokio::test]
async fn test_idle_timeout_ends_the_session() {
    let (server, backend) = start(|config| config.stream_idle_timeout_seconds = 1).await;
    let url = server
        .exec_url(exec_target(&["sleep"], false, false))
        .unwrap();
    let session = RemoteCommandSession::connect(&url, OUT).await.unwrap();
    eventually("the command runs", || backend.live() == 1).await;
    let output = tokio::time::timeout(WAIT, session.finish())
        .await
        .expect("the idle session is closed")
        .unwrap();
    // The session was closed under the command: no status.
    assert_eq!(output.completion, Completion::Succeeded);
    assert!(output.error.is_empty());
    eventually("backend call dropped", || {
        backend.live() == 0 && server.active_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn test_shutdown_ends_sessions_and_stops_listening() {
    let (server, backend) = start(|_| {}).await;
    let url = server
        .exec_url(exec_target(&["sleep"], false, false))
        .unwrap();
    let session = RemoteCommandSession::connect(&url, OUT).await.unwrap();
    eventually("the command runs", || backend.live() == 1).await;
    let address = server.local_address();
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown completes");
    assert_eq!(server.active_connections(), 0);
    assert_eq!(backend.live(), 0);
    tokio::time::timeout(WAIT, session.finish())
        .await
        .expect("the client sees the session end")
        .unwrap();
    assert!(TcpStream::connect(address).await.is_err());
    // Twice is harmless.
    server.shutdown().await;
}

#[tokio::test]
async fn test_closing_a_target_ends_its_sessions_only() {
    let (server, backend) = start(|_| {}).await;
    let mut other = exec_target(&["sleep"], false, false);
    other.container_id = "c2".into();
    let kept = RemoteCommandSession::connect(&server.exec_url(other).unwrap(), OUT)
        .await
        .unwrap();
    let mut closed = Vec::new();
    for _ in 0..2 {
        let url = server
            .exec_url(exec_target(&["sleep"], false, false))
            .unwrap();
        closed.push(RemoteCommandSession::connect(&url, OUT).await.unwrap());
    }
    eventually("the commands run", || backend.live() == 3).await;
    server.close_sessions("c1");
    for session in closed {
        tokio::time::timeout(WAIT, session.finish())
            .await
            .expect("the client sees the session end")
            .unwrap();
    }
    eventually("their commands are dropped", || backend.live() == 1).await;
    assert_eq!(server.active_connections(), 1);
    // Unknown targets are nothing to close.
    server.close_sessions("c3");
    assert_eq!(backend.live(), 1);
    drop(kept);
    eventually("the last session ends", || server.active_connections() == 0).await;
}

#[tokio::test]
async fn test_many_sessions_leave_nothing_behind() {
    let (server, backend) = start(|_| {}).await;
    let server = std::sync::Arc::new(server);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let url = server
            .exec_url(exec_target(&["echo", &i.to_string()], false, false))
            .unwrap();
        tasks.spawn(async move {
            let session = RemoteCommandSession::connect(&url, OUT).await.unwrap();
            let output = session.finish().await.unwrap();
            assert_eq!(output.stdout, format!("{i}\n").as_bytes());
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
    eventually("every session ends", || {
        server.active_connections() == 0 && backend.live() == 0
    })
    .await;
    assert_eq!(server.pending_requests(), 0);
}
