//! Both sides of a SPDY/3.1 connection.
//!
//! [`Session::server`] (kubelet's side: the peer opens streams, with odd ids) and
//! [`Session::client`] (crictl's side: this side opens streams with odd ids, through
//! [`SessionHandle::open_stream`]) take an upgraded connection and spawn one task that runs two
//! halves, the same code for both roles:
//! - the inbound half (`inbound.rs`) owns the read side and the header decompressor. It
//!   answers each SYN_STREAM with an empty SYN_REPLY, then hands the [`Stream`] to [`Incoming`];
//!   it passes SYN_REPLYs to the streams this side opened, echoes PINGs and routes DATA to the
//!   streams.
//! - the outbound half (`outbound.rs`) owns the write side and the header compressor. It
//!   takes frames from two bounded queues, control frames first, so a slow socket makes writers
//!   wait instead of buffering without bound. It also numbers nothing: stream ids are taken in
//!   the order SYN_STREAMs are queued, which is their order on the wire.
//!
//! Incoming DATA goes into a bounded per-stream buffer ([`Config::stream_buffer_chunks`]). When
//! a stream's buffer is full, the inbound half waits for its reader before reading the socket
//! further. SPDY as Kubernetes speaks it has no flow control (neither side sends WINDOW_UPDATE),
//! so the choice is between that and dropping data; waiting is what Go's spdystream does in
//! effect, and it keeps memory bounded. The cost: a stream nobody reads stalls the connection
//! (PINGs included) until it is read, reset or dropped; dropping a
//! [`StreamReader`](super::StreamReader) discards that stream's later data instead.
//!
//! The session ends when the peer closes the connection, at [`SessionHandle::close`], after a
//! GOAWAY (either way) once no stream is left open, on a protocol error (GOAWAY with
//! PROTOCOL_ERROR), after [`Config::idle_timeout`] without a frame either way, or when the
//! handle, [`Incoming`] and every stream half are dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, watch};

use super::frame::Frame;
use super::reader::FrameReader;
use super::stream::{Stream, StreamEnd, StreamShared};
use super::{Error, GoAwayStatus, Headers, Result, StreamId, inbound, outbound};

/// Limits of a session.
#[derive(Debug, Clone)]
pub struct Config {
    /// Streams open at once; further SYN_STREAMs are refused (RST_STREAM REFUSED_STREAM).
    pub max_concurrent_streams: usize,
    /// DATA pieces (of at most 32 KiB) buffered per stream before the session stops reading.
    pub stream_buffer_chunks: usize,
    /// Streams waiting in [`Incoming`] before the session stops reading.
    pub accept_backlog: usize,
    /// Frames queued for the socket (per queue: control and data) before senders wait.
    pub write_queue: usize,
    /// How long a closing session may spend writing out what is queued.
    pub close_timeout: Duration,
    /// Close the session (GOAWAY OK) after this long without a frame read or written; `None`
    /// keeps an idle session open. Go's spdystream does the same with its idle timer.
    pub idle_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_concurrent_streams: 1024,
            stream_buffer_chunks: 8,
            accept_backlog: 64,
            write_queue: 64,
            close_timeout: Duration::from_secs(5),
            idle_timeout: None,
        }
    }
}

/// Which end of the connection this side is: it decides the parity of stream ids (the client
/// opens odd ones, the server even ones) and of PING ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Server,
    Client,
}

impl Role {
    /// The parity (`id % 2`) of the ids the peer picks, for streams and PINGs.
    pub(super) fn peer_parity(self) -> u32 {
        match self {
            Role::Server => 1,
            Role::Client => 0,
        }
    }

    /// The first stream id this side opens.
    fn first_stream_id(self) -> StreamId {
        match self {
            Role::Server => 2,
            Role::Client => 1,
        }
    }
}

/// Entry point: runs one side of a SPDY/3.1 connection.
pub struct Session;

impl Session {
    /// Serves `io`, an already upgraded connection, with the default [`Config`].
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime: the session runs as a spawned task.
    pub fn server<T>(io: T) -> (SessionHandle, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Session::server_with_config(io, Config::default())
    }

    /// Serves `io` with the limits of `config`.
    pub fn server_with_config<T>(io: T, config: Config) -> (SessionHandle, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Session::start(io, config, Role::Server)
    }

    /// Runs the client side over `io`, a connection the server has just upgraded, with the
    /// default [`Config`]. Open streams with [`SessionHandle::open_stream`]; [`Incoming`] yields
    /// the streams the server opens, if any (Kubernetes servers open none).
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime: the session runs as a spawned task.
    pub fn client<T>(io: T) -> (SessionHandle, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Session::client_with_config(io, Config::default())
    }

    /// Runs the client side over `io` with the limits of `config`.
    pub fn client_with_config<T>(io: T, config: Config) -> (SessionHandle, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Session::start(io, config, Role::Client)
    }

    fn start<T>(io: T, config: Config, role: Role) -> (SessionHandle, Incoming)
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (control_tx, control_rx) = mpsc::channel(config.write_queue.max(1));
        let (data_tx, data_rx) = mpsc::channel(config.write_queue.max(1));
        let (incoming_tx, incoming_rx) = mpsc::channel(config.accept_backlog.max(1));
        let shared = Arc::new(Shared {
            config,
            role,
            next_stream_id: tokio::sync::Mutex::new(role.first_stream_id()),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            state: Mutex::new(State::default()),
            control: control_tx,
            data: data_tx,
            shutdown: watch::Sender::new(None),
            done: watch::Sender::new(false),
            failure: Mutex::new(None),
        });
        let users = Arc::new(UserGuard(shared.clone()));
        tokio::spawn(run(
            shared.clone(),
            io,
            control_rx,
            data_rx,
            incoming_tx,
            Arc::downgrade(&users),
        ));
        let handle = SessionHandle {
            shared,
            users: users.clone(),
        };
        let incoming = Incoming {
            streams: incoming_rx,
            _users: users,
        };
        (handle, incoming)
    }
}

async fn run<T>(
    shared: Arc<Shared>,
    io: T,
    control: mpsc::Receiver<Outgoing>,
    data: mpsc::Receiver<Outgoing>,
    incoming: mpsc::Sender<Stream>,
    users: Weak<UserGuard>,
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (read_half, write_half) = tokio::io::split(io);
    tokio::join!(
        inbound::run(shared.clone(), FrameReader::new(read_half), incoming, users),
        outbound::run(shared.clone(), write_half, control, data),
        watch_idle(shared.clone()),
    );
    shared.close_all_streams();
    let why = shared.shutdown_reason();
    tracing::debug!(reason = ?why, "spdy session ended");
    shared.done.send_replace(true);
}

/// Closes the session once no frame went either way for [`Config::idle_timeout`].
async fn watch_idle(shared: Arc<Shared>) {
    let Some(timeout) = shared.config.idle_timeout else {
        return;
    };
    loop {
        let deadline = shared.last_activity() + timeout;
        tokio::select! {
            biased;
            _ = shared.shutdown_signal() => return,
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
        if shared.last_activity() + timeout <= Instant::now() {
            tracing::debug!(
                timeout_seconds = timeout.as_secs(),
                "spdy session idle, closing"
            );
            shared.shut_down(Shutdown::Idle);
            return;
        }
    }
}

/// Controls a session; clones share it.
#[derive(Clone)]
pub struct SessionHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) users: Arc<UserGuard>,
}

impl SessionHandle {
    /// Sends GOAWAY (status OK, naming the last stream accepted) and accepts no more streams:
    /// later SYN_STREAMs are refused with RST_STREAM REFUSED_STREAM. Open streams carry on; the
    /// session ends once none is left open either way. Calling it again does nothing.
    pub async fn go_away(&self) -> Result<()> {
        let last_good_stream_id = {
            let mut state = self.shared.state();
            if state.goaway_sent {
                return Ok(());
            }
            state.goaway_sent = true;
            state.last_accepted
        };
        tracing::debug!(last_good_stream_id, "sending goaway");
        self.shared
            .control
            .send(Outgoing::Frame(Frame::GoAway {
                last_good_stream_id,
                status: GoAwayStatus::OK,
            }))
            .await
            .map_err(|_| Error::SessionClosed)?;
        let state = self.shared.state();
        self.shared.finish_if_idle(&state);
        Ok(())
    }

    /// Ends the session now: what is already queued is written (within
    /// [`Config::close_timeout`]), then GOAWAY (OK), then the connection is closed. Stream
    /// readers end after the data already received; writes fail with [`Error::SessionClosed`].
    pub fn close(&self) {
        self.shared.shut_down(Shutdown::Closed);
    }

    /// Waits for the session to end: `Ok` for a clean end, [`Error::SessionFailed`] with the
    /// cause for a protocol or I/O error.
    pub async fn closed(&self) -> Result<()> {
        let mut done = self.shared.done.subscribe();
        // The sender lives in `shared`, which `self` keeps alive, so this cannot fail.
        let _ = done.wait_for(|done| *done).await;
        match self.shared.failure() {
            Some(error) => Err(Error::SessionFailed(error)),
            None => Ok(()),
        }
    }

    /// Whether the session is ending or has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.shutdown_reason().is_some()
    }

    /// Streams open in at least one direction.
    pub fn open_streams(&self) -> usize {
        self.shared.state().streams.len()
    }
}

/// The streams the peer opens, in order, each already answered with SYN_REPLY (a stream opened
/// with FLAG_UNIDIRECTIONAL gets no reply and cannot be written). To turn one down, reset it
/// (e.g. with [`super::RstStatus::REFUSED_STREAM`]). While `Incoming` is dropped, new streams
/// are refused.
pub struct Incoming {
    streams: mpsc::Receiver<Stream>,
    _users: Arc<UserGuard>,
}

impl Incoming {
    /// The next stream; `None` once the session has ended.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.streams.recv().await
    }

    /// Polls for the next stream; `Ready(None)` once the session has ended.
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Option<Stream>> {
        self.streams.poll_recv(cx)
    }
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shutdown {
    /// [`SessionHandle::close`], or every handle was dropped.
    Closed,
    /// Nothing was read or written for [`Config::idle_timeout`].
    Idle,
    /// A GOAWAY went one way or the other and no stream is left.
    Finished,
    /// The peer closed the connection.
    PeerClosed,
    /// A protocol error (or a local failure): tell the peer with this GOAWAY status.
    Failed(GoAwayStatus),
    /// The connection broke: nothing more can be written.
    Broken,
}

impl Shutdown {
    /// The GOAWAY status to end with, if one is to be written.
    pub(super) fn goaway(self) -> Option<GoAwayStatus> {
        match self {
            Shutdown::Closed | Shutdown::Idle | Shutdown::Finished => Some(GoAwayStatus::OK),
            Shutdown::Failed(status) => Some(status),
            Shutdown::PeerClosed | Shutdown::Broken => None,
        }
    }
}

/// What the outbound half writes.
pub(super) enum Outgoing {
    /// A frame without a header block.
    Frame(Frame),
    /// SYN_REPLY, its header block compressed at write time (compression order is wire order).
    Reply {
        stream_id: StreamId,
        headers: Headers,
    },
    /// SYN_STREAM for a stream this side opens, compressed at write time like `Reply`.
    Open {
        stream_id: StreamId,
        headers: Headers,
    },
    /// Stream data, skipped if the stream has been reset by then. Split into frames of at most
    /// 16 MiB; `fin` goes on the last.
    Data {
        stream: Arc<StreamShared>,
        data: Bytes,
        fin: bool,
    },
}

/// The state the halves and the handles share.
pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) role: Role,
    /// The id of the next stream this side opens; held while its SYN_STREAM is queued, so ids
    /// reach the wire in increasing order.
    pub(super) next_stream_id: tokio::sync::Mutex<StreamId>,
    /// When the session started: the origin of `last_activity_ms`.
    started: Instant,
    /// Milliseconds after `started` of the last frame read or written.
    last_activity_ms: AtomicU64,
    state: Mutex<State>,
    pub(super) control: mpsc::Sender<Outgoing>,
    pub(super) data: mpsc::Sender<Outgoing>,
    shutdown: watch::Sender<Option<Shutdown>>,
    done: watch::Sender<bool>,
    failure: Mutex<Option<Arc<Error>>>,
}

/// The stream table and GOAWAY bookkeeping.
#[derive(Default)]
pub(super) struct State {
    /// Streams open in at least one direction.
    pub(super) streams: HashMap<StreamId, Slot>,
    /// The highest stream id the peer has used.
    pub(super) last_peer_stream: StreamId,
    /// The highest stream id accepted, for GOAWAY.
    pub(super) last_accepted: StreamId,
    pub(super) goaway_sent: bool,
    pub(super) goaway_received: bool,
}

/// A stream in the table.
pub(super) struct Slot {
    /// Where its DATA goes; `None` once the peer has finished sending.
    pub(super) inbound: Option<mpsc::Sender<Bytes>>,
    pub(super) stream: Arc<StreamShared>,
    /// For a stream this side opened, until the peer's SYN_REPLY: told when it arrives. Dropped
    /// unsent when the stream is reset or the session ends first.
    pub(super) reply: Option<oneshot::Sender<()>>,
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the data consistent.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Notes that a frame was just read or written (for the idle timeout).
    pub(super) fn touch(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(elapsed, Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        let ms = self.last_activity_ms.load(Ordering::Relaxed);
        self.started + Duration::from_millis(ms)
    }

    /// Starts ending the session, unless it already is; returns whether this call did.
    pub(super) fn shut_down(&self, why: Shutdown) -> bool {
        self.shutdown.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            tracing::debug!(reason = ?why, "spdy session shutting down");
            *current = Some(why);
            true
        })
    }

    /// Records `error` as the session's cause of death and starts ending it.
    pub(super) fn fail(&self, error: Error, why: Shutdown) {
        tracing::warn!(%error, reason = ?why, "spdy session failed");
        lock(&self.failure).get_or_insert_with(|| Arc::new(error));
        self.shut_down(why);
    }

    fn failure(&self) -> Option<Arc<Error>> {
        lock(&self.failure).clone()
    }

    pub(super) fn shutdown_reason(&self) -> Option<Shutdown> {
        *self.shutdown.borrow()
    }

    /// Resolves once the session has started ending.
    pub(super) async fn shutdown_signal(&self) {
        let mut shutdown = self.shutdown.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = shutdown.wait_for(Option::is_some).await;
    }

    /// Ends the session if a GOAWAY went either way and no stream is left.
    pub(super) fn finish_if_idle(&self, state: &State) {
        if (state.goaway_sent || state.goaway_received) && state.streams.is_empty() {
            self.shut_down(Shutdown::Finished);
        }
    }

    /// This side queued its FIN on `stream`.
    pub(super) fn fin_sent(&self, stream: &StreamShared) {
        let mut state = self.state();
        let both = {
            let mut inner = stream.lock();
            inner.local_closed = true;
            inner.remote_end.is_some()
        };
        if both {
            state.streams.remove(&stream.id);
            self.finish_if_idle(&state);
        }
    }

    /// The peer finished sending on stream `id`.
    pub(super) fn fin_received(&self, id: StreamId) {
        let mut state = self.state();
        let Some(slot) = state.streams.get_mut(&id) else {
            return;
        };
        slot.inbound = None;
        let both = {
            let mut inner = slot.stream.lock();
            inner.remote_end.get_or_insert(StreamEnd::Fin);
            inner.local_closed
        };
        if both {
            state.streams.remove(&id);
            self.finish_if_idle(&state);
        }
    }

    /// Marks `stream` reset (by the peer or by us) and drops it from the table. Returns false
    /// when it was already reset or closed both ways (then no RST_STREAM is due).
    pub(super) fn reset(
        &self,
        stream: &StreamShared,
        status: super::RstStatus,
        by_peer: bool,
    ) -> bool {
        let mut state = self.state();
        {
            let mut inner = stream.lock();
            let reset = matches!(inner.remote_end, Some(StreamEnd::Reset { .. }));
            if reset || (inner.local_closed && inner.remote_end.is_some()) {
                return false;
            }
            inner.remote_end = Some(StreamEnd::Reset { status, by_peer });
            inner.local_closed = true;
        }
        state.streams.remove(&stream.id);
        stream.reset_notify.notify_one();
        self.finish_if_idle(&state);
        true
    }

    /// The session is over: every stream ends, readers after their buffered data.
    pub(super) fn close_all_streams(&self) {
        let mut state = self.state();
        for (_, slot) in state.streams.drain() {
            let mut inner = slot.stream.lock();
            inner.local_closed = true;
            inner.remote_end.get_or_insert(StreamEnd::SessionClosed);
        }
    }
}

/// Held by every user-facing object; when the last one goes, the session closes.
pub(super) struct UserGuard(Arc<Shared>);

impl Drop for UserGuard {
    fn drop(&mut self) {
        self.0.shut_down(Shutdown::Closed);
    }
}
