//! Slowloris (issue 15): 2,000 connections trickle their handshake one byte a second (an
//! upgrade request, an auth packet on TCP, an auth frame after an upgrade). The handshake
//! deadline bounds the whole handshake, not each read: all are closed at it, while real
//! logins keep working (their latency is printed, not asserted). Its own test binary: it
//! holds 4,000 descriptors (both ends) for a few seconds.

mod common;

use common::{Client, config, start_with, token};
use starling_comet::CloseReason;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const PER_KIND: usize = 700;

/// A connection sending `script` one byte per round.
struct Trickle {
    s: TcpStream,
    script: Vec<u8>,
    sent: usize,
    closed: Option<Instant>,
}

impl Trickle {
    /// One more byte; notes when comet has closed the connection.
    fn step(&mut self) {
        if self.closed.is_some() {
            return;
        }
        let mut buf = [0u8; 512];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return self.closed = Some(Instant::now()),
                Ok(_) => continue, // a 408 or a Close frame: read on to the end
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => return self.closed = Some(Instant::now()),
            }
        }
        if self.sent < self.script.len() {
            match self.s.write(&self.script[self.sent..=self.sent]) {
                Ok(_) => self.sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => self.closed = Some(Instant::now()),
            }
        }
    }
}

#[test]
fn a_trickled_handshake_is_closed_at_the_deadline_and_logins_go_on() {
    let mut cfg = config();
    cfg.protocol.handshake_timeout = Duration::from_secs(3);
    cfg.protocol.tick = Duration::from_millis(100);
    let c = start_with(cfg);
    let upgrade = b"GET /sub HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    let auth = starling_proto::packet::Packet::new(1, 7, 1, token(1, "slow", 0)).to_bytes();
    let auth_frame = starling_proto::ws::encode_client_frame(
        starling_proto::ws::Opcode::Binary,
        true,
        [1, 2, 3, 4],
        &auth,
    );
    let start = Instant::now();
    let mut conns: Vec<Trickle> = Vec::new();
    for i in 0..PER_KIND * 3 {
        let (s, script) = match i % 3 {
            0 => (TcpStream::connect(c.tcp).unwrap(), auth.clone()),
            1 => (TcpStream::connect(c.ws).unwrap(), upgrade.clone()),
            _ => {
                let ws = Client::connect_ws(c.ws);
                (ws.stream().try_clone().unwrap(), auth_frame.clone())
            }
        };
        s.set_nonblocking(true).unwrap();
        conns.push(Trickle {
            s,
            script,
            sent: 0,
            closed: None,
        });
    }
    let opened = start.elapsed();
    println!("{} trickling connections opened in {opened:?}", conns.len());
    // Trickle a byte a second on every connection; log in a real client every 100 ms.
    let mut logins = Vec::new();
    let mut next_byte = Instant::now();
    while conns.iter().any(|t| t.closed.is_none()) && start.elapsed() < Duration::from_secs(30) {
        if Instant::now() >= next_byte {
            conns.iter_mut().for_each(Trickle::step);
            next_byte += Duration::from_secs(1);
        }
        let t = Instant::now();
        let mut real = Client::connect(c.tcp);
        real.auth(&token(
            100 + logins.len() as i64,
            &format!("real{}", logins.len()),
            0,
        ));
        logins.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let open = conns.iter().filter(|t| t.closed.is_none()).count();
    assert_eq!(open, 0, "trickling connections still open after 30 s");
    let most_sent = conns.iter().map(|t| t.sent).max().unwrap();
    let last = conns.iter().filter_map(|t| t.closed).max().unwrap() - start;
    logins.sort();
    println!(
        "all closed {last:?} after the first connect (deadline 3 s; at most {most_sent} bytes \
         sent each); {} logins meanwhile, latency median {:?}, max {:?}",
        logins.len(),
        logins[logins.len() / 2],
        logins[logins.len() - 1]
    );
    assert!(
        most_sent < upgrade.len().min(auth.len()),
        "a handshake completed"
    );
    common::eventually("counted", || {
        c.closes(CloseReason::HandshakeTimeout) == (PER_KIND * 3) as u64
    });
}
