//! A client for streaming URLs, as crictl's (client-go's SPDY executor) behaves: connect over
//! TCP, upgrade with `Connection: Upgrade`, `Upgrade: SPDY/3.1` and one
//! `X-Stream-Protocol-Version` per protocol offered, then run the SPDY client session. Or,
//! as crictl's `--transport websocket`, upgrade to WebSocket (`websocket.rs`).
//!
//! - [`RemoteCommandSession`]: exec and attach (open the channel streams, write stdin, read
//!   stdout and stderr, send resizes, read the status into an exit code);
//! - [`WebSocketCommandSession`]: the same over WebSocket channels;
//! - [`PortForwardSession`]: forwarded connections to ports of the pod, over SPDY or SPDY
//!   tunnelled in WebSocket.
//!
//! Used by node tests and benchmarks; `http://` and `https://` (without certificate checks,
//! as crictl by default).

mod connect;
mod port_forward;
mod remote_command;
mod websocket;

use std::io;
use std::pin::Pin;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;

use super::protocol::{HEADER_ACCEPTED_PROTOCOL_VERSIONS, HEADER_PROTOCOL_VERSION, UPGRADE_SPDY};
use super::spdy::{self, Incoming, Session, SessionHandle};

pub use port_forward::{ForwardedConnection, PortForwardSession};
pub use remote_command::{Completion, Output, RemoteCommandSession, StreamOptions};
pub use websocket::{WebSocket, WebSocketCommandSession, connect_websocket};

/// The most bytes of a refusal's body kept for the error.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Why a streaming client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid streaming url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: &'static str },
    #[error("connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("http request to {url}")]
    Http {
        url: String,
        #[source]
        source: hyper::Error,
    },
    /// The server answered something other than `101 Switching Protocols`.
    #[error("upgrade refused with status {status}: {body}")]
    Refused {
        status: u16,
        body: String,
        /// `X-Accepted-Stream-Protocol-Versions` of a 403.
        accepted: Vec<String>,
    },
    #[error("server chose protocol {chosen:?}, which was not offered")]
    UnexpectedProtocol { chosen: String },
    #[error("upgrade the connection to spdy")]
    Upgrade(#[source] hyper::Error),
    #[error("open the {streamtype} stream")]
    OpenStream {
        streamtype: String,
        #[source]
        source: spdy::Error,
    },
    #[error("write to the {streamtype} stream")]
    Write {
        streamtype: &'static str,
        #[source]
        source: spdy::Error,
    },
    #[error("the {streamtype} stream was not requested or was taken")]
    NoStream { streamtype: &'static str },
    #[error("error stream holds no valid status: {text:?}")]
    BadStatus { text: String },
    #[error("websocket")]
    WebSocket(#[source] tokio_tungstenite::tungstenite::Error),
}

/// A connection upgraded to SPDY, with the protocol the server chose.
pub struct Upgraded {
    pub session: SessionHandle,
    pub incoming: Incoming,
    pub protocol: String,
}

/// Connects to `url` (`http(s)://host:port/path`) and upgrades to SPDY offering `protocols` (in
/// order of preference).
pub async fn upgrade(url: &str, protocols: &[&str]) -> Result<Upgraded, ClientError> {
    let invalid = |reason| ClientError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let target = connect::target(url)?;
    let io = connect::connect(&target).await?;
    let (authority, path) = (target.authority, target.path);
    let http_error = |source| ClientError::Http {
        url: url.to_string(),
        source,
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(io))
            .await
            .map_err(http_error)?;
    // Drives the connection until it is upgraded (or closed); ends by itself.
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "streaming client connection ended with an error");
        }
    });
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(HOST, authority)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, UPGRADE_SPDY);
    for protocol in protocols {
        request = request.header(HEADER_PROTOCOL_VERSION, *protocol);
    }
    let request = request
        .body(String::new())
        .map_err(|_| invalid("not a valid request target"))?;
    let response = sender.send_request(request).await.map_err(http_error)?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status().as_u16();
        let accepted = response
            .headers()
            .get_all(HEADER_ACCEPTED_PROTOCOL_VERSIONS)
            .iter()
            .filter_map(|value| value.to_str().ok().map(str::to_string))
            .collect();
        let body = read_body(response.into_body()).await;
        return Err(ClientError::Refused {
            status,
            body: body.trim_end().to_string(),
            accepted,
        });
    }
    let chosen = response
        .headers()
        .get(HEADER_PROTOCOL_VERSION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !protocols.contains(&chosen.as_str()) {
        return Err(ClientError::UnexpectedProtocol { chosen });
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(ClientError::Upgrade)?;
    let (session, incoming) = Session::client(TokioIo::new(upgraded));
    Ok(Upgraded {
        session,
        incoming,
        protocol: chosen,
    })
}

/// The body of a refusal, as text (at most [`MAX_ERROR_BODY`] bytes).
async fn read_body(mut body: hyper::body::Incoming) -> String {
    use http_body::Body as _;
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let room = MAX_ERROR_BODY.saturating_sub(bytes.len());
            bytes.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Reads `reader` to its end.
async fn read_to_end(reader: Option<&mut spdy::StreamReader>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(reader) = reader {
        while let Some(chunk) = reader.recv().await {
            out.extend_from_slice(&chunk);
        }
    }
    out
}

/// Headers of a stream to open.
fn stream_headers(pairs: &[(&str, &str)]) -> spdy::Headers {
    let mut headers = spdy::Headers::new();
    for (name, value) in pairs {
        headers.push(*name, *value);
    }
    headers
}

/// Sends `data` on `writer`, naming the stream in the error.
async fn send(
    writer: &mut spdy::StreamWriter,
    streamtype: &'static str,
    data: Bytes,
) -> Result<(), ClientError> {
    writer
        .send(data)
        .await
        .map_err(|source| ClientError::Write { streamtype, source })
}
