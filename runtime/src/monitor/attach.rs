//! The attach stream: a container's own stdio carried over a monitor connection.
//!
//! After `{"op":"attach","stdin":true,"stdout":true,"stderr":true}` is answered `{"ok":true}`,
//! the connection stays open and carries frames both ways:
//!
//! ```text
//! [kind: u8][length: u32, big-endian][payload: length bytes]
//!
//! monitor -> agent   1 stdout     output (a terminal's output is all stdout)
//!                    2 stderr     output
//! agent -> monitor   0 stdin      bytes for the container's stdin
//!                    3 stdin end  the client's stdin ended (no payload)
//!                    4 resize     width and height, u16 big-endian each (terminal only)
//! ```
//!
//! The monitor sends each attacher the output it asked for from the moment it attached, and
//! closes the connection once the container has exited and its output is drained. The agent
//! detaches by closing the connection.
//!
//! One attacher at a time may own the container's stdin. With the container's `stdin_once`,
//! the end of that attacher's stdin (a stdin-end frame or its disconnection) closes the
//! container's stdin for good: the pipe is closed, or a terminal gets its end-of-file
//! character. Later attachers get no stdin.

/// Bytes before a frame's payload.
pub const HEADER_LEN: usize = 5;
/// The largest payload accepted or sent.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Stdin,
    Stdout,
    Stderr,
    StdinEnd,
    Resize,
}

impl FrameKind {
    /// The kind's byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            FrameKind::Stdin => 0,
            FrameKind::Stdout => 1,
            FrameKind::Stderr => 2,
            FrameKind::StdinEnd => 3,
            FrameKind::Resize => 4,
        }
    }

    fn from_code(code: u8) -> Option<FrameKind> {
        Some(match code {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::StdinEnd,
            4 => FrameKind::Resize,
            _ => return None,
        })
    }
}

/// Appends one frame to `out`. `payload` must be at most [`MAX_PAYLOAD`] bytes (callers
/// split larger data).
pub fn push_frame(out: &mut Vec<u8>, kind: FrameKind, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    out.push(kind.code());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A frame's header: its kind and payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameKind,
    pub len: usize,
}

/// Parses a header; an unknown kind or a payload over [`MAX_PAYLOAD`] is an error (the
/// connection is then broken: there is no way to find the next frame).
pub fn parse_header(bytes: [u8; HEADER_LEN]) -> Result<Header, String> {
    let kind = FrameKind::from_code(bytes[0])
        .ok_or_else(|| format!("unknown attach frame kind {}", bytes[0]))?;
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(format!("attach frame of {len} bytes is too long"));
    }
    Ok(Header { kind, len })
}

/// Takes the first whole frame off the front of `buf`: `Ok(None)` until one is complete.
pub fn take_frame(buf: &mut Vec<u8>) -> Result<Option<(FrameKind, Vec<u8>)>, String> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = parse_header(*header)?;
    if buf.len() < HEADER_LEN + header.len {
        return Ok(None);
    }
    let payload = buf[HEADER_LEN..HEADER_LEN + header.len].to_vec();
    buf.drain(..HEADER_LEN + header.len);
    Ok(Some((header.kind, payload)))
}

/// A resize payload.
pub fn encode_size(width: u16, height: u16) -> [u8; 4] {
    let [w0, w1] = width.to_be_bytes();
    let [h0, h1] = height.to_be_bytes();
    [w0, w1, h0, h1]
}

/// Reads a resize payload: `(width, height)`.
pub fn decode_size(payload: &[u8]) -> Option<(u16, u16)> {
    let [w0, w1, h0, h1] = *payload.first_chunk::<4>()?;
    if payload.len() != 4 {
        return None;
    }
    Some((u16::from_be_bytes([w0, w1]), u16::from_be_bytes([h0, h1])))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_frames_round_trip_in_pieces() {
        let mut wire = Vec::new();
        push_frame(&mut wire, FrameKind::Stdout, b"hello");
        push_frame(&mut wire, FrameKind::StdinEnd, b"");
        push_frame(&mut wire, FrameKind::Resize, &encode_size(80, 24));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.push(byte);
            while let Some(frame) = take_frame(&mut buf).unwrap() {
                got.push(frame);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(
            got,
            vec![
                (FrameKind::Stdout, b"hello".to_vec()),
                (FrameKind::StdinEnd, Vec::new()),
                (FrameKind::Resize, encode_size(80, 24).to_vec()),
            ]
        );
        assert_eq!(decode_size(&got[2].1), Some((80, 24)));
    }

    #[test]
    fn test_bad_frames_are_errors() {
        let mut unknown = vec![9, 0, 0, 0, 0];
        assert!(take_frame(&mut unknown).unwrap_err().contains("kind 9"));
        let mut huge = vec![0];
        huge.extend_from_slice(&((MAX_PAYLOAD as u32) + 1).to_be_bytes());
        assert!(take_frame(&mut huge).unwrap_err().contains("too long"));
        assert_eq!(decode_size(&[0, 80, 0]), None);
        assert_eq!(decode_size(&[0, 80, 0, 24, 1]), None);
    }
}
