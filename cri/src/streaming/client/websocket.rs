//! The client's WebSocket mode, as crictl 1.32 (client-go) speaks it with `--transport
//! websocket`: a GET with `Upgrade: websocket` offering subprotocols in
//! `Sec-WebSocket-Protocol`; exec and attach on the `channel.k8s.io` channels (crictl offers
//! `v5.channel.k8s.io` only), port-forward as SPDY tunnelled in binary messages
//! ([`PortForwardSession::connect_websocket`](super::PortForwardSession::connect_websocket)).

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use http::HeaderValue;
use http::header::SEC_WEBSOCKET_PROTOCOL;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::super::backend::TerminalSize;
use super::super::protocol::{
    CHANNEL_ERROR, CHANNEL_RESIZE, CHANNEL_STDERR, CHANNEL_STDIN, CHANNEL_STDOUT, ChannelProtocol,
    HEADER_ACCEPTED_PROTOCOL_VERSIONS,
};
use super::super::websocket::{self, MAX_CHANNEL_MESSAGE};
use super::connect::{self, Connection};
use super::remote_command::decode_status;
use super::{ClientError, Output};

/// A connection upgraded to WebSocket.
pub type WebSocket = WebSocketStream<Box<dyn Connection>>;

/// Connects to `url` and upgrades to WebSocket offering `protocols` (none: no header); returns
/// the socket and the subprotocol the server chose ("" for none). Messages up to
/// `max_message` bytes are read.
pub async fn connect_websocket(
    url: &str,
    protocols: &[&str],
    max_message: usize,
) -> Result<(WebSocket, String), ClientError> {
    let target = connect::target(url)?;
    let io = connect::connect(&target).await?;
    let (authority, path) = (target.authority, target.path);
    let invalid = |reason| ClientError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let mut request = format!("ws://{authority}{path}")
        .into_client_request()
        .map_err(|_| invalid("not a valid websocket url"))?;
    if !protocols.is_empty() {
        let offered = HeaderValue::from_str(&protocols.join(", "))
            .map_err(|_| invalid("subprotocols are not a valid header"))?;
        request
            .headers_mut()
            .insert(SEC_WEBSOCKET_PROTOCOL, offered);
    }
    let config = websocket::config(max_message);
    let (ws, response) =
        match tokio_tungstenite::client_async_with_config(request, io, Some(config)).await {
            Ok(connected) => connected,
            Err(WsError::Http(response)) => {
                let accepted = response
                    .headers()
                    .get_all(HEADER_ACCEPTED_PROTOCOL_VERSIONS)
                    .iter()
                    .filter_map(|value| value.to_str().ok().map(str::to_string))
                    .collect();
                let body = response
                    .body()
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                return Err(ClientError::Refused {
                    status: response.status().as_u16(),
                    body: body.trim_end().to_string(),
                    accepted,
                });
            }
            Err(source) => return Err(ClientError::WebSocket(source)),
        };
    let chosen = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let expected = match protocols {
        [] => chosen.is_empty(),
        _ => protocols.contains(&chosen.as_str()),
    };
    if !expected {
        return Err(ClientError::UnexpectedProtocol { chosen });
    }
    Ok((ws, chosen))
}

/// An exec or attach session over WebSocket.
pub struct WebSocketCommandSession {
    protocol: ChannelProtocol,
    sink: SplitSink<WebSocket, Message>,
    stream: SplitStream<WebSocket>,
}

impl WebSocketCommandSession {
    /// Connects to an exec or attach URL offering `v5.channel.k8s.io`, as crictl does. The
    /// server opens the channels the CRI request asked for; the client reads them all.
    pub async fn connect(url: &str) -> Result<WebSocketCommandSession, ClientError> {
        WebSocketCommandSession::connect_with(url, &[ChannelProtocol::V5]).await
    }

    /// Connects offering `protocols` in that order ([`ChannelProtocol::Unnamed`] alone: no
    /// `Sec-WebSocket-Protocol` header).
    pub async fn connect_with(
        url: &str,
        protocols: &[ChannelProtocol],
    ) -> Result<WebSocketCommandSession, ClientError> {
        let names: Vec<&str> = protocols
            .iter()
            .map(|p| p.name())
            .filter(|name| !name.is_empty())
            .collect();
        let (ws, chosen) = connect_websocket(url, &names, MAX_CHANNEL_MESSAGE).await?;
        let protocol = match chosen.as_str() {
            "" => ChannelProtocol::Unnamed,
            name => ChannelProtocol::from_name(name).ok_or(ClientError::UnexpectedProtocol {
                chosen: chosen.clone(),
            })?,
        };
        let (sink, stream) = ws.split();
        Ok(WebSocketCommandSession {
            protocol,
            sink,
            stream,
        })
    }

    /// The protocol the server chose.
    pub fn protocol(&self) -> ChannelProtocol {
        self.protocol
    }

    /// Sends `data` on stdin.
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send(websocket::frame::encode(self.protocol, CHANNEL_STDIN, data))
            .await
    }

    /// Ends stdin: v5's close signal. Before v5 a client cannot end stdin alone: no-op.
    pub async fn close_stdin(&mut self) -> Result<(), ClientError> {
        if !self.protocol.supports_close() {
            return Ok(());
        }
        self.send(websocket::frame::encode_close(CHANNEL_STDIN))
            .await
    }

    /// Sends a terminal size on the resize channel, as client-go's JSON encoder writes it.
    pub async fn resize(&mut self, size: TerminalSize) -> Result<(), ClientError> {
        let mut json = serde_json::to_vec(&size).unwrap_or_default();
        json.push(b'\n');
        self.send(websocket::frame::encode(
            self.protocol,
            CHANNEL_RESIZE,
            &json,
        ))
        .await
    }

    /// Sends any message (tests use it for garbage).
    pub async fn send(&mut self, message: Message) -> Result<(), ClientError> {
        self.sink
            .send(message)
            .await
            .map_err(ClientError::WebSocket)
    }

    /// Reads every channel until the server closes the connection, then decodes the status.
    pub async fn finish(mut self) -> Result<Output, ClientError> {
        let (mut stdout, mut stderr, mut error) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(message) = self.stream.next().await {
            let payload = match message {
                Ok(Message::Binary(data)) => data,
                Ok(Message::Text(text)) => text.into(),
                Ok(_) => continue,
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => break,
                Err(source) => return Err(ClientError::WebSocket(source)),
            };
            let Ok(websocket::frame::Inbound::Data { channel, data }) =
                websocket::frame::decode(self.protocol, &payload)
            else {
                continue;
            };
            match channel {
                CHANNEL_STDOUT => stdout.extend_from_slice(&data),
                CHANNEL_STDERR => stderr.extend_from_slice(&data),
                CHANNEL_ERROR => error.extend_from_slice(&data),
                _ => {}
            }
        }
        let completion = decode_status(&error)?;
        Ok(Output {
            stdout,
            stderr,
            error,
            completion,
        })
    }
}
