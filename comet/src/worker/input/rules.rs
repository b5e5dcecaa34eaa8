//! What each rule of the op table (`ops`) does for one packet (reference goim.md §1.2–1.3):
//! auth first, heartbeat with the room's online count, room change, accepted ops, goim's
//! echo-and-forward, and Starling's forward-and-answer.

use super::ops::{Rule, rule};
use super::{Ask, Step};
use crate::accepts::Accepts;
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::conn::{Conn, Phase, Session, Wire};
use crate::logic::LogicError;
use crate::worker::{Cmd, Worker};
use bytes::Bytes;
use starling_proto::grpc::logic::{ConnectReply, ConnectReq, DisconnectReq, HeartbeatReq};
use starling_proto::grpc::protocol::Proto;
use starling_proto::op::{self, Codec};
use starling_proto::packet::{self, PacketRef};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tracing::{debug, info, warn};

impl Worker {
    /// Queues a reply; a full queue closes the connection.
    pub(super) fn reply(&self, id: ConnId, bytes: &[u8], wire: Wire) -> Result<(), CloseReason> {
        let cap = self.bound();
        match self.conns.borrow_mut().get_mut(id) {
            Some(c) => c
                .queue(&self.out(), cap, bytes, wire)
                .map_err(|_| CloseReason::SlowConsumer),
            None => Ok(()),
        }
    }

    pub(super) fn reply_packet(
        &self,
        id: ConnId,
        ver: i16,
        op: i32,
        seq: i32,
        body: &[u8],
    ) -> Result<(), CloseReason> {
        match self.conns.borrow_mut().get_mut(id) {
            Some(c) => c.reply_packet(&self.out(), ver, op, seq, body),
            None => Ok(()),
        }
    }

    /// The op table's rule for one client packet. The connection is looked up once; only a
    /// room change, which touches other members, lets go of it.
    pub(super) fn on_packet(&self, id: ConnId, p: PacketRef<'_>) -> Result<Step, CloseReason> {
        let mut conns = self.conns.borrow_mut();
        let Some(conn) = conns.get_mut(id) else {
            return Ok(Step::Closed);
        };
        let im = match &mut conn.phase {
            Phase::Authed { im } => *im,
            Phase::Authing if p.op == op::AUTH => {
                let cookie = conn
                    .transport
                    .ws_mut()
                    .map(|ws| std::mem::take(&mut ws.cookie).into_string())
                    .unwrap_or_default();
                conn.phase = Phase::AuthPending;
                return Ok(Step::Auth {
                    req: ConnectReq {
                        server: self.shared.server_id.clone(),
                        cookie,
                        token: Bytes::copy_from_slice(p.body),
                        conn: self.conn_ref(id).label(),
                    },
                    ver: p.ver,
                    seq: p.seq,
                });
            }
            _ => {
                debug!(op = p.op, "op before auth ignored");
                return Ok(Step::Continue);
            }
        };
        if !self.meter(conn)? {
            // Over the rate: dropped; an answered op gets its answer, 429, so the client's
            // request does not hang (goim's ops have no error reply).
            if let Rule::ForwardAndAnswer(codec) = rule(p.op, im) {
                let body = codec.code_body(429);
                conn.reply_packet(&self.out(), p.ver, p.op + 1, p.seq, &body)?;
            }
            return Ok(Step::Continue);
        }
        self.stats().packets_in.fetch_add(1, Relaxed);
        match rule(p.op, im) {
            Rule::Heartbeat => self.on_heartbeat(conn, id, p.ver, p.seq)?,
            Rule::ChangeRoom => {
                drop(conns);
                self.join_room(id, &String::from_utf8_lossy(p.body));
                self.reply_packet(id, p.ver, op::CHANGE_ROOM_REPLY, p.seq, p.body)?;
            }
            Rule::Accepts => {
                conn.change_accepts(p.op == op::SUB, p.body);
                conn.reply_packet(&self.out(), p.ver, p.op + 1, p.seq, p.body)?;
            }
            Rule::EchoAndForward => {
                self.call_logic("receive", self.shared.logic.receive(conn.receive_req(&p)));
                conn.reply_packet(&self.out(), p.ver, p.op, p.seq, &[])?;
            }
            Rule::ServerOnly => {
                debug!(op = p.op, "server-only IM op from an IM connection");
                return Err(CloseReason::BadOp);
            }
            Rule::ForwardAndAnswer(codec) => {
                conn.phase = Phase::Answering;
                let mut req = conn.receive_req(&p);
                req.im = codec as i32;
                return Ok(Step::Answer(Ask {
                    req,
                    ver: p.ver,
                    seq: p.seq,
                    op: p.op,
                    codec,
                }));
            }
        }
        Ok(Step::Continue)
    }

    /// Asks logic to answer a forward-and-answer op, writes the answer (or comet's own 504 or
    /// 503 reply, op + 1, when logic is too slow or failed) with the request's `ver` and
    /// `seq`, and reads the connection's input again: packets the client pipelined behind the
    /// op are handled in order, the next forward-and-answer op waiting for its own answer.
    /// Returns whether the connection is still open.
    pub(super) async fn answer(self: &Rc<Self>, id: ConnId, mut ask: Ask) -> bool {
        let deadline = self.shared.config.protocol.answer_timeout;
        loop {
            let Ask {
                req,
                ver,
                seq,
                op,
                codec,
            } = ask;
            let call = self.shared.logic.receive(req);
            let replies = match monoio::time::timeout(deadline, call).await {
                Ok(Ok(replies)) => {
                    self.stats().answered.fetch_add(1, Relaxed);
                    replies
                }
                Ok(Err(LogicError::Timeout(e))) => {
                    self.stats().answer_timeouts.fetch_add(1, Relaxed);
                    info!(op, error = %e, "logic answered too late: 504");
                    vec![code_reply(op, codec, 504)]
                }
                Err(_) => {
                    self.stats().answer_timeouts.fetch_add(1, Relaxed);
                    info!(op, ?deadline, "logic did not answer in time: 504");
                    vec![code_reply(op, codec, 504)]
                }
                Ok(Err(e)) => {
                    self.stats().answer_failures.fetch_add(1, Relaxed);
                    warn!(op, error = %e, "logic failed to answer: 503");
                    vec![code_reply(op, codec, 503)]
                }
            };
            match self.conns.borrow_mut().get_mut(id) {
                // Kicked while logic was answering: the answer is dropped, the connection
                // closes once its kick packet is written.
                Some(c) if matches!(c.phase, Phase::Kicked) => return true,
                Some(c) => c.phase = Phase::Authed { im: Some(codec) },
                None => return false, // closed while logic was answering
            }
            for r in &replies {
                if let Err(reason) = self.reply_packet(id, ver, r.op, seq, &r.body) {
                    self.close(id, reason);
                    return false;
                }
            }
            match self.ingest(id, &mut []) {
                Ok(Step::Answer(next)) => {
                    self.flush(id);
                    ask = next;
                }
                Ok(Step::Closed) => return false,
                Ok(_) => break,
                Err(reason) => {
                    self.close(id, reason);
                    return false;
                }
            }
        }
        self.flush(id);
        self.conns.borrow().get(id).is_some()
    }

    /// goim's heartbeat: moves the deadline, now and then refreshes the session in logic,
    /// and replies op 3 with the room's online count.
    fn on_heartbeat(
        &self,
        conn: &mut Conn,
        id: ConnId,
        ver: i16,
        seq: i32,
    ) -> Result<(), CloseReason> {
        let now = self.clock.now();
        let Some(sess) = conn.session.as_mut() else {
            return Ok(());
        };
        let due = now + u64::from(sess.hb_ticks);
        let online = sess.room.as_ref().map_or(0, |r| self.room_online(r));
        if now >= sess.next_renew {
            sess.next_renew = now + self.renew_ticks();
            let im = match conn.phase {
                Phase::Authed { im: Some(codec) } => codec as i32,
                _ => 0,
            };
            let call = self.shared.logic.heartbeat(HeartbeatReq {
                mid: sess.mid,
                key: sess.key.to_string(),
                server: self.shared.server_id.clone(),
                conn: self.conn_ref(id).label(),
                im,
            });
            self.call_logic("heartbeat", call);
        }
        self.set_deadline(conn, id, due);
        let cap = self.bound();
        conn.queue(
            &self.out(),
            cap,
            &packet::heartbeat_reply(ver, seq, online),
            Wire::Packet,
        )
        .map_err(|_| CloseReason::SlowConsumer)
    }

    /// goim refreshes a session in logic every 10 to 30 minutes (random per connection).
    pub(super) fn renew_ticks(&self) -> u64 {
        let half = self.clock.ticks(self.shared.config.session_renew / 2);
        half + self.rand_below(half.max(1))
    }

    /// Asks logic to admit the connection, then registers it under its key and room.
    pub(super) async fn authenticate(
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
                conn: self.conn_ref(id).label(),
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

    pub(super) fn admit(&self, id: ConnId, reply: ConnectReply, ver: i16, seq: i32) {
        let now = self.clock.now();
        let hb = match reply.heartbeat {
            n if n > 0 => Duration::from_nanos(n as u64),
            _ => Duration::from_secs(480),
        };
        let key: std::sync::Arc<str> = reply.key.as_str().into();
        // An IM connection takes the IM pushes implicitly (`Conn::accepts`): kept out of the
        // set, which then stays inline for the usual few business ops.
        let im = Codec::from_im(reply.im);
        let accepts = Accepts::new(
            reply
                .accepts
                .iter()
                .copied()
                .filter(|o| im.is_none() || !op::im::PUSHES.contains(o)),
        );
        let peer = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return;
            };
            // A heartbeat deadline is minutes: far below u32::MAX ticks.
            let hb_ticks = self.clock.ticks(hb).min(u64::from(u32::MAX)) as u32;
            conn.session = Some(Session {
                key: key.clone(),
                mid: reply.mid,
                accepts,
                room: None,
                room_slot: 0,
                hb_ticks,
                next_renew: now + self.renew_ticks(),
            });
            conn.phase = Phase::Authed {
                im: Codec::from_im(reply.im),
            };
            if reply.max_body > 0 {
                conn.transport.set_max_pack(max_pack(reply.max_body, &key));
            }
            self.set_deadline(conn, id, now + u64::from(hb_ticks));
            conn.peer
        };
        // goim writes the auth reply before the connection joins its bucket and room. Its body
        // is logic's welcome (IM's `ImWelcome`, reference im.md §13.7), empty as goim's
        // unless logic set one. The queue is empty right after auth, so this reply always
        // fits.
        let _ = self.reply_packet(id, ver, op::AUTH_REPLY, seq, &reply.welcome);
        self.stats().sessions.fetch_add(1, Relaxed);
        self.shared.buckets.add_ip(peer);
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

/// The largest packet logic may allow a connection (`ConnectReply.max_body`).
const MAX_PACK_LIMIT: u32 = 1 << 20;

/// The connection's input limit for logic's `max_body` (> 0): the whole packet, header
/// included, on TCP; the message on WebSocket. Values comet cannot honour are brought within
/// [16 bytes (an empty packet), 1 MiB] and logged.
fn max_pack(max_body: i32, key: &str) -> u32 {
    let limit = (max_body as u32).clamp(packet::HEADER_LEN as u32, MAX_PACK_LIMIT);
    if limit != max_body as u32 {
        warn!(
            max_body,
            limit,
            key = ?key,
            "logic's max_body out of range: clamped"
        );
    }
    limit
}

/// comet's own reply to forward-and-answer `op`: op + 1 whose body holds only `code`
/// (written with the request's `ver` and `seq`).
fn code_reply(op: i32, codec: Codec, code: u32) -> Proto {
    Proto {
        op: op + 1,
        body: codec.code_body(code).into(),
        ..Proto::default()
    }
}
