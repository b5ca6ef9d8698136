//! Session tests: streams opened, used and closed the ordinary ways.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::test_client::*;
use super::*;

#[tokio::test]
async fn test_session_accepts_stream_and_replies() {
    let (mut client, handle, mut incoming) = start();
    let sent = headers(&[("streamtype", "error"), ("requestid", "7"), ("port", "80")]);
    client.open(1, &sent).await;
    let stream = accept(&mut incoming).await;
    assert_eq!(stream.id(), 1);
    assert_eq!(stream.headers(), &sent);
    assert_eq!(stream.headers().get("streamtype"), Some("error"));
    client.expect_reply(1).await;
    assert_eq!(handle.open_streams(), 1);
}

#[tokio::test]
async fn test_session_exchanges_data_both_ways() {
    let (mut client, _handle, mut incoming) = start();
    client.open(1, &headers(&[("streamtype", "stdin")])).await;
    let mut stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    client.data(1, b"hello", false).await;
    client.data(1, b" again", false).await;
    assert_eq!(stream.recv().await.unwrap(), "hello");
    assert_eq!(stream.recv().await.unwrap(), " again");
    stream.send(Bytes::from_static(b"world")).await.unwrap();
    assert_eq!(client.next().await, data(1, b"world", false));
}

#[tokio::test]
async fn test_session_fin_half_close() {
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let (mut reader, mut writer) = accept(&mut incoming).await.split();
    client.expect_reply(1).await;
    client.data(1, b"last", true).await;
    assert_eq!(recv(&mut reader).await.unwrap(), "last");
    assert_eq!(recv(&mut reader).await, None);
    assert_eq!(reader.end(), Some(StreamEnd::Fin));
    // Half closed: this side still sends, then finishes.
    writer.send(Bytes::from_static(b"out")).await.unwrap();
    writer.finish().await.unwrap();
    assert_eq!(client.next().await, data(1, b"out", false));
    assert_eq!(client.next().await, data(1, b"", true));
    assert_eq!(handle.open_streams(), 0);
    let err = writer.send(Bytes::from_static(b"late")).await.unwrap_err();
    assert!(matches!(err, Error::StreamClosed { stream_id: 1 }), "{err}");
}

#[tokio::test]
async fn test_session_peer_rst_ends_stream() {
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let (mut reader, mut writer) = accept(&mut incoming).await.split();
    client.expect_reply(1).await;
    client
        .send(Frame::RstStream {
            stream_id: 1,
            status: RstStatus::CANCEL,
        })
        .await;
    assert_eq!(recv(&mut reader).await, None);
    let end = StreamEnd::Reset {
        status: RstStatus::CANCEL,
        by_peer: true,
    };
    assert_eq!(reader.end(), Some(end));
    let err = writer.send(Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, Error::StreamClosed { stream_id: 1 }), "{err}");
    assert_eq!(handle.open_streams(), 0);
    // Resetting an already reset stream sends nothing.
    writer.reset(RstStatus::CANCEL).await.unwrap();
    drop(writer);
    client.quiet().await;
}

#[tokio::test]
async fn test_session_server_reset_sends_rst() {
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let mut stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    stream.reset(RstStatus::INTERNAL_ERROR).await.unwrap();
    let rst = Seen::Rst {
        stream_id: 1,
        status: RstStatus::INTERNAL_ERROR,
    };
    assert_eq!(client.next().await, rst);
    assert_eq!(stream.recv().await, None);
    assert!(stream.send(Bytes::from_static(b"x")).await.is_err());
    assert_eq!(handle.open_streams(), 0);
    // Data the peer sent before it saw the reset is dropped quietly.
    client.data(1, b"in flight", false).await;
    client.quiet().await;
}

#[tokio::test]
async fn test_session_ping_echo() {
    let (mut client, _handle, _incoming) = start();
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.next().await, Seen::Ping(1));
    // An even id would answer a ping of ours: not echoed.
    client.send(Frame::Ping { id: 2 }).await;
    client.send(Frame::Ping { id: 3 }).await;
    assert_eq!(client.next().await, Seen::Ping(3));
}

#[tokio::test]
async fn test_session_peer_goaway_finishes_after_streams() {
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let mut stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    client
        .send(Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::OK,
        })
        .await;
    // The open stream carries on.
    client.data(1, b"still here", true).await;
    assert_eq!(stream.recv().await.unwrap(), "still here");
    assert!(!handle.is_closed());
    stream.send(Bytes::from_static(b"bye")).await.unwrap();
    stream.finish().await.unwrap();
    closed(&handle).await.unwrap();
    assert_eq!(client.next().await, data(1, b"bye", false));
    assert_eq!(client.next().await, data(1, b"", true));
    let goaway = Seen::GoAway {
        last_good_stream_id: 1,
        status: GoAwayStatus::OK,
    };
    assert_eq!(client.next().await, goaway);
    assert_eq!(client.next().await, Seen::Eof);
    assert!(incoming.accept().await.is_none());
}

#[tokio::test]
async fn test_session_go_away_refuses_new_streams() {
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let mut stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    handle.go_away().await.unwrap();
    handle.go_away().await.unwrap();
    let goaway = Seen::GoAway {
        last_good_stream_id: 1,
        status: GoAwayStatus::OK,
    };
    assert_eq!(client.next().await, goaway);
    client.open(3, &Headers::new()).await;
    let refused = Seen::Rst {
        stream_id: 3,
        status: RstStatus::REFUSED_STREAM,
    };
    assert_eq!(client.next().await, refused);
    // Stream 1 still works both ways until both sides finish.
    client.data(1, b"ping", true).await;
    assert_eq!(stream.recv().await.unwrap(), "ping");
    stream.send(Bytes::from_static(b"pong")).await.unwrap();
    stream.finish().await.unwrap();
    closed(&handle).await.unwrap();
    assert_eq!(client.next().await, data(1, b"pong", false));
    assert_eq!(client.next().await, data(1, b"", true));
    // One GOAWAY only.
    assert_eq!(client.next().await, Seen::Eof);
}

#[tokio::test]
async fn test_session_close_sends_goaway_and_ends_streams() {
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let (mut reader, mut writer) = accept(&mut incoming).await.split();
    client.expect_reply(1).await;
    client.data(1, b"buffered", false).await;
    writer.send(Bytes::from_static(b"queued")).await.unwrap();
    // Let the buffered data arrive before closing.
    assert_eq!(recv(&mut reader).await.unwrap(), "buffered");
    handle.close();
    closed(&handle).await.unwrap();
    assert!(handle.is_closed());
    assert_eq!(client.next().await, data(1, b"queued", false));
    let goaway = Seen::GoAway {
        last_good_stream_id: 1,
        status: GoAwayStatus::OK,
    };
    assert_eq!(client.next().await, goaway);
    assert_eq!(client.next().await, Seen::Eof);
    assert_eq!(recv(&mut reader).await, None);
    assert_eq!(reader.end(), Some(StreamEnd::SessionClosed));
    let err = writer.send(Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, Error::SessionClosed), "{err}");
    assert!(incoming.accept().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_session_many_concurrent_streams() {
    const STREAMS: u32 = 100;
    let (mut client, handle, mut incoming) = start();
    // The server echoes every stream back, each from its own task, through the AsyncRead and
    // AsyncWrite halves.
    let server = tokio::spawn(async move {
        let mut echoes = Vec::new();
        while let Some(stream) = incoming.accept().await {
            echoes.push(tokio::spawn(async move {
                let (mut reader, mut writer) = stream.split();
                tokio::io::copy(&mut reader, &mut writer).await.unwrap();
                writer.shutdown().await.unwrap();
            }));
        }
        for echo in echoes {
            echo.await.unwrap();
        }
    });
    let ids: Vec<StreamId> = (0..STREAMS).map(|i| 2 * i + 1).collect();
    for &id in &ids {
        client.open(id, &headers(&[("streamtype", "data")])).await;
    }
    // Interleave the streams' data, three pieces each, then FIN them all.
    for round in 0..3 {
        for &id in &ids {
            let piece = format!("stream {id} piece {round};");
            client.data(id, piece.as_bytes(), false).await;
        }
    }
    for &id in &ids {
        client.data(id, b"", true).await;
    }
    let mut echoed: HashMap<StreamId, Vec<u8>> = HashMap::new();
    let mut replies = 0;
    let mut finished = 0;
    while finished < STREAMS {
        match client.next().await {
            Seen::Reply { .. } => replies += 1,
            Seen::Data {
                stream_id,
                data,
                fin,
            } => {
                echoed
                    .entry(stream_id)
                    .or_default()
                    .extend_from_slice(&data);
                finished += u32::from(fin);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(replies, STREAMS);
    for &id in &ids {
        let expected: String = (0..3)
            .map(|round| format!("stream {id} piece {round};"))
            .collect();
        assert_eq!(echoed[&id], expected.as_bytes(), "stream {id}");
    }
    assert_eq!(handle.open_streams(), 0);
    handle.close();
    closed(&handle).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn test_session_peer_eof_ends_session() {
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let mut stream = accept(&mut incoming).await;
    client.data(1, b"before eof", false).await;
    client.write.shutdown().await.unwrap();
    closed(&handle).await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), "before eof");
    assert_eq!(stream.recv().await, None);
    assert_eq!(stream.reader().end(), Some(StreamEnd::SessionClosed));
    assert!(incoming.accept().await.is_none());
}

#[tokio::test]
async fn test_session_dropped_writer_sends_fin() {
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let (mut reader, writer) = accept(&mut incoming).await.split();
    client.expect_reply(1).await;
    drop(writer);
    assert_eq!(client.next().await, data(1, b"", true));
    // Reading still works until the peer finishes; then the stream is gone.
    client.data(1, b"tail", true).await;
    assert_eq!(recv(&mut reader).await.unwrap(), "tail");
    assert_eq!(recv(&mut reader).await, None);
    assert_eq!(handle.open_streams(), 0);
}

#[tokio::test]
async fn test_session_large_data_frame() {
    let (mut client, _handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let mut stream = accept(&mut incoming).await;
    let payload: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        client.data(1, &sent, true).await;
        client
    });
    let mut got = Vec::new();
    while let Some(piece) = stream.recv().await {
        assert!(piece.len() <= reader::DATA_CHUNK);
        got.extend_from_slice(&piece);
    }
    assert_eq!(got, payload);
    // And a large write goes out whole.
    stream.send(Bytes::from(payload.clone())).await.unwrap();
    let mut client = writer.await.unwrap();
    client.expect_reply(1).await;
    let Seen::Data { data, fin, .. } = client.next().await else {
        panic!("expected data");
    };
    assert_eq!((&data[..], fin), (&payload[..], false));
}

#[tokio::test]
async fn test_session_dropping_everything_ends_task() {
    let metrics = tokio::runtime::Handle::current().metrics();
    assert_eq!(metrics.num_alive_tasks(), 0);
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    drop((handle, incoming, stream));
    // The dropped writer's FIN and a GOAWAY go out, then the connection closes.
    assert_eq!(client.next().await, data(1, b"", true));
    let goaway = Seen::GoAway {
        last_good_stream_id: 1,
        status: GoAwayStatus::OK,
    };
    assert_eq!(client.next().await, goaway);
    assert_eq!(client.next().await, Seen::Eof);
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics.num_alive_tasks() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "tasks left running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn test_session_handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let (mut client, handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let stream = accept(&mut incoming).await;
    send_sync(&handle);
    send_sync(&stream);
    send(&incoming);
    // Every future of the API can move to another task.
    send(async move {
        let _ = incoming.accept().await;
        let _ = handle.go_away().await;
        let _ = handle.closed().await;
        let (mut reader, mut writer) = stream.split();
        let _ = reader.recv().await;
        let _ = reader.reset(RstStatus::CANCEL).await;
        let _ = writer.send(Bytes::new()).await;
        let _ = writer.finish().await;
        let _ = writer.reset(RstStatus::CANCEL).await;
    });
}
