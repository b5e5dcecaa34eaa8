//! The IM ops an opted-in connection sends (reference im.md §5.2): each decoded in the
//! connection's codec, answered with one reply (op + 1) that starts with `code`. A bad body is
//! answered 400 and the connection stays up.

use crate::codec;
use crate::config::P2pPolicy;
use crate::devices::Device;
use crate::recent::Recent;
use crate::service::{Im, now_ms};
use crate::store::{
    AppendReq, Appended, ContactKind, Conv, MarkKind, RecallReq as StoreRecall, StoreError,
};
use starling_logic::LogicError;
use starling_logic::receive::Handler;
use starling_logic::store::BoxFuture;
use starling_proto::grpc::logic::ReceiveReq;
use starling_proto::grpc::protocol::Proto;
use starling_proto::im::v1::{
    ConvKind, MarkReq, MsgKind, PullReq, RecallReq, Result as ImResult, SendAck, SendReq, SyncReq,
    TypingReq, event,
};
use starling_proto::op::{self, Codec};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Longest `client_msg_id`, bytes (§5.3).
pub const MAX_CLIENT_MSG_ID: usize = 64;

/// A usable `client_msg_id`: 1..=[`MAX_CLIENT_MSG_ID`] bytes, no NUL (PostgreSQL's text cannot
/// hold one, so both stores refuse it alike).
pub fn client_msg_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_CLIENT_MSG_ID && !id.contains('\0')
}

pub struct OpHandler(pub Arc<Im>);

impl Handler for OpHandler {
    fn handle(&self, req: ReceiveReq) -> BoxFuture<'_, Result<Vec<Proto>, LogicError>> {
        Box::pin(async move {
            let Some(proto) = req.proto else {
                return Ok(Vec::new());
            };
            let found = match self.0.devices.get(req.mid, &req.key).await {
                Ok(found) => found,
                // The device table (Redis) is unreachable. What comet says of the connection
                // is enough to serve it: the store decides whether the op may be done, and a
                // send is stored, then answered 503 `stored=true` when its delivery cannot be
                // routed (design §7.2: "Redis down"). The platform is unknown meanwhile.
                Err(e) => match Codec::from_im(req.im) {
                    Some(codec) if req.mid > 0 && !req.key.is_empty() => {
                        tracing::warn!(mid = req.mid, key = %req.key, error = %e, "device table unreachable: serving from the request");
                        self.0
                            .stats
                            .device_fallbacks
                            .fetch_add(1, Ordering::Relaxed);
                        Some(Device {
                            mid: req.mid,
                            key: req.key.clone(),
                            platform: String::new(),
                            codec,
                            server: String::new(),
                            conn: String::new(),
                            since_ms: 0,
                        })
                    }
                    // An older comet that does not say the codec: nothing was stored yet, so
                    // comet's 503 (retry) is the whole answer.
                    _ => {
                        return Err(LogicError::Store(
                            starling_logic::store::StoreError::Unavailable(e.to_string()),
                        ));
                    }
                },
            };
            let Some(dev) = found else {
                // Kicked or gone while the request was in flight: comet answers 503 in the
                // connection's codec, and the client's next connect starts afresh.
                return Err(LogicError::BadToken("not an IM connection".into()));
            };
            let im = &self.0;
            let body = match proto.op {
                op::im::SEND => im.send(&dev, &proto.body).await,
                op::im::SYNC => im.sync(&dev, &proto.body).await,
                op::im::PULL => im.pull(&dev, &proto.body).await,
                op::im::RECALL => im.recall(&dev, &proto.body).await,
                op::im::READ => im.mark(&dev, &proto.body, MarkKind::Read).await,
                op::im::RECV => im.mark(&dev, &proto.body, MarkKind::Recv).await,
                op::im::TYPING => im.typing(&dev, &proto.body).await,
                op::im::MEMBERS => im.members_page(&dev, &proto.body).await,
                // Reserved (36-39) or not a request: one reply per request all the same.
                other => im.bad(other, dev.codec, format!("op {other} is not an IM request")),
            };
            Ok(vec![Proto {
                op: proto.op + 1,
                body,
                ..Proto::default()
            }])
        })
    }
}

/// Most mentions in one message.
pub const MAX_MENTIONS: usize = 1000;

/// Mentions name users: at most [`MAX_MENTIONS`], each a positive mid.
pub(crate) fn check_mentions(mentions: &[i64]) -> Result<(), String> {
    if mentions.len() > MAX_MENTIONS {
        return Err(format!("at most {MAX_MENTIONS} mentions"));
    }
    if mentions.iter().any(|m| *m <= 0) {
        return Err("mentions must be positive user ids".into());
    }
    Ok(())
}

/// An answer body: a reply message in the connection's codec.
type Body = bytes::Bytes;

fn result(codec: Codec, code: i32, reason: impl Into<String>) -> Body {
    codec::encode(
        codec,
        &ImResult {
            code,
            reason: reason.into(),
            retry_after_ms: 0,
        },
    )
}

/// A stable hash of what makes two sends the same send (CityHash64: the same across builds
/// and restarts, as the stored dedup entries need).
pub(crate) fn content_hash(req: &SendReq) -> u64 {
    let mut b = Vec::with_capacity(req.content.len() + 64);
    if let Some(c) = &req.conv {
        b.extend_from_slice(&c.kind.to_be_bytes());
        b.extend_from_slice(&c.id.to_be_bytes());
    }
    b.extend_from_slice(&req.content_type.to_be_bytes());
    b.extend_from_slice(&req.ref_seq.to_be_bytes());
    for m in &req.mentions {
        b.extend_from_slice(&m.to_be_bytes());
    }
    b.extend_from_slice(req.content.as_bytes());
    cityhasher::hash::<u64>(&b)
}

fn ack_from(req_id: &str, conv: Conv, viewer: i64, a: &Appended) -> SendAck {
    SendAck {
        code: 0,
        client_msg_id: req_id.to_string(),
        conv: Some(conv.view(viewer)),
        seq: a.message.seq,
        msg_id: a.message.msg_id,
        server_ts: a.message.server_ts,
        duplicate: a.duplicate,
        stored: true,
        ..SendAck::default()
    }
}

/// An error answer to request `op` in that op's own reply message (`SendAck`, `SyncReply`,
/// `PullReply`, `MembersReply` or `Result`), so a client decodes it as any reply of the op:
/// every reply starts with `code` (reference im.md §5.2), and `reason` goes where the reply
/// has one.
pub(crate) fn error_reply(op: i32, codec: Codec, code: i32, reason: impl Into<String>) -> Body {
    use starling_proto::im::v1::{MembersReply, PullReply, SyncReply};
    let reason = reason.into();
    match op {
        op::im::SEND | op::im::RECALL => codec::encode(
            codec,
            &SendAck {
                code,
                reason,
                ..SendAck::default()
            },
        ),
        op::im::SYNC => codec::encode(
            codec,
            &SyncReply {
                code,
                ..SyncReply::default()
            },
        ),
        op::im::PULL => codec::encode(
            codec,
            &PullReply {
                code,
                ..PullReply::default()
            },
        ),
        op::im::MEMBERS => codec::encode(
            codec,
            &MembersReply {
                code,
                ..MembersReply::default()
            },
        ),
        _ => result(codec, code, reason),
    }
}

impl Im {
    /// The `retry_after_ms` of a send or recall the store refused with `e`: 100 ms when it is
    /// unavailable, `im.overload_retry_after` when it is overloaded (counted), else none.
    pub(crate) fn retry_after_ms(&self, e: &StoreError) -> u32 {
        match e {
            StoreError::Overloaded(_) => {
                self.stats.overloaded.fetch_add(1, Ordering::Relaxed);
                self.config
                    .overload_retry_after
                    .as_millis()
                    .min(u128::from(u32::MAX)) as u32
            }
            e if e.code() == 503 => 100,
            _ => 0,
        }
    }

    /// A 400 answer to `op`, counted.
    pub(crate) fn bad(&self, op: i32, codec: Codec, why: impl Into<String>) -> Body {
        self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
        error_reply(op, codec, 400, why)
    }

    /// op 20, counted by its ack's code and timed (see [`crate::stats::Stats::acked`]).
    async fn send(&self, dev: &Device, body: &[u8]) -> Body {
        let start = std::time::Instant::now();
        let (code, body) = self.send_coded(dev, body).await;
        self.stats.acked(code, start);
        body
    }

    /// op 20: stores a message and hands it to delivery, then acks (§7.1); with the code.
    async fn send_coded(&self, dev: &Device, body: &[u8]) -> (i32, Body) {
        let c = dev.codec;
        let nack = |code: i32, reason: String, id: &str, retry: u32| {
            let body = codec::encode(
                c,
                &SendAck {
                    code,
                    client_msg_id: id.to_string(),
                    reason,
                    retry_after_ms: retry,
                    ..SendAck::default()
                },
            );
            (code, body)
        };
        let req: SendReq = match codec::decode(c, body) {
            Ok(r) => r,
            Err(e) => return (400, self.bad(op::im::SEND, c, e.to_string())),
        };
        let id = req.client_msg_id.clone();
        if !client_msg_id_ok(&id) {
            self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return nack(
                400,
                format!("client_msg_id must be 1..={MAX_CLIENT_MSG_ID} bytes, no NUL"),
                &id,
                0,
            );
        }
        let Some(conv) = req.conv.as_ref().and_then(|r| Conv::from_ref(dev.mid, r)) else {
            self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return nack(
                400,
                "conv must be a P2P peer (not yourself) or a group".into(),
                &id,
                0,
            );
        };
        if conv.kind == ConvKind::Notice {
            return nack(403, "notices are sent by the system".into(), &id, 0);
        }
        if let Err(why) = check_mentions(&req.mentions) {
            self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return nack(400, why, &id, 0);
        }
        if req.content.len() > self.config.max_content as usize {
            return nack(
                413,
                format!("content over {} bytes", self.config.max_content),
                &id,
                0,
            );
        }
        let hash = content_hash(&req);
        // A retry of a send already acknowledged (its ack came after comet's deadline):
        // answered at once, without the rate limit, the store or a second delivery.
        if let Some(held) = self
            .recent
            .as_ref()
            .and_then(|r| r.get(conv, dev.mid, &id, hash))
        {
            return match held {
                Recent::Acked(a) => {
                    self.stats.recent_hits.fetch_add(1, Ordering::Relaxed);
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    (0, codec::encode(c, &ack_from(&id, conv, dev.mid, &a)))
                }
                Recent::Conflict => {
                    let e = crate::recent::conflict();
                    nack(e.code(), e.to_string(), &id, 0)
                }
            };
        }
        if let Some(wait) = self.spend_send_token(&dev.key) {
            self.rate_refused(dev, wait).await;
            return nack(429, "send rate exceeded".into(), &id, wait);
        }
        if let Err(e) = self.may_send(dev.mid, conv).await {
            return nack(e.code(), e.to_string(), &id, 0);
        }
        let append = AppendReq {
            conv,
            sender: dev.mid,
            sender_platform: dev.platform.clone(),
            client_msg_id: id.clone(),
            content_hash: hash,
            kind: MsgKind::Normal,
            content_type: req.content_type,
            content: req.content,
            mentions: req.mentions,
            ref_seq: req.ref_seq,
            as_admin: false,
        };
        let landed = self.send_in_lane(dev.key.clone(), append).await;
        let a = match landed.result {
            Ok(a) => a,
            Err(e) => {
                let retry = self.retry_after_ms(&e);
                return nack(e.code(), e.to_string(), &id, retry);
            }
        };
        let mut ack = ack_from(&id, conv, dev.mid, &a);
        if a.duplicate {
            self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.sent.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = landed.delivered {
            // Stored, not handed to delivery: the client retries the same id, which re-publishes.
            self.stats.delivery_failures.fetch_add(1, Ordering::Relaxed);
            ack.code = 503;
            ack.retry_after_ms = 100;
            ack.reason = e.to_string();
        }
        (ack.code, codec::encode(c, &ack))
    }

    /// Rules of a send that need no atomicity with the write: blocks, `p2p_policy`, mutes.
    pub(crate) async fn may_send(&self, uid: i64, conv: Conv) -> Result<(), StoreError> {
        match conv.kind {
            ConvKind::P2p => {
                let peer = conv.peer_of(uid).unwrap_or(0);
                let contact = self.store.contact(peer, uid).await?;
                let kind = contact.and_then(|c| c.state).map(|s| s.kind);
                if kind == Some(ContactKind::Blocked) {
                    return Err(StoreError::Forbidden("blocked by the recipient".into()));
                }
                if self.config.p2p_policy == P2pPolicy::Friends && kind != Some(ContactKind::Friend)
                {
                    return Err(StoreError::Forbidden(
                        "the recipient accepts friends only".into(),
                    ));
                }
                Ok(())
            }
            ConvKind::Group => {
                let Some(g) = self.store.group(conv.a).await? else {
                    return Err(StoreError::NotFound(format!("group {}", conv.a)));
                };
                let m = self.store.member(conv, uid).await?;
                let role = m.as_ref().map_or(0, |m| m.role);
                if g.muted && role == 0 {
                    return Err(StoreError::Forbidden("the group is muted".into()));
                }
                if m.is_some_and(|m| m.muted_until_ms > now_ms()) {
                    return Err(StoreError::Forbidden("you are muted in this group".into()));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// op 26: recalls a message (§6.1, §13.3); answered with the recall event's SendAck.
    async fn recall(&self, dev: &Device, body: &[u8]) -> Body {
        let c = dev.codec;
        let req: RecallReq = match codec::decode(c, body) {
            Ok(r) => r,
            Err(e) => return self.bad(op::im::RECALL, c, e.to_string()),
        };
        let nack = |code: i32, reason: String, retry: u32| {
            codec::encode(
                c,
                &SendAck {
                    code,
                    client_msg_id: req.client_msg_id.clone(),
                    reason,
                    retry_after_ms: retry,
                    ..SendAck::default()
                },
            )
        };
        if !client_msg_id_ok(&req.client_msg_id) || req.seq == 0 {
            self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return nack(400, "a recall needs client_msg_id and seq".into(), 0);
        }
        let Some(conv) = req.conv.as_ref().and_then(|r| Conv::from_ref(dev.mid, r)) else {
            self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
            return nack(400, "bad conv".into(), 0);
        };
        if let Some(wait) = self.spend_send_token(&dev.key) {
            self.rate_refused(dev, wait).await;
            return nack(429, "send rate exceeded".into(), wait);
        }
        let recall = StoreRecall {
            conv,
            seq: req.seq,
            by: dev.mid,
            by_platform: dev.platform.clone(),
            client_msg_id: req.client_msg_id.clone(),
            as_admin: false,
            window_ms: self.config.recall_window.as_millis() as u64,
            wipe: self.config.recall_wipe,
        };
        let landed = self.recall_in_lane(Some(dev.key.clone()), recall).await;
        match landed.result {
            Ok(a) => {
                let mut ack = ack_from(&req.client_msg_id, conv, dev.mid, &a);
                if let Err(e) = landed.delivered {
                    ack.code = 503;
                    ack.retry_after_ms = 100;
                    ack.reason = e.to_string();
                }
                codec::encode(c, &ack)
            }
            Err(e) => {
                let retry = self.retry_after_ms(&e);
                nack(e.code(), e.to_string(), retry)
            }
        }
    }

    /// ops 28 and 30: raises the read or delivered mark; events to the user's other devices
    /// and, in P2P, to the peer (§7.5).
    async fn mark(&self, dev: &Device, body: &[u8], kind: MarkKind) -> Body {
        let c = dev.codec;
        let req: MarkReq = match codec::decode(c, body) {
            Ok(r) => r,
            Err(e) => return self.bad(op::im::READ, c, e.to_string()),
        };
        let Some(conv) = req.conv.as_ref().and_then(|r| Conv::from_ref(dev.mid, r)) else {
            return self.bad(op::im::READ, c, "bad conv");
        };
        let marked = match self.store.mark(dev.mid, conv, kind, req.seq).await {
            Ok(m) => m,
            Err(e) => return result(c, e.code(), e.to_string()),
        };
        if marked.moved {
            self.mark_events(dev.mid, &dev.key, conv, kind, marked.seq)
                .await;
        }
        result(c, 0, "")
    }

    /// The events of a moved mark (§7.5): READ to the user's other devices (badge sync), and
    /// READ or DELIVERED to the P2P peer, or to a small group's members when
    /// `group_read_receipts_max` allows. `except_key`: the connection that marked (none: "").
    pub(crate) async fn mark_events(
        &self,
        uid: i64,
        except_key: &str,
        conv: Conv,
        kind: MarkKind,
        seq: u64,
    ) {
        let ty = match kind {
            MarkKind::Read => event::Type::Read,
            _ => event::Type::Delivered,
        };
        let mut uids = Vec::new();
        if kind == MarkKind::Read {
            uids.push(uid); // the user's other devices: badge sync
        }
        match conv.kind {
            ConvKind::P2p => uids.extend(conv.peer_of(uid)),
            ConvKind::Group
                if kind == MarkKind::Read && self.config.group_read_receipts_max > 0 =>
            {
                if let Ok(Some(g)) = self.store.group(conv.a).await
                    && g.member_count <= self.config.group_read_receipts_max
                    && let Ok(ms) = self.store.members(conv, 0, usize::MAX, true).await
                {
                    uids.extend(ms.iter().map(|m| m.uid).filter(|u| *u != uid));
                }
            }
            _ => {}
        }
        let ts = now_ms();
        let pk = conv.partition_key();
        if let Err(e) = self
            .delivery
            .event(&uids, except_key, pk, |viewer| {
                starling_proto::im::v1::Event {
                    r#type: ty as i32,
                    conv: Some(conv.view(viewer)),
                    uid,
                    seq,
                    ts,
                    ..Default::default()
                }
            })
            .await
        {
            tracing::debug!(error = %e, "mark event not handed over");
        }
    }

    /// op 32: typing, not stored, one per 3 s per user and conversation (§7.5).
    async fn typing(&self, dev: &Device, body: &[u8]) -> Body {
        let c = dev.codec;
        let req: TypingReq = match codec::decode(c, body) {
            Ok(r) => r,
            Err(e) => return self.bad(op::im::TYPING, c, e.to_string()),
        };
        let Some(conv) = req.conv.as_ref().and_then(|r| Conv::from_ref(dev.mid, r)) else {
            return self.bad(op::im::TYPING, c, "bad conv");
        };
        // A blocked sender (or a stranger under `p2p_policy = "friends"`) may not send a
        // typing indicator either.
        if conv.kind == ConvKind::P2p
            && let Err(e) = self.may_send(dev.mid, conv).await
        {
            return result(c, e.code(), e.to_string());
        }
        if let Some(wait) = self.spend_typing_token(dev.mid, conv) {
            return codec::encode(
                c,
                &ImResult {
                    code: 429,
                    reason: "typing rate exceeded".into(),
                    retry_after_ms: wait,
                },
            );
        }
        let uids: Vec<i64> = match conv.kind {
            ConvKind::P2p => conv.peer_of(dev.mid).into_iter().collect(),
            ConvKind::Group => {
                match self.store.member(conv, dev.mid).await {
                    Ok(Some(m)) if m.is_current() => {}
                    Ok(_) => return result(c, 403, "not a member"),
                    Err(e) => return result(c, e.code(), e.to_string()),
                }
                match self.store.group(conv.a).await {
                    Ok(Some(g)) if g.member_count <= self.config.typing_max_members => {
                        match self.store.members(conv, 0, usize::MAX, true).await {
                            Ok(ms) => ms.iter().map(|m| m.uid).filter(|u| *u != dev.mid).collect(),
                            Err(e) => return result(c, e.code(), e.to_string()),
                        }
                    }
                    Ok(Some(_)) => Vec::new(),
                    Ok(None) => return result(c, 404, "no such group"),
                    Err(e) => return result(c, e.code(), e.to_string()),
                }
            }
            _ => Vec::new(),
        };
        let (uid, typing, platform, ts) = (dev.mid, req.typing, dev.platform.clone(), now_ms());
        let _ = self
            .delivery
            .event(&uids, &dev.key, conv.partition_key(), |viewer| {
                starling_proto::im::v1::Event {
                    r#type: event::Type::Typing as i32,
                    conv: Some(conv.view(viewer)),
                    uid,
                    ts,
                    platform: platform.clone(),
                    typing,
                    ..Default::default()
                }
            })
            .await;
        result(c, 0, "")
    }

    async fn sync(&self, dev: &Device, body: &[u8]) -> Body {
        let req: SyncReq = match codec::decode(dev.codec, body) {
            Ok(r) => r,
            Err(e) => return self.bad(op::im::SYNC, dev.codec, e.to_string()),
        };
        crate::read::sync(self, dev, req).await
    }

    async fn pull(&self, dev: &Device, body: &[u8]) -> Body {
        let req: PullReq = match codec::decode(dev.codec, body) {
            Ok(r) => r,
            Err(e) => return self.bad(op::im::PULL, dev.codec, e.to_string()),
        };
        crate::read::pull(self, dev, req).await
    }

    async fn members_page(&self, dev: &Device, body: &[u8]) -> Body {
        let req = match codec::decode(dev.codec, body) {
            Ok(r) => r,
            Err(e) => return self.bad(op::im::MEMBERS, dev.codec, e.to_string()),
        };
        crate::read::members(self, dev, req).await
    }
}
