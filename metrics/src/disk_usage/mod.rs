//! Disk usage of a container's writable layer, measured like `du -x`: allocated blocks and
//! distinct inodes of a tree, without following symlinks or crossing into other mounts.
//!
//! Walking a layer can take long, so requests should never walk: [`DiskUsageCache`] keeps
//! the last measurement of each registered layer and re-measures in the background.

mod cache;

use std::collections::HashSet;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub use cache::DiskUsageCache;

use crate::Error;

/// Space and inodes used by a directory tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Allocated bytes: 512-byte blocks, as `du` counts (sparse files count what they use).
    pub bytes: u64,
    /// Distinct inodes, directories included; a hard-linked file counts once.
    pub inodes: u64,
}

/// Measures the tree at `path` (blocking, proportional to its size). Symlinks are counted
/// but not followed, other filesystems mounted inside are skipped, and entries that vanish
/// during the walk are left out. Fails when `path` itself cannot be read, or when an entry
/// inside cannot be read for another reason than vanishing.
pub fn dir_usage(path: &Path) -> Result<DiskUsage, Error> {
    let measured = measure(path, &mut || false)?;
    // Never cancelled, so always measured.
    Ok(measured.unwrap_or_default())
}

/// The walk behind [`dir_usage`]. `cancelled` is asked before each directory is read; when
/// it says yes the walk stops and returns `Ok(None)`.
pub(crate) fn measure(
    root: &Path,
    cancelled: &mut dyn FnMut() -> bool,
) -> Result<Option<DiskUsage>, Error> {
    let walk_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Walk { path, source }
    };
    let metadata = std::fs::symlink_metadata(root).map_err(walk_error(root))?;
    let device = metadata.dev();
    let mut counter = Counter::default();
    counter.count(&metadata);
    if !metadata.is_dir() {
        return Ok(Some(counter.usage));
    }
    // Iterative depth-first walk: the stack is on the heap, so depth costs no call stack.
    let mut pending: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        if cancelled() {
            return Ok(None);
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if vanished(&error) => continue,
            Err(error) => return Err(walk_error(&dir)(error)),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) if vanished(&error) => continue,
                Err(error) => return Err(walk_error(&dir)(error)),
            };
            // fstatat(AT_SYMLINK_NOFOLLOW): a symlink is counted as itself.
            let metadata = match entry.metadata() {
                Ok(metadata) => metadata,
                Err(error) if vanished(&error) => continue,
                Err(error) => return Err(walk_error(&entry.path())(error)),
            };
            if metadata.dev() != device {
                continue; // A mount point of another filesystem: neither counted nor entered.
            }
            if counter.count(&metadata) && metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(Some(counter.usage))
}

/// Sums usage, counting each inode once.
#[derive(Default)]
struct Counter {
    usage: DiskUsage,
    /// Inodes that can be reached twice: hard-linked files, and directories (a bind mount of
    /// the same filesystem shows a directory again, possibly inside itself).
    seen: HashSet<(u64, u64)>,
}

impl Counter {
    /// Counts the inode unless already counted; returns whether it was new.
    fn count(&mut self, metadata: &Metadata) -> bool {
        let may_repeat = metadata.is_dir() || metadata.nlink() > 1;
        if may_repeat && !self.seen.insert((metadata.dev(), metadata.ino())) {
            return false;
        }
        self.usage.bytes = self
            .usage
            .bytes
            .saturating_add(metadata.blocks().saturating_mul(512));
        self.usage.inodes += 1;
        true
    }
}

/// Whether the error means the entry went away (or was replaced) while walking.
fn vanished(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    ) || error.raw_os_error() == Some(libc::ESTALE)
}

#[cfg(test)]
mod tests;
