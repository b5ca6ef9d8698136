use super::*;

fn every_frame() -> Vec<Frame> {
    vec![
        Frame::SynStream(SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 7,
            slot: 0,
            flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
            header_block: Bytes::from_static(b"\x78\xf9compressed"),
        }),
        Frame::SynStream(SynStream {
            stream_id: MAX_STREAM_ID,
            associated_to: 3,
            priority: 2,
            slot: 9,
            flags: 0,
            header_block: Bytes::new(),
        }),
        Frame::SynReply {
            stream_id: 3,
            flags: FLAG_FIN,
            header_block: Bytes::from_static(b"block"),
        },
        Frame::RstStream {
            stream_id: 5,
            status: RstStatus::CANCEL,
        },
        Frame::Settings {
            flags: FLAG_SETTINGS_CLEAR,
            entries: vec![
                Setting {
                    flags: 1,
                    id: 4,
                    value: 100,
                },
                Setting {
                    flags: 0,
                    id: 0x00ff_ffff,
                    value: u32::MAX,
                },
            ],
        },
        Frame::Settings {
            flags: 0,
            entries: Vec::new(),
        },
        Frame::Ping { id: 1 },
        Frame::Ping { id: u32::MAX },
        Frame::GoAway {
            last_good_stream_id: 7,
            status: GoAwayStatus::PROTOCOL_ERROR,
        },
        Frame::Headers {
            stream_id: 9,
            flags: 0,
            header_block: Bytes::from_static(b"more"),
        },
        Frame::WindowUpdate {
            stream_id: 0,
            delta: 0x7fff_ffff,
        },
        Frame::Data {
            stream_id: 11,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"payload"),
        },
        Frame::Data {
            stream_id: 13,
            flags: 0,
            data: Bytes::new(),
        },
    ]
}

fn round_trip(frame: &Frame) -> Frame {
    let bytes = frame.to_bytes().unwrap();
    let (parsed, used) = parse(&bytes).unwrap().expect("a whole frame");
    assert_eq!(used, bytes.len(), "{frame:?}");
    parsed
}

#[test]
fn test_frame_round_trip_every_type() {
    for frame in every_frame() {
        assert_eq!(round_trip(&frame), frame);
    }
}

#[test]
fn test_frame_syn_stream_wire_layout() {
    let frame = Frame::SynStream(SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 3,
        slot: 0,
        flags: FLAG_FIN,
        header_block: Bytes::from_static(b"hb"),
    });
    let bytes = frame.to_bytes().unwrap();
    assert_eq!(
        &bytes[..],
        &[
            0x80, 0x03, 0x00, 0x01, // control, version 3, SYN_STREAM
            0x01, 0x00, 0x00, 0x0c, // FIN, length 12
            0x00, 0x00, 0x00, 0x01, // stream 1
            0x00, 0x00, 0x00, 0x00, // associated 0
            0x60, 0x00, // priority 3, slot 0
            b'h', b'b',
        ]
    );
}

#[test]
fn test_frame_data_wire_layout() {
    let frame = Frame::Data {
        stream_id: 0x0102_0304,
        flags: FLAG_FIN,
        data: Bytes::from_static(b"xyz"),
    };
    let bytes = frame.to_bytes().unwrap();
    assert_eq!(
        &bytes[..],
        &[
            0x01, 0x02, 0x03, 0x04, 0x01, 0x00, 0x00, 0x03, b'x', b'y', b'z'
        ]
    );
}

#[test]
fn test_parse_incomplete_returns_none() {
    for frame in every_frame() {
        let bytes = frame.to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                parse(&bytes[..cut]).unwrap().is_none(),
                "{frame:?} cut {cut}"
            );
        }
    }
}

#[test]
fn test_parse_consecutive_frames() {
    let mut wire = BytesMut::new();
    for frame in every_frame() {
        frame.encode(&mut wire).unwrap();
    }
    let mut rest = &wire[..];
    let mut parsed = Vec::new();
    while let Some((frame, used)) = parse(rest).unwrap() {
        parsed.push(frame);
        rest = &rest[used..];
    }
    assert!(rest.is_empty());
    assert_eq!(parsed, every_frame());
}

#[test]
fn test_parse_wrong_version_fails() {
    let mut bytes = Frame::Ping { id: 1 }.to_bytes().unwrap().to_vec();
    bytes[1] = 2;
    let err = parse(&bytes).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { version: 2 }),
        "{err}"
    );
}

#[test]
fn test_parse_oversize_control_fails_on_header() {
    // SYN_STREAM announcing 16 MiB: refused from the 8 header bytes alone.
    let header = [0x80, 0x03, 0x00, 0x01, 0x00, 0xff, 0xff, 0xff];
    let err = parse(&header).unwrap_err();
    assert!(
        matches!(
            err,
            Error::FrameTooLarge {
                kind: "syn_stream",
                ..
            }
        ),
        "{err}"
    );
    // One byte over the cap is refused too; the cap itself is fine.
    let over = MAX_CONTROL_PAYLOAD + 1;
    let header = [
        0x80,
        0x03,
        0x00,
        0x08,
        0x00,
        (over >> 16) as u8,
        (over >> 8) as u8,
        over as u8,
    ];
    assert!(parse(&header).is_err());
    let at = MAX_CONTROL_PAYLOAD;
    let header = [
        0x80,
        0x03,
        0x00,
        0x08,
        0x00,
        (at >> 16) as u8,
        (at >> 8) as u8,
        at as u8,
    ];
    assert!(parse(&header).unwrap().is_none());
}

/// A control frame of `kind` with `payload`, its length field saying `payload.len()`.
fn control(kind: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, 0x03];
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(flags);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(payload);
    out
}

#[test]
fn test_parse_bad_lengths_fail() {
    let cases: Vec<(u16, Vec<u8>)> = vec![
        (kind::SYN_STREAM, vec![0, 0, 0, 1, 0, 0, 0, 0, 0]),
        (kind::SYN_REPLY, vec![0, 0, 1]),
        (kind::HEADERS, vec![]),
        (kind::RST_STREAM, vec![0, 0, 0, 1, 0, 0, 5]),
        (kind::RST_STREAM, vec![0, 0, 0, 1, 0, 0, 0, 5, 0]),
        (kind::SETTINGS, vec![0, 0, 0]),
        (kind::SETTINGS, vec![0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1]),
        (kind::SETTINGS, vec![0xff, 0xff, 0xff, 0xff]),
        (kind::PING, vec![0, 0, 1]),
        (kind::PING, vec![0, 0, 0, 1, 0]),
        (kind::GOAWAY, vec![0, 0, 0, 1]),
        (kind::WINDOW_UPDATE, vec![0, 0, 0, 1, 0, 0, 1]),
    ];
    for (kind, payload) in cases {
        let err = parse(&control(kind, 0, &payload)).unwrap_err();
        assert!(
            matches!(err, Error::InvalidLength { .. }),
            "kind {kind}: {err}"
        );
    }
}

#[test]
fn test_parse_zero_stream_id_fails() {
    let data = [0, 0, 0, 0, 0, 0, 0, 1, b'x'];
    assert!(matches!(
        parse(&data),
        Err(Error::ZeroStreamId { kind: "data" })
    ));
    let syn = control(kind::SYN_STREAM, 0, &[0; 10]);
    assert!(matches!(parse(&syn), Err(Error::ZeroStreamId { .. })));
    let reply = control(kind::SYN_REPLY, 0, &[0; 4]);
    assert!(matches!(parse(&reply), Err(Error::ZeroStreamId { .. })));
    let rst = control(kind::RST_STREAM, 0, &[0, 0, 0, 0, 0, 0, 0, 5]);
    assert!(matches!(parse(&rst), Err(Error::ZeroStreamId { .. })));
}

#[test]
fn test_parse_rst_status_zero_fails() {
    let rst = control(kind::RST_STREAM, 0, &[0, 0, 0, 3, 0, 0, 0, 0]);
    assert!(matches!(
        parse(&rst),
        Err(Error::ZeroRstStatus { stream_id: 3 })
    ));
}

#[test]
fn test_parse_unknown_type_skipped() {
    let mut wire = control(0x0a, 0x5, &[1, 2, 3]);
    wire.extend(Frame::Ping { id: 3 }.to_bytes().unwrap());
    let (frame, used) = parse(&wire).unwrap().unwrap();
    assert_eq!(
        frame,
        Frame::Unknown {
            kind: 0x0a,
            flags: 0x5,
            length: 3
        }
    );
    assert_eq!(used, 11);
    let (frame, _) = parse(&wire[used..]).unwrap().unwrap();
    assert_eq!(frame, Frame::Ping { id: 3 });
    // Unknown frames have no payload left to write back.
    assert!(frame_unknown().to_bytes().is_err());
}

fn frame_unknown() -> Frame {
    Frame::Unknown {
        kind: 0x0a,
        flags: 0,
        length: 0,
    }
}

#[test]
fn test_parse_masks_reserved_bits() {
    // Reserved high bits of stream ids are ignored, as the spec asks.
    let syn = control(
        kind::SYN_STREAM,
        0,
        &[0x80, 0, 0, 5, 0x80, 0, 0, 1, 0xff, 0x07, b'h'],
    );
    let (frame, _) = parse(&syn).unwrap().unwrap();
    let Frame::SynStream(syn) = frame else {
        panic!("{frame:?}");
    };
    assert_eq!(
        (syn.stream_id, syn.associated_to, syn.priority, syn.slot),
        (5, 1, 7, 7)
    );
    let update = control(kind::WINDOW_UPDATE, 0, &[0x80, 0, 0, 1, 0x80, 0, 0, 2]);
    let (frame, _) = parse(&update).unwrap().unwrap();
    assert_eq!(
        frame,
        Frame::WindowUpdate {
            stream_id: 1,
            delta: 2
        }
    );
}

#[test]
fn test_encode_rejects_what_does_not_fit() {
    let big = Frame::Data {
        stream_id: 1,
        flags: 0,
        data: Bytes::from(vec![0; MAX_PAYLOAD + 1]),
    };
    assert!(matches!(big.to_bytes(), Err(Error::DataTooLarge { .. })));
    let high = Frame::RstStream {
        stream_id: 0x8000_0001,
        status: RstStatus::CANCEL,
    };
    assert!(matches!(
        high.to_bytes(),
        Err(Error::InvalidStreamId { .. })
    ));
    let zero = Frame::Data {
        stream_id: 0,
        flags: 0,
        data: Bytes::new(),
    };
    assert!(matches!(zero.to_bytes(), Err(Error::ZeroStreamId { .. })));
    let block = Frame::SynReply {
        stream_id: 1,
        flags: 0,
        header_block: Bytes::from(vec![0; MAX_PAYLOAD]),
    };
    assert!(matches!(block.to_bytes(), Err(Error::FrameTooLarge { .. })));
}

/// A small deterministic generator, so the "fuzz" runs are reproducible.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = (self.next() as usize) % (max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn test_parse_random_bytes_never_panics() {
    let mut rng = Lcg(0x5eed);
    for _ in 0..20_000 {
        let mut bytes = rng.bytes(64);
        // Steer half the inputs to version 3 control frames with plausible lengths.
        if bytes.len() >= 8 && rng.next() % 2 == 0 {
            bytes[0] = 0x80;
            bytes[1] = 0x03;
            bytes[2] = 0;
            bytes[3] = (rng.next() % 11) as u8;
            bytes[5] = 0;
            bytes[6] = 0;
            bytes[7] = (bytes.len() - 8) as u8;
        }
        let _ = parse(&bytes);
    }
}

#[test]
fn test_parse_mutated_frames_never_panic() {
    let mut rng = Lcg(42);
    let frames: Vec<Vec<u8>> = every_frame()
        .iter()
        .map(|frame| frame.to_bytes().unwrap().to_vec())
        .collect();
    for _ in 0..20_000 {
        let mut bytes = frames[rng.next() as usize % frames.len()].clone();
        for _ in 0..=rng.next() % 3 {
            let at = rng.next() as usize % bytes.len();
            bytes[at] = rng.next() as u8;
        }
        if let Ok(Some((_, used))) = parse(&bytes) {
            assert!(used <= bytes.len());
        }
    }
}
