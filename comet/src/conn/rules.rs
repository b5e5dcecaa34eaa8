//! goim's reply rules for one packet (reference §1.2–1.3): auth first, heartbeat with the
//! room's online count, room change, echo ops, and everything else handed to logic.

use super::{Phase, Session, Step, Wire};
use crate::accepts::Accepts;
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::worker::{Cmd, Worker};
use starling_proto::grpc::logic::{
    ConnectReply, ConnectReq, DisconnectReq, HeartbeatReq, ReceiveReq,
};
use starling_proto::grpc::protocol::Proto;
use starling_proto::op;
use starling_proto::packet::{self, PacketRef};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tracing::{debug, info};

impl Worker {
    /// Queues a reply; a full queue closes the connection.
    pub(super) fn reply(&self, id: ConnId, bytes: &[u8], wire: Wire) -> Result<(), CloseReason> {
        let cap = self.shared.config.protocol.out_ring;
        match self.conns.borrow_mut().get_mut(id) {
            Some(c) => c
                .queue(cap, bytes, wire)
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
        let mut bytes = Vec::with_capacity(packet::HEADER_LEN + body.len());
        packet::encode(&mut bytes, ver, op, seq, body);
        self.reply(id, &bytes, Wire::Packet)
    }

    /// goim's reply rules for one client packet.
    pub(super) fn on_packet(&self, id: ConnId, p: PacketRef<'_>) -> Result<Step, CloseReason> {
        let authed = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return Ok(Step::Closed);
            };
            match &mut conn.phase {
                Phase::Authed => true,
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
                        sess.accepts.add(&ops);
                    } else {
                        sess.accepts.remove(&ops);
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

    pub(super) fn session_of(&self, id: ConnId) -> Option<(i64, std::sync::Arc<str>)> {
        let conns = self.conns.borrow();
        let s = conns.get(id)?.session.as_ref()?;
        Some((s.mid, s.key.clone()))
    }

    pub(super) fn on_heartbeat(&self, id: ConnId, ver: i16, seq: i32) -> Result<(), CloseReason> {
        let now = self.clock.now();
        let (room, renew) = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return Ok(());
            };
            let Some(sess) = conn.session.as_mut() else {
                return Ok(());
            };
            let due = now + u64::from(sess.hb_ticks);
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
        let accepts = Accepts::new(reply.accepts);
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
            conn.phase = Phase::Authed;
            self.set_deadline(conn, id, now + u64::from(hb_ticks));
            conn.peer
        };
        // goim writes the auth reply before the connection joins its bucket and room.
        // The queue is empty right after auth, so this reply always fits.
        let _ = self.reply_packet(id, ver, op::AUTH_REPLY, seq, &[]);
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
