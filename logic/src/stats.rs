//! logic's counters: pushes handed to job by kind, and pushes that failed by cause (the
//! session store, Redis when distributed; the push queue, Kafka when distributed).

use crate::logic::LogicError;
use starling_cluster::metrics::{self, Metrics};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What a push request asked for (goim's HTTP API paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    Keys,
    Mids,
    Room,
    All,
}

impl PushKind {
    const ALL: [PushKind; 4] = [
        PushKind::Keys,
        PushKind::Mids,
        PushKind::Room,
        PushKind::All,
    ];

    fn as_str(self) -> &'static str {
        match self {
            PushKind::Keys => "keys",
            PushKind::Mids => "mids",
            PushKind::Room => "room",
            PushKind::All => "all",
        }
    }
}

/// Relaxed atomics; read by the collector [`Stats::register`] adds.
#[derive(Debug, Default)]
pub struct Stats {
    pushes: [AtomicU64; 4],
    /// Failed pushes whose session lookup failed (Redis when distributed).
    store_errors: AtomicU64,
    /// Failed pushes the queue toward job refused or timed out (Kafka when distributed).
    queue_errors: AtomicU64,
}

impl Stats {
    /// Counts one push request and, when it failed, its cause.
    pub fn record(&self, kind: PushKind, r: &Result<(), LogicError>) {
        self.pushes[kind as usize].fetch_add(1, Relaxed);
        match r {
            Err(LogicError::Store(_)) => self.store_errors.fetch_add(1, Relaxed),
            Err(LogicError::Push(_)) => self.queue_errors.fetch_add(1, Relaxed),
            _ => 0,
        };
    }

    /// Adds `starling_logic_pushes_total{kind}` and `starling_logic_push_errors_total{cause}`.
    pub fn register(self: &Arc<Self>, m: &Metrics) {
        let s = self.clone();
        m.collect(move |enc| {
            metrics::counters(
                enc,
                "starling_logic_pushes",
                "Push requests through logic (goim's HTTP API), by what they target.",
                PushKind::ALL.map(|k| ([("kind", k.as_str())], s.pushes[k as usize].load(Relaxed))),
            )?;
            metrics::counters(
                enc,
                "starling_logic_push_errors",
                "Push requests that failed: session store (Redis) or push queue (Kafka).",
                [("store", &s.store_errors), ("queue", &s.queue_errors)]
                    .map(|(cause, v)| ([("cause", cause)], v.load(Relaxed))),
            )
        });
    }
}
