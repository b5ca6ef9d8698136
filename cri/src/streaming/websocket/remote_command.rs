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

use futures::StreamExt;
use futures::stream::SplitStream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::super::backend::{RemoteIo, TerminalSize};
use super::super::protocol::{
    CHANNEL_ERROR, CHANNEL_RESIZE, CHANNEL_STDERR, CHANNEL_STDIN, CHANNEL_STDOUT, ChannelProtocol,
    Status,
};
use super::super::remote_command::{
    Command, MAX_RESIZE_PENDING, RESIZE_QUEUE, log_outcome, parse_sizes, run, status_of,
};
use super::super::session::SessionContext;
use super::Activity;
use super::channels::{
    OUT_QUEUE, PIPE_BUFFER, ReadEnd, next_payload, pump, run_session, write_client,
};
use super::frame::{FrameError, Inbound, decode, encode};

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

/// What the client's messages feed.
struct Inputs {
    stdin: Option<WriteHalf<DuplexStream>>,
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

    // Each pipe: the backend's end, and the session's halves (it reads one, writes the other).
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
        stdin: stdin_pipe.map(|pipe| tokio::io::split(pipe).1),
        resize: resize_tx,
        resize_pending: Vec::new(),
    };

    let work = {
        let queue = queue.clone();
        let backend = &*context.backend;
        let container = container.clone();
        async move {
            let output = |pipe: Option<DuplexStream>, channel: u8| {
                let queue = queue.clone();
                async move {
                    if let Some(pipe) = pipe {
                        pump(tokio::io::split(pipe).0, channel, protocol, queue).await;
                    }
                }
            };
            let (outcome, (), ()) = tokio::join!(
                run(backend, command, io),
                output(stdout_pipe, CHANNEL_STDOUT),
                output(stderr_pipe, CHANNEL_STDERR),
            );
            log_outcome(&outcome, &container, peer);
            if let Some(payload) = status_payload(protocol, &status_of(&outcome)) {
                let _ = queue.send(encode(protocol, CHANNEL_ERROR, &payload)).await;
            }
        }
    };
    let reader = read_client(stream, protocol, inputs, activity.clone());
    let writer = write_client(sink, queued, activity.clone());
    run_session(
        context,
        "remote command",
        queue,
        work,
        reader,
        writer,
        &activity,
    )
    .await;
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
        let payload = match next_payload(&mut stream, &activity).await {
            Ok(payload) => payload,
            Err(end) => return end,
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
            Err(error @ FrameError::BadClose { .. }) => {
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
