//! The all-in-one's configuration file. Every key has a default, so an empty file (or none)
//! serves goim's ports; an unknown key is an error that names it.

use serde::Deserialize;
pub use starling_cluster::boot::Log;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub comet: starling_comet::Config,
    pub logic: starling_logic::Config,
    pub job: starling_job::Config,
    pub registry: Registry,
    pub log: Log,
}

/// How this comet is listed to clients by `/goim/nodes/*` (goim's discovery metadata).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registry {
    pub weight: u32,
    /// Public addresses handed to non-web clients.
    pub public_addrs: Vec<String>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            weight: 10,
            public_addrs: Vec::new(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error(transparent)]
    Comet(#[from] starling_comet::config::ConfigError),
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let c: Config = toml::from_str(text)?;
        c.comet.validate()?;
        Ok(c)
    }
}
