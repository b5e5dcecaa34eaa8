//! `/im/v1/groups` routes (reference im.md §8 "groups"): the service functions of
//! [`crate::groups`] over HTTP. A change that appended a SYSTEM message replies
//! `{gid, seq, msgId, memberVersion, added, removed}` (`seq`: the SYSTEM message's, which is
//! the new members' `joinSeq` or the removed members' `leaveSeq`); `memberVersion` lets a
//! caller loading a large membership in calls of ≤ 1000 uids checkpoint and retry.
//!
//! Each operation is one transport-free function (`create_group`, `add_members`, ...) that
//! the HTTP handlers here and the gRPC service ([`super::grpc`]) both call.

use super::{ApiError, ApiResult, Body, I64, P, Q, St, as_str, as_strs, ok, proto_json, uid};
use super::{MAX_NAME, fits, plain_text};
use crate::groups::{GroupPatch, NewGroup};
use crate::service::Im;
use crate::store::{Group, GroupChange, History, SetMemberReq};
use axum::extract::State;
use serde::{Deserialize, Deserializer, Serialize};
use starling_proto::im::v1::{MembersReply, MembersReq};

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
    let (group, change) = create_group(&api.im, g).await?;
    let mut out = serde_json::to_value(GroupOut::from(group)).unwrap_or_default();
    out["change"] = serde_json::to_value(ChangeOut::from(change)).unwrap_or_default();
    ok(out)
}

/// Creates the group and its conversation (SYSTEM "group_created" at seq 1); returns the
/// stored group and that change. 400 bad owner or gid or a name that is not
/// [`plain_text`], 409 gid taken, 413 a name or `ex`
/// over its limit, over 1000 uids or over `im.max_group_members`.
pub async fn create_group(im: &Im, g: NewGroup) -> Result<(Group, GroupChange), ApiError> {
    fits("name", Some(&g.name), MAX_NAME)?;
    plain_text("name", Some(&g.name))?;
    fits("ex", Some(&g.ex), im.config.max_content as usize)?;
    let change = im.create_group(g).await?;
    let group = im
        .store
        .group(change.gid)
        .await?
        .ok_or_else(|| ApiError::new(404, "group vanished"))?;
    Ok((group, change))
}

/// `GET /im/v1/groups/{gid}` → the group; 404 if it never existed (a dissolved one is shown
/// with `dissolved: true`).
pub async fn get_group(State(api): State<St>, P(gid): P<i64>) -> ApiResult {
    ok(GroupOut::from(group(&api.im, gid).await?))
}

/// The group `gid` (dissolved ones too); 404 if it never existed.
pub async fn group(im: &Im, gid: i64) -> Result<Group, ApiError> {
    let gid = uid(gid, "gid")?;
    im.store
        .group(gid)
        .await?
        .ok_or_else(|| ApiError::new(404, format!("group {gid}")))
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
    let patch = GroupPatch {
        name: req.name,
        ex: req.ex,
        muted: req.muted,
    };
    ok(ChangeOut::from(
        update_group(&api.im, gid, req.by.0, patch).await?,
    ))
}

/// Applies `patch` to group `gid` by `by` (0 = the system): one SYSTEM "group_updated"
/// message. 400 nothing changes or a name that is not [`plain_text`], 404 missing or
/// dissolved, 413 a field over its limit.
pub async fn update_group(
    im: &Im,
    gid: i64,
    by: i64,
    patch: GroupPatch,
) -> Result<GroupChange, ApiError> {
    let gid = uid(gid, "gid")?;
    let by = super::by(by)?;
    fits("name", patch.name.as_deref(), MAX_NAME)?;
    plain_text("name", patch.name.as_deref())?;
    fits("ex", patch.ex.as_deref(), im.config.max_content as usize)?;
    Ok(im.update_group(gid, by, patch).await?)
}

#[derive(Deserialize)]
pub struct ByQuery {
    #[serde(default)]
    by: i64,
}

/// `DELETE /im/v1/groups/{gid}?by=` → [`ChangeOut`]: dissolves the group (SYSTEM
/// "group_dissolved" message; every membership ends at its seq; the log stays readable).
pub async fn dissolve(State(api): State<St>, P(gid): P<i64>, Q(q): Q<ByQuery>) -> ApiResult {
    ok(ChangeOut::from(dissolve_group(&api.im, gid, q.by).await?))
}

/// Dissolves group `gid` (SYSTEM "group_dissolved"; every membership ends at its seq).
pub async fn dissolve_group(im: &Im, gid: i64, by: i64) -> Result<GroupChange, ApiError> {
    Ok(im.dissolve_group(uid(gid, "gid")?, super::by(by)?).await?)
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
    let uids = req.uids.iter().map(|u| u.0).collect();
    let history = req.history.unwrap_or_default();
    let change = add_members(&api.im, gid, req.by.0, uids, req.role, history).await?;
    ok(ChangeOut::from(change))
}

/// Adds `uids` (≤ 1000; members already in are skipped) to group `gid` with `role`: one
/// SYSTEM "members_added" message whose seq is their `join_seq` (or 1 with `History::All`).
pub async fn add_members(
    im: &Im,
    gid: i64,
    by: i64,
    uids: Vec<i64>,
    role: i32,
    history: History,
) -> Result<GroupChange, ApiError> {
    let gid = uid(gid, "gid")?;
    Ok(im
        .add_members(gid, super::by(by)?, uids, role, history)
        .await?)
}

/// `DELETE /im/v1/groups/{gid}/members {uids[] ≤ 1000, by?}` → [`ChangeOut`]: one SYSTEM
/// "members_removed" message, the removed members' `leaveSeq`; 403 for the owner.
pub async fn remove(
    State(api): State<St>,
    P(gid): P<i64>,
    Body(req): Body<MembersIn>,
) -> ApiResult {
    let uids = req.uids.iter().map(|u| u.0).collect();
    ok(ChangeOut::from(
        remove_members(&api.im, gid, req.by.0, uids).await?,
    ))
}

/// Removes `uids` from group `gid`: one SYSTEM "members_removed" message, their
/// `leave_seq`; 403 for the owner.
pub async fn remove_members(
    im: &Im,
    gid: i64,
    by: i64,
    uids: Vec<i64>,
) -> Result<GroupChange, ApiError> {
    Ok(im
        .remove_members(uid(gid, "gid")?, super::by(by)?, uids)
        .await?)
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
    let req = SetMemberReq {
        gid,
        uid: id,
        role: req.role,
        muted_until_ms: req.muted_until.map(|m| m.0),
    };
    let (gid, id) = update_member(&api.im, req).await?;
    ok(serde_json::json!({ "gid": gid.to_string(), "uid": id.to_string() }))
}

/// Sets a member's role (0 member, 1 admin) and/or mute end (ms); returns `(gid, uid)`.
/// 400 nothing to change or a bad role, 404 not a member.
pub async fn update_member(im: &Im, mut req: SetMemberReq) -> Result<(i64, i64), ApiError> {
    req.gid = uid(req.gid, "gid")?;
    req.uid = uid(req.uid, "uid")?;
    let ids = (req.gid, req.uid);
    im.set_member(req).await?;
    Ok(ids)
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
    let req = MembersReq {
        gid,
        cursor: q.cursor,
        limit: q.limit,
    };
    ok(proto_json(&members_page(&api.im, &req).await?))
}

/// A page of group `req.gid`'s current members, ascending by uid, with their read marks.
pub async fn members_page(im: &Im, req: &MembersReq) -> Result<MembersReply, ApiError> {
    uid(req.gid, "gid")?;
    Ok(crate::read::members_page(im, None, req).await?)
}
