//! The read side (reference im.md §7.3, §13.9–10): directory sync, pull forward (offline
//! messages) and backward (history), member pages; always clamped to what the member may
//! read (`floor_seq ..= ceiling`). Shared by the client ops and the management API.

use crate::codec;
use crate::devices::Device;
use crate::service::{Im, now_ms};
use crate::store::{Conv, ConvMeta, MemberState, StoreError, StoredMessage};
use starling_proto::im::v1::{
    ConvHead, ConvKind, Member, MembersReply, MembersReq, PullReply, PullReq, SyncReply, SyncReq,
    pull_req::Direction,
};

/// Conversations per directory page: default and most.
pub const SYNC_LIMIT_DEFAULT: u32 = 100;
pub const SYNC_LIMIT_MAX: u32 = 200;
/// Messages per pull page by default.
pub const PULL_LIMIT_DEFAULT: u32 = 50;
/// Members per page: default and most.
pub const MEMBERS_LIMIT_DEFAULT: u32 = 100;
pub const MEMBERS_LIMIT_MAX: u32 = 1000;

/// `code`, counting it in `starling_im_bad_requests_total` when it is 400.
fn counted(im: &Im, code: i32) -> i32 {
    if code == 400 {
        im.stats
            .bad_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    code
}

pub(crate) async fn sync(im: &Im, dev: &Device, req: SyncReq) -> bytes::Bytes {
    let reply = directory(im, dev.mid, req)
        .await
        .unwrap_or_else(|e| SyncReply {
            code: e.code(),
            ..SyncReply::default()
        });
    codec::encode(dev.codec, &reply)
}

/// One page of `uid`'s conversation directory (op 22; `GET /im/v1/users/{uid}/conversations`).
pub async fn directory(im: &Im, uid: i64, req: SyncReq) -> Result<SyncReply, StoreError> {
    let epoch = im.store.epoch();
    let mut reply = SyncReply {
        code: 0,
        epoch,
        gap_wait_ms: im.config.gap_wait.as_millis() as u32,
        resync_ms: im.config.resync_hint.as_millis() as u32,
        ..SyncReply::default()
    };
    // The next pass's `since`, taken before reading so that nothing committed during this
    // page is missed; the overlap covers commits still in flight (§7.3).
    reply.server_ts = now_ms() - im.config.sync_overlap.as_millis() as i64;
    if req.epoch != 0 && req.epoch != epoch {
        reply.reset = true;
        reply.server_ts = 0;
        return Ok(reply);
    }
    let limit = match req.limit {
        0 => SYNC_LIMIT_DEFAULT,
        n => n.min(SYNC_LIMIT_MAX),
    } as usize;
    let after: u64 = if req.cursor.is_empty() {
        0
    } else {
        req.cursor
            .parse()
            .map_err(|_| StoreError::BadRequest("cursor is not one this server gave".into()))?
    };
    let mut rows = im.store.directory(uid, req.since, after, limit + 1).await?;
    if rows.len() > limit {
        rows.truncate(limit);
        reply.has_more = true;
        reply.cursor = rows
            .last()
            .map(|(m, _)| m.conv_id.to_string())
            .unwrap_or_default();
    }
    for (meta, member) in rows {
        reply.convs.push(head(im, uid, &meta, &member).await?);
    }
    Ok(reply)
}

/// What `uid` sees of one conversation.
pub async fn head(
    im: &Im,
    uid: i64,
    meta: &ConvMeta,
    member: &MemberState,
) -> Result<ConvHead, StoreError> {
    let conv = meta.conv;
    let floor = member.floor(meta.min_seq);
    let ceiling = member.ceiling(meta.last_seq);
    let read = member.read_seq.max(floor.saturating_sub(1));
    let unread = if ceiling > read {
        im.store
            .unread(conv, uid, read, ceiling, im.config.unread_cap)
            .await?
    } else {
        0
    };
    let last = im
        .store
        .last_visible(conv, floor, ceiling)
        .await?
        .map(|m| with_conv(m, conv, uid));
    let (mut peer_read, mut peer_recv) = (0, 0);
    if let Some(peer) = conv.peer_of(uid)
        && let Some(p) = im.store.member(conv, peer).await?
    {
        peer_read = p.read_seq;
        peer_recv = p.recv_seq;
    }
    Ok(ConvHead {
        conv: Some(conv.view(uid)),
        last_seq: ceiling,
        floor_seq: floor,
        read_seq: member.read_seq,
        peer_read_seq: peer_read,
        peer_recv_seq: peer_recv,
        unread,
        last,
        left: !member.is_current(),
        updated_ts: member.updated_ts.max(meta.last_msg_ts),
    })
}

fn with_conv(mut m: StoredMessage, conv: Conv, viewer: i64) -> StoredMessage {
    m.conv = Some(conv.view(viewer));
    m
}

pub(crate) async fn pull(im: &Im, dev: &Device, req: PullReq) -> bytes::Bytes {
    let reply = page(im, dev.mid, &req).await.unwrap_or_else(|e| PullReply {
        code: counted(im, e.code()),
        conv: req.conv,
        ..PullReply::default()
    });
    codec::encode(dev.codec, &reply)
}

/// One page of a conversation as `uid` may read it (op 24), §13.9–10: FORWARD from
/// `max(from_seq, floor)` ascending; BACKWARD below `from_seq` (0 = the newest) descending,
/// down to the floor.
pub async fn page(im: &Im, uid: i64, req: &PullReq) -> Result<PullReply, StoreError> {
    let conv = req
        .conv
        .as_ref()
        .and_then(|r| Conv::from_ref(uid, r))
        .ok_or_else(|| StoreError::BadRequest("bad conv".into()))?;
    let dir = Direction::try_from(req.dir).unwrap_or(Direction::Unspecified);
    if dir == Direction::Unspecified {
        return Err(StoreError::BadRequest(
            "dir must be FORWARD or BACKWARD".into(),
        ));
    }
    let mut reply = PullReply {
        code: 0,
        conv: Some(conv.view(uid)),
        ..PullReply::default()
    };
    let Some(meta) = im.store.conversation(conv).await? else {
        // A P2P or notice conversation nobody wrote to yet is empty, not missing.
        return match conv.kind {
            ConvKind::Group => Err(StoreError::NotFound(format!("group {}", conv.a))),
            _ => Ok(reply),
        };
    };
    let Some(member) = im.store.member(conv, uid).await? else {
        return Err(StoreError::Forbidden("not a member".into()));
    };
    let floor = member.floor(meta.min_seq);
    let ceiling = member.ceiling(meta.last_seq);
    reply.floor_seq = floor;
    reply.last_seq = ceiling;
    let limit = match req.limit {
        0 => PULL_LIMIT_DEFAULT,
        n => n.min(im.config.pull_limit_max),
    } as usize;
    let msgs = match dir {
        Direction::Forward => {
            let from = req.from_seq.max(floor);
            if from > ceiling {
                Vec::new()
            } else {
                im.store.range(conv, from, ceiling, limit).await?
            }
        }
        _ => {
            let top = if req.from_seq == 0 {
                ceiling
            } else {
                (req.from_seq - 1).min(ceiling)
            };
            if top < floor {
                Vec::new()
            } else {
                im.store.range_back(conv, floor, top, limit).await?
            }
        }
    };
    match dir {
        Direction::Forward => {
            if let Some(hi) = msgs.last().map(|m| m.seq)
                && hi < ceiling
            {
                reply.has_more = true;
                reply.next_seq = hi + 1;
            }
        }
        _ => {
            if let Some(lo) = msgs.last().map(|m| m.seq)
                && lo > floor
            {
                reply.has_more = true;
                reply.next_seq = lo;
            }
        }
    }
    reply.messages = msgs.into_iter().map(|m| with_conv(m, conv, uid)).collect();
    Ok(reply)
}

pub(crate) async fn members(im: &Im, dev: &Device, req: MembersReq) -> bytes::Bytes {
    let reply = members_page(im, Some(dev.mid), &req)
        .await
        .unwrap_or_else(|e| MembersReply {
            code: e.code(),
            ..MembersReply::default()
        });
    codec::encode(dev.codec, &reply)
}

/// A page of a group's current members with their read marks; `viewer` (when given) must be
/// a current member.
pub async fn members_page(
    im: &Im,
    viewer: Option<i64>,
    req: &MembersReq,
) -> Result<MembersReply, StoreError> {
    if req.gid <= 0 {
        return Err(StoreError::BadRequest("gid must be positive".into()));
    }
    let conv = Conv::group(req.gid);
    if im.store.group(req.gid).await?.is_none() {
        return Err(StoreError::NotFound(format!("group {}", req.gid)));
    }
    if let Some(v) = viewer
        && !im
            .store
            .member(conv, v)
            .await?
            .is_some_and(|m| m.is_current())
    {
        return Err(StoreError::Forbidden("not a member".into()));
    }
    let limit = match req.limit {
        0 => MEMBERS_LIMIT_DEFAULT,
        n => n.min(MEMBERS_LIMIT_MAX),
    } as usize;
    let after: i64 = if req.cursor.is_empty() {
        0
    } else {
        req.cursor
            .parse()
            .map_err(|_| StoreError::BadRequest("bad cursor".into()))?
    };
    let mut ms = im.store.members(conv, after, limit + 1, true).await?;
    let mut reply = MembersReply {
        code: 0,
        ..MembersReply::default()
    };
    if ms.len() > limit {
        ms.truncate(limit);
        reply.has_more = true;
        reply.cursor = ms.last().map(|m| m.uid.to_string()).unwrap_or_default();
    }
    reply.members = ms
        .into_iter()
        .map(|m| Member {
            uid: m.uid,
            role: m.role,
            read_seq: m.read_seq,
        })
        .collect();
    Ok(reply)
}
