//! logic's counters: pushes handed to job by kind and pushes that failed by cause (the
//! session store, Redis when distributed; the push queue, Kafka when distributed), and what
//! the HTTP API and `connect` refused. Relaxed atomics, read at scrape time by the collector
//! [`Stats::register`] adds. Refusals are also logged, at most once a second per kind
//! ([`Throttle`]), so a flood cannot flood the log.

use crate::logic::LogicError;
use starling_cluster::metrics::{self, Metrics};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering, Ordering::Relaxed};

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

/// Why a push API request was refused (label `reason` of `starling_logic_http_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRefusal {
    /// `[logic.http] push_token` set and the request's bearer token missing or wrong: 401.
    Unauthorized,
    /// Body over `max_body`: 413.
    BodyTooLarge,
    /// More keys than `max_keys` or mids than `max_mids`: 413.
    TooManyTargets,
    /// Room key (`type://room`) over `max_room_len` bytes: 400.
    RoomTooLong,
    /// Body not complete within `body_timeout`: 408.
    BodyTimeout,
}

impl HttpRefusal {
    pub const ALL: [HttpRefusal; 5] = [
        HttpRefusal::Unauthorized,
        HttpRefusal::BodyTooLarge,
        HttpRefusal::TooManyTargets,
        HttpRefusal::RoomTooLong,
        HttpRefusal::BodyTimeout,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HttpRefusal::Unauthorized => "unauthorized",
            HttpRefusal::BodyTooLarge => "body_too_large",
            HttpRefusal::TooManyTargets => "too_many_targets",
            HttpRefusal::RoomTooLong => "room_too_long",
            HttpRefusal::BodyTimeout => "body_timeout",
        }
    }
}

/// Why `connect` refused an auth token before any session store call (label `reason` of
/// `starling_logic_auth_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    /// Not a JSON object, or a field of the wrong type.
    BadJson,
    /// Token over goim's 4096-byte auth body, or a key, room or accepts list over its bound.
    Oversize,
    /// Asked for IM, and IM refused it (no user id, bad or revoked `im_token`, IM off).
    Im,
}

impl AuthRefusal {
    pub const ALL: [AuthRefusal; 3] =
        [AuthRefusal::BadJson, AuthRefusal::Oversize, AuthRefusal::Im];

    pub fn label(self) -> &'static str {
        match self {
            AuthRefusal::BadJson => "bad_json",
            AuthRefusal::Oversize => "oversize",
            AuthRefusal::Im => "im",
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
    http_refused: [AtomicU64; HttpRefusal::ALL.len()],
    auth_refused: [AtomicU64; AuthRefusal::ALL.len()],
    /// HTTP connections closed at accept because `max_conns` were open.
    pub http_conns_refused: AtomicU64,
    /// HTTP connections open now.
    pub http_conns_open: AtomicU64,
    /// HTTP accepts that failed (out of descriptors, mostly), each retried after 100 ms.
    pub http_accept_errors: AtomicU64,
    log_http: Throttle,
    log_auth: Throttle,
    log_conns: Throttle,
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

    /// Counts a refused request; true when it should also be logged (once a second at most).
    pub fn http_refused(&self, why: HttpRefusal) -> bool {
        self.http_refused[why as usize].fetch_add(1, Ordering::Relaxed);
        self.log_http.allow()
    }

    pub fn http_refused_count(&self, why: HttpRefusal) -> u64 {
        self.http_refused[why as usize].load(Ordering::Relaxed)
    }

    /// Counts a refused auth token; true when it should also be logged.
    pub fn auth_refused(&self, why: AuthRefusal) -> bool {
        self.auth_refused[why as usize].fetch_add(1, Ordering::Relaxed);
        self.log_auth.allow()
    }

    pub fn auth_refused_count(&self, why: AuthRefusal) -> u64 {
        self.auth_refused[why as usize].load(Ordering::Relaxed)
    }

    /// Counts a connection refused at `max_conns`; true when it should also be logged.
    pub fn conn_refused(&self) -> bool {
        self.http_conns_refused.fetch_add(1, Ordering::Relaxed);
        self.log_conns.allow()
    }

    /// Every counter in Prometheus text (what [`Stats::register`] exports).
    fn collect(&self, enc: &mut metrics::DescriptorEncoder) -> std::fmt::Result {
        metrics::counters(
            enc,
            "starling_logic_pushes",
            "Push requests through logic (goim's HTTP API), by what they target.",
            PushKind::ALL.map(|k| {
                (
                    [("kind", k.as_str())],
                    self.pushes[k as usize].load(Relaxed),
                )
            }),
        )?;
        metrics::counters(
            enc,
            "starling_logic_push_errors",
            "Push requests that failed: session store (Redis) or push queue (Kafka).",
            [("store", &self.store_errors), ("queue", &self.queue_errors)]
                .map(|(cause, v)| ([("cause", cause)], v.load(Relaxed))),
        )?;
        metrics::counters(
            enc,
            "starling_logic_http_refused",
            "Push API requests refused by [logic.http] limits, by reason.",
            HttpRefusal::ALL.map(|w| ([("reason", w.label())], self.http_refused_count(w))),
        )?;
        metrics::counters(
            enc,
            "starling_logic_auth_refused",
            "Auth tokens refused before any session store call, by reason.",
            AuthRefusal::ALL.map(|w| ([("reason", w.label())], self.auth_refused_count(w))),
        )?;
        metrics::counter(
            enc,
            "starling_logic_http_conns_refused",
            "HTTP connections closed at accept because [logic.http] max_conns were open.",
            self.http_conns_refused.load(Relaxed),
        )?;
        metrics::counter(
            enc,
            "starling_logic_http_accept_errors",
            "HTTP accepts that failed (EMFILE: out of file descriptors, mostly); the accept \
             loop waits 100 ms and goes on.",
            self.http_accept_errors.load(Relaxed),
        )?;
        metrics::gauge(
            enc,
            "starling_logic_http_conns",
            "HTTP connections open.",
            self.http_conns_open.load(Relaxed) as i64,
        )
    }

    /// Adds every counter above to `m`.
    pub fn register(self: &Arc<Self>, m: &Metrics) {
        let s = self.clone();
        m.collect(move |enc| s.collect(enc));
    }
}

pub use starling_cluster::boot::Throttle;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_with_their_reasons() {
        let s = Stats::default();
        s.http_refused(HttpRefusal::Unauthorized);
        s.auth_refused(AuthRefusal::Oversize);
        let s = Arc::new(s);
        let m = Metrics::new();
        s.register(&m);
        let out = m.render();
        assert!(out.contains("starling_logic_http_refused_total{reason=\"unauthorized\"} 1"));
        assert!(out.contains("starling_logic_auth_refused_total{reason=\"oversize\"} 1"));
        assert!(out.contains("starling_logic_auth_refused_total{reason=\"bad_json\"} 0"));
    }
}
