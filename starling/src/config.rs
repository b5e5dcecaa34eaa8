//! The all-in-one's configuration file. Every key has a default, so an empty file (or none)
//! serves goim's ports; an unknown key is an error that names it. It loads as the tier
//! binaries' files do ([`boot::load`]).

use serde::{Deserialize, Serialize};
use starling_cluster::boot;
pub use starling_cluster::boot::Log;

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub comet: starling_comet::Config,
    pub logic: starling_logic::Config,
    pub job: starling_job::Config,
    /// IM (off unless enabled with a secret): reference im.md.
    pub im: starling_im::Config,
    pub grpc: Grpc,
    pub registry: Registry,
    /// The web chat app on the HTTP port (off by default): [`App`].
    pub app: App,
    pub log: Log,
}

/// The web chat app bundled into the binary (`app/`, served at `/` on the HTTP API's port;
/// `starling::app`). Off by default.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct App {
    /// Serve the app at `/` (its files under `/app/`) and `GET /app/api/config`. Needs
    /// `[im] enabled`.
    pub enabled: bool,
    /// DEVELOPMENT ONLY: `POST /app/api/signin {uid, name?}` hands anyone an `im_token` for
    /// any uid, and the app's group routes act for the bearer of one. Needs `[im]
    /// token_secret`. Logged as a warning at start and shown as a banner in the app. In
    /// production your backend mints tokens (`POST /im/v1/tokens`) and manages groups.
    pub dev_signin: bool,
    /// The comet WebSocket URL the app connects to; empty = `ws://{the page's
    /// host}:{comet's first WebSocket port}/sub`.
    pub ws_url: String,
}

/// logic's gRPC port. The all-in-one's comet, logic and job talk in-process, so the only
/// service on it is IM's management API, `starling.im.v1.Admin` (reference im.md §8): the
/// port is bound only when IM is enabled with an `admin_token`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
        self.logic.validate()?;
        self.im.validate()?;
        self.job.validate()?;
        if self.app.enabled && !self.im.enabled {
            return Err("app.enabled: the chat app needs IM ([im] enabled = true)".into());
        }
        let ws = &self.app.ws_url;
        if !(ws.is_empty() || ws.starts_with("ws://") || ws.starts_with("wss://")) {
            return Err(format!("app.ws_url: a ws:// or wss:// URL, not {ws:?}").into());
        }
        if self.app.enabled && ws.is_empty() && self.comet.websocket.bind.is_empty() {
            return Err(
                "app.enabled: the app connects over WebSocket: give [comet.websocket] bind or app.ws_url"
                    .into(),
            );
        }
        if self.app.dev_signin && self.im.token_secret.is_empty() {
            return Err(
                "app.dev_signin: minting im_tokens needs [im] token_secret (16 bytes or more)"
                    .into(),
            );
        }
        Ok(())
    }

    fn check_files(&self) -> Result<(), boot::Invalid> {
        Ok(self.comet.check_files()?)
    }
}
