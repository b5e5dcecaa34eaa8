//! Node selection from logic's `GET /goim/nodes/weighted?platform=…` (goim's `NodesWeighted`;
//! Starling's `logic/src/http.rs`): the comets to connect to, best first, the advertised
//! heartbeat and the reconnect backoff. Parsing is sans-IO ([`parse`]); [`fetch`] does the GET.

use crate::backoff::Backoff;
use crate::wire::Transport;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde::Deserialize;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum NodesError {
    #[error("node list request failed: {0}")]
    Http(String),
    #[error("node list is not goim's JSON: {0}")]
    Json(String),
    #[error("logic refused the node list: code {code} {message}")]
    Refused { code: i64, message: String },
}

/// The `data` of the reply (goim `NodesReply`).
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default)]
pub struct Nodes {
    pub domain: String,
    pub tcp_port: u16,
    pub ws_port: u16,
    pub wss_port: u16,
    /// Heartbeat interval in seconds.
    pub heartbeat: u64,
    /// Missed heartbeats after which the server closes.
    pub heartbeat_max: u64,
    /// Comets, best first: `host:port` (the registry's public addresses) or a bare host
    /// (platform `web`: `hostname + host_domain`).
    pub nodes: Vec<String>,
    pub backoff: Option<NodesBackoff>,
}

/// goim's backoff, delays in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Default)]
#[serde(default)]
pub struct NodesBackoff {
    pub max_delay: i64,
    pub base_delay: i64,
    pub factor: f64,
    pub jitter: f64,
}

#[derive(Deserialize)]
struct Envelope {
    code: i64,
    #[serde(default)]
    message: String,
    data: Option<Nodes>,
}

/// Parses the reply body (`{"code":0,"message":"","data":{…}}`).
pub fn parse(body: &[u8]) -> Result<Nodes, NodesError> {
    let e: Envelope = serde_json::from_slice(body).map_err(|e| NodesError::Json(e.to_string()))?;
    if e.code != 0 {
        return Err(NodesError::Refused {
            code: e.code,
            message: e.message,
        });
    }
    e.data.ok_or_else(|| NodesError::Json("no data".into()))
}

impl Nodes {
    /// The addresses to try, best first, as `host:port` for `transport`: a node's own port
    /// is kept on TCP; a bare host gets `tcp_port`; on WebSocket the host gets `ws_port`.
    pub fn addrs(&self, transport: Transport) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| !n.is_empty())
            .map(|n| {
                let (host, port) = match n.rsplit_once(':') {
                    Some((h, p)) if p.parse::<u16>().is_ok() && !h.ends_with(':') => {
                        (h, p.parse().ok())
                    }
                    _ => (n.as_str(), None),
                };
                match transport {
                    Transport::Tcp => format!("{host}:{}", port.unwrap_or(self.tcp_port)),
                    Transport::WebSocket => format!("{host}:{}", self.ws_port),
                }
            })
            .collect()
    }

    /// The advertised heartbeat interval, if any.
    pub fn heartbeat(&self) -> Option<Duration> {
        (self.heartbeat > 0).then(|| Duration::from_secs(self.heartbeat))
    }

    /// The advertised backoff, if well-formed.
    pub fn backoff(&self) -> Option<Backoff> {
        let b = self.backoff?;
        (b.base_delay > 0 && b.max_delay >= b.base_delay && b.factor >= 1.0).then(|| Backoff {
            base: Duration::from_secs(b.base_delay as u64),
            max: Duration::from_secs(b.max_delay as u64),
            factor: b.factor,
        })
    }
}

/// `GET {base}/goim/nodes/weighted?platform={platform}`; `base` is logic's HTTP address
/// (`http://host:port`).
pub async fn fetch(base: &str, platform: &str) -> Result<Nodes, NodesError> {
    let url = format!(
        "{}/goim/nodes/weighted?platform={platform}",
        base.trim_end_matches('/')
    );
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| NodesError::Http(format!("{url}: {e}")))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let resp = client
        .get(uri)
        .await
        .map_err(|e| NodesError::Http(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(NodesError::Http(format!("status {}", resp.status())));
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| NodesError::Http(e.to_string()))?
        .to_bytes();
    parse(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = r#"{"code":0,"message":"","data":{"domain":"conn.goim.io","tcp_port":3101,
        "ws_port":3102,"wss_port":3103,"heartbeat":240,"heartbeat_max":2,
        "nodes":["10.0.0.1:4101","comet-2",""],
        "backoff":{"max_delay":300,"base_delay":3,"factor":1.8,"jitter":0.3}}}"#;

    #[test]
    fn the_reply_gives_addresses_heartbeat_and_backoff() {
        let n = parse(REPLY.as_bytes()).unwrap();
        assert_eq!(
            n.addrs(Transport::Tcp),
            vec!["10.0.0.1:4101", "comet-2:3101"]
        );
        assert_eq!(
            n.addrs(Transport::WebSocket),
            vec!["10.0.0.1:3102", "comet-2:3102"]
        );
        assert_eq!(n.heartbeat(), Some(Duration::from_secs(240)));
        let b = n.backoff().unwrap();
        assert_eq!(
            (b.base, b.max, b.factor),
            (Duration::from_secs(3), Duration::from_secs(300), 1.8)
        );
    }

    #[test]
    fn bad_replies_are_errors() {
        assert!(matches!(parse(b"<html>"), Err(NodesError::Json(_))));
        assert!(matches!(
            parse(br#"{"code":-400,"message":"bad"}"#),
            Err(NodesError::Refused { code: -400, .. })
        ));
        assert!(matches!(parse(br#"{"code":0}"#), Err(NodesError::Json(_))));
        let no_backoff = Nodes {
            backoff: Some(NodesBackoff {
                base_delay: 0,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(no_backoff.backoff(), None);
    }
}
