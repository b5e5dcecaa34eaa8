//! The outbox: sends and recalls kept under their `client_msg_id` until a final answer
//! (reference im.md §5.4 step 1), written when the connection is synced and their retry time
//! has come, resent on the next connection when one is lost.

use super::conn::Conn;
use super::{Driver, Pending};
use crate::client::SendError;
use crate::codec::{self, Codec};
use crate::send::{Verdict, verdict};
use starling_proto::im::v1::{Message, MsgKind, RecallReq, SendAck, SendReq};
use starling_proto::op;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, warn};

pub(crate) type SendReply = oneshot::Sender<Result<SendAck, SendError>>;

/// A request retried with the same client message id until a final answer.
pub(crate) enum Outgoing {
    Send(SendReq),
    Recall(RecallReq),
}

pub(super) struct OutSend {
    pub(super) req: Outgoing,
    pub(super) reply: Option<SendReply>,
    /// Not before this instant (after a 429/503/504).
    pub(super) not_before: Instant,
    pub(super) tries: u32,
    /// The header seq of the attempt in flight on the current connection.
    pub(super) inflight: Option<i32>,
}

impl Driver {
    pub(super) fn enqueue(&mut self, req: Outgoing, reply: SendReply) {
        self.next_order += 1;
        self.outbox.insert(
            self.next_order,
            OutSend {
                req,
                reply: Some(reply),
                not_before: Instant::now(),
                tries: 0,
                inflight: None,
            },
        );
    }

    /// Writes the sends that may go now (same client message id on every attempt).
    pub(super) async fn flush(&mut self, conn: &mut Conn) -> Result<(), String> {
        let Some(c) = self.codec else {
            for (_, s) in std::mem::take(&mut self.outbox) {
                if let Some(r) = s.reply {
                    let _ = r.send(Err(SendError::Refused(SendAck {
                        code: 401,
                        reason: "not an IM connection".into(),
                        ..Default::default()
                    })));
                }
            }
            return Ok(());
        };
        let now = Instant::now();
        let ready: Vec<u64> = self
            .outbox
            .iter()
            .filter(|(_, s)| s.inflight.is_none() && s.not_before <= now)
            .map(|(k, _)| *k)
            .collect();
        for order in ready {
            let s = self.outbox.get_mut(&order).expect("ready send");
            let (op, body) = match &s.req {
                Outgoing::Send(r) => (op::im::SEND, codec::encode(c, r)),
                Outgoing::Recall(r) => (op::im::RECALL, codec::encode(c, r)),
            };
            let len = starling_proto::packet::HEADER_LEN + body.len();
            if self.max_packet > 0 && len > self.max_packet {
                let s = self.outbox.remove(&order).expect("ready send");
                warn!(
                    len,
                    max = self.max_packet,
                    "send over the connection's limit: refused locally"
                );
                if let Some(r) = s.reply {
                    let _ = r.send(Err(SendError::TooLarge {
                        len,
                        max: self.max_packet,
                    }));
                }
                continue;
            }
            s.tries += 1;
            let seq = conn
                .request(op, &body, Pending::Send(order), self.cfg.reply_timeout)
                .await?;
            if let Some(s) = self.outbox.get_mut(&order) {
                s.inflight = Some(seq);
            }
        }
        Ok(())
    }

    /// The ack of a send or recall in flight: done, retried later, or refused.
    pub(super) fn on_send_ack(&mut self, order: u64, body: &[u8], now: std::time::Instant) {
        let c = self.codec.unwrap_or(Codec::Protobuf);
        let ack: SendAck = match codec::decode(c, body) {
            Ok(a) => a,
            Err(e) => {
                warn!(error = %e, "undecodable SendAck: retrying the same id");
                if let Some(s) = self.outbox.get_mut(&order) {
                    s.inflight = None;
                    s.not_before = Instant::now() + retry_delay(s.tries);
                }
                return;
            }
        };
        let Some(s) = self.outbox.get_mut(&order) else {
            return;
        };
        match verdict(&ack) {
            Verdict::Retry { after } => {
                s.inflight = None;
                s.not_before = Instant::now() + after.unwrap_or_else(|| retry_delay(s.tries));
                debug!(code = ack.code, "send: retrying the same id");
            }
            v => {
                let s = self.outbox.remove(&order).expect("send");
                if v == Verdict::Sent {
                    let own = own_message(self.cfg.identity.mid, &s.req, &ack);
                    let shown = self.state.accept(own, now);
                    self.show(shown);
                }
                if let Some(r) = s.reply {
                    let _ = r.send(if v == Verdict::Sent {
                        Ok(ack)
                    } else {
                        Err(SendError::Refused(ack))
                    });
                }
            }
        }
    }
}

/// Retry delay of a send without `retry_after_ms`: 100 ms doubling to 5 s.
fn retry_delay(tries: u32) -> Duration {
    Duration::from_millis(100u64 << tries.min(6)).min(Duration::from_secs(5))
}

/// The sender's own message, known from its ack: applied at its seq like a push.
fn own_message(mid: i64, req: &Outgoing, ack: &SendAck) -> Message {
    let mut m = Message {
        conv: ack.conv,
        seq: ack.seq,
        msg_id: ack.msg_id,
        sender: mid,
        client_msg_id: ack.client_msg_id.clone(),
        server_ts: ack.server_ts,
        ..Default::default()
    };
    match req {
        Outgoing::Send(r) => {
            m.conv = m.conv.or(r.conv);
            m.kind = MsgKind::Normal as i32;
            m.content_type = r.content_type;
            m.content = r.content.clone();
            m.mentions = r.mentions.clone();
            m.ref_seq = r.ref_seq;
            m.client_msg_id = r.client_msg_id.clone();
        }
        Outgoing::Recall(r) => {
            m.conv = m.conv.or(r.conv);
            m.kind = MsgKind::Recall as i32;
            m.ref_seq = r.seq;
            m.client_msg_id = r.client_msg_id.clone();
        }
    }
    m
}
