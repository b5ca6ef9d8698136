//! A directory of records, one JSON file per object, each replaced atomically.

use std::marker::PhantomData;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StateError;
use super::atomic::{TEMP_SUFFIX, remove_durably, write_atomic};

const RECORD_SUFFIX: &str = ".json";
const CORRUPT_SUFFIX: &str = ".corrupt";

/// The records of one kind of object (sandboxes, containers, ...). Blocking: call it from a
/// blocking thread, or through [`super::Table`].
#[derive(Debug)]
pub struct RecordStore<T> {
    dir: PathBuf,
    _kind: PhantomData<fn() -> T>,
}

/// What the recovery pass found.
#[derive(Debug)]
pub struct Recovered<T> {
    /// Every readable record, by id.
    pub records: Vec<(String, T)>,
    /// Half-written temp files that were removed.
    pub removed_temp_files: usize,
    /// Unreadable records, renamed aside to `<id>.json.corrupt` so nothing is lost.
    pub corrupt: Vec<PathBuf>,
}

impl<T: Serialize + DeserializeOwned> RecordStore<T> {
    /// Opens (creating it with mode 0700 if needed) the record directory.
    pub fn open(dir: &Path) -> Result<RecordStore<T>, StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StateError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(RecordStore {
            dir: dir.to_path_buf(),
            _kind: PhantomData,
        })
    }

    /// The record directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the record for `id` durably, replacing any previous one.
    pub fn put(&self, id: &str, record: &T) -> Result<(), StateError> {
        let name = record_name(id)?;
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| StateError::Encode {
            id: id.to_string(),
            source,
        })?;
        write_atomic(&self.dir, &name, &bytes).map_err(|source| StateError::WriteRecord {
            path: self.dir.join(&name),
            source,
        })
    }

    /// Removes the record for `id`; a missing record is not an error.
    pub fn remove(&self, id: &str) -> Result<(), StateError> {
        let name = record_name(id)?;
        remove_durably(&self.dir, &name).map_err(|source| StateError::RemoveRecord {
            path: self.dir.join(&name),
            source,
        })
    }

    /// Loads every record, removes temp files a crash left behind and sets unreadable
    /// records aside.
    pub fn recover(&self) -> Result<Recovered<T>, StateError> {
        let read_err = |source| StateError::ReadRecords {
            path: self.dir.clone(),
            source,
        };
        let mut recovered = Recovered {
            records: Vec::new(),
            removed_temp_files: 0,
            corrupt: Vec::new(),
        };
        for entry in std::fs::read_dir(&self.dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(TEMP_SUFFIX) {
                std::fs::remove_file(&path).map_err(|source| StateError::RemoveRecord {
                    path: path.clone(),
                    source,
                })?;
                recovered.removed_temp_files += 1;
                continue;
            }
            let Some(id) = name.strip_suffix(RECORD_SUFFIX) else {
                continue;
            };
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| serde_json::from_slice::<T>(&bytes).map_err(|e| e.to_string()));
            match parsed {
                Ok(record) => recovered.records.push((id.to_string(), record)),
                Err(reason) => {
                    let aside = path.with_file_name(format!("{name}{CORRUPT_SUFFIX}"));
                    tracing::warn!(record = %path.display(), %reason, aside = %aside.display(),
                        "unreadable record set aside");
                    std::fs::rename(&path, &aside).map_err(|source| StateError::WriteRecord {
                        path: aside.clone(),
                        source,
                    })?;
                    recovered.corrupt.push(aside);
                }
            }
        }
        recovered.records.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(recovered)
    }
}

/// Record file name for an id; ids are plain names so they can never leave the directory.
fn record_name(id: &str) -> Result<String, StateError> {
    let plain = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        Ok(format!("{id}{RECORD_SUFFIX}"))
    } else {
        Err(StateError::InvalidId { id: id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Thing {
        name: String,
        count: u32,
    }

    fn thing(name: &str, count: u32) -> Thing {
        Thing {
            name: name.to_string(),
            count,
        }
    }

    #[test]
    fn test_record_store_put_recover_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::<Thing>::open(&dir.path().join("things")).unwrap();
        store.put("b", &thing("b", 2)).unwrap();
        store.put("a", &thing("a", 1)).unwrap();
        store.put("a", &thing("a", 3)).unwrap();
        let recovered = store.recover().unwrap();
        assert_eq!(
            recovered.records,
            vec![
                ("a".to_string(), thing("a", 3)),
                ("b".to_string(), thing("b", 2))
            ]
        );
        store.remove("a").unwrap();
        store.remove("a").unwrap();
        assert_eq!(store.recover().unwrap().records.len(), 1);
    }

    #[test]
    fn test_record_store_recover_removes_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::<Thing>::open(dir.path()).unwrap();
        store.put("a", &thing("a", 1)).unwrap();
        std::fs::write(dir.path().join(".b.json.tmp"), b"{\"name\":").unwrap();
        let recovered = store.recover().unwrap();
        assert_eq!(recovered.removed_temp_files, 1);
        assert_eq!(recovered.records.len(), 1);
        assert!(!dir.path().join(".b.json.tmp").exists());
    }

    #[test]
    fn test_record_store_corrupt_record_set_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::<Thing>::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("bad.json"), b"{ not json").unwrap();
        let recovered = store.recover().unwrap();
        assert!(recovered.records.is_empty());
        assert_eq!(recovered.corrupt.len(), 1);
        assert_eq!(
            std::fs::read(dir.path().join("bad.json.corrupt")).unwrap(),
            b"{ not json"
        );
    }

    #[test]
    fn test_record_store_rejects_path_like_ids() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::<Thing>::open(dir.path()).unwrap();
        for id in ["", "../x", "a/b", ".hidden"] {
            assert!(
                matches!(
                    store.put(id, &thing("x", 0)),
                    Err(StateError::InvalidId { .. })
                ),
                "{id:?}"
            );
        }
    }
}
