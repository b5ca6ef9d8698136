//! SPDY/3.1 frames: parsing from and writing to byte buffers.
//!
//! Every frame starts with an 8-byte header. Control frames: the control bit (1), the version
//! (15 bits, 3), the type (16 bits), then flags (8 bits) and the payload length (24 bits). Data
//! frames: the control bit (0), the stream id (31 bits), then flags and length likewise.
//!
//! Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) stay compressed here: decompressing them needs
//! the connection's zlib context, which lives in [`super::header_block`]. So this module has no
//! state, and [`parse`] can be fed any bytes.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Error, GoAwayStatus, Result, RstStatus, StreamId};

/// The only SPDY version spoken.
pub const VERSION: u16 = 3;
/// The length of every frame header.
pub const HEADER_LEN: usize = 8;
/// The largest payload a frame's 24-bit length can announce.
pub const MAX_PAYLOAD: usize = 0x00ff_ffff;
/// The largest payload accepted for a control frame of a known type (its header block
/// compressed). Kubernetes' header blocks are a few dozen bytes.
pub const MAX_CONTROL_PAYLOAD: usize = 64 * 1024;
/// The largest stream id (31 bits).
pub const MAX_STREAM_ID: StreamId = 0x7fff_ffff;

/// FLAG_FIN of SYN_STREAM, SYN_REPLY, HEADERS and DATA: the sender's last frame on the stream.
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL of SYN_STREAM: the recipient may not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS of SETTINGS.
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;

/// SYN_STREAM's fixed fields before the header block: stream id, associated id, priority, slot.
const SYN_STREAM_FIXED: usize = 10;

/// Control frame types.
pub mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// A SYN_STREAM frame: the sender opens a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynStream {
    pub stream_id: StreamId,
    pub associated_to: StreamId,
    /// 0 (highest) to 7.
    pub priority: u8,
    /// Unused since SPDY/3.1; kept for round trips.
    pub slot: u8,
    /// [`FLAG_FIN`], [`FLAG_UNIDIRECTIONAL`].
    pub flags: u8,
    /// The compressed name/value header block.
    pub header_block: Bytes,
}

/// One entry of a SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    /// 24 bits.
    pub id: u32,
    pub value: u32,
}

/// A SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream(SynStream),
    SynReply {
        stream_id: StreamId,
        flags: u8,
        header_block: Bytes,
    },
    RstStream {
        stream_id: StreamId,
        status: RstStatus,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: StreamId,
        status: GoAwayStatus,
    },
    Headers {
        stream_id: StreamId,
        flags: u8,
        header_block: Bytes,
    },
    WindowUpdate {
        stream_id: StreamId,
        delta: u32,
    },
    Data {
        stream_id: StreamId,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this implementation does not know; its payload was skipped.
    Unknown {
        kind: u16,
        flags: u8,
        length: usize,
    },
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Control {
        version: u16,
        kind: u16,
        flags: u8,
        length: usize,
    },
    Data {
        stream_id: StreamId,
        flags: u8,
        length: usize,
    },
}

impl Head {
    /// Splits the 8 header bytes into their fields. Never fails: every bit pattern is a header;
    /// [`Head::check`] says whether this implementation accepts it.
    pub fn parse(bytes: [u8; HEADER_LEN]) -> Head {
        let first = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let flags = bytes[4];
        let length =
            usize::from(bytes[5]) << 16 | usize::from(bytes[6]) << 8 | usize::from(bytes[7]);
        if first & 0x8000_0000 != 0 {
            Head::Control {
                version: ((first >> 16) & 0x7fff) as u16,
                kind: (first & 0xffff) as u16,
                flags,
                length,
            }
        } else {
            Head::Data {
                stream_id: first & MAX_STREAM_ID,
                flags,
                length,
            }
        }
    }

    /// The payload length the header announces.
    pub fn length(&self) -> usize {
        match *self {
            Head::Control { length, .. } | Head::Data { length, .. } => length,
        }
    }

    /// Rejects what no payload can make valid: a control frame of another version, a control
    /// frame of a known type longer than [`MAX_CONTROL_PAYLOAD`], a DATA frame on stream 0.
    pub fn check(&self) -> Result<()> {
        match *self {
            Head::Control {
                version,
                kind,
                length,
                ..
            } => {
                if version != VERSION {
                    return Err(Error::UnsupportedVersion { version });
                }
                match kind_name(kind) {
                    Some(kind) if length > MAX_CONTROL_PAYLOAD => Err(Error::FrameTooLarge {
                        kind,
                        length,
                        max: MAX_CONTROL_PAYLOAD,
                    }),
                    _ => Ok(()),
                }
            }
            Head::Data { stream_id: 0, .. } => Err(Error::ZeroStreamId { kind: "data" }),
            Head::Data { .. } => Ok(()),
        }
    }
}

/// The name of a known control frame type, `None` for unknown ones.
pub fn kind_name(kind: u16) -> Option<&'static str> {
    Some(match kind {
        kind::SYN_STREAM => "syn_stream",
        kind::SYN_REPLY => "syn_reply",
        kind::RST_STREAM => "rst_stream",
        kind::SETTINGS => "settings",
        kind::PING => "ping",
        kind::GOAWAY => "goaway",
        kind::HEADERS => "headers",
        kind::WINDOW_UPDATE => "window_update",
        _ => return None,
    })
}

/// Parses one whole frame from the start of `buf`: `Ok(None)` while `buf` holds less than the
/// frame, else the frame and the bytes it took. The frame header is checked before the payload
/// arrives, so an oversize control frame fails at once. A frame of an unknown control type is
/// returned as [`Frame::Unknown`] once its payload is in `buf`.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>> {
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let head = Head::parse(*header);
    head.check()?;
    let end = HEADER_LEN + head.length();
    let Some(payload) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    let frame = match head {
        Head::Data {
            stream_id, flags, ..
        } => Frame::Data {
            stream_id,
            flags,
            data: Bytes::copy_from_slice(payload),
        },
        Head::Control { kind, flags, .. } => {
            parse_control(kind, flags, Bytes::copy_from_slice(payload))?
        }
    };
    Ok(Some((frame, end)))
}

/// Parses the payload of a control frame whose header passed [`Head::check`].
pub fn parse_control(kind: u16, flags: u8, payload: Bytes) -> Result<Frame> {
    let length = payload.len();
    let Some(name) = kind_name(kind) else {
        return Ok(Frame::Unknown {
            kind,
            flags,
            length,
        });
    };
    let invalid = || Error::InvalidLength { kind: name, length };
    let stream_id = || u32_at(&payload, 0) & MAX_STREAM_ID;
    let frame = match kind {
        kind::SYN_STREAM => {
            if length < SYN_STREAM_FIXED {
                return Err(invalid());
            }
            Frame::SynStream(SynStream {
                stream_id: nonzero(stream_id(), name)?,
                associated_to: u32_at(&payload, 4) & MAX_STREAM_ID,
                priority: payload[8] >> 5,
                slot: payload[9],
                flags,
                header_block: payload.slice(SYN_STREAM_FIXED..),
            })
        }
        kind::SYN_REPLY | kind::HEADERS => {
            if length < 4 {
                return Err(invalid());
            }
            let stream_id = nonzero(stream_id(), name)?;
            let header_block = payload.slice(4..);
            if kind == kind::SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    header_block,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    header_block,
                }
            }
        }
        kind::RST_STREAM => {
            if length != 8 {
                return Err(invalid());
            }
            let stream_id = nonzero(stream_id(), name)?;
            let status = u32_at(&payload, 4);
            if status == 0 {
                return Err(Error::ZeroRstStatus { stream_id });
            }
            Frame::RstStream {
                stream_id,
                status: RstStatus(status),
            }
        }
        kind::SETTINGS => {
            let count = if length >= 4 { u32_at(&payload, 0) } else { 0 };
            if length < 4 || u64::from(count) * 8 + 4 != length as u64 {
                return Err(invalid());
            }
            let entries = payload[4..]
                .chunks_exact(8)
                .map(|entry| {
                    let flags_id = u32_at(entry, 0);
                    Setting {
                        flags: (flags_id >> 24) as u8,
                        id: flags_id & 0x00ff_ffff,
                        value: u32_at(entry, 4),
                    }
                })
                .collect();
            Frame::Settings { flags, entries }
        }
        kind::PING => {
            if length != 4 {
                return Err(invalid());
            }
            Frame::Ping {
                id: u32_at(&payload, 0),
            }
        }
        kind::GOAWAY => {
            if length != 8 {
                return Err(invalid());
            }
            Frame::GoAway {
                last_good_stream_id: stream_id(),
                status: GoAwayStatus(u32_at(&payload, 4)),
            }
        }
        kind::WINDOW_UPDATE => {
            if length != 8 {
                return Err(invalid());
            }
            Frame::WindowUpdate {
                stream_id: stream_id(),
                delta: u32_at(&payload, 4) & 0x7fff_ffff,
            }
        }
        _ => {
            return Ok(Frame::Unknown {
                kind,
                flags,
                length,
            });
        }
    };
    Ok(frame)
}

impl Frame {
    /// The frame's name for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::SynStream(_) => "syn_stream",
            Frame::SynReply { .. } => "syn_reply",
            Frame::RstStream { .. } => "rst_stream",
            Frame::Settings { .. } => "settings",
            Frame::Ping { .. } => "ping",
            Frame::GoAway { .. } => "goaway",
            Frame::Headers { .. } => "headers",
            Frame::WindowUpdate { .. } => "window_update",
            Frame::Data { .. } => "data",
            Frame::Unknown { .. } => "unknown",
        }
    }

    /// Appends the frame to `out`. Fails for a stream id over 31 bits (or 0 where the frame
    /// needs one), a payload over 24 bits, or a [`Frame::Unknown`] (its payload is gone).
    pub fn encode(&self, out: &mut BytesMut) -> Result<()> {
        let name = self.name();
        match self {
            Frame::SynStream(syn) => {
                let length = SYN_STREAM_FIXED + syn.header_block.len();
                control_head(out, kind::SYN_STREAM, syn.flags, length, name)?;
                out.put_u32(stream_id(syn.stream_id, name)?);
                out.put_u32(id31(syn.associated_to)?);
                out.put_u8((syn.priority & 0x07) << 5);
                out.put_u8(syn.slot);
                out.put_slice(&syn.header_block);
            }
            Frame::SynReply {
                stream_id: id,
                flags,
                header_block,
            }
            | Frame::Headers {
                stream_id: id,
                flags,
                header_block,
            } => {
                let kind = match self {
                    Frame::SynReply { .. } => kind::SYN_REPLY,
                    _ => kind::HEADERS,
                };
                control_head(out, kind, *flags, 4 + header_block.len(), name)?;
                out.put_u32(stream_id(*id, name)?);
                out.put_slice(header_block);
            }
            Frame::RstStream {
                stream_id: id,
                status,
            } => {
                control_head(out, kind::RST_STREAM, 0, 8, name)?;
                out.put_u32(stream_id(*id, name)?);
                out.put_u32(status.0);
            }
            Frame::Settings { flags, entries } => {
                let length = entries
                    .len()
                    .checked_mul(8)
                    .and_then(|n| n.checked_add(4))
                    .unwrap_or(usize::MAX);
                control_head(out, kind::SETTINGS, *flags, length, name)?;
                out.put_u32(entries.len() as u32);
                for entry in entries {
                    out.put_u32(u32::from(entry.flags) << 24 | (entry.id & 0x00ff_ffff));
                    out.put_u32(entry.value);
                }
            }
            Frame::Ping { id } => {
                control_head(out, kind::PING, 0, 4, name)?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_head(out, kind::GOAWAY, 0, 8, name)?;
                out.put_u32(id31(*last_good_stream_id)?);
                out.put_u32(status.0);
            }
            Frame::WindowUpdate {
                stream_id: id,
                delta,
            } => {
                control_head(out, kind::WINDOW_UPDATE, 0, 8, name)?;
                out.put_u32(id31(*id)?);
                out.put_u32(delta & 0x7fff_ffff);
            }
            Frame::Data {
                stream_id: id,
                flags,
                data,
            } => {
                encode_data_head(out, *id, *flags, data.len())?;
                out.put_slice(data);
            }
            Frame::Unknown { length, .. } => {
                return Err(Error::InvalidLength {
                    kind: name,
                    length: *length,
                });
            }
        }
        Ok(())
    }

    /// The frame as a new buffer.
    pub fn to_bytes(&self) -> Result<Bytes> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }
}

/// Appends the 8-byte header of a DATA frame carrying `length` bytes; the caller appends (or
/// writes) the payload itself, which saves copying large payloads.
pub fn encode_data_head(
    out: &mut BytesMut,
    stream_id: StreamId,
    flags: u8,
    length: usize,
) -> Result<()> {
    let id = self::stream_id(stream_id, "data")?;
    if length > MAX_PAYLOAD {
        return Err(Error::DataTooLarge { length });
    }
    out.put_u32(id);
    out.put_u32(u32::from(flags) << 24 | length as u32);
    Ok(())
}

fn control_head(
    out: &mut BytesMut,
    kind: u16,
    flags: u8,
    length: usize,
    name: &'static str,
) -> Result<()> {
    if length > MAX_PAYLOAD {
        return Err(Error::FrameTooLarge {
            kind: name,
            length,
            max: MAX_PAYLOAD,
        });
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32(u32::from(flags) << 24 | length as u32);
    Ok(())
}

/// A stream id to write where 0 is not allowed.
fn stream_id(id: StreamId, kind: &'static str) -> Result<u32> {
    nonzero(id31(id)?, kind)
}

fn id31(id: StreamId) -> Result<u32> {
    if id > MAX_STREAM_ID {
        return Err(Error::InvalidStreamId { stream_id: id });
    }
    Ok(id)
}

fn nonzero(id: StreamId, kind: &'static str) -> Result<StreamId> {
    if id == 0 {
        return Err(Error::ZeroStreamId { kind });
    }
    Ok(id)
}

/// The big-endian u32 at `at`; 0 past the end (callers check lengths first).
fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_be_bytes(word)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
