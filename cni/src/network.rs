//! Finding and reading the pod network configuration.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Config, Error};

/// File name endings that hold a network configuration, as libcni accepts them.
const CONFIG_EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// The pod network: one configuration file, normalised to a plugin list.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// The network name (`name`).
    pub name: String,
    /// The CNI spec version the configuration is written for (`cniVersion`).
    pub cni_version: String,
    /// The plugin entries in chain order, as written in the file.
    pub plugins: Vec<Value>,
    /// The executable of each plugin, in the same order.
    pub plugin_binaries: Vec<PathBuf>,
}

/// Loads the network from the first config directory that has a configuration file, and
/// finds every plugin it names in the plugin directories.
pub fn load_network(config: &Config) -> Result<NetworkConfig, Error> {
    for dir in &config.conf_dirs {
        if let Some(path) = first_config_file(dir)? {
            let mut network = parse_network_file(&path)?;
            network.plugin_binaries = find_plugins(&network, &config.bin_dirs)?;
            return Ok(network);
        }
    }
    Err(Error::NoNetworkConfig {
        dirs: config.conf_dirs.clone(),
    })
}

/// The lexicographically first configuration file in `dir`, if any; a missing directory has
/// none.
fn first_config_file(dir: &Path) -> Result<Option<PathBuf>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::ReadConfigDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut candidates = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::ReadConfigDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let is_config = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| CONFIG_EXTENSIONS.contains(&e));
        if is_config && path.is_file() {
            candidates.push(path);
        }
    }
    candidates.sort();
    Ok(candidates.into_iter().next())
}

fn parse_network_file(path: &Path) -> Result<NetworkConfig, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadConfigFile {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| Error::InvalidNetworkConfig {
        path: path.to_path_buf(),
        reason,
    };
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    let field = |key: &str| -> Result<String, Error> {
        doc.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| invalid(format!("missing string field {key:?}")))
    };
    let name = field("name")?;
    let cni_version = field("cniVersion")?;
    let plugins = match doc.get("plugins") {
        Some(Value::Array(list)) if !list.is_empty() => list.clone(),
        Some(_) => return Err(invalid("\"plugins\" must be a non-empty list".into())),
        // A single-plugin `.conf` file is its own plugin entry.
        None => vec![doc.clone()],
    };
    for plugin in &plugins {
        match plugin.get("type").and_then(Value::as_str) {
            Some(t) if !t.is_empty() && !t.contains('/') => {}
            _ => return Err(invalid("every plugin needs a plain \"type\" name".into())),
        }
    }
    Ok(NetworkConfig {
        path: path.to_path_buf(),
        name,
        cni_version,
        plugins,
        plugin_binaries: Vec::new(),
    })
}

fn find_plugins(network: &NetworkConfig, bin_dirs: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut binaries = Vec::with_capacity(network.plugins.len());
    for plugin in &network.plugins {
        let plugin_type = plugin.get("type").and_then(Value::as_str).unwrap_or("");
        match find_plugin(plugin_type, bin_dirs) {
            Some(path) => binaries.push(path),
            None => {
                return Err(Error::PluginNotFound {
                    plugin: plugin_type.to_string(),
                    network: network.name.clone(),
                    dirs: bin_dirs.to_vec(),
                });
            }
        }
    }
    Ok(binaries)
}

/// The executable for plugin type `plugin_type` in the first of `bin_dirs` that has one.
pub(crate) fn find_plugin(plugin_type: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    if plugin_type.is_empty() || plugin_type.contains('/') {
        return None;
    }
    bin_dirs
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        config: Config,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net.d");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let config = Config {
            conf_dirs: vec![conf],
            bin_dirs: vec![dir.path().join("missing-bin"), bin],
        };
        Fixture { _dir: dir, config }
    }

    fn add_plugin(f: &Fixture, name: &str) {
        let path = f.config.bin_dirs[1].join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn add_config(f: &Fixture, file: &str, body: &str) {
        std::fs::write(f.config.conf_dirs[0].join(file), body).unwrap();
    }

    const CONFLIST: &str = r#"{"cniVersion":"1.0.0","name":"podnet","plugins":[
        {"type":"bridge","bridge":"cni0"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    #[test]
    fn test_load_network_missing_dir_is_no_config() {
        let f = fixture();
        std::fs::remove_dir(&f.config.conf_dirs[0]).unwrap();
        let err = load_network(&f.config).unwrap_err();
        assert!(matches!(err, Error::NoNetworkConfig { .. }), "{err}");
    }

    #[test]
    fn test_load_network_conflist_with_plugins() {
        let f = fixture();
        add_plugin(&f, "bridge");
        add_plugin(&f, "portmap");
        add_config(&f, "10-podnet.conflist", CONFLIST);
        let network = load_network(&f.config).unwrap();
        assert_eq!(network.name, "podnet");
        assert_eq!(network.cni_version, "1.0.0");
        assert_eq!(network.plugins.len(), 2);
        assert_eq!(
            network.plugin_binaries[1],
            f.config.bin_dirs[1].join("portmap")
        );
    }

    #[test]
    fn test_load_network_single_plugin_conf() {
        let f = fixture();
        add_plugin(&f, "loopback");
        add_config(
            &f,
            "99-lo.conf",
            r#"{"cniVersion":"0.4.0","name":"lo","type":"loopback"}"#,
        );
        let network = load_network(&f.config).unwrap();
        assert_eq!(network.plugins.len(), 1);
        assert_eq!(network.name, "lo");
    }

    #[test]
    fn test_load_network_picks_lexicographically_first() {
        let f = fixture();
        add_plugin(&f, "bridge");
        add_plugin(&f, "portmap");
        add_plugin(&f, "loopback");
        add_config(
            &f,
            "20-lo.conf",
            r#"{"cniVersion":"0.4.0","name":"lo","type":"loopback"}"#,
        );
        add_config(&f, "10-podnet.conflist", CONFLIST);
        add_config(&f, "00-ignored.txt", "not a config");
        assert_eq!(load_network(&f.config).unwrap().name, "podnet");
    }

    #[test]
    fn test_load_network_missing_plugin_named() {
        let f = fixture();
        add_plugin(&f, "bridge");
        add_config(&f, "10-podnet.conflist", CONFLIST);
        let err = load_network(&f.config).unwrap_err().to_string();
        assert!(err.contains("\"portmap\""), "{err}");
    }

    #[test]
    fn test_load_network_invalid_json_named() {
        let f = fixture();
        add_config(&f, "10-bad.conflist", "{ nope");
        let err = load_network(&f.config).unwrap_err().to_string();
        assert!(err.contains("10-bad.conflist"), "{err}");
    }

    #[test]
    fn test_load_network_plugin_type_with_slash_rejected() {
        let f = fixture();
        add_config(
            &f,
            "10-x.conf",
            r#"{"cniVersion":"1.0.0","name":"x","type":"../../bin/sh"}"#,
        );
        assert!(matches!(
            load_network(&f.config).unwrap_err(),
            Error::InvalidNetworkConfig { .. }
        ));
    }
}
