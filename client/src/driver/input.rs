//! What the server sends on a live connection: replies (matched by header seq and op),
//! IM pushes and events, kicks, and goim pushes.

use super::conn::Conn;
use super::{Driver, Pending, SyncPass};
use crate::client::Event;
use crate::codec::{self, Codec};
use crate::state::SyncStep;
use starling_proto::im::v1::{Event as ImEvent, Kick, PullReply, Push, SyncReply, event};
use starling_proto::op;
use starling_proto::packet::Packet;
use tracing::{debug, warn};

impl Driver {
    pub(super) fn on_kick(&mut self, body: &[u8]) {
        let Some(c) = self.codec else { return };
        match codec::decode::<Kick>(c, body) {
            Ok(k) => {
                if (4000..5000).contains(&k.code) {
                    warn!(code = k.code, reason = %k.reason, "kicked: not reconnecting");
                    self.stop = Some(format!("kicked: {} {}", k.code, k.reason));
                }
                self.emit(Event::Kick(k));
            }
            Err(e) => warn!(error = %e, "undecodable kick"),
        }
    }

    pub(super) async fn on_packet(
        &mut self,
        conn: &mut Conn,
        p: Packet,
        sync: &mut Option<SyncPass>,
    ) -> Result<(), String> {
        // A reply: matched by header seq and op.
        if p.seq != 0
            && let Some((reply_op, _, _)) = conn.pending.get(&p.seq)
            && *reply_op == p.op
        {
            let (_, why, _) = conn.pending.remove(&p.seq).expect("pending");
            return self.on_reply(conn, p, why, sync).await;
        }
        let Some(c) = self.codec else {
            if p.op != op::HEARTBEAT_REPLY
                && !matches!(
                    p.op,
                    op::CHANGE_ROOM_REPLY | op::SUB_REPLY | op::UNSUB_REPLY
                )
            {
                self.emit(Event::Push(p));
            }
            return Ok(());
        };
        match p.op {
            op::im::MSG => match codec::decode::<Push>(c, &p.body) {
                Ok(mut push) => {
                    if !self.drop_seqs.is_empty() {
                        push.messages.retain(|m| !self.drop_seqs.remove(&m.seq));
                    }
                    let shown = self.state.on_push(push, std::time::Instant::now());
                    self.show(shown);
                    self.update_stats(|_| {});
                }
                Err(e) => warn!(error = %e, "undecodable IM push skipped (a sync heals it)"),
            },
            op::im::EVENT => match codec::decode::<ImEvent>(c, &p.body) {
                Ok(e) => self.emit(match event::Type::try_from(e.r#type) {
                    Ok(event::Type::Read | event::Type::Delivered) => Event::Receipt(e),
                    Ok(event::Type::Typing) => Event::Typing(e),
                    _ => Event::Notice(e),
                }),
                Err(e) => warn!(error = %e, "undecodable IM event skipped"),
            },
            op::im::KICK => self.on_kick(&p.body),
            op::HEARTBEAT_REPLY | op::CHANGE_ROOM_REPLY | op::SUB_REPLY | op::UNSUB_REPLY => {}
            o if (op::im::SEND..=op::im::KICK).contains(&o) => {
                debug!(
                    op = o,
                    seq = p.seq,
                    "IM packet matching no request: ignored"
                );
            }
            _ => self.emit(Event::Push(p)),
        }
        Ok(())
    }

    async fn on_reply(
        &mut self,
        _conn: &mut Conn,
        p: Packet,
        why: Pending,
        sync: &mut Option<SyncPass>,
    ) -> Result<(), String> {
        let c = self.codec.unwrap_or(Codec::Protobuf);
        let now = std::time::Instant::now();
        match why {
            Pending::Ignore => {}
            Pending::Call(r) => {
                let _ = r.send(Ok(p));
            }
            Pending::Mark(kind, conv, seq) => {
                if let Ok(r) = codec::decode::<starling_proto::im::v1::Result>(c, &p.body)
                    && r.code != 0
                {
                    warn!(code = r.code, ?kind, ?conv, seq, "mark refused");
                }
            }
            Pending::SyncPage => {
                let r: SyncReply =
                    codec::decode(c, &p.body).map_err(|e| format!("sync reply: {e}"))?;
                if r.code != 0 {
                    return Err(format!("sync answered {}", r.code));
                }
                let pass = sync.get_or_insert_with(SyncPass::default);
                pass.inflight = false;
                match self.state.on_sync_reply(&r) {
                    SyncStep::Reset(next) => {
                        self.emit(Event::Reset);
                        pass.pulls.clear();
                        pass.next = Some(next);
                    }
                    SyncStep::Page {
                        pulls,
                        released,
                        next,
                    } => {
                        self.show(released);
                        pass.pulls.extend(pulls);
                        pass.next = next;
                    }
                }
            }
            Pending::Pull { conv, in_sync } => {
                let r: PullReply =
                    codec::decode(c, &p.body).map_err(|e| format!("pull reply: {e}"))?;
                if in_sync && let Some(pass) = sync.as_mut() {
                    pass.inflight = false;
                }
                if r.code != 0 {
                    warn!(code = r.code, ?conv, "pull refused");
                    return Ok(());
                }
                let pulled = self.state.on_pull_reply(conv, &r, now);
                self.show(pulled.messages);
                self.update_stats(|_| {});
                if let Some(more) = pulled.more {
                    if in_sync && let Some(pass) = sync.as_mut() {
                        pass.pulls.push_front(more);
                    } else {
                        let body = codec::encode(c, &more);
                        _conn
                            .request(
                                op::im::PULL,
                                &body,
                                Pending::Pull {
                                    conv,
                                    in_sync: false,
                                },
                                self.cfg.reply_timeout,
                            )
                            .await?;
                    }
                }
            }
            Pending::Send(order) => self.on_send_ack(order, &p.body, now),
        }
        Ok(())
    }
}
