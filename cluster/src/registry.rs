//! The comet registry, in place of goim's bilibili/discovery: each comet keeps a JSON entry
//! in Redis whose TTL it renews every `interval`; logic (for `/goim/nodes/*`) and job (to
//! know where to push) reread the list every `interval`. A comet that dies stops renewing
//! and drops out when its entry expires (`ttl`, a few intervals); one that shuts down cleanly
//! deletes its entry at once.
//!
//! Redis keys: the set `starling:comets` (hostnames) and `starling:comet:{hostname}` (the
//! [`Instance`] as JSON, with a TTL).

use crate::metrics::DependencyErrors;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

const SET: &str = "starling:comets";

fn entry_key(hostname: &str) -> String {
    format!("starling:comet:{hostname}")
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How often a comet renews its entry, and watchers reread the list.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long an entry outlives its last renewal: a dead comet is gone after this.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(5),
            ttl: Duration::from_secs(15),
        }
    }
}

/// A comet as the registry lists it; the JSON shape of goim's discovery instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub region: String,
    pub zone: String,
    pub env: String,
    pub appid: String,
    pub hostname: String,
    /// `grpc://host:port` (the Comet service job pushes to) and, in the all-in-one,
    /// `tcp://host:port` listeners.
    pub addrs: Vec<String>,
    pub version: String,
    pub latest_timestamp: i64,
    /// goim's metadata keys, string-valued: `weight`, `offline`, `addrs` (public IPs,
    /// comma-separated), `conn_count`, `ip_count`.
    pub metadata: BTreeMap<String, String>,
}

/// What a comet reports about itself in goim's discovery metadata.
#[derive(Debug, Clone, Default)]
pub struct CometMeta<'a> {
    pub weight: u32,
    /// Draining: still pushed to, but handed to no new client.
    pub offline: bool,
    /// Public addresses for non-web clients.
    pub public_addrs: &'a [String],
    pub conns: usize,
    pub ips: usize,
}

impl Instance {
    /// A comet listed now, with goim's appid and metadata keys.
    pub fn comet(hostname: &str, addrs: Vec<String>, meta: CometMeta<'_>) -> Instance {
        Instance {
            region: String::new(),
            zone: String::new(),
            env: String::new(),
            appid: "goim.comet".into(),
            hostname: hostname.into(),
            addrs,
            version: env!("CARGO_PKG_VERSION").into(),
            latest_timestamp: now_nanos(),
            metadata: BTreeMap::from([
                ("weight".into(), meta.weight.to_string()),
                ("offline".into(), meta.offline.to_string()),
                ("addrs".into(), meta.public_addrs.join(",")),
                ("conn_count".into(), meta.conns.to_string()),
                ("ip_count".into(), meta.ips.to_string()),
            ]),
        }
    }

    /// A numeric metadata value (`weight`, `conn_count`, `ip_count`).
    pub fn meta_num(&self, key: &str) -> Option<f64> {
        self.metadata.get(key)?.parse().ok()
    }

    pub fn offline(&self) -> bool {
        self.metadata.get("offline").is_some_and(|v| v == "true")
    }

    /// The address of the comet's gRPC service, without the `grpc://` scheme.
    pub fn grpc_addr(&self) -> Option<&str> {
        self.addrs.iter().find_map(|a| a.strip_prefix("grpc://"))
    }
}

/// Nanoseconds since the epoch (goim's `latest_timestamp`).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Writes (or renews) a comet's entry.
pub async fn publish(
    conn: &mut ConnectionManager,
    instance: &Instance,
    ttl: Duration,
) -> redis::RedisResult<()> {
    let json = serde_json::to_string(instance).expect("an Instance always serializes");
    redis::pipe()
        .atomic()
        .sadd(SET, &instance.hostname)
        .ignore()
        .pset_ex(entry_key(&instance.hostname), json, ttl.as_millis() as u64)
        .ignore()
        .query_async(conn)
        .await
}

/// Deletes a comet's entry (a clean shutdown).
pub async fn withdraw(conn: &mut ConnectionManager, hostname: &str) -> redis::RedisResult<()> {
    redis::pipe()
        .atomic()
        .srem(SET, hostname)
        .ignore()
        .del(entry_key(hostname))
        .ignore()
        .query_async(conn)
        .await
}

/// Renews the entry `describe` returns every `interval` until `stop` fires, then withdraws
/// it. A failed renewal is logged and retried at the next tick: the comet keeps serving its
/// connections while Redis is away.
pub async fn keep_registered(
    conn: ConnectionManager,
    config: Config,
    describe: impl Fn() -> Instance,
    stop: watch::Receiver<bool>,
) {
    let (ok, errors) = (Arc::default(), DependencyErrors::new());
    keep_registered_reporting(conn, config, describe, stop, ok, errors).await
}

/// [`keep_registered`], keeping `ok` true while the last renewal succeeded (false before the
/// first), what a comet's `/readyz` reports as `registry`, and counting each failed Redis
/// call (renewal or withdrawal) in `errors` by kind (`starling_comet_redis_errors_total`).
pub async fn keep_registered_reporting(
    mut conn: ConnectionManager,
    config: Config,
    describe: impl Fn() -> Instance,
    mut stop: watch::Receiver<bool>,
    ok: Arc<AtomicBool>,
    errors: Arc<DependencyErrors>,
) {
    let mut tick = tokio::time::interval(config.interval);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let instance = describe();
        let published = publish(&mut conn, &instance, config.ttl).await;
        ok.store(published.is_ok(), Relaxed);
        match published {
            Ok(()) if failing => {
                failing = false;
                info!(hostname = %instance.hostname, "registered again");
            }
            Ok(()) => {}
            Err(e) => {
                errors.record(crate::redis::error_kind(&e));
                if !failing {
                    warn!(error = %e, "registry renewal failed; retrying every interval");
                }
                failing = true;
            }
        }
    }
    let hostname = describe().hostname;
    match withdraw(&mut conn, &hostname).await {
        Ok(()) => info!(%hostname, "left the registry"),
        Err(e) => {
            errors.record(crate::redis::error_kind(&e));
            warn!(error = %e, "leaving the registry failed; the entry will expire");
        }
    }
}

/// Every live comet, by hostname.
pub async fn list(conn: &mut ConnectionManager) -> redis::RedisResult<Vec<Instance>> {
    let hosts: Vec<String> = conn.smembers(SET).await?;
    if hosts.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = hosts.iter().map(|h| entry_key(h)).collect();
    let entries: Vec<Option<String>> = conn.mget(&keys).await?;
    let mut out = Vec::with_capacity(hosts.len());
    let mut gone = Vec::new();
    for (host, entry) in hosts.into_iter().zip(entries) {
        match entry.map(|e| serde_json::from_str::<Instance>(&e)) {
            Some(Ok(i)) => out.push(i),
            Some(Err(e)) => warn!(%host, error = %e, "unreadable registry entry skipped"),
            None => gone.push(host),
        }
    }
    if !gone.is_empty() {
        debug!(?gone, "expired comets leave the registry");
        let _: () = conn.srem(SET, &gone).await?;
    }
    out.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    Ok(out)
}

/// The live comets, reread every `interval` on the current tokio runtime. While Redis is
/// unreachable the last list stands; each failed read is counted in `errors` by kind (the
/// watcher's `starling_<tier>_redis_errors_total`).
pub fn watch(
    conn: ConnectionManager,
    config: Config,
    errors: Arc<DependencyErrors>,
) -> watch::Receiver<Arc<Vec<Instance>>> {
    watch_or_when(conn, config, Arc::new(Notify::new()), errors)
}

/// [`watch`], also rereading as soon as `reread` is notified (job, when a push names a comet
/// it does not know yet).
pub fn watch_or_when(
    mut conn: ConnectionManager,
    config: Config,
    reread: Arc<Notify>,
    errors: Arc<DependencyErrors>,
) -> watch::Receiver<Arc<Vec<Instance>>> {
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.interval);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = reread.notified() => {}
            }
            match list(&mut conn).await {
                Ok(now) => {
                    failing = false;
                    let names = |l: &[Instance]| -> Vec<(String, Vec<String>)> {
                        l.iter()
                            .map(|i| (i.hostname.clone(), i.addrs.clone()))
                            .collect()
                    };
                    if names(&tx.borrow()) != names(&now) {
                        info!(comets = ?names(&now), "registry changed");
                    }
                    // Sent every time: connection counts move even when the set does not.
                    tx.send_replace(Arc::new(now));
                }
                Err(e) => {
                    errors.record(crate::redis::error_kind(&e));
                    if !failing {
                        warn!(error = %e, "registry read failed; keeping the last list");
                    }
                    failing = true;
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}
