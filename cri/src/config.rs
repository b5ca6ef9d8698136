//! The agent's configuration: `/etc/corral/config.toml`, every key documented in
//! `deploy/config.toml`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the agent writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event.
    Json,
}

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent state: image store, unpacked layers, writable layers, records.
    pub root: PathBuf,
    /// Volatile state: pinned namespaces, bundles, mount points, monitor sockets.
    pub run_dir: PathBuf,
    /// The CRI gRPC unix socket kubelet and crictl connect to.
    pub socket: PathBuf,
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or a
    /// `tracing` directive list such as `info,corral=debug`.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// On SIGTERM/SIGINT, how long in-flight requests may run before the agent exits anyway.
    pub shutdown_timeout_seconds: u64,
    /// Images.
    pub images: corral_image_service::Config,
    /// Pod sandboxes.
    pub pod_sandbox: corral_pod_sandbox::Config,
    /// Containers.
    pub runtime: corral_runtime::Config,
    /// Pod networking.
    pub cni: corral_cni::Config,
    /// The Prometheus endpoint.
    pub metrics: corral_metrics::Config,
    /// The Exec/Attach/PortForward streaming server.
    pub streaming: crate::streaming::Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/corral"),
            run_dir: PathBuf::from("/run/corral"),
            socket: PathBuf::from("/run/corral/corral.sock"),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            shutdown_timeout_seconds: 10,
            images: corral_image_service::Config::default(),
            pod_sandbox: corral_pod_sandbox::Config::default(),
            runtime: corral_runtime::Config::default(),
            cni: corral_cni::Config::default(),
            metrics: corral_metrics::Config::default(),
            streaming: crate::streaming::Config::default(),
        }
    }
}

/// Why a config file could not be used. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads and validates a config file. A missing file at the default path means the
    /// defaults; a missing file named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                let config = Config::default();
                config.validate().map_err(|message| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    message,
                })?;
                return Ok(config);
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let config = Config::parse(&text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| line_column(&text, s.start));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: one_line(e.message()),
            }
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// Parses TOML text without validating it.
    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks every value; the error is one line naming the key.
    pub fn validate(&self) -> Result<(), String> {
        for (key, path) in [
            ("root", &self.root),
            ("run_dir", &self.run_dir),
            ("socket", &self.socket),
        ] {
            if !path.is_absolute() {
                return Err(format!("{key}: {} is not an absolute path", path.display()));
            }
        }
        if self.socket.file_name().is_none() {
            return Err(format!(
                "socket: {} does not name a file",
                self.socket.display()
            ));
        }
        if self.root == self.run_dir {
            return Err("root and run_dir must be different directories".to_string());
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| format!("log_level: {:?} is not a valid filter: {e}", self.log_level))?;
        if self.shutdown_timeout_seconds == 0 || self.shutdown_timeout_seconds > 3600 {
            return Err("shutdown_timeout_seconds: must be between 1 and 3600".to_string());
        }
        self.images.validate().map_err(|e| format!("images: {e}"))?;
        self.pod_sandbox
            .validate()
            .map_err(|e| format!("pod_sandbox: {e}"))?;
        self.runtime
            .validate()
            .map_err(|e| format!("runtime: {e}"))?;
        self.cni.validate().map_err(|e| format!("cni: {e}"))?;
        self.metrics
            .validate()
            .map_err(|e| format!("metrics: {e}"))?;
        self.streaming
            .validate()
            .map_err(|e| format!("streaming: {e}"))?;
        Ok(())
    }

    /// The effective config as JSON, for the `Status` verbose info.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The shipped default config, `deploy/config.toml`, compiled in for `corral config default`.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../deploy/config.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_deploy_file_equals_default() {
        let shipped = Config::parse(DEFAULT_CONFIG_TOML).unwrap();
        assert_eq!(shipped, Config::default());
    }

    #[test]
    fn test_config_default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn test_config_empty_file_is_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path, true)
    }

    #[test]
    fn test_config_unknown_key_is_one_line_with_position() {
        let err = load_text("root = \"/var/lib/corral\"\nbogus = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2:1: unknown field `bogus`"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn test_config_unknown_nested_key_rejected() {
        let err = load_text("[cni]\nconf_dir = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `conf_dir`"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn test_config_wrong_type_rejected() {
        let err = load_text("shutdown_timeout_seconds = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1:"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn test_config_relative_root_rejected() {
        let err = load_text("root = \"var/lib/corral\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("root: var/lib/corral is not an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn test_config_bad_log_level_rejected() {
        let err = load_text("log_level = \"loud=[\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("log_level"), "{err}");
    }

    #[test]
    fn test_config_nested_validation_names_section() {
        let err = load_text("[runtime]\ncgroup_driver = \"systemd\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime: "), "{err}");
    }

    #[test]
    fn test_config_missing_default_file_is_default() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&dir.path().join("absent.toml"), false).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn test_config_missing_explicit_file_is_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Config::load(&dir.path().join("absent.toml"), true).is_err());
    }
}
