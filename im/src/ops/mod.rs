//! The IM ops an opted-in connection sends (reference im.md §5.2): each decoded in the
//! connection's codec, answered with one reply (op + 1) that starts with `code`. A bad body is
//! answered 400 and the connection stays up.
//!
//! Layout: `send` (ops 20 and 26: sends and recalls, with their checks and acks); here, the
//! dispatch of every op and the rest (marks, typing, sync, pull, members).

mod send;

pub use send::MAX_MENTIONS;
pub(crate) use send::{check_mentions, content_hash};

use crate::codec;
use crate::devices::Device;
use crate::service::{Im, now_ms};
use crate::store::{Conv, MarkKind, StoreError};
use starling_logic::LogicError;
use starling_logic::receive::Handler;
use starling_logic::store::BoxFuture;
use starling_proto::grpc::logic::ReceiveReq;
use starling_proto::grpc::protocol::Proto;
use starling_proto::im::v1::{
    ConvKind, MarkReq, PullReq, Result as ImResult, SendAck, SyncReq, TypingReq, event,
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
