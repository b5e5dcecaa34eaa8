//! The IM store: the truth every delivery, sync and pull is healed from (reference im.md §4.1,
//! §6). One log per conversation with a contiguous `seq` from 1, allocated in the same durable
//! write as the message; a dedup index on `(conversation, sender, client_msg_id)`; per-member
//! watermarks (join, leave, read, recv, deleted-to) instead of per-recipient rows.
//!
//! [`ImStore`] is what the service calls; [`embedded`] implements it on fjall (one writer
//! thread, group commit, fdatasync before any answer), [`postgres`] on PostgreSQL (any number
//! of logic nodes; the conversation row lock allocates seqs). [`open`] opens the one the
//! `[im]` configuration names. The contract's tests (`contract`) run on both.
//!
//! Rules the store enforces because they must hold atomically with the write (a check outside
//! the writer could race a concurrent membership change): membership of the sender, dedup,
//! group size, recall state. Rules that need no atomicity (rates, sizes, `p2p_policy`) are the
//! service's.

#[cfg(test)]
pub(crate) mod contract;
pub mod embedded;
mod open;
pub mod postgres;
mod types;

pub use open::{OpenError, open};
pub use types::*;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store call failed. Each maps to the IM result code of reference im.md §5.5
/// ([`StoreError::code`]).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// Malformed request the store caught (for example a recall of seq 0).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Not a member, left, recall of another user's message without rights.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No such group, conversation or message.
    #[error("not found: {0}")]
    NotFound(String),
    /// `client_msg_id` reused with other content; already recalled; group id taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Recall window passed; seq below the retention floor.
    #[error("gone: {0}")]
    Gone(String),
    /// Group over `max_group_members`.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The store cannot write or read now (I/O error, writer stopped). Nothing was committed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store is busy: no PostgreSQL connection freed up within `im.postgres_pool_wait`.
    /// Nothing was committed; the client retries after `im.overload_retry_after`.
    #[error("store overloaded: {0}")]
    Overloaded(String),
}

impl StoreError {
    /// The IM result code (reference im.md §5.5).
    pub fn code(&self) -> i32 {
        match self {
            StoreError::BadRequest(_) => 400,
            StoreError::Forbidden(_) => 403,
            StoreError::NotFound(_) => 404,
            StoreError::Conflict(_) => 409,
            StoreError::Gone(_) => 410,
            StoreError::TooLarge(_) => 413,
            StoreError::Unavailable(_) | StoreError::Overloaded(_) => 503,
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The IM store. Every write returns only once it is durable (fdatasync'd batch, or a
/// committed transaction) unless the store was opened with [`Durability::Buffer`]. Writes to
/// one conversation are applied in the order they were called (per caller: a caller that
/// awaits each call before the next sees its calls in order).
pub trait ImStore: Send + Sync + 'static {
    /// The store epoch: a random non-zero u64 made when the store was created, returned in
    /// `SyncReply` so a client whose cache came from a wiped store resets.
    fn epoch(&self) -> u64;

    /// Calls that failed to reach the store's server, by kind (timeout, error), when the
    /// store has a server: PostgreSQL ([`postgres::PgStore::errors`]), exported as
    /// `starling_im_postgres_errors_total{kind}`. `None` for the embedded store (its failed
    /// writes are in `starling_im_store_errors_total`).
    fn server_errors(&self) -> Option<Arc<starling_cluster::metrics::DependencyErrors>> {
        None
    }

    // ----- writes -----

    /// Appends a message (reference im.md §7.1 steps 2–3, §6.4).
    /// - P2P: the conversation and both memberships (join_seq 1) are created by the first
    ///   message, in the same write. Sending to oneself is `BadRequest`; a sender who is
    ///   neither side is `Forbidden` unless `sender == 0` or `as_admin`.
    /// - GROUP: the sender must be a current member (`Forbidden` otherwise; `NotFound` if
    ///   the group does not exist or was dissolved) unless `msg.sender == 0` (system) or
    ///   `as_admin`.
    /// - NOTICE: only the system (`sender == 0`) or `as_admin` may append; the conversation
    ///   and the owner's membership are created on first use.
    /// - Dedup: `(conv, sender, client_msg_id)` already stored → the original's seq, msg_id
    ///   and server_ts with `duplicate = true` if `content_hash` matches, `Conflict` if not.
    ///   An empty `client_msg_id` is never deduplicated (system messages).
    /// - The sender's `read_seq` rises to the new seq (a reply clears the sender's badge,
    ///   §6.5), when the sender is a member (never for the system, sender 0).
    /// - `kind` RECALL is `BadRequest` (recalls go through [`ImStore::recall`]);
    ///   `MSG_KIND_UNSPECIFIED` (the proto default) is stored as NORMAL.
    /// - `server_ts` is the writer's clock at the batch, never below the conversation's
    ///   `last_msg_ts`.
    fn append(&self, req: AppendReq) -> BoxFuture<'_, StoreResult<Appended>>;

    /// Recalls `seq` (§6.1, §13.3): marks it recalled (content wiped when `wipe`) and appends
    /// a RECALL message (`ref_seq = seq`, sender `by`) with its own seq, in one write.
    /// - Idempotent by `(conv, by, client_msg_id)`: a retry returns the original event with
    ///   `duplicate = true`.
    /// - `NotFound`: no such conversation or seq. `BadRequest`: seq 0, or the target is not
    ///   NORMAL. `Gone`: the target is below the retention floor.
    /// - `Conflict`: already recalled (by another client_msg_id), or the `client_msg_id` was
    ///   used for a recall of another seq.
    /// - `wipe` drops the target's content and mentions.
    /// - The `by`, unless privileged, must be a current member (`Forbidden`).
    /// - `Forbidden`: `by` is not the sender, unless `as_admin`, or `by` is the group's owner
    ///   or an admin (role ≥ 1).
    /// - `Gone`: `now - target.server_ts > window_ms` (window 0 = none), unless `as_admin` or
    ///   `by` is the group's owner/admin.
    fn recall(&self, req: RecallReq) -> BoxFuture<'_, StoreResult<Appended>>;

    /// Creates a group and its conversation: the owner (role 2) and `members` (role 0), a
    /// SYSTEM message at seq 1 sent by the owner (`content` given by the caller), so every
    /// `join_seq` is 1 whatever `history` says; `member_version` 1. `Conflict` if the gid
    /// exists; `TooLarge` over `max_members` (owner included; 0 = no limit). gid 0 = the store
    /// assigns one (skipping gids callers chose). `added` lists the owner and the members.
    fn create_group(&self, req: CreateGroupReq) -> BoxFuture<'_, StoreResult<GroupChange>>;

    /// Adds members (set semantics: current members are skipped, a member who left rejoins).
    /// Appends one SYSTEM message; the new members' `join_seq` is its seq (`History::FromJoin`)
    /// or 1 (`History::All`). `member_version` + 1. `TooLarge` if the group would exceed
    /// `max_members` (0 = no limit); `NotFound` for a missing or dissolved group; `BadRequest`
    /// for a uid ≤ 0. A rejoining member keeps its marks. The SYSTEM message (sender `by`) is
    /// appended even when nobody was added.
    fn add_members(&self, req: MembersChangeReq) -> BoxFuture<'_, StoreResult<GroupChange>>;

    /// Removes members (set semantics). Appends one SYSTEM message; the removed members'
    /// `leave_seq` is its seq (they may read up to it). The owner cannot be removed
    /// (`Forbidden`). `member_version` + 1. `NotFound` for a missing or dissolved group.
    fn remove_members(&self, req: MembersChangeReq) -> BoxFuture<'_, StoreResult<GroupChange>>;

    /// Updates a group's profile (name, ex, muted) and appends a SYSTEM message (`content`,
    /// sender 0). `NotFound` for a missing or dissolved group; `member_version` unchanged.
    fn update_group(&self, req: UpdateGroupReq) -> BoxFuture<'_, StoreResult<GroupChange>>;

    /// Dissolves a group: a SYSTEM message (sender 0), then every membership gets `leave_seq` =
    /// its seq; `removed` lists them. `NotFound` if missing or already dissolved.
    fn dissolve_group(&self, gid: i64, content: String) -> BoxFuture<'_, StoreResult<GroupChange>>;

    /// Sets a member's role and/or mute (`None` leaves it). `NotFound` if the group is missing
    /// or dissolved or `uid` is not a current member; `BadRequest` for a role outside 0..=2.
    /// `member_version` + 1 (roles decide recall rights).
    fn set_member(&self, req: SetMemberReq) -> BoxFuture<'_, StoreResult<()>>;

    /// Raises a watermark of `uid` in `conv` to `min(seq, last_seq)`; marks never go down.
    /// Returns the mark after the call and whether it moved. `NotFound`/`Forbidden` when the
    /// conversation does not exist or `uid` is not a member (a member who left may still mark
    /// up to its `leave_seq`).
    fn mark(
        &self,
        uid: i64,
        conv: Conv,
        mark: MarkKind,
        seq: u64,
    ) -> BoxFuture<'_, StoreResult<Marked>>;

    /// Upserts a user's profile (name, avatar, ex, disabled); `valid_after_ms` only moves up
    /// (0 keeps the stored one), so a later profile update cannot undo a revocation.
    fn put_user(&self, user: User) -> BoxFuture<'_, StoreResult<()>>;

    /// Upserts (`Some`) or deletes (`None`) the contact `owner → peer`; the owner's contact
    /// version + 1 either way. Returns the new version.
    fn put_contact(
        &self,
        owner: i64,
        peer: i64,
        contact: Option<ContactState>,
    ) -> BoxFuture<'_, StoreResult<u64>>;

    // ----- reads (a consistent snapshot each) -----

    /// A user's profile, `None` if never stored.
    fn user(&self, uid: i64) -> BoxFuture<'_, StoreResult<Option<User>>>;

    /// The contact `owner → peer`, if any.
    fn contact(&self, owner: i64, peer: i64) -> BoxFuture<'_, StoreResult<Option<Contact>>>;

    /// The owner's contacts changed after `since_version` (deleted ones with `state: None`),
    /// ascending by version, at most `limit`.
    fn contacts(
        &self,
        owner: i64,
        since_version: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<Contact>>>;

    /// A conversation's head, `None` if it does not exist yet.
    fn conversation(&self, conv: Conv) -> BoxFuture<'_, StoreResult<Option<ConvMeta>>>;

    /// A group's profile, `None` if it does not exist.
    fn group(&self, gid: i64) -> BoxFuture<'_, StoreResult<Option<Group>>>;

    /// A member's state in a conversation, `None` if never a member.
    fn member(&self, conv: Conv, uid: i64) -> BoxFuture<'_, StoreResult<Option<MemberState>>>;

    /// A page of a conversation's members (current and past), ascending by uid, starting
    /// after `after_uid`, at most `limit`. Current members only when `current_only`.
    fn members(
        &self,
        conv: Conv,
        after_uid: i64,
        limit: usize,
        current_only: bool,
    ) -> BoxFuture<'_, StoreResult<Vec<MemberState>>>;

    /// Messages of `conv` with `from <= seq <= to`, ascending, at most `limit` (recalled ones
    /// as stored: tombstones). Seqs below `min_seq` (retention) are absent.
    fn range(
        &self,
        conv: Conv,
        from: u64,
        to: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>>;

    /// Messages of `conv` with `from <= seq <= to`, descending from `to`, at most `limit`.
    fn range_back(
        &self,
        conv: Conv,
        from: u64,
        to: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<StoredMessage>>>;

    /// Unread for `viewer` in `conv`: NORMAL messages, not recalled, not sent by `viewer`,
    /// with `after < seq <= to`, counted up to `cap` (reference im.md §6.5).
    fn unread(
        &self,
        conv: Conv,
        viewer: i64,
        after: u64,
        to: u64,
        cap: u32,
    ) -> BoxFuture<'_, StoreResult<u32>>;

    /// The newest NORMAL or SYSTEM message of `conv` with `seq <= to` and `seq >= floor`
    /// (a recalled one as its tombstone), never a RECALL event.
    fn last_visible(
        &self,
        conv: Conv,
        floor: u64,
        to: u64,
    ) -> BoxFuture<'_, StoreResult<Option<StoredMessage>>>;

    /// The directory of `uid`: its memberships (current and past) whose membership changed or
    /// whose conversation got a message at or after `since_ms` (`updated_ts >= since_ms ||
    /// last_msg_ts >= since_ms`), ascending by conversation id,
    /// starting after `after_conv_id`, at most `limit`, each with its conversation head.
    fn directory(
        &self,
        uid: i64,
        since_ms: i64,
        after_conv_id: u64,
        limit: usize,
    ) -> BoxFuture<'_, StoreResult<Vec<(ConvMeta, MemberState)>>>;
}
