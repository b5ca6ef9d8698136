//! Streams this side opens: SYN_STREAM out, wait for the peer's SYN_REPLY.
//!
//! Kubernetes clients (client-go's `CreateStream`) open every stream and wait for its reply
//! before using it; servers never open any. The code is the same for both roles, only the
//! parity of the ids differs.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::frame::{Frame, MAX_STREAM_ID};
use super::session::{Outgoing, SessionHandle, Shared, Slot};
use super::stream::{Stream, StreamEnd, StreamShared};
use super::{Error, Headers, Result, RstStatus, StreamId};

impl SessionHandle {
    /// Opens a stream with `headers` (SYN_STREAM) and waits for the peer's SYN_REPLY. Fails
    /// with [`Error::StreamRefused`] if the peer resets the stream instead, and with
    /// [`Error::GoingAway`] once a GOAWAY went either way.
    ///
    /// Dropping the returned future before the reply resets the stream (CANCEL).
    pub async fn open_stream(&self, headers: Headers) -> Result<Stream> {
        let shared = &self.shared;
        let (mut pending, inbound, reply) = {
            let mut next = shared.next_stream_id.lock().await;
            let stream_id = *next;
            if stream_id > MAX_STREAM_ID {
                return Err(Error::StreamIdsExhausted);
            }
            let capacity = shared.config.stream_buffer_chunks.max(1);
            let (tx, inbound) = mpsc::channel(capacity);
            let (reply_tx, reply) = oneshot::channel();
            let stream = Arc::new(StreamShared::new(stream_id, false, false));
            {
                let mut state = shared.state();
                if shared.shutdown_reason().is_some() {
                    return Err(Error::SessionClosed);
                }
                if state.goaway_sent || state.goaway_received {
                    return Err(Error::GoingAway);
                }
                let slot = Slot {
                    inbound: Some(tx),
                    stream: stream.clone(),
                    reply: Some(reply_tx),
                };
                state.streams.insert(stream_id, slot);
            }
            // From here on, giving up (an error, or the caller dropping this future) takes the
            // stream out of the table again.
            let mut pending = Pending {
                shared: shared.clone(),
                stream: Some(stream),
                announced: false,
            };
            *next = stream_id.saturating_add(2);
            let open = Outgoing::Open {
                stream_id,
                headers: headers.clone(),
            };
            if shared.control.send(open).await.is_err() {
                return Err(Error::SessionClosed);
            }
            pending.announced = true;
            tracing::debug!(
                stream_id,
                streamtype = headers.get("streamtype").unwrap_or_default(),
                "opened stream"
            );
            (pending, inbound, reply)
        };
        let replied = reply.await;
        let Some(stream) = pending.stream.take() else {
            return Err(Error::SessionClosed);
        };
        match replied {
            Ok(()) => Ok(Stream::new(
                headers,
                stream,
                inbound,
                shared.clone(),
                self.users.clone(),
            )),
            Err(_) => Err(refused(&stream)),
        }
    }
}

/// Why a stream this side opened got no reply.
fn refused(stream: &StreamShared) -> Error {
    match stream.lock().remote_end {
        Some(StreamEnd::Reset { status, .. }) => Error::StreamRefused {
            stream_id: stream.id,
            status,
        },
        _ => Error::SessionClosed,
    }
}

/// A stream being opened; if its opener gives up, the stream leaves the table, and is reset
/// if its SYN_STREAM was queued.
struct Pending {
    shared: Arc<Shared>,
    stream: Option<Arc<StreamShared>>,
    /// The SYN_STREAM is queued.
    announced: bool,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if !self.announced {
            let mut state = self.shared.state();
            state.streams.remove(&stream.id);
            self.shared.finish_if_idle(&state);
            return;
        }
        if self.shared.reset(&stream, RstStatus::CANCEL, false) {
            let stream_id: StreamId = stream.id;
            tracing::debug!(stream_id, "stream abandoned before its reply, resetting");
            let rst = Outgoing::Frame(Frame::RstStream {
                stream_id,
                status: RstStatus::CANCEL,
            });
            // A full queue or a closed session: the stream is gone from the table either way.
            let _ = self.shared.control.try_send(rst);
        }
    }
}
