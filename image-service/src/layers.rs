//! Unpacked layers, each in an overlay-ready directory keyed by its chain ID and shared by
//! every image that has it:
//!
//! ```text
//! <root>/layers/<chain-id hex>/diff/        the layer's files (overlay whiteouts converted)
//! <root>/layers/<chain-id hex>/layer.json   diff ID, sizes, entry count
//! <root>/l/<short id> -> ../layers/<chain-id hex>/diff   short name for overlay lowerdir lists
//! ```
//!
//! A layer is unpacked into `<root>/layers/.tmp-*` and renamed into place only when complete,
//! so a layer directory under a chain ID is always whole.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::digest::Digest;

const TEMP_PREFIX: &str = ".tmp-";
const META_FILE: &str = "layer.json";
/// Hex characters of the chain ID used for the short link name.
const SHORT_ID_LEN: usize = 20;

static TEMP_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// What is known about an unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub chain_id: String,
    pub diff_id: String,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed_bytes: u64,
    /// Tar entries written (about the number of inodes the layer uses).
    pub entries: u64,
}

/// The unpacked layers. Blocking: use it from blocking threads.
#[derive(Debug)]
pub struct LayerStore {
    layers: PathBuf,
    links: PathBuf,
}

/// A layer being unpacked; removed again unless committed.
#[derive(Debug)]
pub struct PendingLayer {
    dir: PathBuf,
    committed: bool,
}

impl LayerStore {
    /// Opens the store under `root` and removes what an interrupted unpack left behind.
    pub fn open(root: &Path) -> Result<LayerStore, Error> {
        let store = LayerStore {
            layers: root.join("layers"),
            links: root.join("l"),
        };
        for dir in [&store.layers, &store.links] {
            std::fs::create_dir_all(dir).map_err(|source| io("create dir", dir, source))?;
        }
        let entries = std::fs::read_dir(&store.layers)
            .map_err(|source| io("read dir", &store.layers, source))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(TEMP_PREFIX) {
                tracing::info!(path = %entry.path().display(), "removing interrupted unpack");
                remove_tree(&entry.path())?;
            }
        }
        Ok(store)
    }

    /// Whether the layer with this chain ID is unpacked.
    pub fn contains(&self, chain_id: &Digest) -> bool {
        self.dir(chain_id).join(META_FILE).is_file()
    }

    /// The layer's files.
    pub fn diff_path(&self, chain_id: &Digest) -> PathBuf {
        self.dir(chain_id).join("diff")
    }

    /// A short path to the layer's files, for overlay `lowerdir` lists.
    pub fn short_path(&self, chain_id: &Digest) -> PathBuf {
        self.links.join(&chain_id.hex()[..SHORT_ID_LEN])
    }

    /// The layer's metadata.
    pub fn info(&self, chain_id: &Digest) -> Result<LayerInfo, Error> {
        let path = self.dir(chain_id).join(META_FILE);
        let bytes = std::fs::read(&path).map_err(|source| io("read", &path, source))?;
        serde_json::from_slice(&bytes).map_err(|e| io("parse", &path, std::io::Error::other(e)))
    }

    /// A fresh temp directory with an empty `diff/` to unpack into.
    pub fn begin(&self) -> Result<PendingLayer, Error> {
        let sequence = TEMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .layers
            .join(format!("{TEMP_PREFIX}{}-{sequence}", std::process::id()));
        let diff = dir.join("diff");
        std::fs::create_dir_all(&diff).map_err(|source| io("create dir", &diff, source))?;
        Ok(PendingLayer {
            dir,
            committed: false,
        })
    }

    /// Makes an unpacked layer durable and moves it under its chain ID. If another pull
    /// committed the same layer meanwhile, ours is discarded.
    pub fn commit(&self, mut pending: PendingLayer, info: &LayerInfo) -> Result<(), Error> {
        let chain_id = Digest::parse(&info.chain_id)?;
        let meta = pending.dir.join(META_FILE);
        let bytes =
            serde_json::to_vec(info).map_err(|e| io("encode", &meta, std::io::Error::other(e)))?;
        std::fs::write(&meta, bytes).map_err(|source| io("write", &meta, source))?;
        sync_filesystem(&pending.dir)?;
        let target = self.dir(&chain_id);
        if self.contains(&chain_id) {
            return Ok(()); // `pending` is removed on drop
        }
        std::fs::rename(&pending.dir, &target).map_err(|source| io("rename", &target, source))?;
        pending.committed = true;
        let link = self.short_path(&chain_id);
        let _ = std::fs::remove_file(&link);
        let relative = Path::new("../layers").join(chain_id.hex()).join("diff");
        std::os::unix::fs::symlink(&relative, &link)
            .map_err(|source| io("symlink", &link, source))?;
        Ok(())
    }

    /// Removes a layer; a missing one is fine. The directory is first renamed to a temp name
    /// so that a crash midway never leaves a half-deleted layer under its chain ID.
    pub fn remove(&self, chain_id: &Digest) -> Result<(), Error> {
        let _ = std::fs::remove_file(self.short_path(chain_id));
        let dir = self.dir(chain_id);
        if !dir.exists() {
            return Ok(());
        }
        let sequence = TEMP_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let doomed = self
            .layers
            .join(format!("{TEMP_PREFIX}rm-{}-{sequence}", chain_id.hex()));
        std::fs::rename(&dir, &doomed).map_err(|source| io("rename", &dir, source))?;
        remove_tree(&doomed)
    }

    /// Chain IDs of every unpacked layer (a directory read: for start-up and GC only).
    pub fn list(&self) -> Result<Vec<Digest>, Error> {
        let entries = std::fs::read_dir(&self.layers)
            .map_err(|source| io("read dir", &self.layers, source))?;
        Ok(entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name();
                Digest::parse(&format!("sha256:{}", name.to_string_lossy())).ok()
            })
            .collect())
    }

    fn dir(&self, chain_id: &Digest) -> PathBuf {
        self.layers.join(chain_id.hex())
    }
}

impl PendingLayer {
    /// The empty directory to unpack the layer into.
    pub fn diff_path(&self) -> PathBuf {
        self.dir.join("diff")
    }
}

impl Drop for PendingLayer {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.dir);
        }
    }
}

fn remove_tree(path: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io("remove", path, source)),
    }
}

/// One `syncfs` for the filesystem holding `path`: flushes every file the unpack wrote
/// without an fsync per file.
fn sync_filesystem(path: &Path) -> Result<(), Error> {
    let dir = std::fs::File::open(path).map_err(|source| io("open", path, source))?;
    nix::unistd::syncfs(&dir).map_err(|errno| io("syncfs", path, std::io::Error::from(errno)))
}

fn io(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(chain_id: &Digest) -> LayerInfo {
        LayerInfo {
            chain_id: chain_id.to_string(),
            diff_id: chain_id.to_string(),
            uncompressed_bytes: 5,
            entries: 1,
        }
    }

    #[test]
    fn test_layer_store_commit_then_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::open(dir.path()).unwrap();
        let chain_id = Digest::of(b"layer");
        let pending = store.begin().unwrap();
        std::fs::write(pending.diff_path().join("file"), b"hello").unwrap();
        store.commit(pending, &info(&chain_id)).unwrap();
        assert!(store.contains(&chain_id));
        assert_eq!(
            std::fs::read(store.short_path(&chain_id).join("file")).unwrap(),
            b"hello"
        );
        assert_eq!(store.info(&chain_id).unwrap(), info(&chain_id));
        store.remove(&chain_id).unwrap();
        assert!(!store.contains(&chain_id));
        assert!(std::fs::symlink_metadata(store.short_path(&chain_id)).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path().join("layers"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn test_layer_store_dropped_pending_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::open(dir.path()).unwrap();
        let pending = store.begin().unwrap();
        std::fs::write(pending.diff_path().join("file"), b"x").unwrap();
        drop(pending);
        assert_eq!(
            std::fs::read_dir(dir.path().join("layers"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn test_layer_store_open_removes_interrupted_unpack() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::open(dir.path()).unwrap();
        let pending = store.begin().unwrap();
        std::mem::forget(pending); // as if the process died mid-unpack
        assert_eq!(
            std::fs::read_dir(dir.path().join("layers"))
                .unwrap()
                .count(),
            1
        );
        LayerStore::open(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("layers"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn test_layer_store_second_commit_of_same_layer_is_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let store = LayerStore::open(dir.path()).unwrap();
        let chain_id = Digest::of(b"layer");
        let first = store.begin().unwrap();
        let second = store.begin().unwrap();
        store.commit(first, &info(&chain_id)).unwrap();
        store.commit(second, &info(&chain_id)).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("layers"))
                .unwrap()
                .count(),
            1
        );
    }
}
