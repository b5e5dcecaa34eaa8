//! IM's counters, gauges and histograms for `/metrics`: admissions, sends, their acks by
//! code, the ack latency, and the store's write latency and errors.

use crate::service::Im;
use starling_cluster::metrics::{self, Counter, DependencyErrors, Family, Histogram, Metrics};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// A `SendAck` code label (`0` ok, `400`, `403`, `413`, `429`, `503`, ...: reference im.md §5.3).
type CodeLabel = [(&'static str, i32); 1];

/// Counters (relaxed atomics) and the histograms of the IM layer.
#[derive(Debug)]
pub struct Stats {
    pub admitted: AtomicU64,
    pub refused: AtomicU64,
    pub kicked: AtomicU64,
    pub sent: AtomicU64,
    pub duplicates: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Connections closed for flooding (kick 4005).
    pub flood_closed: AtomicU64,
    pub bad_requests: AtomicU64,
    pub delivery_failures: AtomicU64,
    /// Requests answered without the device table (unreachable): the device was taken from
    /// what comet says of the connection (`ReceiveReq.key`, `ReceiveReq.im`).
    pub device_fallbacks: AtomicU64,
    /// Device entries a heartbeat put back (Redis had lost them).
    pub device_restores: AtomicU64,
    /// Store writes (appends, recalls) that failed: PostgreSQL or the embedded writer
    /// unavailable or past `im.store_timeout`.
    pub store_errors: AtomicU64,
    /// Sends and recalls answered 503 `store overloaded`: no PostgreSQL connection within
    /// `im.postgres_pool_wait`.
    pub overloaded: AtomicU64,
    /// Client sends answered from the recent acks (`crate::recent`): retries of sends
    /// already stored and handed to delivery, answered without the store.
    pub recent_hits: AtomicU64,
    /// Client sends (op 20) by the `code` of their `SendAck`.
    pub acks: Family<CodeLabel, Counter>,
    /// Seconds from a send's request reaching logic to its `SendAck` (stored and handed to
    /// delivery).
    pub ack_seconds: Histogram,
    /// Seconds one store write took as the lane saw it: the embedded store's group commit
    /// (fdatasync included), or one PostgreSQL transaction.
    pub store_commit_seconds: Histogram,
}

impl Default for Stats {
    fn default() -> Self {
        let acks = Family::<CodeLabel, Counter>::default();
        // Exported at 0 from the start, so a rate over it exists before the first send.
        drop(acks.get_or_create(&[("code", 0)]));
        Stats {
            admitted: AtomicU64::default(),
            refused: AtomicU64::default(),
            kicked: AtomicU64::default(),
            sent: AtomicU64::default(),
            duplicates: AtomicU64::default(),
            rate_limited: AtomicU64::default(),
            flood_closed: AtomicU64::default(),
            bad_requests: AtomicU64::default(),
            delivery_failures: AtomicU64::default(),
            device_fallbacks: AtomicU64::default(),
            device_restores: AtomicU64::default(),
            store_errors: AtomicU64::default(),
            overloaded: AtomicU64::default(),
            recent_hits: AtomicU64::default(),
            acks,
            ack_seconds: metrics::latency_histogram(),
            store_commit_seconds: metrics::latency_histogram(),
        }
    }
}

impl Stats {
    /// Counts a send's ack `code` and observes its latency since `start`.
    pub fn acked(&self, code: i32, start: Instant) {
        self.acks.get_or_create(&[("code", code)]).inc();
        self.ack_seconds.observe(metrics::seconds_since(start));
    }

    /// Observes one store write since `start`, counting it when it failed.
    pub fn store_write<T, E>(&self, start: Instant, r: &Result<T, E>) {
        self.store_commit_seconds
            .observe(metrics::seconds_since(start));
        if r.is_err() {
            self.store_errors.fetch_add(1, Relaxed);
        }
    }
}

impl Im {
    /// Registers IM's counters, the device gauge (embedded table only: a shared Redis table
    /// is not counted by any one logic node) and the histograms with `m`.
    pub fn register_metrics(self: &Arc<Self>, m: &Metrics) {
        let im = self.clone();
        m.collect(move |enc| {
            let s = &im.stats;
            for (name, help, v) in [
                (
                    "starling_im_admitted",
                    "IM connections admitted.",
                    &s.admitted,
                ),
                (
                    "starling_im_refused",
                    "IM opt-ins refused (bad im_token, disabled user, IM off).",
                    &s.refused,
                ),
                (
                    "starling_im_kicked",
                    "IM_KICK notices sent (multi-login policy, admin, disable).",
                    &s.kicked,
                ),
                (
                    "starling_im_sent",
                    "Messages stored by sends, of clients and of the management API \
                     (duplicates excluded).",
                    &s.sent,
                ),
                (
                    "starling_im_duplicates",
                    "Sends answered from the dedup index (retries).",
                    &s.duplicates,
                ),
                (
                    "starling_im_rate_limited",
                    "Sends and recalls refused with 429.",
                    &s.rate_limited,
                ),
                (
                    "starling_im_flood_closed",
                    "IM connections closed for flooding (IM_KICK 4005).",
                    &s.flood_closed,
                ),
                (
                    "starling_im_bad_requests",
                    "IM requests answered 400.",
                    &s.bad_requests,
                ),
                (
                    "starling_im_delivery_failures",
                    "Stored messages whose delivery was not handed over (503 stored=true).",
                    &s.delivery_failures,
                ),
                (
                    "starling_im_device_fallbacks",
                    "IM requests served while the device table was unreachable (Redis down).",
                    &s.device_fallbacks,
                ),
                (
                    "starling_im_device_restores",
                    "Device entries put back by a heartbeat after Redis lost them.",
                    &s.device_restores,
                ),
                (
                    "starling_im_store_errors",
                    "IM store writes that failed (PostgreSQL or the embedded writer \
                     unavailable, or past im.store_timeout).",
                    &s.store_errors,
                ),
                (
                    "starling_im_overloaded",
                    "Sends and recalls answered 503 store overloaded: no PostgreSQL connection \
                     within im.postgres_pool_wait; nothing was stored for them.",
                    &s.overloaded,
                ),
                (
                    "starling_im_recent_ack_hits",
                    "Client sends answered from the recent acks (im.recent_acks): retries of \
                     sends already stored and handed to delivery; no store call, no delivery.",
                    &s.recent_hits,
                ),
            ] {
                metrics::counter(enc, name, help, v.load(Relaxed))?;
            }
            metrics::counter(
                enc,
                "starling_im_writes_abandoned",
                "IM store writes never started: their request had passed its deadline (or its \
                 HTTP client had gone) when its conversation's lane reached it.",
                im.lanes.abandoned(),
            )?;

            match im.devices.count() {
                Some(n) => metrics::gauge(
                    enc,
                    "starling_im_devices",
                    "IM connections in the device table.",
                    n as i64,
                ),
                None => Ok(()),
            }
        });
        if let Some(errors) = self.store.server_errors() {
            register_postgres_errors(m, errors);
        }
        let s = &self.stats;
        m.register(
            "starling_im_send_acks",
            "Client sends (op 20) by the code of their SendAck.",
            s.acks.clone(),
        );
        m.register(
            "starling_im_ack_seconds",
            "Seconds from a send reaching logic to its SendAck.",
            s.ack_seconds.clone(),
        );
        m.register(
            "starling_im_store_commit_seconds",
            "Seconds of one IM store write (embedded: group commit with fdatasync; \
             PostgreSQL: one transaction).",
            s.store_commit_seconds.clone(),
        );
    }
}

/// Exports a PostgreSQL store's failed calls ([`crate::store::ImStore::server_errors`]) as
/// `starling_im_postgres_errors_total{kind="timeout"|"error"}`.
pub fn register_postgres_errors(m: &Metrics, errors: Arc<DependencyErrors>) {
    m.collect(move |enc| {
        errors.encode(
            enc,
            "starling_im_postgres_errors",
            "IM store calls to PostgreSQL that answered Unavailable or Overloaded, by kind \
             (timeout: past im.store_timeout, or no pooled connection within \
             im.postgres_pool_wait).",
        )
    });
}
