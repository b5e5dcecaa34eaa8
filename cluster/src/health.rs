//! `/metrics`, `/healthz` and `/readyz` for every tier: served on logic's and the
//! all-in-one's HTTP port, and on the `[metrics] bind` listener of the `comet` and `job`
//! binaries.
//!
//! - `/healthz`: 200 `{"alive":true}` while the process serves HTTP at all.
//! - `/readyz`: runs every registered [`Check`] at once, each bounded by [`CHECK_TIMEOUT`];
//!   200 `{"ready":true}` when all pass and the process is not draining, else 503
//!   `{"ready":false,"failing":{"<check>":"<why>"}}` (`"draining"` is a check of its own).
//! - `/metrics`: [`Metrics::render`], Prometheus text 0.0.4.

use crate::boot::Throttle;
use crate::metrics::Metrics;
use crate::serve::{Limits, Observe};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{info, warn};

/// What one readiness check answers: `Err` names why the dependency is not usable.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A readiness check, run on every `/readyz`.
pub type Check = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The longest one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The named checks `/readyz` runs, and whether the process is draining.
#[derive(Default)]
pub struct Readiness {
    checks: Mutex<Vec<(String, Check)>>,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Adds a check named `name` (the key in the 503 body).
    pub fn check<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let check: Check = Arc::new(move || Box::pin(f()));
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_string(), check));
    }

    /// Marks the process draining (lame duck, shutdown): `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Relaxed);
    }

    /// Runs every check concurrently; the names of those that failed, with why.
    pub async fn failing(&self) -> Map<String, Value> {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let runs = checks.iter().map(|(name, check)| async move {
            let r = match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (name.clone(), r)
        });
        let mut failing = Map::new();
        if self.draining.load(Relaxed) {
            failing.insert("draining".into(), json!("shutting down"));
        }
        for (name, r) in futures_util::future::join_all(runs).await {
            if let Err(why) = r {
                failing.insert(name, Value::String(why));
            }
        }
        failing
    }
}

/// The `[metrics]` table of the `comet` and `job` binaries: their HTTP listener for
/// `/metrics`, `/healthz` and `/readyz` (logic and the all-in-one serve these on their
/// HTTP API's port instead).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `host:port` to listen on; `""` (the default): no listener. goim has no such port;
    /// the documented choice is comet 3190, job 3191 (goim's 3101, 3102, 3109, 3111 and 3119
    /// are left alone). Anything else that is not an address fails the config load.
    #[serde(deserialize_with = "empty_or_addr", serialize_with = "addr_or_empty")]
    pub bind: Option<SocketAddr>,
    /// Connections open at once (scrapers and probes are few); past it one is closed at
    /// accept, counted in `starling_ops_http_conns_refused_total`. 0: no limit.
    pub max_conns: usize,
    /// Longest wait for a request's header; an idle or trickling connection is closed then.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: None,
            max_conns: 64,
            header_timeout: Duration::from_secs(10),
        }
    }
}

impl Config {
    /// The listener's connection limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_conns: self.max_conns,
            header_timeout: self.header_timeout,
        }
    }
}

/// `None` → `""` (so `config print` shows the key), an address → `"host:port"`.
fn addr_or_empty<S: serde::Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        Some(a) => s.collect_str(a),
        None => s.serialize_str(""),
    }
}

/// `""` → `None`; `"host:port"` → the address; anything else an error naming the value.
fn empty_or_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an ip:port address")))
}

#[derive(Clone)]
struct Ops {
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
}

async fn render(State(s): State<Ops>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> Response {
    axum::Json(json!({"alive": true})).into_response()
}

async fn readyz(State(s): State<Ops>) -> Response {
    let failing = s.ready.failing().await;
    if failing.is_empty() {
        return axum::Json(json!({"ready": true})).into_response();
    }
    warn!(?failing, "not ready");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"ready": false, "failing": failing})),
    )
        .into_response()
}

/// `/metrics`, `/healthz` and `/readyz`; merge it into a router of your own, or [`serve`] it.
pub fn router(metrics: Arc<Metrics>, ready: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ops { metrics, ready })
}

/// What the `[metrics]` listener counts of its connections, exported with the rest.
#[derive(Default)]
struct Conns {
    open: AtomicI64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    log: Throttle,
}

impl Observe for Conns {
    fn accept_error(&self, _: &std::io::Error) {
        self.accept_errors.fetch_add(1, Relaxed);
    }

    fn refused(&self) {
        self.refused.fetch_add(1, Relaxed);
        if self.log.allow() {
            warn!(
                "metrics listener: connection refused, [metrics] max_conns open (logged once a second)"
            );
        }
    }

    fn open(&self, open: bool) {
        self.open.fetch_add(if open { 1 } else { -1 }, Relaxed);
    }
}

/// Binds `addr` and serves [`router`] within `limits` (`[metrics] max_conns`,
/// `header_timeout`: [`crate::serve`]) until `shutdown` resolves; returns the bound address
/// (port 0 picks one) and the server's task. The listener's own connections are exported in
/// `metrics`: `starling_ops_http_conns`, `starling_ops_http_conns_refused_total`,
/// `starling_ops_http_accept_errors_total`.
pub async fn serve(
    addr: SocketAddr,
    limits: Limits,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, max_conns = limits.max_conns, "metrics and health listening");
    let conns = Arc::new(Conns::default());
    let c = conns.clone();
    metrics.collect(move |enc| {
        crate::metrics::gauge(
            enc,
            "starling_ops_http_conns",
            "Connections open to the [metrics] listener (/metrics, /healthz, /readyz).",
            c.open.load(Relaxed),
        )?;
        crate::metrics::counter(
            enc,
            "starling_ops_http_conns_refused",
            "Connections to the [metrics] listener closed at accept: [metrics] max_conns open.",
            c.refused.load(Relaxed),
        )?;
        crate::metrics::counter(
            enc,
            "starling_ops_http_accept_errors",
            "Accepts of the [metrics] listener that failed (out of file descriptors, ...).",
            c.accept_errors.load(Relaxed),
        )
    });
    let app = router(metrics, ready);
    let task = tokio::spawn(crate::serve::serve(listener, app, limits, conns, shutdown));
    Ok((bound, task))
}

/// A readiness check that Redis answers `PING` on `conn`.
pub fn redis_ping(
    conn: redis::aio::ConnectionManager,
) -> impl Fn() -> CheckFuture + Send + Sync + 'static {
    move || {
        let mut c = conn.clone();
        Box::pin(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn bind_is_empty_for_off_or_an_address() {
        let off: Config = toml::from_str("bind = \"\"").unwrap();
        assert_eq!(off.bind, None);
        let on: Config = toml::from_str("bind = \"127.0.0.1:3190\"").unwrap();
        assert_eq!(on.bind, Some("127.0.0.1:3190".parse().unwrap()));
        let err = toml::from_str::<Config>("bind = \"nowhere\"").unwrap_err();
        assert!(
            err.to_string().contains("\"nowhere\" is not an ip:port"),
            "{err}"
        );
    }
}
