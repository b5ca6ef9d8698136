//! Port forwarding over SPDY, as kubelet's streaming library serves it
//! (`portforward/httpstream.go`):
//!
//! - one session carries any number of forwarded connections; for each, the client opens an
//!   `error` stream and a `data` stream, both with headers `port` and `requestid`;
//! - a stream without a valid `port` (1-65535) or with a `streamtype` other than `error` and
//!   `data` is rejected (reset);
//! - streams pair by `requestid`; without one (clients before 1.6), the id is taken from the
//!   stream id: an error stream's own id, a data stream's id minus 2;
//! - a pair not complete within the creation timeout gets `(conn=.., request=..) timed out
//!   waiting for streams` on its error stream; a second stream of a type the pair already has
//!   gets `error processing stream for request ..: .. stream already assigned`;
//! - a complete pair runs the backend on the data stream; its error is written on the error
//!   stream as `error forwarding port P to pod SANDBOX, uid : ERROR`; both streams are closed
//!   when it is done.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::backend::{PortForwardTarget, StreamingBackend, error_chain};
use super::protocol::{PORT, REQUEST_ID, STREAM_TYPE, STREAM_TYPE_DATA, STREAM_TYPE_ERROR};
use super::session::SessionContext;
use super::spdy::{Incoming, RstStatus, Stream, StreamWriter};

/// A connection's streams, while its pair is not complete.
struct Pair {
    deadline: Instant,
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves one port-forward session until the client closes it.
pub(crate) async fn serve(
    context: &SessionContext,
    mut incoming: Incoming,
    target: PortForwardTarget,
) {
    let peer = context.peer;
    let sandbox = Arc::<str>::from(target.sandbox_id.as_str());
    tracing::info!(%peer, sandbox = %sandbox, "port-forward session ready");
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let next_deadline = pairs.values().map(|pair| pair.deadline).min();
        let expiry = async {
            match next_deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            accepted = incoming.accept() => {
                let Some(stream) = accepted else { break };
                let Some((request_id, port, complete)) =
                    add_stream(&mut pairs, stream, context, peer).await
                else {
                    continue;
                };
                if let Some(pair) = complete {
                    let backend = context.backend.clone();
                    let sandbox = sandbox.clone();
                    forwards.spawn(forward(backend, sandbox, request_id, port, pair));
                }
            }
            _ = expiry => expire(&mut pairs, peer).await,
            Some(joined) = forwards.join_next(), if !forwards.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "port-forward task failed");
                }
            }
        }
    }
    tracing::info!(
        %peer,
        sandbox = %sandbox,
        open = forwards.len(),
        "port-forward session ended"
    );
    // Dropping `forwards` cancels the connections still open: their streams are gone.
}

/// Checks a new stream and files it with its pair. Returns the request id, the port and, once
/// both streams are there, the pair (error, data).
async fn add_stream(
    pairs: &mut HashMap<String, Pair>,
    mut stream: Stream,
    context: &SessionContext,
    peer: std::net::SocketAddr,
) -> Option<(String, u16, Option<(Stream, Stream)>)> {
    let (port, kind) = match check_headers(&stream) {
        Ok(checked) => checked,
        Err(why) => {
            tracing::warn!(%peer, stream_id = stream.id(), reason = %why, "port-forward stream rejected");
            let _ = stream.reset(RstStatus::REFUSED_STREAM).await;
            return None;
        }
    };
    let request_id = match stream.headers().get(REQUEST_ID) {
        Some(id) if !id.is_empty() => id.to_string(),
        // Old clients: consecutive odd ids, the error stream first.
        _ if kind == STREAM_TYPE_ERROR => stream.id().to_string(),
        _ => stream.id().saturating_sub(2).to_string(),
    };
    tracing::debug!(%peer, request = %request_id, streamtype = kind, port, "port-forward stream");
    let pair = pairs.entry(request_id.clone()).or_insert_with(|| Pair {
        deadline: Instant::now() + context.creation_timeout,
        error: None,
        data: None,
    });
    let slot = if kind == STREAM_TYPE_ERROR {
        &mut pair.error
    } else {
        &mut pair.data
    };
    if slot.is_some() {
        let message = format!(
            "error processing stream for request {request_id}: {kind} stream already assigned"
        );
        tracing::warn!(%peer, request = %request_id, "{message}");
        if let Some(error) = pair.error.as_mut() {
            let _ = error.send(Bytes::from(message)).await;
        }
        let _ = stream.reset(RstStatus::REFUSED_STREAM).await;
        return None;
    }
    *slot = Some(stream);
    if pair.error.is_none() || pair.data.is_none() {
        return Some((request_id, port, None));
    }
    let pair = pairs.remove(&request_id)?;
    let complete = pair.error.zip(pair.data);
    Some((request_id, port, complete))
}

/// The port and stream type of a stream, or why it is refused (kubelet's messages).
fn check_headers(stream: &Stream) -> Result<(u16, &'static str), String> {
    let headers = stream.headers();
    let port = match headers.get(PORT) {
        None | Some("") => return Err(format!("{PORT:?} header is required")),
        Some(text) => match text.parse::<u16>() {
            Ok(0) => return Err(format!("port {text:?} must be > 0")),
            Ok(port) => port,
            Err(error) => return Err(format!("unable to parse {text:?} as a port: {error}")),
        },
    };
    match headers.get(STREAM_TYPE) {
        Some(STREAM_TYPE_ERROR) => Ok((port, STREAM_TYPE_ERROR)),
        Some(STREAM_TYPE_DATA) => Ok((port, STREAM_TYPE_DATA)),
        None | Some("") => Err(format!("{STREAM_TYPE:?} header is required")),
        Some(other) => Err(format!("invalid stream type {other:?}")),
    }
}

/// Tells the pairs whose time is up, and drops them.
async fn expire(pairs: &mut HashMap<String, Pair>, peer: std::net::SocketAddr) {
    let now = Instant::now();
    let expired: Vec<String> = pairs
        .iter()
        .filter(|(_, pair)| pair.deadline <= now)
        .map(|(id, _)| id.clone())
        .collect();
    for request_id in expired {
        let Some(pair) = pairs.remove(&request_id) else {
            continue;
        };
        let message = format!("(conn={peer}, request={request_id}) timed out waiting for streams");
        tracing::warn!(%peer, request = %request_id, "port-forward pair timed out waiting for streams");
        if let Some(error) = pair.error {
            let (_, mut writer) = error.split();
            let _ = writer.send(Bytes::from(message)).await;
            let _ = writer.finish().await;
        }
        if let Some(mut data) = pair.data {
            let _ = data.reset(RstStatus::CANCEL).await;
        }
    }
}

/// Runs one forwarded connection; reports the backend's error on the error stream.
async fn forward(
    backend: Arc<dyn StreamingBackend>,
    sandbox: Arc<str>,
    request_id: String,
    port: u16,
    (error, data): (Stream, Stream),
) {
    let (_, mut error_writer) = error.split();
    tracing::debug!(sandbox = %sandbox, request = %request_id, port, "forwarding port");
    let result = backend.port_forward(&sandbox, port, Box::new(data)).await;
    match result {
        Ok(()) => {
            tracing::debug!(sandbox = %sandbox, request = %request_id, port, "port-forward connection done");
        }
        Err(error) => {
            let error = error_chain(&error);
            tracing::warn!(sandbox = %sandbox, request = %request_id, port, %error, "port forwarding failed");
            let message = format!("error forwarding port {port} to pod {sandbox}, uid : {error}");
            report(&mut error_writer, message).await;
        }
    }
    let _ = error_writer.finish().await;
}

async fn report(writer: &mut StreamWriter, message: String) {
    if let Err(error) = writer.send(Bytes::from(message)).await {
        tracing::debug!(%error, "write on the port-forward error stream");
    }
}
