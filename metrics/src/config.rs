//! The `[metrics]` section of the config file.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// The address it listens on (`host:port`; port 0 picks a free one). Loopback by
    /// default: the endpoint has no authentication.
    pub address: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            address: "127.0.0.1:9338".to_string(),
        }
    }
}

impl Config {
    /// Checks the values that serde cannot check by itself.
    pub fn validate(&self) -> Result<(), Error> {
        self.socket_address().map(drop)
    }

    /// The address as a socket address.
    pub fn socket_address(&self) -> Result<SocketAddr, Error> {
        self.address.parse().map_err(|_| {
            Error::InvalidConfig(format!(
                "metrics address {:?} is not host:port",
                self.address
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_config_default_is_loopback_and_valid() {
        let config = Config::default();
        assert!(config.validate().is_ok());
        assert!(config.socket_address().unwrap().ip().is_loopback());
    }

    #[test]
    fn test_config_rejects_bad_address() {
        let config = Config {
            address: "localhost".into(),
            ..Config::default()
        };
        assert!(matches!(config.validate(), Err(Error::InvalidConfig(_))));
    }
}
