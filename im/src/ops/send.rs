//! ops 20 (`IM_SEND`) and 26 (`IM_RECALL`) (reference im.md §5.3, §7.1, §13.3): the checks
//! of a send (ids, mentions, `p2p_policy`, blocks, mutes), the answer from the recent acks
//! before the rate limit, the write through the conversation's lane, and the ack.

use super::{Body, MAX_CLIENT_MSG_ID, client_msg_id_ok};
use crate::codec;
use crate::config::P2pPolicy;
use crate::devices::Device;
use crate::recent::Recent;
use crate::service::{Im, now_ms};
use crate::store::{AppendReq, Appended, ContactKind, Conv, RecallReq as StoreRecall, StoreError};
use starling_proto::im::v1::{ConvKind, MsgKind, RecallReq, SendAck, SendReq};
use starling_proto::op;
use std::sync::atomic::Ordering;

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

impl Im {
    /// op 20, counted by its ack's code and timed (see [`crate::stats::Stats::acked`]).
    pub(super) async fn send(&self, dev: &Device, body: &[u8]) -> Body {
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
    pub(super) async fn recall(&self, dev: &Device, body: &[u8]) -> Body {
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
}
