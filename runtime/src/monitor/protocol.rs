//! The messages between the agent and a monitor: one JSON object per line, in both directions.

use serde::{Deserialize, Serialize};

use super::exit::ExitRecord;

/// The longest request or answer line accepted (they are a few hundred bytes).
pub const MAX_LINE: usize = 64 * 1024;

/// The one line the monitor writes on the ready pipe (its stdout) once the container is
/// created, or once creating it failed and everything made so far was removed:
/// `{"ok":true,"pid":1234,"monitor_pid":1230}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyReport {
    /// Whether the container was created.
    pub ok: bool,
    /// The container init's pid (host pid namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The daemonized monitor's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_pid: Option<i32>,
    /// Why the creation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A request on the monitor socket: `{"op":"start"}`, `{"op":"signal","signal":15,"all":false}`,
/// `{"op":"reopen_log"}`, `{"op":"state"}`, `{"op":"delete"}`,
/// `{"op":"attach","stdin":true,"stdout":true,"stderr":false}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start the created container; answered once the process runs.
    Start,
    /// Send `signal` to the init, or with `all` to every process in the container's cgroup.
    Signal {
        /// The signal number.
        signal: i32,
        /// Signal every process of the cgroup, not only the init.
        #[serde(default)]
        all: bool,
    },
    /// Reopen the CRI log file (kubelet renamed it).
    ReopenLog,
    /// Report the container's state.
    State,
    /// Delete the stopped (or never started) container, remove its cgroups, then exit.
    Delete,
    /// Attach to the container's stdio: once answered, the connection carries the attach
    /// stream ([`super::attach`]).
    Attach {
        /// Send the container's stdin (if it has one and no other attacher does).
        #[serde(default)]
        stdin: bool,
        /// Receive its stdout (a terminal's output).
        #[serde(default)]
        stdout: bool,
        /// Receive its stderr.
        #[serde(default)]
        stderr: bool,
    },
}

impl Request {
    /// The operation's name, as in the JSON.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Start => "start",
            Request::Signal { .. } => "signal",
            Request::ReopenLog => "reopen_log",
            Request::State => "state",
            Request::Delete => "delete",
            Request::Attach { .. } => "attach",
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The container is in the wrong state for the request (gRPC FailedPrecondition).
    State,
    /// The request could not be parsed or has bad values (gRPC InvalidArgument).
    Invalid,
    /// The operation failed (gRPC Internal).
    Failed,
}

/// The answer to a request: `{"ok":true}`, `{"ok":true,"state":{...}}` or
/// `{"ok":false,"kind":"state","error":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// On failure: what kind of failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    /// On failure: the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The answer to `state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
}

impl Response {
    /// A success without data.
    pub fn ok() -> Response {
        Response {
            ok: true,
            kind: None,
            error: None,
            state: None,
        }
    }

    /// A failure.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
        Response {
            ok: false,
            kind: Some(kind),
            error: Some(message.into()),
            state: None,
        }
    }

    /// The answer to `state`.
    pub fn with_state(state: ContainerState) -> Response {
        Response {
            state: Some(state),
            ..Response::ok()
        }
    }
}

/// The container's life as the monitor sees it:
///
/// ```text
///  created --start--> running --init exits--> stopped --delete--> (monitor exits)
///     |  '----------init exits (killed)---------^ ^
///     '--delete: SIGKILL, reap, exit record-------'
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created, waiting for `start`.
    Created,
    /// Started and the init has not exited.
    Running,
    /// The init exited; the exit record is written.
    Stopped,
}

/// The answer to `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    /// The container's status.
    pub status: Status,
    /// The init's pid (it stays in the answer after the exit, for the record).
    pub pid: i32,
    /// When the container was created (unix nanoseconds).
    pub created_at: i64,
    /// When `start` succeeded (unix nanoseconds), 0 if it never did.
    pub started_at: i64,
    /// The exit record, once the init exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitRecord>,
}

/// One JSON line (with the newline) for a message.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serializing these plain structs cannot fail (no maps with non-string keys, no
    // failing Serialize impls); fall back to a valid error line all the same.
    let mut line = serde_json::to_vec(message)
        .unwrap_or_else(|_| br#"{"ok":false,"kind":"failed","error":"encode"}"#.to_vec());
    line.push(b'\n');
    line
}

/// Parses one line (with or without its newline).
pub fn decode<'a, T: Deserialize<'a>>(line: &'a [u8]) -> Result<T, String> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    serde_json::from_slice(line).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_request_encoding_is_documented_json() {
        let cases = [
            (Request::Start, r#"{"op":"start"}"#),
            (
                Request::Signal {
                    signal: 15,
                    all: true,
                },
                r#"{"op":"signal","signal":15,"all":true}"#,
            ),
            (Request::ReopenLog, r#"{"op":"reopen_log"}"#),
            (Request::State, r#"{"op":"state"}"#),
            (Request::Delete, r#"{"op":"delete"}"#),
            (
                Request::Attach {
                    stdin: true,
                    stdout: true,
                    stderr: false,
                },
                r#"{"op":"attach","stdin":true,"stdout":true,"stderr":false}"#,
            ),
        ];
        for (request, json) in cases {
            let line = encode(&request);
            assert_eq!(line, format!("{json}\n").into_bytes());
            assert_eq!(decode::<Request>(&line).unwrap(), request);
            assert!(json.contains(request.op()));
        }
    }

    #[test]
    fn test_request_signal_all_defaults_false() {
        let request: Request = decode(br#"{"op":"signal","signal":9}"#).unwrap();
        assert_eq!(
            request,
            Request::Signal {
                signal: 9,
                all: false
            }
        );
    }

    #[test]
    fn test_request_unknown_op_is_error() {
        let err = decode::<Request>(br#"{"op":"exec"}"#).unwrap_err();
        assert!(err.contains("exec"), "{err}");
        assert!(decode::<Request>(b"not json\n").is_err());
    }

    #[test]
    fn test_response_encoding() {
        assert_eq!(encode(&Response::ok()), b"{\"ok\":true}\n");
        assert_eq!(
            encode(&Response::error(ErrorKind::State, "container is running")),
            b"{\"ok\":false,\"kind\":\"state\",\"error\":\"container is running\"}\n"
        );
        let state = ContainerState {
            status: Status::Stopped,
            pid: 42,
            created_at: 1,
            started_at: 2,
            exit: Some(ExitRecord {
                exit_code: 143,
                signal: Some(15),
                started_at: 2,
                finished_at: 3,
                oom_killed: false,
            }),
        };
        let line = encode(&Response::with_state(state.clone()));
        let text = String::from_utf8(line.clone()).unwrap();
        assert!(text.contains(r#""status":"stopped""#), "{text}");
        assert!(text.contains(r#""exit_code":143"#), "{text}");
        let back: Response = decode(&line).unwrap();
        assert_eq!(back.state, Some(state));
    }

    #[test]
    fn test_ready_report_encoding() {
        let ok = ReadyReport {
            ok: true,
            pid: Some(7),
            monitor_pid: Some(5),
            error: None,
        };
        assert_eq!(encode(&ok), b"{\"ok\":true,\"pid\":7,\"monitor_pid\":5}\n");
        let failed: ReadyReport = decode(br#"{"ok":false,"error":"boom"}"#).unwrap();
        assert_eq!(failed.error.as_deref(), Some("boom"));
        assert_eq!(failed.pid, None);
    }
}
