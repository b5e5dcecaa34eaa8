//! One client connection: its state in the worker's slab, and the reader task that serves it.
//!
//! The reader waits for readability, reads into the worker's scratch buffer, decodes every
//! whole packet (TCP) or frame (WebSocket), answers by goim's reply rules and flushes once per
//! read batch. Only a partial packet is kept per connection, in `inbuf`.
//!
//! # Layout
//! - this file: the connection's state, the reader task, registration and TLS input.
//! - `decode`: turning bytes into packets (TCP) or frames and messages (WebSocket).
//! - `rules`: goim's reply rules per packet: auth, heartbeat, room change, echo ops.

use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::outbound::{Full, OutQueue};
use crate::tls::TlsState;
use crate::worker::Worker;
use bytes::Bytes;
use monoio::net::TcpStream;
use starling_proto::grpc::logic::ConnectReq;
use starling_proto::packet::{self, PacketError};
use starling_proto::ws::{self, Assembler, FrameError};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use tracing::info;

mod decode;
mod rules;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
    Wss,
}

pub(crate) enum Transport {
    Tcp,
    /// Boxed: most connections are TCP, and the assembler is 48 bytes.
    Ws(Box<Assembler>),
    Tls(Box<TlsState>),
}

pub(crate) enum Phase {
    /// WebSocket: waiting for the upgrade request.
    Upgrading,
    /// Waiting for op 7; other ops are ignored (goim).
    Authing {
        cookie: String,
    },
    /// op 7 handed to logic; nothing more is read until it answers.
    AuthPending,
    Authed,
}

pub(crate) struct Session {
    pub key: std::sync::Arc<str>,
    pub mid: i64,
    /// Sorted ops accepted for key, mid and broadcast pushes.
    pub accepts: Vec<i32>,
    pub room: Option<std::sync::Arc<str>>,
    pub room_slot: u32,
    /// Heartbeat deadline in ticks (logic's heartbeat × heartbeat_max).
    pub hb_ticks: u64,
    /// Tick after which the next client heartbeat also refreshes the session in logic.
    pub next_renew: u64,
}

pub(crate) struct Conn {
    pub stream: Rc<TcpStream>,
    pub fd: RawFd,
    pub peer: SocketAddr,
    pub transport: Transport,
    pub phase: Phase,
    pub session: Option<Box<Session>>,
    /// Bytes of an incomplete packet or frame.
    pub inbuf: Vec<u8>,
    pub out: OutQueue,
    /// A writer task is waiting for the socket to drain.
    pub writing: bool,
    /// Listed in the worker's dirty list.
    pub dirty: bool,
    pub deadline: u64,
    /// Due tick of this connection's live wheel entry.
    pub scheduled: u64,
}

impl Conn {
    pub fn accepts(&self, op: i32) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.accepts.binary_search(&op).is_ok())
    }

    fn is_ws(&self) -> bool {
        !matches!(self.transport, Transport::Tcp)
    }

    /// Queues bytes for the client, framed as `wire` says for this transport.
    fn queue(&mut self, cap: usize, bytes: &[u8], wire: Wire) -> Result<(), Full> {
        let wire = match (wire, self.is_ws()) {
            (Wire::Http, _) | (Wire::Packet, false) => bytes.to_vec(),
            (Wire::Packet, true) => ws::encode_frame(ws::Opcode::Binary, bytes),
            (Wire::Control(opcode), _) => ws::encode_frame(opcode, bytes),
        };
        match &mut self.transport {
            Transport::Tls(tls) => tls.encrypt(&wire, &mut self.out, cap),
            _ => self.out.push(cap, &[&Bytes::from(wire)]),
        }
    }
}

/// How reply bytes go on the wire.
#[derive(Clone, Copy)]
pub(crate) enum Wire {
    /// An HTTP response to the upgrade request: as is.
    Http,
    /// A goim packet: as is on TCP, one binary frame on WebSocket.
    Packet,
    /// A WebSocket control frame.
    Control(ws::Opcode),
}

/// What the reader does next.
pub(crate) enum Step {
    Continue,
    /// An auth packet arrived: ask logic, then go on.
    Auth {
        req: ConnectReq,
        ver: i16,
        seq: i32,
    },
    Closed,
}

fn packet_reason(e: PacketError) -> CloseReason {
    match e {
        PacketError::BodyTooLarge { .. } => CloseReason::PacketTooLarge,
        PacketError::LengthMismatch { .. } => CloseReason::BadFrame,
        _ => CloseReason::BadPacket,
    }
}

fn frame_reason(e: FrameError) -> CloseReason {
    match e {
        FrameError::TooLarge { .. } => CloseReason::FrameTooLarge,
        _ => CloseReason::BadFrame,
    }
}

/// Registers an accepted connection and returns its reader task (`None`: refused). Built
/// outside the task so the task itself holds only what the read loop needs: an idle
/// connection's whole reader is this small state machine.
pub(crate) fn serve(
    w: Rc<Worker>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: Kind,
) -> Option<impl Future<Output = ()>> {
    let stream = Rc::new(stream);
    let id = w.register(stream.clone(), peer, kind)?;
    Some(read_loop(w, stream, id))
}

/// Waits for readability and handles what arrives, until the connection closes.
async fn read_loop(w: Rc<Worker>, stream: Rc<TcpStream>, id: ConnId) {
    loop {
        if stream.readable(false).await.is_err() {
            w.close(id, CloseReason::Io);
            return;
        }
        match w.on_readable(id) {
            Step::Continue => {}
            Step::Closed => return,
            Step::Auth { req, ver, seq } => {
                // Boxed: the auth state lives only while auth is pending.
                if !Box::pin(w.authenticate(id, req, ver, seq)).await {
                    return;
                }
            }
        }
    }
}

impl Worker {
    fn register(&self, stream: Rc<TcpStream>, peer: SocketAddr, kind: Kind) -> Option<ConnId> {
        let fd = stream.as_raw_fd();
        let transport = match kind {
            Kind::Tcp => Transport::Tcp,
            Kind::Ws => Transport::Ws(Box::new(Assembler::new(packet::MAX_PACK))),
            Kind::Wss => {
                let config = self.shared.tls.clone()?;
                match TlsState::new(config, Assembler::new(packet::MAX_PACK)) {
                    Ok(tls) => Transport::Tls(Box::new(tls)),
                    Err(e) => {
                        info!(error = %e, "tls session setup failed");
                        return None;
                    }
                }
            }
        };
        let due = self.clock.now()
            + self
                .clock
                .ticks(self.shared.config.protocol.handshake_timeout);
        let id = self.conns.borrow_mut().insert(Conn {
            stream,
            fd,
            peer,
            transport,
            phase: match kind {
                Kind::Tcp => Phase::Authing {
                    cookie: String::new(),
                },
                _ => Phase::Upgrading,
            },
            session: None,
            inbuf: Vec::new(),
            out: OutQueue::new(),
            writing: false,
            dirty: false,
            deadline: due,
            scheduled: due,
        });
        self.wheel.borrow_mut().insert(due, id);
        self.stats().connections.fetch_add(1, Relaxed);
        Some(id)
    }

    /// Reads what the socket has (a few buffers at most, for fairness) and handles it.
    fn on_readable(self: &Rc<Self>, id: ConnId) -> Step {
        let Some((fd, tls)) = self
            .conns
            .borrow()
            .get(id)
            .map(|c| (c.fd, matches!(c.transport, Transport::Tls(_))))
        else {
            return Step::Closed;
        };
        for _ in 0..8 {
            let read = {
                let mut scratch = self.scratch.borrow_mut();
                crate::io::read(fd, &mut scratch)
            };
            let n = match read {
                Ok(0) => {
                    self.close(id, CloseReason::ClientClosed);
                    return Step::Closed;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(id, CloseReason::Io);
                    return Step::Closed;
                }
            };
            let result = if tls {
                self.ingest_tls(id, n)
            } else {
                let mut scratch = self.scratch.borrow_mut();
                self.ingest(id, &mut scratch[..n])
            };
            match result {
                Ok(Step::Continue) => {}
                Ok(step) => {
                    self.flush(id);
                    return step;
                }
                Err(reason) => {
                    self.close(id, reason);
                    return Step::Closed;
                }
            }
            if n < self.scratch.borrow().len() {
                break; // a short read: the socket is drained
            }
        }
        self.flush(id);
        Step::Continue
    }

    fn ingest_tls(&self, id: ConnId, n: usize) -> Result<Step, CloseReason> {
        let mut plain = std::mem::take(&mut *self.plain.borrow_mut());
        plain.clear();
        {
            let scratch = self.scratch.borrow();
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return Ok(Step::Closed);
            };
            let Transport::Tls(tls) = &mut conn.transport else {
                return Ok(Step::Closed);
            };
            tls.decrypt(&scratch[..n], &mut plain)?;
            let cap = self.shared.config.protocol.out_ring;
            tls.flush_handshake(&mut conn.out, cap)
                .map_err(|_| CloseReason::SlowConsumer)?;
        }
        let result = if plain.is_empty() {
            Ok(Step::Continue)
        } else {
            self.ingest(id, &mut plain)
        };
        *self.plain.borrow_mut() = plain;
        result
    }
}
