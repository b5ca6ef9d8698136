//! The client side of exec and attach, as client-go's `streamProtocolV2..V4` do it: open the
//! error stream, then stdin, stdout, stderr (not with a tty) and, from v3 with a tty, resize;
//! each waits for the server's reply. At the end, the error stream is read to its end and
//! decoded (v4: a status with the exit code; older: a message on failure only).

use bytes::Bytes;

use super::super::backend::TerminalSize;
use super::super::protocol::{
    RemoteCommandProtocol, STREAM_TYPE, STREAM_TYPE_ERROR, STREAM_TYPE_RESIZE, STREAM_TYPE_STDERR,
    STREAM_TYPE_STDIN, STREAM_TYPE_STDOUT, Status,
};
use super::super::spdy::{SessionHandle, Stream, StreamReader, StreamWriter};
use super::{ClientError, read_to_end, send, stream_headers, upgrade};

/// Which streams to open (as the CRI request asked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// How a remote command ended, as the error stream tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// v4 status: the command exited with this code (0 for success).
    Exited(i32),
    /// Nothing on the error stream: success, without an exit code (v1-v3, or a v4 server that
    /// wrote no status).
    Succeeded,
    /// A failure that is not an exit code: the server's message.
    Failed(String),
}

impl Completion {
    /// The exit code: the v4 one, 0 for a bare success, `None` for a failure.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Completion::Exited(code) => Some(*code),
            Completion::Succeeded => Some(0),
            Completion::Failed(_) => None,
        }
    }
}

/// What a finished session produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// What was read from stdout after the session was created (empty if it was taken).
    pub stdout: Vec<u8>,
    /// Same for stderr.
    pub stderr: Vec<u8>,
    /// The error stream's bytes as received (v4: the JSON status).
    pub error: Vec<u8>,
    pub completion: Completion,
}

/// An exec or attach session.
pub struct RemoteCommandSession {
    protocol: RemoteCommandProtocol,
    session: SessionHandle,
    error: StreamReader,
    stdin: Option<StreamWriter>,
    stdout: Option<StreamReader>,
    stderr: Option<StreamReader>,
    resize: Option<StreamWriter>,
}

impl RemoteCommandSession {
    /// Connects to an exec or attach URL offering every protocol, newest first.
    pub async fn connect(
        url: &str,
        options: StreamOptions,
    ) -> Result<RemoteCommandSession, ClientError> {
        RemoteCommandSession::connect_with(url, options, &RemoteCommandProtocol::ALL).await
    }

    /// Connects offering only `protocols`, in that order.
    pub async fn connect_with(
        url: &str,
        options: StreamOptions,
        protocols: &[RemoteCommandProtocol],
    ) -> Result<RemoteCommandSession, ClientError> {
        let names: Vec<&str> = protocols.iter().map(|p| p.name()).collect();
        let upgraded = upgrade(url, &names).await?;
        let protocol = RemoteCommandProtocol::from_name(&upgraded.protocol).ok_or(
            ClientError::UnexpectedProtocol {
                chosen: upgraded.protocol.clone(),
            },
        )?;
        // Streams the server opens (none in practice) are refused.
        drop(upgraded.incoming);
        let session = upgraded.session;
        let error = open(&session, STREAM_TYPE_ERROR).await?.split().0;
        let stdin = match options.stdin {
            true => Some(open(&session, STREAM_TYPE_STDIN).await?.split().1),
            false => None,
        };
        let stdout = match options.stdout {
            true => Some(open(&session, STREAM_TYPE_STDOUT).await?.split().0),
            false => None,
        };
        let stderr = match options.stderr && !options.tty {
            true => Some(open(&session, STREAM_TYPE_STDERR).await?.split().0),
            false => None,
        };
        let resize = match options.tty && protocol.supports_resize() {
            true => Some(open(&session, STREAM_TYPE_RESIZE).await?.split().1),
            false => None,
        };
        Ok(RemoteCommandSession {
            protocol,
            session,
            error,
            stdin,
            stdout,
            stderr,
            resize,
        })
    }

    /// The protocol the server chose.
    pub fn protocol(&self) -> RemoteCommandProtocol {
        self.protocol
    }

    /// The SPDY session (to close it early, or watch it end).
    pub fn session(&self) -> &SessionHandle {
        &self.session
    }

    /// Sends `data` on stdin.
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), ClientError> {
        let stdin = self.stdin.as_mut().ok_or(ClientError::NoStream {
            streamtype: STREAM_TYPE_STDIN,
        })?;
        send(stdin, STREAM_TYPE_STDIN, Bytes::copy_from_slice(data)).await
    }

    /// Ends stdin (FIN): the command reads end of file.
    pub async fn close_stdin(&mut self) -> Result<(), ClientError> {
        let Some(mut stdin) = self.stdin.take() else {
            return Ok(());
        };
        stdin.finish().await.map_err(|source| ClientError::Write {
            streamtype: STREAM_TYPE_STDIN,
            source,
        })
    }

    /// Sends a terminal size on the resize stream (v3 and up, with a tty).
    pub async fn resize(&mut self, size: TerminalSize) -> Result<(), ClientError> {
        let resize = self.resize.as_mut().ok_or(ClientError::NoStream {
            streamtype: STREAM_TYPE_RESIZE,
        })?;
        let mut json = serde_json::to_vec(&size).unwrap_or_default();
        json.push(b'\n');
        send(resize, STREAM_TYPE_RESIZE, Bytes::from(json)).await
    }

    /// The stdin writer, to use on its own (an `AsyncWrite`; shut it down to end stdin).
    pub fn take_stdin(&mut self) -> Option<StreamWriter> {
        self.stdin.take()
    }

    /// The stdout reader, to read on its own (an `AsyncRead`).
    pub fn take_stdout(&mut self) -> Option<StreamReader> {
        self.stdout.take()
    }

    /// The stderr reader, to read on its own.
    pub fn take_stderr(&mut self) -> Option<StreamReader> {
        self.stderr.take()
    }

    /// Reads stdout and stderr (those not taken) and the error stream to their ends, then
    /// closes the session and decodes how the command ended.
    pub async fn finish(mut self) -> Result<Output, ClientError> {
        let (stdout, stderr, error) = tokio::join!(
            read_to_end(self.stdout.as_mut()),
            read_to_end(self.stderr.as_mut()),
            read_to_end(Some(&mut self.error)),
        );
        let session = self.session.clone();
        drop(self);
        session.close();
        let completion = decode_status(&error)?;
        Ok(Output {
            stdout,
            stderr,
            error,
            completion,
        })
    }
}

/// Decodes what the error stream held.
pub(super) fn decode_status(error: &[u8]) -> Result<Completion, ClientError> {
    if error.is_empty() {
        return Ok(Completion::Succeeded);
    }
    let text = String::from_utf8_lossy(error).into_owned();
    match serde_json::from_slice::<Status>(error) {
        Ok(status) if status.is_success() => Ok(Completion::Exited(0)),
        Ok(status) => match status.exit_code() {
            Some(code) => Ok(Completion::Exited(i32::from(code))),
            None if status.status.is_empty() => Err(ClientError::BadStatus { text }),
            None => Ok(Completion::Failed(status.message)),
        },
        // v1-v3 servers write the message itself.
        Err(_) => Ok(Completion::Failed(text)),
    }
}

async fn open(session: &SessionHandle, streamtype: &str) -> Result<Stream, ClientError> {
    session
        .open_stream(stream_headers(&[(STREAM_TYPE, streamtype)]))
        .await
        .map_err(|source| ClientError::OpenStream {
            streamtype: streamtype.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_bytes(bytes: &[u8]) -> Result<Completion, ClientError> {
        decode_status(bytes)
    }

    #[test]
    fn test_decode_error_stream() {
        assert_eq!(decode_bytes(b"").unwrap(), Completion::Succeeded);
        assert_eq!(
            decode_bytes(br#"{"metadata":{},"status":"Success"}"#).unwrap(),
            Completion::Exited(0)
        );
        let exited = serde_json::to_vec(&Status::non_zero_exit(3)).unwrap();
        assert_eq!(decode_bytes(&exited).unwrap(), Completion::Exited(3));
        let internal = serde_json::to_vec(&Status::internal_error("no such container")).unwrap();
        assert_eq!(
            decode_bytes(&internal).unwrap(),
            Completion::Failed("Internal error occurred: no such container".into())
        );
        assert_eq!(
            decode_bytes(b"command terminated with non-zero exit code: exit status 2").unwrap(),
            Completion::Failed("command terminated with non-zero exit code: exit status 2".into())
        );
        assert!(matches!(
            decode_bytes(b"{}"),
            Err(ClientError::BadStatus { .. })
        ));
    }
}
