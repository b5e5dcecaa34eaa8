//! Why a connection ended: one enum with stable codes, used in logs and metrics.

use starling_cluster::metrics::{self, DescriptorEncoder};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// Every reason comet ends a connection. The numbers are stable: dashboards key on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CloseReason {
    /// The client closed (EOF or a WebSocket Close frame).
    ClientClosed = 0,
    /// A socket error (reset, broken pipe).
    Io = 1,
    /// No successful auth within the handshake timeout.
    HandshakeTimeout = 2,
    /// No heartbeat within the heartbeat deadline.
    HeartbeatTimeout = 3,
    /// A packet whose header length is not 16, whose length is negative or short, or a
    /// WebSocket message that is not exactly one packet.
    BadPacket = 4,
    /// A packet body over 4096 bytes.
    PacketTooLarge = 5,
    /// A malformed WebSocket frame (RFC 6455 §5.2), or permessage-deflate data that does not
    /// inflate.
    BadFrame = 6,
    /// A WebSocket frame or message over the size limit.
    FrameTooLarge = 7,
    /// A malformed upgrade request, or an upgrade on a path other than `/sub`.
    BadUpgrade = 8,
    /// logic refused the token (or could not be reached).
    AuthFailed = 9,
    /// Another connection took this one's key: it authenticated with the same key here, or
    /// (logic's key push of op 45 with an empty body, reference im.md §13.11) on another
    /// comet. Closed silently, as goim closes the older connection of a device.
    Kicked = 10,
    /// The outbound ring filled: the client reads slower than it is pushed to.
    SlowConsumer = 11,
    /// The TLS layer failed (bad handshake, bad record).
    Tls = 12,
    /// comet is shutting down.
    Shutdown = 13,
    /// comet is draining (lame duck): connections are closed spread over a period so their
    /// clients reconnect elsewhere gradually.
    LameDuck = 14,
    /// logic kicked a connection that opted in to IM (a key push of op 45 with a body:
    /// multi-device policy or an admin kick, reference im.md §7.6). The client was sent the
    /// kick packet; the connection closed once it was written (or after a grace period).
    ImKick = 15,
    /// The client kept sending packets over `limits.max_packets_per_sec` (and its burst)
    /// `limits.flood_strikes` times without pausing.
    Flood = 16,
    /// A connection that opted in to IM sent an op only the server sends
    /// (`op::im::server_only`: a reply op 21 … 39 or a push op 40–45; reference im.md §5.2):
    /// goim's echo would turn a push op into a push or a kick, and logic would answer a
    /// reply op on op + 1, another request's number.
    BadOp = 17,
}

impl CloseReason {
    pub const ALL: [CloseReason; 18] = [
        CloseReason::ClientClosed,
        CloseReason::Io,
        CloseReason::HandshakeTimeout,
        CloseReason::HeartbeatTimeout,
        CloseReason::BadPacket,
        CloseReason::PacketTooLarge,
        CloseReason::BadFrame,
        CloseReason::FrameTooLarge,
        CloseReason::BadUpgrade,
        CloseReason::AuthFailed,
        CloseReason::Kicked,
        CloseReason::SlowConsumer,
        CloseReason::Tls,
        CloseReason::Shutdown,
        CloseReason::LameDuck,
        CloseReason::ImKick,
        CloseReason::Flood,
        CloseReason::BadOp,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::Io => "io",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::BadPacket => "bad_packet",
            CloseReason::PacketTooLarge => "packet_too_large",
            CloseReason::BadFrame => "bad_frame",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::BadUpgrade => "bad_upgrade",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::Kicked => "kicked",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::Tls => "tls",
            CloseReason::Shutdown => "shutdown",
            CloseReason::LameDuck => "lame_duck",
            CloseReason::ImKick => "im_kick",
            CloseReason::Flood => "flood",
            CloseReason::BadOp => "bad_op",
        }
    }

    /// The status code of the Close frame comet sends a WebSocket it closes (RFC 6455
    /// §7.4.1), its reason text being [`CloseReason::as_str`]. `None`: no frame is sent: the
    /// client closed first (its Close is echoed when it sent one), the socket failed, TLS
    /// failed (no record can be framed), or the kick packet's queue already ends with
    /// its own Close (1000 `kicked`).
    pub fn ws_close_code(self) -> Option<u16> {
        match self {
            CloseReason::ClientClosed
            | CloseReason::Io
            | CloseReason::Tls
            | CloseReason::ImKick => None,
            // 1008: policy violation: the client broke a rule of this server.
            CloseReason::HandshakeTimeout
            | CloseReason::HeartbeatTimeout
            | CloseReason::AuthFailed
            | CloseReason::SlowConsumer
            | CloseReason::Flood => Some(1008),
            // 1007: a message whose data is not a goim packet.
            CloseReason::BadPacket => Some(1007),
            // 1002: protocol error.
            CloseReason::BadFrame | CloseReason::BadUpgrade | CloseReason::BadOp => Some(1002),
            // 1009: too big to process.
            CloseReason::PacketTooLarge | CloseReason::FrameTooLarge => Some(1009),
            // 1000: normal closure: another connection took the key, on purpose.
            CloseReason::Kicked => Some(1000),
            // 1001: going away: the server stops or drains; reconnect elsewhere.
            CloseReason::Shutdown | CloseReason::LameDuck => Some(1001),
        }
    }

    /// Closes caused by what the peer sent, logged at `info` (the rest at `debug`).
    pub fn is_bad_input(self) -> bool {
        matches!(
            self,
            CloseReason::BadPacket
                | CloseReason::PacketTooLarge
                | CloseReason::BadFrame
                | CloseReason::FrameTooLarge
                | CloseReason::BadUpgrade
                | CloseReason::Tls
                | CloseReason::Flood
                | CloseReason::BadOp
        )
    }
}

/// Why comet refused a connection at accept (it never became a connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Refusal {
    /// `limits.max_conns` connections were open.
    MaxConns = 0,
    /// `limits.max_conns_per_ip` connections from the same address were open.
    MaxConnsPerIp = 1,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::MaxConns, Refusal::MaxConnsPerIp];

    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::MaxConns => "max_conns",
            Refusal::MaxConnsPerIp => "max_conns_per_ip",
        }
    }
}

/// Counters shared by all workers; relaxed atomics, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections accepted and not yet closed.
    pub connections: AtomicI64,
    /// Authenticated connections.
    pub sessions: AtomicI64,
    pub accepted: AtomicU64,
    closes: [AtomicU64; CloseReason::ALL.len()],
    /// Messages queued to clients by pushes (one per connection per push).
    pub pushed: AtomicU64,
    /// Socket writes (send or sendmsg calls) that carried pushed or queued output.
    pub writes: AtomicU64,
    /// Client packets handled after auth.
    pub packets_in: AtomicU64,
    /// Forward-and-answer ops, by how they ended: logic answered, comet answered 504
    /// (logic slower than `protocol.answer_timeout`) or 503 (logic failed).
    pub answered: AtomicU64,
    pub answer_timeouts: AtomicU64,
    pub answer_failures: AtomicU64,
    /// Calls to logic nobody waits for (heartbeat renewals, disconnects, goim's forwarded
    /// packets) that failed.
    pub logic_failures: AtomicU64,
    /// permessage-deflate (RFC 7692): connections, messages and bytes.
    pub deflate: crate::deflate::DeflateStats,
    refused: [AtomicU64; Refusal::ALL.len()],
    /// accept(2) failures for want of file descriptors (EMFILE, ENFILE) or kernel memory
    /// (ENOBUFS, ENOMEM); the accept loop backs off on each.
    pub accept_fd_errors: AtomicU64,
    /// Other accept(2) failures.
    pub accept_other_errors: AtomicU64,
    /// Client packets (and WebSocket pings) refused over `limits.max_packets_per_sec`.
    pub flood_refused: AtomicU64,
}

impl Stats {
    pub fn record_close(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn closes(&self, reason: CloseReason) -> u64 {
        self.closes[reason as usize].load(Relaxed)
    }

    pub fn record_refusal(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Relaxed);
    }

    pub fn refusals(&self, reason: Refusal) -> u64 {
        self.refused[reason as usize].load(Relaxed)
    }

    /// Every comet counter, for a [`metrics::Metrics`] collector (see [`Stats::register`]).
    pub fn collect(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let c = |v: &AtomicU64| v.load(Relaxed);
        metrics::gauge(
            enc,
            "starling_comet_connections",
            "Connections accepted and not yet closed.",
            self.connections.load(Relaxed),
        )?;
        metrics::gauge(
            enc,
            "starling_comet_sessions",
            "Authenticated connections.",
            self.sessions.load(Relaxed),
        )?;
        metrics::counter(
            enc,
            "starling_comet_accepted",
            "Connections accepted.",
            c(&self.accepted),
        )?;
        metrics::counters(
            enc,
            "starling_comet_closed",
            "Connections closed, by reason (stable codes: comet/src/close.rs).",
            CloseReason::ALL.iter().map(|&r| {
                let code = r.code().to_string();
                (
                    [("reason", r.as_str().to_string()), ("code", code)],
                    self.closes(r),
                )
            }),
        )?;
        metrics::counters(
            enc,
            "starling_comet_refused",
            "Connections refused at accept, by limit (max_conns, max_conns_per_ip).",
            Refusal::ALL
                .iter()
                .map(|&r| ([("reason", r.as_str())], self.refusals(r))),
        )?;
        metrics::counters(
            enc,
            "starling_comet_accept_errors",
            "accept() failures: fd_limit (EMFILE, ENFILE, ENOBUFS, ENOMEM; accept backs off) or other.",
            [
                ("fd_limit", &self.accept_fd_errors),
                ("other", &self.accept_other_errors),
            ]
            .map(|(kind, v)| ([("kind", kind)], c(v))),
        )?;
        metrics::counter(
            enc,
            "starling_comet_flood_refused",
            "Packets over a connection's rate (comet.limits.max_packets_per_sec) dropped or answered 429.",
            c(&self.flood_refused),
        )?;
        metrics::counter(
            enc,
            "starling_comet_pushed",
            "Messages queued to clients by pushes (one per connection per push).",
            c(&self.pushed),
        )?;
        metrics::counter(
            enc,
            "starling_comet_writes",
            "Socket writes that carried pushed or queued output.",
            c(&self.writes),
        )?;
        metrics::counter(
            enc,
            "starling_comet_packets_in",
            "Client packets handled after auth.",
            c(&self.packets_in),
        )?;
        metrics::counter(
            enc,
            "starling_comet_logic_failures",
            "Calls to logic nobody waits for that failed.",
            c(&self.logic_failures),
        )?;
        metrics::counters(
            enc,
            "starling_comet_answers",
            "Forward-and-answer ops by how they ended: logic, timeout (504), failed (503).",
            [
                ("logic", &self.answered),
                ("timeout", &self.answer_timeouts),
                ("failed", &self.answer_failures),
            ]
            .map(|(result, v)| ([("result", result)], c(v))),
        )?;
        self.deflate.collect(enc)
    }

    /// Registers [`Stats::collect`] with `m`.
    pub fn register(self: &std::sync::Arc<Self>, m: &metrics::Metrics) {
        let s = self.clone();
        m.collect(move |enc| s.collect(enc));
    }
}
