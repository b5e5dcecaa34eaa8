//! `/im/v1` message routes (reference im.md §8 "messages"): sends and recalls through the
//! conversation's lane, the same path as a client's op 20 / op 26 (so a conversation's
//! messages are delivered in seq order whoever wrote them), and history pages.
//!
//! [`send_message`], [`recall_message`] and [`history_page`] are the operations; the HTTP
//! handlers here and the gRPC service ([`super::grpc`]) decode, call them and encode.

use super::{ApiError, ApiResult, Body, ConvIn, I64, Kind, P, Q, St, U64, canonical, ok};
use crate::lane::Landed;
use crate::ops::{MAX_CLIENT_MSG_ID, client_msg_id_ok, content_hash};
use crate::read::{PULL_LIMIT_DEFAULT, page};
use crate::service::Im;
use crate::store::{AppendReq, Appended, Conv, RecallReq, StoreError};
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};
use starling_proto::im::v1::{ConvKind, MsgKind, PullReq, SendReq, pull_req::Direction};
use std::sync::atomic::Ordering;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendIn {
    /// The sender; 0 = the system.
    #[serde(default)]
    from: I64,
    conv: ConvIn,
    /// NOTICE: the user it goes to.
    #[serde(default)]
    to: I64,
    client_msg_id: String,
    #[serde(default)]
    content_type: i32,
    #[serde(default)]
    content: String,
    #[serde(default)]
    mentions: Vec<I64>,
    #[serde(default)]
    ref_seq: U64,
    /// `NORMAL` (default) or `SYSTEM`.
    kind: Option<String>,
}

/// A message to send through the management API (the body of `POST /im/v1/messages`).
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The sender; 0 = the system.
    pub from: i64,
    pub conv: ConvIn,
    /// NOTICE: the user it goes to.
    pub to: i64,
    pub client_msg_id: String,
    pub content_type: i32,
    pub content: String,
    pub mentions: Vec<i64>,
    pub ref_seq: u64,
    /// NORMAL (UNSPECIFIED counts as NORMAL) or SYSTEM.
    pub kind: MsgKind,
}

/// A send or recall that was stored.
#[derive(Debug, Clone)]
pub struct Sent {
    pub appended: Appended,
    /// Stored but not handed to delivery (why): the reply is 503 with the ack, and a retry
    /// with the same client message id re-publishes.
    pub undelivered: Option<String>,
}

/// `{seq, msgId, serverTs, duplicate, stored}` of a stored send or recall.
fn ack(a: &Appended) -> Value {
    json!({
        "seq": a.message.seq.to_string(),
        "msgId": a.message.msg_id.to_string(),
        "serverTs": a.message.server_ts.to_string(),
        "duplicate": a.duplicate,
        "stored": true,
    })
}

/// A lane write's outcome, counted in the IM stats.
fn landed(im: &Im, l: Landed<Appended>) -> Result<Sent, ApiError> {
    let a = l.result?;
    if a.duplicate {
        im.stats.duplicates.fetch_add(1, Ordering::Relaxed);
    } else {
        im.stats.sent.fetch_add(1, Ordering::Relaxed);
    }
    let undelivered = l.delivered.err().map(|e| {
        im.stats.delivery_failures.fetch_add(1, Ordering::Relaxed);
        format!("stored, not handed to delivery: {e}")
    });
    Ok(Sent {
        appended: a,
        undelivered,
    })
}

/// The HTTP reply of a stored write: the ack, or 503 with the ack (`stored: true`) in
/// `data` when not handed to delivery.
fn reply(s: Sent) -> ApiResult {
    match s.undelivered {
        Some(message) => Err(ApiError {
            code: 503,
            message,
            data: Some(ack(&s.appended)),
        }),
        None => ok(ack(&s.appended)),
    }
}

/// `POST /im/v1/messages {from, conv: {kind, id}, to?, clientMsgId, contentType, content,
/// mentions?, refSeq?, kind?}` → `{seq, msgId, serverTs, duplicate, stored}`.
/// - `from` 0 is the system: it may write to any group and any user's NOTICE (as an admin
///   send); a user `from` sends as that user, under the rules of a client send (membership,
///   blocks, `p2p_policy`, mutes) except the rate limit.
/// - `conv` as `from` names it (P2P: the peer's uid; GROUP: the gid), or `{kind, a, b}`;
///   a NOTICE goes to `to`.
/// - `clientMsgId` (1..=64 bytes) is required: a retry with the same id and content answers
///   the original with `duplicate: true`; the same id with other content is 409.
/// - 413 over `im.max_content`; 503 with `stored: true` in `data` when stored but not handed
///   to delivery.
pub async fn send(State(api): State<St>, Body(req): Body<SendIn>) -> ApiResult {
    let kind = match req.kind.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("NORMAL") => MsgKind::Normal,
        Some("SYSTEM") => MsgKind::System,
        Some(k) => return Err(ApiError::bad(format!("kind {k:?}: NORMAL or SYSTEM"))),
    };
    let out = Outgoing {
        from: req.from.0,
        conv: req.conv,
        to: req.to.0,
        client_msg_id: req.client_msg_id,
        content_type: req.content_type,
        content: req.content,
        mentions: req.mentions.iter().map(|m| m.0).collect(),
        ref_seq: req.ref_seq.0,
        kind,
    };
    reply(send_message(&api.im, out).await?)
}

/// Sends `req` through its conversation's lane (the rules are those of [`send`]'s doc);
/// returns the stored message, the original one with `duplicate` on a retry. Errors: 400
/// (from, clientMsgId, conv, kind, mentions), 403/404 the sender's rights, 409 the id reused
/// with other content, 413 content over `im.max_content`, 503 the store.
pub async fn send_message(im: &Im, req: Outgoing) -> Result<Sent, ApiError> {
    let from = req.from;
    if from < 0 {
        return Err(ApiError::bad("from: a uid, or 0 for the system"));
    }
    let id = req.client_msg_id;
    if !client_msg_id_ok(&id) {
        return Err(ApiError::bad(format!(
            "clientMsgId must be 1..={MAX_CLIENT_MSG_ID} bytes, no NUL"
        )));
    }
    let conv = req.conv.resolve(from, req.to)?;
    if req.content.len() > im.config.max_content as usize {
        return Err(ApiError::new(
            413,
            format!("content over {} bytes", im.config.max_content),
        ));
    }
    let kind = match req.kind {
        MsgKind::Unspecified | MsgKind::Normal => MsgKind::Normal,
        MsgKind::System => MsgKind::System,
        k => {
            let k = k.as_str_name();
            return Err(ApiError::bad(format!("kind {k}: NORMAL or SYSTEM")));
        }
    };
    // A system or notice send is an admin send; a user's send keeps the client's rules.
    let as_admin = from == 0 || conv.kind == ConvKind::Notice;
    if !as_admin {
        im.may_send(from, conv).await?;
    }
    let mentions = req.mentions;
    crate::ops::check_mentions(&mentions).map_err(ApiError::bad)?;
    let hashed = SendReq {
        client_msg_id: id.clone(),
        conv: Some(conv.view(from)),
        content_type: req.content_type,
        content: req.content,
        mentions,
        ref_seq: req.ref_seq,
    };
    let append = AppendReq {
        conv,
        sender: from,
        sender_platform: String::new(),
        client_msg_id: id,
        content_hash: content_hash(&hashed),
        kind,
        content_type: hashed.content_type,
        content: hashed.content,
        mentions: hashed.mentions,
        ref_seq: hashed.ref_seq,
        as_admin,
    };
    let l = im.append_in_lane(None, append).await;
    landed(im, l)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecallIn {
    conv: ConvIn,
    seq: U64,
    /// Who recalls (the RECALL event's sender); 0 = the system.
    #[serde(default)]
    by: I64,
    #[serde(default)]
    to: I64,
    client_msg_id: Option<String>,
}

/// `POST /im/v1/messages/recall {conv, seq, by?, clientMsgId?}` → `{seq, msgId, serverTs,
/// duplicate, stored}` of the RECALL event: an admin recall (no window, no ownership check).
/// Idempotent: `clientMsgId` defaults to `recall:<seq>`, so a retry answers the original
/// event with `duplicate: true`; a recall of a message already recalled under another id is
/// 409; 404 for no such seq.
pub async fn recall(State(api): State<St>, Body(req): Body<RecallIn>) -> ApiResult {
    let r = Recall {
        conv: req.conv,
        seq: req.seq.0,
        by: req.by.0,
        to: req.to.0,
        client_msg_id: req.client_msg_id,
    };
    reply(recall_message(&api.im, r).await?)
}

/// An admin recall (the body of `POST /im/v1/messages/recall`).
#[derive(Debug, Clone)]
pub struct Recall {
    pub conv: ConvIn,
    pub seq: u64,
    /// Who recalls; 0 (or below) = the system.
    pub by: i64,
    pub to: i64,
    /// `None`: `recall:<seq>`.
    pub client_msg_id: Option<String>,
}

/// Recalls `req.seq` through the conversation's lane (no window, no ownership check);
/// returns the RECALL event. 400 no seq or a bad id, 404 no such seq, 409 already recalled
/// under another id.
pub async fn recall_message(im: &Im, req: Recall) -> Result<Sent, ApiError> {
    let by = req.by.max(0);
    let conv = req.conv.resolve(by, req.to)?;
    if req.seq == 0 {
        return Err(ApiError::bad("seq is required"));
    }
    let id = req
        .client_msg_id
        .unwrap_or_else(|| format!("recall:{}", req.seq));
    if !client_msg_id_ok(&id) {
        return Err(ApiError::bad(format!(
            "clientMsgId must be 1..={MAX_CLIENT_MSG_ID} bytes, no NUL"
        )));
    }
    let recall = RecallReq {
        conv,
        seq: req.seq,
        by,
        by_platform: String::new(),
        client_msg_id: id,
        as_admin: true,
        window_ms: 0,
        wipe: im.config.recall_wipe,
    };
    let l = im.recall_in_lane(None, recall).await;
    landed(im, l)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryQuery {
    viewer: Option<i64>,
    #[serde(alias = "after_seq")]
    after_seq: Option<u64>,
    #[serde(alias = "before_seq")]
    before_seq: Option<u64>,
    #[serde(default)]
    limit: u32,
}

/// `GET /im/v1/conversations/{kind}/{a}/{b}/messages?viewer=&afterSeq=&beforeSeq=&limit=`
/// → `{messages, hasMore, nextSeq, floorSeq, lastSeq}`; `kind` by name: `P2P/{uid}/{uid}`,
/// `GROUP/{gid}/0`, `NOTICE/{uid}/0`.
/// - `afterSeq`: ascending from `afterSeq + 1`; `beforeSeq`: descending below it; neither:
///   descending from the newest (both: 400). `nextSeq` as in a pull (im.md §13 point 10).
///   `limit` default 50, clamped to `im.pull_limit_max`.
/// - With `viewer`: what that user may read (clamped to its floor and, if it left, its
///   `leave_seq`; 403 if never a member), messages' `conv` as the viewer names it.
/// - Without: the raw log from the retention floor to the newest seq, messages without `conv`.
pub async fn history(
    State(api): State<St>,
    P((kind, a, b)): P<(String, i64, i64)>,
    Q(q): Q<HistoryQuery>,
) -> ApiResult {
    let conv = canonical(Kind::parse(&kind)?.0, a, b)?;
    let p = history_page(&api.im, conv, q.viewer, q.after_seq, q.before_seq, q.limit).await?;
    let messages: Vec<Value> = p
        .messages
        .iter()
        .map(|m| serde_json::to_value(m).unwrap_or_default())
        .collect();
    ok(json!({
        "messages": messages,
        "hasMore": p.has_more,
        "nextSeq": p.next_seq.to_string(),
        "floorSeq": p.floor_seq.to_string(),
        "lastSeq": p.last_seq.to_string(),
    }))
}

/// A history page: a `PullReply` without `code` and `conv`.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// With a viewer, `conv` as the viewer names it; without, `None`.
    pub messages: Vec<crate::store::StoredMessage>,
    pub has_more: bool,
    pub next_seq: u64,
    pub floor_seq: u64,
    pub last_seq: u64,
}

/// A page of `conv`'s log: what `viewer` may read, or the raw log; ascending after
/// `after_seq`, descending below `before_seq`, or descending from the newest (both: 400);
/// `limit` 0 = 50, clamped to `im.pull_limit_max`. 403 a viewer outside the conversation.
pub async fn history_page(
    im: &Im,
    conv: Conv,
    viewer: Option<i64>,
    after_seq: Option<u64>,
    before_seq: Option<u64>,
    limit: u32,
) -> Result<HistoryPage, ApiError> {
    let (dir, from_seq) = match (after_seq, before_seq) {
        (Some(_), Some(_)) => return Err(ApiError::bad("afterSeq or beforeSeq, not both")),
        (Some(after), None) => (Direction::Forward, after.saturating_add(1)),
        (None, before) => (Direction::Backward, before.unwrap_or(0)),
    };
    let limit = match limit {
        0 => PULL_LIMIT_DEFAULT,
        n => n.min(im.config.pull_limit_max),
    };
    let reply = match viewer {
        Some(v) => {
            let inside = match conv.kind {
                ConvKind::P2p => v == conv.a || v == conv.b,
                ConvKind::Notice => v == conv.a,
                _ => v > 0,
            };
            if !inside {
                return Err(ApiError::new(
                    403,
                    format!("user {v} is not in this conversation"),
                ));
            }
            let req = PullReq {
                conv: Some(conv.view(v)),
                dir: dir as i32,
                from_seq,
                limit,
            };
            let r = page(im, v, &req).await?;
            (r.messages, r.has_more, r.next_seq, r.floor_seq, r.last_seq)
        }
        None => raw(im, conv, dir, from_seq, limit as usize).await?,
    };
    let (messages, has_more, next_seq, floor_seq, last_seq) = reply;
    Ok(HistoryPage {
        messages,
        has_more,
        next_seq,
        floor_seq,
        last_seq,
    })
}

type Page = (Vec<crate::store::StoredMessage>, bool, u64, u64, u64);

/// A page of the raw log, as [`page`] pages a member's view (the floor is the retention one).
async fn raw(
    im: &Im,
    conv: Conv,
    dir: Direction,
    from_seq: u64,
    limit: usize,
) -> Result<Page, StoreError> {
    let Some(meta) = im.store.conversation(conv).await? else {
        return match conv.kind {
            ConvKind::Group => Err(StoreError::NotFound(format!("group {}", conv.a))),
            _ => Ok((Vec::new(), false, 0, 0, 0)),
        };
    };
    let (floor, last) = (meta.min_seq.max(1), meta.last_seq);
    if dir == Direction::Forward {
        let from = from_seq.max(floor);
        let msgs = if from > last {
            Vec::new()
        } else {
            im.store.range(conv, from, last, limit).await?
        };
        let hi = msgs.last().map_or(last, |m| m.seq);
        let more = hi < last;
        Ok((msgs, more, if more { hi + 1 } else { 0 }, floor, last))
    } else {
        let top = if from_seq == 0 {
            last
        } else {
            (from_seq - 1).min(last)
        };
        let msgs = if top < floor || last == 0 {
            Vec::new()
        } else {
            im.store.range_back(conv, floor, top, limit).await?
        };
        let lo = msgs.last().map_or(floor, |m| m.seq);
        let more = lo > floor;
        Ok((msgs, more, if more { lo } else { 0 }, floor, last))
    }
}
