//! The wire vocabulary of Kubernetes' streaming protocols, shared by the server and the client:
//! subprotocol names, header names, stream types, and the status written on the error stream.
//!
//! Sources (kubelet's streaming library, now `k8s.io/cri-streaming/pkg/streaming`, and
//! apimachinery):
//! - `remotecommand/constants.go`: the protocol names, `streamType` and its values; kubelet's
//!   SPDY server offers v4, v3, v2 and v1 (v5 is WebSocket only).
//! - `httpstream/httpstream.go`: `X-Stream-Protocol-Version`, answered with the chosen one, or
//!   403 listing `X-Accepted-Stream-Protocol-Versions`; the client's order of preference wins.
//! - `remotecommand/exec.go`, `status.go`: the v4 status object (`metav1.Status` fields:
//!   `metadata`, `status`, `message`, `reason`, `details.causes[].reason/.message`, `code`).
//! - `client-go/tools/remotecommand/v4.go`: the client reads `reason: NonZeroExitCode` and the
//!   cause `reason: ExitCode` whose message is the code, parsed as an unsigned 8-bit integer.
//! - WebSocket: apimachinery's `remotecommand/constants.go` (channel numbers 0-4, 255 for
//!   v5's close signal), `httpstream/wsstream/conn.go` (`channel.k8s.io` and
//!   `base64.channel.k8s.io` framing, `Sec-WebSocket-Protocol`), kubelet's
//!   `remotecommand/websocket.go` (the v1 and v4 names, binary and base64) and
//!   `portforward/constants.go` (`SPDY/3.1+` tunnelling prefix), as vendored by crictl 1.32.

use serde::{Deserialize, Serialize};

/// Request header listing the subprotocols a client speaks (repeated or comma separated);
/// the 101 answer carries the chosen one.
pub const HEADER_PROTOCOL_VERSION: &str = "X-Stream-Protocol-Version";
/// Answer header of a 403: every subprotocol the server accepts.
pub const HEADER_ACCEPTED_PROTOCOL_VERSIONS: &str = "X-Accepted-Stream-Protocol-Versions";
/// The `Upgrade` token for SPDY.
pub const UPGRADE_SPDY: &str = "SPDY/3.1";

/// Stream header naming what a stream carries (lower case on the SPDY wire).
pub const STREAM_TYPE: &str = "streamtype";
/// Port-forward stream header: the port in the pod.
pub const PORT: &str = "port";
/// Port-forward stream header: pairs a connection's data and error streams.
pub const REQUEST_ID: &str = "requestid";

pub const STREAM_TYPE_ERROR: &str = "error";
pub const STREAM_TYPE_STDIN: &str = "stdin";
pub const STREAM_TYPE_STDOUT: &str = "stdout";
pub const STREAM_TYPE_STDERR: &str = "stderr";
pub const STREAM_TYPE_RESIZE: &str = "resize";
pub const STREAM_TYPE_DATA: &str = "data";

/// The port-forward subprotocol.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// An exec/attach subprotocol over SPDY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RemoteCommandProtocol {
    /// `channel.k8s.io`: errors as text; the server resets the error stream as soon as the
    /// streams are set up (a 1.0 bug kept for compatibility), so errors never arrive.
    V1,
    /// `v2.channel.k8s.io`: errors as text on the error stream.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a status object with the exit code.
    V4,
}

impl RemoteCommandProtocol {
    /// Every version, newest (preferred) first.
    pub const ALL: [RemoteCommandProtocol; 4] = [
        RemoteCommandProtocol::V4,
        RemoteCommandProtocol::V3,
        RemoteCommandProtocol::V2,
        RemoteCommandProtocol::V1,
    ];

    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            RemoteCommandProtocol::V1 => "channel.k8s.io",
            RemoteCommandProtocol::V2 => "v2.channel.k8s.io",
            RemoteCommandProtocol::V3 => "v3.channel.k8s.io",
            RemoteCommandProtocol::V4 => "v4.channel.k8s.io",
        }
    }

    /// The version named `name`.
    pub fn from_name(name: &str) -> Option<RemoteCommandProtocol> {
        RemoteCommandProtocol::ALL
            .into_iter()
            .find(|protocol| protocol.name() == name)
    }

    /// Whether the client sends terminal sizes on a resize stream.
    pub fn supports_resize(self) -> bool {
        self >= RemoteCommandProtocol::V3
    }

    /// Whether the error stream carries a JSON status (else plain text, failures only).
    pub fn has_status(self) -> bool {
        self >= RemoteCommandProtocol::V4
    }
}

/// The WebSocket subprotocol header (offered as a comma separated list, answered with one).
pub const HEADER_WEBSOCKET_PROTOCOL: &str = "Sec-WebSocket-Protocol";
/// The `Upgrade` token for WebSocket.
pub const UPGRADE_WEBSOCKET: &str = "websocket";
/// What client-go's tunnelling dialer puts before a SPDY subprotocol to carry SPDY inside
/// WebSocket binary messages (crictl `port-forward --transport websocket`).
pub const WEBSOCKET_SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";
/// The port-forward subprotocol tunnelled in WebSocket: `SPDY/3.1+portforward.k8s.io`.
pub const PORT_FORWARD_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// WebSocket channel of the command's stdin (client to server).
pub const CHANNEL_STDIN: u8 = 0;
/// WebSocket channel of the command's stdout.
pub const CHANNEL_STDOUT: u8 = 1;
/// WebSocket channel of the command's stderr.
pub const CHANNEL_STDERR: u8 = 2;
/// WebSocket channel of the status (what SPDY's error stream carries).
pub const CHANNEL_ERROR: u8 = 3;
/// WebSocket channel of terminal sizes (client to server, JSON like SPDY's resize stream).
pub const CHANNEL_RESIZE: u8 = 4;
/// v5: a message `[255, channel]` half-closes `channel` (the client's stdin ends).
pub const CHANNEL_CLOSE: u8 = 255;

/// An exec/attach subprotocol over WebSocket: every message starts with its channel, a byte
/// (binary) or an ASCII digit followed by the base64 of the data (base64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelProtocol {
    /// No subprotocol asked for: `channel.k8s.io` framing, v1 errors.
    Unnamed,
    /// `channel.k8s.io`: binary, errors as text (failures only).
    V1,
    /// `base64.channel.k8s.io`: base64 text, errors as text.
    V1Base64,
    /// `v4.channel.k8s.io`: binary, the status object on the error channel.
    V4,
    /// `v4.base64.channel.k8s.io`: base64 text, the status object.
    V4Base64,
    /// `v5.channel.k8s.io`: v4 plus the close signal (channel 255), which lets a client end
    /// stdin without closing the connection. The only one crictl 1.32 offers.
    V5,
}

impl ChannelProtocol {
    /// Every named version, in the order the server lists them (newest first).
    pub const NAMED: [ChannelProtocol; 5] = [
        ChannelProtocol::V5,
        ChannelProtocol::V4,
        ChannelProtocol::V4Base64,
        ChannelProtocol::V1,
        ChannelProtocol::V1Base64,
    ];

    /// The name on the wire (empty for [`ChannelProtocol::Unnamed`]).
    pub fn name(self) -> &'static str {
        match self {
            ChannelProtocol::Unnamed => "",
            ChannelProtocol::V1 => "channel.k8s.io",
            ChannelProtocol::V1Base64 => "base64.channel.k8s.io",
            ChannelProtocol::V4 => "v4.channel.k8s.io",
            ChannelProtocol::V4Base64 => "v4.base64.channel.k8s.io",
            ChannelProtocol::V5 => "v5.channel.k8s.io",
        }
    }

    /// The named version called `name`.
    pub fn from_name(name: &str) -> Option<ChannelProtocol> {
        ChannelProtocol::NAMED
            .into_iter()
            .find(|protocol| protocol.name() == name)
    }

    /// Whether messages are base64 text rather than binary.
    pub fn is_base64(self) -> bool {
        matches!(self, ChannelProtocol::V1Base64 | ChannelProtocol::V4Base64)
    }

    /// Whether the error channel carries a JSON status (else the message, failures only).
    pub fn has_status(self) -> bool {
        matches!(
            self,
            ChannelProtocol::V4 | ChannelProtocol::V4Base64 | ChannelProtocol::V5
        )
    }

    /// Whether `[255, channel]` is a close signal (v5).
    pub fn supports_close(self) -> bool {
        self == ChannelProtocol::V5
    }
}

/// `Status.status` of a success.
pub const STATUS_SUCCESS: &str = "Success";
/// `Status.status` of a failure.
pub const STATUS_FAILURE: &str = "Failure";
/// `Status.reason` of a command that exited non-zero.
pub const REASON_NON_ZERO_EXIT_CODE: &str = "NonZeroExitCode";
/// `Status.reason` of a failure to run the command at all.
pub const REASON_INTERNAL_ERROR: &str = "InternalError";
/// `StatusCause.reason` of the cause carrying the exit code.
pub const CAUSE_EXIT_CODE: &str = "ExitCode";

/// A `metav1.Status`, as much of it as the error stream uses. Serializes like Go's
/// `json.Marshal` of one: `metadata` always (an empty object), the rest only when set, in Go's
/// field order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub metadata: ListMeta,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: i32,
}

/// `metav1.ListMeta`: always empty here (its fields are ignored when read).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMeta {}

/// `metav1.StatusDetails`, the part used here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// `metav1.StatusCause`: its Go field `Type` is `reason` in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    #[serde(default, rename = "reason", skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

fn is_zero(code: &i32) -> bool {
    *code == 0
}

impl Status {
    /// The command exited 0 (or the attachment ended normally).
    pub fn success() -> Status {
        Status {
            status: STATUS_SUCCESS.to_string(),
            ..Status::default()
        }
    }

    /// The command exited with `code` (not 0).
    pub fn non_zero_exit(code: i32) -> Status {
        Status {
            status: STATUS_FAILURE.to_string(),
            message: format!("command terminated with non-zero exit code: exit status {code}"),
            reason: REASON_NON_ZERO_EXIT_CODE.to_string(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    kind: CAUSE_EXIT_CODE.to_string(),
                    message: code.to_string(),
                }],
            }),
            ..Status::default()
        }
    }

    /// The command could not be run: apimachinery's `NewInternalError(error)`.
    pub fn internal_error(error: &str) -> Status {
        Status {
            status: STATUS_FAILURE.to_string(),
            message: format!("Internal error occurred: {error}"),
            reason: REASON_INTERNAL_ERROR.to_string(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    kind: String::new(),
                    message: error.to_string(),
                }],
            }),
            code: 500,
            ..Status::default()
        }
    }

    /// Whether it reports success.
    pub fn is_success(&self) -> bool {
        self.status == STATUS_SUCCESS
    }

    /// The exit code a `NonZeroExitCode` failure carries, read as client-go does (0-255).
    pub fn exit_code(&self) -> Option<u8> {
        if self.status != STATUS_FAILURE || self.reason != REASON_NON_ZERO_EXIT_CODE {
            return None;
        }
        let causes = &self.details.as_ref()?.causes;
        let cause = causes.iter().find(|cause| cause.kind == CAUSE_EXIT_CODE)?;
        cause.message.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_status_success_json_matches_kubelet() {
        let json = serde_json::to_string(&Status::success()).unwrap();
        assert_eq!(json, r#"{"metadata":{},"status":"Success"}"#);
    }

    #[test]
    fn test_status_non_zero_exit_json_matches_kubelet() {
        let json = serde_json::to_string(&Status::non_zero_exit(3)).unwrap();
        assert_eq!(
            json,
            r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#
        );
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back.exit_code(), Some(3));
        assert!(!back.is_success());
    }

    #[test]
    fn test_status_internal_error_json_matches_apimachinery() {
        let json = serde_json::to_string(&Status::internal_error("boom")).unwrap();
        assert_eq!(
            json,
            r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError","details":{"causes":[{"message":"boom"}]},"code":500}"#
        );
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back.exit_code(), None);
    }

    #[test]
    fn test_status_reads_go_output_with_extra_fields() {
        // What the newest kubelet library writes (no metadata), with a kind and a field.
        let json = r#"{"kind":"Status","status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"42","field":"x"}]}}"#;
        let status: Status = serde_json::from_str(json).unwrap();
        assert_eq!(status.exit_code(), Some(42));
        // client-go parses the code as uint8: 256 is no exit code.
        let json = r#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"256"}]}}"#;
        let status: Status = serde_json::from_str(json).unwrap();
        assert_eq!(status.exit_code(), None);
    }

    #[test]
    fn test_channel_protocol_names_and_traits() {
        let names: Vec<&str> = ChannelProtocol::NAMED.iter().map(|p| p.name()).collect();
        assert_eq!(
            names,
            [
                "v5.channel.k8s.io",
                "v4.channel.k8s.io",
                "v4.base64.channel.k8s.io",
                "channel.k8s.io",
                "base64.channel.k8s.io"
            ]
        );
        for protocol in ChannelProtocol::NAMED {
            assert_eq!(ChannelProtocol::from_name(protocol.name()), Some(protocol));
        }
        assert_eq!(ChannelProtocol::from_name(""), None);
        assert_eq!(ChannelProtocol::from_name("v3.channel.k8s.io"), None);
        assert!(ChannelProtocol::V4Base64.is_base64() && ChannelProtocol::V4Base64.has_status());
        assert!(!ChannelProtocol::V1Base64.has_status());
        assert!(!ChannelProtocol::Unnamed.is_base64() && !ChannelProtocol::Unnamed.has_status());
        assert!(ChannelProtocol::V5.supports_close() && !ChannelProtocol::V4.supports_close());
        assert_eq!(
            PORT_FORWARD_TUNNEL_PROTOCOL,
            format!("{WEBSOCKET_SPDY_TUNNEL_PREFIX}{PORT_FORWARD_PROTOCOL}")
        );
    }

    #[test]
    fn test_remote_command_protocol_names() {
        let names: Vec<&str> = RemoteCommandProtocol::ALL
            .iter()
            .map(|p| p.name())
            .collect();
        assert_eq!(
            names,
            [
                "v4.channel.k8s.io",
                "v3.channel.k8s.io",
                "v2.channel.k8s.io",
                "channel.k8s.io"
            ]
        );
        for protocol in RemoteCommandProtocol::ALL {
            assert_eq!(
                RemoteCommandProtocol::from_name(protocol.name()),
                Some(protocol)
            );
        }
        assert!(RemoteCommandProtocol::V3.supports_resize());
        assert!(!RemoteCommandProtocol::V2.supports_resize());
        assert!(RemoteCommandProtocol::V4.has_status());
        assert!(!RemoteCommandProtocol::V3.has_status());
        assert_eq!(RemoteCommandProtocol::from_name("v5.channel.k8s.io"), None);
    }
}
