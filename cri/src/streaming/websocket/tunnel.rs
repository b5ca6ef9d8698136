//! Port-forward over WebSocket as crictl 1.32 does it (client-go's `tunneling_dialer.go` and
//! `tunneling_connection.go`): after the upgrade to `SPDY/3.1+portforward.k8s.io`, the
//! connection carries a plain SPDY/3.1 session (no second HTTP upgrade), its bytes cut into
//! binary messages anywhere. The client's own SPDY pings keep it alive.
//!
//! The pump below turns the WebSocket into a byte pipe, and the unchanged SPDY session and
//! `port_forward.rs` run on the pipe's other end, so the backend gets the same `DuplexIo`
//! per forwarded connection. The pipe and one message in flight each way bound the buffering.
//! A text message breaks the tunnel (client-go refuses them too); the client's close frame,
//! or the connection ending, ends the pipe, and the SPDY session's end sends a close frame.

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::super::backend::PortForwardTarget;
use super::super::http::Plan;
use super::super::session::{SessionContext, run_spdy};
use super::CLOSE_WAIT;

/// Bytes buffered in the pipe each way.
const PIPE_BUFFER: usize = 256 * 1024;
/// The most bytes read from the pipe into one message.
const CHUNK: usize = 64 * 1024;

/// Serves a port-forward session tunnelled in `ws` until both ends are done.
pub(super) async fn serve<T>(
    context: SessionContext,
    ws: WebSocketStream<T>,
    target: PortForwardTarget,
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (spdy_end, tunnel_end) = tokio::io::duplex(PIPE_BUFFER);
    let spdy = run_spdy(context, spdy_end, Plan::PortForward(target));
    tokio::join!(spdy, pump(ws, tunnel_end));
}

/// Runs the pump for a client: the returned pipe carries the tunnelled bytes.
pub(crate) fn spawn_tunnel<T>(ws: WebSocketStream<T>) -> DuplexStream
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mine, theirs) = tokio::io::duplex(PIPE_BUFFER);
    tokio::spawn(pump(ws, theirs));
    mine
}

/// Copies binary messages into `pipe` and what `pipe` yields into binary messages, until
/// both directions have ended (the second one gets [`CLOSE_WAIT`] after the first).
pub(crate) async fn pump<T>(ws: WebSocketStream<T>, pipe: DuplexStream)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let (mut from_pipe, mut to_pipe) = tokio::io::split(pipe);
    let inbound = async move {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Binary(data)) => {
                    if to_pipe.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) => break,
                Ok(Message::Text(_)) => {
                    tracing::debug!("text message in a websocket tunnel, closing it");
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "websocket tunnel read ended");
                    break;
                }
            }
        }
        let _ = to_pipe.shutdown().await;
    };
    let outbound = async move {
        let mut buffer = vec![0u8; CHUNK];
        loop {
            match from_pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Err(error) = sink.send(Message::binary(buffer[..n].to_vec())).await {
                        tracing::debug!(%error, "websocket tunnel write failed");
                        return;
                    }
                }
            }
        }
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
    };
    tokio::pin!(inbound, outbound);
    tokio::select! {
        _ = &mut inbound => {
            let _ = tokio::time::timeout(CLOSE_WAIT, outbound).await;
        }
        _ = &mut outbound => {
            let _ = tokio::time::timeout(CLOSE_WAIT, inbound).await;
        }
    }
}
