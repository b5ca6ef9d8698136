//! The on-disk cache of ADD results, one JSON file per attachment (network name, container id,
//! interface name), so that DEL and CHECK can send the ADD's result as `prevResult` and the
//! configuration the attachment was made with, after an agent restart, after the network
//! namespace is gone and after the conf file changed or was deleted.
//!
//! Files are written atomically: a hidden temp file ending in `.tmp`, fsync, rename, fsync of
//! the directory. A crash can leave a temp file behind; [`recover`] removes them.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Error, NetworkConfig};

/// The `kind` of the records this version writes.
pub const CACHE_KIND: &str = "corral-cni-result-v1";

const RECORD_SUFFIX: &str = ".json";
const TEMP_SUFFIX: &str = ".tmp";

/// The most bytes an interface name may have (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// One cached attachment: what ADD was given and what it returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheRecord {
    /// Always [`CACHE_KIND`].
    pub kind: String,
    pub network_name: String,
    pub container_id: String,
    pub ifname: String,
    /// The network namespace the attachment was added in.
    pub netns_path: PathBuf,
    /// `CNI_ARGS` as pairs.
    pub cni_args: Vec<(String, String)>,
    /// The capability arguments the runtime offered (before filtering per plugin).
    pub capability_args: Map<String, Value>,
    /// The network configuration the attachment was added with.
    pub config: CachedConfig,
    /// The final result of the ADD chain, as the last plugin printed it.
    pub result: Value,
}

/// The network configuration as it was at ADD time (plugin binaries are looked up again by
/// `type` when it is used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedConfig {
    /// The file it was read from.
    pub path: PathBuf,
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl CachedConfig {
    /// The configuration part of a loaded network.
    pub fn from_network(network: &NetworkConfig) -> CachedConfig {
        CachedConfig {
            path: network.path.clone(),
            name: network.name.clone(),
            cni_version: network.cni_version.clone(),
            plugins: network.plugins.clone(),
        }
    }
}

/// The cache file of one attachment. The three parts are validated, so none can escape the
/// directory, and joined by `:`, which none of them may contain, so names cannot collide.
pub fn record_path(
    dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<PathBuf, Error> {
    validate_name("network name", network)?;
    validate_name("container id", container_id)?;
    validate_ifname(ifname)?;
    Ok(dir.join(format!("{network}:{container_id}:{ifname}{RECORD_SUFFIX}")))
}

/// Writes `record` atomically, replacing an older record of the same attachment.
pub fn store(dir: &Path, record: &CacheRecord) -> Result<(), Error> {
    let path = record_path(
        dir,
        &record.network_name,
        &record.container_id,
        &record.ifname,
    )?;
    let bytes = serde_json::to_vec(record).map_err(|e| Error::InvalidCacheRecord {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::CacheIo { path, source }
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let temp = temp_path(&path);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&bytes)?;
        file.sync_all()
    })();
    if let Err(source) = written.and_then(|()| fs::rename(&temp, &path)) {
        let _ = fs::remove_file(&temp);
        return Err(Error::CacheIo { path, source });
    }
    sync_dir(dir)
}

/// The record of one attachment, or `None` when there is none.
pub fn load(
    dir: &Path,
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<Option<CacheRecord>, Error> {
    let path = record_path(dir, network, container_id, ifname)?;
    match fs::read(&path) {
        Ok(bytes) => parse_record(&path, &bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::CacheIo { path, source }),
    }
}

/// Removes the record of one attachment; `false` when there was none.
pub fn remove(dir: &Path, network: &str, container_id: &str, ifname: &str) -> Result<bool, Error> {
    let path = record_path(dir, network, container_id, ifname)?;
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::CacheIo { path, source }),
    }
}

/// Every cached attachment, sorted by file name. Temp files are skipped; a record that cannot
/// be read is skipped with a warning (it is of no use to anyone); a missing directory holds
/// none.
pub fn list(dir: &Path) -> Result<Vec<CacheRecord>, Error> {
    let mut records = Vec::new();
    for path in entries(dir)? {
        if !is_record(&path) {
            continue;
        }
        match fs::read(&path)
            .map_err(|source| Error::CacheIo {
                path: path.clone(),
                source,
            })
            .and_then(|bytes| parse_record(&path, &bytes))
        {
            Ok(record) => records.push(record),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "skipping cni cache record")
            }
        }
    }
    Ok(records)
}

/// Removes the temp files a crash left behind; returns how many. Call it at start-up, before
/// any [`store`] runs.
pub fn recover(dir: &Path) -> Result<usize, Error> {
    let mut removed = 0;
    for path in entries(dir)? {
        let is_temp = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(TEMP_SUFFIX));
        if !is_temp {
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::CacheIo { path, source }),
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Checks a network name or container id: an alphanumeric first character, then
/// alphanumerics, `_`, `.` or `-` (the spec's rule for both).
pub(crate) fn validate_name(what: &str, value: &str) -> Result<(), Error> {
    let mut chars = value.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        return Ok(());
    }
    Err(Error::InvalidAttachment(format!(
        "{what} {value:?} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
    )))
}

/// Checks an interface name as libcni does: 1 to 15 bytes, not `.` or `..`, no `/`, `:` or
/// whitespace.
pub(crate) fn validate_ifname(ifname: &str) -> Result<(), Error> {
    let bad = ifname.is_empty()
        || ifname.len() > MAX_IFNAME
        || ifname == "."
        || ifname == ".."
        || ifname
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(Error::InvalidAttachment(format!(
            "interface name {ifname:?} must be 1 to {MAX_IFNAME} bytes without '/', ':' or whitespace"
        )));
    }
    Ok(())
}

fn parse_record(path: &Path, bytes: &[u8]) -> Result<CacheRecord, Error> {
    let invalid = |reason: String| Error::InvalidCacheRecord {
        path: path.to_path_buf(),
        reason,
    };
    let record: CacheRecord = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
    if record.kind != CACHE_KIND {
        return Err(invalid(format!("unknown kind {:?}", record.kind)));
    }
    Ok(record)
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let io = |source| Error::CacheIo {
        path: dir.to_path_buf(),
        source,
    };
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(io(source)),
    };
    let mut paths = Vec::new();
    for entry in read {
        paths.push(entry.map_err(io)?.path());
    }
    paths.sort();
    Ok(paths)
}

fn is_record(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.') && n.ends_with(RECORD_SUFFIX))
}

/// A fresh hidden temp file name next to `path`, unique within this host.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()))
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::CacheIo {
            path: dir.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(container_id: &str) -> CacheRecord {
        CacheRecord {
            kind: CACHE_KIND.into(),
            network_name: "podnet".into(),
            container_id: container_id.into(),
            ifname: "eth0".into(),
            netns_path: "/run/netns/x".into(),
            cni_args: vec![("IgnoreUnknown".into(), "1".into())],
            capability_args: Map::new(),
            config: CachedConfig {
                path: "/etc/cni/net.d/10-podnet.conflist".into(),
                name: "podnet".into(),
                cni_version: "1.0.0".into(),
                plugins: vec![json!({"type": "bridge"})],
            },
            result: json!({"cniVersion": "1.0.0", "ips": []}),
        }
    }

    #[test]
    fn test_cache_store_load_remove_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("results");
        assert_eq!(load(&cache, "podnet", "abc", "eth0").unwrap(), None);
        store(&cache, &record("abc")).unwrap();
        assert_eq!(
            load(&cache, "podnet", "abc", "eth0").unwrap(),
            Some(record("abc"))
        );
        let mut newer = record("abc");
        newer.netns_path = "/run/netns/y".into();
        store(&cache, &newer).unwrap();
        assert_eq!(load(&cache, "podnet", "abc", "eth0").unwrap(), Some(newer));
        assert!(remove(&cache, "podnet", "abc", "eth0").unwrap());
        assert!(!remove(&cache, "podnet", "abc", "eth0").unwrap());
        assert_eq!(load(&cache, "podnet", "abc", "eth0").unwrap(), None);
        let names: Vec<_> = fs::read_dir(&cache).unwrap().collect();
        assert!(names.is_empty(), "no temp files left: {names:?}");
    }

    #[test]
    fn test_cache_list_skips_temp_and_recover_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), &record("b")).unwrap();
        store(dir.path(), &record("a")).unwrap();
        fs::write(dir.path().join(".podnet:c:eth0.json.1.0.tmp"), "{ half").unwrap();
        fs::write(dir.path().join("podnet:d:eth0.json"), "garbage").unwrap();
        let ids: Vec<String> = list(dir.path())
            .unwrap()
            .into_iter()
            .map(|r| r.container_id)
            .collect();
        assert_eq!(ids, vec!["a", "b"]);
        assert_eq!(recover(dir.path()).unwrap(), 1);
        assert_eq!(recover(dir.path()).unwrap(), 0);
        assert!(!dir.path().join(".podnet:c:eth0.json.1.0.tmp").exists());
        assert!(list(&dir.path().join("missing")).unwrap().is_empty());
    }

    #[test]
    fn test_cache_names_cannot_escape_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(record_path(dir.path(), "../etc", "abc", "eth0").is_err());
        assert!(record_path(dir.path(), "podnet", "a/b", "eth0").is_err());
        assert!(record_path(dir.path(), "podnet", "abc", "..").is_err());
        assert!(record_path(dir.path(), "podnet", "abc", "eth0:1").is_err());
        assert!(record_path(dir.path(), "podnet", "abc", "averyveryverylongname").is_err());
        assert!(record_path(dir.path(), "podnet", "", "eth0").is_err());
        let mut bad = record("x/../../y");
        bad.container_id = "x/../../y".into();
        assert!(matches!(
            store(dir.path(), &bad),
            Err(Error::InvalidAttachment(_))
        ));
    }

    #[test]
    fn test_cache_wrong_kind_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut other = record("abc");
        other.kind = "cniCacheV1".into();
        store(dir.path(), &other).unwrap();
        assert!(matches!(
            load(dir.path(), "podnet", "abc", "eth0"),
            Err(Error::InvalidCacheRecord { .. })
        ));
    }
}
