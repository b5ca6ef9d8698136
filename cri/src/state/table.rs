//! An in-memory table of records backed by a [`RecordStore`]: every change is written
//! durably before the in-memory copy changes (containerd's `UpdateSync`), reads never wait
//! for the disk.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StateError;
use super::store::RecordStore;

/// Records of one kind, in memory and on disk.
#[derive(Debug)]
pub struct Table<T> {
    store: Arc<RecordStore<T>>,
    records: RwLock<HashMap<String, T>>,
    /// Serialises writers so the disk and memory orders agree.
    writer: tokio::sync::Mutex<()>,
}

impl<T> Table<T>
where
    T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Opens the record directory and loads it (the recovery pass for this kind).
    pub async fn open(dir: &Path) -> Result<Table<T>, StateError> {
        let dir = dir.to_path_buf();
        let (store, recovered) = blocking(move || {
            let store = RecordStore::<T>::open(&dir)?;
            let recovered = store.recover()?;
            Ok((store, recovered))
        })
        .await?;
        if recovered.removed_temp_files > 0 || !recovered.corrupt.is_empty() {
            tracing::info!(
                dir = %store.dir().display(),
                removed_temp_files = recovered.removed_temp_files,
                corrupt = recovered.corrupt.len(),
                "cleaned up after an unclean stop"
            );
        }
        Ok(Table {
            store: Arc::new(store),
            records: RwLock::new(recovered.records.into_iter().collect()),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// A copy of the record for `id`.
    pub fn get(&self, id: &str) -> Option<T> {
        self.read().get(id).cloned()
    }

    /// The record whose ID is `id`, or the only one whose ID starts with it (at least six
    /// characters: crictl and kubectl users type short IDs).
    pub fn find(&self, id: &str) -> Option<T> {
        let records = self.read();
        if let Some(record) = records.get(id) {
            return Some(record.clone());
        }
        if id.len() < 6 {
            return None;
        }
        let mut matches = records.iter().filter(|(key, _)| key.starts_with(id));
        match (matches.next(), matches.next()) {
            (Some((_, record)), None) => Some(record.clone()),
            _ => None,
        }
    }

    /// Copies of every record.
    pub fn list(&self) -> Vec<T> {
        self.read().values().cloned().collect()
    }

    /// Writes `record` under `id`, then makes it visible.
    pub async fn put(&self, id: &str, record: T) -> Result<(), StateError> {
        let _writer = self.writer.lock().await;
        let store = Arc::clone(&self.store);
        let (id_owned, to_write) = (id.to_string(), record.clone());
        blocking(move || store.put(&id_owned, &to_write)).await?;
        self.write().insert(id.to_string(), record);
        Ok(())
    }

    /// Removes the record for `id` from disk, then from memory. Unknown ids are fine.
    pub async fn remove(&self, id: &str) -> Result<(), StateError> {
        let _writer = self.writer.lock().await;
        let store = Arc::clone(&self.store);
        let id_owned = id.to_string();
        blocking(move || store.remove(&id_owned)).await?;
        self.write().remove(id);
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, T>> {
        // A poisoned lock only means a reader panicked; the map itself is always whole
        // because it is only changed by single insert/remove calls.
        self.records.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, T>> {
        self.records.write().unwrap_or_else(|e| e.into_inner())
    }
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, StateError> + Send + 'static,
) -> Result<R, StateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StateError::Task(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn test_table_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::<String>::open(dir.path()).await.unwrap();
        table.put("a", "one".into()).await.unwrap();
        table.put("b", "two".into()).await.unwrap();
        table.remove("b").await.unwrap();
        assert_eq!(table.get("a").as_deref(), Some("one"));
        drop(table);
        let reopened = Table::<String>::open(dir.path()).await.unwrap();
        assert_eq!(reopened.list(), vec!["one".to_string()]);
    }

    #[tokio::test]
    async fn test_table_find_by_unique_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::<String>::open(dir.path()).await.unwrap();
        table.put("abcdef01", "one".into()).await.unwrap();
        table.put("abcdef02", "two".into()).await.unwrap();
        assert_eq!(table.find("abcdef01").as_deref(), Some("one"));
        assert_eq!(table.find("abcdef0"), None, "ambiguous");
        assert_eq!(table.find("abc"), None, "too short");
        table.remove("abcdef02").await.unwrap();
        assert_eq!(table.find("abcdef").as_deref(), Some("one"));
    }

    #[tokio::test]
    async fn test_table_failed_write_leaves_memory_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let table = Table::<String>::open(dir.path()).await.unwrap();
        assert!(table.put("../escape", "x".into()).await.is_err());
        assert!(table.list().is_empty());
    }
}
