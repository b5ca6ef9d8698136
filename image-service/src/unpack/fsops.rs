//! Filesystem operations relative to directory file descriptors, none of which follows a
//! symlink that exists inside the layer directory.
//!
//! Every path handed to these functions is already normalized by the caller: components joined
//! by single `/`, no empty, `.` or `..` components, no NUL bytes. Each component is opened on
//! its own with `openat(O_NOFOLLOW | O_DIRECTORY)` relative to the directory before it, so a
//! symlink planted by an earlier entry can never redirect a write outside the layer.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Flags for opening a directory that must not be a symlink.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Mode of directories created implicitly as parents of an entry (before the umask).
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Why a directory path could not be entered.
#[derive(Debug)]
pub(super) enum WalkError {
    /// A component does not exist and was not to be created.
    Missing,
    /// A component is a symlink (the prefix up to and including it).
    Symlink(String),
    /// A component is neither a directory nor a symlink (the prefix up to and including it).
    NotDir(String),
    /// Any other failure of the system call.
    Sys(Errno),
}

/// The open directories along the path of the last entry, starting below the layer root.
///
/// Tar layers list entries directory by directory, so consecutive entries share most of their
/// parent path; keeping the chain open turns the walk for a sibling into no system call at all
/// and the walk into a new subdirectory into one `openat`.
pub(super) struct DirStack {
    root: OwnedFd,
    /// Normalized path of the deepest open directory (empty for the root).
    path: Vec<u8>,
    /// One open directory per component of `path`, with the length of `path` through it.
    levels: Vec<(OwnedFd, usize)>,
}

impl DirStack {
    /// Opens the layer root; `dest` is trusted (it comes from the caller, not the layer).
    pub(super) fn open(dest: &Path) -> io::Result<Self> {
        let root = openat(
            nix::fcntl::AT_FDCWD,
            dest,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root,
            path: Vec::with_capacity(256),
            levels: Vec::with_capacity(32),
        })
    }

    /// The layer root.
    pub(super) fn root(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// The deepest open directory: after a successful [`DirStack::enter`], the directory
    /// entered.
    pub(super) fn top(&self) -> BorrowedFd<'_> {
        match self.levels.last() {
            Some((fd, _)) => fd.as_fd(),
            None => self.root.as_fd(),
        }
    }

    /// Makes the normalized directory path `dir` (empty for the root) the top of the stack,
    /// opening each component without following symlinks and, with `create`, creating missing
    /// components with mode 0755.
    pub(super) fn enter(&mut self, dir: &[u8], create: bool) -> Result<(), WalkError> {
        let mut keep = 0;
        for (_, end) in &self.levels {
            let end = *end;
            let shared = dir.len() >= end
                && dir[..end] == self.path[..end]
                && (dir.len() == end || dir[end] == b'/');
            if !shared {
                break;
            }
            keep += 1;
        }
        self.levels.truncate(keep);
        let start = self.levels.last().map_or(0, |(_, end)| *end);
        self.path.truncate(start);
        for component in dir[start..].split(|&b| b == b'/') {
            if !component.is_empty() {
                self.push(component, create)?;
            }
        }
        Ok(())
    }

    /// Opens the child directory `name` of the top and makes it the new top.
    pub(super) fn push(&mut self, name: &[u8], create: bool) -> Result<(), WalkError> {
        let parent = self.top();
        let fd = match openat(parent, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match mkdirat(parent, name, Mode::from_bits_truncate(IMPLICIT_DIR_MODE)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(WalkError::Sys(errno)),
                }
                openat(parent, name, DIR_FLAGS, Mode::empty())
                    .map_err(|errno| self.classify(errno, name))?
            }
            Err(errno) => return Err(self.classify(errno, name)),
        };
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.extend_from_slice(name);
        self.levels.push((fd, self.path.len()));
        Ok(())
    }

    /// Turns the failure to open `name` below the top into a [`WalkError`].
    fn classify(&self, errno: Errno, name: &[u8]) -> WalkError {
        let at = || {
            let mut at = String::from_utf8_lossy(&self.path).into_owned();
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(&String::from_utf8_lossy(name));
            at
        };
        match errno {
            Errno::ENOENT => WalkError::Missing,
            Errno::ELOOP => WalkError::Symlink(at()),
            // With O_DIRECTORY a symlink may also be reported as ENOTDIR: look at what it is.
            Errno::ENOTDIR => match fstatat(self.top(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => WalkError::Symlink(at()),
                _ => WalkError::NotDir(at()),
            },
            errno => WalkError::Sys(errno),
        }
    }
}

/// Whether `name` in `parent` is a directory (not following a symlink).
pub(super) fn is_dir_at(parent: BorrowedFd<'_>, name: &[u8]) -> nix::Result<bool> {
    let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// A directory being emptied by [`remove_all_at`].
struct Doomed {
    dir: OwnedFd,
    children: Vec<CString>,
    name: CString,
}

impl Doomed {
    fn open(parent: BorrowedFd<'_>, name: CString) -> nix::Result<Self> {
        let dir = openat(parent, name.as_c_str(), DIR_FLAGS, Mode::empty())?;
        let mut listing = Dir::from_fd(dir.try_clone().map_err(io_to_errno)?)?;
        let mut children = Vec::new();
        for child in listing.iter() {
            let child = child?;
            let child = child.file_name();
            if child != c"." && child != c".." {
                children.push(child.to_owned());
            }
        }
        Ok(Self {
            dir,
            children,
            name,
        })
    }
}

/// Removes whatever is at `name` in `parent`, a directory tree included, without following
/// symlinks. Nothing there is success. The tree is walked with an explicit stack, so a deep
/// hostile tree costs file descriptors (and fails cleanly with EMFILE) rather than the stack.
pub(super) fn remove_all_at(parent: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(errno) => return Err(errno),
    }
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let mut stack = vec![Doomed::open(parent, name)?];
    while let Some(top) = stack.last_mut() {
        if let Some(child) = top.children.pop() {
            match unlinkat(&top.dir, child.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(Errno::EISDIR) => {
                    let doomed = Doomed::open(top.dir.as_fd(), child)?;
                    stack.push(doomed);
                }
                Err(errno) => return Err(errno),
            }
            continue;
        }
        let Some(done) = stack.pop() else { break };
        let holder = stack.last().map_or(parent, |d| d.dir.as_fd());
        match unlinkat(holder, done.name.as_c_str(), UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => return Err(errno),
        }
    }
    Ok(())
}

fn io_to_errno(err: io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

/// Sets the extended attribute `key` on the open file or directory `fd`.
pub(super) fn fset_xattr(fd: BorrowedFd<'_>, key: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: `fd` is an open descriptor for the duration of the call, `key` is a valid
    // NUL-terminated string and `value` points to `value.len()` readable bytes.
    let res = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(res).map(drop)
}

/// Sets the extended attribute `key` on `name` in `parent` without following `name` if it is
/// a symlink. Linux before 6.13 has no `lsetxattrat`, so this goes through the magic link
/// `/proc/self/fd/<parent>`, which names our own descriptor, not a path inside the layer.
pub(super) fn lset_xattr_at(
    parent: BorrowedFd<'_>,
    name: &[u8],
    key: &CStr,
    value: &[u8],
) -> nix::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = CString::new(path).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `path` and `key` are valid NUL-terminated strings and `value` points to
    // `value.len()` readable bytes; `parent` stays open for the duration of the call.
    let res = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            key.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(res).map(drop)
}

/// `name` as an `OsStr`, for error paths.
pub(super) fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}
