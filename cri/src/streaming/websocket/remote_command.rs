//! Exec and attach over WebSocket, as kubelet's streaming library serves them
//! (`remotecommand/websocket.go` on apimachinery's `wsstream.Conn`), with v5 from the
//! apiserver's stream translator:
//!
//! 1. Channels exist from the upgrade on: 0 stdin (read when the request asked for stdin),
//!    1 stdout and 2 stderr (written when asked for), 3 error (written), 4 resize (read; the
//!    sizes reach the backend with a tty). Data on any other channel, or on a channel the
//!    server does not read, is dropped.
//! 2. First, an empty message on the lowest channel the server writes (stdout, else stderr,
//!    else error): kubelet's "connection established" signal.
//! 3. The backend runs with the channels as plain byte streams. v5's close signal on channel
//!    0 ends the command's stdin; a close signal for a channel above 4, or a malformed one,
//!    ends the connection (as kubelet's reader loop does). Undecodable base64 is skipped.
//! 4. When the backend is done and its output sent: the status on channel 3 (the JSON status
//!    for v4 and v5, always; the message, failures only, before v4), then a normal close
//!    frame. client-go reads every channel to the end of the connection, so the close frame
//!    is what ends its stdout, stderr and error streams.
//!
//! The client going away, a broken frame, the idle timeout (no frame either way, pings
//! included) or the server's shutdown drop the backend call and close the connection.

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::super::backend::{RemoteIo, TerminalSize};
use super::super::protocol::{
    CHANNEL_ERROR, CHANNEL_RESIZE, CHANNEL_STDERR, CHANNEL_STDIN, CHANNEL_STDOUT, ChannelProtocol,
    Status,
};
use super::super::remote_command::{
    Command, MAX_RESIZE_PENDING, Outcome, RESIZE_QUEUE, log_outcome, parse_sizes, run, status_of,
};
use super::super::session::SessionContext;
use super::frame::{Inbound, decode, encode};
use super::{Activity, CLOSE_WAIT};

/// Messages queued for the client (each at most [`CHUNK`] bytes of data).
const OUT_QUEUE: usize = 16;
/// Bytes buffered in each stdio pipe.
const PIPE_BUFFER: usize = 64 * 1024;
/// The most output bytes sent in one message (client-go's own buffer size).
const CHUNK: usize = 32 * 1024;

/// The channels a request uses.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Wanted {
    fn of(command: &Command) -> Wanted {
        let (stdin, stdout, stderr, tty) = match command {
            Command::Exec(t) => (t.stdin, t.stdout, t.stderr, t.tty),
            Command::Attach(t) => (t.stdin, t.stdout, t.stderr, t.tty),
        };
        Wanted {
            stdin,
            stdout,
            // A terminal merges stderr into stdout (the URL was refused for tty + stderr).
            stderr: stderr && !tty,
            tty,
        }
    }
}

/// How the session stopped running.
enum Ending {
    Done(Outcome),
    Reader(ReadEnd),
    WriterFailed(WsError),
    Idle,
    Shutdown,
}

/// Why the client's side stopped.
#[derive(Debug)]
enum ReadEnd {
    /// Its close frame.
    Closed,
    /// The connection ended without one.
    Gone,
    /// The connection broke the WebSocket framing or limits.
    Broken(WsError),
    /// It broke the channel protocol.
    Protocol(String),
}

/// What the client's messages feed.
struct Inputs {
    stdin: Option<DuplexStream>,
    resize: Option<mpsc::Sender<TerminalSize>>,
    resize_pending: Vec<u8>,
}

/// Serves one exec or attach session on `ws` until the command is done and the connection
/// closed, or the client goes away.
pub(super) async fn serve<T>(
    context: &SessionContext,
    ws: WebSocketStream<T>,
    command: Command,
    protocol: ChannelProtocol,
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let peer = context.peer;
    let container = command.container_id().to_string();
    let wanted = Wanted::of(&command);
    tracing::info!(
        %peer,
        %container,
        session = command.name(),
        transport = "websocket",
        protocol = protocol.name(),
        stdin = wanted.stdin,
        stdout = wanted.stdout,
        stderr = wanted.stderr,
        tty = wanted.tty,
        "streaming session ready"
    );
    let (sink, stream) = ws.split();
    let activity = Activity::new();
    let (queue, queued) = mpsc::channel::<Message>(OUT_QUEUE);
    let first = if wanted.stdout {
        CHANNEL_STDOUT
    } else if wanted.stderr {
        CHANNEL_STDERR
    } else {
        CHANNEL_ERROR
    };
    // The queue is empty: this cannot fail.
    let _ = queue.try_send(encode(protocol, first, &[]));

    let (stdin_backend, stdin_pipe) = pipe(wanted.stdin);
    let (stdout_backend, stdout_pipe) = pipe(wanted.stdout);
    let (stderr_backend, stderr_pipe) = pipe(wanted.stderr);
    let (resize_tx, resize_rx) = if wanted.tty {
        let (tx, rx) = mpsc::channel(RESIZE_QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let io = RemoteIo {
        stdin: stdin_backend.map(|pipe| Box::new(pipe) as _),
        stdout: stdout_backend.map(|pipe| Box::new(pipe) as _),
        stderr: stderr_backend.map(|pipe| Box::new(pipe) as _),
        resize: resize_rx,
    };
    let inputs = Inputs {
        stdin: stdin_pipe,
        resize: resize_tx,
        resize_pending: Vec::new(),
    };

    let reader = read_client(stream, protocol, inputs, activity.clone());
    let writer = write_client(sink, queued, activity.clone());
    tokio::pin!(reader, writer);
    let (mut reader_done, mut writer_done) = (false, false);
    let work = {
        let queue = queue.clone();
        let backend = &*context.backend;
        async move {
            let (outcome, (), ()) = tokio::join!(
                run(backend, command, io),
                pump(stdout_pipe, CHANNEL_STDOUT, protocol, queue.clone()),
                pump(stderr_pipe, CHANNEL_STDERR, protocol, queue),
            );
            outcome
        }
    };
    let mut shutdown = context.shutdown.clone();
    let ending = tokio::select! {
        outcome = work => Ending::Done(outcome),
        end = &mut reader => {
            reader_done = true;
            Ending::Reader(end)
        }
        written = &mut writer => {
            writer_done = true;
            match written {
                Ok(()) => Ending::Reader(ReadEnd::Gone),
                Err(error) => Ending::WriterFailed(error),
            }
        }
        _ = activity.idle(context.idle_timeout) => Ending::Idle,
        _ = super::super::shutdown_requested(&mut shutdown) => Ending::Shutdown,
    };
    // The backend call (if it still ran) is dropped: its streams with it.

    let close = match ending {
        Ending::Done(outcome) => {
            log_outcome(&outcome, &container, peer);
            let status = status_of(&outcome);
            if let Some(payload) = status_payload(protocol, &status) {
                let _ = queue.send(encode(protocol, CHANNEL_ERROR, &payload)).await;
            }
            Some(close_frame(CloseCode::Normal, ""))
        }
        Ending::Reader(end) => {
            tracing::info!(%peer, %container, end = ?end, "client went away before the command finished");
            match end {
                ReadEnd::Closed => Some(close_frame(CloseCode::Normal, "")),
                ReadEnd::Gone => None,
                ReadEnd::Broken(error) => broken_close(&error),
                ReadEnd::Protocol(why) => Some(close_frame(CloseCode::Protocol, &why)),
            }
        }
        Ending::WriterFailed(error) => {
            tracing::info!(%peer, %container, %error, "websocket write failed, session ended");
            None
        }
        Ending::Idle => {
            tracing::info!(%peer, %container, "websocket session idle, closing it");
            Some(close_frame(CloseCode::Away, "idle timeout"))
        }
        Ending::Shutdown => {
            tracing::info!(%peer, %container, "streaming session ended by server shutdown");
            Some(close_frame(CloseCode::Away, "server shutting down"))
        }
    };
    if let Some(frame) = close {
        let _ = queue.send(Message::Close(Some(frame))).await;
    }
    drop(queue);
    // Send what is queued and the close frame, then read until the client's close frame.
    let finish = async {
        if !writer_done && let Err(error) = (&mut writer).await {
            tracing::debug!(%peer, %error, "websocket close not sent");
        }
        if !reader_done {
            let end = (&mut reader).await;
            tracing::debug!(%peer, end = ?end, "websocket client side done");
        }
    };
    if tokio::time::timeout(CLOSE_WAIT, finish).await.is_err() {
        tracing::debug!(%peer, %container, "websocket close handshake did not finish in time");
    }
}

/// A pipe for a stream the request asked for: (the backend's end, the session's end).
fn pipe(wanted: bool) -> (Option<DuplexStream>, Option<DuplexStream>) {
    if wanted {
        let (backend, session) = tokio::io::duplex(PIPE_BUFFER);
        (Some(backend), Some(session))
    } else {
        (None, None)
    }
}

fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    // Control frames carry at most 125 bytes; the code takes 2.
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    CloseFrame {
        code,
        reason: reason[..end].into(),
    }
}

/// The close frame for a connection that broke the framing, if one can still be sent.
fn broken_close(error: &WsError) -> Option<CloseFrame> {
    match error {
        WsError::Capacity(_) => Some(close_frame(CloseCode::Size, "message too big")),
        WsError::Protocol(_) => Some(close_frame(CloseCode::Protocol, "protocol error")),
        WsError::Utf8(_) => Some(close_frame(CloseCode::Invalid, "invalid utf-8")),
        _ => None,
    }
}

/// What the error channel carries for `status`: v4 and v5 the JSON status; before, the
/// message of a failure and nothing for a success.
fn status_payload(protocol: ChannelProtocol, status: &Status) -> Option<Vec<u8>> {
    if protocol.has_status() {
        match serde_json::to_vec(status) {
            Ok(json) => Some(json),
            Err(error) => {
                tracing::warn!(%error, "encode the exec status");
                None
            }
        }
    } else if status.is_success() {
        None
    } else {
        Some(status.message.clone().into_bytes())
    }
}

/// Sends what the backend writes into `pipe` on `channel`, until it ends.
async fn pump(
    pipe: Option<DuplexStream>,
    channel: u8,
    protocol: ChannelProtocol,
    queue: mpsc::Sender<Message>,
) {
    let Some(mut pipe) = pipe else {
        return;
    };
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let read = match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if queue
            .send(encode(protocol, channel, &buffer[..read]))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Sends the queued messages in order; done after a close frame or when the queue ends.
async fn write_client<T>(
    mut sink: SplitSink<WebSocketStream<T>, Message>,
    mut queued: mpsc::Receiver<Message>,
    activity: Activity,
) -> Result<(), WsError>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = queued.recv().await {
        let closing = matches!(message, Message::Close(_));
        sink.send(message).await?;
        activity.touch();
        if closing {
            break;
        }
    }
    Ok(())
}

/// Reads the client's messages into stdin and resize until the connection ends.
async fn read_client<T>(
    mut stream: SplitStream<WebSocketStream<T>>,
    protocol: ChannelProtocol,
    mut inputs: Inputs,
    activity: Activity,
) -> ReadEnd
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = match stream.next().await {
            None => return ReadEnd::Gone,
            Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => return ReadEnd::Gone,
            Some(Err(WsError::Io(error))) => {
                tracing::debug!(%error, "websocket read failed");
                return ReadEnd::Gone;
            }
            Some(Err(error)) => return ReadEnd::Broken(error),
            Some(Ok(message)) => message,
        };
        activity.touch();
        let payload: Bytes = match message {
            Message::Binary(data) => data,
            Message::Text(text) => Bytes::from(text),
            Message::Close(_) => return ReadEnd::Closed,
            // Pongs to pings are tungstenite's job.
            _ => continue,
        };
        match decode(protocol, &payload) {
            Ok(Inbound::Empty) => {}
            Ok(Inbound::Close { channel }) => {
                tracing::debug!(channel, "client closed a channel");
                match channel {
                    CHANNEL_STDIN => {
                        if let Some(mut stdin) = inputs.stdin.take() {
                            let _ = stdin.shutdown().await;
                        }
                    }
                    CHANNEL_RESIZE => inputs.resize = None,
                    CHANNEL_STDOUT | CHANNEL_STDERR | CHANNEL_ERROR => {}
                    other => return ReadEnd::Protocol(format!("close of unknown channel {other}")),
                }
            }
            Ok(Inbound::Data { channel, data }) => match channel {
                CHANNEL_STDIN => feed_stdin(&mut inputs, &data).await,
                CHANNEL_RESIZE => feed_resize(&mut inputs, &data).await,
                other => {
                    tracing::trace!(channel = other, bytes = data.len(), "message dropped");
                }
            },
            Err(error @ super::frame::FrameError::BadClose { .. }) => {
                return ReadEnd::Protocol(error.to_string());
            }
            Err(error) => tracing::debug!(%error, "websocket message skipped"),
        }
    }
}

async fn feed_stdin(inputs: &mut Inputs, data: &[u8]) {
    let Some(stdin) = inputs.stdin.as_mut() else {
        return;
    };
    if stdin.write_all(data).await.is_err() {
        // The command no longer reads its stdin.
        inputs.stdin = None;
    }
}

async fn feed_resize(inputs: &mut Inputs, data: &[u8]) {
    let Some(sizes) = inputs.resize.as_ref() else {
        return;
    };
    inputs.resize_pending.extend_from_slice(data);
    let (parsed, used, malformed) = parse_sizes(&inputs.resize_pending);
    inputs.resize_pending.drain(..used);
    for size in parsed {
        tracing::debug!(width = size.width, height = size.height, "terminal resize");
        if sizes.send(size).await.is_err() {
            inputs.resize = None;
            return;
        }
    }
    if malformed || inputs.resize_pending.len() > MAX_RESIZE_PENDING {
        tracing::debug!("malformed or oversized resize message, no more resizes read");
        inputs.resize = None;
    }
}
