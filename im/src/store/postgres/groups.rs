//! The group commands (reference im.md §6.1 "Membership changes in a group append SYSTEM
//! messages"), mirrored from the embedded store's `groups.rs`. Every one takes the group
//! conversation's row lock first, so membership and `member_count` change in the same order
//! on every logic node as the messages do.

use super::tx::{NewMsg, Tx, bad, big, forbidden, head, not_found};
use super::{Error, PgStore, R};
use crate::store::{
    Conv, ConvMeta, CreateGroupReq, GroupChange, History, MembersChangeReq, ROLE_MEMBER,
    ROLE_OWNER, SetMemberReq, StoreError, StoredMessage, UpdateGroupReq,
};
use std::collections::BTreeSet;

/// What the group commands read of `im_group`.
struct GroupRow {
    owner: i64,
    member_count: i64,
}

fn too_large(count: usize, max: u32) -> Error {
    Error::Store(StoreError::TooLarge(format!(
        "{count} members over the limit of {max}"
    )))
}

fn change(
    gid: i64,
    head: &ConvMeta,
    message: StoredMessage,
    added: Vec<i64>,
    removed: Vec<i64>,
) -> GroupChange {
    GroupChange {
        gid,
        conv_id: head.conv_id,
        message,
        member_version: head.member_version,
        added,
        removed,
    }
}

impl Tx<'_> {
    /// Locks a live group's conversation; its head and group row.
    async fn lock_group(&mut self, gid: i64) -> R<(GroupRow, ConvMeta)> {
        let h = self
            .lock(Conv::group(gid))
            .await?
            .ok_or_else(|| not_found("no such group"))?;
        let g = self
            .row(
                "SELECT owner, member_count FROM im_group WHERE gid = $1 AND dissolved_ts IS NULL",
                &[&gid],
            )
            .await?
            .ok_or_else(|| not_found("no such group"))?;
        let member_count: i32 = g.get(1);
        Ok((
            GroupRow {
                owner: g.get(0),
                member_count: i64::from(member_count),
            },
            h,
        ))
    }

    async fn gid_taken(&self, gid: i64) -> R<bool> {
        Ok(self
            .row(
                "SELECT 1 WHERE EXISTS (SELECT 1 FROM im_group WHERE gid = $1) \
                 OR EXISTS (SELECT 1 FROM im_conversation WHERE kind = 2 AND a = $1 AND b = 0)",
                &[&gid],
            )
            .await?
            .is_some())
    }

    async fn set_member_count(&self, gid: i64, n: i64) -> R<()> {
        self.exec(
            "UPDATE im_group SET member_count = $2 WHERE gid = $1",
            &[&gid, &(n.clamp(0, i64::from(i32::MAX)) as i32)],
        )
        .await?;
        Ok(())
    }
}

impl PgStore {
    pub(super) async fn create_group_once(&self, req: &CreateGroupReq) -> R<GroupChange> {
        if req.owner <= 0 || req.gid < 0 {
            return Err(bad("bad owner or gid"));
        }
        let mut client = self.pool.get().await?;
        let tx = Tx::new(client.transaction().await?, &self.clock);
        let gid = if req.gid == 0 {
            // Skip ids a caller chose itself.
            loop {
                let gid: i64 = tx
                    .row("SELECT nextval('im_gid_seq')", &[])
                    .await?
                    .map(|r| r.get(0))
                    .unwrap_or(0);
                if !tx.gid_taken(gid).await? {
                    break gid;
                }
            }
        } else {
            req.gid
        };
        // Two creates of one gid both pass this check; the second insert below then fails
        // on the unique key, and its retry answers Conflict here.
        if tx.gid_taken(gid).await? {
            return Err(Error::Store(StoreError::Conflict(format!(
                "group {gid} exists"
            ))));
        }
        let members: BTreeSet<i64> = req
            .members
            .iter()
            .copied()
            .filter(|&u| u != req.owner)
            .collect();
        if members.iter().any(|&u| u <= 0) {
            return Err(bad("member ids must be positive"));
        }
        let count = members.len() + 1;
        if req.max_members > 0 && count > req.max_members as usize {
            return Err(too_large(count, req.max_members));
        }
        let sql = format!(
            "INSERT INTO im_conversation AS c (kind, a, b, member_version, created_ts) \
             VALUES (2, $1, 0, 1, $2) RETURNING {}",
            super::tx::HEAD
        );
        let mut h = tx
            .row(&sql, &[&gid, &tx.now])
            .await?
            .map(|r| head(&r, 0))
            .ok_or_else(|| {
                Error::Store(StoreError::Unavailable("insert returned nothing".into()))
            })?;
        tx.exec(
            "INSERT INTO im_group (gid, name, owner, ex, member_count, created_ts) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &gid,
                &req.name,
                &req.owner,
                &req.ex,
                &(count as i32),
                &tx.now,
            ],
        )
        .await?;
        // Every member's join_seq is 1 either way: the creation message is seq 1.
        let _ = req.history;
        tx.insert_members(h.conv_id, &[req.owner], ROLE_OWNER, 1)
            .await?;
        let others: Vec<i64> = members.iter().copied().collect();
        tx.insert_members(h.conv_id, &others, ROLE_MEMBER, 1)
            .await?;
        let msg = tx
            .append_msg(&mut h, NewMsg::system(req.owner, &req.content))
            .await?;
        tx.commit().await?;
        let added = std::iter::once(req.owner).chain(others).collect();
        Ok(change(gid, &h, msg, added, Vec::new()))
    }

    pub(super) async fn add_members_once(&self, req: &MembersChangeReq) -> R<GroupChange> {
        let mut client = self.pool.get().await?;
        let mut tx = Tx::new(client.transaction().await?, &self.clock);
        let (g, mut h) = tx.lock_group(req.gid).await?;
        let uids: BTreeSet<i64> = req.uids.iter().copied().collect();
        if uids.iter().any(|&u| u <= 0) {
            return Err(bad("member ids must be positive"));
        }
        let all: Vec<i64> = uids.iter().copied().collect();
        let current: BTreeSet<i64> = tx
            .rows(
                "SELECT uid FROM im_member WHERE conv_id = $1 AND uid = ANY($2) AND leave_seq = 0",
                &[&big(h.conv_id), &all],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let joining: Vec<i64> = all.into_iter().filter(|u| !current.contains(u)).collect();
        let count = g.member_count as usize + joining.len();
        if req.max_members > 0 && count > req.max_members as usize {
            return Err(too_large(count, req.max_members));
        }
        let msg = tx
            .append_msg(&mut h, NewMsg::system(req.by, &req.content))
            .await?;
        let join_seq = match req.history {
            History::FromJoin => msg.seq,
            History::All => 1,
        };
        // A rejoin keeps its marks (they never go down).
        tx.exec(
            "INSERT INTO im_member (conv_id, uid, role, join_seq, updated_ts) \
             SELECT $1, u, $3, $4, $5 FROM unnest($2::bigint[]) AS u \
             ON CONFLICT (conv_id, uid) DO UPDATE SET role = EXCLUDED.role, \
             join_seq = EXCLUDED.join_seq, leave_seq = 0, updated_ts = EXCLUDED.updated_ts",
            &[
                &big(h.conv_id),
                &joining,
                &(req.role as i16),
                &big(join_seq),
                &tx.now,
            ],
        )
        .await?;
        tx.set_member_count(req.gid, count as i64).await?;
        tx.bump_member_version(&mut h).await?;
        tx.commit().await?;
        Ok(change(req.gid, &h, msg, joining, Vec::new()))
    }

    pub(super) async fn remove_members_once(&self, req: &MembersChangeReq) -> R<GroupChange> {
        let mut client = self.pool.get().await?;
        let mut tx = Tx::new(client.transaction().await?, &self.clock);
        let (g, mut h) = tx.lock_group(req.gid).await?;
        let uids: Vec<i64> = req
            .uids
            .iter()
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if uids.contains(&g.owner) {
            return Err(forbidden("the owner cannot be removed"));
        }
        let msg = tx
            .append_msg(&mut h, NewMsg::system(req.by, &req.content))
            .await?;
        let removed = leave(&tx, &h, Some(&uids), msg.seq).await?;
        tx.set_member_count(req.gid, g.member_count - removed.len() as i64)
            .await?;
        tx.bump_member_version(&mut h).await?;
        tx.commit().await?;
        Ok(change(req.gid, &h, msg, Vec::new(), removed))
    }

    pub(super) async fn update_group_once(&self, req: &UpdateGroupReq) -> R<GroupChange> {
        let mut client = self.pool.get().await?;
        let mut tx = Tx::new(client.transaction().await?, &self.clock);
        let (_, mut h) = tx.lock_group(req.gid).await?;
        tx.exec(
            "UPDATE im_group SET name = COALESCE($2, name), ex = COALESCE($3, ex), \
             muted = COALESCE($4, muted) WHERE gid = $1",
            &[&req.gid, &req.name, &req.ex, &req.muted],
        )
        .await?;
        let msg = tx
            .append_msg(&mut h, NewMsg::system(0, &req.content))
            .await?;
        tx.commit().await?;
        Ok(change(req.gid, &h, msg, Vec::new(), Vec::new()))
    }

    pub(super) async fn dissolve_once(&self, gid: i64, content: &str) -> R<GroupChange> {
        let mut client = self.pool.get().await?;
        let mut tx = Tx::new(client.transaction().await?, &self.clock);
        let (_, mut h) = tx.lock_group(gid).await?;
        let msg = tx.append_msg(&mut h, NewMsg::system(0, content)).await?;
        let removed = leave(&tx, &h, None, msg.seq).await?;
        tx.exec(
            "UPDATE im_group SET dissolved_ts = $2, member_count = 0 WHERE gid = $1",
            &[&gid, &tx.now],
        )
        .await?;
        tx.bump_member_version(&mut h).await?;
        tx.commit().await?;
        Ok(change(gid, &h, msg, Vec::new(), removed))
    }

    pub(super) async fn set_member_once(&self, req: &SetMemberReq) -> R<()> {
        let mut client = self.pool.get().await?;
        let mut tx = Tx::new(client.transaction().await?, &self.clock);
        let (_, mut h) = tx.lock_group(req.gid).await?;
        if !tx
            .member(h.conv_id, req.uid)
            .await?
            .is_some_and(|m| m.is_current())
        {
            return Err(not_found("not a member"));
        }
        if let Some(r) = req.role
            && !(0..=ROLE_OWNER).contains(&r)
        {
            return Err(bad("role must be 0, 1 or 2"));
        }
        // Only these columns: a concurrent mark of the same member keeps its write.
        tx.exec(
            "UPDATE im_member SET role = COALESCE($3, role), \
             muted_until_ms = COALESCE($4, muted_until_ms), updated_ts = $5 \
             WHERE conv_id = $1 AND uid = $2",
            &[
                &big(h.conv_id),
                &req.uid,
                &req.role.map(|r| r as i16),
                &req.muted_until_ms,
                &tx.now,
            ],
        )
        .await?;
        tx.bump_member_version(&mut h).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Sets `leave_seq` of the current members among `uids` (all current members when `None`);
/// returns who left, ascending.
async fn leave(tx: &Tx<'_>, h: &ConvMeta, uids: Option<&[i64]>, seq: u64) -> R<Vec<i64>> {
    let rows = tx
        .rows(
            "UPDATE im_member SET leave_seq = $3, updated_ts = $4 \
             WHERE conv_id = $1 AND leave_seq = 0 AND ($2::bigint[] IS NULL OR uid = ANY($2)) \
             RETURNING uid",
            &[&big(h.conv_id), &uids, &big(seq), &tx.now],
        )
        .await?;
    let mut out: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    out.sort_unstable();
    Ok(out)
}
