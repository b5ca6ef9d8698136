//! Port-forward over WebSocket in kubelet's channel-pairs style (`portforward/websocket.go`),
//! for clients that do not tunnel SPDY (subprotocols `v4.channel.k8s.io`,
//! `v4.base64.channel.k8s.io`, or none):
//!
//! - the ports are the CRI request's, in order (kubelet's CRI server builds them from the
//!   request, not from the URL); port `i` has data channel `2i` (both ways) and error channel
//!   `2i+1` (server to client);
//! - first, the server writes the port as two little-endian bytes on both channels of every
//!   port;
//! - each port is one connection to the pod, made at once; its failure is written on its
//!   error channel as `error forwarding port P to pod SANDBOX, uid : ERROR`;
//! - the session ends (a normal close frame) when every port's connection is done, or when
//!   the client goes away. A client cannot half-close a data channel in this protocol.
//!
//! At most 127 ports fit in the channel byte; further ones get no channels.

use futures::StreamExt;
use futures::future::join_all;
use futures::stream::SplitStream;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, WriteHalf};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::super::backend::{PortForwardTarget, error_chain};
use super::super::protocol::ChannelProtocol;
use super::super::session::SessionContext;
use super::Activity;
use super::channels::{
    OUT_QUEUE, PIPE_BUFFER, ReadEnd, next_payload, pump, run_session, write_client,
};
use super::frame::{Inbound, decode, encode};

/// Ports that fit in the channel byte (two channels each).
const MAX_PORTS: usize = 127;

/// Serves a channel-pairs port-forward session until every port is done or the client goes.
pub(super) async fn serve<T>(
    context: &SessionContext,
    ws: WebSocketStream<T>,
    target: PortForwardTarget,
    protocol: ChannelProtocol,
) where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let peer = context.peer;
    let sandbox = target.sandbox_id;
    let mut ports = target.ports;
    if ports.len() > MAX_PORTS {
        tracing::warn!(%peer, sandbox = %sandbox, ports = ports.len(), "too many ports for websocket channels, the rest ignored");
        ports.truncate(MAX_PORTS);
    }
    tracing::info!(
        %peer,
        sandbox = %sandbox,
        transport = "websocket",
        protocol = protocol.name(),
        ports = ?ports,
        "port-forward session ready"
    );
    let (sink, stream) = ws.split();
    let activity = Activity::new();
    let (queue, queued) = mpsc::channel::<Message>(OUT_QUEUE.max(2 * ports.len()));
    let mut writers = Vec::with_capacity(ports.len());
    let mut forwards = Vec::with_capacity(ports.len());
    for (index, &port) in ports.iter().enumerate() {
        let (data, error) = channels_of(index);
        // Kubelet writes the port as Go's uint16 of the int32: the low 16 bits.
        let prefix = (port as u16).to_le_bytes();
        // The queue has room for these: they are the first messages.
        let _ = queue.try_send(encode(protocol, data, &prefix));
        let _ = queue.try_send(encode(protocol, error, &prefix));
        let (backend_end, session_end) = tokio::io::duplex(PIPE_BUFFER);
        let (from_backend, to_backend) = tokio::io::split(session_end);
        writers.push(Some(to_backend));
        let queue = queue.clone();
        let backend = &*context.backend;
        let sandbox = sandbox.as_str();
        forwards.push(async move {
            let forward = async {
                match u16::try_from(port) {
                    Ok(port) if port > 0 => backend
                        .port_forward(sandbox, port, Box::new(backend_end))
                        .await
                        .map_err(|error| error_chain(&error)),
                    _ => Err(format!("invalid port {port}")),
                }
            };
            let (result, ()) =
                tokio::join!(forward, pump(from_backend, data, protocol, queue.clone()));
            match result {
                Ok(()) => tracing::debug!(sandbox, port, "port-forward connection done"),
                Err(error) => {
                    tracing::warn!(sandbox, port, %error, "port forwarding failed");
                    let message =
                        format!("error forwarding port {port} to pod {sandbox}, uid : {error}");
                    let _ = queue
                        .send(encode(protocol, error_channel(index), message.as_bytes()))
                        .await;
                }
            }
        });
    }
    let work = async move {
        join_all(forwards).await;
    };
    let reader = read_client(stream, protocol, writers, activity.clone());
    let writer = write_client(sink, queued, activity.clone());
    run_session(
        context,
        "port-forward",
        queue,
        work,
        reader,
        writer,
        &activity,
    )
    .await;
}

/// The data and error channels of the port at `index`.
fn channels_of(index: usize) -> (u8, u8) {
    // `index` < MAX_PORTS: both fit.
    let data = u8::try_from(index * 2).unwrap_or(u8::MAX - 1);
    (data, data + 1)
}

fn error_channel(index: usize) -> u8 {
    channels_of(index).1
}

/// Reads the client's data messages into the ports' connections until the connection ends.
async fn read_client<T>(
    mut stream: SplitStream<WebSocketStream<T>>,
    protocol: ChannelProtocol,
    mut writers: Vec<Option<WriteHalf<DuplexStream>>>,
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
        let (channel, data) = match decode(protocol, &payload) {
            Ok(Inbound::Data { channel, data }) => (channel, data),
            Ok(_) => continue,
            Err(error) => {
                tracing::debug!(%error, "websocket message skipped");
                continue;
            }
        };
        let index = usize::from(channel / 2);
        let Some(slot) = writers.get_mut(index).filter(|_| channel % 2 == 0) else {
            tracing::trace!(channel, bytes = data.len(), "message dropped");
            continue;
        };
        if let Some(writer) = slot.as_mut()
            && writer.write_all(&data).await.is_err()
        {
            // That connection is done.
            *slot = None;
        }
    }
}
