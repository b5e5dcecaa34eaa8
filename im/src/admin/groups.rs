//! `/im/v1/groups` routes (reference im.md §8 "groups"): the service functions of
//! [`crate::groups`] over HTTP. A change that appended a SYSTEM message replies
//! `{gid, seq, msgId, memberVersion, added, removed}` (`seq`: the SYSTEM message's, which is
//! the new members' `joinSeq` or the removed members' `leaveSeq`); `memberVersion` lets a
//! caller loading a large membership in calls of ≤ 1000 uids checkpoint and retry.

use super::{ApiError, ApiResult, Body, I64, P, Q, St, as_str, as_strs, ok, proto_json, uid};
use crate::groups::{GroupPatch, NewGroup};
use crate::store::{Group, GroupChange, History, SetMemberReq};
use axum::extract::State;
use serde::{Deserialize, Deserializer, Serialize};
use starling_proto::im::v1::MembersReq;

/// `from_join` (default: new members read from the "added" message on) or `all`.
fn history<'de, D: Deserializer<'de>>(d: D) -> Result<Option<History>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s.map(|s| s.to_ascii_lowercase().replace(['_', '-'], "")) {
        None => Ok(None),
        Some(s) if s == "fromjoin" => Ok(Some(History::FromJoin)),
        Some(s) if s == "all" => Ok(Some(History::All)),
        Some(s) => Err(serde::de::Error::custom(format!(
            "history {s:?}: from_join or all"
        ))),
    }
}

/// A group as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupOut {
    #[serde(serialize_with = "as_str")]
    gid: i64,
    name: String,
    #[serde(serialize_with = "as_str")]
    owner: i64,
    ex: String,
    muted: bool,
    dissolved: bool,
    #[serde(serialize_with = "as_str")]
    created_ts: i64,
    member_count: u32,
}

impl From<Group> for GroupOut {
    fn from(g: Group) -> Self {
        GroupOut {
            gid: g.gid,
            name: g.name,
            owner: g.owner,
            ex: g.ex,
            muted: g.muted,
            dissolved: g.dissolved,
            created_ts: g.created_ts,
            member_count: g.member_count,
        }
    }
}

/// What a group change replies.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeOut {
    #[serde(serialize_with = "as_str")]
    gid: i64,
    /// The SYSTEM message's seq.
    #[serde(serialize_with = "as_str")]
    seq: u64,
    #[serde(serialize_with = "as_str")]
    msg_id: u64,
    #[serde(serialize_with = "as_str")]
    member_version: u64,
    #[serde(serialize_with = "as_strs")]
    added: Vec<i64>,
    #[serde(serialize_with = "as_strs")]
    removed: Vec<i64>,
}

impl From<GroupChange> for ChangeOut {
    fn from(c: GroupChange) -> Self {
        ChangeOut {
            gid: c.gid,
            seq: c.message.seq,
            msg_id: c.message.msg_id,
            member_version: c.member_version,
            added: c.added,
            removed: c.removed,
        }
    }
}

#[derive(Deserialize)]
pub struct CreateReq {
    #[serde(default)]
    gid: I64,
    #[serde(default)]
    name: String,
    owner: I64,
    #[serde(default)]
    members: Vec<I64>,
    #[serde(default, deserialize_with = "history")]
    history: Option<History>,
    #[serde(default)]
    ex: String,
}

/// `POST /im/v1/groups {gid?, name, owner, members[] ≤ 1000, history?: from_join|all, ex?}`
/// → the group (`{gid, name, owner, ex, muted, dissolved, createdTs, memberCount}`, the gid
/// assigned when omitted) with `change` (the [`ChangeOut`] of its "group_created" message at
/// seq 1). 409 if the gid is taken; 413 over 1000 uids or `im.max_group_members`.
pub async fn create(State(api): State<St>, Body(req): Body<CreateReq>) -> ApiResult {
    let g = NewGroup {
        gid: req.gid.0,
        name: req.name,
        owner: req.owner.0,
        members: req.members.iter().map(|u| u.0).collect(),
        history: req.history.unwrap_or_default(),
        ex: req.ex,
    };
    let change = api.im.create_group(g).await?;
    let group = api
        .im
        .store
        .group(change.gid)
        .await?
        .ok_or_else(|| ApiError::new(404, "group vanished"))?;
    let mut out = serde_json::to_value(GroupOut::from(group)).unwrap_or_default();
    out["change"] = serde_json::to_value(ChangeOut::from(change)).unwrap_or_default();
    ok(out)
}

/// `GET /im/v1/groups/{gid}` → the group; 404 if it never existed (a dissolved one is shown
/// with `dissolved: true`).
pub async fn get_group(State(api): State<St>, P(gid): P<i64>) -> ApiResult {
    let gid = uid(gid, "gid")?;
    match api.im.store.group(gid).await? {
        Some(g) => ok(GroupOut::from(g)),
        None => Err(ApiError::new(404, format!("group {gid}"))),
    }
}

#[derive(Deserialize)]
pub struct PatchReq {
    name: Option<String>,
    ex: Option<String>,
    muted: Option<bool>,
    #[serde(default)]
    by: I64,
}

/// `PATCH /im/v1/groups/{gid} {name?, ex?, muted?, by?}` → [`ChangeOut`]: one SYSTEM
/// "group_updated" message naming the changes (`by`: who, 0 = the system). 400 when nothing
/// changes; 404 for a missing or dissolved group.
pub async fn update(State(api): State<St>, P(gid): P<i64>, Body(req): Body<PatchReq>) -> ApiResult {
    let gid = uid(gid, "gid")?;
    let patch = GroupPatch {
        name: req.name,
        ex: req.ex,
        muted: req.muted,
    };
    ok(ChangeOut::from(
        api.im.update_group(gid, req.by.0, patch).await?,
    ))
}

#[derive(Deserialize)]
pub struct ByQuery {
    #[serde(default)]
    by: i64,
}

/// `DELETE /im/v1/groups/{gid}?by=` → [`ChangeOut`]: dissolves the group (SYSTEM
/// "group_dissolved" message; every membership ends at its seq; the log stays readable).
pub async fn dissolve(State(api): State<St>, P(gid): P<i64>, Q(q): Q<ByQuery>) -> ApiResult {
    let gid = uid(gid, "gid")?;
    ok(ChangeOut::from(api.im.dissolve_group(gid, q.by).await?))
}

#[derive(Deserialize)]
pub struct MembersIn {
    uids: Vec<I64>,
    #[serde(default)]
    role: i32,
    #[serde(default, deserialize_with = "history")]
    history: Option<History>,
    #[serde(default)]
    by: I64,
}

/// `POST /im/v1/groups/{gid}/members {uids[] ≤ 1000, role?: 0|1, history?, by?}` →
/// [`ChangeOut`]: one SYSTEM "members_added" message; `added` lists who joined (members
/// already in are skipped). 413 over 1000 uids or `im.max_group_members`.
pub async fn add(State(api): State<St>, P(gid): P<i64>, Body(req): Body<MembersIn>) -> ApiResult {
    let gid = uid(gid, "gid")?;
    let uids = req.uids.iter().map(|u| u.0).collect();
    let change = api
        .im
        .add_members(
            gid,
            req.by.0,
            uids,
            req.role,
            req.history.unwrap_or_default(),
        )
        .await?;
    ok(ChangeOut::from(change))
}

/// `DELETE /im/v1/groups/{gid}/members {uids[] ≤ 1000, by?}` → [`ChangeOut`]: one SYSTEM
/// "members_removed" message, the removed members' `leaveSeq`; 403 for the owner.
pub async fn remove(
    State(api): State<St>,
    P(gid): P<i64>,
    Body(req): Body<MembersIn>,
) -> ApiResult {
    let gid = uid(gid, "gid")?;
    let uids = req.uids.iter().map(|u| u.0).collect();
    ok(ChangeOut::from(
        api.im.remove_members(gid, req.by.0, uids).await?,
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetMemberIn {
    role: Option<i32>,
    /// ms since the epoch; 0 = not muted.
    #[serde(alias = "muted_until")]
    muted_until: Option<I64>,
}

/// `PATCH /im/v1/groups/{gid}/members/{uid} {role?: 0|1, mutedUntil?: ms}` → `{gid, uid}`.
/// 404 if not a member.
pub async fn set_member(
    State(api): State<St>,
    P((gid, id)): P<(i64, i64)>,
    Body(req): Body<SetMemberIn>,
) -> ApiResult {
    let (gid, id) = (uid(gid, "gid")?, uid(id, "uid")?);
    let req = SetMemberReq {
        gid,
        uid: id,
        role: req.role,
        muted_until_ms: req.muted_until.map(|m| m.0),
    };
    api.im.set_member(req).await?;
    ok(serde_json::json!({ "gid": gid.to_string(), "uid": id.to_string() }))
}

#[derive(Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: u32,
}

/// `GET /im/v1/groups/{gid}/members?cursor=&limit=` → `{members: [{uid, role, readSeq}],
/// cursor, hasMore}` (`MembersReply` in the proto3 JSON mapping, without `code`): current
/// members ascending by uid; `limit` default 100, at most 1000.
pub async fn members(State(api): State<St>, P(gid): P<i64>, Q(q): Q<PageQuery>) -> ApiResult {
    let gid = uid(gid, "gid")?;
    let req = MembersReq {
        gid,
        cursor: q.cursor,
        limit: q.limit,
    };
    ok(proto_json(
        &crate::read::members_page(&api.im, None, &req).await?,
    ))
}
