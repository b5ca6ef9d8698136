//! A SPDY client for the session tests, written with the same frame codec, driving a server
//! session over an in-memory duplex pipe.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::frame::{self, FLAG_FIN, SynStream};
use super::header_block::{HeaderCompressor, HeaderDecompressor};
use super::*;

pub(super) const WAIT: Duration = Duration::from_secs(10);
pub(super) const QUIET: Duration = Duration::from_millis(200);

/// A frame the client received, header blocks decoded.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seen {
    Reply {
        stream_id: StreamId,
        headers: Headers,
    },
    Data {
        stream_id: StreamId,
        data: Bytes,
        fin: bool,
    },
    Rst {
        stream_id: StreamId,
        status: RstStatus,
    },
    Ping(u32),
    GoAway {
        last_good_stream_id: StreamId,
        status: GoAwayStatus,
    },
    Other(Frame),
    /// The server closed the connection.
    Eof,
}

pub(super) struct Client {
    pub(super) write: WriteHalf<DuplexStream>,
    pub(super) headers: HeaderCompressor,
    seen: mpsc::UnboundedReceiver<Seen>,
}

pub(super) fn start() -> (Client, SessionHandle, Incoming) {
    start_with(Config::default())
}

pub(super) fn start_with(config: Config) -> (Client, SessionHandle, Incoming) {
    let (client_io, server_io) = tokio::io::duplex(256 * 1024);
    let (handle, incoming) = Session::server_with_config(server_io, config);
    let (read, write) = tokio::io::split(client_io);
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(client_reader(read, tx));
    let headers = HeaderCompressor::new().unwrap();
    (
        Client {
            write,
            headers,
            seen,
        },
        handle,
        incoming,
    )
}

async fn client_reader(mut read: ReadHalf<DuplexStream>, seen: mpsc::UnboundedSender<Seen>) {
    let mut buf = BytesMut::new();
    let mut headers = HeaderDecompressor::new();
    loop {
        while let Some((frame, used)) = frame::parse(&buf).unwrap() {
            buf.advance(used);
            let event = match frame {
                Frame::SynReply {
                    stream_id,
                    header_block,
                    ..
                } => Seen::Reply {
                    stream_id,
                    headers: headers.decompress(&header_block).unwrap(),
                },
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => Seen::Data {
                    stream_id,
                    data,
                    fin: flags & FLAG_FIN != 0,
                },
                Frame::RstStream { stream_id, status } => Seen::Rst { stream_id, status },
                Frame::Ping { id } => Seen::Ping(id),
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                } => Seen::GoAway {
                    last_good_stream_id,
                    status,
                },
                other => Seen::Other(other),
            };
            let _ = seen.send(event);
        }
        if read.read_buf(&mut buf).await.unwrap_or(0) == 0 {
            let _ = seen.send(Seen::Eof);
            return;
        }
    }
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().copied().collect()
}

impl Client {
    pub(super) async fn send(&mut self, frame: Frame) {
        self.write_raw(&frame.to_bytes().unwrap()).await;
    }

    pub(super) async fn write_raw(&mut self, bytes: &[u8]) {
        self.write.write_all(bytes).await.unwrap();
    }

    pub(super) async fn open(&mut self, stream_id: StreamId, headers: &Headers) {
        self.open_with(stream_id, headers, 0).await;
    }

    pub(super) async fn open_with(&mut self, stream_id: StreamId, headers: &Headers, flags: u8) {
        let header_block = self.headers.compress(headers).unwrap();
        self.send(Frame::SynStream(SynStream {
            stream_id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags,
            header_block,
        }))
        .await;
    }

    pub(super) async fn data(&mut self, stream_id: StreamId, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    pub(super) async fn next(&mut self) -> Seen {
        let seen = tokio::time::timeout(WAIT, self.seen.recv()).await;
        seen.expect("a frame in time")
            .expect("the client reader is running")
    }

    /// Asserts nothing arrives for a while.
    pub(super) async fn quiet(&mut self) {
        if let Ok(seen) = tokio::time::timeout(QUIET, self.seen.recv()).await {
            panic!("expected silence, got {seen:?}");
        }
    }

    pub(super) async fn expect_reply(&mut self, stream_id: StreamId) {
        let reply = Seen::Reply {
            stream_id,
            headers: Headers::new(),
        };
        assert_eq!(self.next().await, reply);
    }
}

pub(super) async fn accept(incoming: &mut Incoming) -> Stream {
    let stream = tokio::time::timeout(WAIT, incoming.accept()).await;
    stream
        .expect("a stream in time")
        .expect("the session is running")
}

pub(super) async fn recv(reader: &mut StreamReader) -> Option<Bytes> {
    tokio::time::timeout(WAIT, reader.recv())
        .await
        .expect("data in time")
}

pub(super) async fn closed(handle: &SessionHandle) -> Result<()> {
    tokio::time::timeout(WAIT, handle.closed())
        .await
        .expect("the session ends in time")
}

pub(super) fn data(stream_id: StreamId, data: &'static [u8], fin: bool) -> Seen {
    Seen::Data {
        stream_id,
        data: Bytes::from_static(data),
        fin,
    }
}
