//! Test harness: starts the all-in-one on spare ports and speaks goim to it over real sockets.
#![allow(dead_code)]

pub mod im_client;
pub mod im_server;

use starling::{Config, Running};
use starling_proto::packet::{self, Packet};
use starling_proto::{AuthToken, ws};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen; generous, since a failure shows
/// up as this timeout and a pass never waits it out.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub running: Option<Running>,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub wss: Option<SocketAddr>,
    pub http: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown();
        }
    }
}

impl Server {
    /// How many connections the comet has closed for `reason`.
    pub fn closes(&self, reason: starling_comet::CloseReason) -> u64 {
        self.running
            .as_ref()
            .unwrap()
            .comet()
            .stats()
            .closes(reason)
    }
}

pub fn test_config() -> Config {
    let mut c = Config::default();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    c.comet.workers = 2;
    c.comet.server_id = "comet-test".into();
    c.comet.tcp.bind = vec![any];
    c.comet.websocket.bind = vec![any];
    c.comet.websocket.tls_bind = vec![any];
    c.comet.online_interval = Duration::from_millis(100);
    c.comet.protocol.handshake_timeout = Duration::from_millis(500);
    c.comet.protocol.tick = Duration::from_millis(20);
    c.logic.http.bind = any;
    c.grpc.bind = any;
    c.log.filter = "warn".into();
    // tools/test.sh runs the suite once per driver.
    c.comet.driver = match std::env::var("STARLING_TEST_DRIVER").as_deref() {
        Ok("epoll") => starling_comet::config::Driver::Epoll,
        Ok("io_uring") => starling_comet::config::Driver::IoUring,
        _ => starling_comet::config::Driver::Auto,
    };
    c
}

pub fn start_with(config: Config) -> Server {
    let running = starling::start(config).expect("server starts");
    let a = running.comet().addrs().clone();
    Server {
        tcp: a.tcp[0],
        ws: a.ws[0],
        wss: a.wss.first().copied(),
        http: running.http_addr(),
        running: Some(running),
    }
}

pub fn start() -> Server {
    start_with(test_config())
}

pub fn token(mid: i64, key: &str, room: &str, accepts: &[i32]) -> Vec<u8> {
    AuthToken {
        mid,
        key: key.into(),
        room_id: room.into(),
        platform: "test".into(),
        accepts: accepts.to_vec(),
        ..Default::default()
    }
    .to_json()
}

/// A client speaking goim over TCP or WebSocket (masked binary frames).
pub struct Client {
    pub sock: TcpStream,
    pub ws: bool,
    buf: Vec<u8>,
}

impl Client {
    pub fn tcp(addr: SocketAddr) -> Client {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        sock.set_nodelay(true).unwrap();
        Client {
            sock,
            ws: false,
            buf: Vec::new(),
        }
    }

    pub fn ws(addr: SocketAddr) -> Client {
        let mut c = Client::tcp(addr);
        c.write_raw(
            b"GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        let resp = c.read_until(b"\r\n\r\n");
        assert!(
            resp.starts_with(b"HTTP/1.1 101 "),
            "{}",
            String::from_utf8_lossy(&resp)
        );
        c.ws = true;
        c
    }

    /// Shrinks this client's receive buffer, so a client that stops reading fills the
    /// server's socket after a few kilobytes.
    pub fn small_receive_buffer(&self) {
        socket2::SockRef::from(&self.sock)
            .set_recv_buffer_size(4096)
            .unwrap();
    }

    pub fn write_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    pub fn send(&mut self, ver: i16, op: i32, seq: i32, body: &[u8]) {
        let p = Packet::new(ver, op, seq, body.to_vec()).to_bytes();
        if self.ws {
            self.write_raw(&ws::encode_client_frame(
                ws::Opcode::Binary,
                true,
                [7, 1, 9, 3],
                &p,
            ));
        } else {
            self.write_raw(&p);
        }
    }

    pub fn auth(&mut self, token: &[u8]) -> Packet {
        self.send(1, 7, 1, token);
        let p = self.expect();
        assert_eq!(p.op, 8, "auth reply");
        p
    }

    /// Reads more bytes; `false` on EOF or reset.
    fn fill(&mut self, deadline: Instant) -> bool {
        let mut tmp = [0u8; 65536];
        loop {
            match self.sock.read(&mut tmp) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    assert!(Instant::now() < deadline, "timed out waiting for data");
                }
                Err(_) => return false,
            }
        }
    }

    pub fn read_until(&mut self, end: &[u8]) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(i) = self.buf.windows(end.len()).position(|w| w == end) {
                return self.buf.drain(..i + end.len()).collect();
            }
            assert!(
                self.fill(deadline),
                "closed before {:?}",
                String::from_utf8_lossy(end)
            );
        }
    }

    /// The next whole WebSocket frame: (opcode byte, payload).
    pub fn next_frame(&mut self) -> (u8, Vec<u8>) {
        let deadline = Instant::now() + WAIT;
        loop {
            let mut copy = self.buf.clone();
            if let Some(h) =
                ws::decode_frame(&mut copy, usize::MAX >> 1, ws::Masking::Optional).unwrap()
            {
                let payload = copy[h.header_len..h.frame_len()].to_vec();
                self.buf.drain(..h.frame_len());
                return (h.opcode as u8, payload);
            }
            assert!(self.fill(deadline), "closed while waiting for a frame");
        }
    }

    /// The next packet. On WebSocket an op-9 frame is returned as is (a batch).
    pub fn expect(&mut self) -> Packet {
        if self.ws {
            let (opcode, payload) = self.next_frame();
            assert_eq!(opcode, 2, "binary frame");
            return packet::decode_exact(&payload, usize::MAX >> 1)
                .unwrap()
                .to_owned();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(p) = packet::decode(&self.buf, usize::MAX >> 1).unwrap() {
                let p = p.to_owned();
                self.buf.drain(..p.as_ref().wire_len());
                return p;
            }
            assert!(self.fill(deadline), "closed while waiting for a packet");
        }
    }

    /// Asserts nothing arrives for `d`.
    pub fn expect_nothing(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            let mut tmp = [0u8; 1024];
            match self.sock.read(&mut tmp) {
                Ok(0) => panic!("closed"),
                Ok(n) => panic!("unexpected bytes: {:?}", &tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("error: {e}"),
            }
        }
        assert!(self.buf.is_empty(), "unexpected buffered bytes");
    }

    /// Asserts the server closes the connection (any bytes before the close are returned).
    pub fn expect_close(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + WAIT;
        while self.fill(deadline) {}
        std::mem::take(&mut self.buf)
    }

    pub fn heartbeat(&mut self) -> i32 {
        self.send(1, 2, 9, b"");
        let p = self.expect();
        assert_eq!((p.op, p.seq), (3, 9));
        i32::from_be_bytes(p.body[..4].try_into().unwrap())
    }
}

/// One HTTP/1.1 request; returns (status, JSON body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, serde_json::Value) {
    try_http(addr, method, path, body).unwrap()
}

/// [`http`], with a server that may be down.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, serde_json::Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(WAIT))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let json = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    ))
}

pub fn post_ok(addr: SocketAddr, path: &str, body: &[u8]) {
    let (status, v) = http(addr, "POST", path, body);
    assert_eq!((status, v["code"].as_i64()), (200, Some(0)), "{path}: {v}");
}

/// Polls `f` until it holds (for state that settles asynchronously, like online counts).
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Inner packets of an OpRaw body.
pub fn inner(body: &[u8]) -> Vec<Packet> {
    starling_proto::raw::packets(body)
        .map(|p| p.unwrap().to_owned())
        .collect()
}
