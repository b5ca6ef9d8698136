//! Port forwarding end to end: the fake backend connects to a TCP echo server on loopback.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::PortForwardTarget;
use super::client::PortForwardSession;
use super::spdy::{Headers, RstStatus, StreamEnd};
use super::test_backend::*;

fn target() -> PortForwardTarget {
    PortForwardTarget {
        sandbox_id: "sandbox-1".into(),
        ports: vec![],
    }
}

/// Deterministic bytes that are not periodic over short spans.
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
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
async fn test_port_forward_ten_megabytes_intact() {
    let (server, backend) = start(|_| {}).await;
    let port = echo_server().await;
    let url = server.port_forward_url(target()).unwrap();
    assert!(url.starts_with(&format!("{}/portforward/", server.base_url())));
    let session = PortForwardSession::connect(&url).await.unwrap();
    let connection = session.open(port).await.unwrap();
    let sent = pattern(10 * 1024 * 1024);
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
    assert_eq!(received.len(), sent.len());
    assert!(received == sent, "the echoed bytes differ");
    let connection = read.unsplit(writer.await.unwrap());
    assert_eq!(connection.finish().await, None);
    session.close();
    eventually("session over", || {
        server.active_connections() == 0 && backend.live() == 0
    })
    .await;
}

#[tokio::test]
async fn test_port_forward_two_concurrent_connections() {
    let (server, _backend) = start(|_| {}).await;
    let port = echo_server().await;
    let url = server.port_forward_url(target()).unwrap();
    let session = PortForwardSession::connect(&url).await.unwrap();
    let mut first = session.open(port).await.unwrap();
    let mut second = session.open(port).await.unwrap();
    assert_ne!(first.request_id(), second.request_id());
    first.write_all(b"one").await.unwrap();
    second.write_all(b"two").await.unwrap();
    first.write_all(b" more").await.unwrap();
    let mut buf = [0u8; 3];
    second.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"two");
    let mut buf = [0u8; 8];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"one more");
    // Closing one leaves the other working.
    first.shutdown().await.unwrap();
    assert_eq!(first.finish().await, None);
    second.write_all(b"!").await.unwrap();
    let mut buf = [0u8; 1];
    second.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"!");
}

#[tokio::test]
async fn test_port_forward_backend_error_reaches_error_stream() {
    let (server, _backend) = start(|_| {}).await;
    // A port nothing listens on.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = server.port_forward_url(target()).unwrap();
    let session = PortForwardSession::connect(&url).await.unwrap();
    let connection = session.open(closed).await.unwrap();
    let message = tokio::time::timeout(WAIT, connection.finish())
        .await
        .unwrap()
        .expect("an error message");
    let prefix = format!(
        "error forwarding port {closed} to pod sandbox-1, uid : connect to port {closed}: "
    );
    assert!(message.starts_with(&prefix), "{message}");
    // The session goes on.
    let port = echo_server().await;
    let mut connection = session.open(port).await.unwrap();
    connection.write_all(b"after").await.unwrap();
    let mut buf = [0u8; 5];
    connection.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after");
}

#[tokio::test]
async fn test_port_forward_rejects_bad_streams() {
    let (server, _backend) = start(|_| {}).await;
    let url = server.port_forward_url(target()).unwrap();
    let upgraded = super::client::upgrade(&url, &["portforward.k8s.io"])
        .await
        .unwrap();
    for (port, streamtype) in [("0", "data"), ("x", "data"), ("", "data"), ("80", "stdin")] {
        let mut headers = Headers::new();
        headers.push("streamtype", streamtype);
        if !port.is_empty() {
            headers.push("port", port);
        }
        headers.push("requestid", "1");
        let stream = upgraded.session.open_stream(headers).await.unwrap();
        let (mut reader, _writer) = stream.split();
        let end = tokio::time::timeout(WAIT, reader.recv()).await.unwrap();
        assert_eq!(end, None);
        assert_eq!(
            reader.end(),
            Some(StreamEnd::Reset {
                status: RstStatus::REFUSED_STREAM,
                by_peer: true
            }),
            "port {port:?} streamtype {streamtype}"
        );
    }
}

#[tokio::test]
async fn test_port_forward_incomplete_pair_times_out() {
    let (server, backend) = start(|config| config.stream_creation_timeout_seconds = 1).await;
    let url = server.port_forward_url(target()).unwrap();
    let upgraded = super::client::upgrade(&url, &["portforward.k8s.io"])
        .await
        .unwrap();
    let mut headers = Headers::new();
    headers.push("streamtype", "error");
    headers.push("port", "80");
    headers.push("requestid", "7");
    let (mut reader, _writer) = upgraded.session.open_stream(headers).await.unwrap().split();
    let mut message = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, reader.recv()).await.unwrap() {
        message.extend_from_slice(&chunk);
    }
    let message = String::from_utf8(message).unwrap();
    assert!(message.starts_with("(conn=127.0.0.1:"), "{message}");
    assert!(
        message.ends_with(", request=7) timed out waiting for streams"),
        "{message}"
    );
    assert_eq!(reader.end(), Some(StreamEnd::Fin));
    assert_eq!(backend.live(), 0);
}

#[tokio::test]
async fn test_port_forward_without_request_id_pairs_by_stream_id() {
    let (server, _backend) = start(|_| {}).await;
    let port = echo_server().await;
    let url = server.port_forward_url(target()).unwrap();
    let upgraded = super::client::upgrade(&url, &["portforward.k8s.io"])
        .await
        .unwrap();
    let open = |streamtype: &str| {
        let mut headers = Headers::new();
        headers.push("streamtype", streamtype);
        headers.push("port", port.to_string());
        upgraded.session.open_stream(headers)
    };
    let _error = open("error").await.unwrap();
    let mut data = open("data").await.unwrap();
    data.write_all(b"old client").await.unwrap();
    let mut buf = [0u8; 10];
    tokio::time::timeout(WAIT, data.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"old client");
}

#[tokio::test]
async fn test_port_forward_session_close_cancels_forwards() {
    let (server, backend) = start(|_| {}).await;
    let port = echo_server().await;
    let url = server.port_forward_url(target()).unwrap();
    let session = PortForwardSession::connect(&url).await.unwrap();
    let mut connection = session.open(port).await.unwrap();
    connection.write_all(b"x").await.unwrap();
    let mut buf = [0u8; 1];
    connection.read_exact(&mut buf).await.unwrap();
    assert_eq!(backend.live(), 1);
    session.close();
    eventually("forward cancelled, connection gone", || {
        backend.live() == 0 && server.active_connections() == 0
    })
    .await;
    assert!(matches!(
        server.port_forward_url(PortForwardTarget {
            sandbox_id: String::new(),
            ports: vec![]
        }),
        Err(super::Error::MissingSandboxId)
    ));
}
