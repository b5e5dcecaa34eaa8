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
    pub region_weight: f64,
}

/// Client reconnect backoff advertised by `/goim/nodes/weighted`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub max_delay: i32,
    pub base_delay: i32,
    /// f64 here (the protobuf `Backoff` carries f32): `config print` shows `1.8`, not the
    /// widened `1.7999999523162842`.
    pub factor: f64,
    pub jitter: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// The push API (goim: 3111).
    pub bind: SocketAddr,
    /// Largest push body accepted, bytes; a larger one is answered HTTP 413, code `-413`.
    pub max_body: usize,
    /// Bearer token the `/goim/*` routes require (`Authorization: Bearer <token>`), except
    /// `/goim/nodes/weighted`, which clients call. Empty (the default, as goim) requires none:
    /// set it whenever the port is reachable from an untrusted network. A missing or wrong
    /// token is answered HTTP 401, code `-401`.
    pub push_token: String,
    /// Most `keys=` in one `/goim/push/keys` request (counted before removing repeats); more
    /// are answered HTTP 413, code `-413`. goim has no bound (its request line is read whole).
    pub max_keys: usize,
    /// Most `mids=` in one `/goim/push/mids` request; more: HTTP 413, code `-413`.
    pub max_mids: usize,
    /// Longest room key (`type://room`, as `/goim/push/room` builds it), bytes; longer:
    /// code `-400`. Also the longest `room_id` an auth token may carry.
    pub max_room_len: usize,
    /// A request's whole body must arrive within this; past it: HTTP 408, code `-408`.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// A connection waiting for a request (a new one, or kept alive after a response) must
    /// receive the request's whole header within this, or it is closed: the idle keep-alive
    /// limit and the slowloris bound (hyper's `header_read_timeout`).
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Most HTTP connections open at once; one accepted beyond it is closed at once (counted
    /// in `starling_logic_http_conns_refused_total`), so held connections cannot use up the
    /// process's file descriptors. 0: no limit (as comet's `[comet.limits] max_conns`).
    pub max_conns: usize,
}

/// A `[logic]` value logic cannot run with: `key` is the dotted path under `[logic]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("logic.{key}: {why}")]
pub struct Invalid {
    pub key: &'static str,
    pub why: &'static str,
}

impl Config {
    /// Refuses values that parse but cannot work (the break-it run of issue 15: a heartbeat
    /// of 0 was advertised to clients, a `max_body` of 0 refused every push).
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key, why| Err(Invalid { key, why });
        if self.node.heartbeat < Duration::from_secs(1) {
            return invalid(
                "node.heartbeat",
                "at least 1s (clients heartbeat at this period)",
            );
        }
        if self.node.heartbeat_max == 0 {
            return invalid("node.heartbeat_max", "at least 1");
        }
        if self.online_expire.is_zero() {
            return invalid("online_expire", "above 0");
        }
        let h = &self.http;
        if h.max_body == 0 {
            return invalid("http.max_body", "at least 1 byte");
        }
        if h.max_keys == 0 {
            return invalid("http.max_keys", "at least 1");
        }
        if h.max_mids == 0 {
            return invalid("http.max_mids", "at least 1");
        }
        if h.max_room_len == 0 {
            return invalid("http.max_room_len", "at least 1");
        }
        if h.body_timeout.is_zero() {
            return invalid("http.body_timeout", "above 0");
        }
        if h.header_timeout.is_zero() {
            return invalid("http.header_timeout", "above 0");
        }
        Ok(())
    }
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
            push_token: String::new(),
            max_keys: 10_000,
            max_mids: 10_000,
            max_room_len: 256,
            body_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            max_conns: 10_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_parse_but_cannot_work_are_refused_naming_the_key() {
        assert_eq!(Config::default().validate(), Ok(()));
        let mut c = Config::default();
        c.node.heartbeat = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().key, "node.heartbeat");
        let mut c = Config::default();
        c.http.max_body = 0;
        let e = c.validate().unwrap_err();
        assert_eq!(e.to_string(), "logic.http.max_body: at least 1 byte");
        let mut c = Config::default();
        c.http.header_timeout = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().key, "http.header_timeout");
    }
}
