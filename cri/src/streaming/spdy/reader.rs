//! An incremental frame reader over an `AsyncRead`.
//!
//! Control frames are read whole (their length is capped by [`Head::check`]); DATA payloads are
//! handed out in pieces of at most [`DATA_CHUNK`] bytes as they arrive, so a peer announcing a
//! 16 MiB frame costs no 16 MiB buffer. Frames of unknown control types are skipped byte by
//! byte, whatever their length. The buffer stays around `DATA_CHUNK` + [`MAX_CONTROL_PAYLOAD`].
//!
//! [`MAX_CONTROL_PAYLOAD`]: super::frame::MAX_CONTROL_PAYLOAD

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::frame::{FLAG_FIN, Frame, HEADER_LEN, Head, kind_name, parse_control};
use super::{Error, Result, StreamId};

/// The largest piece of a DATA payload [`FrameReader::next`] returns at once.
pub const DATA_CHUNK: usize = 32 * 1024;

/// What the reader got next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole control frame (header blocks still compressed), or [`Frame::Unknown`] for a
    /// control frame of an unknown type, whose payload is then skipped.
    Frame(Frame),
    /// A piece of a DATA frame's payload, in order; `fin` is set on the frame's last piece when
    /// the frame carries FLAG_FIN. A frame with an empty payload gives one empty piece.
    Data {
        stream_id: StreamId,
        data: Bytes,
        fin: bool,
    },
}

/// Reads frames from `R`.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    /// The DATA frame being read: stream id, flags, payload bytes still to come.
    data: Option<(StreamId, u8, usize)>,
    /// Payload bytes of an unknown control frame still to skip.
    skip: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader at a frame boundary of `io`.
    pub fn new(io: R) -> FrameReader<R> {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(DATA_CHUNK + HEADER_LEN),
            data: None,
            skip: 0,
        }
    }

    /// The next frame or DATA piece; `Ok(None)` when the peer closed the connection between
    /// frames. Not cancel safe: once a call is dropped mid-way the reader is out of step.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        loop {
            if let Some((stream_id, flags, remaining)) = self.data {
                let want = remaining.min(DATA_CHUNK);
                self.fill(want).await?;
                let data = self.buf.split_to(want).freeze();
                let remaining = remaining - want;
                self.data = (remaining > 0).then_some((stream_id, flags, remaining));
                let fin = remaining == 0 && flags & FLAG_FIN != 0;
                return Ok(Some(Event::Data {
                    stream_id,
                    data,
                    fin,
                }));
            }
            if self.skip > 0 {
                self.fill(1).await?;
                let n = self.skip.min(self.buf.len());
                self.buf.advance(n);
                self.skip -= n;
                continue;
            }
            if self.buf.is_empty() && self.read_more(1).await? == 0 {
                return Ok(None);
            }
            self.fill(HEADER_LEN).await?;
            let mut header = [0; HEADER_LEN];
            self.buf.copy_to_slice(&mut header);
            let head = Head::parse(header);
            head.check()?;
            match head {
                Head::Data {
                    stream_id,
                    flags,
                    length: 0,
                } => {
                    return Ok(Some(Event::Data {
                        stream_id,
                        data: Bytes::new(),
                        fin: flags & FLAG_FIN != 0,
                    }));
                }
                Head::Data {
                    stream_id,
                    flags,
                    length,
                } => self.data = Some((stream_id, flags, length)),
                Head::Control {
                    kind,
                    flags,
                    length,
                    ..
                } => {
                    if kind_name(kind).is_none() {
                        self.skip = length;
                        return Ok(Some(Event::Frame(Frame::Unknown {
                            kind,
                            flags,
                            length,
                        })));
                    }
                    self.fill(length).await?;
                    let payload = self.buf.split_to(length).freeze();
                    return Ok(Some(Event::Frame(parse_control(kind, flags, payload)?)));
                }
            }
        }
    }

    /// Reads until the buffer holds `want` bytes; the connection ending first is an error.
    async fn fill(&mut self, want: usize) -> Result<()> {
        while self.buf.len() < want {
            if self.read_more(want - self.buf.len()).await? == 0 {
                return Err(Error::UnexpectedEof {
                    read: self.buf.len(),
                    expected: want,
                });
            }
        }
        Ok(())
    }

    /// One read into the buffer, with room for at least `at_least` more bytes.
    async fn read_more(&mut self, at_least: usize) -> Result<usize> {
        self.buf.reserve(at_least.max(4096));
        self.io
            .read_buf(&mut self.buf)
            .await
            .map_err(|source| Error::Io { op: "read", source })
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{MAX_CONTROL_PAYLOAD, kind};
    use super::*;

    fn data_frame(stream_id: StreamId, fin: bool, data: &[u8]) -> Vec<u8> {
        let frame = Frame::Data {
            stream_id,
            flags: if fin { FLAG_FIN } else { 0 },
            data: Bytes::copy_from_slice(data),
        };
        frame.to_bytes().unwrap().to_vec()
    }

    async fn events(bytes: &[u8]) -> Result<Vec<Event>> {
        let mut reader = FrameReader::new(bytes);
        let mut out = Vec::new();
        while let Some(event) = reader.next().await? {
            out.push(event);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn test_reader_control_and_data_frames() {
        let mut wire = Frame::Ping { id: 7 }.to_bytes().unwrap().to_vec();
        wire.extend(data_frame(1, false, b"hello"));
        wire.extend(data_frame(1, true, b""));
        let got = events(&wire).await.unwrap();
        assert_eq!(
            got,
            vec![
                Event::Frame(Frame::Ping { id: 7 }),
                Event::Data {
                    stream_id: 1,
                    data: Bytes::from_static(b"hello"),
                    fin: false
                },
                Event::Data {
                    stream_id: 1,
                    data: Bytes::new(),
                    fin: true
                },
            ]
        );
    }

    #[tokio::test]
    async fn test_reader_large_data_frame_chunked() {
        let payload: Vec<u8> = (0..3 * DATA_CHUNK + 5).map(|i| i as u8).collect();
        let wire = data_frame(3, true, &payload);
        let got = events(&wire).await.unwrap();
        assert_eq!(got.len(), 4);
        let mut joined = Vec::new();
        for (i, event) in got.iter().enumerate() {
            let Event::Data {
                stream_id,
                data,
                fin,
            } = event
            else {
                panic!("not data: {event:?}");
            };
            assert_eq!(*stream_id, 3);
            assert!(data.len() <= DATA_CHUNK);
            assert_eq!(*fin, i == 3);
            joined.extend_from_slice(data);
        }
        assert_eq!(joined, payload);
    }

    #[tokio::test]
    async fn test_reader_skips_unknown_control_frame() {
        let mut wire = vec![0x80, 0x03, 0x00, 0x42, 0x00, 0x01, 0x00, 0x00];
        wire.extend(std::iter::repeat_n(0xab, 0x1_0000));
        wire.extend(Frame::Ping { id: 9 }.to_bytes().unwrap());
        let got = events(&wire).await.unwrap();
        assert_eq!(
            got,
            vec![
                Event::Frame(Frame::Unknown {
                    kind: 0x42,
                    flags: 0,
                    length: 0x1_0000
                }),
                Event::Frame(Frame::Ping { id: 9 }),
            ]
        );
    }

    #[tokio::test]
    async fn test_reader_truncated_frame_is_error() {
        let wire = data_frame(1, false, b"0123456789");
        for cut in 1..wire.len() {
            let err = events(&wire[..cut]).await.unwrap_err();
            assert!(
                matches!(err, Error::UnexpectedEof { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn test_reader_clean_eof() {
        assert!(events(&[]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn test_reader_oversize_control_frame_is_error() {
        // A SETTINGS header announcing 16 MiB, and no payload: rejected on the header alone.
        let wire = [
            0x80,
            0x03,
            0x00,
            kind::SETTINGS as u8,
            0x00,
            0xff,
            0xff,
            0xff,
        ];
        let err = events(&wire).await.unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { max, .. } if max == MAX_CONTROL_PAYLOAD),
            "{err}"
        );
    }

    #[tokio::test]
    async fn test_reader_wrong_version_is_error() {
        let mut wire = Frame::Ping { id: 1 }.to_bytes().unwrap().to_vec();
        wire[1] = 2;
        let err = events(&wire).await.unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedVersion { version: 2 }),
            "{err}"
        );
    }
}
