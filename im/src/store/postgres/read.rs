//! The reads: one statement each, so each sees one snapshot (a write transaction is seen
//! whole or not at all). Conversations are found by their `(kind, a, b)` key in the same
//! statement; seqs below the retention floor (`min_seq`) are never returned.

use super::tx::{HEAD, MEMBER, MSG, P, big, head, member, message, ubig};
use super::{PgStore, R};
use crate::store::{
    Contact, ContactKind, ContactState, Conv, ConvMeta, Group, MemberState, StoredMessage, User,
};
use starling_proto::im::v1::MsgKind;
use tokio_postgres::Row;

/// The `(kind, a, b)` key of a conversation as three parameters.
fn key(conv: &Conv) -> (i16, i64, i64) {
    (conv.kind as i16, conv.a, conv.b)
}

impl PgStore {
    async fn rows(&self, sql: &str, p: &[P<'_>]) -> R<Vec<Row>> {
        let client = self.pool.get().await?;
        let st = client.prepare_cached(sql).await?;
        Ok(client.query(&st, p).await?)
    }

    async fn row(&self, sql: &str, p: &[P<'_>]) -> R<Option<Row>> {
        let client = self.pool.get().await?;
        let st = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&st, p).await?)
    }

    pub(super) async fn read_user(&self, uid: i64) -> R<Option<User>> {
        let r = self
            .row(
                "SELECT name, avatar, ex, disabled, valid_after_ms FROM im_user WHERE uid = $1",
                &[&uid],
            )
            .await?;
        Ok(r.map(|r| User {
            uid,
            name: r.get(0),
            avatar: r.get(1),
            ex: r.get(2),
            disabled: r.get(3),
            valid_after_ms: r.get(4),
        }))
    }

    pub(super) async fn read_contact(&self, owner: i64, peer: i64) -> R<Option<Contact>> {
        let r = self
            .row(
                "SELECT peer, state, remark, version FROM im_contact WHERE owner = $1 AND peer = $2",
                &[&owner, &peer],
            )
            .await?;
        Ok(r.map(|r| contact(owner, &r)))
    }

    pub(super) async fn read_contacts(
        &self,
        owner: i64,
        since_version: u64,
        limit: usize,
    ) -> R<Vec<Contact>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .rows(
                "SELECT peer, state, remark, version FROM im_contact \
                 WHERE owner = $1 AND version > $2 ORDER BY version LIMIT $3",
                &[&owner, &big(since_version), &big(limit as u64)],
            )
            .await?;
        Ok(rows.iter().map(|r| contact(owner, r)).collect())
    }

    pub(super) async fn read_head(&self, conv: Conv) -> R<Option<ConvMeta>> {
        let (k, a, b) = key(&conv);
        let sql = format!(
            "SELECT {HEAD} FROM im_conversation c WHERE c.kind = $1 AND c.a = $2 AND c.b = $3"
        );
        Ok(self.row(&sql, &[&k, &a, &b]).await?.map(|r| head(&r, 0)))
    }

    pub(super) async fn read_group(&self, gid: i64) -> R<Option<Group>> {
        let r = self
            .row(
                "SELECT name, owner, ex, muted, dissolved_ts IS NOT NULL, created_ts, member_count \
                 FROM im_group WHERE gid = $1",
                &[&gid],
            )
            .await?;
        Ok(r.map(|r| Group {
            gid,
            name: r.get(0),
            owner: r.get(1),
            ex: r.get(2),
            muted: r.get(3),
            dissolved: r.get(4),
            created_ts: r.get(5),
            member_count: r.get::<_, i32>(6).max(0) as u32,
        }))
    }

    pub(super) async fn read_member(&self, conv: Conv, uid: i64) -> R<Option<MemberState>> {
        let (k, a, b) = key(&conv);
        let sql = format!(
            "SELECT {MEMBER} FROM im_member m JOIN im_conversation c ON c.conv_id = m.conv_id \
             WHERE c.kind = $1 AND c.a = $2 AND c.b = $3 AND m.uid = $4"
        );
        Ok(self
            .row(&sql, &[&k, &a, &b, &uid])
            .await?
            .map(|r| member(&r, 0)))
    }

    pub(super) async fn read_members(
        &self,
        conv: Conv,
        after_uid: i64,
        limit: usize,
        current_only: bool,
    ) -> R<Vec<MemberState>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (k, a, b) = key(&conv);
        let sql = format!(
            "SELECT {MEMBER} FROM im_member m JOIN im_conversation c ON c.conv_id = m.conv_id \
             WHERE c.kind = $1 AND c.a = $2 AND c.b = $3 AND m.uid > $4 \
             AND (NOT $5 OR m.leave_seq = 0) ORDER BY m.uid LIMIT $6"
        );
        let rows = self
            .rows(
                &sql,
                &[&k, &a, &b, &after_uid, &current_only, &big(limit as u64)],
            )
            .await?;
        Ok(rows.iter().map(|r| member(r, 0)).collect())
    }

    pub(super) async fn read_range(
        &self,
        conv: Conv,
        from: u64,
        to: u64,
        limit: usize,
        rev: bool,
    ) -> R<Vec<StoredMessage>> {
        if limit == 0 || from > to {
            return Ok(Vec::new());
        }
        let (k, a, b) = key(&conv);
        let order = if rev { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT {MSG} FROM im_message m JOIN im_conversation c ON c.conv_id = m.conv_id \
             WHERE c.kind = $1 AND c.a = $2 AND c.b = $3 \
             AND m.seq >= GREATEST($4, c.min_seq, 1) AND m.seq <= $5 \
             ORDER BY m.seq {order} LIMIT $6"
        );
        let rows = self
            .rows(
                &sql,
                &[&k, &a, &b, &big(from), &big(to), &big(limit as u64)],
            )
            .await?;
        rows.iter().map(message).collect()
    }

    pub(super) async fn read_unread(
        &self,
        conv: Conv,
        viewer: i64,
        after: u64,
        to: u64,
        cap: u32,
    ) -> R<u32> {
        let from = after.saturating_add(1);
        if cap == 0 || from > to {
            return Ok(0);
        }
        let (k, a, b) = key(&conv);
        let r = self
            .row(
                "SELECT count(*) FROM (SELECT 1 FROM im_message m \
                 JOIN im_conversation c ON c.conv_id = m.conv_id \
                 WHERE c.kind = $1 AND c.a = $2 AND c.b = $3 \
                 AND m.seq >= GREATEST($4, c.min_seq, 1) AND m.seq <= $5 \
                 AND m.kind = $6 AND NOT m.recalled AND m.sender <> $7 LIMIT $8) t",
                &[
                    &k,
                    &a,
                    &b,
                    &big(from),
                    &big(to),
                    &(MsgKind::Normal as i16),
                    &viewer,
                    &i64::from(cap),
                ],
            )
            .await?;
        Ok(r.map_or(0, |r| {
            r.get::<_, i64>(0).clamp(0, i64::from(u32::MAX)) as u32
        }))
    }

    pub(super) async fn read_last_visible(
        &self,
        conv: Conv,
        floor: u64,
        to: u64,
    ) -> R<Option<StoredMessage>> {
        let (k, a, b) = key(&conv);
        let sql = format!(
            "SELECT {MSG} FROM im_message m JOIN im_conversation c ON c.conv_id = m.conv_id \
             WHERE c.kind = $1 AND c.a = $2 AND c.b = $3 \
             AND m.seq >= GREATEST($4, c.min_seq, 1) AND m.seq <= $5 AND m.kind <> $6 \
             ORDER BY m.seq DESC LIMIT 1"
        );
        self.row(
            &sql,
            &[&k, &a, &b, &big(floor), &big(to), &(MsgKind::Recall as i16)],
        )
        .await?
        .map(|r| message(&r))
        .transpose()
    }

    pub(super) async fn read_directory(
        &self,
        uid: i64,
        since_ms: i64,
        after_conv_id: u64,
        limit: usize,
    ) -> R<Vec<(ConvMeta, MemberState)>> {
        if limit == 0 || after_conv_id >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {HEAD}, {MEMBER} FROM im_member m JOIN im_conversation c \
             ON c.conv_id = m.conv_id WHERE m.uid = $1 AND m.conv_id > $2 \
             AND (m.updated_ts >= $3 OR c.last_msg_ts >= $3) ORDER BY m.conv_id LIMIT $4"
        );
        let rows = self
            .rows(
                &sql,
                &[&uid, &big(after_conv_id), &since_ms, &big(limit as u64)],
            )
            .await?;
        Ok(rows.iter().map(|r| (head(r, 0), member(r, 9))).collect())
    }
}

fn contact(owner: i64, r: &Row) -> Contact {
    let state: i16 = r.get(1);
    let kind = match state {
        1 => Some(ContactKind::Friend),
        2 => Some(ContactKind::Blocked),
        _ => None,
    };
    Contact {
        owner,
        peer: r.get(0),
        state: kind.map(|kind| ContactState {
            kind,
            remark: r.get(2),
        }),
        version: ubig(r.get(3)),
    }
}
