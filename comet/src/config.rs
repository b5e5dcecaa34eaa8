//! comet's typed configuration: the `[comet]` table of `conf/starling.toml`. Every field has a
//! default (goim's where goim has one) and unknown keys are refused.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This comet's name in sessions and pushes (goim: the hostname). Empty = the hostname.
    pub server_id: String,
    /// Worker threads, each its own monoio runtime owning its connections. 0 = one per core.
    pub workers: usize,
    /// Pin worker N to core N.
    pub pin_workers: bool,
    /// `auto` (io_uring, falling back to epoll), `io_uring` or `epoll`.
    pub driver: Driver,
    pub tcp: Tcp,
    pub websocket: WebSocket,
    pub protocol: Protocol,
    pub limits: Limits,
    pub bucket: Bucket,
    /// How often room counts are reported to logic and the cluster counts fetched (goim: 10s).
    #[serde(with = "humantime_serde")]
    pub online_interval: Duration,
    /// On SIGTERM, stop accepting and close connections spread over this period, so clients
    /// reconnect to other comets gradually instead of all at once; 0 closes them at once.
    /// A second SIGTERM or SIGINT cuts the drain short.
    #[serde(with = "humantime_serde")]
    pub lame_duck: Duration,
    /// A connection's heartbeats refresh its session in logic at most once per a random
    /// moment between half this and this (goim: every 10–30 min, which can outlast its 30 min
    /// session TTL). Keep it under logic's session TTL (`redis.expire`). A session lost with
    /// Redis comes back within it.
    #[serde(with = "humantime_serde")]
    pub session_renew: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tcp {
    pub bind: Vec<SocketAddr>,
    /// Disable Nagle: pushes leave at once (merging is done by comet, not the kernel).
    pub nodelay: bool,
    pub keepalive: bool,
    /// SO_SNDBUF / SO_RCVBUF in bytes; 0 keeps the kernel's default (goim: 4096).
    pub sndbuf: usize,
    pub rcvbuf: usize,
    pub backlog: i32,
    /// TCP_NOTSENT_LOWAT in bytes (every listener's sockets): the kernel takes more output
    /// only while less than this waits unsent in it; 0 keeps the kernel's (no limit). Without
    /// it the kernel's send buffer grows (autotuning, up to `net.ipv4.tcp_wmem`'s 4 MiB) and
    /// swallows a client that stopped reading before `protocol.out_bytes` or
    /// `protocol.write_timeout` can see it.
    pub notsent_lowat: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocket {
    pub bind: Vec<SocketAddr>,
    /// WSS listeners; served only when `cert_file` and `key_file` are set.
    pub tls_bind: Vec<SocketAddr>,
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// Close a connection that sends an unmasked frame (as `bad_frame`), as RFC 6455 §5.1
    /// requires of a server. Off by default: goim accepts unmasked frames, and some native
    /// goim clients send them.
    pub require_mask: bool,
    /// Offer permessage-deflate (RFC 7692) to clients that ask for it: the 101 answers the
    /// first acceptable offer with `server_no_context_takeover; client_no_context_takeover`,
    /// so a connection keeps no compressor state between messages and a push is compressed
    /// once for every receiver. Off by default (goim never negotiated it); when off the
    /// `Sec-WebSocket-Extensions` header is not even read.
    pub permessage_deflate: bool,
    /// zlib level of comet's compression, 1 (fastest) to 9 (smallest).
    pub deflate_level: u8,
    /// Messages (goim header and body) shorter than this many bytes go uncompressed
    /// (heartbeat replies, small acks): deflate would save little on them.
    pub deflate_min_size: u32,
}

impl WebSocket {
    /// The compression settings, when permessage-deflate is on.
    pub fn deflate(&self) -> Option<crate::deflate::Settings> {
        self.permessage_deflate.then_some(crate::deflate::Settings {
            level: self.deflate_level,
            min_size: self.deflate_min_size,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protocol {
    /// Time allowed from accept to a successful auth (goim: 5s).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// How long comet waits for logic's answer to a forward-and-answer op (an opted-in
    /// connection's ops 20–39) before it answers op + 1 with code 504 itself and reads that
    /// connection's input again (goim's logic deadline: 1s).
    #[serde(with = "humantime_serde")]
    pub answer_timeout: Duration,
    /// Resolution of the timing wheel that enforces handshake and heartbeat deadlines.
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// Slots in the timing wheel; deadlines further out take extra turns of the wheel.
    pub wheel_slots: usize,
    /// Messages queued for one connection before it is closed as a slow consumer: any count
    /// from 1 to 65536 (the queue counts its messages; nothing indexes it by mask). Queued
    /// messages leave in one write, so this bounds memory, not throughput.
    pub out_ring: usize,
    /// Bytes queued for one connection (pushes and replies, a shared push counted whole for
    /// each receiver) before it is closed as a slow consumer: room batches merge many
    /// messages into few entries, so `out_ring` alone does not bound memory. An empty queue
    /// takes one message of any size. At least 64 KiB.
    pub out_bytes: usize,
    /// A connection whose socket stays full (no byte written) this long is closed as a slow
    /// consumer, as NATS's write deadline; 0 turns the deadline off.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
}

/// Abuse limits (issue 15): connections per comet and per source address, and the packet
/// rate of one connection. 0 turns a limit off.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections on this comet (every worker and listener); more are refused at
    /// accept (`starling_comet_refused_total{reason="max_conns"}`). A place is reserved
    /// atomically at accept, so workers accepting at once never pass it. 0: no limit.
    pub max_conns: usize,
    /// Open connections from one source IP address; more are refused at accept
    /// (`reason="max_conns_per_ip"`). Off by default: many clients share one address behind
    /// NAT.
    pub max_conns_per_ip: usize,
    /// The `Retry-After` of the 503 a refused WebSocket connection gets (whole seconds).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Packets one connection may send per second, sustained (GCRA); packets beyond are
    /// refused (dropped; an opted-in connection's op 20-39 is answered op + 1 with code 429)
    /// and counted (`starling_comet_flood_refused_total`). WebSocket pings count too.
    pub max_packets_per_sec: u32,
    /// Packets a connection may send at once above the sustained rate.
    pub packet_burst: u32,
    /// Refused packets, without a pause that lets the burst refill, before the connection
    /// is closed as `flood` (WebSocket close 1008).
    pub flood_strikes: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bucket {
    /// Shards of the key → connection directory (goim: 32), chosen by CityHash32(key) % size.
    pub size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server_id: String::new(),
            workers: 0,
            pin_workers: false,
            driver: Driver::Auto,
            tcp: Tcp::default(),
            websocket: WebSocket::default(),
            protocol: Protocol::default(),
            limits: Limits::default(),
            bucket: Bucket::default(),
            online_interval: Duration::from_secs(10),
            lame_duck: Duration::from_secs(10),
            session_renew: Duration::from_secs(600),
        }
    }
}

impl Default for Tcp {
    fn default() -> Self {
        Tcp {
            bind: vec![SocketAddr::from(([0, 0, 0, 0], 3101))],
            nodelay: true,
            keepalive: false,
            sndbuf: 0,
            rcvbuf: 0,
            backlog: 4096,
            notsent_lowat: 64 << 10,
        }
    }
}

impl Default for WebSocket {
    fn default() -> Self {
        WebSocket {
            bind: vec![SocketAddr::from(([0, 0, 0, 0], 3102))],
            tls_bind: vec![SocketAddr::from(([0, 0, 0, 0], 3103))],
            cert_file: String::new(),
            key_file: String::new(),
            require_mask: false,
            permessage_deflate: false,
            deflate_level: 6,
            deflate_min_size: 256,
        }
    }
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol {
            handshake_timeout: Duration::from_secs(5),
            answer_timeout: Duration::from_secs(1),
            tick: Duration::from_millis(100),
            wheel_slots: 4096,
            out_ring: 256,
            out_bytes: 1 << 20,
            write_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: 0,
            max_conns_per_ip: 0,
            retry_after: Duration::from_secs(10),
            max_packets_per_sec: 1000,
            packet_burst: 2000,
            flood_strikes: 100,
        }
    }
}

impl Default for Bucket {
    fn default() -> Self {
        Bucket { size: 32 }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("comet.protocol.out_ring must be from 1 to 65536, not {0}")]
    OutRing(usize),
    #[error("comet.bucket.size must be at least 1")]
    BucketSize,
    #[error("comet.protocol.tick must be at least 1ms")]
    Tick,
    #[error("comet.protocol.answer_timeout must be at least 1ms")]
    AnswerTimeout,
    #[error("comet.protocol.wheel_slots must be from 8 to 1048576, not {0}")]
    WheelSlots(usize),
    #[error(
        "{0} is listed twice among comet.tcp.bind, comet.websocket.bind and \
         comet.websocket.tls_bind (the kernel would split its connections between them)"
    )]
    SameAddress(SocketAddr),
    #[error("comet.websocket: cert_file and key_file go together")]
    TlsPair,
    #[error("comet.websocket.deflate_level must be from 1 to 9, not {0}")]
    DeflateLevel(u8),
    #[error("comet.protocol.out_bytes must be at least 65536, not {0}")]
    OutBytes(usize),
    #[error(
        "comet.limits: packet_burst and flood_strikes must be at least 1 when max_packets_per_sec is set"
    )]
    Flood,
    #[error("comet.workers must be at most {MAX_WORKERS} (0 = one per core), not {0}")]
    Workers(usize),
}

/// Most worker threads: each holds an io_uring (or epoll) instance, a timing wheel and its
/// listeners' sockets, so a count far above the cores is a typo that would end in EMFILE at
/// start (the break-it run of issue 15: `workers = 100000`).
pub const MAX_WORKERS: usize = 1024;

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers > MAX_WORKERS {
            return Err(ConfigError::Workers(self.workers));
        }
        let ring = self.protocol.out_ring;
        if !(1..=65536).contains(&ring) {
            return Err(ConfigError::OutRing(ring));
        }
        if self.bucket.size == 0 {
            return Err(ConfigError::BucketSize);
        }
        if self.protocol.tick < Duration::from_millis(1) {
            return Err(ConfigError::Tick);
        }
        if self.protocol.answer_timeout < Duration::from_millis(1) {
            return Err(ConfigError::AnswerTimeout);
        }
        // Each slot is a list head: a million of them is 24 MB per worker, more is a typo.
        let slots = self.protocol.wheel_slots;
        if !(8..=1 << 20).contains(&slots) {
            return Err(ConfigError::WheelSlots(slots));
        }
        let mut seen = std::collections::HashSet::new();
        let listeners = self.tcp.bind.iter().chain(&self.websocket.bind);
        let tls = self
            .websocket
            .tls_bind
            .iter()
            .filter(|_| !self.websocket.cert_file.is_empty());
        for addr in listeners.chain(tls).filter(|a| a.port() != 0) {
            if !seen.insert(*addr) {
                return Err(ConfigError::SameAddress(*addr));
            }
        }
        if self.websocket.cert_file.is_empty() != self.websocket.key_file.is_empty() {
            return Err(ConfigError::TlsPair);
        }
        if !(1..=9).contains(&self.websocket.deflate_level) {
            return Err(ConfigError::DeflateLevel(self.websocket.deflate_level));
        }
        if self.protocol.out_bytes < 1 << 16 {
            return Err(ConfigError::OutBytes(self.protocol.out_bytes));
        }
        let l = &self.limits;
        if l.max_packets_per_sec > 0 && (l.packet_burst == 0 || l.flood_strikes == 0) {
            return Err(ConfigError::Flood);
        }
        Ok(())
    }

    /// Workers to start: the configured count, or one per core.
    pub fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn tls_enabled(&self) -> bool {
        !self.websocket.cert_file.is_empty()
    }

    /// Reads the WSS certificate and key as the start does, when TLS is on, so a missing or
    /// malformed one is found by `config check` and before anything binds.
    ///
    /// Errors: the message names the key (`comet.websocket.cert_file`) and the file.
    pub fn check_files(&self) -> Result<(), String> {
        if !self.tls_enabled() {
            return Ok(());
        }
        let ws = &self.websocket;
        crate::tls::server_config(&ws.cert_file, &ws.key_file)
            .map(drop)
            .map_err(|e| match e {
                crate::tls::TlsError::Cert { .. } => format!("comet.websocket.cert_file: {e}"),
                crate::tls::TlsError::Key { .. } => format!("comet.websocket.key_file: {e}"),
                crate::tls::TlsError::Config(_) => {
                    format!("comet.websocket.cert_file and key_file: {e}")
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_ring_is_any_count_from_1_to_65536() {
        let with = |n| {
            let mut c = Config::default();
            c.protocol.out_ring = n;
            c.validate()
        };
        for n in [1, 3, 100, 256, 65536] {
            assert_eq!(with(n), Ok(()), "{n}");
        }
        for n in [0, 65537] {
            assert_eq!(with(n), Err(ConfigError::OutRing(n)), "{n}");
        }
    }

    #[test]
    fn a_listen_address_twice_and_a_huge_wheel_are_refused() {
        let mut c = Config::default();
        c.websocket.bind = c.tcp.bind.clone();
        assert_eq!(c.validate(), Err(ConfigError::SameAddress(c.tcp.bind[0])));
        // Port 0 picks a new port each time: not a clash.
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        c.tcp.bind = vec![any];
        c.websocket.bind = vec![any];
        assert_eq!(c.validate(), Ok(()));
        // The WSS listener counts only when it is served (a certificate is set).
        let mut c = Config::default();
        c.websocket.tls_bind = c.tcp.bind.clone();
        assert_eq!(c.validate(), Ok(()));
        c.websocket.cert_file = "c.pem".into();
        c.websocket.key_file = "k.pem".into();
        assert!(matches!(c.validate(), Err(ConfigError::SameAddress(_))));
        let mut c = Config::default();
        c.protocol.wheel_slots = 1 << 40;
        assert_eq!(c.validate(), Err(ConfigError::WheelSlots(1 << 40)));
        c.protocol.wheel_slots = 1 << 20;
        assert_eq!(c.validate(), Ok(()));
        c.workers = 100_000;
        assert_eq!(c.validate(), Err(ConfigError::Workers(100_000)));
        c.workers = MAX_WORKERS;
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn the_byte_bound_and_the_flood_limit_are_checked() {
        let mut c = Config::default();
        c.protocol.out_bytes = 65535;
        assert_eq!(c.validate(), Err(ConfigError::OutBytes(65535)));
        c.protocol.out_bytes = 65536;
        assert_eq!(c.validate(), Ok(()));
        c.limits.packet_burst = 0;
        assert_eq!(c.validate(), Err(ConfigError::Flood));
        c.limits.max_packets_per_sec = 0; // off: the rest is not read
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn deflate_is_off_by_default_and_its_level_is_checked() {
        let mut c = Config::default();
        assert_eq!(c.websocket.deflate(), None);
        c.websocket.permessage_deflate = true;
        assert_eq!(
            c.websocket.deflate(),
            Some(crate::deflate::Settings {
                level: 6,
                min_size: 256
            })
        );
        for l in [0, 10] {
            c.websocket.deflate_level = l;
            assert_eq!(c.validate(), Err(ConfigError::DeflateLevel(l)));
        }
    }
}
