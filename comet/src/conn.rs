//! One client connection: its state in the worker's slab, and the reader task that serves it.
//!
//! The reader waits for readability, reads into the worker's scratch buffer, decodes every
//! whole packet (TCP) or frame (WebSocket), answers by goim's reply rules and flushes once per
//! read batch. Only a partial packet is kept per connection, in `inbuf`.

use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::outbound::{Full, OutQueue};
use crate::tls::TlsState;
use crate::worker::{Cmd, Worker};
use bytes::Bytes;
use monoio::net::TcpStream;
use starling_proto::grpc::logic::{
    ConnectReply, ConnectReq, DisconnectReq, HeartbeatReq, ReceiveReq,
};
use starling_proto::grpc::protocol::Proto;
use starling_proto::op;
use starling_proto::packet::{self, PacketError, PacketRef};
use starling_proto::ws::{self, Assembler, FrameError, Message};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tracing::{debug, info};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Ws,
    Wss,
}

pub(crate) enum Transport {
    Tcp,
    Ws(Assembler),
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

/// Serves one accepted connection until it closes.
pub(crate) async fn serve(w: Rc<Worker>, stream: TcpStream, peer: SocketAddr, kind: Kind) {
    let stream = Rc::new(stream);
    let Some(id) = w.register(stream.clone(), peer, kind) else {
        return;
    };
    loop {
        if stream.readable(false).await.is_err() {
            w.close(id, CloseReason::Io);
            return;
        }
        match w.on_readable(id) {
            Step::Continue => {}
            Step::Closed => return,
            Step::Auth { req, ver, seq } => {
                if !w.authenticate(id, req, ver, seq).await {
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
            Kind::Ws => Transport::Ws(Assembler::new(packet::MAX_PACK)),
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

    /// Handles plaintext bytes from the client, keeping an incomplete tail for next time.
    fn ingest(&self, id: ConnId, data: &mut [u8]) -> Result<Step, CloseReason> {
        let Some(mut buf) = self
            .conns
            .borrow_mut()
            .get_mut(id)
            .map(|c| std::mem::take(&mut c.inbuf))
        else {
            return Ok(Step::Closed);
        };
        let from_buf = !buf.is_empty();
        let input: &mut [u8] = if from_buf {
            buf.extend_from_slice(data);
            &mut buf
        } else {
            data
        };
        let (used, step) = self.process(id, input)?;
        let tail = if from_buf {
            buf.drain(..used);
            buf
        } else {
            input[used..].to_vec()
        };
        if let Some(conn) = self.conns.borrow_mut().get_mut(id) {
            conn.inbuf = tail;
        }
        Ok(step)
    }

    /// Decodes and handles what `input` holds; returns the bytes used.
    fn process(&self, id: ConnId, input: &mut [u8]) -> Result<(usize, Step), CloseReason> {
        let (is_ws, upgrading) = match self.conns.borrow().get(id) {
            Some(c) => (c.is_ws(), matches!(c.phase, Phase::Upgrading)),
            None => return Ok((0, Step::Closed)),
        };
        if !is_ws {
            let mut pos = 0;
            while pos < input.len() {
                let p = match packet::decode(&input[pos..], packet::MAX_BODY) {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "bad packet");
                        return Err(packet_reason(e));
                    }
                };
                pos += p.wire_len();
                match self.on_packet(id, p)? {
                    Step::Continue => {}
                    step => return Ok((pos, step)),
                }
            }
            return Ok((pos, Step::Continue));
        }
        let mut pos = 0;
        if upgrading {
            let Some(up) = ws::parse_upgrade(input).map_err(|e| {
                debug!(error = %e, "bad upgrade");
                self.reply(id, &ws::http_error(400, "Bad Request"), Wire::Http)
                    .ok();
                CloseReason::BadUpgrade
            })?
            else {
                return Ok((0, Step::Continue));
            };
            if up.path != "/sub" {
                debug!(path = %up.path, "upgrade on a path other than /sub");
                self.reply(id, &ws::http_error(404, "Not Found"), Wire::Http)
                    .ok();
                return Err(CloseReason::BadUpgrade);
            }
            self.reply(id, &ws::switching_protocols(&up.key), Wire::Http)?;
            if let Some(c) = self.conns.borrow_mut().get_mut(id) {
                c.phase = Phase::Authing { cookie: up.cookie };
            }
            pos = up.consumed;
        }
        let mut asm = match self.conns.borrow_mut().get_mut(id) {
            Some(c) => match &mut c.transport {
                Transport::Ws(a) => std::mem::replace(a, Assembler::new(packet::MAX_PACK)),
                Transport::Tls(t) => {
                    std::mem::replace(&mut t.asm, Assembler::new(packet::MAX_PACK))
                }
                Transport::Tcp => unreachable!("checked above"),
            },
            None => return Ok((0, Step::Closed)),
        };
        let result = self.process_frames(id, &mut input[pos..], &mut asm);
        asm.release();
        if let Some(c) = self.conns.borrow_mut().get_mut(id) {
            match &mut c.transport {
                Transport::Ws(a) => *a = asm,
                Transport::Tls(t) => t.asm = asm,
                Transport::Tcp => {}
            }
        }
        result.map(|(used, step)| (pos + used, step))
    }

    fn process_frames(
        &self,
        id: ConnId,
        input: &mut [u8],
        asm: &mut Assembler,
    ) -> Result<(usize, Step), CloseReason> {
        let mut pos = 0;
        loop {
            let head = match ws::decode_frame(&mut input[pos..], packet::MAX_PACK) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok((pos, Step::Continue)),
                Err(e) => {
                    debug!(error = %e, "bad websocket frame");
                    return Err(frame_reason(e));
                }
            };
            let payload = &input[pos + head.header_len..pos + head.frame_len()];
            pos += head.frame_len();
            let step = match asm.push(&head, payload).map_err(frame_reason)? {
                None | Some(Message::Pong) => Step::Continue,
                Some(Message::Ping(p)) => {
                    self.reply(id, p, Wire::Control(ws::Opcode::Pong))?;
                    Step::Continue
                }
                Some(Message::Close(p)) => {
                    let code = p.get(..2).unwrap_or(&[]);
                    self.reply(id, code, Wire::Control(ws::Opcode::Close)).ok();
                    return Err(CloseReason::ClientClosed);
                }
                Some(Message::Data(msg)) => {
                    let p = packet::decode_exact(msg, packet::MAX_BODY).map_err(|e| {
                        debug!(error = %e, "bad packet in websocket message");
                        packet_reason(e)
                    })?;
                    self.on_packet(id, p)?
                }
            };
            if !matches!(step, Step::Continue) {
                return Ok((pos, step));
            }
        }
    }

    /// Queues a reply; a full queue closes the connection.
    fn reply(&self, id: ConnId, bytes: &[u8], wire: Wire) -> Result<(), CloseReason> {
        let cap = self.shared.config.protocol.out_ring;
        match self.conns.borrow_mut().get_mut(id) {
            Some(c) => c
                .queue(cap, bytes, wire)
                .map_err(|_| CloseReason::SlowConsumer),
            None => Ok(()),
        }
    }

    fn reply_packet(
        &self,
        id: ConnId,
        ver: i16,
        op: i32,
        seq: i32,
        body: &[u8],
    ) -> Result<(), CloseReason> {
        let mut bytes = Vec::with_capacity(packet::HEADER_LEN + body.len());
        packet::encode(&mut bytes, ver, op, seq, body);
        self.reply(id, &bytes, Wire::Packet)
    }

    /// goim's reply rules for one client packet.
    fn on_packet(&self, id: ConnId, p: PacketRef<'_>) -> Result<Step, CloseReason> {
        let authed = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return Ok(Step::Closed);
            };
            match &mut conn.phase {
                Phase::Authed => true,
                Phase::Authing { cookie } if p.op == op::AUTH => {
                    let cookie = std::mem::take(cookie);
                    conn.phase = Phase::AuthPending;
                    return Ok(Step::Auth {
                        req: ConnectReq {
                            server: self.shared.server_id.clone(),
                            cookie,
                            token: p.body.to_vec(),
                        },
                        ver: p.ver,
                        seq: p.seq,
                    });
                }
                _ => false,
            }
        };
        if !authed {
            debug!(op = p.op, "op before auth ignored");
            return Ok(Step::Continue);
        }
        self.stats().packets_in.fetch_add(1, Relaxed);
        match p.op {
            op::HEARTBEAT => self.on_heartbeat(id, p.ver, p.seq)?,
            op::CHANGE_ROOM => {
                self.join_room(id, &String::from_utf8_lossy(p.body));
                self.reply_packet(id, p.ver, op::CHANGE_ROOM_REPLY, p.seq, p.body)?;
            }
            op::SUB | op::UNSUB => {
                if let Some(ops) = op::parse_op_list(p.body)
                    && let Some(sess) = self
                        .conns
                        .borrow_mut()
                        .get_mut(id)
                        .and_then(|c| c.session.as_mut())
                {
                    if p.op == op::SUB {
                        sess.accepts.extend(ops);
                        sess.accepts.sort_unstable();
                        sess.accepts.dedup();
                    } else {
                        sess.accepts.retain(|o| !ops.contains(o));
                    }
                }
                self.reply_packet(id, p.ver, p.op + 1, p.seq, p.body)?;
            }
            other => {
                let mid = self.session_of(id).map_or(0, |(mid, _)| mid);
                let fut = self.shared.logic.receive(ReceiveReq {
                    mid,
                    proto: Some(Proto {
                        ver: i32::from(p.ver),
                        op: other,
                        seq: p.seq,
                        body: p.body.to_vec(),
                    }),
                });
                monoio::spawn(async move {
                    if let Err(e) = fut.await {
                        debug!(error = %e, "logic receive failed");
                    }
                });
                self.reply_packet(id, p.ver, other, p.seq, &[])?;
            }
        }
        Ok(Step::Continue)
    }

    fn session_of(&self, id: ConnId) -> Option<(i64, std::sync::Arc<str>)> {
        let conns = self.conns.borrow();
        let s = conns.get(id)?.session.as_ref()?;
        Some((s.mid, s.key.clone()))
    }

    fn on_heartbeat(&self, id: ConnId, ver: i16, seq: i32) -> Result<(), CloseReason> {
        let now = self.clock.now();
        let (room, renew) = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return Ok(());
            };
            let Some(sess) = conn.session.as_mut() else {
                return Ok(());
            };
            let due = now + sess.hb_ticks;
            let room = sess.room.clone();
            let renew = if now >= sess.next_renew {
                sess.next_renew = now + self.renew_ticks();
                Some(HeartbeatReq {
                    mid: sess.mid,
                    key: sess.key.to_string(),
                    server: self.shared.server_id.clone(),
                })
            } else {
                None
            };
            self.set_deadline(conn, id, due);
            (room, renew)
        };
        if let Some(req) = renew {
            let fut = self.shared.logic.heartbeat(req);
            monoio::spawn(async move {
                if let Err(e) = fut.await {
                    debug!(error = %e, "logic heartbeat failed");
                }
            });
        }
        let online = room.map_or(0, |r| self.room_online(&r));
        self.reply(id, &packet::heartbeat_reply(ver, seq, online), Wire::Packet)
    }

    /// goim refreshes a session in logic every 10 to 30 minutes (random per connection).
    fn renew_ticks(&self) -> u64 {
        let min = self.clock.ticks(Duration::from_secs(600));
        min + self.rand_below(self.clock.ticks(Duration::from_secs(1200)))
    }

    /// Asks logic to admit the connection, then registers it under its key and room.
    async fn authenticate(
        self: &Rc<Self>,
        id: ConnId,
        req: ConnectReq,
        ver: i16,
        seq: i32,
    ) -> bool {
        let reply = match self.shared.logic.connect(req).await {
            Ok(r) => r,
            Err(e) => {
                info!(error = %e, "auth refused");
                self.close(id, CloseReason::AuthFailed);
                return false;
            }
        };
        if self.conns.borrow().get(id).is_none() {
            // Closed (timeout) while logic was answering: undo the session logic just made.
            let fut = self.shared.logic.disconnect(DisconnectReq {
                mid: reply.mid,
                key: reply.key,
                server: self.shared.server_id.clone(),
            });
            monoio::spawn(async move {
                let _ = fut.await;
            });
            return false;
        }
        self.admit(id, reply, ver, seq);
        // Whatever the client sent after its auth packet.
        match self.ingest(id, &mut []) {
            Ok(Step::Closed) => return false,
            Ok(_) => {}
            Err(reason) => {
                self.close(id, reason);
                return false;
            }
        }
        self.flush(id);
        self.conns.borrow().get(id).is_some()
    }

    fn admit(&self, id: ConnId, reply: ConnectReply, ver: i16, seq: i32) {
        let now = self.clock.now();
        let hb = match reply.heartbeat {
            n if n > 0 => Duration::from_nanos(n as u64),
            _ => Duration::from_secs(480),
        };
        let key: std::sync::Arc<str> = reply.key.as_str().into();
        let mut accepts = reply.accepts;
        accepts.sort_unstable();
        accepts.dedup();
        let peer = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return;
            };
            let hb_ticks = self.clock.ticks(hb);
            conn.session = Some(Box::new(Session {
                key: key.clone(),
                mid: reply.mid,
                accepts,
                room: None,
                room_slot: 0,
                hb_ticks,
                next_renew: now + self.renew_ticks(),
            }));
            conn.phase = Phase::Authed;
            self.set_deadline(conn, id, now + hb_ticks);
            conn.peer
        };
        // goim writes the auth reply before the connection joins its bucket and room.
        // The queue is empty right after auth, so this reply always fits.
        let _ = self.reply_packet(id, ver, op::AUTH_REPLY, seq, &[]);
        self.stats().sessions.fetch_add(1, Relaxed);
        self.shared.buckets.add_ip(peer.ip());
        self.join_room(id, &reply.room_id);
        if let Some(old) = self.shared.buckets.put(&key, self.conn_ref(id)) {
            if old.worker == self.id {
                self.close(old.id, CloseReason::Kicked);
            } else {
                self.send_to(old.worker, Cmd::Kick(old.id));
            }
        }
    }
}
