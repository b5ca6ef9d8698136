//! The client side of a session, against the server side over an in-memory pipe (and a raw
//! peer where the server side would not misbehave).

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::test_client::{WAIT, accept, closed, headers, recv};
use super::*;

fn pair(server_config: Config) -> (SessionHandle, Incoming, SessionHandle, Incoming) {
    let (client_io, server_io) = tokio::io::duplex(256 * 1024);
    let (server, server_incoming) = Session::server_with_config(server_io, server_config);
    let (client, client_incoming) = Session::client(client_io);
    (client, client_incoming, server, server_incoming)
}

async fn open(client: &SessionHandle, sent: &Headers) -> Result<Stream> {
    tokio::time::timeout(WAIT, client.open_stream(sent.clone()))
        .await
        .expect("a reply in time")
}

#[tokio::test]
async fn test_client_opens_streams_with_odd_ids_and_exchanges_data() {
    let (client, _ci, _server, mut incoming) = pair(Config::default());
    let sent = headers(&[("streamtype", "stdout")]);
    let mut first = open(&client, &sent).await.unwrap();
    let mut accepted = accept(&mut incoming).await;
    assert_eq!(first.id(), 1);
    assert_eq!(accepted.id(), 1);
    assert_eq!(accepted.headers(), &sent);
    first.send(Bytes::from_static(b"up")).await.unwrap();
    assert_eq!(recv(accepted.reader()).await.unwrap(), "up");
    accepted.send(Bytes::from_static(b"down")).await.unwrap();
    accepted.finish().await.unwrap();
    assert_eq!(recv(first.reader()).await.unwrap(), "down");
    assert_eq!(recv(first.reader()).await, None);
    assert_eq!(first.reader().end(), Some(StreamEnd::Fin));
    let second = open(&client, &Headers::new()).await.unwrap();
    assert_eq!(second.id(), 3);
}

#[tokio::test]
async fn test_client_concurrent_opens_reach_the_wire_in_order() {
    let (client, _ci, _server, mut incoming) = pair(Config::default());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let client = client.clone();
        tasks.spawn(async move {
            let sent = headers(&[("n", &i.to_string())]);
            client.open_stream(sent).await.unwrap().id()
        });
    }
    let mut ids = Vec::new();
    for _ in 0..50 {
        ids.push(accept(&mut incoming).await.id());
    }
    let mut opened = Vec::new();
    while let Some(id) = tasks.join_next().await {
        opened.push(id.unwrap());
    }
    // The server saw increasing ids (it would have refused others) and all were answered.
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    opened.sort_unstable();
    assert_eq!(opened, ids);
}

#[tokio::test]
async fn test_client_open_refused_by_server() {
    let (client, _ci, _server, incoming) = pair(Config::default());
    // A server that does not take streams refuses them.
    drop(incoming);
    let err = open(&client, &Headers::new()).await.err().unwrap();
    assert!(
        matches!(
            err,
            Error::StreamRefused {
                stream_id: 1,
                status: RstStatus::REFUSED_STREAM
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn test_client_open_after_goaway_fails() {
    let (client, _ci, server, _incoming) = pair(Config::default());
    server.go_away().await.unwrap();
    closed(&client).await.unwrap();
    let err = client.open_stream(Headers::new()).await.err().unwrap();
    assert!(
        matches!(err, Error::GoingAway | Error::SessionClosed),
        "{err}"
    );
}

#[tokio::test]
async fn test_client_abandoned_open_resets_the_stream() {
    // A raw server that never replies.
    let (client_io, mut raw) = tokio::io::duplex(64 * 1024);
    let (client, _incoming) = Session::client(client_io);
    let opening = client.open_stream(Headers::new());
    assert!(
        tokio::time::timeout(Duration::from_millis(100), opening)
            .await
            .is_err()
    );
    let frames = read_frames(&mut raw, 2).await;
    assert!(matches!(frames[0], Frame::SynStream(_)), "{frames:?}");
    assert_eq!(
        frames[1],
        Frame::RstStream {
            stream_id: 1,
            status: RstStatus::CANCEL
        }
    );
    assert_eq!(client.open_streams(), 0);
}

#[tokio::test]
async fn test_client_echoes_server_pings_only() {
    let (client_io, mut raw) = tokio::io::duplex(64 * 1024);
    let (_client, _incoming) = Session::client(client_io);
    // A server's ping (even) is echoed; an odd one would be an answer to ours.
    raw.write_all(&Frame::Ping { id: 1 }.to_bytes().unwrap())
        .await
        .unwrap();
    raw.write_all(&Frame::Ping { id: 2 }.to_bytes().unwrap())
        .await
        .unwrap();
    let frames = read_frames(&mut raw, 1).await;
    assert_eq!(frames, [Frame::Ping { id: 2 }]);
}

#[tokio::test]
async fn test_idle_timeout_closes_a_quiet_session_only() {
    let config = Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let (client, _ci, server, mut incoming) = pair(config);
    let mut stream = open(&client, &Headers::new()).await.unwrap();
    let mut accepted = accept(&mut incoming).await;
    // Traffic every 100 ms keeps it open well past the timeout.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.send(Bytes::from_static(b".")).await.unwrap();
        assert_eq!(recv(accepted.reader()).await.unwrap(), ".");
    }
    assert!(!server.is_closed());
    let started = std::time::Instant::now();
    closed(&server).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    closed(&client).await.unwrap();
}

/// Reads `count` frames from a raw peer.
async fn read_frames(raw: &mut tokio::io::DuplexStream, count: usize) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    while frames.len() < count {
        if let Some((frame, used)) = frame::parse(&buf).unwrap() {
            buf.advance(used);
            frames.push(frame);
            continue;
        }
        let read = tokio::time::timeout(WAIT, raw.read_buf(&mut buf))
            .await
            .expect("a frame in time")
            .unwrap();
        assert!(read > 0, "peer closed after {frames:?}");
    }
    frames
}
