//! The outbound half of a session: the only writer of the socket and of the header compressor.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::frame::{FLAG_FIN, Frame, MAX_PAYLOAD, SynStream, encode_data_head};
use super::header_block::HeaderCompressor;
use super::session::{Outgoing, Shared, Shutdown};
use super::{Error, GoAwayStatus, Result};

/// Bytes gathered from ready frames before one write.
const BATCH: usize = 64 * 1024;
/// Payloads from this size on are written from their own buffer instead of being copied.
const DIRECT_WRITE: usize = 16 * 1024;

/// Runs the outbound half until the session shuts down, then writes what was queued before
/// that, a GOAWAY if the reason calls for one, and closes the write side. All of it ends at
/// the latest [`super::Config::close_timeout`] after the shutdown started.
pub(super) async fn run<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    io: W,
    mut control: mpsc::Receiver<Outgoing>,
    mut data: mpsc::Receiver<Outgoing>,
) {
    let headers = match HeaderCompressor::new() {
        Ok(headers) => headers,
        Err(error) => {
            shared.fail(error, Shutdown::Broken);
            return;
        }
    };
    let mut outbound = Outbound {
        shared: shared.clone(),
        io,
        buf: BytesMut::with_capacity(BATCH),
        headers,
        goaway_written: false,
    };
    let close_timeout = shared.config.close_timeout;
    let hard_stop = async {
        shared.shutdown_signal().await;
        tokio::time::sleep(close_timeout).await;
    };
    tokio::pin!(hard_stop);
    let served = tokio::select! {
        served = outbound.serve(&mut control, &mut data) => served,
        _ = &mut hard_stop => {
            tracing::debug!("spdy writer stuck past the close timeout, abandoned");
            return;
        }
    };
    if let Err(error) = served {
        let why = match error {
            Error::Io { .. } => Shutdown::Broken,
            _ => Shutdown::Failed(GoAwayStatus::INTERNAL_ERROR),
        };
        shared.fail(error, why);
    }
    tokio::select! {
        _ = outbound.close(&mut control, &mut data) => {}
        _ = &mut hard_stop => {
            tracing::debug!("spdy writer stuck past the close timeout, abandoned");
        }
    }
}

struct Outbound<W> {
    shared: Arc<Shared>,
    io: W,
    buf: BytesMut,
    headers: HeaderCompressor,
    goaway_written: bool,
}

impl<W: AsyncWrite + Unpin> Outbound<W> {
    async fn serve(
        &mut self,
        control: &mut mpsc::Receiver<Outgoing>,
        data: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<()> {
        loop {
            let item = tokio::select! {
                biased;
                _ = self.shared.shutdown_signal() => return Ok(()),
                Some(item) = control.recv() => item,
                Some(item) = data.recv() => item,
            };
            self.push(item).await?;
            while self.buf.len() < BATCH {
                let Ok(item) = control.try_recv().or_else(|_| data.try_recv()) else {
                    break;
                };
                self.push(item).await?;
            }
            self.flush().await?;
        }
    }

    /// Writes out what was queued before the shutdown, then GOAWAY, then closes the write side.
    async fn close(
        &mut self,
        control: &mut mpsc::Receiver<Outgoing>,
        data: &mut mpsc::Receiver<Outgoing>,
    ) {
        let why = self.shared.shutdown_reason();
        if why == Some(Shutdown::Broken) {
            return;
        }
        let result = async {
            while let Ok(item) = control.try_recv() {
                self.push(item).await?;
            }
            while let Ok(item) = data.try_recv() {
                self.push(item).await?;
            }
            if let Some(status) = why.and_then(Shutdown::goaway) {
                let last_good_stream_id = self.shared.state().last_accepted;
                self.push(Outgoing::Frame(Frame::GoAway {
                    last_good_stream_id,
                    status,
                }))
                .await?;
            }
            self.flush().await?;
            self.io.shutdown().await.map_err(|source| Error::Io {
                op: "shut down",
                source,
            })
        }
        .await;
        if let Err(error) = result {
            tracing::debug!(%error, "closing the spdy connection");
        }
    }

    /// Appends `item` to the batch (writing large payloads straight through).
    async fn push(&mut self, item: Outgoing) -> Result<()> {
        match item {
            Outgoing::Frame(frame) => {
                if let Frame::GoAway { .. } = frame {
                    if self.goaway_written {
                        return Ok(());
                    }
                    self.goaway_written = true;
                }
                frame.encode(&mut self.buf)?;
            }
            Outgoing::Reply { stream_id, headers } => {
                let header_block = self.headers.compress(&headers)?;
                let reply = Frame::SynReply {
                    stream_id,
                    flags: 0,
                    header_block,
                };
                reply.encode(&mut self.buf)?;
            }
            Outgoing::Open { stream_id, headers } => {
                let header_block = self.headers.compress(&headers)?;
                let open = Frame::SynStream(SynStream {
                    stream_id,
                    associated_to: 0,
                    priority: 0,
                    slot: 0,
                    flags: 0,
                    header_block,
                });
                open.encode(&mut self.buf)?;
            }
            Outgoing::Data {
                stream,
                mut data,
                fin,
            } => {
                if stream.is_reset() {
                    tracing::trace!(stream_id = stream.id, "stream reset, queued data dropped");
                    return Ok(());
                }
                loop {
                    let piece = data.split_to(data.len().min(MAX_PAYLOAD));
                    let last = data.is_empty();
                    let flags = if fin && last { FLAG_FIN } else { 0 };
                    encode_data_head(&mut self.buf, stream.id, flags, piece.len())?;
                    if piece.len() >= DIRECT_WRITE {
                        self.write_buf().await?;
                        self.write(&piece).await?;
                    } else {
                        self.buf.extend_from_slice(&piece);
                    }
                    if last {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    async fn write_buf(&mut self) -> Result<()> {
        let buf = std::mem::take(&mut self.buf);
        self.write(&buf).await?;
        self.buf = buf;
        self.buf.clear();
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.io.write_all(bytes).await.map_err(|source| Error::Io {
            op: "write",
            source,
        })
    }

    async fn flush(&mut self) -> Result<()> {
        self.write_buf().await?;
        self.io.flush().await.map_err(|source| Error::Io {
            op: "flush",
            source,
        })?;
        self.shared.touch();
        Ok(())
    }
}
