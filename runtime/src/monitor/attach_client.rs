//! The agent's side of attach: ask the monitor for the attach stream ([`attach`], blocking),
//! then relay it to the client's streams ([`relay_attach`], async).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::attach::{FrameKind, HEADER_LEN, MAX_PAYLOAD, encode_size, parse_header, push_frame};
use super::protocol::{MAX_LINE, Request, Response, decode};
use crate::Error;
use crate::exec::TerminalSize;

/// How long the monitor has to answer an attach request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The streams of the container an attacher asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttachOptions {
    /// Write to the container's stdin (if it has one and no other attacher does).
    pub stdin: bool,
    /// Receive its stdout (all of a terminal's output).
    pub stdout: bool,
    /// Receive its stderr.
    pub stderr: bool,
}

/// Asks the monitor on `socket` to attach; returns the connection, which carries the attach
/// stream from then on. Blocks up to a few seconds: call it from `spawn_blocking`.
pub fn attach(socket: &Path, options: AttachOptions) -> Result<UnixStream, Error> {
    let request = Request::Attach {
        stdin: options.stdin,
        stdout: options.stdout,
        stderr: options.stderr,
    };
    let broken = |message: String| Error::MonitorProtocol {
        socket: socket.to_path_buf(),
        message,
    };
    let mut stream = super::client::send(socket, &request, ANSWER_TIMEOUT)?;
    let line = read_answer_line(&mut stream).map_err(|err| broken(format!("attach: {err}")))?;
    let response: Response =
        decode(&line).map_err(|err| broken(format!("bad answer to attach: {err}")))?;
    if !response.ok {
        return Err(super::client::failure(request.op(), response));
    }
    stream
        .set_read_timeout(None)
        .and_then(|()| stream.set_write_timeout(None))
        .map_err(|err| broken(format!("attach: {err}")))?;
    Ok(stream)
}

/// Reads the answer line one byte at a time: the attach frames follow it at once, and must
/// stay in the socket for the relay.
fn read_answer_line(stream: &mut UnixStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Err(io::Error::other("connection closed before the answer")),
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) if line.len() >= MAX_LINE => return Err(io::Error::other("answer too long")),
            Ok(_) => line.push(byte[0]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
            }
            Err(err) => return Err(err),
        }
    }
}

/// The client's side of an attachment.
pub struct AttachIo {
    /// What the client types; its end is sent as the end of stdin.
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Where the container's stdout (or terminal output) goes.
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Where the container's stderr goes.
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Terminal sizes to apply, in order.
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
}

/// Relays an attach stream (from [`attach`]) until the monitor closes it (the container
/// exited and its output was written, or this attacher fell more than the monitor queues
/// behind), then ends the client's output streams. Dropping the
/// future detaches. A client output stream that fails is dropped; the rest go on.
pub async fn relay_attach(stream: UnixStream, io: AttachIo) -> Result<(), Error> {
    let io_error =
        |op: &'static str| move |source| Error::io(op, Path::new("attach stream"), source);
    stream
        .set_nonblocking(true)
        .map_err(io_error("set nonblocking"))?;
    let stream = tokio::net::UnixStream::from_std(stream).map_err(io_error("register"))?;
    let (mut from_monitor, to_monitor) = stream.into_split();
    let AttachIo {
        stdin,
        mut stdout,
        mut stderr,
        resize,
    } = io;
    let input = AbortOnDrop(tokio::spawn(send_input(to_monitor, stdin, resize)));
    let result = async {
        let mut payload = vec![0u8; MAX_PAYLOAD];
        loop {
            let mut header = [0u8; HEADER_LEN];
            match from_monitor.read_exact(&mut header).await {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(err) => return Err(io_error("read")(err)),
            }
            let header = parse_header(header).map_err(|message| Error::MonitorRequest {
                op: "attach",
                message,
            })?;
            let data = &mut payload[..header.len];
            match from_monitor.read_exact(data).await {
                Ok(_) => {}
                // The monitor cut an attacher that fell too far behind, in a frame.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => {
                    tracing::debug!("attach stream ended inside a frame");
                    return Ok(());
                }
                Err(err) => return Err(io_error("read")(err)),
            }
            let target = match header.kind {
                FrameKind::Stdout => &mut stdout,
                FrameKind::Stderr => &mut stderr,
                _ => continue,
            };
            if let Some(writer) = target {
                if writer.write_all(data).await.is_err() {
                    *target = None;
                }
            }
        }
    }
    .await;
    drop(input);
    for writer in [stdout, stderr].iter_mut().flatten() {
        let _ = writer.shutdown().await;
    }
    result
}

/// Sends the client's stdin and resizes to the monitor; at the end of stdin, a stdin-end
/// frame. Keeps sending resizes after that.
async fn send_input(
    mut to_monitor: tokio::net::unix::OwnedWriteHalf,
    mut stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    mut resize: Option<mpsc::Receiver<TerminalSize>>,
) {
    let mut chunk = vec![0u8; 32 * 1024];
    let mut frame = Vec::with_capacity(chunk.len() + HEADER_LEN);
    while stdin.is_some() || resize.is_some() {
        frame.clear();
        tokio::select! {
            read = async { stdin.as_mut()?.read(&mut chunk).await.ok() }, if stdin.is_some() => {
                match read {
                    Some(n) if n > 0 => push_frame(&mut frame, FrameKind::Stdin, &chunk[..n]),
                    _ => {
                        stdin = None;
                        push_frame(&mut frame, FrameKind::StdinEnd, &[]);
                    }
                }
            }
            size = async { resize.as_mut()?.recv().await }, if resize.is_some() => {
                match size {
                    Some(size) => push_frame(
                        &mut frame,
                        FrameKind::Resize,
                        &encode_size(size.width, size.height),
                    ),
                    None => resize = None,
                }
            }
        }
        if !frame.is_empty() && to_monitor.write_all(&frame).await.is_err() {
            return;
        }
    }
    // Keep the write half open: dropping it would end the connection's writing side,
    // which the monitor reads as a detach.
    std::future::pending::<()>().await;
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
