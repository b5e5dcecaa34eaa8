//! The all-in-one's configuration file. Every key has a default, so an empty file (or none)
//! serves goim's ports; an unknown key is an error that names it. It loads as the tier
//! binaries' files do ([`boot::load`]).

use serde::Deserialize;
use starling_cluster::boot;
pub use starling_cluster::boot::Log;

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub comet: starling_comet::Config,
    pub logic: starling_logic::Config,
    pub job: starling_job::Config,
    /// IM (off unless enabled with a secret): reference im.md.
    pub im: starling_im::Config,
    pub grpc: Grpc,
    pub registry: Registry,
    pub log: Log,
}

/// logic's gRPC port. The all-in-one's comet, logic and job talk in-process, so the only
/// service on it is IM's management API, `starling.im.v1.Admin` (reference im.md §8): the
/// port is bound only when IM is enabled with an `admin_token`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpc {
    /// goim's logic gRPC port: 3119.
    pub bind: std::net::SocketAddr,
}

impl Default for Grpc {
    fn default() -> Self {
        Grpc {
            bind: std::net::SocketAddr::from(([0, 0, 0, 0], 3119)),
        }
    }
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

impl boot::ConfigFile for Config {
    fn validate(&self) -> Result<(), boot::Invalid> {
        self.comet.validate()?;
        self.im.validate()?;
        Ok(self.job.validate()?)
    }
}
