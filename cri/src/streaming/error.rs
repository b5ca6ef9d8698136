//! What can go wrong in the streaming server, outside a session (sessions report their errors
//! to the client, on the error stream).

use std::io;
use std::net::SocketAddr;

/// Errors of [`super::StreamingServer`] and its config.
///
/// For the gRPC mapping: the request checks (`MissingContainerId`, `MissingSandboxId`,
/// `TtyWithStderr`, `NoStreams`) are InvalidArgument, `TooManyInFlight` is ResourceExhausted (as
/// kubelet's streaming library answers), the rest Internal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A config value is out of range.
    #[error("{0}")]
    InvalidConfig(String),
    /// An Exec or Attach request names no container.
    #[error("missing required container_id")]
    MissingContainerId,
    /// A PortForward request names no pod sandbox.
    #[error("missing required pod_sandbox_id")]
    MissingSandboxId,
    /// A terminal has one output stream: stderr cannot be asked for besides it.
    #[error("tty and stderr cannot both be true")]
    TtyWithStderr,
    /// An Exec or Attach request asks for none of stdin, stdout and stderr.
    #[error("one of stdin, stdout, or stderr must be set")]
    NoStreams,
    /// Too many URLs were handed out and not used yet.
    #[error("too many in-flight streaming requests (at most {max})")]
    TooManyInFlight { max: usize },
    /// The system's random source failed.
    #[error("generate a streaming token: {0}")]
    Random(getrandom::Error),
    /// The listening socket could not be bound.
    #[error("bind the streaming server on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The bound socket's address could not be read.
    #[error("read the streaming server's local address")]
    LocalAddress(#[source] io::Error),
    /// The TLS certificate could not be read, made or used.
    #[error("streaming TLS: {0}")]
    Tls(String),
}
