//! The image catalog: the image index, its records, and the puller, kept consistent. Every
//! change is persisted before the in-memory index changes; layers no image uses any more are
//! removed after the records that used them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use corral_image_service::digest::Digest;
use corral_image_service::index::{Change, ImageIndex, ImageRecord};
use corral_image_service::pull::{Credentials, Puller};
use corral_image_service::reference::{ImageRef, is_image_id};
use tokio::sync::RwLock;

use crate::error::Error;
use crate::state::Table;

/// Bytes and inodes the image store uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageUsage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Images, their names and their layers.
#[derive(Debug)]
pub struct ImageCatalog {
    puller: Arc<Puller>,
    index: RwLock<ImageIndex>,
    records: Table<ImageRecord>,
    pinned: BTreeSet<String>,
    root: PathBuf,
    usage: std::sync::Mutex<ImageUsage>,
    /// Pulls hold it shared while they use layers that no record names yet; removing layers
    /// takes it exclusively, so a layer a running pull relies on is never removed under it.
    layer_gc: RwLock<()>,
    /// Layers that containers use (their rootfs lower dirs), by container ID: kept even when
    /// their image is removed, until the container is.
    held: std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>,
}

/// Records are stored under the hex of the image ID (a plain file name).
fn record_id(image_id: &str) -> &str {
    image_id.strip_prefix("sha256:").unwrap_or(image_id)
}

impl ImageCatalog {
    /// Opens the stores under `root`, loads the records, drops records whose layers are gone
    /// and removes layers neither a record nor a container (`held`, by container ID) uses:
    /// those a pull that crashed before its record left behind.
    pub async fn open(
        root: PathBuf,
        state_dir: PathBuf,
        config: corral_image_service::Config,
        held: std::collections::HashMap<String, Vec<String>>,
    ) -> Result<ImageCatalog, Error> {
        let pinned = config
            .pinned_images
            .iter()
            .filter_map(|name| ImageRef::parse(name).ok())
            .map(|image| image.to_string())
            .collect();
        let puller_root = root.clone();
        let puller = Arc::new(
            blocking(move || Puller::open(&puller_root, config).map_err(Error::from)).await?,
        );
        let records: Table<ImageRecord> = Table::open(&state_dir).await?;
        let layers = Arc::clone(puller.layers());
        let loaded = records.list();
        let held_chain_ids: BTreeSet<String> = held.values().flatten().cloned().collect();
        let (valid, invalid, orphans) = blocking(move || {
            let (mut valid, mut invalid) = (Vec::new(), Vec::new());
            for record in loaded {
                let complete = record
                    .chain_ids
                    .iter()
                    .all(|chain_id| Digest::parse(chain_id).is_ok_and(|d| layers.contains(&d)));
                if complete {
                    valid.push(record);
                } else {
                    invalid.push(record);
                }
            }
            let mut used: BTreeSet<String> = valid
                .iter()
                .flat_map(|r| r.chain_ids.iter().cloned())
                .collect();
            used.extend(held_chain_ids);
            let orphans: Vec<Digest> = layers
                .list()?
                .into_iter()
                .filter(|d| !used.contains(d.as_str()))
                .collect();
            for orphan in &orphans {
                layers.remove(orphan)?;
            }
            Ok((valid, invalid, orphans.len()))
        })
        .await?;
        for record in &invalid {
            tracing::warn!(image = %record.id, "image record lost its layers; dropping it");
            records.remove(record_id(&record.id)).await?;
        }
        tracing::info!(
            images = valid.len(),
            orphan_layers_removed = orphans,
            "images recovered"
        );
        let catalog = ImageCatalog {
            puller,
            index: RwLock::new(ImageIndex::new(valid)),
            records,
            pinned,
            root,
            usage: std::sync::Mutex::new(ImageUsage::default()),
            layer_gc: RwLock::new(()),
            held: std::sync::Mutex::new(held),
        };
        catalog.refresh_usage().await;
        Ok(catalog)
    }

    /// Where images live (the image filesystem's mount point for ImageFsInfo).
    pub fn root(&self) -> &PathBuf {
        &self.root
    }

    /// The image a CRI image spec names: an image ID (or unambiguous prefix), a tag or a
    /// repo digest. `Ok(None)` when no such image is here; malformed names are an error.
    pub async fn resolve(&self, name: &str) -> Result<Option<ImageRecord>, Error> {
        let index = self.index.read().await;
        if let Some(id) = is_image_id(name) {
            return Ok(index.get(&id).cloned());
        }
        if let Some(image) = index.by_id_or_prefix(name) {
            return Ok(Some(image.clone()));
        }
        let reference = ImageRef::parse(name)?;
        let found = match (reference.digested(), reference.tagged()) {
            (Some(digested), _) => index.by_reference(&digested),
            (None, Some(tagged)) => index.by_reference(&tagged),
            (None, None) => None,
        };
        Ok(found.cloned())
    }

    /// The short path of an unpacked layer, for overlay lower dirs.
    pub fn layer_short_path(&self, chain_id: &Digest) -> PathBuf {
        self.puller.layers().short_path(chain_id)
    }

    /// Every image.
    pub async fn list(&self) -> Vec<ImageRecord> {
        self.index.read().await.list().cloned().collect()
    }

    /// Whether the image is in the configured pinned list.
    pub fn is_pinned(&self, image: &ImageRecord) -> bool {
        image.repo_tags.iter().any(|tag| self.pinned.contains(tag))
    }

    /// Pulls `name` and records it; returns the image.
    pub async fn pull(&self, name: &str, credentials: &Credentials) -> Result<ImageRecord, Error> {
        let reference = ImageRef::parse(name)?;
        let layers_in_use = self.layer_gc.read().await;
        let pulled = self.puller.pull(&reference, credentials).await?;
        let mut index = self.index.write().await;
        let changes = index.plan_add(&pulled);
        let candidates = deleted_layers(&index, &changes);
        self.persist(&changes).await?;
        index.apply(&changes);
        let image = index.get(&pulled.id).cloned().unwrap_or(pulled);
        drop(index);
        drop(layers_in_use);
        self.remove_unused(candidates).await;
        Ok(image)
    }

    /// Removes the name (ID, tag or digest) from its image; the image and its layers go when
    /// nothing references them. An unknown name is not an error.
    pub async fn remove(&self, name: &str) -> Result<(), Error> {
        let Some(image) = self.resolve(name).await? else {
            return Ok(());
        };
        let normalised = if is_image_id(name).is_some() || image.id.ends_with(name) {
            image.id.clone()
        } else {
            let reference = ImageRef::parse(name)?;
            reference
                .digested()
                .or_else(|| reference.tagged())
                .unwrap_or_else(|| image.id.clone())
        };
        let mut index = self.index.write().await;
        let changes = index.plan_remove(&image.id, &normalised);
        let candidates = deleted_layers(&index, &changes);
        self.persist(&changes).await?;
        index.apply(&changes);
        drop(index);
        self.remove_unused(candidates).await;
        Ok(())
    }

    /// The raw manifest and config of an image, for verbose status.
    pub async fn blobs(&self, image: &ImageRecord) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let content = Arc::clone(self.puller.content());
        let (manifest, config) = (image.manifest_digest.clone(), image.id.clone());
        tokio::task::spawn_blocking(move || {
            let read = |digest: &str| {
                Digest::parse(digest)
                    .ok()
                    .and_then(|d| content.read(&d).ok())
            };
            (read(&manifest), read(&config))
        })
        .await
        .unwrap_or((None, None))
    }

    /// What the image store uses, as of the last pull or removal.
    pub fn usage(&self) -> ImageUsage {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn persist(&self, changes: &[Change]) -> Result<(), Error> {
        for change in changes {
            match change {
                Change::Put(record) => {
                    self.records
                        .put(record_id(&record.id), (**record).clone())
                        .await?
                }
                Change::Delete(id) => self.records.remove(record_id(id)).await?,
            }
        }
        Ok(())
    }

    /// Keeps `chain_ids` on disk while the container exists (also called at recovery).
    pub fn hold_layers(&self, container_id: &str, chain_ids: Vec<String>) {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(container_id.to_string(), chain_ids);
    }

    /// The container is gone: its layers go too if no image or other container uses them.
    pub async fn release_layers(&self, container_id: &str) {
        let released = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(container_id);
        if let Some(chain_ids) = released {
            let deleted = Deleted {
                chain_ids: chain_ids.into_iter().collect(),
                blobs: BTreeSet::new(),
            };
            self.remove_unused(deleted).await;
        }
    }

    /// Removes the layers and blobs of deleted images that no image or container uses
    /// (checked again under the GC lock).
    async fn remove_unused(&self, deleted: Deleted) {
        let Deleted {
            chain_ids: candidates,
            blobs,
        } = deleted;
        if !blobs.is_empty() {
            let in_use = self.index.read().await.blobs_in_use();
            let unused: Vec<Digest> = blobs
                .iter()
                .filter(|b| !in_use.contains(*b))
                .filter_map(|b| Digest::parse(b).ok())
                .collect();
            let content = Arc::clone(self.puller.content());
            let removed = tokio::task::spawn_blocking(move || {
                for blob in &unused {
                    if let Err(error) = content.remove(blob) {
                        tracing::warn!(blob = %blob, %error, "could not remove unused blob");
                    }
                }
            })
            .await;
            if let Err(error) = removed {
                tracing::warn!(%error, "blob removal task failed");
            }
        }
        if !candidates.is_empty() {
            let _gc = self.layer_gc.write().await;
            let mut in_use = self.index.read().await.chain_ids_in_use();
            in_use.extend(
                self.held
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .flatten()
                    .cloned(),
            );
            let unused: Vec<Digest> = candidates
                .iter()
                .filter(|c| !in_use.contains(*c))
                .filter_map(|c| Digest::parse(c).ok())
                .collect();
            let layers = Arc::clone(self.puller.layers());
            let result = tokio::task::spawn_blocking(move || {
                for chain_id in &unused {
                    if let Err(error) = layers.remove(chain_id) {
                        tracing::warn!(layer = %chain_id, %error, "could not remove unused layer");
                    }
                }
            })
            .await;
            if let Err(error) = result {
                tracing::warn!(%error, "layer removal task failed");
            }
        }
        self.refresh_usage().await;
    }

    /// Recomputes the store's usage from the records and layer metadata (no tree walk).
    async fn refresh_usage(&self) {
        let images = self.list().await;
        let layers = Arc::clone(self.puller.layers());
        let usage = tokio::task::spawn_blocking(move || {
            let mut usage = ImageUsage::default();
            let mut seen = BTreeSet::new();
            for image in &images {
                // Blobs: the image's own size counts its compressed layers and config; a
                // layer blob shared with an image already counted is subtracted again.
                usage.bytes += image.size;
                usage.inodes += 2;
                for (blob, size) in image.layers.iter().zip(&image.layer_sizes) {
                    if seen.insert(blob.clone()) {
                        usage.inodes += 1;
                    } else {
                        usage.bytes = usage.bytes.saturating_sub(*size);
                    }
                }
                for chain_id in &image.chain_ids {
                    if !seen.insert(chain_id.clone()) {
                        continue;
                    }
                    if let Ok(info) = Digest::parse(chain_id).and_then(|d| layers.info(&d)) {
                        usage.bytes += info.uncompressed_bytes;
                        usage.inodes += info.entries;
                    }
                }
            }
            usage
        })
        .await
        .unwrap_or_default();
        *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = usage;
    }
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, Error> + Send + 'static,
) -> Result<R, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("image task failed: {e}")))?
}

/// Chain IDs of the images `changes` delete: candidates for removal once persisted.
fn deleted_layers(index: &ImageIndex, changes: &[Change]) -> Deleted {
    let deleted: Vec<&ImageRecord> = changes
        .iter()
        .filter_map(|change| match change {
            Change::Delete(id) => index.get(id),
            Change::Put(_) => None,
        })
        .collect();
    Deleted {
        chain_ids: deleted
            .iter()
            .flat_map(|i| i.chain_ids.iter().cloned())
            .collect(),
        blobs: deleted
            .iter()
            .flat_map(|i| i.blobs.iter().cloned())
            .collect(),
    }
}

/// What deleted images leave behind: candidates for removal once nothing uses them.
#[derive(Debug, Default)]
struct Deleted {
    chain_ids: BTreeSet<String>,
    blobs: BTreeSet<String>,
}
