//! One stream of a session, and its read and write halves.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::sync::mpsc::error::{SendError, TrySendError};
use tokio::sync::mpsc::{self, OwnedPermit};

use super::frame::Frame;
use super::session::{Outgoing, Shared, UserGuard, lock};
use super::{Error, Headers, Result, RstStatus, StreamId};

/// The most bytes one `poll_write` turns into a DATA frame.
const WRITE_CHUNK: usize = 64 * 1024;

/// Why the incoming side of a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The peer sent FLAG_FIN: all its data was delivered.
    Fin,
    /// The stream was reset, by the peer or by this side; data not yet read was dropped.
    Reset { status: RstStatus, by_peer: bool },
    /// The session ended first.
    SessionClosed,
}

/// The state a stream's halves and the session share.
pub(super) struct StreamShared {
    pub(super) id: StreamId,
    state: Mutex<StreamState>,
    /// Wakes the inbound half when the stream is reset while it waits to deliver data.
    pub(super) reset_notify: Notify,
}

pub(super) struct StreamState {
    /// This side sent (or queued) FIN or RST_STREAM, or may not send (unidirectional).
    pub(super) local_closed: bool,
    /// How the peer's side ended, once it has.
    pub(super) remote_end: Option<StreamEnd>,
}

impl StreamShared {
    pub(super) fn new(id: StreamId, remote_fin: bool, local_closed: bool) -> StreamShared {
        StreamShared {
            id,
            state: Mutex::new(StreamState {
                local_closed,
                remote_end: remote_fin.then_some(StreamEnd::Fin),
            }),
            reset_notify: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, StreamState> {
        lock(&self.state)
    }

    pub(super) fn is_reset(&self) -> bool {
        matches!(self.lock().remote_end, Some(StreamEnd::Reset { .. }))
    }
}

/// A stream of the session (either side may have opened it): its headers, a reader of what the
/// peer sends and a writer to it.
/// Use it whole, or [`Stream::split`] it to read and write from different tasks.
pub struct Stream {
    headers: Headers,
    reader: StreamReader,
    writer: StreamWriter,
}

impl Stream {
    pub(super) fn new(
        headers: Headers,
        stream: Arc<StreamShared>,
        inbound: mpsc::Receiver<Bytes>,
        session: Arc<Shared>,
        users: Arc<UserGuard>,
    ) -> Stream {
        let data = session.data.clone();
        Stream {
            headers,
            reader: StreamReader {
                stream: stream.clone(),
                inbound,
                pending: Bytes::new(),
                session: session.clone(),
                _users: users.clone(),
            },
            writer: StreamWriter {
                stream,
                session,
                data,
                done: false,
                reserving: None,
                _users: users,
            },
        }
    }

    /// The stream id (odd when the client opened it, even when the server did).
    pub fn id(&self) -> StreamId {
        self.reader.stream.id
    }

    /// The headers of the SYN_STREAM (`streamtype`, `port`, `requestid`, ...).
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The read and write halves.
    pub fn split(self) -> (StreamReader, StreamWriter) {
        (self.reader, self.writer)
    }

    /// The read half, in place.
    pub fn reader(&mut self) -> &mut StreamReader {
        &mut self.reader
    }

    /// The write half, in place.
    pub fn writer(&mut self) -> &mut StreamWriter {
        &mut self.writer
    }

    /// See [`StreamReader::recv`].
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.reader.recv().await
    }

    /// See [`StreamWriter::send`].
    pub async fn send(&mut self, data: Bytes) -> Result<()> {
        self.writer.send(data).await
    }

    /// See [`StreamWriter::finish`].
    pub async fn finish(&mut self) -> Result<()> {
        self.writer.finish().await
    }

    /// See [`StreamWriter::reset`].
    pub async fn reset(&mut self, status: RstStatus) -> Result<()> {
        self.writer.reset(status).await
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reader).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.writer).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.writer).poll_shutdown(cx)
    }
}

/// What the peer sends on a stream. As `AsyncRead`, it reaches end of file when the incoming
/// side ends, however it ends; [`StreamReader::end`] tells how. Dropping it discards the
/// stream's later data (the stream stays open for writing).
pub struct StreamReader {
    stream: Arc<StreamShared>,
    inbound: mpsc::Receiver<Bytes>,
    /// The rest of a piece `poll_read` took only part of.
    pending: Bytes,
    session: Arc<Shared>,
    _users: Arc<UserGuard>,
}

impl StreamReader {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.stream.id
    }

    /// The next piece of data, `None` at the end: the peer's FIN (after all its data), a reset
    /// (pending data is dropped) or the end of the session.
    pub async fn recv(&mut self) -> Option<Bytes> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next piece of data, like [`StreamReader::recv`].
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Some(std::mem::take(&mut self.pending)));
        }
        if self.stream.is_reset() {
            return Poll::Ready(None);
        }
        self.inbound.poll_recv(cx)
    }

    /// How the incoming side ended, once it has (it may have ended with data still unread).
    pub fn end(&self) -> Option<StreamEnd> {
        self.stream.lock().remote_end
    }

    /// Resets the stream (both directions) with `status`; does nothing if it is already reset
    /// or closed both ways.
    pub async fn reset(&self, status: RstStatus) -> Result<()> {
        reset(&self.session, &self.stream, status).await
    }
}

impl AsyncRead for StreamReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match ready!(this.poll_recv(cx)) {
                Some(data) => this.pending = data,
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = buf.remaining().min(this.pending.len());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

type Reserving =
    Pin<Box<dyn Future<Output = Result<OwnedPermit<Outgoing>, SendError<()>>> + Send + Sync>>;

/// What this side sends on a stream. Sends wait while the session's write queue is full. As
/// `AsyncWrite`, `poll_flush` has nothing to do (frames are queued to the session's writer, in
/// order) and `poll_shutdown` sends FIN. Dropping it without [`StreamWriter::finish`] or
/// [`StreamWriter::reset`] sends FIN, like closing a socket.
pub struct StreamWriter {
    stream: Arc<StreamShared>,
    session: Arc<Shared>,
    data: mpsc::Sender<Outgoing>,
    /// FIN or RST_STREAM went through this writer.
    done: bool,
    /// A queue slot `poll_write` or `poll_shutdown` is waiting for.
    reserving: Option<Reserving>,
    _users: Arc<UserGuard>,
}

impl StreamWriter {
    /// The stream id.
    pub fn id(&self) -> StreamId {
        self.stream.id
    }

    /// Queues `data` as DATA frames (empty data sends nothing).
    pub async fn send(&mut self, data: Bytes) -> Result<()> {
        self.check_open()?;
        if data.is_empty() {
            return Ok(());
        }
        self.data
            .send(self.frame(data, false))
            .await
            .map_err(|_| Error::SessionClosed)
    }

    /// Queues FIN: this side sends nothing more. The peer may still send.
    pub async fn finish(&mut self) -> Result<()> {
        self.check_open()?;
        self.data
            .send(self.frame(Bytes::new(), true))
            .await
            .map_err(|_| Error::SessionClosed)?;
        self.done = true;
        self.session.fin_sent(&self.stream);
        Ok(())
    }

    /// Resets the stream (both directions) with `status`, ahead of data still queued; does
    /// nothing if it is already reset or closed both ways.
    pub async fn reset(&mut self, status: RstStatus) -> Result<()> {
        self.done = true;
        reset(&self.session, &self.stream, status).await
    }

    fn check_open(&self) -> Result<()> {
        if self.session.shutdown_reason().is_some() {
            return Err(Error::SessionClosed);
        }
        if self.stream.lock().local_closed {
            return Err(Error::StreamClosed {
                stream_id: self.stream.id,
            });
        }
        Ok(())
    }

    fn frame(&self, data: Bytes, fin: bool) -> Outgoing {
        Outgoing::Data {
            stream: self.stream.clone(),
            data,
            fin,
        }
    }

    fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<OwnedPermit<Outgoing>>> {
        let closed = || io::Error::new(io::ErrorKind::BrokenPipe, Error::SessionClosed);
        if self.reserving.is_none() {
            match self.data.clone().try_reserve_owned() {
                Ok(permit) => return Poll::Ready(Ok(permit)),
                Err(TrySendError::Closed(_)) => return Poll::Ready(Err(closed())),
                Err(TrySendError::Full(data)) => {
                    self.reserving = Some(Box::pin(data.reserve_owned()));
                }
            }
        }
        let Some(reserving) = self.reserving.as_mut() else {
            return Poll::Ready(Err(closed()));
        };
        let permit = ready!(reserving.as_mut().poll(cx));
        self.reserving = None;
        Poll::Ready(permit.map_err(|_| closed()))
    }
}

impl AsyncWrite for StreamWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if let Err(error) = this.check_open() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, error)));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let permit = ready!(this.poll_reserve(cx))?;
        let n = buf.len().min(WRITE_CHUNK);
        permit.send(this.frame(Bytes::copy_from_slice(&buf[..n]), false));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.done || this.stream.lock().local_closed {
            return Poll::Ready(Ok(()));
        }
        let permit = ready!(this.poll_reserve(cx))?;
        permit.send(this.frame(Bytes::new(), true));
        this.done = true;
        this.session.fin_sent(&this.stream);
        Poll::Ready(Ok(()))
    }
}

impl Drop for StreamWriter {
    fn drop(&mut self) {
        if self.done || self.stream.lock().local_closed || self.session.shutdown_reason().is_some()
        {
            return;
        }
        let fin = self.frame(Bytes::new(), true);
        match self.data.try_send(fin) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return,
            Err(TrySendError::Full(fin)) => {
                // The queue is full: send from a task, which ends once the FIN is queued or the
                // session's writer is gone.
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                let data = self.data.clone();
                runtime.spawn(async move {
                    let _ = data.send(fin).await;
                });
            }
        }
        tracing::trace!(
            stream_id = self.stream.id,
            "stream writer dropped, fin queued"
        );
        self.session.fin_sent(&self.stream);
    }
}

/// Resets `stream` with `status` and queues RST_STREAM ahead of queued data.
async fn reset(session: &Shared, stream: &StreamShared, status: RstStatus) -> Result<()> {
    if session.shutdown_reason().is_some() {
        return Err(Error::SessionClosed);
    }
    if !session.reset(stream, status, false) {
        return Ok(());
    }
    tracing::debug!(stream_id = stream.id, %status, "resetting stream");
    session
        .control
        .send(Outgoing::Frame(Frame::RstStream {
            stream_id: stream.id,
            status,
        }))
        .await
        .map_err(|_| Error::SessionClosed)
}
