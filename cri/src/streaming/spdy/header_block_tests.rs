use super::*;

/// Adler-32 as RFC 1950 defines it, written out here so the dictionary id is checked against
/// an implementation other than zlib's.
fn adler32(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in bytes {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    b << 16 | a
}

fn kube_headers(streamtype: &str) -> Headers {
    [
        ("streamtype", streamtype),
        ("port", "8080"),
        ("requestid", "0"),
    ]
    .into_iter()
    .collect()
}

/// The raw block of `pairs`, built by hand.
fn raw(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    raw_with_count(pairs.len() as u32, pairs)
}

fn raw_with_count(count: u32, pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = count.to_be_bytes().to_vec();
    for (name, value) in pairs {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

#[test]
fn test_dictionary_adler32_matches() {
    assert_eq!(SPDY3_DICTIONARY.len(), 1423);
    assert_eq!(adler32(SPDY3_DICTIONARY), SPDY3_DICTIONARY_ID);
    assert_eq!(SPDY3_DICTIONARY_ID, 0xe3c6_a7c2);
    // Spot checks of the start and the end of the dictionary text.
    assert!(SPDY3_DICTIONARY.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
    assert!(SPDY3_DICTIONARY.ends_with(b"utf-,*,enq=0."));
}

#[test]
fn test_header_block_raw_round_trip() {
    let mut headers = kube_headers("stdout");
    headers.push("Accept", "text/plain");
    headers.push("accept", "text/html");
    let block = encode_block(&headers).unwrap();
    // Names are lower-cased; the two accept values share one NUL-joined pair.
    assert_eq!(
        block,
        raw(&[
            (b"streamtype", b"stdout"),
            (b"port", b"8080"),
            (b"requestid", b"0"),
            (b"accept", b"text/plain\0text/html"),
        ])
    );
    let decoded = decode_block(&block).unwrap();
    assert_eq!(decoded, headers);
    assert_eq!(decoded.get("STREAMTYPE"), Some("stdout"));
    assert_eq!(
        decoded.get_all("accept").collect::<Vec<_>>(),
        ["text/plain", "text/html"]
    );
    assert_eq!(decoded.get("missing"), None);
}

#[test]
fn test_header_block_empty_round_trip() {
    let mut compressor = HeaderCompressor::new().unwrap();
    let mut decompressor = HeaderDecompressor::new();
    let block = compressor.compress(&Headers::new()).unwrap();
    assert_eq!(decompressor.decompress(&block).unwrap(), Headers::new());
}

#[test]
fn test_header_block_compressed_sequence_round_trip() {
    let mut compressor = HeaderCompressor::new().unwrap();
    let mut decompressor = HeaderDecompressor::new();
    let mut blocks = Vec::new();
    for streamtype in [
        "error", "stdin", "stdout", "stderr", "resize", "data", "error",
    ] {
        let headers = kube_headers(streamtype);
        blocks.push((compressor.compress(&headers).unwrap(), headers));
    }
    // A large block in the middle, to cross zlib's internal buffers.
    let mut big = Headers::new();
    for i in 0..200 {
        big.push(format!("x-header-{i}"), "v".repeat(i));
    }
    blocks.push((compressor.compress(&big).unwrap(), big));
    blocks.push((
        compressor.compress(&kube_headers("stdout")).unwrap(),
        kube_headers("stdout"),
    ));
    for (block, headers) in &blocks {
        // Each block ends with the sync flush marker, so it decodes on its own.
        assert!(block.ends_with(&[0, 0, 0xff, 0xff]), "{block:?}");
        assert_eq!(&decompressor.decompress(block).unwrap(), headers);
    }
    // Later blocks reuse the shared context: repeated headers shrink to a few bytes.
    assert!(blocks[6].0.len() < blocks[0].0.len(), "{blocks:?}");
}

#[test]
fn test_header_block_first_block_carries_dictionary_id() {
    let mut compressor = HeaderCompressor::new().unwrap();
    let block = compressor.compress(&kube_headers("error")).unwrap();
    let (cmf, flg) = (block[0], block[1]);
    assert_eq!(cmf & 0x0f, 8, "deflate");
    assert_eq!(
        (u16::from(cmf) << 8 | u16::from(flg)) % 31,
        0,
        "header check"
    );
    assert_ne!(flg & 0x20, 0, "FDICT set");
    let id = u32::from_be_bytes([block[2], block[3], block[4], block[5]]);
    assert_eq!(id, 0xe3c6_a7c2);
    // Only the first block carries a zlib header.
    let second = compressor.compress(&kube_headers("data")).unwrap();
    assert_ne!(&second[..2], &block[..2]);
}

/// Three consecutive blocks compressed by CPython's zlib module (the C zlib) with the SPDY/3
/// dictionary and Z_SYNC_FLUSH after each, as a SPDY peer's header stream would be.
const PYTHON_BLOCKS: [&str; 3] = [
    "78f9e3c6a7c202253a703a2b294a4dcc851625aca9a0808614cb45e01c6061606100a4398b20d198094ade8c0600000000ffff",
    "c2aa19540e2512d60b000000ffff",
    "021128c5ba08c2e30cf01005000000ffff",
];

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn test_header_block_decodes_independent_zlib_fixture() {
    let mut decompressor = HeaderDecompressor::new();
    let first = decompressor.decompress(&unhex(PYTHON_BLOCKS[0])).unwrap();
    assert_eq!(first, kube_headers("error"));
    let second = decompressor.decompress(&unhex(PYTHON_BLOCKS[1])).unwrap();
    assert_eq!(second, kube_headers("data"));
    let third = decompressor.decompress(&unhex(PYTHON_BLOCKS[2])).unwrap();
    assert_eq!(
        third.get_all("accept").collect::<Vec<_>>(),
        ["text/plain", "text/html"]
    );
}

#[test]
fn test_header_block_out_of_order_fixture_fails() {
    // The second block alone is not a zlib stream start.
    let mut decompressor = HeaderDecompressor::new();
    assert!(decompressor.decompress(&unhex(PYTHON_BLOCKS[1])).is_err());
}

#[test]
fn test_header_block_malformed_raw_blocks_fail() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "truncated"),
        (vec![0, 0, 1], "truncated"),
        (raw_with_count(5, &[(b"a", b"b")]), "truncated"),
        (raw_with_count(2000, &[]), "more than the cap"),
        (raw(&[(b"", b"v")]), "empty header name"),
        (raw(&[(b"Streamtype", b"v")]), "not lower case"),
        (raw(&[(b"a", b"1"), (b"a", b"2")]), "appears twice"),
        (raw(&[(b"a\xff", b"1")]), "not utf-8"),
        (raw(&[(b"a", b"\xc3")]), "not utf-8"),
        (
            [raw(&[(b"a", b"1")]), vec![0]].concat(),
            "after its last header",
        ),
        (
            [0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, b'a'].to_vec(),
            "truncated",
        ),
    ];
    for (block, expected) in cases {
        let error = decode_block(&block).unwrap_err().to_string();
        assert!(error.contains(expected), "{block:?}: {error}");
    }
}

#[test]
fn test_header_block_too_many_values_fails() {
    let value = vec![b'\0'; MAX_HEADERS];
    let block = raw(&[(b"a", &value)]);
    assert!(matches!(
        decode_block(&block),
        Err(Error::TooManyHeaders { .. })
    ));
}

#[test]
fn test_header_block_encode_rejects_bad_headers() {
    let mut nul = Headers::new();
    nul.push("a", "x\0y");
    assert!(matches!(
        encode_block(&nul),
        Err(Error::HeaderHasNul { .. })
    ));
    let mut empty = Headers::new();
    empty.push("", "x");
    assert!(matches!(encode_block(&empty), Err(Error::EmptyHeaderName)));
    let mut huge = Headers::new();
    huge.push("a", "x".repeat(MAX_HEADER_BLOCK));
    assert!(matches!(
        encode_block(&huge),
        Err(Error::HeaderBlockTooLarge { .. })
    ));
}

#[test]
fn test_header_block_garbage_zlib_fails() {
    let mut decompressor = HeaderDecompressor::new();
    let err = decompressor
        .decompress(b"this is not zlib at all")
        .unwrap_err();
    assert!(matches!(err, Error::Decompress(_)), "{err}");
}

#[test]
fn test_header_block_truncated_zlib_fails() {
    let mut compressor = HeaderCompressor::new().unwrap();
    let block = compressor.compress(&kube_headers("stdin")).unwrap();
    let mut decompressor = HeaderDecompressor::new();
    let err = decompressor
        .decompress(&block[..block.len() - 8])
        .unwrap_err();
    assert!(matches!(err, Error::HeaderBlockTruncated { .. }), "{err}");
}

#[test]
fn test_header_block_wrong_dictionary_fails() {
    let mut other = Compress::new(Compression::default(), true);
    other
        .set_dictionary(b"another dictionary entirely")
        .unwrap();
    let mut block = Vec::with_capacity(256);
    other
        .compress_vec(&raw(&[(b"a", b"b")]), &mut block, FlushCompress::Sync)
        .unwrap();
    let err = HeaderDecompressor::new().decompress(&block).unwrap_err();
    assert!(
        matches!(
            err,
            Error::WrongDictionary {
                expected: 0xe3c6_a7c2,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn test_header_block_without_dictionary_decodes() {
    // A zlib stream that asks for no dictionary is still a zlib stream; Go accepts it too.
    let mut plain = Compress::new(Compression::default(), true);
    let mut block = Vec::with_capacity(256);
    let raw = raw(&[(b"streamtype", b"stdin")]);
    plain
        .compress_vec(&raw, &mut block, FlushCompress::Sync)
        .unwrap();
    let headers = HeaderDecompressor::new().decompress(&block).unwrap();
    assert_eq!(headers.get("streamtype"), Some("stdin"));
}

#[test]
fn test_header_block_decompression_bomb_capped() {
    // 1 MiB of zeros compresses to about a kilobyte; decompressing stops at the cap.
    let mut compressor = HeaderCompressor::new().unwrap();
    let block = compressor.compress_raw(&vec![0; 1 << 20]).unwrap();
    assert!(block.len() < 8 * 1024, "{}", block.len());
    let err = HeaderDecompressor::new().decompress(&block).unwrap_err();
    assert!(matches!(err, Error::HeaderBlockTooLarge { .. }), "{err}");
}

#[test]
fn test_header_block_finished_zlib_stream_fails() {
    let mut compressor = Compress::new(Compression::default(), true);
    compressor.set_dictionary(SPDY3_DICTIONARY).unwrap();
    let mut block = Vec::with_capacity(256);
    compressor
        .compress_vec(&raw(&[(b"a", b"b")]), &mut block, FlushCompress::Finish)
        .unwrap();
    let err = HeaderDecompressor::new().decompress(&block).unwrap_err();
    assert!(matches!(err, Error::HeaderStreamEnded), "{err}");
}

#[test]
fn test_header_block_random_garbage_never_panics() {
    let mut state = 7u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
        (state >> 33) as u8
    };
    let mut compressor = HeaderCompressor::new().unwrap();
    let valid = compressor.compress(&kube_headers("stdout")).unwrap();
    for round in 0..5_000 {
        let mut block = if round % 2 == 0 {
            valid.to_vec()
        } else {
            (0..usize::from(next()) % 64).map(|_| next()).collect()
        };
        if !block.is_empty() {
            let at = usize::from(next()) % block.len();
            block[at] ^= next() | 1;
        }
        let _ = HeaderDecompressor::new().decompress(&block);
        let _ = decode_block(&block);
    }
}
