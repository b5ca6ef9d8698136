#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = (ATTR_HEADER_LEN + value.len()) as u16;
    let mut out = Vec::new();
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(align(out.len()), 0);
    out
}

fn message(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let len = (HEADER_LEN + payload.len()) as u32;
    let mut out = Vec::new();
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&0x2u16.to_ne_bytes()); // NLM_F_MULTI
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&1234u32.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(align(out.len()), 0);
    out
}

/// `rtnl_link_stats64` with the first eight fields set from `base` (base, base+1, ...) and
/// the rest of the 24 fields zero.
fn stats64(base: u64) -> Vec<u8> {
    (0..24u64)
        .flat_map(|i| if i < 8 { base + i } else { 0 }.to_ne_bytes())
        .collect()
}

fn stats32(base: u32) -> Vec<u8> {
    (0..23u32)
        .flat_map(|i| if i < 8 { base + i } else { 0 }.to_ne_bytes())
        .collect()
}

fn name(name: &str) -> Vec<u8> {
    attribute(IFLA_IFNAME, format!("{name}\0").as_bytes())
}

fn link(seq: u32, attributes: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = vec![0u8; IFINFOMSG_LEN];
    payload[4..8].copy_from_slice(&7i32.to_ne_bytes()); // ifi_index
    // An unrelated attribute first, as the kernel sends many.
    payload.extend(attribute(4, &1500u32.to_ne_bytes())); // IFLA_MTU
    for attribute in attributes {
        payload.extend_from_slice(attribute);
    }
    message(RTM_NEWLINK, seq, &payload)
}

fn done(seq: u32) -> Vec<u8> {
    message(NLMSG_DONE, seq, &0i32.to_ne_bytes())
}

/// Expected stats for counters set by `stats64(base)` / `stats32(base)`: the kernel order is
/// rx_packets, tx_packets, rx_bytes, tx_bytes, rx_errors, tx_errors, rx_dropped, tx_dropped.
fn expected(name: &str, base: u64) -> InterfaceStats {
    InterfaceStats {
        name: name.into(),
        rx_packets: base,
        tx_packets: base + 1,
        rx_bytes: base + 2,
        tx_bytes: base + 3,
        rx_errors: base + 4,
        tx_errors: base + 5,
        rx_dropped: base + 6,
        tx_dropped: base + 7,
    }
}

#[test]
fn test_link_dump_request_layout() {
    let request = link_dump_request(0xABCD);
    assert_eq!(read_u32(&request, 0), Some(32));
    assert_eq!(read_u16(&request, 4), Some(RTM_GETLINK));
    assert_eq!(read_u16(&request, 6), Some(0x301));
    assert_eq!(read_u32(&request, 8), Some(0xABCD));
    assert!(request[12..].iter().all(|b| *b == 0));
}

#[test]
fn test_parse_datagram_links_then_done() {
    let mut datagram = link(5, &[name("lo"), attribute(IFLA_STATS64, &stats64(100))]);
    // Only the 32-bit counters: the fallback.
    datagram.extend(link(
        5,
        &[attribute(IFLA_STATS, &stats32(200)), name("eth0")],
    ));
    datagram.extend(done(5));
    let mut links = Vec::new();
    assert_eq!(
        parse_datagram(&datagram, 5, &mut links).unwrap(),
        Progress::Done
    );
    assert_eq!(links, vec![expected("lo", 100), expected("eth0", 200)]);
}

#[test]
fn test_parse_datagram_without_done_wants_more() {
    let datagram = link(5, &[name("lo"), attribute(IFLA_STATS64, &stats64(1))]);
    let mut links = Vec::new();
    assert_eq!(
        parse_datagram(&datagram, 5, &mut links).unwrap(),
        Progress::More
    );
    assert_eq!(links.len(), 1);
}

#[test]
fn test_parse_link_prefers_stats64() {
    let datagram = link(
        1,
        &[
            attribute(IFLA_STATS, &stats32(10)),
            attribute(IFLA_STATS64, &stats64(5_000_000_000)),
            name("eth0"),
        ],
    );
    let mut links = Vec::new();
    parse_datagram(&datagram, 1, &mut links).unwrap();
    assert_eq!(links, vec![expected("eth0", 5_000_000_000)]);
}

#[test]
fn test_parse_link_short_stats64_falls_back() {
    let short = &stats64(9)[..40];
    let datagram = link(
        1,
        &[
            name("eth0"),
            attribute(IFLA_STATS64, short),
            attribute(IFLA_STATS, &stats32(3)),
        ],
    );
    let mut links = Vec::new();
    parse_datagram(&datagram, 1, &mut links).unwrap();
    assert_eq!(links, vec![expected("eth0", 3)]);
}

#[test]
fn test_parse_link_without_name_or_counters_skipped() {
    let mut datagram = link(1, &[attribute(IFLA_STATS64, &stats64(1))]);
    datagram.extend(link(1, &[name("nostats")]));
    datagram.extend(link(1, &[name(""), attribute(IFLA_STATS64, &stats64(1))]));
    let mut links = Vec::new();
    assert_eq!(
        parse_datagram(&datagram, 1, &mut links).unwrap(),
        Progress::More
    );
    assert!(links.is_empty());
}

#[test]
fn test_parse_link_masks_attribute_flags() {
    // NLA_F_NESTED (0x8000) set on the name attribute type must not hide it.
    let datagram = link(
        1,
        &[
            attribute(IFLA_IFNAME | 0x8000, b"veth1\0"),
            attribute(IFLA_STATS64, &stats64(1)),
        ],
    );
    let mut links = Vec::new();
    parse_datagram(&datagram, 1, &mut links).unwrap();
    assert_eq!(links[0].name, "veth1");
}

#[test]
fn test_parse_datagram_skips_stale_sequence() {
    let mut datagram = link(4, &[name("old"), attribute(IFLA_STATS64, &stats64(1))]);
    datagram.extend(done(4));
    datagram.extend(link(
        5,
        &[name("new"), attribute(IFLA_STATS64, &stats64(1))],
    ));
    datagram.extend(done(5));
    let mut links = Vec::new();
    assert_eq!(
        parse_datagram(&datagram, 5, &mut links).unwrap(),
        Progress::Done
    );
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].name, "new");
}

#[test]
fn test_parse_datagram_error_reply() {
    let mut payload = (-libc::EBUSY).to_ne_bytes().to_vec();
    payload.extend_from_slice(&link_dump_request(9)); // The kernel echoes the request.
    let datagram = message(NLMSG_ERROR, 9, &payload);
    let error = parse_datagram(&datagram, 9, &mut Vec::new()).unwrap_err();
    match error {
        Error::NetlinkRefused { source, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::EBUSY))
        }
        other => panic!("unexpected {other:?}"),
    }
    let ack = message(NLMSG_ERROR, 9, &0i32.to_ne_bytes());
    assert_eq!(
        parse_datagram(&ack, 9, &mut Vec::new()).unwrap(),
        Progress::Done
    );
}

#[test]
fn test_parse_datagram_done_with_error_code() {
    let datagram = message(NLMSG_DONE, 2, &(-libc::EINVAL).to_ne_bytes());
    assert!(matches!(
        parse_datagram(&datagram, 2, &mut Vec::new()),
        Err(Error::NetlinkRefused { .. })
    ));
    // A bare NLMSG_DONE without payload is fine too.
    assert_eq!(
        parse_datagram(&message(NLMSG_DONE, 2, &[]), 2, &mut Vec::new()).unwrap(),
        Progress::Done
    );
}

#[test]
fn test_parse_datagram_rejects_bad_lengths() {
    let good = link(1, &[name("eth0"), attribute(IFLA_STATS64, &stats64(1))]);
    let mut too_long = good.clone();
    too_long[0..4].copy_from_slice(&((good.len() + 4) as u32).to_ne_bytes());
    let mut too_short = good.clone();
    too_short[0..4].copy_from_slice(&8u32.to_ne_bytes());
    let mut bad_attribute = good.clone();
    // The first attribute (IFLA_MTU) claims to be 2 bytes long.
    let first_attribute = HEADER_LEN + IFINFOMSG_LEN;
    bad_attribute[first_attribute..first_attribute + 2].copy_from_slice(&2u16.to_ne_bytes());
    let short_link = message(RTM_NEWLINK, 1, &[0u8; 8]);
    let short_error = message(NLMSG_ERROR, 1, &[0u8; 2]);
    for datagram in [
        &too_long,
        &too_short,
        &bad_attribute,
        &short_link,
        &short_error,
    ] {
        let result = parse_datagram(datagram, 1, &mut Vec::new());
        assert!(
            matches!(result, Err(Error::NetlinkMalformed { .. })),
            "{result:?}"
        );
    }
}

#[test]
fn test_parse_datagram_every_prefix_no_panic() {
    let mut datagram = link(3, &[name("eth0"), attribute(IFLA_STATS64, &stats64(1))]);
    datagram.extend(done(3));
    for end in 0..datagram.len() {
        // Errors are fine, panics are not; a prefix never yields a wrong link.
        let mut links = Vec::new();
        if parse_datagram(&datagram[..end], 3, &mut links).is_ok() {
            assert!(links.is_empty() || links == vec![expected("eth0", 1)]);
        }
    }
}

#[test]
fn test_parse_datagram_random_bytes_no_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2000 {
        let len = (next() % 200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Often give it a plausible header so parsing goes deeper.
        if bytes.len() >= HEADER_LEN && next() % 2 == 0 {
            let total = bytes.len() as u32;
            bytes[0..4].copy_from_slice(&total.to_ne_bytes());
            bytes[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
            bytes[8..12].copy_from_slice(&7u32.to_ne_bytes());
        }
        let _ = parse_datagram(&bytes, 7, &mut Vec::new());
    }
}

#[test]
fn test_parse_datagram_caps_link_count() {
    let datagram = link(1, &[name("eth0"), attribute(IFLA_STATS64, &stats64(1))]);
    let mut links = vec![InterfaceStats::default(); MAX_INTERFACES];
    assert!(matches!(
        parse_datagram(&datagram, 1, &mut links),
        Err(Error::NetlinkMalformed { .. })
    ));
    assert_eq!(links.len(), MAX_INTERFACES);
}
