//! What exec, attach and channel-pairs port-forward share on a WebSocket connection: one
//! writer draining a bounded queue of messages, pumps from the backend's pipes into that
//! queue, the client's messages read one at a time, and how a session ends and closes.

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream, ReadHalf};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::super::protocol::ChannelProtocol;
use super::super::session::SessionContext;
use super::frame::encode;
use super::{Activity, CLOSE_WAIT};

/// Messages queued for the client (each at most [`CHUNK`] bytes of data).
pub(super) const OUT_QUEUE: usize = 16;
/// Bytes buffered in each pipe to or from the backend.
pub(super) const PIPE_BUFFER: usize = 64 * 1024;
/// The most output bytes sent in one message (client-go's own buffer size).
const CHUNK: usize = 32 * 1024;

/// Why the client's side stopped.
#[derive(Debug)]
pub(super) enum ReadEnd {
    /// Its close frame.
    Closed,
    /// The connection ended without one.
    Gone,
    /// The connection broke the WebSocket framing or limits.
    Broken(WsError),
    /// It broke the channel protocol.
    Protocol(String),
}

/// The payload of the client's next text or binary message.
pub(super) async fn next_payload<T>(
    stream: &mut SplitStream<WebSocketStream<T>>,
    activity: &Activity,
) -> Result<Bytes, ReadEnd>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = match stream.next().await {
            None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                return Err(ReadEnd::Gone);
            }
            Some(Err(WsError::Io(error))) => {
                tracing::debug!(%error, "websocket read failed");
                return Err(ReadEnd::Gone);
            }
            Some(Err(error)) => return Err(ReadEnd::Broken(error)),
            Some(Ok(message)) => message,
        };
        activity.touch();
        match message {
            Message::Binary(data) => return Ok(data),
            Message::Text(text) => return Ok(Bytes::from(text)),
            Message::Close(_) => return Err(ReadEnd::Closed),
            // Pongs to pings are tungstenite's job.
            _ => {}
        }
    }
}

/// Sends the queued messages in order; done after a close frame or when the queue ends.
pub(super) async fn write_client<T>(
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

/// Sends what the backend writes into `pipe` on `channel`, until it ends.
pub(super) async fn pump(
    mut pipe: ReadHalf<DuplexStream>,
    channel: u8,
    protocol: ChannelProtocol,
    queue: mpsc::Sender<Message>,
) {
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

/// A close frame; the reason is cut to fit a control frame.
pub(super) fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
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

/// Runs `work` (the backend calls and the pumps; it queues its last messages itself) while
/// `writer` sends and `reader` reads, until the work is done, the client goes away, the
/// session is idle or the server shuts down; then queues a close frame (when one can be
/// sent), drops the work, and lets the writer and reader finish the close handshake for at
/// most [`CLOSE_WAIT`]. `what` names the session in logs.
pub(super) async fn run_session<W, R, Wr>(
    context: &SessionContext,
    what: &str,
    queue: mpsc::Sender<Message>,
    work: W,
    reader: R,
    writer: Wr,
    activity: &Activity,
) where
    W: Future<Output = ()>,
    R: Future<Output = ReadEnd>,
    Wr: Future<Output = Result<(), WsError>>,
{
    let peer = context.peer;
    tokio::pin!(reader, writer);
    let (mut reader_done, mut writer_done) = (false, false);
    let mut shutdown = context.shutdown.clone();
    let close = tokio::select! {
        () = work => Some(close_frame(CloseCode::Normal, "")),
        end = &mut reader => {
            reader_done = true;
            tracing::info!(%peer, session = what, end = ?end, "client went away before the session ended");
            match end {
                ReadEnd::Closed => Some(close_frame(CloseCode::Normal, "")),
                ReadEnd::Gone => None,
                ReadEnd::Broken(error) => broken_close(&error),
                ReadEnd::Protocol(why) => Some(close_frame(CloseCode::Protocol, &why)),
            }
        }
        written = &mut writer => {
            writer_done = true;
            if let Err(error) = written {
                tracing::info!(%peer, session = what, %error, "websocket write failed, session ended");
            }
            None
        }
        () = activity.idle(context.idle_timeout) => {
            tracing::info!(%peer, session = what, "websocket session idle, closing it");
            Some(close_frame(CloseCode::Away, "idle timeout"))
        }
        () = super::super::shutdown_requested(&mut shutdown) => {
            tracing::info!(%peer, session = what, "streaming session ended by server shutdown");
            Some(close_frame(CloseCode::Away, "server shutting down"))
        }
    };
    // The work (backend calls, their pipes) is dropped by now. Queue the close frame (the
    // queue may be full of output a stalled client does not read: all bounded below).
    let send_close = async move {
        if let Some(frame) = close
            && !writer_done
        {
            let _ = queue.send(Message::Close(Some(frame))).await;
        }
    };
    let drain = async {
        if !writer_done && let Err(error) = (&mut writer).await {
            tracing::debug!(%peer, %error, "websocket close not sent");
        }
    };
    let read_rest = async {
        if !reader_done {
            let end = (&mut reader).await;
            tracing::debug!(%peer, end = ?end, "websocket client side done");
        }
    };
    let finish = async {
        tokio::join!(send_close, drain, read_rest);
    };
    if tokio::time::timeout(CLOSE_WAIT, finish).await.is_err() {
        tracing::debug!(%peer, session = what, "websocket close handshake did not finish in time");
    }
}
