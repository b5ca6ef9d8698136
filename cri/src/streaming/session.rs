//! One upgraded connection: start the SPDY session, run the exec, attach or port-forward
//! protocol on it, and close it however that ends (done, client gone, idle, server shutdown).
//! WebSocket connections go to `websocket/` (which comes back here for the SPDY tunnelled in
//! a port-forward WebSocket).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

use super::backend::StreamingBackend;
use super::http::Plan;
use super::spdy::{self, Session};
use super::{port_forward, remote_command, websocket};

/// How long a closing session may take to end after its GOAWAY (the session's own writer
/// gives up after 5 s).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What a session needs from the server.
#[derive(Clone)]
pub(crate) struct SessionContext {
    pub(crate) backend: Arc<dyn StreamingBackend>,
    pub(crate) creation_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) peer: SocketAddr,
}

/// Runs `plan` on the upgraded connection `io` until it ends.
pub(crate) async fn run_plan<T>(context: SessionContext, io: T, plan: Plan)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    match plan {
        Plan::WebSocket(plan) => websocket::serve(context, io, plan).await,
        plan => run_spdy(context, io, plan).await,
    }
}

/// Runs a SPDY `plan` on `io` until it ends, then closes the session and waits (boundedly)
/// for its task to finish.
pub(crate) async fn run_spdy<T>(context: SessionContext, io: T, plan: Plan)
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let config = spdy::Config {
        idle_timeout: context.idle_timeout,
        ..spdy::Config::default()
    };
    let (handle, incoming) = Session::server_with_config(io, config);
    let kind = plan.kind();
    let peer = context.peer;
    tracing::debug!(%peer, endpoint = kind, "streaming session started");
    let mut shutdown = context.shutdown.clone();
    let work = async {
        match plan {
            Plan::Exec(target, protocol) => {
                let command = remote_command::Command::Exec(target);
                remote_command::serve(&context, &handle, incoming, command, protocol).await;
            }
            Plan::Attach(target, protocol) => {
                let command = remote_command::Command::Attach(target);
                remote_command::serve(&context, &handle, incoming, command, protocol).await;
            }
            Plan::PortForward(target) => {
                port_forward::serve(&context, incoming, target).await;
            }
            Plan::WebSocket(_) => {
                tracing::error!(%peer, "a websocket plan reached the spdy session");
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = super::shutdown_requested(&mut shutdown) => {
            tracing::info!(%peer, endpoint = kind, "streaming session ended by server shutdown");
        }
    }
    handle.close();
    match tokio::time::timeout(CLOSE_WAIT, handle.closed()).await {
        Ok(Ok(())) => tracing::debug!(%peer, endpoint = kind, "streaming session closed"),
        Ok(Err(error)) => {
            tracing::debug!(%peer, endpoint = kind, %error, "streaming session closed with an error");
        }
        Err(_) => tracing::warn!(%peer, endpoint = kind, "streaming session did not close in time"),
    }
}
