//! The group commands: create, add and remove members, update, dissolve, set a member
//! (reference im.md §6.1 "Membership changes in a group append SYSTEM messages").

use super::Ks;
use super::keys;
use super::ops::{NewMsg, bad, forbidden, not_found};
use super::overlay::Tx;
use super::records::{GroupRec, MemberRec, decode};
use crate::store::{
    Conv, CreateGroupReq, GroupChange, History, MemberState, MembersChangeReq, ROLE_MEMBER,
    ROLE_OWNER, SetMemberReq, StoreError, StoreResult, StoredMessage, UpdateGroupReq,
};
use std::collections::BTreeSet;

impl Tx<'_> {
    /// A live group and its conversation id.
    pub(super) fn live_group(&mut self, gid: i64) -> StoreResult<(GroupRec, u64)> {
        let g = self
            .group(gid)?
            .filter(|g| !g.dissolved)
            .ok_or_else(|| not_found("no such group"))?;
        let id = self
            .conv_id(Conv::group(gid))?
            .ok_or_else(|| not_found("no such group"))?;
        Ok((g, id))
    }

    fn change(
        &mut self,
        gid: i64,
        conv_id: u64,
        message: StoredMessage,
        added: Vec<i64>,
        removed: Vec<i64>,
    ) -> StoreResult<GroupChange> {
        let member_version = self.head(conv_id)?.member_version;
        Ok(GroupChange {
            gid,
            conv_id,
            message,
            member_version,
            added,
            removed,
        })
    }

    pub fn create_group(&mut self, req: CreateGroupReq) -> StoreResult<GroupChange> {
        if req.owner <= 0 || req.gid < 0 {
            return Err(bad("bad owner or gid"));
        }
        let gid = if req.gid == 0 {
            // Skip ids a caller chose itself.
            let mut c = self.counters();
            while self.group(c.gid)?.is_some() || self.conv_id(Conv::group(c.gid))?.is_some() {
                c.gid += 1;
            }
            let gid = c.gid;
            c.gid += 1;
            self.set_counters(c);
            gid
        } else {
            req.gid
        };
        if self.group(gid)?.is_some() || self.conv_id(Conv::group(gid))?.is_some() {
            return Err(StoreError::Conflict(format!("group {gid} exists")));
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
            return Err(StoreError::TooLarge(format!(
                "{count} members over the limit of {}",
                req.max_members
            )));
        }
        let head = self.create_conv(Conv::group(gid));
        let g = GroupRec {
            name: req.name,
            owner: req.owner,
            ex: req.ex,
            muted: false,
            dissolved: false,
            created_ts: self.now,
            member_count: count as u32,
        };
        self.put_group(gid, &g);
        // Every member's join_seq is 1 either way: the creation message is seq 1.
        let _ = req.history;
        let owner = MemberState {
            role: ROLE_OWNER,
            ..self.new_member(req.owner, ROLE_OWNER, 1)
        };
        self.put_member(head.conv_id, &owner);
        for &u in &members {
            let m = self.new_member(u, ROLE_MEMBER, 1);
            self.put_member(head.conv_id, &m);
        }
        self.bump_member_version(head.conv_id)?;
        let msg = self.append_msg(head.conv_id, NewMsg::system(req.owner, req.content))?;
        let added = std::iter::once(req.owner).chain(members).collect();
        self.change(gid, head.conv_id, msg, added, Vec::new())
    }

    pub fn add_members(&mut self, req: MembersChangeReq) -> StoreResult<GroupChange> {
        let (mut g, conv_id) = self.live_group(req.gid)?;
        let uids: BTreeSet<i64> = req.uids.iter().copied().collect();
        if uids.iter().any(|&u| u <= 0) {
            return Err(bad("member ids must be positive"));
        }
        let mut joining = Vec::new();
        for &u in &uids {
            let prev = self.member(conv_id, u)?;
            if !prev.as_ref().is_some_and(|m| m.is_current()) {
                joining.push((u, prev));
            }
        }
        let count = g.member_count as usize + joining.len();
        if req.max_members > 0 && count > req.max_members as usize {
            return Err(StoreError::TooLarge(format!(
                "{count} members over the limit of {}",
                req.max_members
            )));
        }
        let msg = self.append_msg(conv_id, NewMsg::system(req.by, req.content))?;
        let join_seq = match req.history {
            History::FromJoin => msg.seq,
            History::All => 1,
        };
        let mut added = Vec::with_capacity(joining.len());
        for (u, prev) in joining {
            // A rejoin keeps its marks (they never go down).
            let mut m = prev.unwrap_or_else(|| self.new_member(u, req.role, join_seq));
            m.role = req.role;
            m.join_seq = join_seq;
            m.leave_seq = 0;
            m.updated_ts = self.now;
            self.put_member(conv_id, &m);
            added.push(u);
        }
        g.member_count = count as u32;
        self.put_group(req.gid, &g);
        self.bump_member_version(conv_id)?;
        self.change(req.gid, conv_id, msg, added, Vec::new())
    }

    pub fn remove_members(&mut self, req: MembersChangeReq) -> StoreResult<GroupChange> {
        let (mut g, conv_id) = self.live_group(req.gid)?;
        let uids: BTreeSet<i64> = req.uids.iter().copied().collect();
        if uids.contains(&g.owner) {
            return Err(forbidden("the owner cannot be removed"));
        }
        let msg = self.append_msg(conv_id, NewMsg::system(req.by, req.content))?;
        let mut removed = Vec::new();
        for &u in &uids {
            if let Some(mut m) = self.member(conv_id, u)?.filter(|m| m.is_current()) {
                m.leave_seq = msg.seq;
                m.updated_ts = self.now;
                self.put_member(conv_id, &m);
                removed.push(u);
            }
        }
        g.member_count = g.member_count.saturating_sub(removed.len() as u32);
        self.put_group(req.gid, &g);
        self.bump_member_version(conv_id)?;
        self.change(req.gid, conv_id, msg, Vec::new(), removed)
    }

    pub fn update_group(&mut self, req: UpdateGroupReq) -> StoreResult<GroupChange> {
        let (mut g, conv_id) = self.live_group(req.gid)?;
        if let Some(n) = req.name {
            g.name = n;
        }
        if let Some(ex) = req.ex {
            g.ex = ex;
        }
        if let Some(m) = req.muted {
            g.muted = m;
        }
        self.put_group(req.gid, &g);
        let msg = self.append_msg(conv_id, NewMsg::system(0, req.content))?;
        self.change(req.gid, conv_id, msg, Vec::new(), Vec::new())
    }

    pub fn dissolve_group(&mut self, gid: i64, content: String) -> StoreResult<GroupChange> {
        let (mut g, conv_id) = self.live_group(gid)?;
        let msg = self.append_msg(conv_id, NewMsg::system(0, content))?;
        let mut removed = Vec::new();
        for v in self
            .scan_prefix(Ks::Member, &keys::prefix_u(conv_id))?
            .into_values()
        {
            let mut m = decode::<MemberRec>("member", &v)?.into_state();
            if m.is_current() {
                m.leave_seq = msg.seq;
                m.updated_ts = self.now;
                self.put_member(conv_id, &m);
                removed.push(m.uid);
            }
        }
        g.dissolved = true;
        g.member_count = 0;
        self.put_group(gid, &g);
        self.bump_member_version(conv_id)?;
        self.change(gid, conv_id, msg, Vec::new(), removed)
    }

    pub fn set_member(&mut self, req: SetMemberReq) -> StoreResult<()> {
        let (_, conv_id) = self.live_group(req.gid)?;
        let mut m = self
            .member(conv_id, req.uid)?
            .filter(|m| m.is_current())
            .ok_or_else(|| not_found("not a member"))?;
        if let Some(r) = req.role {
            if !(0..=ROLE_OWNER).contains(&r) {
                return Err(bad("role must be 0, 1 or 2"));
            }
            m.role = r;
        }
        if let Some(t) = req.muted_until_ms {
            m.muted_until_ms = t;
        }
        m.updated_ts = self.now;
        self.put_member(conv_id, &m);
        self.bump_member_version(conv_id)?;
        Ok(())
    }
}
