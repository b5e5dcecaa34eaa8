//! One write transaction: statements through the connection's statement cache, the
//! conversation row lock, the allocator (reference im.md §6.4) and row conversions.

use super::{Error, R};
use crate::store::{Conv, ConvMeta, MemberState, StoreError, StoredMessage};
use starling_proto::im::v1::{ConvKind, MsgKind};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

pub(super) type P<'a> = &'a (dyn ToSql + Sync);

/// A u64 (seq, id, limit) as a bigint parameter, saturating at `i64::MAX`.
pub(super) fn big(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// A bigint column that holds a u64 (never negative in this schema).
pub(super) fn ubig(v: i64) -> u64 {
    v.max(0) as u64
}

pub(super) fn bad(s: &str) -> Error {
    Error::Store(StoreError::BadRequest(s.into()))
}
pub(super) fn forbidden(s: &str) -> Error {
    Error::Store(StoreError::Forbidden(s.into()))
}
pub(super) fn not_found(s: &str) -> Error {
    Error::Store(StoreError::NotFound(s.into()))
}

/// The columns of a conversation head, in [`head`]'s order.
pub(super) const HEAD: &str = "c.conv_id, c.kind, c.a, c.b, c.last_seq, c.last_msg_ts, c.min_seq, c.member_version, c.created_ts";

pub(super) fn head(r: &Row, at: usize) -> ConvMeta {
    let kind: i16 = r.get(at + 1);
    ConvMeta {
        conv_id: ubig(r.get(at)),
        conv: Conv {
            kind: ConvKind::try_from(i32::from(kind)).unwrap_or(ConvKind::Unspecified),
            a: r.get(at + 2),
            b: r.get(at + 3),
        },
        last_seq: ubig(r.get(at + 4)),
        last_msg_ts: r.get(at + 5),
        min_seq: ubig(r.get(at + 6)),
        member_version: ubig(r.get(at + 7)),
        created_ts: r.get(at + 8),
    }
}

/// The columns of a membership, in [`member`]'s order.
pub(super) const MEMBER: &str = "m.uid, m.role, m.join_seq, m.leave_seq, m.read_seq, m.recv_seq, \
     m.deleted_to_seq, m.muted_until_ms, m.updated_ts";

pub(super) fn member(r: &Row, at: usize) -> MemberState {
    let role: i16 = r.get(at + 1);
    MemberState {
        uid: r.get(at),
        role: i32::from(role),
        join_seq: ubig(r.get(at + 2)),
        leave_seq: ubig(r.get(at + 3)),
        read_seq: ubig(r.get(at + 4)),
        recv_seq: ubig(r.get(at + 5)),
        deleted_to_seq: ubig(r.get(at + 6)),
        muted_until_ms: r.get(at + 7),
        updated_ts: r.get(at + 8),
    }
}

/// The columns of a message, in [`message`]'s order; `m.content_hash` follows them.
pub(super) const MSG: &str = "m.seq, m.msg_id, m.sender, m.client_msg_id, m.kind, m.content_type, \
     m.content, m.server_ts, m.ref_seq, m.recalled, m.mentions, m.sender_platform, m.content_hash";

pub(super) fn message(r: &Row) -> R<StoredMessage> {
    let kind: i16 = r.get(4);
    let content: Vec<u8> = r.get(6);
    let content = String::from_utf8(content)
        .map_err(|e| StoreError::Unavailable(format!("damaged message content: {e}")))?;
    Ok(StoredMessage {
        conv: None,
        seq: ubig(r.get(0)),
        msg_id: ubig(r.get(1)),
        sender: r.get(2),
        client_msg_id: r.get::<_, Option<String>>(3).unwrap_or_default(),
        kind: i32::from(kind),
        content_type: r.get(5),
        content,
        server_ts: r.get(7),
        ref_seq: ubig(r.get(8)),
        recalled: r.get(9),
        mentions: r.get(10),
        sender_platform: r.get(11),
    })
}

/// A message to append; the allocator fills seq, msg_id and server_ts.
pub(super) struct NewMsg<'a> {
    pub sender: i64,
    pub sender_platform: &'a str,
    pub client_msg_id: &'a str,
    pub content_hash: u64,
    pub kind: MsgKind,
    pub content_type: i32,
    pub content: &'a str,
    pub mentions: &'a [i64],
    pub ref_seq: u64,
}

impl<'a> NewMsg<'a> {
    pub fn system(sender: i64, content: &'a str) -> NewMsg<'a> {
        NewMsg {
            sender,
            sender_platform: "",
            client_msg_id: "",
            content_hash: 0,
            kind: MsgKind::System,
            content_type: 0,
            content,
            mentions: &[],
            ref_seq: 0,
        }
    }
}

/// A write transaction and the time it writes (`now`, ms): taken from the store's clock when
/// the transaction starts and again once it holds a conversation's lock.
pub(super) struct Tx<'a> {
    pub t: deadpool_postgres::Transaction<'a>,
    pub now: i64,
    pub clock: &'a super::Clock,
}

impl<'a> Tx<'a> {
    pub fn new(t: deadpool_postgres::Transaction<'a>, clock: &'a super::Clock) -> Tx<'a> {
        Tx {
            t,
            now: clock(),
            clock,
        }
    }

    pub async fn rows(&self, sql: &str, p: &[P<'_>]) -> R<Vec<Row>> {
        let st = self.t.prepare_cached(sql).await?;
        Ok(self.t.query(&st, p).await?)
    }

    pub async fn row(&self, sql: &str, p: &[P<'_>]) -> R<Option<Row>> {
        let st = self.t.prepare_cached(sql).await?;
        Ok(self.t.query_opt(&st, p).await?)
    }

    pub async fn exec(&self, sql: &str, p: &[P<'_>]) -> R<u64> {
        let st = self.t.prepare_cached(sql).await?;
        Ok(self.t.execute(&st, p).await?)
    }

    /// Commits. A failure the server answered (an SQLSTATE) rolled back; any other leaves
    /// the outcome unknown ([`Error::Commit`]).
    pub async fn commit(self) -> R<()> {
        self.t.commit().await.map_err(|e| {
            if e.code().is_some() {
                Error::Pg(e)
            } else {
                Error::Commit(e)
            }
        })
    }

    /// Takes the row lock of an existing conversation (the allocator lock, §6.4) and returns
    /// its head as of the lock.
    pub async fn lock(&mut self, conv: Conv) -> R<Option<ConvMeta>> {
        let sql = format!(
            "SELECT {HEAD} FROM im_conversation c WHERE c.kind = $1 AND c.a = $2 AND c.b = $3 \
             FOR UPDATE"
        );
        let kind = conv.kind as i16;
        let r = self.row(&sql, &[&kind, &conv.a, &conv.b]).await?;
        self.now = (self.clock)();
        Ok(r.map(|r| head(&r, 0)))
    }

    /// Creates a P2P or NOTICE conversation with its memberships (join_seq 1) and
    /// `member_version` 1, or, when another transaction created it first, locks that one.
    /// Our own insert holds the new row's lock until commit.
    pub async fn create_or_lock(&mut self, conv: Conv, members: &[i64]) -> R<ConvMeta> {
        let sql = format!(
            "INSERT INTO im_conversation AS c (kind, a, b, member_version, created_ts) \
             VALUES ($1, $2, $3, 1, $4) ON CONFLICT (kind, a, b) DO NOTHING RETURNING {HEAD}"
        );
        let kind = conv.kind as i16;
        match self
            .row(&sql, &[&kind, &conv.a, &conv.b, &self.now])
            .await?
        {
            Some(r) => {
                let h = head(&r, 0);
                self.insert_members(h.conv_id, members, 0, 1).await?;
                Ok(h)
            }
            None => self.lock(conv).await?.ok_or_else(|| {
                Error::Store(StoreError::Unavailable("conversation vanished".into()))
            }),
        }
    }

    /// New memberships (`uids` must not be members yet) with `role` and `join_seq`.
    pub async fn insert_members(
        &self,
        conv_id: u64,
        uids: &[i64],
        role: i32,
        join_seq: u64,
    ) -> R<()> {
        self.exec(
            "INSERT INTO im_member (conv_id, uid, role, join_seq, updated_ts) \
             SELECT $1, u, $3, $4, $5 FROM unnest($2::bigint[]) AS u",
            &[
                &big(conv_id),
                &uids,
                &(role as i16),
                &big(join_seq),
                &self.now,
            ],
        )
        .await?;
        Ok(())
    }

    /// Stores `m` at `head.last_seq + 1` and moves the head (seq, `last_msg_ts`); raises the
    /// sender's `read_seq` (§6.5). The caller holds the conversation's lock.
    pub async fn append_msg(&self, head: &mut ConvMeta, m: NewMsg<'_>) -> R<StoredMessage> {
        let seq = head.last_seq + 1;
        // Monotonic per conversation even if the clock steps back.
        let ts = self.now.max(head.last_msg_ts);
        let cmid = (!m.client_msg_id.is_empty()).then_some(m.client_msg_id);
        let r = self
            .row(
                "INSERT INTO im_message (conv_id, seq, sender, client_msg_id, content_hash, kind, \
                 content_type, content, ref_seq, mentions, sender_platform, server_ts) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING msg_id",
                &[
                    &big(head.conv_id),
                    &big(seq),
                    &m.sender,
                    &cmid,
                    &(m.content_hash as i64),
                    &(m.kind as i16),
                    &m.content_type,
                    &m.content.as_bytes(),
                    &big(m.ref_seq),
                    &m.mentions,
                    &m.sender_platform,
                    &ts,
                ],
            )
            .await?
            .ok_or_else(|| {
                Error::Store(StoreError::Unavailable("insert returned nothing".into()))
            })?;
        let msg_id: i64 = r.get(0);
        self.exec(
            "UPDATE im_conversation SET last_seq = $2, last_msg_ts = $3 WHERE conv_id = $1",
            &[&big(head.conv_id), &big(seq), &ts],
        )
        .await?;
        head.last_seq = seq;
        head.last_msg_ts = ts;
        if m.sender != 0 {
            self.exec(
                "UPDATE im_member SET read_seq = $3, updated_ts = $4 \
                 WHERE conv_id = $1 AND uid = $2 AND read_seq < $3",
                &[&big(head.conv_id), &m.sender, &big(seq), &self.now],
            )
            .await?;
        }
        Ok(StoredMessage {
            conv: None,
            seq,
            msg_id: ubig(msg_id),
            sender: m.sender,
            client_msg_id: m.client_msg_id.to_owned(),
            kind: m.kind as i32,
            content_type: m.content_type,
            content: m.content.to_owned(),
            server_ts: ts,
            ref_seq: m.ref_seq,
            recalled: false,
            mentions: m.mentions.to_vec(),
            sender_platform: m.sender_platform.to_owned(),
        })
    }

    /// `member_version` + 1; returns the new value.
    pub async fn bump_member_version(&self, head: &mut ConvMeta) -> R<u64> {
        self.exec(
            "UPDATE im_conversation SET member_version = member_version + 1 WHERE conv_id = $1",
            &[&big(head.conv_id)],
        )
        .await?;
        head.member_version += 1;
        Ok(head.member_version)
    }

    /// The stored message with `(sender, client_msg_id)` in the conversation, and its hash.
    pub async fn dedup(
        &self,
        conv_id: u64,
        sender: i64,
        cmid: &str,
    ) -> R<Option<(StoredMessage, u64)>> {
        let sql = format!(
            "SELECT {MSG} FROM im_message m \
             WHERE m.conv_id = $1 AND m.sender = $2 AND m.client_msg_id = $3"
        );
        match self.row(&sql, &[&big(conv_id), &sender, &cmid]).await? {
            Some(r) => {
                let hash: i64 = r.get(12);
                Ok(Some((message(&r)?, hash as u64)))
            }
            None => Ok(None),
        }
    }

    pub async fn member(&self, conv_id: u64, uid: i64) -> R<Option<MemberState>> {
        let sql = format!("SELECT {MEMBER} FROM im_member m WHERE m.conv_id = $1 AND m.uid = $2");
        Ok(self
            .row(&sql, &[&big(conv_id), &uid])
            .await?
            .map(|r| member(&r, 0)))
    }
}
