//! Name/value header blocks and their compression.
//!
//! Uncompressed, a block is a u32 count of pairs, then per pair a u32 length and the name (lower
//! case), a u32 length and the value; several values of one name are joined by NUL bytes. Each
//! direction of a connection compresses all its blocks through one zlib stream that starts with
//! the SPDY/3 preset dictionary; every block ends with a sync flush, so the peer can decode it
//! as soon as the frame arrives. Hence one [`HeaderCompressor`] and one [`HeaderDecompressor`]
//! per connection, fed the blocks in wire order.

use std::collections::HashSet;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::dictionary::{SPDY3_DICTIONARY, SPDY3_DICTIONARY_ID};
use super::{Error, Result};

/// The largest decompressed header block accepted (and encoded).
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// The most headers (name/value pairs, after splitting NUL-joined values) a block may hold.
pub const MAX_HEADERS: usize = 1024;

/// The headers of a stream, in wire order. Names are lower case; a name sent with several
/// NUL-separated values appears once per value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds a header; the name is stored in lower case, as SPDY requires.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let mut name = name.into();
        name.make_ascii_lowercase();
        self.entries.push((name, value.into()));
    }

    /// The first value of `name` (compared without regard to ASCII case).
    pub fn get(&self, name: &str) -> Option<&str> {
        let found = self
            .entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many (name, value) entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Headers {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.push(name, value);
        }
        headers
    }
}

/// Serializes `headers` into an uncompressed block. Values of a repeated name are joined with
/// NUL under the name's first position.
pub fn encode_block(headers: &Headers) -> Result<Vec<u8>> {
    let mut grouped: Vec<(&str, Vec<&str>)> = Vec::new();
    for (name, value) in headers.iter() {
        if name.is_empty() {
            return Err(Error::EmptyHeaderName);
        }
        if name.contains('\0') || value.contains('\0') {
            return Err(Error::HeaderHasNul {
                name: name.to_owned(),
            });
        }
        match grouped.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => grouped.push((name, vec![value])),
        }
    }
    if grouped.len() > MAX_HEADERS {
        return Err(Error::TooManyHeaders {
            count: grouped.len(),
            max: MAX_HEADERS,
        });
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(grouped.len() as u32).to_be_bytes());
    for (name, values) in grouped {
        let value = values.join("\0");
        if out.len() + 8 + name.len() + value.len() > MAX_HEADER_BLOCK {
            return Err(Error::HeaderBlockTooLarge {
                max: MAX_HEADER_BLOCK,
            });
        }
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    Ok(out)
}

/// Parses an uncompressed block. Rejects what the spec calls malformed: empty, upper-case or
/// repeated names, non-UTF-8 text, a count the bytes do not hold, bytes after the last pair.
pub fn decode_block(block: &[u8]) -> Result<Headers> {
    let mut rest = block;
    let count = take_u32(&mut rest, "header count")? as usize;
    if count > MAX_HEADERS {
        return Err(Error::TooManyHeaders {
            count,
            max: MAX_HEADERS,
        });
    }
    let mut headers = Headers::new();
    let mut seen = HashSet::with_capacity(count);
    for _ in 0..count {
        let name = utf8(take_bytes(&mut rest, "header name")?, "name")?;
        if name.is_empty() {
            return Err(Error::EmptyHeaderName);
        }
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Error::UppercaseHeaderName {
                name: name.to_owned(),
            });
        }
        if !seen.insert(name) {
            return Err(Error::DuplicateHeader {
                name: name.to_owned(),
            });
        }
        let value = utf8(take_bytes(&mut rest, "header value")?, "value")?;
        for value in value.split('\0') {
            if headers.len() == MAX_HEADERS {
                return Err(Error::TooManyHeaders {
                    count: MAX_HEADERS + 1,
                    max: MAX_HEADERS,
                });
            }
            headers.entries.push((name.to_owned(), value.to_owned()));
        }
    }
    if !rest.is_empty() {
        return Err(Error::HeaderBlockTrailing { extra: rest.len() });
    }
    Ok(headers)
}

fn take_u32(rest: &mut &[u8], what: &'static str) -> Result<u32> {
    let Some((word, tail)) = rest.split_first_chunk::<4>() else {
        return Err(Error::HeaderBlockTruncated { what });
    };
    *rest = tail;
    Ok(u32::from_be_bytes(*word))
}

fn take_bytes<'a>(rest: &mut &'a [u8], what: &'static str) -> Result<&'a [u8]> {
    let length = take_u32(rest, what)? as usize;
    if length > rest.len() {
        return Err(Error::HeaderBlockTruncated { what });
    }
    let (bytes, tail) = rest.split_at(length);
    *rest = tail;
    Ok(bytes)
}

fn utf8<'a>(bytes: &'a [u8], what: &'static str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|_| Error::HeaderNotUtf8 { what })
}

/// The compressing side of one connection direction.
pub struct HeaderCompressor {
    zlib: Compress,
}

impl HeaderCompressor {
    /// A compressor primed with the SPDY/3 dictionary.
    pub fn new() -> Result<HeaderCompressor> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(SPDY3_DICTIONARY)
            .map_err(Error::Compress)?;
        Ok(HeaderCompressor { zlib })
    }

    /// Encodes and compresses `headers` into the next block of this direction.
    pub fn compress(&mut self, headers: &Headers) -> Result<Bytes> {
        self.compress_raw(&encode_block(headers)?)
    }

    /// Compresses an already encoded block, ending it with a sync flush.
    pub fn compress_raw(&mut self, raw: &[u8]) -> Result<Bytes> {
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut input = raw;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let (in_before, out_before) = (self.zlib.total_in(), self.zlib.total_out());
            let status = self
                .zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(Error::Compress)?;
            let consumed = (self.zlib.total_in() - in_before) as usize;
            let produced = self.zlib.total_out() - out_before;
            input = input.get(consumed..).unwrap_or_default();
            // The flush is complete once zlib stops short of filling the output.
            if input.is_empty() && (out.len() < out.capacity() || status == Status::BufError) {
                return Ok(Bytes::from(out));
            }
            if consumed == 0 && produced == 0 && !input.is_empty() {
                return Err(Error::ZlibStalled {
                    what: "header compressor",
                });
            }
        }
    }
}

/// The decompressing side of one connection direction.
pub struct HeaderDecompressor {
    zlib: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> HeaderDecompressor {
        HeaderDecompressor::new()
    }
}

impl HeaderDecompressor {
    /// A decompressor expecting a zlib stream; the dictionary is supplied when the stream's
    /// header asks for it, after checking it asks for SPDY/3's.
    pub fn new() -> HeaderDecompressor {
        HeaderDecompressor {
            zlib: Decompress::new(true),
        }
    }

    /// Decompresses and parses the next block of this direction.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers> {
        decode_block(&self.decompress_raw(block)?)
    }

    /// Decompresses the next block, up to [`MAX_HEADER_BLOCK`] bytes. Any error leaves the zlib
    /// stream unusable: the connection must end.
    pub fn decompress_raw(&mut self, block: &[u8]) -> Result<Vec<u8>> {
        let too_large = Error::HeaderBlockTooLarge {
            max: MAX_HEADER_BLOCK,
        };
        let mut out =
            Vec::with_capacity(block.len().saturating_mul(4).clamp(256, MAX_HEADER_BLOCK));
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(too_large);
                }
                out.reserve_exact(out.capacity().min(MAX_HEADER_BLOCK - out.len()));
            }
            let (in_before, out_before) = (self.zlib.total_in(), self.zlib.total_out());
            let result = self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = (self.zlib.total_in() - in_before) as usize;
            let produced = self.zlib.total_out() - out_before;
            input = input.get(consumed..).unwrap_or_default();
            if out.len() > MAX_HEADER_BLOCK {
                return Err(too_large);
            }
            match result {
                Ok(Status::StreamEnd) => return Err(Error::HeaderStreamEnded),
                Ok(_) => {
                    if input.is_empty() && out.len() < out.capacity() {
                        return Ok(out);
                    }
                    if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                        return Err(Error::ZlibStalled {
                            what: "header decompressor",
                        });
                    }
                }
                Err(error) => match error.needs_dictionary() {
                    Some(SPDY3_DICTIONARY_ID) => {
                        self.zlib
                            .set_dictionary(SPDY3_DICTIONARY)
                            .map_err(Error::Decompress)?;
                    }
                    Some(found) => {
                        return Err(Error::WrongDictionary {
                            found,
                            expected: SPDY3_DICTIONARY_ID,
                        });
                    }
                    None => return Err(Error::Decompress(error)),
                },
            }
        }
    }
}

#[cfg(test)]
#[path = "header_block_tests.rs"]
mod tests;
