//! The inbound half of a session: reads frames, answers what needs answering, feeds streams.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendError;

use super::frame::{FLAG_FIN, FLAG_UNIDIRECTIONAL, Frame, SynStream};
use super::header_block::HeaderDecompressor;
use super::reader::{Event, FrameReader};
use super::session::{Outgoing, Shared, Shutdown, Slot, UserGuard};
use super::stream::{Stream, StreamShared};
use super::{Error, GoAwayStatus, Headers, Result, RstStatus, StreamId};

/// Runs the inbound half until the peer closes the connection, the session shuts down, or the
/// peer breaks the protocol.
pub(super) async fn run<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    reader: FrameReader<R>,
    incoming: mpsc::Sender<Stream>,
    users: Weak<UserGuard>,
) {
    let mut inbound = Inbound {
        shared,
        reader,
        incoming,
        users,
        headers: HeaderDecompressor::new(),
    };
    if let Err(error) = inbound.serve().await {
        let why = match error {
            Error::Io { .. } => Shutdown::Broken,
            _ => Shutdown::Failed(GoAwayStatus::PROTOCOL_ERROR),
        };
        inbound.shared.fail(error, why);
    }
    // Readers of every stream end now (after what they have buffered).
    inbound.shared.close_all_streams();
}

struct Inbound<R> {
    shared: Arc<Shared>,
    reader: FrameReader<R>,
    incoming: mpsc::Sender<Stream>,
    /// Upgraded to hand a new stream its share; fails once every user object is gone.
    users: Weak<UserGuard>,
    headers: HeaderDecompressor,
}

/// Whether to go on reading: false once the session shut down while this half waited.
type Going = bool;

impl<R: AsyncRead + Unpin> Inbound<R> {
    async fn serve(&mut self) -> Result<()> {
        loop {
            let event = tokio::select! {
                biased;
                _ = self.shared.shutdown_signal() => return Ok(()),
                event = self.reader.next() => event?,
            };
            self.shared.touch();
            let going = match event {
                None => {
                    tracing::debug!("peer closed the spdy connection");
                    self.shared.shut_down(Shutdown::PeerClosed);
                    return Ok(());
                }
                Some(Event::Data {
                    stream_id,
                    data,
                    fin,
                }) => self.on_data(stream_id, data, fin).await,
                Some(Event::Frame(frame)) => self.on_frame(frame).await?,
            };
            if !going {
                return Ok(());
            }
        }
    }

    async fn on_frame(&mut self, frame: Frame) -> Result<Going> {
        match frame {
            Frame::SynStream(syn) => return self.on_syn_stream(syn).await,
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => {
                // Decoded even when unexpected: the zlib stream must stay in step.
                self.headers.decompress(&header_block)?;
                let reply = {
                    let mut state = self.shared.state();
                    let slot = state.streams.get_mut(&stream_id);
                    slot.and_then(|slot| slot.reply.take())
                };
                match reply {
                    Some(reply) => {
                        tracing::trace!(stream_id, "peer replied to stream");
                        // The opener may have stopped waiting; the stream is reset then.
                        let _ = reply.send(());
                        if flags & FLAG_FIN != 0 {
                            self.shared.fin_received(stream_id);
                        }
                    }
                    None => tracing::debug!(stream_id, "unexpected syn_reply ignored"),
                }
            }
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => {
                let headers = self.headers.decompress(&header_block)?;
                tracing::debug!(stream_id, count = headers.len(), "headers frame ignored");
                if flags & FLAG_FIN != 0 {
                    self.shared.fin_received(stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => {
                let stream = self.stream(stream_id);
                if let Some(stream) = stream {
                    tracing::debug!(stream_id, %status, "peer reset stream");
                    self.shared.reset(&stream, status, true);
                } else {
                    tracing::trace!(stream_id, %status, "rst_stream for a closed stream");
                }
            }
            Frame::Ping { id } => {
                // The peer's pings (odd from a client, even from a server) are echoed; ours
                // would come back with our parity.
                if id % 2 == self.shared.role.peer_parity() {
                    tracing::trace!(id, "echoing ping");
                    return Ok(self.queue(Outgoing::Frame(Frame::Ping { id })).await);
                }
                tracing::trace!(id, "ping reply ignored");
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                tracing::debug!(last_good_stream_id, %status, "peer sent goaway");
                let mut state = self.shared.state();
                state.goaway_received = true;
                self.shared.finish_if_idle(&state);
            }
            Frame::Settings { entries, .. } => {
                tracing::trace!(count = entries.len(), "settings ignored");
            }
            Frame::WindowUpdate { stream_id, delta } => {
                tracing::trace!(stream_id, delta, "window_update ignored");
            }
            Frame::Unknown { kind, length, .. } => {
                tracing::debug!(kind, length, "unknown control frame skipped");
            }
            Frame::Data { .. } => {}
        }
        Ok(true)
    }

    async fn on_syn_stream(&mut self, syn: SynStream) -> Result<Going> {
        let headers = self.headers.decompress(&syn.header_block)?;
        let id = syn.stream_id;
        let fin = syn.flags & FLAG_FIN != 0;
        let unidirectional = syn.flags & FLAG_UNIDIRECTIONAL != 0;
        let accepted = {
            let mut state = self.shared.state();
            if id % 2 != self.shared.role.peer_parity() || id <= state.last_peer_stream {
                Err(if state.streams.contains_key(&id) {
                    RstStatus::STREAM_IN_USE
                } else {
                    RstStatus::PROTOCOL_ERROR
                })
            } else {
                state.last_peer_stream = id;
                let users = self.users.upgrade();
                match users {
                    Some(users)
                        if !state.goaway_sent
                            && !self.incoming.is_closed()
                            && state.streams.len() < self.shared.config.max_concurrent_streams =>
                    {
                        state.last_accepted = id;
                        let capacity = self.shared.config.stream_buffer_chunks.max(1);
                        let (tx, rx) = mpsc::channel(capacity);
                        let stream = Arc::new(StreamShared::new(id, fin, unidirectional));
                        if !(fin && unidirectional) {
                            let inbound = (!fin).then_some(tx);
                            let slot = Slot {
                                inbound,
                                stream: stream.clone(),
                                reply: None,
                            };
                            state.streams.insert(id, slot);
                        }
                        Ok((stream, rx, users))
                    }
                    _ => Err(RstStatus::REFUSED_STREAM),
                }
            }
        };
        let (stream, rx, users) = match accepted {
            Ok(accepted) => accepted,
            Err(status) => {
                tracing::debug!(stream_id = id, %status, "refusing stream");
                return Ok(self.rst(id, status).await);
            }
        };
        tracing::debug!(
            stream_id = id,
            streamtype = headers.get("streamtype").unwrap_or_default(),
            fin,
            unidirectional,
            "peer opened stream"
        );
        if !unidirectional {
            let reply = Outgoing::Reply {
                stream_id: id,
                headers: Headers::new(),
            };
            if !self.queue(reply).await {
                return Ok(false);
            }
        }
        let handed = Stream::new(headers, stream.clone(), rx, self.shared.clone(), users);
        let sent = tokio::select! {
            biased;
            _ = self.shared.shutdown_signal() => return Ok(false),
            sent = self.incoming.send(handed) => sent,
        };
        if let Err(SendError(refused)) = sent {
            // Incoming was dropped meanwhile: nobody will serve the stream.
            let going = !self.shared.reset(&stream, RstStatus::REFUSED_STREAM, false)
                || self.rst(id, RstStatus::REFUSED_STREAM).await;
            drop(refused);
            return Ok(going);
        }
        Ok(true)
    }

    async fn on_data(&mut self, stream_id: StreamId, data: Bytes, fin: bool) -> Going {
        let slot = {
            let state = self.shared.state();
            let slot = state.streams.get(&stream_id);
            slot.map(|slot| (slot.inbound.clone(), slot.stream.clone()))
        };
        let Some((inbound, stream)) = slot else {
            tracing::trace!(
                stream_id,
                len = data.len(),
                "data for a stream not open, ignored"
            );
            return true;
        };
        let Some(inbound) = inbound else {
            // The peer already sent FIN on this stream.
            tracing::debug!(stream_id, "data after fin");
            if self
                .shared
                .reset(&stream, RstStatus::STREAM_ALREADY_CLOSED, false)
            {
                return self.rst(stream_id, RstStatus::STREAM_ALREADY_CLOSED).await;
            }
            return true;
        };
        if !data.is_empty() {
            // Waits while the stream's buffer is full: see the module docs of `session`.
            let reset = stream.reset_notify.notified();
            tokio::select! {
                biased;
                _ = self.shared.shutdown_signal() => return false,
                _ = reset => tracing::trace!(stream_id, "stream reset, data dropped"),
                sent = inbound.send(data) => if sent.is_err() {
                    tracing::trace!(stream_id, "stream reader gone, data dropped");
                },
            }
        }
        drop(inbound);
        if fin {
            tracing::trace!(stream_id, "peer finished stream");
            self.shared.fin_received(stream_id);
        }
        true
    }

    fn stream(&self, id: StreamId) -> Option<Arc<StreamShared>> {
        let state = self.shared.state();
        state.streams.get(&id).map(|slot| slot.stream.clone())
    }

    async fn rst(&mut self, stream_id: StreamId, status: RstStatus) -> Going {
        self.queue(Outgoing::Frame(Frame::RstStream { stream_id, status }))
            .await
    }

    /// Queues a control frame, waiting for room unless the session shuts down.
    async fn queue(&mut self, item: Outgoing) -> Going {
        tokio::select! {
            biased;
            _ = self.shared.shutdown_signal() => false,
            sent = self.shared.control.send(item) => sent.is_ok(),
        }
    }
}
