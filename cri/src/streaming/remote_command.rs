//! Exec and attach over SPDY, as kubelet's streaming library serves them
//! (`remotecommand/httpstream.go`, `exec.go`, `attach.go`):
//!
//! 1. The client opens one stream per channel, `streamtype` = `error`, `stdin`, `stdout`,
//!    `stderr`, `resize`. The server waits, for at most the creation timeout, for `error` plus
//!    the stdio streams the request asked for, plus `resize` with a tty from v3 on. A timeout
//!    ends the session (kubelet only logs it: there is no stream yet to report it on).
//! 2. v1 (`channel.k8s.io`) quirks kept from kubelet 1.0: the error stream is reset as soon as
//!    the streams are there (so v1 clients never see errors) and the server half-closes stdin.
//! 3. The backend runs the command with the streams.
//! 4. Finish as the current library does: reset stdin and resize (input is no longer read),
//!    write the status on the error stream (v4: the JSON status, always; v1-v3: the message,
//!    failures only), close stdout, stderr and error (FIN after their data), then wait for the
//!    client to close the connection (at most 15 minutes) so that output still in flight is
//!    not cut off by an early close.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::backend::{
    AttachTarget, BackendError, ExecTarget, ExitStatus, RemoteIo, StreamingBackend, TerminalSize,
    error_chain,
};
use super::protocol::{
    RemoteCommandProtocol, STREAM_TYPE, STREAM_TYPE_ERROR, STREAM_TYPE_RESIZE, STREAM_TYPE_STDERR,
    STREAM_TYPE_STDIN, STREAM_TYPE_STDOUT, Status,
};
use super::session::SessionContext;
use super::spdy::{Incoming, RstStatus, SessionHandle, Stream, StreamReader, StreamWriter};

/// How long the server waits for the client to close the connection after the status.
const FINISH_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Resize messages waiting for the backend.
pub(super) const RESIZE_QUEUE: usize = 16;
/// The most resize-stream bytes buffered without a complete JSON object.
pub(super) const MAX_RESIZE_PENDING: usize = 4096;

/// What the session runs.
pub(crate) enum Command {
    Exec(ExecTarget),
    Attach(AttachTarget),
}

/// The streams a request asked for.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

impl Command {
    pub(super) fn container_id(&self) -> &str {
        match self {
            Command::Exec(target) => &target.container_id,
            Command::Attach(target) => &target.container_id,
        }
    }

    fn wanted(&self, protocol: RemoteCommandProtocol) -> Wanted {
        let (stdin, stdout, stderr, tty) = match self {
            Command::Exec(t) => (t.stdin, t.stdout, t.stderr, t.tty),
            Command::Attach(t) => (t.stdin, t.stdout, t.stderr, t.tty),
        };
        Wanted {
            stdin,
            stdout,
            stderr,
            resize: tty && protocol.supports_resize(),
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match self {
            Command::Exec(_) => "exec",
            Command::Attach(_) => "attach",
        }
    }
}

/// The streams the client opened.
#[derive(Default)]
struct Channels {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Channels {
    fn complete(&self, wanted: Wanted) -> bool {
        self.error.is_some()
            && (!wanted.stdin || self.stdin.is_some())
            && (!wanted.stdout || self.stdout.is_some())
            && (!wanted.stderr || self.stderr.is_some())
            && (!wanted.resize || self.resize.is_some())
    }

    /// Where a stream of `kind` goes; `None` if it was not asked for.
    fn slot(&mut self, kind: &str, wanted: Wanted) -> Option<&mut Option<Stream>> {
        match kind {
            STREAM_TYPE_ERROR => Some(&mut self.error),
            STREAM_TYPE_STDIN if wanted.stdin => Some(&mut self.stdin),
            STREAM_TYPE_STDOUT if wanted.stdout => Some(&mut self.stdout),
            STREAM_TYPE_STDERR if wanted.stderr => Some(&mut self.stderr),
            STREAM_TYPE_RESIZE if wanted.resize => Some(&mut self.resize),
            _ => None,
        }
    }
}

/// Serves one exec or attach session on `handle` until the command is done and the client has
/// closed the connection (or gave up, or went away).
pub(crate) async fn serve(
    context: &SessionContext,
    handle: &SessionHandle,
    mut incoming: Incoming,
    command: Command,
    protocol: RemoteCommandProtocol,
) {
    let peer = context.peer;
    let container = command.container_id().to_string();
    let wanted = command.wanted(protocol);
    let waited = tokio::time::timeout(
        context.creation_timeout,
        accept_streams(&mut incoming, wanted),
    )
    .await;
    let channels = match waited {
        Ok(Some(channels)) => channels,
        Ok(None) => {
            tracing::debug!(%peer, %container, "client left before opening its streams");
            return;
        }
        Err(_) => {
            tracing::warn!(
                %peer,
                %container,
                timeout_seconds = context.creation_timeout.as_secs(),
                "timed out waiting for client to create streams"
            );
            return;
        }
    };
    // Every stream is there: later ones are refused.
    drop(incoming);
    tracing::info!(
        %peer,
        %container,
        session = command.name(),
        protocol = protocol.name(),
        stdin = wanted.stdin,
        stdout = wanted.stdout,
        stderr = wanted.stderr,
        resize = wanted.resize,
        "streaming session ready"
    );

    let Channels {
        error,
        stdin,
        stdout,
        stderr,
        resize,
    } = channels;
    // The server only writes on the error stream and only reads stdin and resize.
    let mut error = error.map(|stream| stream.split().1);
    let (stdin_reader, mut stdin_writer) = stdin.map(Stream::split).unzip();
    let (resize_reader, resize_writer) = resize.map(Stream::split).unzip();
    if protocol == RemoteCommandProtocol::V1 {
        if let Some(mut writer) = error.take() {
            let _ = writer.reset(RstStatus::CANCEL).await;
        }
        if let Some(writer) = stdin_writer.as_mut() {
            let _ = writer.finish().await;
        }
    }
    let (resize_tx, resize_rx) = match resize_reader {
        Some(_) => {
            let (tx, rx) = mpsc::channel(RESIZE_QUEUE);
            (Some(tx), Some(rx))
        }
        None => (None, None),
    };
    let io = RemoteIo {
        stdin: stdin_reader.map(|reader| Box::new(reader) as _),
        stdout: stdout.map(|stream| Box::new(stream.split().1) as _),
        stderr: stderr.map(|stream| Box::new(stream.split().1) as _),
        resize: resize_rx,
    };

    let outcome = {
        let call = run(&*context.backend, command, io);
        let resizes = forward_resizes(resize_reader, resize_tx);
        tokio::pin!(call, resizes);
        let mut resizes_done = false;
        loop {
            tokio::select! {
                outcome = &mut call => break Some(outcome),
                _ = &mut resizes, if !resizes_done => resizes_done = true,
                _ = handle.closed() => break None,
            }
        }
        // The backend's future (and the stdout and stderr writers it held) is dropped here,
        // which queues their FIN.
    };
    let Some(outcome) = outcome else {
        tracing::info!(%peer, %container, "client went away before the command finished");
        return;
    };
    let status = status_of(&outcome);
    log_outcome(&outcome, &container, peer);

    // Stop input, report, end output.
    for mut writer in stdin_writer.into_iter().chain(resize_writer) {
        let _ = writer.reset(RstStatus::CANCEL).await;
    }
    if let Some(mut writer) = error {
        write_status(&mut writer, protocol, &status).await;
        let _ = writer.finish().await;
    }
    if tokio::time::timeout(FINISH_TIMEOUT, handle.closed())
        .await
        .is_err()
    {
        tracing::info!(%peer, %container, "client did not close the session after the status");
    }
}

/// How the backend call ended.
pub(super) enum Outcome {
    Exited(ExitStatus),
    Detached,
    Failed {
        command: &'static str,
        error: BackendError,
    },
}

pub(super) async fn run(backend: &dyn StreamingBackend, command: Command, io: RemoteIo) -> Outcome {
    match command {
        Command::Exec(target) => match backend.exec(target, io).await {
            Ok(status) => Outcome::Exited(status),
            Err(error) => Outcome::Failed {
                command: "exec",
                error,
            },
        },
        Command::Attach(target) => match backend.attach(target, io).await {
            Ok(()) => Outcome::Detached,
            Err(error) => Outcome::Failed {
                command: "attach",
                error,
            },
        },
    }
}

pub(super) fn status_of(outcome: &Outcome) -> Status {
    match outcome {
        Outcome::Exited(status) if status.success() => Status::success(),
        Outcome::Exited(status) if status.code() > 0 => Status::non_zero_exit(status.code()),
        Outcome::Exited(status) => Status::internal_error(&format!(
            "error executing command in container: invalid exit code {}",
            status.code()
        )),
        Outcome::Detached => Status::success(),
        Outcome::Failed { command, error } => {
            let what = match *command {
                "attach" => "error attaching to container",
                _ => "error executing command in container",
            };
            Status::internal_error(&format!("{what}: {}", error_chain(error)))
        }
    }
}

pub(super) fn log_outcome(outcome: &Outcome, container: &str, peer: std::net::SocketAddr) {
    match outcome {
        Outcome::Exited(status) => {
            tracing::info!(%peer, %container, exit_code = status.code(), "exec finished");
        }
        Outcome::Detached => tracing::info!(%peer, %container, "attach finished"),
        Outcome::Failed { command, error } => tracing::warn!(
            %peer,
            %container,
            session = command,
            error = %error_chain(error),
            "streaming backend failed"
        ),
    }
}

/// Writes `status` as `protocol` wants it: v4 the JSON object; older versions the message, and
/// only for a failure.
async fn write_status(writer: &mut StreamWriter, protocol: RemoteCommandProtocol, status: &Status) {
    let payload = if protocol.has_status() {
        match serde_json::to_vec(status) {
            Ok(json) => json,
            Err(error) => {
                tracing::warn!(%error, "encode the exec status");
                return;
            }
        }
    } else if status.is_success() {
        return;
    } else {
        status.message.clone().into_bytes()
    };
    if let Err(error) = writer.send(Bytes::from(payload)).await {
        tracing::debug!(%error, "write the status on the error stream");
    }
}

/// Takes the client's streams until those `wanted` are there; refuses streams of other types
/// and duplicates. `None` if the session ends first.
async fn accept_streams(incoming: &mut Incoming, wanted: Wanted) -> Option<Channels> {
    let mut channels = Channels::default();
    while !channels.complete(wanted) {
        let mut stream = incoming.accept().await?;
        let kind = stream
            .headers()
            .get(STREAM_TYPE)
            .unwrap_or_default()
            .to_string();
        let refused = match channels.slot(&kind, wanted) {
            Some(slot) if slot.is_none() => {
                *slot = Some(stream);
                continue;
            }
            Some(_) => "duplicate stream refused",
            None => "unexpected stream type refused",
        };
        tracing::warn!(streamtype = %kind, stream_id = stream.id(), "{refused}");
        let _ = stream.reset(RstStatus::REFUSED_STREAM).await;
    }
    Some(channels)
}

/// Parses the resize stream, a sequence of JSON objects such as `{"Width":80,"Height":24}`,
/// into `sizes`. Ends at the end of the stream, at malformed input (as Go's decoder loop
/// does), or when the backend drops its receiver.
async fn forward_resizes(reader: Option<StreamReader>, sizes: Option<mpsc::Sender<TerminalSize>>) {
    let (Some(mut reader), Some(sizes)) = (reader, sizes) else {
        return;
    };
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = reader.recv().await {
        pending.extend_from_slice(&chunk);
        let (parsed, used, malformed) = parse_sizes(&pending);
        pending.drain(..used);
        for size in parsed {
            tracing::debug!(width = size.width, height = size.height, "terminal resize");
            if sizes.send(size).await.is_err() {
                return;
            }
        }
        if malformed {
            tracing::debug!("malformed resize message, no more resizes read");
            return;
        }
        if pending.len() > MAX_RESIZE_PENDING {
            tracing::debug!(bytes = pending.len(), "resize message too long");
            return;
        }
    }
}

/// The complete sizes at the start of `bytes`, how many bytes they used, and whether what
/// follows them is malformed (rather than incomplete).
pub(super) fn parse_sizes(bytes: &[u8]) -> (Vec<TerminalSize>, usize, bool) {
    let mut sizes = Vec::new();
    let mut values = serde_json::Deserializer::from_slice(bytes).into_iter::<TerminalSize>();
    let mut used = 0;
    loop {
        match values.next() {
            Some(Ok(size)) => {
                sizes.push(size);
                used = values.byte_offset();
            }
            Some(Err(error)) if error.is_eof() => return (sizes, used, false),
            Some(Err(_)) => return (sizes, used, true),
            None => return (sizes, bytes.len(), false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(width: u16, height: u16) -> TerminalSize {
        TerminalSize { width, height }
    }

    #[test]
    fn test_parse_sizes_whole_split_and_malformed() {
        let two = b"{\"Width\":80,\"Height\":24}\n{\"Width\":100,\"Height\":50}\n";
        let (sizes, used, bad) = parse_sizes(two);
        assert_eq!(sizes, [size(80, 24), size(100, 50)]);
        assert_eq!(used, two.len());
        assert!(!bad);

        let (sizes, used, bad) = parse_sizes(b"{\"Width\":80,\"Height\":24}\n{\"Wid");
        assert_eq!(sizes, [size(80, 24)]);
        // Up to the end of the first object; the newline is skipped with the next one.
        assert_eq!(used, 24);
        assert!(!bad);

        let (sizes, _, bad) = parse_sizes(b"{\"Width\":70000,\"Height\":1}");
        assert!(sizes.is_empty());
        assert!(bad);

        let (sizes, _, bad) = parse_sizes(b"nonsense");
        assert!(sizes.is_empty());
        assert!(bad);
    }

    #[test]
    fn test_status_of_outcomes() {
        assert!(status_of(&Outcome::Exited(ExitStatus(0))).is_success());
        assert_eq!(
            status_of(&Outcome::Exited(ExitStatus(7))).exit_code(),
            Some(7)
        );
        assert!(status_of(&Outcome::Detached).is_success());
        let failed = Outcome::Failed {
            command: "attach",
            error: BackendError::ContainerNotRunning {
                container_id: "c1".into(),
            },
        };
        assert_eq!(
            status_of(&failed).message,
            "Internal error occurred: error attaching to container: container c1 is not running"
        );
        let negative = status_of(&Outcome::Exited(ExitStatus(-1)));
        assert_eq!(negative.reason, "InternalError");
    }
}
