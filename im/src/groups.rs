//! Group changes (reference im.md §8 "groups", §6.1): create, update, dissolve, add and remove
//! members, set a member's role or mute. Every change that appends a SYSTEM message goes
//! through the conversation's lane ([`crate::lane`]) like a send, so its message is delivered
//! in seq order with the conversation's other messages; members who joined or left also get an
//! `Event{CONV_ADDED}` / `Event{CONV_REMOVED}` (op 43) on their devices, after the message.
//!
//! # SYSTEM message contents
//! The `content` of each SYSTEM message is a small JSON object (content_type 0); 64-bit ids are
//! decimal strings, as everywhere in IM's JSON (proto3 mapping):
//! - create: `{"type":"group_created","by":"<owner>","name":"…","uids":["<owner>","<member>",…]}`
//! - update: `{"type":"group_updated","by":"<uid|0>"}` plus the changed fields among
//!   `"name"`, `"ex"`, `"muted"`
//! - dissolve: `{"type":"group_dissolved","by":"<uid|0>"}`
//! - add: `{"type":"members_added","by":"<uid|0>","uids":[…]}`
//! - remove: `{"type":"members_removed","by":"<uid|0>","uids":[…]}`
//!
//! `by` 0 is the system (the management API without a `by`).

use crate::lane::Written;
use crate::service::{Im, now_ms};
use crate::store::{
    Conv, CreateGroupReq, GroupChange, History, MembersChangeReq, SetMemberReq, StoreError,
    StoreResult, UpdateGroupReq,
};
use serde_json::{Value, json};
use starling_proto::im::v1::{Event, event};
use std::sync::atomic::Ordering;
use tracing::warn;

/// Most uids in one membership call (group creation included), reference im.md §8 "Large
/// memberships": bigger memberships are loaded in several calls.
pub const MAX_UIDS_PER_CALL: usize = 1000;

/// A group to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewGroup {
    /// 0 = the store assigns one.
    pub gid: i64,
    pub name: String,
    /// Becomes a member with role owner (2).
    pub owner: i64,
    /// Besides the owner, ≤ [`MAX_UIDS_PER_CALL`]; duplicates and the owner are ignored.
    pub members: Vec<i64>,
    pub history: History,
    /// Business JSON, opaque.
    pub ex: String,
}

/// A group profile change; `None` leaves a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupPatch {
    pub name: Option<String>,
    pub ex: Option<String>,
    pub muted: Option<bool>,
}

fn ids(uids: &[i64]) -> Vec<String> {
    uids.iter().map(i64::to_string).collect()
}

/// Refuses an empty, oversized or non-positive uid list: `BadRequest` or `TooLarge` (413).
fn check_uids(uids: &[i64], allow_empty: bool) -> StoreResult<()> {
    if uids.len() > MAX_UIDS_PER_CALL {
        return Err(StoreError::TooLarge(format!(
            "{} uids in one call; at most {MAX_UIDS_PER_CALL}",
            uids.len()
        )));
    }
    if uids.is_empty() && !allow_empty {
        return Err(StoreError::BadRequest("uids is empty".into()));
    }
    if let Some(bad) = uids.iter().find(|u| **u <= 0) {
        return Err(StoreError::BadRequest(format!(
            "uid {bad} is not a user id (> 0)"
        )));
    }
    Ok(())
}

impl Im {
    /// Runs a group write on the group's lane: stored, its SYSTEM message delivered in seq
    /// order, then answered. A delivery that could not be handed over is logged and counted;
    /// the change stands (members heal by sync).
    async fn group_write<F>(&self, gid: i64, write: F) -> StoreResult<GroupChange>
    where
        F: FnOnce() -> crate::store::BoxFuture<'static, StoreResult<GroupChange>> + Send + 'static,
    {
        let landed = self
            .lanes
            .write(Conv::group(gid), None, move || {
                Box::pin(async move {
                    let c = write().await?;
                    Ok(Written {
                        deliver: vec![c.message.clone()],
                        reply: c,
                        delivered: None,
                    })
                })
            })
            .await;
        let change = landed.result?;
        if let Err(e) = landed.delivered {
            self.stats.delivery_failures.fetch_add(1, Ordering::Relaxed);
            warn!(gid, error = %e, "group change stored, its message not handed to delivery");
        }
        Ok(change)
    }

    /// `Event{ty}` (op 43) to the devices of `uids` about group `gid`, after its message.
    async fn group_event(&self, gid: i64, uids: &[i64], ty: event::Type, by: i64, seq: u64) {
        if uids.is_empty() {
            return;
        }
        let conv = Conv::group(gid);
        let ts = now_ms();
        let sent = self
            .delivery
            .event(uids, "", conv.partition_key(), |viewer| Event {
                r#type: ty as i32,
                conv: Some(conv.view(viewer)),
                uid: by,
                seq,
                ts,
                ..Default::default()
            })
            .await;
        if let Err(e) = sent {
            warn!(gid, error = %e, "group event not handed over");
        }
    }

    /// Creates a group (`POST /im/v1/groups`): its conversation, the owner (role 2) and
    /// members, and the SYSTEM "group_created" message at seq 1; `Event{CONV_ADDED}` to every
    /// member's devices. Errors: `BadRequest` (owner ≤ 0, bad uids), `TooLarge` (over
    /// [`MAX_UIDS_PER_CALL`] or `im.max_group_members`), `Conflict` (gid taken).
    pub async fn create_group(&self, g: NewGroup) -> StoreResult<GroupChange> {
        if g.owner <= 0 {
            return Err(StoreError::BadRequest(
                "owner must be a user id (> 0)".into(),
            ));
        }
        if g.gid < 0 {
            return Err(StoreError::BadRequest(
                "gid must be positive (or 0 = assign)".into(),
            ));
        }
        check_uids(&g.members, true)?;
        let mut uids = vec![g.owner];
        for u in &g.members {
            if !uids.contains(u) {
                uids.push(*u);
            }
        }
        let content = json!({
            "type": "group_created",
            "by": g.owner.to_string(),
            "name": g.name,
            "uids": ids(&uids),
        });
        let req = CreateGroupReq {
            gid: g.gid,
            name: g.name,
            owner: g.owner,
            members: g.members,
            history: g.history,
            ex: g.ex,
            content: content.to_string(),
            max_members: self.config.max_group_members,
        };
        let store = self.store.clone();
        let change = if req.gid != 0 {
            self.group_write(req.gid, move || {
                Box::pin(async move { store.create_group(req).await })
            })
            .await?
        } else {
            // The gid is the store's to assign, so the lane is known only after the write.
            // Nobody can write to a group whose id nobody knows yet: deliver through its lane
            // right after.
            let change = store.create_group(req).await?;
            let msg = change.message.clone();
            let landed = self
                .lanes
                .write(Conv::group(change.gid), None, move || {
                    Box::pin(async move {
                        Ok(Written {
                            deliver: vec![msg],
                            reply: (),
                            delivered: None,
                        })
                    })
                })
                .await;
            if let Err(e) = landed.delivered {
                self.stats.delivery_failures.fetch_add(1, Ordering::Relaxed);
                warn!(gid = change.gid, error = %e, "group created, its message not handed over");
            }
            change
        };
        let mut members = change.added.clone();
        if members.is_empty() {
            members = uids;
        }
        self.group_event(
            change.gid,
            &members,
            event::Type::ConvAdded,
            g.owner,
            change.message.seq,
        )
        .await;
        Ok(change)
    }

    /// Updates a group's profile (`PATCH /im/v1/groups/{gid}`) with one SYSTEM
    /// "group_updated" message naming the changed fields. `BadRequest` if nothing changes,
    /// `NotFound` for a missing or dissolved group.
    pub async fn update_group(
        &self,
        gid: i64,
        by: i64,
        patch: GroupPatch,
    ) -> StoreResult<GroupChange> {
        let mut content = serde_json::Map::new();
        content.insert("type".into(), Value::from("group_updated"));
        content.insert("by".into(), Value::from(by.to_string()));
        if let Some(n) = &patch.name {
            content.insert("name".into(), Value::from(n.clone()));
        }
        if let Some(x) = &patch.ex {
            content.insert("ex".into(), Value::from(x.clone()));
        }
        if let Some(m) = patch.muted {
            content.insert("muted".into(), Value::from(m));
        }
        if content.len() == 2 {
            return Err(StoreError::BadRequest(
                "nothing to change: name, ex or muted".into(),
            ));
        }
        let req = UpdateGroupReq {
            gid,
            name: patch.name,
            ex: patch.ex,
            muted: patch.muted,
            content: Value::Object(content).to_string(),
        };
        let store = self.store.clone();
        self.group_write(gid, move || {
            Box::pin(async move { store.update_group(req).await })
        })
        .await
    }

    /// Dissolves a group (`DELETE /im/v1/groups/{gid}`): a SYSTEM "group_dissolved" message,
    /// every membership ends at its seq (the log stays readable), `Event{CONV_REMOVED}` to the
    /// members' devices. `NotFound` for a missing or already dissolved group.
    pub async fn dissolve_group(&self, gid: i64, by: i64) -> StoreResult<GroupChange> {
        let conv = Conv::group(gid);
        let before: Vec<i64> = self
            .store
            .members(conv, 0, usize::MAX, true)
            .await?
            .iter()
            .map(|m| m.uid)
            .collect();
        let content = json!({ "type": "group_dissolved", "by": by.to_string() }).to_string();
        let store = self.store.clone();
        let change = self
            .group_write(gid, move || {
                Box::pin(async move { store.dissolve_group(gid, content).await })
            })
            .await?;
        let gone = if change.removed.is_empty() {
            before
        } else {
            change.removed.clone()
        };
        self.group_event(gid, &gone, event::Type::ConvRemoved, by, change.message.seq)
            .await;
        Ok(change)
    }

    /// Adds members (`POST /im/v1/groups/{gid}/members`, set semantics): one SYSTEM
    /// "members_added" message whose seq is the new members' `join_seq` (or 1 with
    /// `History::All`), then `Event{CONV_ADDED}` to their devices. `uids` ≤
    /// [`MAX_UIDS_PER_CALL`] (`TooLarge` otherwise); `TooLarge` over `im.max_group_members`;
    /// `NotFound` for a missing or dissolved group.
    pub async fn add_members(
        &self,
        gid: i64,
        by: i64,
        uids: Vec<i64>,
        role: i32,
        history: History,
    ) -> StoreResult<GroupChange> {
        check_uids(&uids, false)?;
        if !(0..=1).contains(&role) {
            return Err(StoreError::BadRequest(
                "role of an added member: 0 member or 1 admin".into(),
            ));
        }
        // Only who actually joins: a retried or redundant call writes nothing.
        let current = self.current_members(gid).await?;
        let uids: Vec<i64> = uids.into_iter().filter(|u| !current.contains(u)).collect();
        if uids.is_empty() {
            return self.unchanged(gid).await;
        }
        let content = json!({ "type": "members_added", "by": by.to_string(), "uids": ids(&uids) });
        let req = MembersChangeReq {
            gid,
            uids,
            role,
            history,
            by,
            content: content.to_string(),
            max_members: self.config.max_group_members,
        };
        let store = self.store.clone();
        let change = self
            .group_write(gid, move || {
                Box::pin(async move { store.add_members(req).await })
            })
            .await?;
        self.group_event(
            gid,
            &change.added,
            event::Type::ConvAdded,
            by,
            change.message.seq,
        )
        .await;
        Ok(change)
    }

    /// The current members of a live group (`NotFound` for a missing or dissolved one).
    async fn current_members(&self, gid: i64) -> StoreResult<std::collections::HashSet<i64>> {
        match self.store.group(gid).await? {
            Some(g) if !g.dissolved => {}
            _ => return Err(StoreError::NotFound(format!("group {gid}"))),
        }
        let ms = self
            .store
            .members(Conv::group(gid), 0, usize::MAX, true)
            .await?;
        Ok(ms.iter().map(|m| m.uid).collect())
    }

    /// The answer to a membership call that changes nothing: no message (its `seq` is 0),
    /// the current `member_version`.
    async fn unchanged(&self, gid: i64) -> StoreResult<GroupChange> {
        let meta = self
            .store
            .conversation(Conv::group(gid))
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("group {gid}")))?;
        Ok(GroupChange {
            gid,
            conv_id: meta.conv_id,
            message: Default::default(),
            member_version: meta.member_version,
            added: Vec::new(),
            removed: Vec::new(),
        })
    }

    /// Removes members (`DELETE /im/v1/groups/{gid}/members`, set semantics): one SYSTEM
    /// "members_removed" message whose seq is their `leave_seq`, so they receive it (delivery
    /// reads them up to it) and may read up to it; then `Event{CONV_REMOVED}` to their
    /// devices. The owner cannot be removed (`Forbidden`).
    pub async fn remove_members(
        &self,
        gid: i64,
        by: i64,
        uids: Vec<i64>,
    ) -> StoreResult<GroupChange> {
        check_uids(&uids, false)?;
        // Only who actually leaves: removing a non-member writes nothing.
        let current = self.current_members(gid).await?;
        let uids: Vec<i64> = uids.into_iter().filter(|u| current.contains(u)).collect();
        if uids.is_empty() {
            return self.unchanged(gid).await;
        }
        let content =
            json!({ "type": "members_removed", "by": by.to_string(), "uids": ids(&uids) });
        let req = MembersChangeReq {
            gid,
            uids,
            by,
            content: content.to_string(),
            max_members: self.config.max_group_members,
            ..MembersChangeReq::default()
        };
        let store = self.store.clone();
        let change = self
            .group_write(gid, move || {
                Box::pin(async move { store.remove_members(req).await })
            })
            .await?;
        self.group_event(
            gid,
            &change.removed,
            event::Type::ConvRemoved,
            by,
            change.message.seq,
        )
        .await;
        Ok(change)
    }

    /// Sets a member's role (0 member, 1 admin; the owner's role is not changed here) and/or
    /// mute (`muted_until_ms`, ms since the epoch; 0 = not muted)
    /// (`PATCH /im/v1/groups/{gid}/members/{uid}`). No SYSTEM message. `NotFound` if not a
    /// member.
    pub async fn set_member(&self, req: SetMemberReq) -> StoreResult<()> {
        if req.role.is_some_and(|r| !(0..=1).contains(&r)) {
            return Err(StoreError::BadRequest("role: 0 member or 1 admin".into()));
        }
        if req.role.is_none() && req.muted_until_ms.is_none() {
            return Err(StoreError::BadRequest(
                "nothing to change: role or mutedUntil".into(),
            ));
        }
        self.store.set_member(req).await
    }
}
