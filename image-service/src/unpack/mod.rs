//! Layer unpacking: one (compressed) tar layer into a directory that becomes the layer's
//! overlayfs "diff" directory.
//!
//! The stream is decompressed, hashed (the diff id is the sha256 of the uncompressed tar,
//! trailing padding included) and written entry by entry with our own code rather than tar-rs'
//! `unpack`, so that:
//!
//! - nothing is ever written outside the layer directory: every parent directory is opened
//!   component by component with `openat(O_NOFOLLOW | O_DIRECTORY)` from the layer root, and
//!   an entry whose parent goes through a symlink is refused;
//! - absolute names are taken relative to the layer root as containerd does (all leading `/`
//!   and `./` are stripped), while `..` anywhere, NUL bytes and hard links to anything not
//!   already in the layer are refused with [`Error::HostileLayer`];
//! - devices and FIFOs are created with mknod, and owners, modes (setuid, setgid and sticky
//!   bits included), mtimes (nanoseconds from PAX) and PAX `SCHILY.xattr.*` records are kept;
//! - OCI whiteouts become their overlayfs form: `.wh.<name>` a 0:0 character device `<name>`,
//!   `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory; other `.wh..wh.*`
//!   entries are ignored.
//!
//! Symlink targets are kept as they are: overlayfs resolves them inside the container.
//! Nothing is synced: the caller does one `syncfs` for the layer. On error the caller deletes
//! the directory; nothing is rolled back here.

mod fsops;
mod stream;
mod write;

#[cfg(test)]
mod tests;

use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use crate::Error;
use write::LayerWriter;

/// Buffer around the compressed input.
const INPUT_BUFFER: usize = 256 * 1024;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerCompression {
    None,
    Gzip,
    Zstd,
}

impl LayerCompression {
    /// The compression of an OCI or Docker layer media type (parameters after `;` ignored);
    /// `None` for a media type that is not a layer.
    pub fn from_media_type(media_type: &str) -> Option<Self> {
        let media_type = media_type.split(';').next().unwrap_or_default().trim();
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Some(Self::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Self::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The compression recognized from the first bytes of a blob (at least 4 for gzip and
    /// zstd, 262 to recognize an uncompressed ustar/GNU tar); `None` when unknown.
    pub fn sniff(first_bytes: &[u8]) -> Option<Self> {
        const GZIP: &[u8] = &[0x1f, 0x8b];
        const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
        if first_bytes.starts_with(GZIP) {
            return Some(Self::Gzip);
        }
        if first_bytes.starts_with(ZSTD) {
            return Some(Self::Zstd);
        }
        // zstd skippable frames: magic 0x184D2A50..=0x184D2A5F, little endian.
        if first_bytes.len() >= 4
            && first_bytes[0] & 0xf0 == 0x50
            && first_bytes[1..4] == [0x2a, 0x4d, 0x18]
        {
            return Some(Self::Zstd);
        }
        if first_bytes.get(257..262) == Some(b"ustar") {
            return Some(Self::None);
        }
        None
    }
}

/// What unpacking a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// `sha256:<hex>` of the uncompressed tar stream, to check against the image config's
    /// `rootfs.diff_ids` (which also catches a stream cut at an entry boundary).
    pub diff_id: String,
    /// Length of the uncompressed tar stream.
    pub uncompressed_bytes: u64,
    /// Tar entries written (whiteouts included, PAX and GNU long-name headers not).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub files_bytes: u64,
}

/// Whether the last component of `name` is an OCI whiteout (`.wh.` prefix, the opaque marker
/// `.wh..wh..opq` included).
pub fn is_whiteout_name(name: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    let base = match name.iter().rposition(|&b| b == b'/') {
        Some(slash) => &name[slash + 1..],
        None => name,
    };
    base.starts_with(b".wh.")
}

/// Unpacks one layer blob into `dest`, an existing empty directory, and returns its diff id
/// and counts. Blocking: run it on a blocking thread. The calling thread reads, decompresses
/// and hashes the stream while a scoped helper thread writes the entries, so that both halves
/// of the work overlap.
pub fn unpack_layer<R: Read>(
    compressed: R,
    compression: LayerCompression,
    dest: &Path,
) -> Result<UnpackStats, Error> {
    let input = BufReader::with_capacity(INPUT_BUFFER, compressed);
    let decoder = Decoder::new(input, compression).map_err(Error::LayerArchive)?;
    let (pumped, written) =
        stream::pipeline(decoder, |tar| write_tar(tar, dest)).map_err(|source| Error::Io {
            op: "start unpack thread",
            path: dest.to_path_buf(),
            source,
        })?;
    let pumped = pumped.map_err(Error::LayerArchive)?;
    let (entries, files_bytes) = written?;
    tracing::debug!(
        path = %dest.display(),
        entries,
        uncompressed_bytes = pumped.bytes,
        "layer unpacked"
    );
    Ok(UnpackStats {
        diff_id: format!("sha256:{}", hex::encode(pumped.digest)),
        uncompressed_bytes: pumped.bytes,
        entries,
        files_bytes,
    })
}

/// Writes the entries of the tar stream into `dest`, then reads the stream to its end (the
/// end-of-archive blocks and padding).
fn write_tar<T: Read>(tar: T, dest: &Path) -> Result<(u64, u64), Error> {
    let mut writer = LayerWriter::new(dest)?;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(Error::LayerArchive)? {
        let mut entry = entry.map_err(Error::LayerArchive)?;
        writer.write_entry(&mut entry)?;
    }
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(Error::LayerArchive)?;
    writer.finish()
}

/// The decompressor for a layer.
enum Decoder<R: BufRead> {
    Plain(R),
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Decoder<R> {
    fn new(input: R, compression: LayerCompression) -> io::Result<Self> {
        Ok(match compression {
            LayerCompression::None => Self::Plain(input),
            LayerCompression::Gzip => {
                Self::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(input)))
            }
            LayerCompression::Zstd => Self::Zstd(zstd::stream::read::Decoder::with_buffer(input)?),
        })
    }
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(r) => r.read(buf),
            Self::Gzip(r) => r.read(buf),
            Self::Zstd(r) => r.read(buf),
        }
    }
}
