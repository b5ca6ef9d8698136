//! Session tests: malformed input, refusals, backpressure and other edges.

use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::frame::{self, FLAG_FIN, FLAG_UNIDIRECTIONAL, SynStream};
use super::test_client::*;
use super::*;

#[tokio::test]
async fn test_session_protocol_error_sends_goaway() {
    let (mut client, handle, _incoming) = start();
    let mut ping = Frame::Ping { id: 1 }.to_bytes().unwrap().to_vec();
    ping[1] = 2;
    client.write_raw(&ping).await;
    let goaway = Seen::GoAway {
        last_good_stream_id: 0,
        status: GoAwayStatus::PROTOCOL_ERROR,
    };
    assert_eq!(client.next().await, goaway);
    assert_eq!(client.next().await, Seen::Eof);
    let Err(Error::SessionFailed(cause)) = closed(&handle).await else {
        panic!("the session should fail");
    };
    assert!(
        matches!(*cause, Error::UnsupportedVersion { version: 2 }),
        "{cause}"
    );
}

#[tokio::test]
async fn test_session_garbage_header_block_is_protocol_error() {
    let (mut client, handle, _incoming) = start();
    client
        .send(Frame::SynStream(SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            header_block: Bytes::from_static(b"definitely not zlib"),
        }))
        .await;
    let goaway = Seen::GoAway {
        last_good_stream_id: 0,
        status: GoAwayStatus::PROTOCOL_ERROR,
    };
    assert_eq!(client.next().await, goaway);
    assert_eq!(client.next().await, Seen::Eof);
    let Err(Error::SessionFailed(cause)) = closed(&handle).await else {
        panic!("the session should fail");
    };
    assert!(matches!(*cause, Error::Decompress(_)), "{cause}");
}

#[tokio::test]
async fn test_session_truncated_frame_at_eof_fails() {
    let (mut client, handle, _incoming) = start();
    let ping = Frame::Ping { id: 1 }.to_bytes().unwrap();
    client.write_raw(&ping[..6]).await;
    client.write.shutdown().await.unwrap();
    let Err(Error::SessionFailed(cause)) = closed(&handle).await else {
        panic!("the session should fail");
    };
    assert!(matches!(*cause, Error::UnexpectedEof { .. }), "{cause}");
}

#[tokio::test]
async fn test_session_unread_stream_blocks_reading() {
    let config = Config {
        stream_buffer_chunks: 2,
        ..Config::default()
    };
    let (mut client, _handle, mut incoming) = start_with(config);
    client.open(1, &Headers::new()).await;
    let mut stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    for piece in [b"1", b"2", b"3", b"4"] {
        client.data(1, piece, false).await;
    }
    // Two pieces fill the buffer, the third waits: the session reads nothing more, so the
    // ping behind it goes unanswered.
    client.send(Frame::Ping { id: 5 }).await;
    client.quiet().await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend_from_slice(&stream.recv().await.unwrap());
    }
    assert_eq!(got, b"1234");
    assert_eq!(client.next().await, Seen::Ping(5));
}

/// A session blocked on a stream nobody reads, and the stream's pieces queued behind it.
async fn blocked_session() -> (Client, SessionHandle, Stream) {
    let config = Config {
        stream_buffer_chunks: 1,
        ..Config::default()
    };
    let (mut client, handle, mut incoming) = start_with(config);
    client.open(1, &Headers::new()).await;
    let stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    for _ in 0..3 {
        client.data(1, b"unread", false).await;
    }
    client.send(Frame::Ping { id: 3 }).await;
    client.quiet().await;
    (client, handle, stream)
}

#[tokio::test]
async fn test_session_dropping_blocked_reader_unblocks_session() {
    let (mut client, _handle, stream) = blocked_session().await;
    let (reader, _writer) = stream.split();
    drop(reader);
    assert_eq!(client.next().await, Seen::Ping(3));
}

#[tokio::test]
async fn test_session_resetting_blocked_stream_unblocks_session() {
    let (mut client, handle, mut stream) = blocked_session().await;
    stream.reset(RstStatus::CANCEL).await.unwrap();
    let rst = Seen::Rst {
        stream_id: 1,
        status: RstStatus::CANCEL,
    };
    assert_eq!(client.next().await, rst);
    assert_eq!(client.next().await, Seen::Ping(3));
    assert_eq!(stream.recv().await, None);
    assert_eq!(handle.open_streams(), 0);
}

#[tokio::test]
async fn test_session_close_unblocks_session() {
    let (mut client, handle, mut stream) = blocked_session().await;
    handle.close();
    closed(&handle).await.unwrap();
    // What was buffered is still readable, then the stream ends with the session.
    assert_eq!(stream.recv().await.unwrap(), "unread");
    assert_eq!(stream.reader().end(), Some(StreamEnd::SessionClosed));
    let goaway = Seen::GoAway {
        last_good_stream_id: 1,
        status: GoAwayStatus::OK,
    };
    assert_eq!(client.next().await, goaway);
}

#[tokio::test]
async fn test_session_dropped_reader_discards_data() {
    let config = Config {
        stream_buffer_chunks: 1,
        ..Config::default()
    };
    let (mut client, _handle, mut incoming) = start_with(config);
    client.open(1, &Headers::new()).await;
    let (reader, mut writer) = accept(&mut incoming).await.split();
    client.expect_reply(1).await;
    drop(reader);
    for _ in 0..10 {
        client.data(1, b"nobody reads this", false).await;
    }
    client.send(Frame::Ping { id: 7 }).await;
    assert_eq!(client.next().await, Seen::Ping(7));
    // The stream is still open for writing.
    writer
        .send(Bytes::from_static(b"still writable"))
        .await
        .unwrap();
    assert_eq!(client.next().await, data(1, b"still writable", false));
}

#[tokio::test]
async fn test_session_data_for_unknown_stream_ignored() {
    let (mut client, _handle, _incoming) = start();
    client.data(7, b"stray", false).await;
    client.data(8, b"stray", true).await;
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.next().await, Seen::Ping(1));
}

#[tokio::test]
async fn test_session_bad_stream_ids_refused() {
    let (mut client, _handle, mut incoming) = start();
    client.open(2, &Headers::new()).await;
    let rst = |stream_id, status| Seen::Rst { stream_id, status };
    assert_eq!(client.next().await, rst(2, RstStatus::PROTOCOL_ERROR));
    client.open(5, &Headers::new()).await;
    client.expect_reply(5).await;
    client.open(3, &Headers::new()).await;
    assert_eq!(client.next().await, rst(3, RstStatus::PROTOCOL_ERROR));
    client.open(5, &Headers::new()).await;
    assert_eq!(client.next().await, rst(5, RstStatus::STREAM_IN_USE));
    assert_eq!(accept(&mut incoming).await.id(), 5);
}

#[tokio::test]
async fn test_session_refuses_beyond_max_streams() {
    let config = Config {
        max_concurrent_streams: 2,
        ..Config::default()
    };
    let (mut client, _handle, mut incoming) = start_with(config);
    for id in [1, 3, 5] {
        client.open(id, &Headers::new()).await;
    }
    client.expect_reply(1).await;
    client.expect_reply(3).await;
    let refused = Seen::Rst {
        stream_id: 5,
        status: RstStatus::REFUSED_STREAM,
    };
    assert_eq!(client.next().await, refused);
    // Once one closes, a new one fits.
    let mut first = accept(&mut incoming).await;
    first.reset(RstStatus::CANCEL).await.unwrap();
    let _ = client.next().await;
    client.open(7, &Headers::new()).await;
    client.expect_reply(7).await;
}

#[tokio::test]
async fn test_session_ignores_unknown_frames_and_flow_control() {
    let (mut client, _handle, _incoming) = start();
    client
        .write_raw(&[0x80, 0x03, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x03, 1, 2, 3])
        .await;
    client
        .send(Frame::Settings {
            flags: 0,
            entries: vec![frame::Setting {
                flags: 0,
                id: 7,
                value: 65536,
            }],
        })
        .await;
    client
        .send(Frame::WindowUpdate {
            stream_id: 1,
            delta: 1000,
        })
        .await;
    client.send(Frame::Ping { id: 9 }).await;
    assert_eq!(client.next().await, Seen::Ping(9));
}

#[tokio::test]
async fn test_session_syn_stream_with_fin() {
    let (mut client, _handle, mut incoming) = start();
    client.open_with(1, &Headers::new(), FLAG_FIN).await;
    let mut stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    assert_eq!(stream.recv().await, None);
    assert_eq!(stream.reader().end(), Some(StreamEnd::Fin));
    stream.send(Bytes::from_static(b"reply")).await.unwrap();
    assert_eq!(client.next().await, data(1, b"reply", false));
}

#[tokio::test]
async fn test_session_unidirectional_stream_not_replied() {
    let (mut client, _handle, mut incoming) = start();
    client
        .open_with(1, &Headers::new(), FLAG_UNIDIRECTIONAL)
        .await;
    let mut stream = accept(&mut incoming).await;
    client.data(1, b"one way", true).await;
    assert_eq!(stream.recv().await.unwrap(), "one way");
    let err = stream.send(Bytes::from_static(b"x")).await.unwrap_err();
    assert!(matches!(err, Error::StreamClosed { stream_id: 1 }), "{err}");
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.next().await, Seen::Ping(1));
}

#[tokio::test]
async fn test_session_incoming_dropped_refuses_streams() {
    let (mut client, _handle, incoming) = start();
    drop(incoming);
    client.open(1, &Headers::new()).await;
    let refused = Seen::Rst {
        stream_id: 1,
        status: RstStatus::REFUSED_STREAM,
    };
    assert_eq!(client.next().await, refused);
}

#[tokio::test]
async fn test_session_data_after_fin_resets_stream() {
    let (mut client, _handle, mut incoming) = start();
    client.open(1, &Headers::new()).await;
    let mut stream = accept(&mut incoming).await;
    client.expect_reply(1).await;
    client.data(1, b"", true).await;
    assert_eq!(stream.recv().await, None);
    client.data(1, b"too late", false).await;
    let rst = Seen::Rst {
        stream_id: 1,
        status: RstStatus::STREAM_ALREADY_CLOSED,
    };
    assert_eq!(client.next().await, rst);
}

#[tokio::test]
async fn test_session_headers_frame_keeps_zlib_in_step() {
    let (mut client, _handle, mut incoming) = start();
    client.open(1, &headers(&[("streamtype", "stdout")])).await;
    let mut first = accept(&mut incoming).await;
    let header_block = client.headers.compress(&headers(&[("x", "y")])).unwrap();
    client
        .send(Frame::Headers {
            stream_id: 1,
            flags: FLAG_FIN,
            header_block,
        })
        .await;
    assert_eq!(first.recv().await, None);
    assert_eq!(first.reader().end(), Some(StreamEnd::Fin));
    // The next SYN_STREAM decodes only if the HEADERS block went through the decompressor.
    client.open(3, &headers(&[("streamtype", "stderr")])).await;
    let second = accept(&mut incoming).await;
    assert_eq!(second.headers().get("streamtype"), Some("stderr"));
}
