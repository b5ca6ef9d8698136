//! The content store: blobs by digest under `<root>/blobs/sha256/<hex>`. A blob is written to
//! `<root>/ingest/` while its digest is computed, checked, fsynced and only then renamed to its
//! final name: a partial or corrupt blob never appears under a digest.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::digest::Digest;

/// Blobs by digest. Blocking: use it from blocking threads.
#[derive(Debug)]
pub struct ContentStore {
    blobs: PathBuf,
    ingest: PathBuf,
}

static INGEST_SEQUENCE: AtomicU64 = AtomicU64::new(0);

impl ContentStore {
    /// Opens the store under `root`, creating it, and removes half-written ingests that an
    /// earlier crash left behind.
    pub fn open(root: &Path) -> Result<ContentStore, Error> {
        let store = ContentStore {
            blobs: root.join("blobs").join("sha256"),
            ingest: root.join("ingest"),
        };
        for dir in [&store.blobs, &store.ingest] {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                op: "create dir",
                path: dir.clone(),
                source,
            })?;
        }
        let leftovers = std::fs::read_dir(&store.ingest).map_err(|source| Error::Io {
            op: "read dir",
            path: store.ingest.clone(),
            source,
        })?;
        for entry in leftovers.flatten() {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing interrupted download");
            let _ = std::fs::remove_file(&path);
        }
        Ok(store)
    }

    /// Where the blob with `digest` lives (whether or not it is there).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.blobs.join(digest.hex())
    }

    /// Whether the blob is stored.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Reads a whole (small) blob: manifests and configs.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, Error> {
        let path = self.path(digest);
        std::fs::read(&path).map_err(|source| Error::Io {
            op: "read blob",
            path,
            source,
        })
    }

    /// Stores a whole (small) blob after checking its digest.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), Error> {
        if self.contains(digest) {
            return Ok(());
        }
        let mut writer = self.writer()?;
        writer.write(bytes)?;
        writer.commit(digest, Some(bytes.len() as u64))
    }

    /// Starts writing a blob whose digest is checked on commit.
    pub fn writer(&self) -> Result<BlobWriter<'_>, Error> {
        let sequence = INGEST_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let path = self
            .ingest
            .join(format!("{}-{sequence}.tmp", std::process::id()));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(|source| Error::Io {
                op: "create",
                path: path.clone(),
                source,
            })?;
        Ok(BlobWriter {
            store: self,
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Removes a blob; a missing one is fine.
    pub fn remove(&self, digest: &Digest) -> Result<(), Error> {
        let path = self.path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                op: "remove blob",
                path,
                source,
            }),
        }
    }

    /// Bytes and inodes used by stored blobs.
    pub fn usage(&self) -> (u64, u64) {
        let mut bytes = 0;
        let mut inodes = 0;
        if let Ok(entries) = std::fs::read_dir(&self.blobs) {
            for entry in entries.flatten() {
                if let Ok(meta) = entry.metadata() {
                    bytes += meta.len();
                    inodes += 1;
                }
            }
        }
        (bytes, inodes)
    }
}

/// A blob being written; removed again unless committed.
#[derive(Debug)]
pub struct BlobWriter<'a> {
    store: &'a ContentStore,
    file: Option<BufWriter<File>>,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter<'_> {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        let file = self.file.as_mut().ok_or_else(|| Error::Io {
            op: "write",
            path: self.path.clone(),
            source: std::io::Error::other("blob writer already finished"),
        })?;
        file.write_all(bytes).map_err(|source| Error::Io {
            op: "write",
            path: self.path.clone(),
            source,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Checks the digest (and size, when known), makes the blob durable and moves it to its
    /// final name. On a mismatch the partial blob is removed and nothing is stored.
    pub fn commit(mut self, expected: &Digest, expected_size: Option<u64>) -> Result<(), Error> {
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if &actual != expected {
            return Err(Error::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        if let Some(size) = expected_size {
            if size != self.size {
                return Err(Error::SizeMismatch {
                    digest: expected.to_string(),
                    expected: size,
                    actual: self.size,
                });
            }
        }
        let io = |op: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| Error::Io { op, path, source }
        };
        let file = self.file.take().ok_or_else(|| Error::Io {
            op: "commit",
            path: self.path.clone(),
            source: std::io::Error::other("blob writer already finished"),
        })?;
        let file = file
            .into_inner()
            .map_err(|e| io("flush", &self.path)(e.into_error()))?;
        file.sync_all().map_err(io("fsync", &self.path))?;
        drop(file);
        let target = self.store.path(expected);
        std::fs::rename(&self.path, &target).map_err(io("rename", &target))?;
        File::open(&self.store.blobs)
            .and_then(|dir| dir.sync_all())
            .map_err(io("fsync", &self.store.blobs))?;
        Ok(())
    }
}

impl Drop for BlobWriter<'_> {
    fn drop(&mut self) {
        // Not committed (or the commit failed before the rename): leave nothing behind.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_content_store_put_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        store.put(&digest, b"hello").unwrap();
        assert!(store.contains(&digest));
        assert_eq!(store.read(&digest).unwrap(), b"hello");
        assert_eq!(store.usage(), (5, 1));
        store.remove(&digest).unwrap();
        assert!(!store.contains(&digest));
    }

    #[test]
    fn test_content_store_digest_mismatch_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let wrong = Digest::of(b"other");
        let err = store.put(&wrong, b"hello").unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&wrong));
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn test_content_store_size_mismatch_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let digest = Digest::of(b"hello");
        let mut writer = store.writer().unwrap();
        writer.write(b"hello").unwrap();
        assert!(writer.commit(&digest, Some(4)).is_err());
        assert!(!store.contains(&digest));
    }

    #[test]
    fn test_content_store_open_removes_interrupted_ingests() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path()).unwrap();
        let mut writer = store.writer().unwrap();
        writer.write(b"partial").unwrap();
        std::mem::forget(writer); // as if the process died mid-download
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            1
        );
        ContentStore::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("ingest"))
                .unwrap()
                .count(),
            0
        );
    }
}
