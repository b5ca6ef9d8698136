//! The CRI streaming server (Exec, Attach and PortForward for kubelet and crictl) and a client
//! for the project's own tests and benchmarks.
//!
//! The CRI `Exec`, `Attach` and `PortForward` RPCs do not stream themselves: they return a URL
//! on this server ([`StreamingServer::exec_url`] and siblings), holding a single-use token. The
//! client then connects there, upgrades the HTTP/1.1 request to SPDY/3.1 (kubelet, crictl by
//! default) or to WebSocket (crictl `--transport websocket`) and speaks one of Kubernetes'
//! streaming protocols over it; the server hands plain byte streams to a
//! [`StreamingBackend`], the runtime's side, the same for both transports.
//!
//! - `config`: the `[streaming]` config section.
//! - `tokens`: the single-use, expiring, bounded tokens.
//! - `http` and `server`: the listener, routing, protocol negotiation and the upgrade; the
//!   server also keeps the running sessions by container or pod sandbox, to end them when
//!   it goes ([`StreamingServer::close_sessions`]).
//! - `tls`: HTTPS with `[streaming] tls` (a self-signed certificate made at start, or PEM
//!   files).
//! - `session`, `remote_command`, `port_forward`: what runs on an upgraded SPDY connection.
//! - `websocket`: the WebSocket side: handshake and `Sec-WebSocket-Protocol` negotiation,
//!   exec and attach on the `channel.k8s.io` channels (v1, v4, v5, binary and base64), and
//!   port-forward as SPDY tunnelled in binary messages (`SPDY/3.1+portforward.k8s.io`), which
//!   runs the SPDY `port_forward` unchanged, or in kubelet's channel pairs (`v4.channel.k8s.io`).
//! - [`protocol`]: the wire vocabulary both sides share.
//! - [`client`]: connects to a streaming URL the way crictl does, over either transport.
//! - [`spdy`]: the SPDY/3.1 session layer.
//!
//! Behaviour follows kubelet's streaming library (`k8s.io/kubelet/pkg/cri/streaming`, now
//! `k8s.io/cri-streaming`); each module says which file it follows and where it deviates.

pub mod client;
pub mod protocol;
pub mod spdy;

mod backend;
mod config;
mod error;
mod http;
mod port_forward;
mod remote_command;
mod server;
mod session;
mod tls;
mod tokens;
mod websocket;

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod port_forward_tests;
#[cfg(test)]
mod remote_command_tests;
#[cfg(test)]
mod test_backend;
#[cfg(test)]
mod websocket_tests;

use std::sync::{Mutex, MutexGuard, PoisonError};

pub use backend::{
    AsyncDuplex, AttachTarget, BackendError, BackendFuture, DuplexIo, ExecTarget, ExitStatus,
    PortForwardTarget, RemoteIo, RemoteReader, RemoteWriter, StreamingBackend, TerminalSize,
};
pub use config::Config;
pub use error::Error;
pub use server::StreamingServer;

/// Resolves once `shutdown` is true (never, if its sender is gone while false).
async fn shutdown_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    if shutdown.wait_for(|down| *down).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Locks a mutex, ignoring poisoning: every critical section leaves the data consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
