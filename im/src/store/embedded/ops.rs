//! Each write command's rules (the doc comments of [`crate::store::ImStore`]), applied on the
//! writer's overlay: appends, recalls, marks, users and contacts here, groups in `groups`. A
//! command that returns an error has its writes dropped.

use super::Ks;
use super::keys;
use super::overlay::Tx;
use super::records::{ContactRec, DedupRec, UserRec};
use crate::store::{
    AppendReq, Appended, ContactState, Conv, ConvMeta, MarkKind, Marked, MemberState, ROLE_MEMBER,
    RecallReq, StoreError, StoreResult, StoredMessage, User,
};
use prost::Message as _;
use starling_proto::im::v1::{ConvKind, MsgKind};

pub(super) fn bad(s: &str) -> StoreError {
    StoreError::BadRequest(s.into())
}
pub(super) fn forbidden(s: &str) -> StoreError {
    StoreError::Forbidden(s.into())
}
pub(super) fn not_found(s: &str) -> StoreError {
    StoreError::NotFound(s.into())
}

/// A message to append; the writer fills seq, msg_id and server_ts.
pub(super) struct NewMsg {
    sender: i64,
    sender_platform: String,
    client_msg_id: String,
    content_hash: u64,
    kind: MsgKind,
    content_type: i32,
    content: String,
    mentions: Vec<i64>,
    ref_seq: u64,
}

impl NewMsg {
    pub(super) fn system(sender: i64, content: String) -> NewMsg {
        NewMsg {
            sender,
            sender_platform: String::new(),
            client_msg_id: String::new(),
            content_hash: 0,
            kind: MsgKind::System,
            content_type: 0,
            content,
            mentions: Vec::new(),
            ref_seq: 0,
        }
    }
}

impl Tx<'_> {
    /// Allocates the next seq of `conv_id` and stores `m` with its dedup entry; raises the
    /// sender's `read_seq` (§6.5). Returns the stored message.
    pub(super) fn append_msg(&mut self, conv_id: u64, m: NewMsg) -> StoreResult<StoredMessage> {
        let mut head = self.head(conv_id)?;
        let mut c = self.counters();
        let msg = StoredMessage {
            conv: None,
            seq: head.last_seq + 1,
            msg_id: c.msg_id,
            sender: m.sender,
            client_msg_id: m.client_msg_id,
            kind: m.kind as i32,
            content_type: m.content_type,
            content: m.content,
            // Monotonic per conversation even if the clock steps back.
            server_ts: self.now.max(head.last_msg_ts),
            ref_seq: m.ref_seq,
            recalled: false,
            mentions: m.mentions,
            sender_platform: m.sender_platform,
        };
        c.msg_id += 1;
        self.set_counters(c);
        head.last_seq = msg.seq;
        head.last_msg_ts = msg.server_ts;
        self.set_head(head);
        self.put_message(conv_id, &msg);
        if !msg.client_msg_id.is_empty() {
            let d = DedupRec {
                seq: msg.seq,
                msg_id: msg.msg_id,
                content_hash: m.content_hash,
            };
            self.put(
                Ks::Dedup,
                keys::dedup(conv_id, msg.sender, &msg.client_msg_id),
                d.encode_to_vec(),
            );
        }
        if msg.sender != 0
            && let Some(mut me) = self.member(conv_id, msg.sender)?
            && me.read_seq < msg.seq
        {
            me.read_seq = msg.seq;
            me.updated_ts = self.now;
            self.put_member(conv_id, &me);
        }
        Ok(msg)
    }

    /// The answer to a retried `client_msg_id`: the original, or `Conflict`.
    fn duplicate(&mut self, conv_id: u64, d: DedupRec, hash: u64) -> StoreResult<Appended> {
        if d.content_hash != hash {
            return Err(StoreError::Conflict(
                "client_msg_id already used for another message".into(),
            ));
        }
        let head = self.head(conv_id)?;
        // Below the retention floor the original is gone; its ids remain.
        let message = self.message(conv_id, d.seq)?.unwrap_or(StoredMessage {
            seq: d.seq,
            msg_id: d.msg_id,
            ..Default::default()
        });
        Ok(Appended {
            conv_id,
            message,
            duplicate: true,
            member_version: head.member_version,
        })
    }

    pub(super) fn new_member(&self, uid: i64, role: i32, join_seq: u64) -> MemberState {
        MemberState {
            uid,
            role,
            join_seq,
            updated_ts: self.now,
            ..Default::default()
        }
    }

    pub(super) fn bump_member_version(&mut self, conv_id: u64) -> StoreResult<u64> {
        let mut head = self.head(conv_id)?;
        head.member_version += 1;
        let v = head.member_version;
        self.set_head(head);
        Ok(v)
    }

    pub fn append(&mut self, req: AppendReq) -> StoreResult<Appended> {
        let conv = req.conv;
        let kind = match req.kind {
            // The proto default: a plain message.
            MsgKind::Normal | MsgKind::Unspecified => MsgKind::Normal,
            MsgKind::System => MsgKind::System,
            MsgKind::Recall => return Err(bad("a RECALL is appended by recall")),
        };
        match conv.kind {
            ConvKind::P2p if conv.a == conv.b => {
                return Err(bad("a P2P conversation with oneself"));
            }
            ConvKind::P2p if conv.a <= 0 || conv.a > conv.b => {
                return Err(bad("not a canonical P2P conversation"));
            }
            ConvKind::P2p
                if !req.as_admin
                    && req.sender != 0
                    && req.sender != conv.a
                    && req.sender != conv.b =>
            {
                return Err(forbidden("the sender is not in this P2P conversation"));
            }
            ConvKind::Group | ConvKind::Notice if conv.a <= 0 || conv.b != 0 => {
                return Err(bad("bad conversation id"));
            }
            ConvKind::Notice if req.sender != 0 && !req.as_admin => {
                return Err(forbidden(
                    "only the system appends to a NOTICE conversation",
                ));
            }
            ConvKind::Unspecified => return Err(bad("conversation kind unspecified")),
            _ => {}
        }
        let conv_id = self.conv_id(conv)?;
        if let Some(id) = conv_id
            && !req.client_msg_id.is_empty()
            && let Some(d) = self.dedup(id, req.sender, &req.client_msg_id)?
        {
            return self.duplicate(id, d, req.content_hash);
        }
        let conv_id = match (conv.kind, conv_id) {
            (ConvKind::Group, _) => {
                let (_, id) = self.live_group(conv.a)?;
                if req.sender != 0 && !req.as_admin {
                    let current = self.member(id, req.sender)?.is_some_and(|m| m.is_current());
                    if !current {
                        return Err(forbidden("not a member of the group"));
                    }
                }
                id
            }
            (_, Some(id)) => id,
            (ConvKind::P2p, None) => {
                let head = self.create_conv(conv);
                for uid in [conv.a, conv.b] {
                    let m = self.new_member(uid, ROLE_MEMBER, 1);
                    self.put_member(head.conv_id, &m);
                }
                self.bump_member_version(head.conv_id)?;
                head.conv_id
            }
            (_, None) => {
                let head = self.create_conv(conv);
                let m = self.new_member(conv.a, ROLE_MEMBER, 1);
                self.put_member(head.conv_id, &m);
                self.bump_member_version(head.conv_id)?;
                head.conv_id
            }
        };
        let message = self.append_msg(
            conv_id,
            NewMsg {
                sender: req.sender,
                sender_platform: req.sender_platform,
                client_msg_id: req.client_msg_id,
                content_hash: req.content_hash,
                kind,
                content_type: req.content_type,
                content: req.content,
                mentions: req.mentions,
                ref_seq: req.ref_seq,
            },
        )?;
        let member_version = self.head(conv_id)?.member_version;
        Ok(Appended {
            conv_id,
            message,
            duplicate: false,
            member_version,
        })
    }

    pub fn recall(&mut self, req: RecallReq) -> StoreResult<Appended> {
        if req.seq == 0 {
            return Err(bad("recall of seq 0"));
        }
        let conv_id = self
            .conv_id(req.conv)?
            .ok_or_else(|| not_found("no such conversation"))?;
        // A recall's "content" is its target: a retry naming another seq is a conflict.
        if !req.client_msg_id.is_empty()
            && let Some(d) = self.dedup(conv_id, req.by, &req.client_msg_id)?
        {
            return self.duplicate(conv_id, d, req.seq);
        }
        let head = self.head(conv_id)?;
        if req.seq < head.min_seq {
            return Err(StoreError::Gone("below the retention floor".into()));
        }
        let mut target = self
            .message(conv_id, req.seq)?
            .ok_or_else(|| not_found("no such message"))?;
        if target.kind != MsgKind::Normal as i32 {
            return Err(bad("only a NORMAL message can be recalled"));
        }
        if target.recalled {
            return Err(StoreError::Conflict("already recalled".into()));
        }
        // Owners and admins of a group may recall anyone's message, at any age.
        let privileged = req.as_admin
            || (req.conv.kind == ConvKind::Group
                && req.by != 0
                && self
                    .member(conv_id, req.by)?
                    .is_some_and(|m| m.is_current() && m.role >= 1));
        if !privileged {
            if target.sender != req.by {
                return Err(forbidden(
                    "only the sender, a group owner or admin may recall",
                ));
            }
            if req.by != 0
                && !self
                    .member(conv_id, req.by)?
                    .is_some_and(|m| m.is_current())
            {
                return Err(forbidden("not a member of the conversation"));
            }
            let age = self.now.saturating_sub(target.server_ts);
            if req.window_ms > 0 && age > 0 && age as u64 > req.window_ms {
                return Err(StoreError::Gone("the recall window has passed".into()));
            }
        }
        target.recalled = true;
        if req.wipe {
            target.content.clear();
            target.mentions.clear();
        }
        self.put_message(conv_id, &target);
        let message = self.append_msg(
            conv_id,
            NewMsg {
                sender: req.by,
                sender_platform: req.by_platform,
                client_msg_id: req.client_msg_id,
                content_hash: req.seq,
                kind: MsgKind::Recall,
                content_type: 0,
                content: String::new(),
                mentions: Vec::new(),
                ref_seq: req.seq,
            },
        )?;
        let member_version = self.head(conv_id)?.member_version;
        Ok(Appended {
            conv_id,
            message,
            duplicate: false,
            member_version,
        })
    }

    pub fn mark(&mut self, uid: i64, conv: Conv, kind: MarkKind, seq: u64) -> StoreResult<Marked> {
        let conv_id = self
            .conv_id(conv)?
            .ok_or_else(|| not_found("no such conversation"))?;
        let head: ConvMeta = self.head(conv_id)?;
        let mut m = self
            .member(conv_id, uid)?
            .ok_or_else(|| forbidden("not a member"))?;
        let target = seq.min(m.ceiling(head.last_seq));
        let mark = match kind {
            MarkKind::Read => &mut m.read_seq,
            MarkKind::Recv => &mut m.recv_seq,
            MarkKind::DeletedTo => &mut m.deleted_to_seq,
        };
        if target <= *mark {
            return Ok(Marked {
                seq: *mark,
                moved: false,
            });
        }
        *mark = target;
        m.updated_ts = self.now;
        self.put_member(conv_id, &m);
        Ok(Marked {
            seq: target,
            moved: true,
        })
    }

    pub fn put_user(&mut self, u: User) -> StoreResult<()> {
        let key = keys::id(u.uid);
        let old = self
            .get(Ks::User, &key)?
            .map(|v| super::records::decode::<UserRec>("user", &v))
            .transpose()?;
        let mut rec = UserRec::from_user(&u);
        // A revocation time never moves back (0 = unchanged).
        rec.valid_after_ms = rec.valid_after_ms.max(old.map_or(0, |o| o.valid_after_ms));
        self.put(Ks::User, key, rec.encode_to_vec());
        Ok(())
    }

    pub fn put_contact(
        &mut self,
        owner: i64,
        peer: i64,
        state: Option<ContactState>,
    ) -> StoreResult<u64> {
        let key = keys::contact(owner, peer);
        let old = self
            .get(Ks::Contact, &key)?
            .map(|v| super::records::decode::<ContactRec>("contact", &v))
            .transpose()?;
        if let Some(old) = old {
            self.del(Ks::ContactVer, keys::contact_ver(owner, old.version));
        }
        let version = self.contact_version(owner)? + 1;
        self.cmd.contact_ver.insert(owner, version);
        let rec = match state {
            Some(s) => ContactRec {
                kind: s.kind as i32,
                remark: s.remark,
                version,
            },
            None => ContactRec {
                kind: 0,
                remark: String::new(),
                version,
            },
        };
        self.put(Ks::Contact, key, rec.encode_to_vec());
        self.put(
            Ks::ContactVer,
            keys::contact_ver(owner, version),
            keys::id(peer),
        );
        Ok(version)
    }
}
