//! comet alone: a scripted [`LogicClient`] and a goim client (TCP or WebSocket) on real
//! sockets. No logic, job or Redis: what comet does when logic accepts, refuses, is slow,
//! fails or answers.
#![allow(dead_code)]

mod script;

#[allow(unused_imports)] // each test binary uses its part
pub use script::{OnConnect, Script, Scripted};
use starling_comet::{Comet, Config};
use starling_proto::grpc::comet::PushMsgReq;
use starling_proto::grpc::protocol::Proto;
use starling_proto::packet::{self, Packet};
use starling_proto::ws;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a test waits for what should happen (a pass never waits it out).
pub const WAIT: Duration = Duration::from_secs(10);

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
    pub ws: SocketAddr,
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
    let ws = comet.addrs().ws[0];
    Alone {
        comet,
        script,
        tcp,
        ws,
    }
}

impl Alone {
    pub fn closes(&self, r: starling_comet::CloseReason) -> u64 {
        self.comet.stats().closes(r)
    }

    /// Open connections per worker (the handle's methods are async: run on a tokio thread).
    pub fn worker_conns(&self) -> Vec<usize> {
        block_on(self.comet.worker_conns())
    }

    /// A room push as job sends a merged batch: the bodies as packets of `op` in one OpRaw
    /// payload; returns once every worker queued and flushed it.
    pub fn push_room(&self, room: &str, op: i32, bodies: &[&[u8]]) {
        let mut batch = starling_proto::raw::RawBatch::new();
        for b in bodies {
            batch.push(op, b);
        }
        let req = starling_proto::grpc::comet::BroadcastRoomReq {
            room_id: room.to_string(),
            proto: Some(Proto {
                ver: 1,
                op: starling_proto::op::RAW,
                seq: 0,
                body: batch.finish(),
            }),
        };
        block_on(self.comet.broadcast_room(req)).unwrap();
    }

    /// A key push as job sends it: `op` filters, the body is one packet in an OpRaw batch.
    pub fn push_key(&self, key: &str, op: i32, body: &[u8]) {
        let req = PushMsgReq {
            keys: vec![key.to_string()],
            proto_op: op,
            proto: Some(Proto {
                ver: 1,
                op: starling_proto::op::RAW,
                seq: 0,
                body: starling_proto::raw::single(op, body),
            }),
        };
        block_on(self.comet.push_msg(req)).unwrap();
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// goim's token with Starling's fields (see [`Script`]), e.g.
/// `json!({"mid": 1, "key": "k", "im": 1, "max_body": 16384})`.
pub fn token_json(v: serde_json::Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

pub fn token(mid: i64, key: &str, im: i32) -> Vec<u8> {
    serde_json::json!({"mid": mid, "key": key, "room_id": "", "accepts": [1000], "im": im})
        .to_string()
        .into_bytes()
}

/// A goim client over TCP, or over WebSocket (one masked binary frame per packet).
pub struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    ws: bool,
    /// permessage-deflate was agreed: RSV1 frames are inflated as they are taken.
    deflate: bool,
    /// Frames taken that came compressed (RSV1).
    pub compressed_frames: usize,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            s,
            buf: Vec::new(),
            ws: false,
            deflate: false,
            compressed_frames: 0,
        }
    }

    /// Connects from `from` (any 127.0.0.0/8 address on Linux) with SO_RCVBUF `rcvbuf`
    /// (0: the kernel's), set before the handshake so the window is small from the start.
    pub fn connect_from(addr: SocketAddr, from: std::net::IpAddr, rcvbuf: usize) -> Client {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        if rcvbuf > 0 {
            s.set_recv_buffer_size(rcvbuf).unwrap();
        }
        s.bind(&SocketAddr::new(from, 0).into()).unwrap();
        s.connect(&addr.into()).unwrap();
        let s: TcpStream = s.into();
        s.set_nodelay(true).unwrap();
        Client {
            s,
            buf: Vec::new(),
            ws: false,
            deflate: false,
            compressed_frames: 0,
        }
    }

    /// A client over a TCP connection already made.
    pub fn from_stream(s: TcpStream) -> Client {
        s.set_nodelay(true).unwrap();
        Client {
            s,
            buf: Vec::new(),
            ws: false,
            deflate: false,
            compressed_frames: 0,
        }
    }

    /// The socket, for what the helpers do not do.
    pub fn stream(&self) -> &TcpStream {
        &self.s
    }

    /// WebSocket: skips frames until a Close frame and returns its code and reason (RFC 6455
    /// §5.5.1); `None` when the connection ends without one (the client would see 1006).
    pub fn expect_ws_close(&mut self) -> Option<(u16, String)> {
        let deadline = Instant::now() + WAIT;
        loop {
            while let Some((opcode, payload)) = self.take_frame() {
                if opcode == ws::Opcode::Close as u8 {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return Some((code, String::from_utf8_lossy(&payload[2..]).into_owned()));
                }
            }
            match self.fill(deadline) {
                Some(true) => {}
                Some(false) => panic!("no close within WAIT"),
                None => return None,
            }
        }
    }

    /// Connects to a WebSocket listener and upgrades on `/sub`.
    pub fn connect_ws(addr: SocketAddr) -> Client {
        let (c, response) = Client::upgrade(addr, "");
        assert!(response.starts_with("HTTP/1.1 101 "), "upgrade refused");
        c
    }

    /// Sends the upgrade request with `extra` header lines (each ending in CRLF) and returns
    /// the client and the response head, whatever its status. A 101 that agrees to
    /// permessage-deflate makes the client inflate RSV1 frames.
    pub fn upgrade(addr: SocketAddr, extra: &str) -> (Client, String) {
        Client::connect(addr).upgrade_with(extra)
    }

    /// [`Client::upgrade`] on a connection already made.
    pub fn upgrade_with(self, extra: &str) -> (Client, String) {
        let mut c = self;
        c.s.write_all(
            format!(
                "GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                 {extra}\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let deadline = Instant::now() + WAIT;
        let end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert_eq!(c.fill(deadline), Some(true), "no upgrade response");
        };
        let response = String::from_utf8_lossy(&c.buf[..end]).into_owned();
        c.buf.drain(..end);
        c.ws = true;
        c.deflate = response
            .to_ascii_lowercase()
            .contains("\r\nsec-websocket-extensions: permessage-deflate");
        (c, response)
    }

    /// Sends one packet as one compressed (RSV1) binary frame.
    pub fn send_compressed(&mut self, op: i32, seq: i32, body: &[u8]) {
        let packet = Packet::new(1, op, seq, body.to_vec()).to_bytes();
        let mut z = Vec::new();
        ws::deflate::Deflater::new(6).compress(&packet, &mut z);
        let frame = ws::encode_client_frame_ext(ws::Opcode::Binary, true, true, [7, 1, 9, 3], &z);
        self.s.write_all(&frame).unwrap();
    }

    /// Writes raw bytes to the socket.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, op: i32, seq: i32, body: &[u8]) {
        self.send_bytes(&Packet::new(1, op, seq, body.to_vec()).to_bytes());
    }

    /// Writes bytes as one packet: as is on TCP, in one binary frame on WebSocket.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        if self.ws {
            let frame = ws::encode_client_frame(ws::Opcode::Binary, true, [7, 1, 9, 3], bytes);
            self.s.write_all(&frame).unwrap();
        } else {
            self.s.write_all(bytes).unwrap();
        }
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
        if self.ws {
            let (opcode, payload) = self.take_frame()?;
            assert_eq!(opcode, ws::Opcode::Binary as u8, "a binary frame");
            return Some(
                packet::decode_exact(&payload, usize::MAX - packet::HEADER_LEN)
                    .unwrap()
                    .to_owned(),
            );
        }
        let r = packet::decode(&self.buf, usize::MAX - packet::HEADER_LEN).unwrap()?;
        let (p, used) = (r.to_owned(), r.wire_len());
        self.buf.drain(..used);
        Some(p)
    }

    /// The next whole server frame (unmasked): (opcode, payload).
    fn take_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut copy = self.buf.clone();
        let h = ws::decode_frame_ext(
            &mut copy,
            usize::MAX >> 1,
            ws::Masking::Optional,
            self.deflate,
        )
        .unwrap()?;
        let mut payload = copy[h.header_len..h.frame_len()].to_vec();
        self.buf.drain(..h.frame_len());
        if h.compressed {
            let mut inflated = Vec::new();
            ws::deflate::Inflater::new()
                .inflate(&payload, usize::MAX >> 1, &mut inflated)
                .unwrap();
            payload = inflated;
            self.compressed_frames += 1;
        }
        Some((h.opcode as u8, payload))
    }

    /// WebSocket: the next frame, whatever its opcode.
    pub fn expect_frame(&mut self) -> (u8, Vec<u8>) {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(f) = self.take_frame() {
                return f;
            }
            match self.fill(deadline) {
                Some(true) => {}
                Some(false) => panic!("no frame within WAIT"),
                None => panic!("connection closed while a frame was expected"),
            }
        }
    }

    /// The next `n` bytes exactly as they came (TCP).
    pub fn expect_bytes(&mut self, n: usize) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        while self.buf.len() < n {
            assert_eq!(self.fill(deadline), Some(true), "fewer than {n} bytes");
        }
        self.buf.drain(..n).collect()
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
        self.expect_close_after();
    }

    /// The server closes the connection; returns the bytes that came before the close and
    /// were not read yet.
    pub fn expect_close_after(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.fill(deadline) {
                None => return std::mem::take(&mut self.buf),
                Some(true) => {}
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
