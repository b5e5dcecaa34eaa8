//! The values of the keyspaces: private prost records (reference im.md §6.2), and their
//! conversions to the contract's types. Messages are stored as the wire `Message` itself.

use crate::store::{
    Contact, ContactKind, ContactState, Conv, ConvMeta, Group, MemberState, StoreError, User,
};
use starling_proto::im::v1::ConvKind;

/// Decodes a record; a record that does not decode is a damaged store.
pub(super) fn decode<T: prost::Message + Default>(
    what: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    T::decode(bytes).map_err(|e| StoreError::Unavailable(format!("damaged {what} record: {e}")))
}

/// `dedup` value.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct DedupRec {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(uint64, tag = "2")]
    pub msg_id: u64,
    #[prost(uint64, tag = "3")]
    pub content_hash: u64,
}

/// `conv` value (the conversation head; `conv_id` is the key).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ConvRec {
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(int64, tag = "2")]
    pub a: i64,
    #[prost(int64, tag = "3")]
    pub b: i64,
    #[prost(uint64, tag = "4")]
    pub last_seq: u64,
    #[prost(int64, tag = "5")]
    pub last_msg_ts: i64,
    #[prost(uint64, tag = "6")]
    pub min_seq: u64,
    #[prost(uint64, tag = "7")]
    pub member_version: u64,
    #[prost(int64, tag = "8")]
    pub created_ts: i64,
}

impl ConvRec {
    pub fn from_meta(m: &ConvMeta) -> ConvRec {
        ConvRec {
            kind: m.conv.kind as i32,
            a: m.conv.a,
            b: m.conv.b,
            last_seq: m.last_seq,
            last_msg_ts: m.last_msg_ts,
            min_seq: m.min_seq,
            member_version: m.member_version,
            created_ts: m.created_ts,
        }
    }

    pub fn into_meta(self, conv_id: u64) -> ConvMeta {
        ConvMeta {
            conv_id,
            conv: Conv {
                kind: ConvKind::try_from(self.kind).unwrap_or(ConvKind::Unspecified),
                a: self.a,
                b: self.b,
            },
            last_seq: self.last_seq,
            last_msg_ts: self.last_msg_ts,
            min_seq: self.min_seq,
            member_version: self.member_version,
            created_ts: self.created_ts,
        }
    }
}

/// `member` and `user_conv` value: the whole membership, written under both keys in the same
/// batch (the fan-out scan and the directory scan then need no second lookup).
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct MemberRec {
    #[prost(int64, tag = "1")]
    pub uid: i64,
    #[prost(int32, tag = "2")]
    pub role: i32,
    #[prost(uint64, tag = "3")]
    pub join_seq: u64,
    #[prost(uint64, tag = "4")]
    pub leave_seq: u64,
    #[prost(uint64, tag = "5")]
    pub read_seq: u64,
    #[prost(uint64, tag = "6")]
    pub recv_seq: u64,
    #[prost(uint64, tag = "7")]
    pub deleted_to_seq: u64,
    #[prost(int64, tag = "8")]
    pub muted_until_ms: i64,
    #[prost(int64, tag = "9")]
    pub updated_ts: i64,
}

impl MemberRec {
    pub fn from_state(m: &MemberState) -> MemberRec {
        MemberRec {
            uid: m.uid,
            role: m.role,
            join_seq: m.join_seq,
            leave_seq: m.leave_seq,
            read_seq: m.read_seq,
            recv_seq: m.recv_seq,
            deleted_to_seq: m.deleted_to_seq,
            muted_until_ms: m.muted_until_ms,
            updated_ts: m.updated_ts,
        }
    }

    pub fn into_state(self) -> MemberState {
        MemberState {
            uid: self.uid,
            role: self.role,
            join_seq: self.join_seq,
            leave_seq: self.leave_seq,
            read_seq: self.read_seq,
            recv_seq: self.recv_seq,
            deleted_to_seq: self.deleted_to_seq,
            muted_until_ms: self.muted_until_ms,
            updated_ts: self.updated_ts,
        }
    }
}

/// `contact` value; `kind` 0 = deleted.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct ContactRec {
    #[prost(int32, tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub remark: String,
    #[prost(uint64, tag = "3")]
    pub version: u64,
}

impl ContactRec {
    pub fn into_contact(self, owner: i64, peer: i64) -> Contact {
        let kind = match self.kind {
            1 => Some(ContactKind::Friend),
            2 => Some(ContactKind::Blocked),
            _ => None,
        };
        Contact {
            owner,
            peer,
            state: kind.map(|kind| ContactState {
                kind,
                remark: self.remark,
            }),
            version: self.version,
        }
    }
}

/// `group` value.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct GroupRec {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "2")]
    pub owner: i64,
    #[prost(string, tag = "3")]
    pub ex: String,
    #[prost(bool, tag = "4")]
    pub muted: bool,
    #[prost(bool, tag = "5")]
    pub dissolved: bool,
    #[prost(int64, tag = "6")]
    pub created_ts: i64,
    #[prost(uint32, tag = "7")]
    pub member_count: u32,
}

impl GroupRec {
    pub fn into_group(self, gid: i64) -> Group {
        Group {
            gid,
            name: self.name,
            owner: self.owner,
            ex: self.ex,
            muted: self.muted,
            dissolved: self.dissolved,
            created_ts: self.created_ts,
            member_count: self.member_count,
        }
    }
}

/// `user` value.
#[derive(Clone, PartialEq, prost::Message)]
pub(super) struct UserRec {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub avatar: String,
    #[prost(string, tag = "3")]
    pub ex: String,
    #[prost(bool, tag = "4")]
    pub disabled: bool,
    #[prost(int64, tag = "5")]
    pub valid_after_ms: i64,
}

impl UserRec {
    pub fn from_user(u: &User) -> UserRec {
        UserRec {
            name: u.name.clone(),
            avatar: u.avatar.clone(),
            ex: u.ex.clone(),
            disabled: u.disabled,
            valid_after_ms: u.valid_after_ms,
        }
    }

    pub fn into_user(self, uid: i64) -> User {
        User {
            uid,
            name: self.name,
            avatar: self.avatar,
            ex: self.ex,
            disabled: self.disabled,
            valid_after_ms: self.valid_after_ms,
        }
    }
}
