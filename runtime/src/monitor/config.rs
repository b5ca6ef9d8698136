//! The monitor's config: what the agent tells one `corral-monitor` about its container.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::logs::DEFAULT_MAX_LINE_BYTES;

/// The file name of the config inside the bundle (`<bundle>/monitor.json`).
pub const CONFIG_FILE: &str = "monitor.json";

/// The longest unix socket path (`sun_path` holds 108 bytes with the trailing NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Written by the agent as JSON into `<bundle>/monitor.json`; its path is the monitor's only
/// argument. Unknown fields are an error: a newer agent asking for something an older monitor
/// does not know must fail loudly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The container id (libcontainer's rules: letters, digits, `_`, `+`, `-`, `.`).
    pub id: String,
    /// The OCI bundle: holds `config.json`, whose `root.path` is the root filesystem.
    pub bundle: PathBuf,
    /// libcontainer's state directory for this node (e.g. `/run/corral/libcontainer`); the
    /// container's state lives in `<state_root>/<id>`.
    pub state_root: PathBuf,
    /// The unix socket the monitor serves requests on.
    pub socket: PathBuf,
    /// Where the monitor writes the [`ExitRecord`](super::ExitRecord) when the init exits.
    pub exit_file: PathBuf,
    /// The CRI log file; empty = the output is read and dropped.
    #[serde(default)]
    pub log_path: PathBuf,
    /// The longest line written as one log record; longer lines are split (0 = 16 KiB).
    #[serde(default = "default_max_line_bytes")]
    pub log_max_line_bytes: usize,
    /// The process has a terminal (`process.terminal` in the spec must agree).
    #[serde(default)]
    pub tty: bool,
    /// Keep the container's stdin open (a pipe the monitor holds and attachers write to).
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin when the stdin of the first attacher that had it ends.
    #[serde(default)]
    pub stdin_once: bool,
}

fn default_max_line_bytes() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

impl MonitorConfig {
    /// A config with the defaults for everything but the paths and id.
    pub fn new(id: &str, bundle: &Path, state_root: &Path) -> MonitorConfig {
        MonitorConfig {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            state_root: state_root.to_path_buf(),
            socket: bundle.join("monitor.sock"),
            exit_file: bundle.join("exit.json"),
            log_path: PathBuf::new(),
            log_max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            tty: false,
            stdin: false,
            stdin_once: false,
        }
    }

    /// Checks what serde cannot: the id's characters, absolute paths, the socket length.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |message: String| Err(Error::InvalidMonitorConfig(message));
        if self.id.is_empty() || self.id == "." || self.id == ".." {
            return bad(format!("invalid container id {:?}", self.id));
        }
        if let Some(c) = self
            .id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
        {
            return bad(format!("container id {:?} has character {c:?}", self.id));
        }
        let mut paths = vec![
            ("bundle", &self.bundle),
            ("state_root", &self.state_root),
            ("socket", &self.socket),
            ("exit_file", &self.exit_file),
        ];
        if !self.log_path.as_os_str().is_empty() {
            paths.push(("log_path", &self.log_path));
        }
        for (name, path) in paths {
            if !path.is_absolute() {
                return bad(format!("{name} {} is not an absolute path", path.display()));
            }
        }
        if self.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return bad(format!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes",
                self.socket.display()
            ));
        }
        if self.stdin_once && !self.stdin {
            return bad("stdin_once needs stdin".to_string());
        }
        Ok(())
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<MonitorConfig, Error> {
        let failed = |message: String| Error::ReadMonitorConfig {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read(path).map_err(|err| failed(err.to_string()))?;
        let config: MonitorConfig =
            serde_json::from_slice(&text).map_err(|err| failed(err.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the config to `path` (the agent does this before spawning the monitor).
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|err| Error::InvalidMonitorConfig(err.to_string()))?;
        super::exit::write_atomic(path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MonitorConfig {
        MonitorConfig::new(
            "abc-1",
            Path::new("/run/corral/bundles/abc-1"),
            Path::new("/run/corral/libcontainer"),
        )
    }

    #[test]
    fn test_monitor_config_roundtrip_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CONFIG_FILE);
        let mut want = config();
        want.log_path = PathBuf::from("/var/log/pods/p/c/0.log");
        want.save(&path).unwrap();
        assert_eq!(MonitorConfig::load(&path).unwrap(), want);

        let minimal = r#"{"id":"x","bundle":"/b","state_root":"/s","socket":"/b/m.sock",
            "exit_file":"/b/exit.json"}"#;
        let parsed: MonitorConfig = serde_json::from_str(minimal).unwrap();
        assert_eq!(parsed.log_max_line_bytes, DEFAULT_MAX_LINE_BYTES);
        assert!(parsed.log_path.as_os_str().is_empty());
        assert!(!parsed.tty && !parsed.stdin && !parsed.stdin_once);
        parsed.validate().unwrap();
    }

    #[test]
    fn test_monitor_config_unknown_field_rejected() {
        let text = r#"{"id":"x","bundle":"/b","state_root":"/s","socket":"/b/m.sock",
            "exit_file":"/b/exit.json","attach":true}"#;
        assert!(serde_json::from_str::<MonitorConfig>(text).is_err());
    }

    #[test]
    fn test_monitor_config_validate_rejects_bad_values() {
        type Change = Box<dyn Fn(&mut MonitorConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("id", Box::new(|c| c.id = "a/b".into())),
            ("id", Box::new(|c| c.id = "..".into())),
            ("absolute", Box::new(|c| c.bundle = "rel".into())),
            ("absolute", Box::new(|c| c.log_path = "0.log".into())),
            (
                "longer",
                Box::new(|c| c.socket = PathBuf::from("/").join("s".repeat(120))),
            ),
            ("stdin_once", Box::new(|c| c.stdin_once = true)),
        ];
        for (want, change) in cases {
            let mut c = config();
            change(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn test_monitor_config_load_missing_file_names_path() {
        let err = MonitorConfig::load(Path::new("/nonexistent/monitor.json")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/monitor.json"),
            "{err}"
        );
    }
}
