//! The few rtnetlink messages a link dump needs: the `RTM_GETLINK` dump request and the
//! parsing of its replies (`RTM_NEWLINK` with `IFLA_IFNAME` and `IFLA_STATS64`/`IFLA_STATS`,
//! `NLMSG_DONE`, `NLMSG_ERROR`). All lengths are checked: a short or inconsistent reply is
//! an error, never a panic or an out-of-bounds read.

use std::io;

use super::InterfaceStats;
use crate::Error;

/// `struct nlmsghdr`: length, type, flags, sequence number, port id.
const HEADER_LEN: usize = 16;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG_LEN: usize = 16;
/// `struct rtattr`: length, type.
const ATTR_HEADER_LEN: usize = 4;

const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;

const IFLA_IFNAME: u16 = 3;
const IFLA_STATS: u16 = 7;
const IFLA_STATS64: u16 = 23;
/// Clears `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` from an attribute type.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// More interfaces than this in one dump is treated as a broken reply.
pub(super) const MAX_INTERFACES: usize = 16 * 1024;

/// Where a dump stands after one datagram.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Progress {
    /// More datagrams follow.
    More,
    /// `NLMSG_DONE` (or a final ack) was seen.
    Done,
}

/// The `RTM_GETLINK` dump request for all links, with sequence number `seq`.
pub(super) fn link_dump_request(seq: u32) -> [u8; HEADER_LEN + IFINFOMSG_LEN] {
    let mut message = [0u8; HEADER_LEN + IFINFOMSG_LEN];
    let len = (HEADER_LEN + IFINFOMSG_LEN) as u32;
    message[0..4].copy_from_slice(&len.to_ne_bytes());
    message[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    message[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    message[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0 (the kernel fills in ours) and an all-zero ifinfomsg: AF_UNSPEC, any link.
    message
}

/// Parses one received datagram of the dump with sequence number `seq`, appending the links
/// to `links`. Messages of another sequence number (left over from an abandoned dump) are
/// skipped.
pub(super) fn parse_datagram(
    datagram: &[u8],
    seq: u32,
    links: &mut Vec<InterfaceStats>,
) -> Result<Progress, Error> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let len = read_u32(rest, 0).ok_or_else(|| malformed("message header cut short"))? as usize;
        if len < HEADER_LEN || len > rest.len() {
            return Err(malformed(format!(
                "message length {len} with {} bytes left",
                rest.len()
            )));
        }
        let kind = read_u16(rest, 4).unwrap_or_default();
        let flags = read_u16(rest, 6).unwrap_or_default();
        let message_seq = read_u32(rest, 8).unwrap_or_default();
        let payload = rest.get(HEADER_LEN..len).unwrap_or_default();
        rest = rest.get(align(len)..).unwrap_or_default();
        if message_seq != seq {
            tracing::debug!(
                seq = message_seq,
                expected = seq,
                "skipping stale netlink message"
            );
            continue;
        }
        if flags & NLM_F_DUMP_INTR != 0 {
            tracing::debug!("link dump interrupted by a change; counters may be inconsistent");
        }
        match kind {
            NLMSG_NOOP => {}
            NLMSG_DONE => {
                // Since 4.x the kernel may put the dump's error code here.
                return match read_i32(payload, 0) {
                    Some(code) if code < 0 => Err(refused(code)),
                    _ => Ok(Progress::Done),
                };
            }
            NLMSG_ERROR => {
                let code =
                    read_i32(payload, 0).ok_or_else(|| malformed("error message cut short"))?;
                return if code == 0 {
                    Ok(Progress::Done)
                } else {
                    Err(refused(code))
                };
            }
            NLMSG_OVERRUN => return Err(malformed("overrun")),
            RTM_NEWLINK => {
                if links.len() >= MAX_INTERFACES {
                    return Err(malformed(format!("more than {MAX_INTERFACES} links")));
                }
                if let Some(link) = parse_link(payload)? {
                    links.push(link);
                }
            }
            other => tracing::debug!(kind = other, "skipping unexpected netlink message"),
        }
    }
    Ok(Progress::More)
}

/// One `RTM_NEWLINK` payload: `ifinfomsg` then attributes. `None` for a link without a name
/// or without usable counters (logged at debug).
fn parse_link(payload: &[u8]) -> Result<Option<InterfaceStats>, Error> {
    let mut attributes = payload
        .get(IFINFOMSG_LEN..)
        .ok_or_else(|| malformed("link message shorter than ifinfomsg"))?;
    let mut name = None;
    let mut stats64 = None;
    let mut stats32 = None;
    while !attributes.is_empty() {
        let len = read_u16(attributes, 0).ok_or_else(|| malformed("attribute header cut short"))?
            as usize;
        if len < ATTR_HEADER_LEN || len > attributes.len() {
            return Err(malformed(format!(
                "attribute length {len} with {} bytes left",
                attributes.len()
            )));
        }
        let kind = read_u16(attributes, 2).unwrap_or_default() & NLA_TYPE_MASK;
        let value = attributes.get(ATTR_HEADER_LEN..len).unwrap_or_default();
        attributes = attributes.get(align(len)..).unwrap_or_default();
        match kind {
            IFLA_IFNAME => {
                let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                name = value
                    .get(..end)
                    .map(|bytes| String::from_utf8_lossy(bytes).into_owned());
            }
            IFLA_STATS64 => stats64 = counters(value, 8),
            IFLA_STATS => stats32 = counters(value, 4),
            _ => {}
        }
    }
    let Some(name) = name.filter(|name| !name.is_empty()) else {
        tracing::debug!("skipping link without a name");
        return Ok(None);
    };
    let Some(
        [
            rx_packets,
            tx_packets,
            rx_bytes,
            tx_bytes,
            rx_errors,
            tx_errors,
            rx_dropped,
            tx_dropped,
        ],
    ) = stats64.or(stats32)
    else {
        tracing::debug!(link = %name, "skipping link without counters");
        return Ok(None);
    };
    Ok(Some(InterfaceStats {
        name,
        rx_bytes,
        rx_packets,
        rx_errors,
        rx_dropped,
        tx_bytes,
        tx_packets,
        tx_errors,
        tx_dropped,
    }))
}

/// The first eight fields of `rtnl_link_stats64` (`width` 8) or `rtnl_link_stats` (`width`
/// 4): rx/tx packets, rx/tx bytes, rx/tx errors, rx/tx dropped. `None` when too short.
fn counters(value: &[u8], width: usize) -> Option<[u64; 8]> {
    let mut fields = [0u64; 8];
    for (i, field) in fields.iter_mut().enumerate() {
        *field = match width {
            8 => u64::from_ne_bytes(value.get(i * 8..i * 8 + 8)?.try_into().ok()?),
            _ => u64::from(read_u32(value, i * 4)?),
        };
    }
    Some(fields)
}

/// Netlink messages and attributes start on 4-byte boundaries.
fn align(len: usize) -> usize {
    len.saturating_add(3) & !3
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::NetlinkMalformed {
        reason: reason.into(),
    }
}

/// An `NLMSG_ERROR`/`NLMSG_DONE` code (a negative errno) as an error.
fn refused(code: i32) -> Error {
    Error::NetlinkRefused {
        request: "link dump",
        source: io::Error::from_raw_os_error(code.checked_neg().unwrap_or(i32::MAX)),
    }
}

#[cfg(test)]
mod tests;
