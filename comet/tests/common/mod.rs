//! comet alone: a scripted [`LogicClient`] and a goim TCP client on real sockets. No logic,
//! job or Redis: what comet does when logic accepts, refuses, is slow, fails or answers.
#![allow(dead_code)]

use starling_comet::logic::{LocalBoxFuture, LogicClient, LogicError};
use starling_comet::{Comet, Config};
use starling_proto::grpc::logic::{
    ConnectReply, ConnectReq, DisconnectReq, HeartbeatReq, OnlineReply, OnlineReq, ReceiveReq,
};
use starling_proto::grpc::protocol::Proto;
use starling_proto::packet::{self, Packet};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for what should happen (a pass never waits it out).
pub const WAIT: Duration = Duration::from_secs(10);

/// What the scripted logic does with a Connect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnConnect {
    Accept,
    /// A bad token (`LogicError::Refused`).
    Refuse,
    /// logic down (`LogicError::Unavailable`).
    Fail,
    /// Accept, after this long.
    Delay(Duration),
}

/// A scripted logic. Connect follows `on_connect`; the token is goim's JSON, whose `im`
/// field (a number) becomes `ConnectReply.im`. Receive follows the packet's body:
/// - `delay:<ms>:<text>` answers like `<text>` after that many milliseconds;
/// - `fail` fails (`Unavailable`), `late` fails as a gRPC deadline would (`Timeout`);
/// - `none` answers with no packet, `two` with two;
/// - anything else: one packet, op + 1, body `re:<body>`.
pub struct Script {
    pub on_connect: Mutex<OnConnect>,
    pub received: Mutex<Vec<ReceiveReq>>,
    pub disconnects: Mutex<Vec<DisconnectReq>>,
    /// Receive calls in flight now, and the most at once.
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            on_connect: Mutex::new(OnConnect::Accept),
            received: Mutex::new(Vec::new()),
            disconnects: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }
}

impl Script {
    pub fn set_connect(&self, c: OnConnect) {
        *self.on_connect.lock().unwrap() = c;
    }

    /// The bodies logic received, in order.
    pub fn received_bodies(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.proto.as_ref().unwrap().body).into_owned())
            .collect()
    }
}

/// The `LogicClient` comet gets: the script, shared with the test.
pub struct Scripted(pub Arc<Script>);

fn reply_for(req: &ConnectReq) -> ConnectReply {
    let v: serde_json::Value = serde_json::from_slice(&req.token).unwrap_or_default();
    ConnectReply {
        mid: v["mid"].as_i64().unwrap_or(0),
        key: v["key"].as_str().unwrap_or("k").to_string(),
        room_id: v["room_id"].as_str().unwrap_or("").to_string(),
        accepts: vec![1000],
        heartbeat: Duration::from_secs(60).as_nanos() as i64,
        im: v["im"].as_i64().unwrap_or(0) as i32,
        ..Default::default()
    }
}

fn answer(op: i32, body: &str) -> Result<Vec<Proto>, LogicError> {
    let p = |b: String| Proto {
        op: op + 1,
        body: b.into_bytes().into(),
        ..Proto::default()
    };
    match body {
        "fail" => Err(LogicError::Unavailable("scripted failure".into())),
        "late" => Err(LogicError::Timeout("scripted deadline".into())),
        "none" => Ok(Vec::new()),
        "two" => Ok(vec![p("first".into()), p("second".into())]),
        other => Ok(vec![p(format!("re:{other}"))]),
    }
}

impl LogicClient for Scripted {
    fn connect(&self, req: ConnectReq) -> LocalBoxFuture<Result<ConnectReply, LogicError>> {
        let how = *self.0.on_connect.lock().unwrap();
        Box::pin(async move {
            match how {
                OnConnect::Accept => Ok(reply_for(&req)),
                OnConnect::Refuse => Err(LogicError::Refused("scripted bad token".into())),
                OnConnect::Fail => Err(LogicError::Unavailable("scripted logic down".into())),
                OnConnect::Delay(d) => {
                    monoio::time::sleep(d).await;
                    Ok(reply_for(&req))
                }
            }
        })
    }

    fn disconnect(&self, req: DisconnectReq) -> LocalBoxFuture<Result<(), LogicError>> {
        self.0.disconnects.lock().unwrap().push(req);
        Box::pin(async { Ok(()) })
    }

    fn heartbeat(&self, _: HeartbeatReq) -> LocalBoxFuture<Result<(), LogicError>> {
        Box::pin(async { Ok(()) })
    }

    fn renew_online(&self, _: OnlineReq) -> LocalBoxFuture<Result<OnlineReply, LogicError>> {
        Box::pin(async { Ok(OnlineReply::default()) })
    }

    fn receive(&self, req: ReceiveReq) -> LocalBoxFuture<Result<Vec<Proto>, LogicError>> {
        let script = self.0.clone();
        let proto = req.proto.clone().unwrap_or_default();
        script.received.lock().unwrap().push(req);
        let now = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        script.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Box::pin(async move {
            let body = String::from_utf8_lossy(&proto.body).into_owned();
            let mut text = body.as_str();
            if let Some(rest) = text.strip_prefix("delay:") {
                let (ms, t) = rest.split_once(':').unwrap_or((rest, ""));
                monoio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
                text = t;
            }
            let r = answer(proto.op, text);
            script.in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        })
    }
}

pub fn config() -> Config {
    let mut c = Config::default();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    c.workers = 2;
    c.server_id = "comet-alone".into();
    c.tcp.bind = vec![any];
    c.websocket.bind = vec![any];
    c.websocket.tls_bind = vec![];
    c.protocol.handshake_timeout = Duration::from_millis(500);
    c.protocol.answer_timeout = Duration::from_millis(300);
    c.protocol.tick = Duration::from_millis(20);
    c.online_interval = Duration::from_secs(3600);
    c.driver = match std::env::var("STARLING_TEST_DRIVER").as_deref() {
        Ok("epoll") => starling_comet::config::Driver::Epoll,
        Ok("io_uring") => starling_comet::config::Driver::IoUring,
        _ => starling_comet::config::Driver::Auto,
    };
    c
}

/// A comet on spare ports with a scripted logic; stopped when dropped.
pub struct Alone {
    pub comet: Comet,
    pub script: Arc<Script>,
    pub tcp: SocketAddr,
}

impl Drop for Alone {
    fn drop(&mut self) {
        self.comet.shutdown();
    }
}

pub fn start() -> Alone {
    start_with(config())
}

pub fn start_with(config: Config) -> Alone {
    let script = Arc::new(Script::default());
    let comet = starling_comet::start(config, Arc::new(Scripted(script.clone()))).unwrap();
    let tcp = comet.addrs().tcp[0];
    Alone { comet, script, tcp }
}

impl Alone {
    pub fn closes(&self, r: starling_comet::CloseReason) -> u64 {
        self.comet.stats().closes(r)
    }

    /// Open connections per worker (the handle's methods are async: run on a tokio thread).
    pub fn worker_conns(&self) -> Vec<usize> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(self.comet.worker_conns())
    }
}

pub fn token(mid: i64, key: &str, im: i32) -> Vec<u8> {
    serde_json::json!({"mid": mid, "key": key, "room_id": "", "accepts": [1000], "im": im})
        .to_string()
        .into_bytes()
}

/// A goim client over TCP.
pub struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: Vec::new() }
    }

    pub fn send(&mut self, op: i32, seq: i32, body: &[u8]) {
        self.s
            .write_all(&Packet::new(1, op, seq, body.to_vec()).to_bytes())
            .unwrap();
    }

    /// Several packets in one write (pipelined).
    pub fn send_all(&mut self, packets: &[(i32, i32, &[u8])]) {
        let mut bytes = Vec::new();
        for (op, seq, body) in packets {
            bytes.extend(Packet::new(1, *op, *seq, body.to_vec()).to_bytes());
        }
        self.s.write_all(&bytes).unwrap();
    }

    /// Sends op 7 and expects op 8.
    pub fn auth(&mut self, token: &[u8]) {
        self.send(7, 1, token);
        let p = self.expect();
        assert_eq!(p.op, 8, "auth reply");
    }

    /// Reads more bytes until `deadline`; false on timeout, panics on close.
    fn fill(&mut self, deadline: Instant) -> Option<bool> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Some(false);
        }
        self.s.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 4096];
        match self.s.read(&mut chunk) {
            Ok(0) => None,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Some(false)
            }
            Err(_) => None,
        }
    }

    fn take_packet(&mut self) -> Option<Packet> {
        let r = packet::decode(&self.buf, usize::MAX - packet::HEADER_LEN).unwrap()?;
        let (p, used) = (r.to_owned(), r.wire_len());
        self.buf.drain(..used);
        Some(p)
    }

    pub fn try_expect(&mut self, within: Duration) -> Option<Packet> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(p) = self.take_packet() {
                return Some(p);
            }
            match self.fill(deadline) {
                Some(true) => {}
                Some(false) => return None,
                None => panic!("connection closed while a packet was expected"),
            }
        }
    }

    pub fn expect(&mut self) -> Packet {
        self.try_expect(WAIT).expect("a packet within WAIT")
    }

    /// Nothing arrives for `d`.
    pub fn expect_nothing(&mut self, d: Duration) {
        if let Some(p) = self.try_expect(d) {
            panic!("expected nothing, got op {} seq {}", p.op, p.seq);
        }
    }

    /// The server closes the connection (anything before the close is skipped).
    pub fn expect_close(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.fill(deadline) {
                None => return,
                Some(true) => self.buf.clear(),
                Some(false) => panic!("no close within WAIT"),
            }
        }
    }
}

pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("not within WAIT: {what}");
}
