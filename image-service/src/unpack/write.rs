//! Writing tar entries into the layer directory, one entry at a time.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, futimens, makedev,
    mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};
use tar::{Entry, EntryType};

use super::fsops::{self, DirStack, WalkError};
use crate::Error;

/// Size of the buffer file contents are copied through.
const COPY_BUFFER: usize = 512 * 1024;

/// Flags for creating a regular file: never reuse or follow what is already there.
const FILE_FLAGS: OFlag = OFlag::O_WRONLY
    .union(OFlag::O_CREAT)
    .union(OFlag::O_EXCL)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Ownership, permission bits and modification time of an entry.
#[derive(Clone, Copy)]
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
}

/// Extended attributes of an entry, from its PAX `SCHILY.xattr.*` records.
type Xattrs = Vec<(CString, Vec<u8>)>;

/// A directory whose metadata is applied after all entries are written: creating children
/// would change its mtime, and a read-only mode would keep an unprivileged unpack from writing
/// into it.
struct DeferredDir {
    /// Its normalized path, in `LayerWriter::arena`.
    path: Range<usize>,
    depth: usize,
    meta: Meta,
    xattrs: Xattrs,
}

/// What does not change while a layer is written.
struct Ctx<'d> {
    dest: &'d Path,
    is_root: bool,
    euid: u32,
    egid: u32,
    /// Whether new entries may not simply get our own uid and gid (the root has the setgid
    /// bit, so new entries inherit its group), so that chown cannot be skipped.
    always_chown: bool,
}

/// Writes the entries of one layer into its directory.
pub(super) struct LayerWriter<'d> {
    ctx: Ctx<'d>,
    dirs: DirStack,
    buf: Vec<u8>,
    /// The entry's path as in the archive, for error messages.
    raw: Vec<u8>,
    /// The entry's normalized path.
    path: Vec<u8>,
    /// The link target of the entry (normalized for hard links).
    link: Vec<u8>,
    xattrs: Xattrs,
    deferred: Vec<DeferredDir>,
    arena: Vec<u8>,
    entries: u64,
    files_bytes: u64,
}

/// Where the parent ends and the name starts in a normalized path.
#[derive(Clone, Copy)]
struct Split {
    parent: usize,
    name: usize,
}

fn split(path: &[u8]) -> Split {
    match path.iter().rposition(|&b| b == b'/') {
        Some(slash) => Split {
            parent: slash,
            name: slash + 1,
        },
        None => Split { parent: 0, name: 0 },
    }
}

/// Copies `raw` into `out` as its components joined by single `/`, dropping empty and `.`
/// components. Leading `/` and `./` are thereby stripped: like containerd, absolute names are
/// taken relative to the layer root. `..` anywhere and NUL bytes are refused.
pub(super) fn normalize(raw: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    out.clear();
    if raw.contains(&0) {
        return Err("path contains a nul byte");
    }
    for component in raw.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => return Err("path contains a '..' component"),
            _ => {}
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(component);
    }
    Ok(())
}

/// Parses a PAX time (`<seconds>[.<fraction>]`, possibly negative).
pub(super) fn parse_pax_time(value: &[u8]) -> Option<TimeSpec> {
    let (negative, value) = match value.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (int, frac) = match value.iter().position(|&b| b == b'.') {
        Some(dot) => (&value[..dot], &value[dot + 1..]),
        None => (value, &[][..]),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.iter().chain(frac).all(u8::is_ascii_digit)
        || int.len() > 18
    {
        return None;
    }
    let mut secs: i64 = 0;
    for d in int {
        secs = secs * 10 + i64::from(d - b'0');
    }
    let mut nanos: i64 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    if negative {
        if nanos > 0 {
            secs = -secs - 1;
            nanos = 1_000_000_000 - nanos;
        } else {
            secs = -secs;
        }
    }
    Some(TimeSpec::new(secs as libc::time_t, nanos as _))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Ctx<'_> {
    fn io(&self, op: &'static str, path: &[u8], errno: Errno) -> Error {
        Error::Io {
            op,
            path: self.dest.join(fsops::os(path)),
            source: io::Error::from(errno),
        }
    }

    /// Whether the owner must be set, given that a new entry belongs to us.
    fn needs_chown(&self, meta: &Meta) -> bool {
        self.always_chown || meta.uid != self.euid || meta.gid != self.egid
    }

    /// Accepts a failed chown when not root: an unprivileged unpack keeps its own ids.
    fn chown_result(&self, res: nix::Result<()>, path: &[u8]) -> Result<(), Error> {
        match res {
            Ok(()) => Ok(()),
            Err(Errno::EPERM | Errno::EINVAL) if !self.is_root => {
                tracing::debug!(path = %lossy(path), "not root, keeping own ownership");
                Ok(())
            }
            Err(errno) => Err(self.io("chown", path, errno)),
        }
    }

    /// Accepts the xattr failures containerd accepts (a filesystem without xattr support, or
    /// `user.*` on a symlink or device); `security.*` and `trusted.*` may fail only when not root.
    fn xattr_result(&self, res: nix::Result<()>, path: &[u8], key: &CStr) -> Result<(), Error> {
        let privileged =
            key.to_bytes().starts_with(b"security.") || key.to_bytes().starts_with(b"trusted.");
        match res {
            Ok(()) => Ok(()),
            Err(Errno::ENOTSUP) => {
                tracing::warn!(path = %lossy(path), key = ?key, "filesystem does not support xattr, skipped");
                Ok(())
            }
            Err(Errno::EPERM | Errno::EACCES) if !self.is_root || !privileged => {
                tracing::warn!(path = %lossy(path), key = ?key, root = self.is_root, "xattr not permitted, skipped");
                Ok(())
            }
            Err(errno) => Err(self.io("set xattr", path, errno)),
        }
    }

    /// Applies owner, mode, xattrs and mtime (in that order: chown clears setuid bits and file
    /// capabilities) to an open file or directory.
    fn set_meta_fd(
        &self,
        fd: BorrowedFd<'_>,
        path: &[u8],
        meta: &Meta,
        xattrs: &Xattrs,
    ) -> Result<(), Error> {
        if self.needs_chown(meta) {
            let res = fchown(
                fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            );
            self.chown_result(res, path)?;
        }
        fchmod(fd, Mode::from_bits_truncate(meta.mode))
            .map_err(|errno| self.io("chmod", path, errno))?;
        for (key, value) in xattrs {
            self.xattr_result(fsops::fset_xattr(fd, key, value), path, key)?;
        }
        futimens(fd, &meta.mtime, &meta.mtime).map_err(|errno| self.io("set times", path, errno))
    }

    /// Applies owner, mode (unless a symlink), xattrs and mtime to `name` in `parent`, which
    /// was just created and is not opened (a symlink, device or FIFO).
    fn set_meta_at(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        path: &[u8],
        meta: &Meta,
        xattrs: &Xattrs,
        symlink: bool,
    ) -> Result<(), Error> {
        if self.needs_chown(meta) {
            let res = fchownat(
                parent,
                name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            self.chown_result(res, path)?;
        }
        if !symlink {
            let mode = Mode::from_bits_truncate(meta.mode);
            let res = match fchmodat(parent, name, mode, FchmodatFlags::NoFollowSymlink) {
                // An old C library without AT_SYMLINK_NOFOLLOW support: the node was just
                // created by us with mknodat, so it is not a symlink.
                Err(Errno::ENOTSUP) => fchmodat(parent, name, mode, FchmodatFlags::FollowSymlink),
                res => res,
            };
            res.map_err(|errno| self.io("chmod", path, errno))?;
        }
        for (key, value) in xattrs {
            let res = fsops::lset_xattr_at(parent, name, key, value);
            self.xattr_result(res, path, key)?;
        }
        utimensat(
            parent,
            name,
            &meta.mtime,
            &meta.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|errno| self.io("set times", path, errno))
    }
}

/// Runs `create` and, if something is already at `name`, removes it and runs `create` again.
fn replacing<T>(
    parent: BorrowedFd<'_>,
    name: &[u8],
    mut create: impl FnMut() -> nix::Result<T>,
) -> nix::Result<T> {
    match create() {
        Err(Errno::EEXIST) => {
            fsops::remove_all_at(parent, name)?;
            create()
        }
        res => res,
    }
}

impl<'d> LayerWriter<'d> {
    /// Prepares writing into `dest`, an existing empty directory.
    pub(super) fn new(dest: &'d Path) -> Result<Self, Error> {
        let io_err = |op, source| Error::Io {
            op,
            path: dest.to_path_buf(),
            source,
        };
        let dirs = DirStack::open(dest).map_err(|e| io_err("open layer directory", e))?;
        let st = fstat(dirs.root()).map_err(|e| io_err("stat layer directory", e.into()))?;
        let euid = nix::unistd::geteuid();
        Ok(Self {
            ctx: Ctx {
                dest,
                is_root: euid.is_root(),
                euid: euid.as_raw(),
                egid: nix::unistd::getegid().as_raw(),
                always_chown: st.st_mode & libc::S_ISGID != 0,
            },
            dirs,
            buf: vec![0; COPY_BUFFER],
            raw: Vec::with_capacity(256),
            path: Vec::with_capacity(256),
            link: Vec::with_capacity(256),
            xattrs: Vec::new(),
            deferred: Vec::new(),
            arena: Vec::new(),
            entries: 0,
            files_bytes: 0,
        })
    }

    fn hostile(&self, reason: impl Into<String>) -> Error {
        Error::HostileLayer {
            entry: lossy(&self.raw),
            reason: reason.into(),
        }
    }

    fn walk_error(&self, err: WalkError, dir: &[u8]) -> Error {
        match err {
            WalkError::Missing => {
                self.hostile(format!("directory {:?} does not exist", lossy(dir)))
            }
            WalkError::Symlink(at) => self.hostile(format!("parent {at:?} is a symlink")),
            WalkError::NotDir(at) => self.hostile(format!("parent {at:?} is not a directory")),
            WalkError::Sys(errno) => self.ctx.io("open directory", dir, errno),
        }
    }

    /// Opens (creating if needed) the parent directory of the current entry as the top of the
    /// directory stack.
    fn enter_parent(&mut self, at: Split) -> Result<(), Error> {
        let parent = &self.path[..at.parent];
        match self.dirs.enter(parent, true) {
            Ok(()) => Ok(()),
            Err(err) => Err(self.walk_error(err, &self.path[..at.parent])),
        }
    }

    /// Writes one entry of the archive.
    pub(super) fn write_entry<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<(), Error> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            // Global PAX headers describe the archive; tar-rs has merged the others.
            return Ok(());
        }
        self.entries += 1;
        self.raw.clear();
        self.raw.extend_from_slice(&entry.path_bytes());
        if let Err(reason) = normalize(&self.raw, &mut self.path) {
            return Err(self.hostile(reason));
        }
        // A pre-POSIX regular file whose name ends in '/' is a directory (as Go reads it).
        let old_dir = entry.header().as_bytes()[156] == 0 && self.raw.ends_with(b"/");
        let meta = self.read_meta(entry)?;
        let at = split(&self.path);
        if self.path[at.name..].starts_with(WHITEOUT_PREFIX) {
            return self.write_whiteout(at, &meta);
        }
        match kind {
            EntryType::Directory => self.write_dir(at, meta),
            _ if old_dir => self.write_dir(at, meta),
            _ if self.path.is_empty() => Err(self.hostile("entry would replace the layer root")),
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.write_file(entry, at, &meta)
            }
            EntryType::Symlink => self.write_symlink(entry, at, &meta),
            EntryType::Link => self.write_hardlink(entry, at),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.write_node(entry, kind, at, &meta)
            }
            other => {
                tracing::warn!(path = %lossy(&self.raw), kind = ?other, "unsupported tar entry type, skipped");
                Ok(())
            }
        }
    }

    /// Reads owner, mode and mtime from the header and PAX records, and the PAX xattrs into
    /// `self.xattrs`.
    fn read_meta<R: Read>(&mut self, entry: &mut Entry<'_, R>) -> Result<Meta, Error> {
        let header = entry.header();
        let uid = header.uid().map_err(Error::LayerArchive)?;
        let gid = header.gid().map_err(Error::LayerArchive)?;
        let mode = header.mode().map_err(Error::LayerArchive)? & 0o7777;
        let secs = header.mtime().map_err(Error::LayerArchive)?;
        let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
            return Err(self.hostile("uid or gid out of range"));
        };
        let mut meta = Meta {
            uid,
            gid,
            mode,
            mtime: TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX) as libc::time_t, 0),
        };
        self.xattrs.clear();
        if let Some(pax) = entry.pax_extensions().map_err(Error::LayerArchive)? {
            for ext in pax {
                let ext = ext.map_err(Error::LayerArchive)?;
                let key = ext.key_bytes();
                if key == b"mtime" {
                    match parse_pax_time(ext.value_bytes()) {
                        Some(mtime) => meta.mtime = mtime,
                        None => {
                            tracing::debug!(path = %lossy(&self.raw), "invalid pax mtime, using the header's")
                        }
                    }
                } else if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX) {
                    match CString::new(name) {
                        Ok(name) if !name.is_empty() => {
                            self.xattrs.push((name, ext.value_bytes().to_vec()));
                        }
                        _ => return Err(self.hostile("invalid xattr name")),
                    }
                }
            }
        }
        Ok(meta)
    }

    /// Converts an OCI whiteout into its overlayfs form.
    fn write_whiteout(&mut self, at: Split, meta: &Meta) -> Result<(), Error> {
        self.enter_parent(at)?;
        let ctx = &self.ctx;
        let parent = self.dirs.top();
        let name = &self.path[at.name..];
        if name == WHITEOUT_OPAQUE {
            let dir = &self.path[..at.parent];
            return match fsops::fset_xattr(parent, OVERLAY_OPAQUE_XATTR, b"y") {
                Ok(()) => Ok(()),
                Err(Errno::EPERM) if !ctx.is_root => {
                    tracing::warn!(path = %lossy(dir), "not root, opaque directory marker skipped");
                    Ok(())
                }
                Err(errno) => Err(ctx.io("set opaque xattr", dir, errno)),
            };
        }
        if name.starts_with(WHITEOUT_META_PREFIX) {
            tracing::debug!(path = %lossy(&self.raw), "whiteout metadata entry ignored");
            return Ok(());
        }
        let hidden = &name[WHITEOUT_PREFIX.len()..];
        if matches!(hidden, b"" | b"." | b"..") {
            return Err(self.hostile("invalid whiteout name"));
        }
        let mut target = self.path[..at.name].to_vec();
        target.extend_from_slice(hidden);
        fsops::remove_all_at(parent, hidden)
            .map_err(|errno| ctx.io("remove for whiteout", &target, errno))?;
        mknodat(parent, hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|errno| ctx.io("create whiteout", &target, errno))?;
        if ctx.needs_chown(meta) {
            let res = fchownat(
                parent,
                hidden,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            );
            ctx.chown_result(res, &target)?;
        }
        Ok(())
    }

    /// Creates a directory, or keeps the one already there, and defers its metadata.
    fn write_dir(&mut self, at: Split, meta: Meta) -> Result<(), Error> {
        if !self.path.is_empty() {
            self.enter_parent(at)?;
            let ctx = &self.ctx;
            let parent = self.dirs.top();
            let name = &self.path[at.name..];
            let mode = Mode::from_bits_truncate(0o755);
            match mkdirat(parent, name, mode) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    let is_dir = fsops::is_dir_at(parent, name)
                        .map_err(|errno| ctx.io("stat", &self.path, errno))?;
                    if !is_dir {
                        fsops::remove_all_at(parent, name)
                            .and_then(|()| mkdirat(parent, name, mode))
                            .map_err(|errno| ctx.io("replace with directory", &self.path, errno))?;
                    }
                }
                Err(errno) => return Err(ctx.io("create directory", &self.path, errno)),
            }
            // Its children most likely come next.
            if let Err(err) = self.dirs.push(&self.path[at.name..], false) {
                return Err(self.walk_error(err, &self.path));
            }
        }
        let start = self.arena.len();
        self.arena.extend_from_slice(&self.path);
        let depth = if self.path.is_empty() {
            0
        } else {
            self.path.iter().filter(|&&b| b == b'/').count() + 1
        };
        self.deferred.push(DeferredDir {
            path: start..self.arena.len(),
            depth,
            meta,
            xattrs: std::mem::take(&mut self.xattrs),
        });
        Ok(())
    }

    /// Creates a regular file (replacing anything there) and streams its content.
    fn write_file<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        at: Split,
        meta: &Meta,
    ) -> Result<(), Error> {
        self.enter_parent(at)?;
        let ctx = &self.ctx;
        let parent = self.dirs.top();
        let name = &self.path[at.name..];
        let mode = Mode::from_bits_truncate(0o600);
        let fd = replacing(parent, name, || openat(parent, name, FILE_FLAGS, mode))
            .map_err(|errno| ctx.io("create file", &self.path, errno))?;
        let mut file = File::from(fd);
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(Error::LayerArchive(err)),
            };
            file.write_all(&self.buf[..n]).map_err(|source| Error::Io {
                op: "write file",
                path: ctx.dest.join(fsops::os(&self.path)),
                source,
            })?;
            self.files_bytes += n as u64;
        }
        ctx.set_meta_fd(file.as_fd(), &self.path, meta, &self.xattrs)
    }

    /// Creates a symlink as it is: its target is resolved by overlayfs inside the container.
    fn write_symlink<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        at: Split,
        meta: &Meta,
    ) -> Result<(), Error> {
        self.link.clear();
        match entry.link_name_bytes() {
            Some(target) if !target.is_empty() => self.link.extend_from_slice(&target),
            _ => return Err(self.hostile("symlink without a target")),
        }
        if self.link.contains(&0) {
            return Err(self.hostile("symlink target contains a nul byte"));
        }
        self.enter_parent(at)?;
        let ctx = &self.ctx;
        let parent = self.dirs.top();
        let name = &self.path[at.name..];
        let target = self.link.as_slice();
        replacing(parent, name, || symlinkat(target, parent, name))
            .map_err(|errno| ctx.io("create symlink", &self.path, errno))?;
        ctx.set_meta_at(parent, name, &self.path, meta, &self.xattrs, true)
    }

    /// Creates a hard link to an entry already written in this layer. The link shares the
    /// target's inode, so the link entry's own metadata is not applied.
    fn write_hardlink<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        at: Split,
    ) -> Result<(), Error> {
        let Some(target) = entry.link_name_bytes() else {
            return Err(self.hostile("hard link without a target"));
        };
        if let Err(reason) = normalize(&target, &mut self.link) {
            return Err(self.hostile(format!("hard link target: {reason}")));
        }
        if self.link.is_empty() {
            return Err(self.hostile("hard link to the layer root"));
        }
        if self.link == self.path {
            tracing::debug!(path = %lossy(&self.raw), "hard link to itself ignored");
            return Ok(());
        }
        let missing =
            |link: &[u8]| format!("hard link target {:?} is not in this layer", lossy(link));
        let target_at = split(&self.link);
        match self.dirs.enter(&self.link[..target_at.parent], false) {
            Ok(()) => {}
            Err(WalkError::Missing) => return Err(self.hostile(missing(&self.link))),
            Err(err) => return Err(self.walk_error(err, &self.link[..target_at.parent])),
        }
        let target_dir = self
            .dirs
            .top()
            .try_clone_to_owned()
            .map_err(|source| Error::Io {
                op: "duplicate descriptor",
                path: self
                    .ctx
                    .dest
                    .join(fsops::os(&self.link[..target_at.parent])),
                source,
            })?;
        self.enter_parent(at)?;
        let parent = self.dirs.top();
        let name = &self.path[at.name..];
        let target_name = &self.link[target_at.name..];
        let link = || linkat(&target_dir, target_name, parent, name, AtFlags::empty());
        match replacing(parent, name, link) {
            Ok(()) => Ok(()),
            Err(Errno::ENOENT) => Err(self.hostile(missing(&self.link))),
            Err(errno) => Err(self.ctx.io("create hard link", &self.path, errno)),
        }
    }

    /// Creates a character or block device or a FIFO with mknod.
    fn write_node<R: Read>(
        &mut self,
        entry: &mut Entry<'_, R>,
        kind: EntryType,
        at: Split,
        meta: &Meta,
    ) -> Result<(), Error> {
        let header = entry.header();
        let major = header.device_major().map_err(Error::LayerArchive)?;
        let minor = header.device_minor().map_err(Error::LayerArchive)?;
        let dev = makedev(u64::from(major.unwrap_or(0)), u64::from(minor.unwrap_or(0)));
        let (sflag, dev) = match kind {
            EntryType::Char => (SFlag::S_IFCHR, dev),
            EntryType::Block => (SFlag::S_IFBLK, dev),
            _ => (SFlag::S_IFIFO, 0),
        };
        self.enter_parent(at)?;
        let ctx = &self.ctx;
        let parent = self.dirs.top();
        let name = &self.path[at.name..];
        let perm = Mode::from_bits_truncate(meta.mode & 0o777);
        replacing(parent, name, || mknodat(parent, name, sflag, perm, dev))
            .map_err(|errno| ctx.io("mknod", &self.path, errno))?;
        ctx.set_meta_at(parent, name, &self.path, meta, &self.xattrs, false)
    }

    /// Applies the deferred directory metadata, deepest directories first, and returns the
    /// number of entries and the bytes of regular file content written.
    pub(super) fn finish(self) -> Result<(u64, u64), Error> {
        let Self {
            ctx,
            mut dirs,
            deferred,
            arena,
            entries,
            files_bytes,
            ..
        } = self;
        // The last entry for a directory wins.
        let mut seen = HashSet::with_capacity(deferred.len());
        let mut order = Vec::with_capacity(deferred.len());
        for (i, dir) in deferred.iter().enumerate().rev() {
            if seen.insert(&arena[dir.path.clone()]) {
                order.push(i);
            }
        }
        order.sort_by_key(|&i| Reverse(deferred[i].depth));
        for i in order {
            let dir = &deferred[i];
            let path = &arena[dir.path.clone()];
            match dirs.enter(path, false) {
                Ok(()) => {}
                // A later entry of the layer replaced or removed it.
                Err(WalkError::Missing | WalkError::Symlink(_) | WalkError::NotDir(_)) => {
                    tracing::debug!(path = %lossy(path), "directory replaced, metadata skipped");
                    continue;
                }
                Err(WalkError::Sys(errno)) => return Err(ctx.io("open directory", path, errno)),
            }
            ctx.set_meta_fd(dirs.top(), path, &dir.meta, &dir.xattrs)?;
        }
        Ok((entries, files_bytes))
    }
}
