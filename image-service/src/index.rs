//! The image index: which images exist and which names (tags, repo digests) point at them.
//! Pure in-memory logic; the caller persists the changes it returns before applying them.
//!
//! References: a tag `repo:tag` or a repo digest `repo@sha256:...`. Removing a tag also drops
//! the repo digests of that repository once no tag of it is left; an image goes when no
//! reference is left (or when removed by id), and its layers go when no image has them.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::manifest::ImageConfig;

/// One image as stored and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The config digest (`sha256:...`), the image ID.
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    /// Bytes of the compressed layers and the config, as stored.
    pub size: u64,
    pub manifest_digest: String,
    pub config: ImageConfig,
    /// Compressed layer digests, bottom first.
    pub layers: Vec<String>,
    /// Compressed layer sizes, in the same order.
    #[serde(default)]
    pub layer_sizes: Vec<u64>,
    /// Chain IDs of the layers, bottom first (the unpacked layer directories).
    pub chain_ids: Vec<String>,
    /// Every content-store blob of the image: index, manifest, config, layers.
    #[serde(default)]
    pub blobs: Vec<String>,
}

/// A change to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Write this record (new or updated).
    Put(Box<ImageRecord>),
    /// Delete the record with this ID.
    Delete(String),
}

/// All images.
#[derive(Debug, Default)]
pub struct ImageIndex {
    images: HashMap<String, ImageRecord>,
}

fn repository_of(reference: &str) -> &str {
    if let Some((repo, _)) = reference.split_once('@') {
        return repo;
    }
    // A tag's colon comes after the last slash (a registry port's colon comes before it).
    match reference.rfind(':') {
        Some(colon) if colon > reference.rfind('/').unwrap_or(0) => &reference[..colon],
        _ => reference,
    }
}

impl ImageIndex {
    /// An index of recovered records.
    pub fn new(records: impl IntoIterator<Item = ImageRecord>) -> ImageIndex {
        ImageIndex {
            images: records.into_iter().map(|r| (r.id.clone(), r)).collect(),
        }
    }

    /// Every image.
    pub fn list(&self) -> impl Iterator<Item = &ImageRecord> {
        self.images.values()
    }

    /// The image by ID.
    pub fn get(&self, id: &str) -> Option<&ImageRecord> {
        self.images.get(id)
    }

    /// The image a normalised tag or repo digest names.
    pub fn by_reference(&self, reference: &str) -> Option<&ImageRecord> {
        self.images.values().find(|image| {
            image.repo_tags.iter().any(|t| t == reference)
                || image.repo_digests.iter().any(|d| d == reference)
        })
    }

    /// The image whose ID is `sha256:<hex>` or starts with the given hex (at least 12
    /// characters, and unambiguous).
    pub fn by_id_or_prefix(&self, id: &str) -> Option<&ImageRecord> {
        if let Some(image) = self.images.get(id) {
            return Some(image);
        }
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        if hex.len() < 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut matches = self
            .images
            .values()
            .filter(|image| image.id["sha256:".len()..].starts_with(hex));
        match (matches.next(), matches.next()) {
            (Some(image), None) => Some(image),
            _ => None,
        }
    }

    /// Content-store blobs some image still uses.
    pub fn blobs_in_use(&self) -> BTreeSet<String> {
        self.images
            .values()
            .flat_map(|image| image.blobs.iter().cloned())
            .collect()
    }

    /// Chain IDs some image still uses.
    pub fn chain_ids_in_use(&self) -> BTreeSet<String> {
        self.images
            .values()
            .flat_map(|image| image.chain_ids.iter().cloned())
            .collect()
    }

    /// Records a pulled image: merges its names into an existing record of the same ID and
    /// moves its tags away from any other image that had them.
    pub fn plan_add(&self, pulled: &ImageRecord) -> Vec<Change> {
        let mut changes = Vec::new();
        for other in self.images.values().filter(|image| image.id != pulled.id) {
            let mut updated = other.clone();
            updated.repo_tags.retain(|t| !pulled.repo_tags.contains(t));
            if updated.repo_tags != other.repo_tags {
                changes.push(settle(updated));
            }
        }
        let mut merged = match self.images.get(&pulled.id) {
            Some(existing) => existing.clone(),
            None => pulled.clone(),
        };
        for tag in &pulled.repo_tags {
            if !merged.repo_tags.contains(tag) {
                merged.repo_tags.push(tag.clone());
            }
        }
        for digest in &pulled.repo_digests {
            if !merged.repo_digests.contains(digest) {
                merged.repo_digests.push(digest.clone());
            }
        }
        changes.push(Change::Put(Box::new(merged)));
        changes
    }

    /// What removing `name` (an image ID, a tag or a repo digest, already resolved to
    /// `image_id`) changes.
    pub fn plan_remove(&self, image_id: &str, name: &str) -> Vec<Change> {
        let Some(image) = self.images.get(image_id) else {
            return Vec::new();
        };
        if name == image.id
            || !(image.repo_tags.iter().any(|t| t == name)
                || image.repo_digests.iter().any(|d| d == name))
        {
            return vec![Change::Delete(image.id.clone())];
        }
        let mut updated = image.clone();
        if name.contains('@') {
            let repository = repository_of(name);
            updated.repo_digests.retain(|d| d != name);
            updated.repo_tags.retain(|t| repository_of(t) != repository);
        } else {
            updated.repo_tags.retain(|t| t != name);
        }
        vec![settle(updated)]
    }

    /// Applies persisted changes.
    pub fn apply(&mut self, changes: &[Change]) {
        for change in changes {
            match change {
                Change::Put(record) => {
                    self.images.insert(record.id.clone(), (**record).clone());
                }
                Change::Delete(id) => {
                    self.images.remove(id);
                }
            }
        }
    }
}

/// Drops repo digests of repositories with no tag left (unless no tag was ever there, as for
/// an image pulled by digest), and deletes an image with no reference left.
fn settle(mut image: ImageRecord) -> Change {
    if !image.repo_tags.is_empty() {
        let tagged: BTreeSet<&str> = image.repo_tags.iter().map(|t| repository_of(t)).collect();
        image
            .repo_digests
            .retain(|d| tagged.contains(repository_of(d)));
    } else {
        image.repo_digests.clear();
    }
    if image.repo_tags.is_empty() && image.repo_digests.is_empty() {
        Change::Delete(image.id)
    } else {
        Change::Put(Box::new(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: char, tags: &[&str], digests: &[&str]) -> ImageRecord {
        ImageRecord {
            id: format!("sha256:{}", id.to_string().repeat(64)),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            size: 1,
            manifest_digest: String::new(),
            config: ImageConfig::default(),
            layers: Vec::new(),
            layer_sizes: Vec::new(),
            chain_ids: vec![format!("chain-{id}")],
            blobs: Vec::new(),
        }
    }

    fn index_with(images: Vec<ImageRecord>) -> ImageIndex {
        ImageIndex::new(images)
    }

    #[test]
    fn test_repository_of_handles_ports_tags_digests() {
        assert_eq!(repository_of("localhost:5000/a/b:t"), "localhost:5000/a/b");
        assert_eq!(repository_of("localhost:5000/a/b"), "localhost:5000/a/b");
        assert_eq!(
            repository_of("docker.io/library/x@sha256:ab"),
            "docker.io/library/x"
        );
    }

    #[test]
    fn test_remove_tag_keeps_other_tags() {
        let mut index = index_with(vec![image('a', &["d/x:1", "d/x:2"], &["d/x@sha256:m"])]);
        let id = index.list().next().unwrap().id.clone();
        let changes = index.plan_remove(&id, "d/x:1");
        index.apply(&changes);
        let left = index.get(&id).unwrap();
        assert_eq!(left.repo_tags, vec!["d/x:2".to_string()]);
        assert_eq!(left.repo_digests, vec!["d/x@sha256:m".to_string()]);
    }

    #[test]
    fn test_remove_last_tag_removes_image() {
        let mut index = index_with(vec![image('a', &["d/x:1"], &["d/x@sha256:m"])]);
        let id = index.list().next().unwrap().id.clone();
        let changes = index.plan_remove(&id, "d/x:1");
        assert_eq!(changes, vec![Change::Delete(id.clone())]);
        index.apply(&changes);
        assert!(index.get(&id).is_none());
        assert!(index.chain_ids_in_use().is_empty());
    }

    #[test]
    fn test_image_pulled_by_digest_only_stays_until_digest_removed() {
        let index = index_with(vec![image('a', &[], &["d/x@sha256:m"])]);
        let id = index.list().next().unwrap().id.clone();
        assert!(index.by_reference("d/x@sha256:m").is_some());
        let changes = index.plan_remove(&id, "d/x@sha256:m");
        assert_eq!(changes, vec![Change::Delete(id)]);
    }

    #[test]
    fn test_pull_moves_tag_from_old_image() {
        let mut index = index_with(vec![image('a', &["d/x:latest"], &["d/x@sha256:old"])]);
        let new = image('b', &["d/x:latest"], &["d/x@sha256:new"]);
        let changes = index.plan_add(&new);
        index.apply(&changes);
        assert_eq!(index.by_reference("d/x:latest").unwrap().id, new.id);
        assert!(
            index.get(&image('a', &[], &[]).id).is_none(),
            "old image lost its last tag"
        );
    }

    #[test]
    fn test_pull_same_image_under_second_tag_merges() {
        let mut index = index_with(vec![image('a', &["d/x:1"], &["d/x@sha256:m"])]);
        let again = image('a', &["d/x:2"], &["d/x@sha256:m"]);
        index.apply(&index.plan_add(&again));
        let merged = index.get(&again.id).unwrap();
        assert_eq!(
            merged.repo_tags,
            vec!["d/x:1".to_string(), "d/x:2".to_string()]
        );
        assert_eq!(merged.repo_digests.len(), 1);
    }

    #[test]
    fn test_remove_by_id_removes_everything() {
        let mut index = index_with(vec![image('a', &["d/x:1", "e/y:2"], &[])]);
        let id = index.list().next().unwrap().id.clone();
        index.apply(&index.plan_remove(&id, &id));
        assert!(index.get(&id).is_none());
    }

    #[test]
    fn test_by_id_prefix_needs_twelve_unambiguous_chars() {
        let index = index_with(vec![image('a', &["d/x:1"], &[])]);
        assert!(index.by_id_or_prefix("aaaaaaaaaaaa").is_some());
        assert!(index.by_id_or_prefix("aaaa").is_none());
        assert!(index.by_id_or_prefix("bbbbbbbbbbbb").is_none());
    }
}
