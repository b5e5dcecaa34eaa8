//! One client connection: its state in the worker's slab, and what happens when its socket
//! has input.
//!
//! The worker's readiness set reports the connection; it is read into the worker's scratch
//! buffer, every whole packet (TCP) or frame (WebSocket) is decoded and answered by goim's
//! reply rules, and the replies are flushed once per read. Only a partial packet is kept per
//! connection, in `inbuf`.
//!
//! # Layout
//! - this file: the connection's state, registration, reading and TLS input.
//! - `decode`: turning bytes into packets (TCP) or frames and messages (WebSocket).
//! - `ops`: the per-op table: goim's reply rules, echo-and-forward, forward-and-answer.
//! - `rules`: what each rule does: auth, heartbeat, room change, echo, logic's answer.

use crate::accepts::Accepts;
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::outbound::{Full, OutQueue};
use crate::poller::Interest;
use crate::tls::TlsState;
use crate::worker::Worker;
use bytes::Bytes;
use starling_proto::grpc::logic::{ConnectReq, ReceiveReq};
use starling_proto::op::Codec;
use starling_proto::packet::{self, PacketError};
use starling_proto::ws::{self, Assembler, FrameError};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use tracing::{info, warn};

mod decode;
mod ops;
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
    /// Boxed: most connections are TCP.
    Ws(Box<WsState>),
    Tls(Box<TlsState>),
}

/// What a WebSocket connection (plain or TLS) keeps beyond a TCP one.
pub(crate) struct WsState {
    pub asm: Assembler,
    /// The upgrade request's `Cookie` header, handed to logic with the auth request (goim).
    pub cookie: Box<str>,
}

impl WsState {
    pub fn new() -> Self {
        WsState {
            asm: Assembler::new(packet::MAX_PACK),
            cookie: Box::default(),
        }
    }
}

impl Transport {
    pub fn ws_mut(&mut self) -> Option<&mut WsState> {
        match self {
            Transport::Tcp => None,
            Transport::Ws(ws) => Some(ws),
            Transport::Tls(tls) => Some(&mut tls.ws),
        }
    }
}

pub(crate) enum Phase {
    /// WebSocket: waiting for the upgrade request.
    Upgrading,
    /// Waiting for op 7; other ops are ignored (goim).
    Authing,
    /// op 7 handed to logic; nothing more is read until it answers.
    AuthPending,
    /// `im`: opted in at auth to forward-and-answer ops (`ConnectReply.im`), with the codec
    /// of comet's own error replies to them; `None` for a goim connection. (Kept in the
    /// phase, a byte either way, rather than in the session where it would cost 8 bytes.)
    Authed { im: Option<Codec> },
    /// Authed and opted in, and a forward-and-answer op is with logic: nothing more is read
    /// until logic answers or `protocol.answer_timeout` passes. (Its codec travels with the
    /// request, `Ask`: one variant with data keeps the phase one byte.)
    Answering,
}

impl Phase {
    /// Waiting for logic: input stays in the socket (or in `inbuf`) until it answers.
    pub fn paused(&self) -> bool {
        matches!(self, Phase::AuthPending | Phase::Answering)
    }
}

pub(crate) struct Session {
    pub key: std::sync::Arc<str>,
    pub mid: i64,
    /// Sorted ops accepted for key, mid and broadcast pushes.
    pub accepts: Accepts,
    pub room: Option<std::sync::Arc<str>>,
    pub room_slot: u32,
    /// Heartbeat deadline in ticks (logic's heartbeat × heartbeat_max).
    pub hb_ticks: u32,
    /// Tick after which the next client heartbeat also refreshes the session in logic.
    pub next_renew: u64,
}

pub(crate) struct Conn {
    /// Owns the socket: dropping the connection closes it.
    pub sock: OwnedFd,
    /// The client's address without its port: ip counts and logs need no more.
    pub peer: IpAddr,
    pub transport: Transport,
    pub phase: Phase,
    /// Inline, not boxed: nearly every connection has one, and a box costs an allocation.
    pub session: Option<Session>,
    /// Bytes of an incomplete packet or frame.
    #[allow(clippy::box_collection)] // a thin pointer: 8 bytes on every idle connection
    pub inbuf: Option<Box<Vec<u8>>>,
    pub out: OutQueue,
    /// The socket was full: output waits for the readiness set to report room.
    pub writing: bool,
    /// Listed in the worker's dirty list.
    pub dirty: bool,
    pub deadline: u64,
    /// Due tick of this connection's live wheel entry.
    pub scheduled: u64,
}

impl Conn {
    pub fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// What the connection waits for: input unless auth is pending, output while the
    /// socket is full.
    pub fn interest(&self) -> Interest {
        let reading = !self.phase.paused();
        match (reading, self.writing) {
            (true, false) => Interest::Read,
            (true, true) => Interest::ReadWrite,
            (false, true) => Interest::Write,
            (false, false) => Interest::Paused,
        }
    }

    pub fn accepts(&self, op: i32) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.accepts.contains(op))
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

/// What happens after a read.
pub(crate) enum Step {
    Continue,
    /// An auth packet arrived: ask logic, then go on.
    Auth {
        req: ConnectReq,
        ver: i16,
        seq: i32,
    },
    /// A forward-and-answer op arrived: ask logic, write its answer, then go on.
    Answer(Ask),
    Closed,
}

/// A forward-and-answer op on its way to logic, and what comet needs to answer it.
pub(crate) struct Ask {
    pub req: ReceiveReq,
    pub ver: i16,
    pub seq: i32,
    pub op: i32,
    pub codec: Codec,
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

/// Takes an accepted connection into the worker: its state into the slab, its socket into
/// the worker's readiness set. There is no task per connection.
pub(crate) fn serve(w: &Worker, sock: OwnedFd, peer: SocketAddr, kind: Kind) {
    let fd = sock.as_raw_fd();
    let Some(id) = w.register(sock, peer, kind) else {
        return;
    };
    if let Err(e) = w.poller.add(fd, id) {
        warn!(error = %e, "epoll registration failed");
        w.close(id, CloseReason::Io);
    }
}

impl Worker {
    fn register(&self, sock: OwnedFd, peer: SocketAddr, kind: Kind) -> Option<ConnId> {
        let transport = match kind {
            Kind::Tcp => Transport::Tcp,
            Kind::Ws => Transport::Ws(Box::new(WsState::new())),
            Kind::Wss => {
                let config = self.shared.tls.clone()?;
                match TlsState::new(config, WsState::new()) {
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
            sock,
            peer: peer.ip(),
            transport,
            phase: match kind {
                Kind::Tcp => Phase::Authing,
                _ => Phase::Upgrading,
            },
            session: None,
            inbuf: None,
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

    /// Input is ready: read and answer it; an auth packet pauses input until logic answers.
    pub(crate) fn on_input(self: &Rc<Self>, id: ConnId) {
        match self.on_readable(id) {
            Step::Auth { req, ver, seq } => {
                self.update_interest(id);
                let w = self.clone();
                monoio::spawn(async move {
                    if w.authenticate(id, req, ver, seq).await {
                        w.update_interest(id);
                    }
                });
            }
            Step::Answer(ask) => {
                self.update_interest(id);
                let w = self.clone();
                monoio::spawn(async move {
                    if w.answer(id, ask).await {
                        w.update_interest(id);
                    }
                });
            }
            Step::Continue | Step::Closed => {}
        }
    }

    /// Tells the readiness set what the connection now waits for.
    pub(crate) fn update_interest(&self, id: ConnId) {
        let conns = self.conns.borrow();
        if let Some(conn) = conns.get(id)
            && let Err(e) = self.poller.set(conn.fd(), id, conn.interest())
        {
            drop(conns);
            warn!(error = %e, "epoll update failed");
            self.close(id, CloseReason::Io);
        }
    }

    /// Reads what the socket has (a few buffers at most, for fairness) and handles it.
    fn on_readable(self: &Rc<Self>, id: ConnId) -> Step {
        let Some((fd, tls)) = self
            .conns
            .borrow()
            .get(id)
            .map(|c| (c.fd(), matches!(c.transport, Transport::Tls(_))))
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

#[cfg(test)]
mod tests {
    /// Memory per connection sizes a node: a connection is its slab entry, session inline.
    /// The bound catches a field that grows it by accident.
    #[test]
    fn connection_state_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 144, "Conn is {size} bytes");
    }
}
