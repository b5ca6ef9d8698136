//! The WebSocket (RFC 6455) side of the streaming server: the same `/exec`, `/attach` and
//! `/portforward` URLs, chosen by `Upgrade: websocket`, handing the backend the same
//! [`RemoteIo`](super::RemoteIo) and [`DuplexIo`](super::DuplexIo) as SPDY does.
//!
//! - `handshake`: the opening handshake and subprotocol negotiation (`Sec-WebSocket-Protocol`).
//! - `frame`: the `channel.k8s.io` framing, binary and base64, and v5's close signal.
//! - `remote_command`: exec and attach on channels 0-4, the status on channel 3.
//! - `tunnel`: port-forward, SPDY carried in binary messages (`SPDY/3.1+portforward.k8s.io`);
//!   the SPDY session and `port_forward.rs` run unchanged on the other end of a pipe.
//! - `port_forward`: port-forward in kubelet's older channel-pairs style (`v4.channel.k8s.io`).
//! - `channels`: the writer, pumps and session ending shared by the channel protocols.
//!
//! The framing itself (masking, fragments, control frames, UTF-8 of text messages, the close
//! handshake, pongs to the client's pings) is `tokio-tungstenite`'s, on the connection hyper
//! hands over after the 101. Limits: messages of at most [`MAX_CHANNEL_MESSAGE`] (exec,
//! attach) or [`MAX_TUNNEL_MESSAGE`] (a SPDY frame can be 16 MiB) are read; a connection that
//! breaks the framing is closed (with a close frame saying why, when it can still be sent).
//!
//! Timeouts: the `[streaming]` idle timeout closes an exec or attach connection on which no
//! frame moved either way (client pings count, as SPDY frames do for SPDY sessions); the
//! creation timeout has nothing to wait for there (the channels exist from the upgrade on)
//! and applies, with the idle timeout, to the SPDY session inside a port-forward tunnel.

mod channels;
pub(crate) mod frame;
pub(crate) mod handshake;
mod port_forward;
mod remote_command;
mod tunnel;

pub(crate) use tunnel::spawn_tunnel;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::backend::{AttachTarget, ExecTarget, PortForwardTarget};
use super::protocol::ChannelProtocol;
use super::session::SessionContext;
use super::tokens::RequestKind;

/// The largest exec/attach message read (client-go writes at most 32 KiB and a channel byte).
pub const MAX_CHANNEL_MESSAGE: usize = 1024 * 1024;
/// The largest tunnel message read: a whole SPDY frame (24-bit length) and its header.
pub const MAX_TUNNEL_MESSAGE: usize = (16 << 20) + 8;
/// How long a closing connection waits for the other side's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What to run on an upgraded WebSocket connection.
#[derive(Debug)]
pub(crate) enum WebSocketPlan {
    Exec(ExecTarget, ChannelProtocol),
    Attach(AttachTarget, ChannelProtocol),
    /// SPDY tunnelled in binary messages.
    PortForward(PortForwardTarget),
    /// kubelet's channel pairs (data `2i`, error `2i+1` per port of the request).
    PortForwardChannels(PortForwardTarget, ChannelProtocol),
}

impl WebSocketPlan {
    /// The container (exec, attach) or pod sandbox (port-forward) the session serves.
    pub(crate) fn target_id(&self) -> &str {
        match self {
            WebSocketPlan::Exec(target, _) => &target.container_id,
            WebSocketPlan::Attach(target, _) => &target.container_id,
            WebSocketPlan::PortForward(target) | WebSocketPlan::PortForwardChannels(target, _) => {
                &target.sandbox_id
            }
        }
    }

    /// The endpoint, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            WebSocketPlan::Exec(..) => RequestKind::Exec.path(),
            WebSocketPlan::Attach(..) => RequestKind::Attach.path(),
            WebSocketPlan::PortForward(_) | WebSocketPlan::PortForwardChannels(..) => {
                RequestKind::PortForward.path()
            }
        }
    }
}

/// The tungstenite settings for one side of a connection carrying at most `max_message`.
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(64 * 1024)
        .write_buffer_size(0)
        // A slow client blocks the writer (backpressure) instead of growing the buffer.
        .max_write_buffer_size(2 * max_message + 64 * 1024)
}

/// Runs `plan` on the upgraded connection `io` until it ends.
pub(crate) async fn serve<T>(context: SessionContext, io: T, plan: WebSocketPlan)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let peer = context.peer;
    let kind = plan.kind();
    tracing::debug!(%peer, endpoint = kind, transport = "websocket", "streaming session started");
    match plan {
        WebSocketPlan::Exec(target, protocol) => {
            let ws = server_socket(io, MAX_CHANNEL_MESSAGE).await;
            let command = super::remote_command::Command::Exec(target);
            remote_command::serve(&context, ws, command, protocol).await;
        }
        WebSocketPlan::Attach(target, protocol) => {
            let ws = server_socket(io, MAX_CHANNEL_MESSAGE).await;
            let command = super::remote_command::Command::Attach(target);
            remote_command::serve(&context, ws, command, protocol).await;
        }
        WebSocketPlan::PortForward(target) => {
            let ws = server_socket(io, MAX_TUNNEL_MESSAGE).await;
            tunnel::serve(context, ws, target).await;
        }
        WebSocketPlan::PortForwardChannels(target, protocol) => {
            let ws = server_socket(io, MAX_CHANNEL_MESSAGE).await;
            port_forward::serve(&context, ws, target, protocol).await;
        }
    }
    tracing::debug!(%peer, endpoint = kind, transport = "websocket", "streaming session closed");
}

async fn server_socket<T>(io: T, max_message: usize) -> WebSocketStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config(max_message))).await
}

/// When a frame last went either way, for the idle timeout.
#[derive(Clone)]
struct Activity(Arc<std::sync::Mutex<Instant>>);

impl Activity {
    fn new() -> Activity {
        Activity(Arc::new(std::sync::Mutex::new(Instant::now())))
    }

    fn touch(&self) {
        *super::lock(&self.0) = Instant::now();
    }

    /// Resolves once nothing moved for `timeout` (never without one).
    async fn idle(&self, timeout: Option<Duration>) {
        let Some(timeout) = timeout else {
            return std::future::pending().await;
        };
        loop {
            let deadline = *super::lock(&self.0) + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}
