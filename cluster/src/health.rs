//! `/metrics`, `/healthz` and `/readyz` for every tier: served on logic's and the
//! all-in-one's HTTP port, and on the `[metrics] bind` listener of the `comet` and `job`
//! binaries.
//!
//! - `/healthz`: 200 `{"alive":true}` while the process serves HTTP at all.
//! - `/readyz`: runs every registered [`Check`] at once, each bounded by [`CHECK_TIMEOUT`];
//!   200 `{"ready":true}` when all pass and the process is not draining, else 503
//!   `{"ready":false,"failing":{"<check>":"<why>"}}` (`"draining"` is a check of its own).
//! - `/metrics`: [`Metrics::render`], Prometheus text 0.0.4.

use crate::metrics::Metrics;
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
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
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
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `host:port` to listen on; `""` (the default): no listener. goim has no such port;
    /// the documented choice is comet 3190, job 3191 (goim's 3101, 3102, 3109, 3111 and 3119
    /// are left alone). Anything else that is not an address fails the config load.
    #[serde(deserialize_with = "empty_or_addr", serialize_with = "addr_or_empty")]
    pub bind: Option<SocketAddr>,
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

/// Binds `addr` and serves [`router`] until `shutdown` resolves; returns the bound address
/// (port 0 picks one) and the server's task.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(addr = %bound, "metrics and health listening");
    let app = router(metrics, ready);
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
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
