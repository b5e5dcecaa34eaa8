//! The blocking client's goim connection: TCP, or WebSocket (RFC 6455) with masked binary
//! frames, pings answered; heartbeats (goim op 2) every [`HEARTBEAT_EVERY`] once
//! authenticated.

use super::{Closed, HEARTBEAT_EVERY, REPLY_WAIT};
use crate::wire::{self, Decoder, Encoder, Incoming, Transport};
use starling_proto::op;
use starling_proto::packet::Packet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A blocking goim connection (TCP, or WebSocket with masked binary frames).
pub struct Wire {
    sock: TcpStream,
    enc: Encoder,
    dec: Decoder,
    /// When the last heartbeat went; `None` until authenticated (then `recv` heartbeats).
    beat_at: Option<Instant>,
    pub heartbeat: Duration,
}

impl Wire {
    pub fn connect(addr: SocketAddr, transport: Transport) -> Result<Wire, Closed> {
        let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|_| Closed)?;
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|_| Closed)?;
        sock.set_nodelay(true).map_err(|_| Closed)?;
        let mut w = Wire {
            sock,
            enc: Encoder::new(transport),
            dec: Decoder::new(transport),
            beat_at: None,
            heartbeat: HEARTBEAT_EVERY,
        };
        if transport == Transport::WebSocket {
            let (req, key) = wire::upgrade_request(&addr.to_string(), "/sub");
            w.sock.write_all(&req).map_err(|_| Closed)?;
            let deadline = Instant::now() + REPLY_WAIT;
            let mut buf = Vec::new();
            let len = loop {
                if let Some(len) = wire::upgrade_response(&buf, &key).map_err(|_| Closed)? {
                    break len;
                }
                if !w.read_into(&mut buf)? && Instant::now() > deadline {
                    return Err(Closed);
                }
            };
            w.dec.feed(&buf[len..]);
        }
        Ok(w)
    }

    pub fn send(&mut self, op: i32, seq: i32, body: &[u8]) -> Result<(), Closed> {
        let bytes = self.enc.packet(op, seq, body);
        self.sock.write_all(&bytes).map_err(|_| Closed)
    }

    /// Reads what is there; `Ok(false)` when nothing came within the socket timeout.
    fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<bool, Closed> {
        let mut tmp = [0u8; 65536];
        match self.sock.read(&mut tmp) {
            Ok(0) => Err(Closed),
            Ok(n) => {
                buf.extend_from_slice(&tmp[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(_) => Err(Closed),
        }
    }

    fn fill(&mut self) -> Result<bool, Closed> {
        let mut buf = Vec::new();
        let got = self.read_into(&mut buf)?;
        self.dec.feed(&buf);
        Ok(got)
    }

    /// Starts heartbeating (after the auth reply).
    pub fn authenticated(&mut self) {
        self.beat_at = Some(Instant::now());
    }

    /// The packets that arrived within about `wait` (op-9 batches unpacked).
    pub fn recv(&mut self, wait: Duration) -> Result<Vec<Packet>, Closed> {
        if self.beat_at.is_some_and(|t| t.elapsed() >= self.heartbeat) {
            self.beat_at = Some(Instant::now());
            self.send(op::HEARTBEAT, 0, &[])?;
        }
        let deadline = Instant::now() + wait;
        loop {
            let out = self.parse()?;
            if !out.is_empty() {
                return Ok(out);
            }
            if !self.fill()? && Instant::now() >= deadline {
                return Ok(Vec::new());
            }
        }
    }

    fn parse(&mut self) -> Result<Vec<Packet>, Closed> {
        let mut out = Vec::new();
        loop {
            match self.dec.decode() {
                Ok(Some(Incoming::Packet(p))) => out.push(p),
                Ok(Some(Incoming::Ping(payload))) => {
                    let pong = self.enc.pong(&payload);
                    self.sock.write_all(&pong).map_err(|_| Closed)?;
                }
                Ok(Some(Incoming::Close)) => {
                    return if out.is_empty() { Err(Closed) } else { Ok(out) };
                }
                Ok(None) => return Ok(out),
                Err(e) => {
                    tracing::warn!(error = %e, "bad bytes from the server: closing");
                    return Err(Closed);
                }
            }
        }
    }
}
