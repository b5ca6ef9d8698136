//! SPDY/3.1, the multiplexing protocol kubelet and crictl speak to a CRI streaming server for
//! Exec, Attach and PortForward (after an HTTP/1.1 `Upgrade: SPDY/3.1`).
//!
//! The layers, bottom up:
//! - [`frame`]: the wire frames, parsed from and written to byte buffers. No state, no I/O, so
//!   tests can throw arbitrary bytes at it.
//! - [`header_block`]: the name/value header blocks of SYN_STREAM, SYN_REPLY and HEADERS, and
//!   their zlib compression with the SPDY/3 dictionary (one context per direction and connection).
//! - [`reader`]: an incremental frame reader over an `AsyncRead`, which hands out DATA payloads
//!   in bounded chunks so no allocation is sized by a length the peer chose.
//! - [`session`] and [`stream`]: either side of a connection, as tasks and handles. The server
//!   side is the streaming server's; the client side serves the project's own streaming client
//!   (node tests, benchmarks).
//!
//! What this implementation does and does not do, matching the Go implementation Kubernetes uses
//! (`github.com/moby/spdystream` under `k8s.io/apimachinery/pkg/util/httpstream/spdy`):
//! - the client (kubelet, crictl) opens streams; every accepted stream is answered with an
//!   empty SYN_REPLY before it is handed to the caller; a stream this side opens is usable once
//!   the peer's SYN_REPLY arrives ([`SessionHandle::open_stream`]);
//! - no flow control: SETTINGS and WINDOW_UPDATE are parsed and ignored, and none are sent;
//! - PINGs the peer starts are echoed;
//! - any malformed frame ends the connection, with a GOAWAY carrying PROTOCOL_ERROR.

pub mod frame;
pub mod header_block;
pub mod reader;
pub mod session;
pub mod stream;

#[cfg(test)]
mod client_tests;
mod dictionary;
mod inbound;
mod open;
mod outbound;
#[cfg(test)]
mod session_edge_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod test_client;

use std::fmt;
use std::sync::Arc;

pub use dictionary::{SPDY3_DICTIONARY, SPDY3_DICTIONARY_ID};
pub use frame::Frame;
pub use header_block::Headers;
pub use session::{Config, Incoming, Session, SessionHandle};
pub use stream::{Stream, StreamEnd, StreamReader, StreamWriter};

/// A stream id: 31 bits; odd for streams the client opens, even for the server's.
pub type StreamId = u32;

/// The status of a RST_STREAM frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RstStatus(pub u32);

impl RstStatus {
    /// A generic error; the stream could not be processed.
    pub const PROTOCOL_ERROR: RstStatus = RstStatus(1);
    /// A frame arrived for a stream that is not open.
    pub const INVALID_STREAM: RstStatus = RstStatus(2);
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: RstStatus = RstStatus(3);
    /// The SPDY version is not supported.
    pub const UNSUPPORTED_VERSION: RstStatus = RstStatus(4);
    /// The stream is no longer needed.
    pub const CANCEL: RstStatus = RstStatus(5);
    /// A generic error not caused by the protocol.
    pub const INTERNAL_ERROR: RstStatus = RstStatus(6);
    /// The peer broke flow control.
    pub const FLOW_CONTROL_ERROR: RstStatus = RstStatus(7);
    /// A SYN_STREAM arrived for a stream already open.
    pub const STREAM_IN_USE: RstStatus = RstStatus(8);
    /// Data or a SYN_REPLY arrived on a half-closed stream.
    pub const STREAM_ALREADY_CLOSED: RstStatus = RstStatus(9);
    /// A frame was too large to process.
    pub const FRAME_TOO_LARGE: RstStatus = RstStatus(11);

    fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "PROTOCOL_ERROR",
            2 => "INVALID_STREAM",
            3 => "REFUSED_STREAM",
            4 => "UNSUPPORTED_VERSION",
            5 => "CANCEL",
            6 => "INTERNAL_ERROR",
            7 => "FLOW_CONTROL_ERROR",
            8 => "STREAM_IN_USE",
            9 => "STREAM_ALREADY_CLOSED",
            11 => "FRAME_TOO_LARGE",
            _ => return None,
        })
    }
}

impl fmt::Display for RstStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "status {}", self.0),
        }
    }
}

/// The status of a GOAWAY frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    /// A normal session teardown.
    pub const OK: GoAwayStatus = GoAwayStatus(0);
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: GoAwayStatus = GoAwayStatus(1);
    /// Something failed on this side.
    pub const INTERNAL_ERROR: GoAwayStatus = GoAwayStatus(2);
}

impl fmt::Display for GoAwayStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("OK"),
            1 => f.write_str("PROTOCOL_ERROR"),
            2 => f.write_str("INTERNAL_ERROR"),
            other => write!(f, "status {other}"),
        }
    }
}

/// Everything that can go wrong in the SPDY layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A control frame carries a version other than 3.
    #[error("unsupported spdy version {version} in a control frame")]
    UnsupportedVersion { version: u16 },
    /// A frame is longer than this implementation accepts.
    #[error("{kind} frame of {length} bytes exceeds the cap of {max} bytes")]
    FrameTooLarge {
        kind: &'static str,
        length: usize,
        max: usize,
    },
    /// A control frame's length does not fit its type.
    #[error("{kind} frame has invalid length {length}")]
    InvalidLength { kind: &'static str, length: usize },
    /// A frame that needs a stream id carries 0.
    #[error("{kind} frame has stream id 0")]
    ZeroStreamId { kind: &'static str },
    /// A stream id has its reserved high bit set (only when writing).
    #[error("stream id {stream_id:#x} does not fit in 31 bits")]
    InvalidStreamId { stream_id: u32 },
    /// A RST_STREAM frame carries status 0.
    #[error("rst_stream frame for stream {stream_id} has status 0")]
    ZeroRstStatus { stream_id: StreamId },
    /// A decompressed header block ends before the field it promised.
    #[error("header block truncated reading {what}")]
    HeaderBlockTruncated { what: &'static str },
    /// A decompressed header block has bytes after its last header.
    #[error("header block has {extra} bytes after its last header")]
    HeaderBlockTrailing { extra: usize },
    /// A header block holds more headers than the cap.
    #[error("header block holds {count} headers, more than the cap of {max}")]
    TooManyHeaders { count: usize, max: usize },
    /// A header block grows past the cap when decompressed (or encoded).
    #[error("header block exceeds the cap of {max} bytes")]
    HeaderBlockTooLarge { max: usize },
    /// A header name is empty.
    #[error("header block has an empty header name")]
    EmptyHeaderName,
    /// A received header name has upper-case letters (SPDY requires lower case).
    #[error("header name {name:?} is not lower case")]
    UppercaseHeaderName { name: String },
    /// A header name appears twice in one block.
    #[error("header name {name:?} appears twice in one block")]
    DuplicateHeader { name: String },
    /// A header name or value is not UTF-8.
    #[error("header {what} is not utf-8")]
    HeaderNotUtf8 { what: &'static str },
    /// A header name or value to send contains a NUL byte (the value separator).
    #[error("header {name:?} contains a nul byte")]
    HeaderHasNul { name: String },
    /// A header block's zlib stream asks for a dictionary other than SPDY/3's.
    #[error(
        "header block wants zlib dictionary {found:#010x}, not the spdy/3 one {expected:#010x}"
    )]
    WrongDictionary { found: u32, expected: u32 },
    /// The peer ended its header zlib stream, so no further block could be decoded.
    #[error("header block ends the zlib stream")]
    HeaderStreamEnded,
    /// The header block is not valid zlib data.
    #[error("decompress header block")]
    Decompress(#[source] flate2::DecompressError),
    /// Compressing a header block failed.
    #[error("compress header block")]
    Compress(#[source] flate2::CompressError),
    /// The compressor made no progress (a zlib state that should not happen).
    #[error("{what} made no progress")]
    ZlibStalled { what: &'static str },
    /// A DATA payload to send does not fit a frame's 24-bit length.
    #[error("data payload of {length} bytes does not fit one frame")]
    DataTooLarge { length: usize },
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({read} of {expected} bytes)")]
    UnexpectedEof { read: usize, expected: usize },
    /// Reading from or writing to the connection failed.
    #[error("{op} on the spdy connection")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The stream no longer takes data from this side (finished, reset, or unidirectional).
    #[error("stream {stream_id} is closed for writing")]
    StreamClosed { stream_id: StreamId },
    /// The session is closed; nothing more can be sent.
    #[error("spdy session is closed")]
    SessionClosed,
    /// The peer reset a stream this side opened instead of replying.
    #[error("peer refused stream {stream_id} with {status}")]
    StreamRefused {
        stream_id: StreamId,
        status: RstStatus,
    },
    /// Every stream id of this side has been used.
    #[error("no stream ids left on this spdy session")]
    StreamIdsExhausted,
    /// A GOAWAY went one way or the other: no new stream may be opened.
    #[error("spdy session is going away, no new streams")]
    GoingAway,
    /// The session ended with an error; the source says which.
    #[error("spdy session failed")]
    SessionFailed(#[source] Arc<Error>),
}

/// The Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
