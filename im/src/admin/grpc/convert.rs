//! `starling.im.v1` admin messages ↔ the operations' domain types. Only shape changes here:
//! every rule is in the operation functions.

use super::super::messages::{HistoryPage, Sent};
use super::super::{ApiError, ConvIn, I64, Kind};
use crate::devices::Device;
use crate::store::{Appended, Contact, ContactKind, Group, GroupChange, History, User};
use starling_proto::im::v1 as pb;

/// The conversation a request names; 400 when absent or of no known kind.
pub fn conv_in(c: Option<pb::ConvName>) -> Result<ConvIn, ApiError> {
    let c = c.ok_or_else(|| ApiError::bad("conv is required"))?;
    Ok(ConvIn {
        kind: Kind::parse(&c.kind.to_string())?,
        id: I64(c.id),
        a: I64(c.a),
        b: I64(c.b),
    })
}

pub fn history(h: i32) -> Result<History, ApiError> {
    match pb::GroupHistory::try_from(h) {
        Ok(pb::GroupHistory::Unspecified | pb::GroupHistory::FromJoin) => Ok(History::FromJoin),
        Ok(pb::GroupHistory::All) => Ok(History::All),
        Err(_) => Err(ApiError::bad(format!("history {h}: FROM_JOIN or ALL"))),
    }
}

pub fn contact_kind(s: i32) -> Result<ContactKind, ApiError> {
    match pb::ContactStatus::try_from(s) {
        Ok(pb::ContactStatus::Friend) => Ok(ContactKind::Friend),
        Ok(pb::ContactStatus::Blocked) => Ok(ContactKind::Blocked),
        _ => Err(ApiError::bad(format!("state {s}: FRIEND or BLOCKED"))),
    }
}

pub fn msg_kind(k: i32) -> Result<pb::MsgKind, ApiError> {
    pb::MsgKind::try_from(k).map_err(|_| ApiError::bad(format!("kind {k}: NORMAL or SYSTEM")))
}

pub fn user(u: User) -> pb::User {
    pb::User {
        uid: u.uid,
        name: u.name,
        avatar: u.avatar,
        ex: u.ex,
        disabled: u.disabled,
        valid_after_ms: u.valid_after_ms,
    }
}

pub fn device(d: Device) -> pb::Device {
    pb::Device {
        key: d.key,
        platform: d.platform,
        server: d.server,
        since: d.since_ms,
    }
}

pub fn contact(c: Contact) -> pb::Contact {
    let (state, remark) = match c.state {
        Some(s) => (
            match s.kind {
                ContactKind::Friend => pb::ContactStatus::Friend,
                ContactKind::Blocked => pb::ContactStatus::Blocked,
            },
            s.remark,
        ),
        None => (pb::ContactStatus::Unspecified, String::new()),
    };
    pb::Contact {
        peer: c.peer,
        state: state as i32,
        remark,
        version: c.version,
    }
}

pub fn group(g: Group) -> pb::Group {
    pb::Group {
        gid: g.gid,
        name: g.name,
        owner: g.owner,
        ex: g.ex,
        muted: g.muted,
        dissolved: g.dissolved,
        created_ts: g.created_ts,
        member_count: g.member_count,
    }
}

pub fn change(c: GroupChange) -> pb::GroupChange {
    pb::GroupChange {
        gid: c.gid,
        seq: c.message.seq,
        msg_id: c.message.msg_id,
        member_version: c.member_version,
        added: c.added,
        removed: c.removed,
    }
}

/// The ack of a stored send or recall (`code` 0, `stored` true, `conv` unset: the caller
/// named it).
pub fn ack(a: &Appended) -> pb::SendAck {
    pb::SendAck {
        client_msg_id: a.message.client_msg_id.clone(),
        seq: a.message.seq,
        msg_id: a.message.msg_id,
        server_ts: a.message.server_ts,
        duplicate: a.duplicate,
        stored: true,
        ..Default::default()
    }
}

/// A stored write's reply: the ack, or `UNAVAILABLE` (503) with the ack (`code` 503) as the
/// status details when it was not handed to delivery.
pub fn sent(s: Sent) -> Result<pb::SendAck, tonic::Status> {
    let mut ack = ack(&s.appended);
    match s.undelivered {
        None => Ok(ack),
        Some(why) => {
            ack.code = 503;
            ack.reason = why.clone();
            let details = prost::Message::encode_to_vec(&ack);
            Err(super::status::with_details(
                ApiError::new(503, why),
                details,
            ))
        }
    }
}

pub fn page(p: HistoryPage) -> pb::PullReply {
    pb::PullReply {
        code: 0,
        conv: None,
        messages: p.messages,
        has_more: p.has_more,
        next_seq: p.next_seq,
        floor_seq: p.floor_seq,
        last_seq: p.last_seq,
    }
}
