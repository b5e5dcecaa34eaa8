//! logic's typed configuration: the `[logic]` table of `conf/starling.toml`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: Node,
    pub backoff: Backoff,
    pub http: Http,
    /// A comet whose room counts are older than this is left out of the totals (goim: 5m).
    #[serde(with = "humantime_serde")]
    pub online_expire: Duration,
}

/// What clients are told by `/goim/nodes/weighted`, and the heartbeat deadline comets enforce.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Node {
    /// Returned when no comet is known.
    pub default_domain: String,
    /// Web clients get `hostname + host_domain`.
    pub host_domain: String,
    /// Client heartbeat interval advertised to clients (goim: 4m).
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Missed heartbeats tolerated: the server closes after `heartbeat × heartbeat_max`.
    pub heartbeat_max: u32,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub wss_port: u16,
    /// Weight multiplier for comets in the client's region.
    pub region_weight: f32,
}

/// Client reconnect backoff advertised by `/goim/nodes/weighted`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub max_delay: i32,
    pub base_delay: i32,
    pub factor: f32,
    pub jitter: f32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// The push API (goim: 3111).
    pub bind: SocketAddr,
    /// Largest push body accepted; larger ones get `-400`.
    pub max_body: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: Node::default(),
            backoff: Backoff::default(),
            http: Http::default(),
            online_expire: Duration::from_secs(300),
        }
    }
}

impl Default for Node {
    fn default() -> Self {
        Node {
            default_domain: "conn.goim.io".into(),
            host_domain: ".goim.io".into(),
            heartbeat: Duration::from_secs(240),
            heartbeat_max: 2,
            tcp_port: 3101,
            ws_port: 3102,
            wss_port: 3103,
            region_weight: 1.6,
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            max_delay: 300,
            base_delay: 3,
            factor: 1.8,
            jitter: 0.3,
        }
    }
}

impl Default for Http {
    fn default() -> Self {
        Http {
            bind: SocketAddr::from(([0, 0, 0, 0], 3111)),
            max_body: 1 << 20,
        }
    }
}
