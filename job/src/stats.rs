//! job's counters over every comet queue, the per-comet queue gauges and the comet call
//! latency histogram (registered by `Job::register_metrics`).

use crate::queue::Shared;
use starling_cluster::metrics::{self, Histogram};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Counters over every comet queue of one `Job`.
pub struct Stats {
    /// Messages (per comet) dropped because their comet was behind or left the registry, or
    /// (PUSH) named a comet job never learned of within `unknown_comet_wait`.
    pub dropped: AtomicU64,
    /// PUSHes that named a comet job did not know yet and were held (`unknown_comet_wait`).
    pub held: AtomicU64,
    /// Times a comet was found behind (its queue full and no answer for `comet_stall`).
    pub behind: AtomicU64,
    /// Calls given up on after the comet client's retries.
    pub failed: AtomicU64,
    /// Messages (per comet) handed over: the comet answered their call.
    pub delivered: AtomicU64,
    /// Seconds from a call to a comet to its answer (a room batch: written by the comet).
    pub call_seconds: Histogram,
    /// Seconds from logic's hand-over to job being through at every target comet
    /// ([`Stats::timed`]).
    pub delivery_seconds: Histogram,
    /// Each live comet queue, for its depth and silence (gauges).
    queues: Mutex<HashMap<String, Arc<Shared>>>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("dropped", &self.dropped)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            dropped: AtomicU64::default(),
            held: AtomicU64::default(),
            behind: AtomicU64::default(),
            failed: AtomicU64::default(),
            delivered: AtomicU64::default(),
            call_seconds: metrics::latency_histogram(),
            delivery_seconds: metrics::latency_histogram(),
            queues: Mutex::default(),
        }
    }
}

impl Stats {
    /// `done`, observing `delivery_seconds` first when the message says when it was produced
    /// (`produced_ms`, Unix ms on logic's clock: hosts' clock skew adds to it, and a negative
    /// difference counts as 0).
    pub fn timed(
        &self,
        done: Option<crate::Done>,
        produced_ms: Option<i64>,
    ) -> Option<crate::Done> {
        let Some(produced_ms) = produced_ms else {
            return done;
        };
        let h = self.delivery_seconds.clone();
        Some(Box::new(move || {
            h.observe((crate::unix_ms() - produced_ms).max(0) as f64 / 1000.0);
            if let Some(done) = done {
                done();
            }
        }))
    }

    /// Per comet: messages waiting or in a call, and seconds its calls in flight have gone
    /// unanswered (0 when none is in flight; `comet_stall` of it makes the comet behind).
    pub fn queue_gauges(&self) -> Vec<(String, i64, f64)> {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = queues
            .iter()
            .map(|(server, s)| {
                let depth = s.queued.load(Relaxed) as i64;
                (server.clone(), depth, s.silent_for().as_secs_f64())
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub(crate) fn track(&self, s: &Arc<Shared>) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.insert(s.server.clone(), s.clone());
    }

    pub(crate) fn untrack(&self, s: &Arc<Shared>) {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if queues.get(&s.server).is_some_and(|q| Arc::ptr_eq(q, s)) {
            queues.remove(&s.server);
        }
    }
}
