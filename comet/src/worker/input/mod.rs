//! What a connection's input means, a batch per readiness report: read into the worker's
//! scratch buffer, decoded in place (goim packets on TCP, frames then one packet per message
//! on WebSocket, TLS records first on WSS), each packet answered by the op table's rule.
//! Only a partial packet is kept per connection (`Conn::inbuf`); replies are flushed once per
//! read. Auth and forward-and-answer ops pause the connection's input until logic answers.
//!
//! # Layout
//! - this file: registration, reading, TLS input, and the tasks that wait on logic.
//! - `decode`: turning bytes into packets (TCP) or frames and messages (WebSocket).
//! - `ops`: the per-op table: goim's reply rules, echo-and-forward, forward-and-answer.
//! - `rules`: what each rule does: auth, heartbeat, room change, echo, logic's answer.

use super::Worker;
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::conn::{Conn, Kind, Phase, Transport, WsState};
use crate::outbound::OutQueue;
use crate::tls::TlsState;
use starling_proto::grpc::logic::{ConnectReq, ReceiveReq};
use starling_proto::op::Codec;
use starling_proto::packet::PacketError;
use starling_proto::ws::FrameError;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use tracing::{info, warn};

mod decode;
mod ops;
mod rules;

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

/// A packet's error as a close reason. A WebSocket message that is not exactly one packet
/// (`LengthMismatch`) is `bad_packet`, like any other data that is not a goim packet: its
/// Close frame says 1007, data inconsistent with the message's type (RFC 6455 §7.4.1).
fn packet_reason(e: PacketError) -> CloseReason {
    match e {
        PacketError::BodyTooLarge { .. } => CloseReason::PacketTooLarge,
        PacketError::ShortPackLen(_)
        | PacketError::HeaderLen(_)
        | PacketError::LengthMismatch { .. } => CloseReason::BadPacket,
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
        w.shared.limits.release(peer.ip());
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
            Kind::Tcp => Transport::tcp(),
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
            meter: crate::limits::Meter::default(),
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
    /// A socket found full starts its write deadline here.
    pub(crate) fn update_interest(&self, id: ConnId) {
        let mut conns = self.conns.borrow_mut();
        if let Some(conn) = conns.get_mut(id)
            && conn.writing
        {
            self.arm_write_deadline(conn, id);
        }
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
            let cap = self.bound();
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
