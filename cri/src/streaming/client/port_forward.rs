//! The client side of port forwarding, as client-go's `portforward.go` does it: per forwarded
//! connection, open an `error` stream (and end this side of it at once: the client never
//! writes there) and a `data` stream, both with `port` and a fresh `requestid`. Over SPDY, or
//! over SPDY tunnelled in a WebSocket (`SPDY/3.1+portforward.k8s.io`, client-go's
//! `tunneling_dialer.go`).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::super::protocol::{
    PORT, PORT_FORWARD_PROTOCOL, PORT_FORWARD_TUNNEL_PROTOCOL, REQUEST_ID, STREAM_TYPE,
    STREAM_TYPE_DATA, STREAM_TYPE_ERROR,
};
use super::super::spdy::{Session, SessionHandle, Stream, StreamReader};
use super::super::websocket::{MAX_TUNNEL_MESSAGE, spawn_tunnel};
use super::{ClientError, connect_websocket, read_to_end, stream_headers, upgrade};

/// A port-forward session: any number of connections, to any ports of the pod.
pub struct PortForwardSession {
    session: SessionHandle,
    next_request_id: AtomicU64,
}

impl PortForwardSession {
    /// Connects to a port-forward URL.
    pub async fn connect(url: &str) -> Result<PortForwardSession, ClientError> {
        let upgraded = upgrade(url, &[PORT_FORWARD_PROTOCOL]).await?;
        drop(upgraded.incoming);
        Ok(PortForwardSession {
            session: upgraded.session,
            next_request_id: AtomicU64::new(0),
        })
    }

    /// Connects to a port-forward URL over WebSocket, as crictl's `--transport websocket`:
    /// offer `SPDY/3.1+portforward.k8s.io` and run the SPDY client inside binary messages.
    pub async fn connect_websocket(url: &str) -> Result<PortForwardSession, ClientError> {
        let (ws, _) =
            connect_websocket(url, &[PORT_FORWARD_TUNNEL_PROTOCOL], MAX_TUNNEL_MESSAGE).await?;
        let (session, incoming) = Session::client(spawn_tunnel(ws));
        drop(incoming);
        Ok(PortForwardSession {
            session,
            next_request_id: AtomicU64::new(0),
        })
    }

    /// The SPDY session.
    pub fn session(&self) -> &SessionHandle {
        &self.session
    }

    /// Opens a connection to `port` in the pod.
    pub async fn open(&self, port: u16) -> Result<ForwardedConnection, ClientError> {
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let (port_text, id_text) = (port.to_string(), request_id.to_string());
        let open = |streamtype: &'static str| {
            let headers = stream_headers(&[
                (STREAM_TYPE, streamtype),
                (PORT, &port_text),
                (REQUEST_ID, &id_text),
            ]);
            let session = self.session.clone();
            async move {
                session
                    .open_stream(headers)
                    .await
                    .map_err(|source| ClientError::OpenStream {
                        streamtype: streamtype.to_string(),
                        source,
                    })
            }
        };
        let (error, mut error_writer) = open(STREAM_TYPE_ERROR).await?.split();
        let _ = error_writer.finish().await;
        let data = open(STREAM_TYPE_DATA).await?;
        Ok(ForwardedConnection {
            request_id,
            data,
            error,
        })
    }

    /// Closes the session (GOAWAY): every connection ends.
    pub fn close(&self) {
        self.session.close();
    }
}

/// One forwarded connection: read and write it like a socket; shutting down the write side
/// sends FIN (the pod's side reads end of file).
pub struct ForwardedConnection {
    request_id: u64,
    data: Stream,
    error: StreamReader,
}

impl ForwardedConnection {
    /// The request id that pairs its streams.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// Ends the connection and returns what the server wrote on its error stream, if anything
    /// (`None`: no error).
    pub async fn finish(mut self) -> Option<String> {
        drop(self.data);
        let message = read_to_end(Some(&mut self.error)).await;
        (!message.is_empty()).then(|| String::from_utf8_lossy(&message).into_owned())
    }

    /// The data stream and the error stream's reader, to use apart.
    pub fn into_parts(self) -> (Stream, StreamReader) {
        (self.data, self.error)
    }
}

impl AsyncRead for ForwardedConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.data).poll_read(cx, buf)
    }
}

impl AsyncWrite for ForwardedConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.data).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.data).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.data).poll_shutdown(cx)
    }
}
