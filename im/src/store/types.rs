//! The store's records and requests (reference im.md §6.1). Times are milliseconds since the
//! Unix epoch; seqs start at 1 and 0 means "none".

use starling_proto::im::v1::{ConvKind, ConvRef};

/// A stored message: the wire `Message` with `conv` left `None` (a conversation reference is
/// viewer-relative; the service fills it per recipient).
pub type StoredMessage = starling_proto::im::v1::Message;

/// A conversation's canonical key (§6.1): P2P `a = min(mid), b = max(mid)`; GROUP `a = gid,
/// b = 0`; NOTICE `a = uid, b = 0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Conv {
    pub kind: ConvKind,
    pub a: i64,
    pub b: i64,
}

impl Conv {
    pub fn p2p(x: i64, y: i64) -> Conv {
        Conv {
            kind: ConvKind::P2p,
            a: x.min(y),
            b: x.max(y),
        }
    }

    pub fn group(gid: i64) -> Conv {
        Conv {
            kind: ConvKind::Group,
            a: gid,
            b: 0,
        }
    }

    pub fn notice(uid: i64) -> Conv {
        Conv {
            kind: ConvKind::Notice,
            a: uid,
            b: 0,
        }
    }

    /// The conversation `viewer` means by `r` (P2P id = the other user, GROUP id = gid, NOTICE
    /// = the viewer's own). `None` for an unspecified kind, a P2P id ≤ 0 or equal to the
    /// viewer, a group id ≤ 0.
    pub fn from_ref(viewer: i64, r: &ConvRef) -> Option<Conv> {
        match ConvKind::try_from(r.kind).ok()? {
            ConvKind::P2p if r.id > 0 && r.id != viewer => Some(Conv::p2p(viewer, r.id)),
            ConvKind::Group if r.id > 0 => Some(Conv::group(r.id)),
            ConvKind::Notice => Some(Conv::notice(viewer)),
            _ => None,
        }
    }

    /// How `viewer` names this conversation.
    pub fn view(&self, viewer: i64) -> ConvRef {
        let id = match self.kind {
            ConvKind::P2p => {
                if viewer == self.a {
                    self.b
                } else {
                    self.a
                }
            }
            ConvKind::Group => self.a,
            _ => 0,
        };
        ConvRef {
            kind: self.kind as i32,
            id,
        }
    }

    /// The other member of a P2P conversation.
    pub fn peer_of(&self, uid: i64) -> Option<i64> {
        (self.kind == ConvKind::P2p).then_some(if uid == self.a { self.b } else { self.a })
    }

    /// The Kafka partition key of this conversation's deliveries (reference im.md §7.1).
    pub fn partition_key(&self) -> String {
        format!("c:{}:{}:{}", self.kind as i32, self.a, self.b)
    }
}

/// A conversation's head (§6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvMeta {
    /// Dense internal id, assigned at creation.
    pub conv_id: u64,
    pub conv: Conv,
    /// The allocator: the newest seq (0 = empty).
    pub last_seq: u64,
    /// `server_ts` of the newest message.
    pub last_msg_ts: i64,
    /// Retention floor: the first seq still stored (1 = everything).
    pub min_seq: u64,
    /// Bumped by every membership change.
    pub member_version: u64,
    pub created_ts: i64,
}

/// A member's watermarks in one conversation (§6.1, OpenIM `SeqUser`, WuKongIM membership).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberState {
    pub uid: i64,
    /// 0 member, 1 admin, 2 owner.
    pub role: i32,
    /// First readable seq (the "added" SYSTEM message, or 1 with history `all`).
    pub join_seq: u64,
    /// 0 = still a member; otherwise the seq of the removal message (readable up to it).
    pub leave_seq: u64,
    pub read_seq: u64,
    pub recv_seq: u64,
    /// Everything up to here was deleted by this user (their floor).
    pub deleted_to_seq: u64,
    pub muted_until_ms: i64,
    /// When this membership last changed (join, leave, marks), ms.
    pub updated_ts: i64,
}

impl MemberState {
    pub fn is_current(&self) -> bool {
        self.leave_seq == 0
    }

    /// The first seq this member may read: `max(join_seq, deleted_to_seq + 1, min_seq)`.
    pub fn floor(&self, min_seq: u64) -> u64 {
        self.join_seq
            .max(self.deleted_to_seq + 1)
            .max(min_seq)
            .max(1)
    }

    /// The last seq this member may read: `leave_seq` if they left, else `last_seq`.
    pub fn ceiling(&self, last_seq: u64) -> u64 {
        if self.leave_seq == 0 {
            last_seq
        } else {
            self.leave_seq.min(last_seq)
        }
    }
}

pub const ROLE_MEMBER: i32 = 0;
pub const ROLE_ADMIN: i32 = 1;
pub const ROLE_OWNER: i32 = 2;

/// What a new member may read (§8 groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum History {
    /// From the "added" message on.
    #[default]
    FromJoin,
    /// The whole log.
    All,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReq {
    pub conv: Conv,
    /// 0 = the system.
    pub sender: i64,
    pub sender_platform: String,
    /// ≤ 64 bytes; empty = not deduplicated.
    pub client_msg_id: String,
    /// A hash of what makes two sends "the same" (conv, content_type, content, mentions,
    /// ref_seq); a retry with the same id and another hash is a `Conflict`.
    pub content_hash: u64,
    /// NORMAL or SYSTEM (UNSPECIFIED, the default, is stored as NORMAL).
    pub kind: starling_proto::im::v1::MsgKind,
    pub content_type: i32,
    pub content: String,
    pub mentions: Vec<i64>,
    pub ref_seq: u64,
    /// Sent through the management API: membership and NOTICE rules do not apply.
    pub as_admin: bool,
}

impl Default for Conv {
    fn default() -> Self {
        Conv {
            kind: ConvKind::Unspecified,
            a: 0,
            b: 0,
        }
    }
}

/// The result of an append or recall.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub conv_id: u64,
    /// The stored message (the original one when `duplicate`); `conv` is `None`.
    pub message: StoredMessage,
    /// The `client_msg_id` was already stored.
    pub duplicate: bool,
    /// The conversation's `member_version` after the write.
    pub member_version: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecallReq {
    pub conv: Conv,
    pub seq: u64,
    /// Who recalls; 0 = the system (admin API).
    pub by: i64,
    pub by_platform: String,
    pub client_msg_id: String,
    /// Through the management API: no window, no ownership check.
    pub as_admin: bool,
    /// 0 = no window.
    pub window_ms: u64,
    /// Drop the recalled message's content (`im.recall_wipe`).
    pub wipe: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateGroupReq {
    /// 0 = assigned by the store.
    pub gid: i64,
    pub name: String,
    pub owner: i64,
    /// Besides the owner; duplicates and the owner are ignored.
    pub members: Vec<i64>,
    pub history: History,
    pub ex: String,
    /// The SYSTEM message's content.
    pub content: String,
    /// Owner included.
    pub max_members: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersChangeReq {
    pub gid: i64,
    pub uids: Vec<i64>,
    /// For added members.
    pub role: i32,
    pub history: History,
    /// Who made the change (0 = system): the SYSTEM message's sender.
    pub by: i64,
    pub content: String,
    pub max_members: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateGroupReq {
    pub gid: i64,
    pub name: Option<String>,
    pub ex: Option<String>,
    pub muted: Option<bool>,
    pub content: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetMemberReq {
    pub gid: i64,
    pub uid: i64,
    pub role: Option<i32>,
    pub muted_until_ms: Option<i64>,
}

/// The result of a group write: the SYSTEM message it appended and who changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    pub gid: i64,
    pub conv_id: u64,
    pub message: StoredMessage,
    pub member_version: u64,
    /// Members who joined (or rejoined) with this change.
    pub added: Vec<i64>,
    /// Members who left with this change.
    pub removed: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    Read,
    Recv,
    DeletedTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marked {
    pub seq: u64,
    pub moved: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub uid: i64,
    pub name: String,
    pub avatar: String,
    /// Business JSON, opaque.
    pub ex: String,
    pub disabled: bool,
    /// IM tokens issued (`iat`) before this are refused (admin kick, disable, revoke; §13.6).
    pub valid_after_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactKind {
    Friend = 1,
    Blocked = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactState {
    pub kind: ContactKind,
    pub remark: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub owner: i64,
    pub peer: i64,
    /// `None`: deleted (kept so incremental sync can report it).
    pub state: Option<ContactState>,
    /// The owner's contact version at this change.
    pub version: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Group {
    pub gid: i64,
    pub name: String,
    pub owner: i64,
    pub ex: String,
    pub muted: bool,
    /// Dissolved groups keep their log, read-only.
    pub dissolved: bool,
    pub created_ts: i64,
    /// Current members, owner included.
    pub member_count: u32,
}

/// `sync`: every write is on disk (fdatasync) before it is answered. `buffer`: written to the
/// OS only; survives a process crash, not a power loss (benchmarks; logged loudly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    #[default]
    Sync,
    Buffer,
}
