//! Each write's rules (the doc comments of [`crate::store::ImStore`], mirrored from the
//! embedded store's `ops.rs`), as one transaction: appends, recalls, marks, users, contacts.
//! Groups are in `groups`. A run that returns an error commits nothing (the transaction is
//! dropped, which rolls it back).

use super::tx::{NewMsg, Tx, bad, big, forbidden, member, not_found};
use super::{Error, PgStore, R};
use crate::store::{
    AppendReq, Appended, ContactState, Conv, ConvMeta, MarkKind, Marked, RecallReq, StoreError,
    StoredMessage, User,
};
use starling_proto::im::v1::{ConvKind, MsgKind};

/// The answer to a retried `client_msg_id`: the original, or `Conflict`.
fn duplicate(head: &ConvMeta, original: StoredMessage, stored: u64, hash: u64) -> R<Appended> {
    if stored != hash {
        return Err(Error::Store(StoreError::Conflict(
            "client_msg_id already used for another message".into(),
        )));
    }
    Ok(Appended {
        conv_id: head.conv_id,
        message: original,
        duplicate: true,
        member_version: head.member_version,
    })
}

/// The checks of an append that need no database (§ `ImStore::append`).
fn check_append(req: &AppendReq) -> R<MsgKind> {
    let conv = req.conv;
    let kind = match req.kind {
        // The proto default: a plain message.
        MsgKind::Normal | MsgKind::Unspecified => MsgKind::Normal,
        MsgKind::System => MsgKind::System,
        MsgKind::Recall => return Err(bad("a RECALL is appended by recall")),
    };
    match conv.kind {
        ConvKind::P2p if conv.a == conv.b => Err(bad("a P2P conversation with oneself")),
        ConvKind::P2p if conv.a <= 0 || conv.a > conv.b => {
            Err(bad("not a canonical P2P conversation"))
        }
        ConvKind::P2p
            if !req.as_admin && req.sender != 0 && req.sender != conv.a && req.sender != conv.b =>
        {
            Err(forbidden("the sender is not in this P2P conversation"))
        }
        ConvKind::Group | ConvKind::Notice if conv.a <= 0 || conv.b != 0 => {
            Err(bad("bad conversation id"))
        }
        ConvKind::Notice if req.sender != 0 && !req.as_admin => Err(forbidden(
            "only the system appends to a NOTICE conversation",
        )),
        ConvKind::Unspecified => Err(bad("conversation kind unspecified")),
        _ => Ok(kind),
    }
}

impl PgStore {
    pub(super) async fn append_once(&self, req: &AppendReq) -> R<Appended> {
        let kind = check_append(req)?;
        let conv = req.conv;
        let mut client = self.pool.get().await?;
        let mut tx = Tx::new(client.transaction().await?, &self.clock);
        let locked = tx.lock(conv).await?;
        if let Some(h) = &locked
            && !req.client_msg_id.is_empty()
            && let Some((orig, hash)) = tx.dedup(h.conv_id, req.sender, &req.client_msg_id).await?
        {
            return duplicate(h, orig, hash, req.content_hash);
        }
        let mut head = match (conv.kind, locked) {
            (ConvKind::Group, h) => {
                let h = h.ok_or_else(|| not_found("no such group"))?;
                let live = tx
                    .row(
                        "SELECT 1 FROM im_group WHERE gid = $1 AND dissolved_ts IS NULL",
                        &[&conv.a],
                    )
                    .await?;
                if live.is_none() {
                    return Err(not_found("no such group"));
                }
                if req.sender != 0 && !req.as_admin {
                    let current = tx
                        .member(h.conv_id, req.sender)
                        .await?
                        .is_some_and(|m| m.is_current());
                    if !current {
                        return Err(forbidden("not a member of the group"));
                    }
                }
                h
            }
            (_, Some(h)) => h,
            (ConvKind::P2p, None) => tx.create_or_lock(conv, &[conv.a, conv.b]).await?,
            (_, None) => tx.create_or_lock(conv, &[conv.a]).await?,
        };
        let message = tx
            .append_msg(
                &mut head,
                NewMsg {
                    sender: req.sender,
                    sender_platform: &req.sender_platform,
                    client_msg_id: &req.client_msg_id,
                    content_hash: req.content_hash,
                    kind,
                    content_type: req.content_type,
                    content: &req.content,
                    mentions: &req.mentions,
                    ref_seq: req.ref_seq,
                },
            )
            .await?;
        tx.commit().await?;
        Ok(Appended {
            conv_id: head.conv_id,
            message,
            duplicate: false,
            member_version: head.member_version,
        })
    }

    pub(super) async fn recall_once(&self, req: &RecallReq) -> R<Appended> {
        if req.seq == 0 {
            return Err(bad("recall of seq 0"));
        }
        let mut client = self.pool.get().await?;
        let mut tx = Tx::new(client.transaction().await?, &self.clock);
        let mut head = tx
            .lock(req.conv)
            .await?
            .ok_or_else(|| not_found("no such conversation"))?;
        // A recall's "content" is its target: a retry naming another seq is a conflict.
        if !req.client_msg_id.is_empty()
            && let Some((orig, hash)) = tx.dedup(head.conv_id, req.by, &req.client_msg_id).await?
        {
            return duplicate(&head, orig, hash, req.seq);
        }
        if req.seq < head.min_seq {
            return Err(Error::Store(StoreError::Gone(
                "below the retention floor".into(),
            )));
        }
        let sql = format!(
            "SELECT {} FROM im_message m WHERE m.conv_id = $1 AND m.seq = $2",
            super::tx::MSG
        );
        let target = tx
            .row(&sql, &[&big(head.conv_id), &big(req.seq)])
            .await?
            .ok_or_else(|| not_found("no such message"))?;
        let target = super::tx::message(&target)?;
        if target.kind != MsgKind::Normal as i32 {
            return Err(bad("only a NORMAL message can be recalled"));
        }
        if target.recalled {
            return Err(Error::Store(StoreError::Conflict(
                "already recalled".into(),
            )));
        }
        let by = if req.by != 0 {
            tx.member(head.conv_id, req.by).await?
        } else {
            None
        };
        // Owners and admins of a group may recall anyone's message, at any age.
        let privileged = req.as_admin
            || (req.conv.kind == ConvKind::Group
                && by.as_ref().is_some_and(|m| m.is_current() && m.role >= 1));
        if !privileged {
            if target.sender != req.by {
                return Err(forbidden(
                    "only the sender, a group owner or admin may recall",
                ));
            }
            if req.by != 0 && !by.as_ref().is_some_and(|m| m.is_current()) {
                return Err(forbidden("not a member of the conversation"));
            }
            let age = tx.now.saturating_sub(target.server_ts);
            if req.window_ms > 0 && age > 0 && age as u64 > req.window_ms {
                return Err(Error::Store(StoreError::Gone(
                    "the recall window has passed".into(),
                )));
            }
        }
        let wipe = if req.wipe {
            ", content = '', mentions = '{}'"
        } else {
            ""
        };
        tx.exec(
            &format!("UPDATE im_message SET recalled = true{wipe} WHERE conv_id = $1 AND seq = $2"),
            &[&big(head.conv_id), &big(req.seq)],
        )
        .await?;
        let message = tx
            .append_msg(
                &mut head,
                NewMsg {
                    sender: req.by,
                    sender_platform: &req.by_platform,
                    client_msg_id: &req.client_msg_id,
                    content_hash: req.seq,
                    kind: MsgKind::Recall,
                    content_type: 0,
                    content: "",
                    mentions: &[],
                    ref_seq: req.seq,
                },
            )
            .await?;
        tx.commit().await?;
        Ok(Appended {
            conv_id: head.conv_id,
            message,
            duplicate: false,
            member_version: head.member_version,
        })
    }

    pub(super) async fn mark_once(
        &self,
        uid: i64,
        conv: Conv,
        kind: MarkKind,
        seq: u64,
    ) -> R<Marked> {
        let mut client = self.pool.get().await?;
        let tx = Tx::new(client.transaction().await?, &self.clock);
        // No conversation lock: a mark touches one membership row, locked below. A head read
        // before a concurrent append commits only clamps the mark lower.
        let (conv_id, last_seq) = tx
            .row(
                "SELECT conv_id, last_seq FROM im_conversation WHERE kind = $1 AND a = $2 AND b = $3",
                &[&(conv.kind as i16), &conv.a, &conv.b],
            )
            .await?
            .map(|r| (r.get::<_, i64>(0), super::tx::ubig(r.get(1))))
            .ok_or_else(|| not_found("no such conversation"))?;
        let sql = format!(
            "SELECT {} FROM im_member m WHERE m.conv_id = $1 AND m.uid = $2 FOR UPDATE",
            super::tx::MEMBER
        );
        let m = tx
            .row(&sql, &[&conv_id, &uid])
            .await?
            .map(|r| member(&r, 0))
            .ok_or_else(|| forbidden("not a member"))?;
        let target = seq.min(m.ceiling(last_seq));
        let (current, column) = match kind {
            MarkKind::Read => (m.read_seq, "read_seq"),
            MarkKind::Recv => (m.recv_seq, "recv_seq"),
            MarkKind::DeletedTo => (m.deleted_to_seq, "deleted_to_seq"),
        };
        if target <= current {
            return Ok(Marked {
                seq: current,
                moved: false,
            });
        }
        tx.exec(
            &format!(
                "UPDATE im_member SET {column} = $3, updated_ts = $4 WHERE conv_id = $1 AND uid = $2"
            ),
            &[&conv_id, &uid, &big(target), &tx.now],
        )
        .await?;
        tx.commit().await?;
        Ok(Marked {
            seq: target,
            moved: true,
        })
    }

    pub(super) async fn put_user_once(&self, u: &User) -> R<()> {
        let client = self.pool.get().await?;
        let st = client
            .prepare_cached(
                "INSERT INTO im_user (uid, name, avatar, ex, disabled, valid_after_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (uid) DO UPDATE SET \
                 name = EXCLUDED.name, avatar = EXCLUDED.avatar, ex = EXCLUDED.ex, \
                 disabled = EXCLUDED.disabled, updated_at = now(), \
                 valid_after_ms = GREATEST(im_user.valid_after_ms, EXCLUDED.valid_after_ms)",
            )
            .await?;
        client
            .execute(
                &st,
                &[
                    &u.uid,
                    &u.name,
                    &u.avatar,
                    &u.ex,
                    &u.disabled,
                    &u.valid_after_ms,
                ],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn put_contact_once(
        &self,
        owner: i64,
        peer: i64,
        state: Option<&ContactState>,
    ) -> R<u64> {
        let mut client = self.pool.get().await?;
        let tx = Tx::new(client.transaction().await?, &self.clock);
        // The owner's counter row serialises the owner's contact writes.
        let version: i64 = tx
            .row(
                "INSERT INTO im_contact_version (owner, version) VALUES ($1, 1) \
                 ON CONFLICT (owner) DO UPDATE SET version = im_contact_version.version + 1 \
                 RETURNING version",
                &[&owner],
            )
            .await?
            .ok_or_else(|| Error::Store(StoreError::Unavailable("no contact version".into())))?
            .get(0);
        let (kind, remark) = match state {
            Some(s) => (s.kind as i16, s.remark.as_str()),
            None => (0, ""),
        };
        tx.exec(
            "INSERT INTO im_contact (owner, peer, state, remark, version) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner, peer) DO UPDATE SET \
             state = EXCLUDED.state, remark = EXCLUDED.remark, version = EXCLUDED.version, \
             updated_at = now()",
            &[&owner, &peer, &kind, &remark, &version],
        )
        .await?;
        tx.commit().await?;
        Ok(super::tx::ubig(version))
    }
}
