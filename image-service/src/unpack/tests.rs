//! Unit tests of layer unpacking with fixture tars built in memory. Assertions that need root
//! (mknod of devices and whiteouts, chown to other ids, `trusted.*` xattrs) only run as root;
//! without root each such test checks what an unprivileged unpack does instead.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::write::{normalize, parse_pax_time};
use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A fixture layer: a tar built in memory, with raw names so hostile paths can be written.
struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Layer {
    fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: EntryType, path: &str, mode: u32, mtime: u64) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_mode(mode);
        header.set_mtime(mtime);
        header.set_uid(nix::unistd::geteuid().as_raw().into());
        header.set_gid(nix::unistd::getegid().as_raw().into());
        header.set_size(0);
        header
    }

    fn append(&mut self, mut header: Header, data: &[u8]) -> &mut Self {
        header.set_size(data.len() as u64);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    fn dir(&mut self, path: &str, mode: u32, mtime: u64) -> &mut Self {
        self.append(Self::header(EntryType::Directory, path, mode, mtime), b"")
    }

    fn file(&mut self, path: &str, data: &[u8], mode: u32, mtime: u64) -> &mut Self {
        self.append(Self::header(EntryType::Regular, path, mode, mtime), data)
    }

    fn link(&mut self, kind: EntryType, path: &str, target: &str) -> &mut Self {
        let mut header = Self::header(kind, path, 0o777, 1000);
        header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        self.append(header, b"")
    }

    fn node(&mut self, kind: EntryType, path: &str, major: u32, minor: u32) -> &mut Self {
        let mut header = Self::header(kind, path, 0o620, 1000);
        header.set_device_major(major).unwrap();
        header.set_device_minor(minor).unwrap();
        self.append(header, b"")
    }

    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        self.builder
            .append_pax_extensions(records.iter().copied())
            .unwrap();
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        self.builder.finish().unwrap();
        self.builder.get_ref().clone()
    }
}

/// A temp dir holding the layer directory `layer`, so writes beside it can be detected.
struct Fixture {
    tmp: tempfile::TempDir,
    dest: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("layer");
        fs::create_dir(&dest).unwrap();
        Self { tmp, dest }
    }

    fn unpack(&self, tar: &[u8]) -> Result<UnpackStats, Error> {
        unpack_layer(tar, LayerCompression::None, &self.dest)
    }

    /// Names in the temp dir beside the layer directory.
    fn beside(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 3).unwrap()
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn assert_hostile(res: Result<UnpackStats, Error>) {
    match res {
        Err(err @ Error::HostileLayer { .. }) => eprintln!("refused: {err}"),
        other => panic!("expected a hostile layer error, got {other:?}"),
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

#[test]
fn test_unpack_files_dirs_modes_mtimes() {
    let fx = Fixture::new();
    let tar = Layer::new()
        .dir("a/", 0o750, 1000)
        .file("a/f", b"hello", 0o640, 2000)
        .file("a/b/c", b"deep", 0o600, 3000)
        .dir("ro/", 0o555, 4000)
        .file("ro/f", b"x", 0o444, 5000)
        .finish();
    let stats = fx.unpack(&tar).unwrap();
    assert_eq!(stats.entries, 5);
    assert_eq!(stats.files_bytes, 10);
    assert_eq!(fs::read(fx.path("a/f")).unwrap(), b"hello");
    assert_eq!(fs::read(fx.path("a/b/c")).unwrap(), b"deep");
    assert_eq!(mode(&fx.path("a")), 0o750);
    assert_eq!(mode(&fx.path("a/f")), 0o640);
    assert_eq!(mode(&fx.path("ro")), 0o555);
    assert_eq!(mode(&fx.path("ro/f")), 0o444);
    let mtime = |p: &str| fs::symlink_metadata(fx.path(p)).unwrap().mtime();
    // Directory mtimes survive the children written after them.
    assert_eq!(mtime("a"), 1000);
    assert_eq!(mtime("a/f"), 2000);
    assert_eq!(mtime("a/b/c"), 3000);
    assert_eq!(mtime("ro"), 4000);
    assert_eq!(mtime("ro/f"), 5000);
    assert!(fx.path("a/b").is_dir(), "implicit parent is created");
    assert_eq!(fx.beside(), ["layer"]);
}

#[test]
fn test_unpack_ownership_numeric() {
    let fx = Fixture::new();
    let mut header = Layer::header(EntryType::Regular, "owned", 0o644, 1000);
    header.set_uid(1234);
    header.set_gid(5678);
    let tar = Layer::new().append(header, b"x").finish();
    fx.unpack(&tar).unwrap();
    let meta = fs::metadata(fx.path("owned")).unwrap();
    if is_root() {
        assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    } else {
        // Root only: an unprivileged unpack keeps its own ids.
        assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    }
}

#[test]
fn test_unpack_setuid_setgid_sticky_preserved() {
    let fx = Fixture::new();
    let mut setuid = Layer::header(EntryType::Regular, "bin/su", 0o4755, 1000);
    // A different owner forces a chown before the chmod, which must not lose the bit.
    if is_root() {
        setuid.set_uid(1);
    }
    let tar = Layer::new()
        .append(setuid, b"#!")
        .file("bin/sg", b"#!", 0o2711, 1000)
        .dir("tmp/", 0o1777, 1000)
        .finish();
    fx.unpack(&tar).unwrap();
    assert_eq!(mode(&fx.path("bin/su")), 0o4755);
    assert_eq!(mode(&fx.path("bin/sg")), 0o2711);
    assert_eq!(mode(&fx.path("tmp")), 0o1777);
}

#[test]
fn test_unpack_symlink_and_hardlink() {
    let fx = Fixture::new();
    let tar = Layer::new()
        .file("f", b"shared", 0o644, 1000)
        .link(EntryType::Symlink, "l", "/does/not/exist")
        .link(EntryType::Link, "d/h", "f")
        .link(EntryType::Link, "h2", "/f")
        .finish();
    fx.unpack(&tar).unwrap();
    assert_eq!(
        fs::read_link(fx.path("l")).unwrap(),
        Path::new("/does/not/exist")
    );
    let f = fs::metadata(fx.path("f")).unwrap();
    let h = fs::metadata(fx.path("d/h")).unwrap();
    assert_eq!(f.ino(), h.ino());
    assert_eq!(f.nlink(), 3);
    assert_eq!(fs::read(fx.path("h2")).unwrap(), b"shared");
}

#[test]
fn test_unpack_whiteout_char_device() {
    let fx = Fixture::new();
    let tar = Layer::new()
        .file("d/x", b"old", 0o644, 1000)
        .file("d/.wh.x", b"", 0o644, 1000)
        .file(".wh.gone", b"", 0o644, 1000)
        .file("d/.wh..wh.plnk", b"", 0o644, 1000)
        .finish();
    let res = fx.unpack(&tar);
    if !is_root() && res.is_err() {
        // Root only on kernels before 5.8, where even a 0:0 whiteout device needs CAP_MKNOD.
        assert!(
            matches!(
                res,
                Err(Error::Io {
                    op: "create whiteout",
                    ..
                })
            ),
            "{res:?}"
        );
        return;
    }
    res.unwrap();
    for path in ["d/x", "gone"] {
        let meta = fs::symlink_metadata(fx.path(path)).unwrap();
        assert!(meta.file_type().is_char_device(), "{path}");
        assert_eq!(meta.rdev(), 0, "{path}");
    }
    assert!(!fx.path("d/.wh.x").exists());
    assert!(!fx.path(".wh.gone").exists());
    assert!(!fx.path("d/.wh..wh.plnk").exists());
}

#[test]
fn test_unpack_opaque_dir() {
    let fx = Fixture::new();
    let tar = Layer::new()
        .dir("d/", 0o755, 1000)
        .file("d/.wh..wh..opq", b"", 0o644, 1000)
        .file("e/.wh..wh..opq", b"", 0o644, 1000)
        .finish();
    fx.unpack(&tar).unwrap();
    assert!(!fx.path("d/.wh..wh..opq").exists());
    assert!(fx.path("e").is_dir(), "the opaque dir is created");
    if is_root() {
        for dir in ["d", "e"] {
            let value = xattr::get(fx.path(dir), "trusted.overlay.opaque").unwrap();
            assert_eq!(value.as_deref(), Some(&b"y"[..]), "{dir}");
        }
    }
    // Without root, trusted.* cannot be set: the marker is skipped with a warning.
}

#[test]
fn test_unpack_diff_id_same_for_all_compressions() {
    let mut tar = Layer::new()
        .dir("etc/", 0o755, 1000)
        .file("etc/big", &vec![7u8; 3 * 1024 * 1024 + 17], 0o644, 1000)
        .file("etc/small", b"small", 0o644, 1000)
        .finish();
    // Trailing zero blocks beyond the end-of-archive marker belong to the diff id too.
    tar.extend_from_slice(&[0; 8192]);
    let expected = sha256(&tar);
    // Two gzip members, as pigz-style concatenation produces.
    let mut two_members = gzip(&tar[..4096]);
    two_members.extend_from_slice(&gzip(&tar[4096..]));
    let blobs = [
        (LayerCompression::None, tar.clone()),
        (LayerCompression::Gzip, gzip(&tar)),
        (LayerCompression::Gzip, two_members),
        (LayerCompression::Zstd, zstd(&tar)),
    ];
    for (compression, blob) in blobs {
        let fx = Fixture::new();
        let stats = unpack_layer(blob.as_slice(), compression, &fx.dest).unwrap();
        assert_eq!(stats.diff_id, expected, "{compression:?}");
        assert_eq!(stats.uncompressed_bytes, tar.len() as u64);
        assert_eq!(stats.entries, 3);
        assert_eq!(stats.files_bytes, 3 * 1024 * 1024 + 17 + 5);
        assert_eq!(fs::read(fx.path("etc/small")).unwrap(), b"small");
    }
}

#[test]
fn test_unpack_dotdot_refused() {
    for path in ["../escape", "a/../../escape", "./../escape"] {
        let fx = Fixture::new();
        let tar = Layer::new().file(path, b"pwned", 0o644, 1000).finish();
        assert_hostile(fx.unpack(&tar));
        assert_eq!(fx.beside(), ["layer"], "{path}");
    }
}

#[test]
fn test_unpack_absolute_path_lands_inside() {
    let fx = Fixture::new();
    let tar = Layer::new()
        .file("/etc/passwd", b"root:x:0:0", 0o644, 1000)
        .file("./etc/group", b"root:x:0", 0o644, 1000)
        .finish();
    fx.unpack(&tar).unwrap();
    assert_eq!(fs::read(fx.path("etc/passwd")).unwrap(), b"root:x:0:0");
    assert_eq!(fs::read(fx.path("etc/group")).unwrap(), b"root:x:0");
    assert_eq!(fx.beside(), ["layer"]);
}

#[test]
fn test_unpack_symlink_escape_refused() {
    let fx = Fixture::new();
    let outside = fx.tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let target = outside.to_str().unwrap();
    for (tar, case) in [
        (
            Layer::new()
                .link(EntryType::Symlink, "evil", target)
                .file("evil/pwned", b"pwned", 0o644, 1000)
                .finish(),
            "file below a symlink",
        ),
        (
            Layer::new()
                .link(EntryType::Symlink, "evil", target)
                .dir("evil/sub/", 0o755, 1000)
                .finish(),
            "directory below a symlink",
        ),
        (
            Layer::new()
                .link(EntryType::Symlink, "evil", target)
                .file("evil/.wh.x", b"", 0o644, 1000)
                .finish(),
            "whiteout below a symlink",
        ),
    ] {
        fs::remove_dir_all(&fx.dest).unwrap();
        fs::create_dir(&fx.dest).unwrap();
        assert_hostile(fx.unpack(&tar));
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "{case}");
    }
    assert_eq!(fx.beside(), ["layer", "outside"]);
}

#[test]
fn test_unpack_hardlink_escape_refused() {
    let fx = Fixture::new();
    let outside = fx.tmp.path().join("outside");
    fs::write(&outside, b"secret").unwrap();
    let cases = [
        Layer::new()
            .link(EntryType::Link, "d/h", "../../outside")
            .finish(),
        Layer::new()
            .link(EntryType::Link, "h", outside.to_str().unwrap())
            .finish(),
        Layer::new()
            .link(EntryType::Symlink, "evil", fx.tmp.path().to_str().unwrap())
            .link(EntryType::Link, "h", "evil/outside")
            .finish(),
    ];
    for tar in cases {
        fs::remove_dir_all(&fx.dest).unwrap();
        fs::create_dir(&fx.dest).unwrap();
        assert_hostile(fx.unpack(&tar));
        assert!(!fx.path("h").exists() && !fx.path("d/h").exists());
    }
    assert_eq!(fs::metadata(&outside).unwrap().nlink(), 1);
}

#[test]
fn test_unpack_fifo_and_char_device() {
    let fx = Fixture::new();
    let mut layer = Layer::new();
    layer.node(EntryType::Fifo, "run/fifo", 0, 0);
    if is_root() {
        layer.node(EntryType::Char, "dev/null", 1, 3);
        layer.node(EntryType::Block, "dev/loop0", 7, 0);
    }
    // Root only: char and block devices (FIFOs need no privilege).
    let tar = layer.finish();
    fx.unpack(&tar).unwrap();
    let fifo = fs::symlink_metadata(fx.path("run/fifo")).unwrap();
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);
    if is_root() {
        let null = fs::symlink_metadata(fx.path("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o620);
        let loop0 = fs::symlink_metadata(fx.path("dev/loop0")).unwrap();
        assert!(loop0.file_type().is_block_device());
        assert_eq!(loop0.rdev(), nix::sys::stat::makedev(7, 0));
    }
}

#[test]
fn test_unpack_existing_entries_replaced() {
    let fx = Fixture::new();
    let tar = Layer::new()
        .file("a", b"one", 0o644, 1000)
        .file("a", b"two", 0o600, 2000)
        .link(EntryType::Symlink, "s", "a")
        .file("s", b"not through the link", 0o644, 1000)
        .file("t/deep/x", b"tree", 0o644, 1000)
        .file("t", b"file over a tree", 0o644, 1000)
        .file("u", b"file", 0o644, 1000)
        .dir("u/", 0o700, 1000)
        .file("u/x", b"in dir", 0o644, 1000)
        .finish();
    fx.unpack(&tar).unwrap();
    assert_eq!(fs::read(fx.path("a")).unwrap(), b"two");
    assert_eq!(mode(&fx.path("a")), 0o600);
    assert!(fs::symlink_metadata(fx.path("s")).unwrap().is_file());
    assert_eq!(fs::read(fx.path("s")).unwrap(), b"not through the link");
    assert_eq!(fs::read(fx.path("a")).unwrap(), b"two");
    assert_eq!(fs::read(fx.path("t")).unwrap(), b"file over a tree");
    assert_eq!(fs::read(fx.path("u/x")).unwrap(), b"in dir");
    assert_eq!(mode(&fx.path("u")), 0o700);
}

#[test]
fn test_unpack_truncated_stream_fails() {
    let tar = Layer::new()
        .file("f", &vec![1u8; 1 << 20], 0o644, 1000)
        .file("g", b"g", 0o644, 1000)
        .finish();
    for (compression, blob) in [
        (LayerCompression::Gzip, gzip(&tar)),
        (LayerCompression::Zstd, zstd(&tar)),
    ] {
        for cut in [blob.len() / 2, blob.len() - 4] {
            let fx = Fixture::new();
            let res = unpack_layer(&blob[..cut], compression, &fx.dest);
            assert!(
                matches!(res, Err(Error::LayerArchive(_))),
                "{compression:?} cut at {cut}: {res:?}"
            );
        }
    }
}

#[test]
fn test_unpack_pax_xattr_and_mtime() {
    let fx = Fixture::new();
    let tar = Layer::new()
        .pax(&[
            ("SCHILY.xattr.user.test", b"hello"),
            ("mtime", b"1700000000.123456789"),
        ])
        .file("f", b"x", 0o644, 1)
        .pax(&[("SCHILY.xattr.user.dir", b"d")])
        .dir("d/", 0o755, 1000)
        .finish();
    fx.unpack(&tar).unwrap();
    let value = xattr::get(fx.path("f"), "user.test").unwrap();
    assert_eq!(value.as_deref(), Some(&b"hello"[..]));
    let value = xattr::get(fx.path("d"), "user.dir").unwrap();
    assert_eq!(value.as_deref(), Some(&b"d"[..]));
    let meta = fs::metadata(fx.path("f")).unwrap();
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_700_000_000, 123_456_789)
    );
}

#[test]
fn test_unpack_pax_long_name_and_nul_refused() {
    let fx = Fixture::new();
    let long = format!("{}/file", "d".repeat(200));
    let tar = Layer::new()
        .pax(&[("path", long.as_bytes())])
        .file("short", b"long", 0o644, 1000)
        .finish();
    fx.unpack(&tar).unwrap();
    assert_eq!(fs::read(fx.path(&long)).unwrap(), b"long");

    let fx = Fixture::new();
    let tar = Layer::new()
        .pax(&[("path", b"a\0b")])
        .file("short", b"x", 0o644, 1000)
        .finish();
    assert_hostile(fx.unpack(&tar));
    assert_eq!(fs::read_dir(&fx.dest).unwrap().count(), 0);
}

#[test]
fn test_unpack_root_entry_applies_to_dest() {
    let fx = Fixture::new();
    let tar = Layer::new()
        .dir("./", 0o711, 1234)
        .file("f", b"x", 0o644, 1000)
        .finish();
    fx.unpack(&tar).unwrap();
    assert_eq!(mode(&fx.dest), 0o711);
    assert_eq!(fs::metadata(&fx.dest).unwrap().mtime(), 1234);

    let fx = Fixture::new();
    let tar = Layer::new().file("./", b"x", 0o644, 1000).finish();
    assert_hostile(fx.unpack(&tar));
}

#[test]
fn test_media_type_and_sniff() {
    use LayerCompression as C;
    let cases = [
        ("application/vnd.oci.image.layer.v1.tar", Some(C::None)),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Some(C::Gzip)),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Some(C::Zstd)),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Some(C::Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Some(C::Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Some(C::Gzip),
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.zstd",
            Some(C::Zstd),
        ),
        ("application/vnd.oci.image.config.v1+json", None),
    ];
    for (media_type, expected) in cases {
        assert_eq!(
            LayerCompression::from_media_type(media_type),
            expected,
            "{media_type}"
        );
    }
    let tar = Layer::new().file("f", b"x", 0o644, 1).finish();
    assert_eq!(LayerCompression::sniff(&gzip(&tar)), Some(C::Gzip));
    assert_eq!(LayerCompression::sniff(&zstd(&tar)), Some(C::Zstd));
    assert_eq!(LayerCompression::sniff(&tar), Some(C::None));
    assert_eq!(LayerCompression::sniff(b"garbage"), None);
}

#[test]
fn test_is_whiteout_name() {
    assert!(is_whiteout_name(".wh.foo"));
    assert!(is_whiteout_name("a/b/.wh..wh..opq"));
    assert!(!is_whiteout_name("a/.wh/foo"));
    assert!(!is_whiteout_name("foo.wh."));
}

#[test]
fn test_normalize_and_pax_time() {
    let mut out = Vec::new();
    normalize(b"//./a//b/./c/", &mut out).unwrap();
    assert_eq!(out, b"a/b/c");
    normalize(b"./", &mut out).unwrap();
    assert!(out.is_empty());
    assert!(normalize(b"a/..", &mut out).is_err());
    assert!(normalize(b"a\0", &mut out).is_err());

    let t = parse_pax_time(b"12.5").unwrap();
    assert_eq!((t.tv_sec(), t.tv_nsec()), (12, 500_000_000));
    let t = parse_pax_time(b"-1.25").unwrap();
    assert_eq!((t.tv_sec(), t.tv_nsec()), (-2, 750_000_000));
    let t = parse_pax_time(b"7").unwrap();
    assert_eq!((t.tv_sec(), t.tv_nsec()), (7, 0));
    assert!(parse_pax_time(b"x").is_none());
    assert!(parse_pax_time(b"").is_none());
}

/// Throughput of a ~100 MB gzip layer of mixed file sizes. Prints, never asserts a time:
/// `cargo test --release -p corral-image-service unpack_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn test_unpack_throughput_gzip() {
    let mut layer = Layer::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut data = vec![0u8; 4 << 20];
    let mut total = 0usize;
    let mut i = 0;
    while total < 100 << 20 {
        // Mixed sizes: many small files, some large ones; half-compressible content.
        let size = match i % 50 {
            0 => 4 << 20,
            1..=9 => 64 << 10,
            _ => 2 << 10,
        };
        for chunk in data[..size].chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let bytes = (seed % 16).to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        if i % 100 == 0 {
            layer.dir(&format!("d{}/", i / 100), 0o755, 1000);
        }
        layer.file(&format!("d{}/f{i}", i / 100), &data[..size], 0o644, 1000);
        total += size;
        i += 1;
    }
    let tar = layer.finish();
    let blob = gzip(&tar);
    let fx = Fixture::new();
    let start = std::time::Instant::now();
    let stats = unpack_layer(blob.as_slice(), LayerCompression::Gzip, &fx.dest).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let mut decompress_only = flate2::read::MultiGzDecoder::new(blob.as_slice());
    let start = std::time::Instant::now();
    let mut sink = Vec::with_capacity(tar.len());
    decompress_only.read_to_end(&mut sink).unwrap();
    let gunzip = start.elapsed().as_secs_f64();
    let start = std::time::Instant::now();
    let digest = Sha256::digest(&tar);
    let hash = start.elapsed().as_secs_f64();
    assert_eq!(stats.diff_id, format!("sha256:{}", hex::encode(digest)));
    let fx_plain = Fixture::new();
    let start = std::time::Instant::now();
    unpack_layer(tar.as_slice(), LayerCompression::None, &fx_plain.dest).unwrap();
    let plain = start.elapsed().as_secs_f64();
    let mb = stats.uncompressed_bytes as f64 / 1e6;
    println!(
        "sha256 alone {hash:.3}s = {:.0} MB/s; uncompressed unpack {plain:.3}s = {:.0} MB/s",
        mb / hash,
        mb / plain
    );
    println!(
        "unpack: {} entries, {mb:.1} MB tar ({:.1} MB gzip) in {elapsed:.3}s = {:.0} MB/s; gunzip alone {gunzip:.3}s = {:.0} MB/s",
        stats.entries,
        blob.len() as f64 / 1e6,
        mb / elapsed,
        mb / gunzip
    );
}
