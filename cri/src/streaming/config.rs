//! The `[streaming]` section of the config file: where the streaming server listens and how
//! long its sessions may take.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Error;

/// The streaming server (Exec, Attach, PortForward).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The address it listens on (`host:port`). Port 0 picks a free port at start. Loopback by
    /// default: the URLs are handed to kubelet on this node only, and the server has no
    /// authentication besides the single-use tokens.
    pub address: String,
    /// How long a client may take to open the streams of a session after the upgrade
    /// (kubelet's `--streaming-connection-creation-timeout` default: 30 s).
    pub stream_creation_timeout_seconds: u64,
    /// A session with no frame either way for this long is closed; 0 keeps idle sessions open.
    /// The default is kubelet's `--streaming-connection-idle-timeout` (4 h).
    pub stream_idle_timeout_seconds: u64,
    /// How long a URL from Exec, Attach or PortForward stays valid (kubelet: 1 min).
    pub token_ttl_seconds: u64,
    /// Unused URLs held at once; further Exec, Attach and PortForward calls fail with
    /// "too many in-flight streaming requests" until some are used or expire (kubelet: 1000).
    pub max_in_flight_requests: usize,
    /// Serve HTTPS (URLs start with `https://`). Without a certificate file, a self-signed
    /// certificate is generated at each start (containerd's `enable_tls_streaming`); clients
    /// then skip verification, as crictl does by default.
    pub tls: bool,
    /// A PEM certificate chain to serve with `tls` (with `tls_key_file`).
    pub tls_cert_file: String,
    /// The PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            address: "127.0.0.1:0".to_string(),
            stream_creation_timeout_seconds: 30,
            stream_idle_timeout_seconds: 4 * 60 * 60,
            token_ttl_seconds: 60,
            max_in_flight_requests: 1000,
            tls: false,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
        }
    }
}

impl Config {
    /// Checks the values that serde cannot check by itself.
    pub fn validate(&self) -> Result<(), Error> {
        self.socket_address()?;
        let invalid = |message: &str| Err(Error::InvalidConfig(message.to_string()));
        if !(1..=3600).contains(&self.stream_creation_timeout_seconds) {
            return invalid("streaming stream_creation_timeout_seconds must be 1-3600");
        }
        if !(1..=3600).contains(&self.token_ttl_seconds) {
            return invalid("streaming token_ttl_seconds must be 1-3600");
        }
        if !(1..=100_000).contains(&self.max_in_flight_requests) {
            return invalid("streaming max_in_flight_requests must be 1-100000");
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return invalid("streaming tls_cert_file and tls_key_file go together");
        }
        if !self.tls && !self.tls_cert_file.is_empty() {
            return invalid("streaming tls_cert_file is set but tls is false");
        }
        Ok(())
    }

    /// The address as a socket address.
    pub fn socket_address(&self) -> Result<SocketAddr, Error> {
        self.address.parse().map_err(|_| {
            Error::InvalidConfig(format!(
                "streaming address {:?} is not ip:port",
                self.address
            ))
        })
    }

    /// [`Config::stream_creation_timeout_seconds`] as a duration.
    pub fn stream_creation_timeout(&self) -> Duration {
        Duration::from_secs(self.stream_creation_timeout_seconds)
    }

    /// [`Config::stream_idle_timeout_seconds`] as a duration; `None` for no timeout.
    pub fn stream_idle_timeout(&self) -> Option<Duration> {
        (self.stream_idle_timeout_seconds > 0)
            .then(|| Duration::from_secs(self.stream_idle_timeout_seconds))
    }

    /// [`Config::token_ttl_seconds`] as a duration.
    pub fn token_ttl(&self) -> Duration {
        Duration::from_secs(self.token_ttl_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_default_is_loopback_and_valid() {
        let config = Config::default();
        config.validate().unwrap();
        let address = config.socket_address().unwrap();
        assert!(address.ip().is_loopback());
        assert_eq!(address.port(), 0);
        assert_eq!(
            config.stream_idle_timeout(),
            Some(Duration::from_secs(4 * 3600))
        );
        assert_eq!(config.stream_creation_timeout(), Duration::from_secs(30));
        assert_eq!(config.token_ttl(), Duration::from_secs(60));
    }

    #[test]
    fn test_config_zero_idle_timeout_means_none() {
        let config = Config {
            stream_idle_timeout_seconds: 0,
            ..Config::default()
        };
        config.validate().unwrap();
        assert_eq!(config.stream_idle_timeout(), None);
    }

    #[test]
    fn test_config_rejects_bad_values() {
        let bad = [
            Config {
                address: "localhost:10010".into(),
                ..Config::default()
            },
            Config {
                stream_creation_timeout_seconds: 0,
                ..Config::default()
            },
            Config {
                token_ttl_seconds: 0,
                ..Config::default()
            },
            Config {
                max_in_flight_requests: 0,
                ..Config::default()
            },
            Config {
                tls: true,
                tls_cert_file: "/etc/corral/streaming.crt".into(),
                ..Config::default()
            },
            Config {
                tls_cert_file: "/etc/corral/streaming.crt".into(),
                tls_key_file: "/etc/corral/streaming.key".into(),
                ..Config::default()
            },
        ];
        for config in bad {
            let err = config.validate().unwrap_err();
            assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
        }
    }

    #[test]
    fn test_config_parses_partial_toml_and_rejects_unknown_keys() {
        let config: Config = toml::from_str("address = \"127.0.0.1:10010\"").unwrap();
        assert_eq!(config.address, "127.0.0.1:10010");
        assert_eq!(config.token_ttl_seconds, 60);
        assert!(toml::from_str::<Config>("adress = \"127.0.0.1:1\"").is_err());
    }
}
