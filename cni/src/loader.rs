//! Keeps the loaded network configuration and reloads it only when the config or plugin
//! directories change, so readiness checks cost a few `stat` calls instead of a directory
//! read per request.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::{Config, Error, NetworkConfig, load_network};

/// What the directories looked like when the network was last loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(PathBuf, Option<(SystemTime, u64)>)>);

type Loaded = Result<Arc<NetworkConfig>, Arc<Error>>;

/// The pod network as currently configured on disk.
#[derive(Debug)]
pub struct NetworkLoader {
    config: Config,
    cache: Mutex<Option<(Fingerprint, Loaded)>>,
}

impl NetworkLoader {
    /// A loader for the directories in `config`; nothing is read until [`Self::current`].
    pub fn new(config: Config) -> NetworkLoader {
        NetworkLoader {
            config,
            cache: Mutex::new(None),
        }
    }

    /// The current network, or why there is none. Blocking (a few `stat` calls, and a
    /// reload when something changed): call it from a blocking thread.
    pub fn current(&self) -> Loaded {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, loaded)) = cache.as_ref() {
            if *seen == self.fingerprint(loaded_file(loaded)) {
                return loaded.clone();
            }
        }
        let loaded: Loaded = load_network(&self.config).map(Arc::new).map_err(Arc::new);
        *cache = Some((self.fingerprint(loaded_file(&loaded)), loaded.clone()));
        loaded
    }

    fn fingerprint(&self, file: Option<PathBuf>) -> Fingerprint {
        let paths = self
            .config
            .conf_dirs
            .iter()
            .chain(&self.config.bin_dirs)
            .cloned()
            .chain(file);
        Fingerprint(
            paths
                .map(|path| {
                    let stamp = std::fs::metadata(&path)
                        .ok()
                        .and_then(|m| Some((m.modified().ok()?, m.len())));
                    (path, stamp)
                })
                .collect(),
        )
    }
}

fn loaded_file(loaded: &Loaded) -> Option<PathBuf> {
    loaded.as_ref().ok().map(|network| network.path.clone())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn test_loader_sees_config_that_appears_later() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            conf_dirs: vec![dir.path().join("net.d")],
            bin_dirs: vec![dir.path().join("bin")],
        };
        std::fs::create_dir_all(&config.conf_dirs[0]).unwrap();
        std::fs::create_dir_all(&config.bin_dirs[0]).unwrap();
        let loader = NetworkLoader::new(config.clone());
        assert!(loader.current().is_err());
        assert!(
            loader.current().is_err(),
            "cached failure is still a failure"
        );

        let plugin = config.bin_dirs[0].join("loopback");
        std::fs::write(&plugin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(
            config.conf_dirs[0].join("99-lo.conf"),
            r#"{"cniVersion":"1.0.0","name":"lo","type":"loopback"}"#,
        )
        .unwrap();
        assert_eq!(loader.current().unwrap().name, "lo");

        std::fs::remove_file(config.conf_dirs[0].join("99-lo.conf")).unwrap();
        assert!(loader.current().is_err(), "a removed config is noticed");
    }
}
