//! One client connection: its state in the worker's slab and what it does with its own
//! socket: queue replies and pushes, write them (one `send`/`sendmsg` for all that waits),
//! say what it waits for. It knows nothing of the worker: what it needs from it comes in an
//! [`Out`] (the queue bound, the counters, the list of connections to flush). What input
//! means (decoding, goim's reply rules, auth, logic's answers) is the worker's
//! (`worker::input`), since it touches rooms, keys and other connections.
//!
//! # Layout
//! - this file: the connection's state ([`Conn`], [`Phase`], [`Session`], [`Transport`]).
//! - `write`: queueing and writing output ([`Out`], [`Sent`]).

use crate::accepts::Accepts;
use crate::close::CloseReason;
use crate::outbound::{Bound, Full, OutQueue};
use crate::poller::Interest;
use crate::tls::TlsState;
pub(crate) use crate::websocket::WsState;
use bytes::Bytes;
use starling_proto::grpc::logic::ReceiveReq;
use starling_proto::grpc::protocol::Proto;
use starling_proto::op;
use starling_proto::op::Codec;
use starling_proto::packet::{self, PacketRef};
use starling_proto::ws;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

mod write;

pub(crate) use write::{MAX_IOV, Out, Sent};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
    Wss,
}

pub(crate) enum Transport {
    /// `max_pack`: the largest packet the client may send, header included (goim's
    /// [`packet::MAX_PACK`] until logic sets `ConnectReply.max_body`). Kept here because the
    /// enum's tag leaves a word half empty: the limit costs the connection nothing.
    Tcp {
        max_pack: u32,
    },
    /// Boxed: most connections are TCP. The limit is in [`WsState`].
    Ws(Box<WsState>),
    Tls(Box<TlsState>),
}

impl Transport {
    pub fn tcp() -> Self {
        Transport::Tcp {
            max_pack: packet::MAX_PACK as u32,
        }
    }

    pub fn ws_mut(&mut self) -> Option<&mut WsState> {
        match self {
            Transport::Tcp { .. } => None,
            Transport::Ws(ws) => Some(ws),
            Transport::Tls(tls) => Some(&mut tls.ws),
        }
    }

    /// The largest packet (TCP) or WebSocket message the client may send.
    pub fn max_pack(&self) -> usize {
        match self {
            Transport::Tcp { max_pack } => *max_pack as usize,
            Transport::Ws(ws) => ws.max_pack(),
            Transport::Tls(tls) => tls.ws.max_pack(),
        }
    }

    /// Sets the connection's input limit (after auth: `ConnectReply.max_body`).
    pub fn set_max_pack(&mut self, limit: u32) {
        match self {
            Transport::Tcp { max_pack } => *max_pack = limit,
            Transport::Ws(ws) => ws.set_max_pack(limit),
            Transport::Tls(tls) => tls.ws.set_max_pack(limit),
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
    /// Opted in and kicked by logic (a key push of op 45, reference im.md §7.6): the kick
    /// packet (and on WebSocket a close frame) is queued behind what was waiting; nothing
    /// more is read or queued, and the connection closes as `im_kick` once its queue is
    /// written, or at its deadline ([`KICK_GRACE`]) if the client does not read.
    Kicked,
}

/// How long a kicked connection has to take its kick packet before it is closed anyway.
pub(crate) const KICK_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Phase {
    /// Input stays in the socket (or in `inbuf`): waiting for logic, or kicked.
    pub fn paused(&self) -> bool {
        matches!(self, Phase::AuthPending | Phase::Answering | Phase::Kicked)
    }

    /// Opted in to IM at auth (`ConnectReply.im`), whether or not logic is answering it now.
    pub fn opted_in(&self) -> bool {
        matches!(
            self,
            Phase::Authed { im: Some(_) } | Phase::Answering | Phase::Kicked
        )
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
    /// Its packet rate so far (`limits.max_packets_per_sec`).
    pub meter: crate::limits::Meter,
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

    /// goim's ops 14 and 16: adds (`sub`) or removes the listed ops; a bad list is ignored
    /// whole, as goim does.
    pub fn change_accepts(&mut self, sub: bool, body: &[u8]) {
        if let Some(ops) = op::parse_op_list(body)
            && let Some(sess) = self.session.as_mut()
        {
            if sub {
                sess.accepts.add(&ops);
            } else {
                sess.accepts.remove(&ops);
            }
        }
    }

    /// goim's `Receive` request for one of this connection's packets, with its key.
    pub fn receive_req(&self, p: &PacketRef<'_>) -> ReceiveReq {
        let (mid, key) = self
            .session
            .as_ref()
            .map_or((0, String::new()), |s| (s.mid, s.key.to_string()));
        ReceiveReq {
            mid,
            key,
            // Set by the forward-and-answer path (the connection's IM codec).
            im: 0,
            proto: Some(Proto {
                ver: i32::from(p.ver),
                op: p.op,
                seq: p.seq,
                body: Bytes::copy_from_slice(p.body),
            }),
        }
    }

    /// Queues a reply packet; a full queue is a slow consumer.
    pub fn reply_packet(
        &mut self,
        out: &Out,
        ver: i16,
        op: i32,
        seq: i32,
        body: &[u8],
    ) -> Result<(), CloseReason> {
        let mut bytes = Vec::with_capacity(packet::HEADER_LEN + body.len());
        packet::encode(&mut bytes, ver, op, seq, body);
        self.queue(out, out.cap, &bytes, Wire::Packet)
            .map_err(|_| CloseReason::SlowConsumer)
    }

    /// Whether a key, mid or broadcast push of `op` is for this connection. A connection that
    /// opted in to IM takes the IM pushes (41, 43, 45) whatever its `accepts` say, so they
    /// need no room in its set (which keeps three ops inline, allocation-free).
    pub fn accepts(&self, op: i32) -> bool {
        if self.phase.opted_in() && op::im::PUSHES.contains(&op) {
            return true;
        }
        self.session
            .as_ref()
            .is_some_and(|s| s.accepts.contains(op))
    }

    pub fn is_ws(&self) -> bool {
        !matches!(self.transport, Transport::Tcp { .. })
    }

    /// A WebSocket that agreed to permessage-deflate.
    pub fn deflating(&self) -> bool {
        match &self.transport {
            Transport::Tcp { .. } => false,
            Transport::Ws(ws) => ws.deflate,
            Transport::Tls(tls) => tls.ws.deflate,
        }
    }

    /// Queues bytes for the client, framed as `wire` says for this transport, at most `cap`
    /// messages and bytes waiting. Once kicked, nothing more is queued. A packet of at least
    /// `deflate_min_size` bytes to a WebSocket that agreed to permessage-deflate goes
    /// compressed (counted in `out`); control frames never are (RFC 7692 §6.1).
    pub fn queue(&mut self, out: &Out, cap: Bound, bytes: &[u8], wire: Wire) -> Result<(), Full> {
        if matches!(self.phase, Phase::Kicked) {
            return Ok(());
        }
        let deflate = out.deflate.filter(|_| self.deflating());
        let wire = match (wire, self.is_ws(), deflate) {
            (Wire::Http, _, _) | (Wire::Packet, false, _) => bytes.to_vec(),
            (Wire::Packet, true, Some(d)) if bytes.len() >= d.min_size as usize => {
                match crate::deflate::frame(d.level, ws::Opcode::Binary, &[bytes]) {
                    Some((frame, len)) => {
                        out.tally_deflated(bytes.len(), len);
                        frame
                    }
                    None => ws::encode_frame(ws::Opcode::Binary, bytes),
                }
            }
            (Wire::Packet, true, _) => ws::encode_frame(ws::Opcode::Binary, bytes),
            (Wire::Control(opcode), _, _) => ws::encode_frame(opcode, bytes),
        };
        match &mut self.transport {
            Transport::Tls(tls) => tls.encrypt(&wire, &mut self.out, cap),
            Transport::Tcp { .. } | Transport::Ws(_) => self.out.push(cap, &[&Bytes::from(wire)]),
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

#[cfg(test)]
mod tests {
    /// Memory per connection sizes a node: a connection is its slab entry, session inline.
    /// The bound catches a field that grows it by accident. (144 bytes until the packet-rate
    /// meter, issue 15: its 8 bytes had no padding left to live in.)
    #[test]
    fn connection_state_stays_small() {
        let size = std::mem::size_of::<super::Conn>();
        assert!(size <= 152, "Conn is {size} bytes");
    }
}
