//! The `channel.k8s.io` message framing, both ways (apimachinery's `wsstream/conn.go`):
//!
//! - binary protocols: `[channel, data...]` in a binary message;
//! - base64 protocols: the channel as an ASCII digit (`'0' + channel`) followed by the standard
//!   base64 of the data, in a text message;
//! - v5 only: `[255, channel]` half-closes `channel` (from the client: its stdin ended).
//!
//! Either side may send text or binary messages; the server reads both the same way, as
//! kubelet's (`websocket.Message.Receive` into a byte slice) does.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use tokio_tungstenite::tungstenite::Message;

use super::super::protocol::{CHANNEL_CLOSE, ChannelProtocol};

/// What one message from the other side says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inbound {
    /// Data for `channel` (possibly empty: kubelet's "connection established" message).
    Data { channel: u8, data: Bytes },
    /// v5: `channel` is closed by the sender.
    Close { channel: u8 },
    /// A message with no bytes at all (skipped).
    Empty,
}

/// A message that breaks the framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// v5's close signal is exactly two bytes.
    #[error("close signal of {len} bytes (want 2)")]
    BadClose { len: usize },
    /// A base64 message's channel is not an ASCII digit.
    #[error("base64 message on channel character {byte:#04x}")]
    BadChannel { byte: u8 },
    /// A base64 message's data does not decode.
    #[error("invalid base64 data on channel {channel}")]
    BadBase64 { channel: u8 },
}

/// The message carrying `data` on `channel`.
pub(crate) fn encode(protocol: ChannelProtocol, channel: u8, data: &[u8]) -> Message {
    if protocol.is_base64() {
        let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        text.push(char::from(b'0'.wrapping_add(channel)));
        BASE64.encode_string(data, &mut text);
        Message::text(text)
    } else {
        let mut frame = Vec::with_capacity(1 + data.len());
        frame.push(channel);
        frame.extend_from_slice(data);
        Message::binary(frame)
    }
}

/// The v5 message closing `channel`.
pub(crate) fn encode_close(channel: u8) -> Message {
    Message::binary(vec![CHANNEL_CLOSE, channel])
}

/// Reads the payload of a text or binary message.
pub(crate) fn decode(protocol: ChannelProtocol, payload: &[u8]) -> Result<Inbound, FrameError> {
    let Some((&first, data)) = payload.split_first() else {
        return Ok(Inbound::Empty);
    };
    if protocol.supports_close() && first == CHANNEL_CLOSE {
        return match data {
            [channel] => Ok(Inbound::Close { channel: *channel }),
            _ => Err(FrameError::BadClose { len: payload.len() }),
        };
    }
    if !protocol.is_base64() {
        return Ok(Inbound::Data {
            channel: first,
            data: Bytes::copy_from_slice(data),
        });
    }
    if !first.is_ascii_digit() {
        return Err(FrameError::BadChannel { byte: first });
    }
    let channel = first - b'0';
    let decoded = BASE64
        .decode(data)
        .map_err(|_| FrameError::BadBase64 { channel })?;
    Ok(Inbound::Data {
        channel,
        data: Bytes::from(decoded),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(message: &Message) -> (bool, Vec<u8>) {
        match message {
            Message::Binary(bytes) => (true, bytes.to_vec()),
            Message::Text(text) => (false, text.as_bytes().to_vec()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn test_encode_binary_and_base64() {
        let (binary, bytes) = payload(&encode(ChannelProtocol::V5, 1, b"\n"));
        assert!(binary);
        assert_eq!(bytes, [1, 10]);
        // apimachinery's own example: "\n" on stdout is "1Cg==".
        let (binary, bytes) = payload(&encode(ChannelProtocol::V4Base64, 1, b"\n"));
        assert!(!binary);
        assert_eq!(bytes, b"1Cg==");
        let (_, bytes) = payload(&encode(ChannelProtocol::V1Base64, 3, b""));
        assert_eq!(bytes, b"3");
        assert_eq!(payload(&encode_close(0)).1, [255, 0]);
    }

    #[test]
    fn test_decode_binary_base64_and_close() {
        assert_eq!(
            decode(ChannelProtocol::V4, &[0, b'f', b'o', b'o']).unwrap(),
            Inbound::Data {
                channel: 0,
                data: Bytes::from_static(b"foo")
            }
        );
        assert_eq!(
            decode(ChannelProtocol::V1Base64, b"0Zm9vCg==").unwrap(),
            Inbound::Data {
                channel: 0,
                data: Bytes::from_static(b"foo\n")
            }
        );
        assert_eq!(decode(ChannelProtocol::V5, &[]).unwrap(), Inbound::Empty);
        assert_eq!(
            decode(ChannelProtocol::V5, &[255, 0]).unwrap(),
            Inbound::Close { channel: 0 }
        );
        // Before v5, 255 is just a channel nobody reads.
        assert_eq!(
            decode(ChannelProtocol::V4, &[255, 0]).unwrap(),
            Inbound::Data {
                channel: 255,
                data: Bytes::from_static(&[0])
            }
        );
    }

    #[test]
    fn test_decode_garbage_is_an_error_not_a_panic() {
        assert_eq!(
            decode(ChannelProtocol::V5, &[255]),
            Err(FrameError::BadClose { len: 1 })
        );
        assert_eq!(
            decode(ChannelProtocol::V5, &[255, 0, 0]),
            Err(FrameError::BadClose { len: 3 })
        );
        assert_eq!(
            decode(ChannelProtocol::V4Base64, b"x===="),
            Err(FrameError::BadChannel { byte: b'x' })
        );
        assert_eq!(
            decode(ChannelProtocol::V4Base64, b"0!!not base64"),
            Err(FrameError::BadBase64 { channel: 0 })
        );
    }

    #[test]
    fn test_round_trip_every_protocol() {
        let data: Vec<u8> = (0..=255).collect();
        for protocol in ChannelProtocol::NAMED {
            let (_, bytes) = payload(&encode(protocol, 2, &data));
            assert_eq!(
                decode(protocol, &bytes).unwrap(),
                Inbound::Data {
                    channel: 2,
                    data: Bytes::from(data.clone())
                },
                "{protocol:?}"
            );
        }
    }
}
