//! `/im/v1` routes about one user (reference im.md §8 "tokens", "users", "contacts",
//! "conversations"; §13 point 6 for revocation). Shapes are in each handler's doc.
//!
//! Each operation is one transport-free function (`mint_token`, `upsert_user`, ...) taking
//! the IM service and typed arguments; the HTTP handlers here and the gRPC service
//! ([`super::grpc`]) only decode, call it, and encode.

use super::{ApiError, ApiResult, Body, ConvIn, I64, P, Q, St, U64, as_str, ok, proto_json, uid};
use super::{MAX_AVATAR, MAX_NAME, fits, plain_text};
use crate::devices::Device;
use crate::service::{Im, kick, now_ms};
use crate::store::{Contact, ContactKind, ContactState, MarkKind, Marked, User};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use starling_proto::im::v1::{SyncReply, SyncReq};

/// Default token lifetime, seconds.
pub const TOKEN_TTL_DEFAULT: u64 = 86_400;
/// Longest token lifetime, seconds (30 days).
pub const TOKEN_TTL_MAX: u64 = 30 * 86_400;
/// Contacts per page: default and most.
pub const CONTACTS_LIMIT_DEFAULT: usize = 100;
pub const CONTACTS_LIMIT_MAX: usize = 1000;

#[derive(Deserialize)]
pub struct TokenReq {
    uid: I64,
    #[serde(default)]
    platform: String,
    /// Seconds.
    ttl: Option<U64>,
}

/// `POST /im/v1/tokens {uid, platform?, ttl?}` → `{token, expiresAt}`: an `im_token` for
/// `uid` (bound to `platform` when given), valid `ttl` seconds (default 86400, at most 30
/// days); `expiresAt` in ms. 403 for a disabled user; 503 when IM has no `token_secret`
/// (`insecure_trust_mid` development mode: nothing to sign with, and no token needed).
pub async fn token(State(api): State<St>, Body(req): Body<TokenReq>) -> ApiResult {
    let ttl = req.ttl.map_or(TOKEN_TTL_DEFAULT, |t| t.0);
    let m = mint_token(&api.im, req.uid.0, &req.platform, ttl).await?;
    ok(serde_json::json!({ "token": m.token, "expiresAt": m.expires_at_ms.to_string() }))
}

/// A minted `im_token`.
#[derive(Debug, Clone)]
pub struct Minted {
    pub token: String,
    /// ms since the Unix epoch.
    pub expires_at_ms: i64,
}

/// Mints an `im_token` for user `id`, bound to `platform` unless empty, valid `ttl` seconds
/// (1..=[`TOKEN_TTL_MAX`]). Errors: 400 bad uid, ttl or platform (over
/// [`crate::devices::MAX_PLATFORM`] bytes), 403 user disabled, 503 no
/// `token_secret`, 500 signing failed.
pub async fn mint_token(im: &Im, id: i64, platform: &str, ttl: u64) -> Result<Minted, ApiError> {
    let uid = uid(id, "uid")?;
    // A connection names at most MAX_PLATFORM bytes: a longer one could never log in.
    if platform.len() > crate::devices::MAX_PLATFORM {
        return Err(ApiError::bad(format!(
            "platform: at most {} bytes",
            crate::devices::MAX_PLATFORM
        )));
    }
    if ttl == 0 || ttl > TOKEN_TTL_MAX {
        return Err(ApiError::bad(format!("ttl: 1..={TOKEN_TTL_MAX} seconds")));
    }
    let Some(tokens) = im.tokens() else {
        return Err(ApiError::new(
            503,
            "IM has no token_secret (insecure_trust_mid development mode): no token to mint",
        ));
    };
    if im.store.user(uid).await?.is_some_and(|u| u.disabled) {
        return Err(ApiError::new(403, "user disabled"));
    }
    let token = tokens
        .mint(uid, platform, ttl)
        .map_err(|e| ApiError::new(500, e.to_string()))?;
    let claims = tokens
        .verify(&token, uid, platform, 0)
        .map_err(|e| ApiError::new(500, e.to_string()))?;
    Ok(Minted {
        token,
        expires_at_ms: (claims.exp as i64).saturating_mul(1000),
    })
}

/// A user as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserOut {
    #[serde(serialize_with = "as_str")]
    uid: i64,
    name: String,
    avatar: String,
    ex: String,
    disabled: bool,
    /// Tokens issued before this (ms) are refused; 0 = none.
    #[serde(serialize_with = "as_str")]
    valid_after_ms: i64,
}

impl From<User> for UserOut {
    fn from(u: User) -> Self {
        UserOut {
            uid: u.uid,
            name: u.name,
            avatar: u.avatar,
            ex: u.ex,
            disabled: u.disabled,
            valid_after_ms: u.valid_after_ms,
        }
    }
}

/// `GET /im/v1/users/{uid}` → the user; 404 if never stored.
pub async fn get_user(State(api): State<St>, P(id): P<i64>) -> ApiResult {
    ok(UserOut::from(user(&api.im, id).await?))
}

/// The stored user `id`; 400 for a bad id, 404 if never stored.
pub async fn user(im: &Im, id: i64) -> Result<User, ApiError> {
    let id = uid(id, "uid")?;
    im.store
        .user(id)
        .await?
        .ok_or_else(|| ApiError::new(404, format!("user {id}")))
}

/// A profile change; `None` keeps the stored value.
#[derive(Debug, Default, Deserialize)]
pub struct UserIn {
    pub name: Option<String>,
    pub avatar: Option<String>,
    pub ex: Option<String>,
}

/// `PUT /im/v1/users/{uid} {name?, avatar?, ex?}` → the user: upserts the profile; absent
/// fields keep their value, `disabled` and the revocation time are kept.
pub async fn put_user(State(api): State<St>, P(id): P<i64>, Body(req): Body<UserIn>) -> ApiResult {
    ok(UserOut::from(upsert_user(&api.im, id, req).await?))
}

/// Upserts user `id`'s profile; returns the stored user. 400 bad id or a name that is not
/// [`plain_text`], 413 a field over its limit ([`MAX_NAME`], [`MAX_AVATAR`], `im.max_content` for `ex`).
pub async fn upsert_user(im: &Im, id: i64, req: UserIn) -> Result<User, ApiError> {
    let id = uid(id, "uid")?;
    fits("name", req.name.as_deref(), MAX_NAME)?;
    plain_text("name", req.name.as_deref())?;
    fits("avatar", req.avatar.as_deref(), MAX_AVATAR)?;
    fits("ex", req.ex.as_deref(), im.config.max_content as usize)?;
    let mut u = im.store.user(id).await?.unwrap_or_default();
    u.uid = id;
    if let Some(n) = req.name {
        u.name = n;
    }
    if let Some(a) = req.avatar {
        u.avatar = a;
    }
    if let Some(x) = req.ex {
        u.ex = x;
    }
    im.store.put_user(u.clone()).await?;
    Ok(u)
}

/// Revokes every token of `uid` issued until now (§13 point 6), disabling the user too when
/// `disable`.
async fn revoke(im: &Im, id: i64, disable: bool) -> Result<(), ApiError> {
    let mut u = im.store.user(id).await?.unwrap_or_default();
    u.uid = id;
    u.valid_after_ms = now_ms();
    u.disabled |= disable;
    im.store.put_user(u).await?;
    Ok(())
}

#[derive(Deserialize)]
pub struct DisableReq {
    #[serde(default)]
    reason: String,
}

/// `POST /im/v1/users/{uid}/disable {reason?}` → `{kicked}`: the user is disabled (new IM
/// connections refused), its tokens revoked, and every IM connection kicked with 4004.
pub async fn disable(
    State(api): State<St>,
    P(id): P<i64>,
    Body(req): Body<DisableReq>,
) -> ApiResult {
    let kicked = disable_user(&api.im, id, req.reason).await?;
    ok(serde_json::json!({ "kicked": kicked }))
}

/// Disables user `id` (new IM connections refused), revokes its tokens and kicks every IM
/// connection with 4004 (`reason`, or "user disabled"); returns how many were kicked.
pub async fn disable_user(im: &Im, id: i64, reason: String) -> Result<usize, ApiError> {
    let id = uid(id, "uid")?;
    revoke(im, id, true).await?;
    let reason = if reason.is_empty() {
        "user disabled".to_string()
    } else {
        reason
    };
    Ok(im
        .kick_user(id, "", "", kick::USER_DISABLED, &reason)
        .await?)
}

#[derive(Deserialize)]
pub struct KickReq {
    #[serde(default)]
    platform: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    reason: String,
}

/// `POST /im/v1/users/{uid}/kick {platform?, key?, reason?}` → `{kicked}`: revokes the
/// user's tokens issued until now (all platforms: revocation is per user, §13 point 6), then
/// kicks the IM connections matching `platform` and `key` (neither: all) with 4002.
pub async fn kick(State(api): State<St>, P(id): P<i64>, Body(req): Body<KickReq>) -> ApiResult {
    let kicked = admin_kick(&api.im, id, &req.platform, &req.key, req.reason).await?;
    ok(serde_json::json!({ "kicked": kicked }))
}

/// Revokes user `id`'s tokens issued until now, then kicks its IM connections matching
/// `platform` and `key` (empty: any) with 4002; returns how many were kicked.
pub async fn admin_kick(
    im: &Im,
    id: i64,
    platform: &str,
    key: &str,
    reason: String,
) -> Result<usize, ApiError> {
    let id = uid(id, "uid")?;
    revoke(im, id, false).await?;
    let reason = if reason.is_empty() {
        "logged out by the administrator".to_string()
    } else {
        reason
    };
    Ok(im
        .kick_user(id, platform, key, kick::ADMIN, &reason)
        .await?)
}

/// `GET /im/v1/users/{uid}/online` → `{devices: [{key, platform, server, since}]}`: the
/// user's IM connections (`since`: connect time, ms).
pub async fn online(State(api): State<St>, P(id): P<i64>) -> ApiResult {
    let devices: Vec<_> = online_devices(&api.im, id)
        .await?
        .into_iter()
        .map(|d| {
            serde_json::json!({
                "key": d.key,
                "platform": d.platform,
                "server": d.server,
                "since": d.since_ms.to_string(),
            })
        })
        .collect();
    ok(serde_json::json!({ "devices": devices }))
}

/// User `id`'s IM connections on this node's view of the cluster; 400 for a bad id.
pub async fn online_devices(im: &Im, id: i64) -> Result<Vec<Device>, ApiError> {
    Ok(im.devices.of_users(&[uid(id, "uid")?]).await?)
}

#[derive(Deserialize)]
pub struct ContactIn {
    /// `friend` or `blocked`.
    state: String,
    #[serde(default)]
    remark: String,
}

pub fn contact_kind(s: &str) -> Result<ContactKind, ApiError> {
    match s.to_ascii_lowercase().as_str() {
        "friend" => Ok(ContactKind::Friend),
        "blocked" => Ok(ContactKind::Blocked),
        _ => Err(ApiError::bad(format!("state {s:?}: friend or blocked"))),
    }
}

/// `PUT /im/v1/users/{uid}/contacts/{peer} {state: friend|blocked, remark?}` → `{version}`:
/// upserts `uid → peer`; the owner's contact version + 1.
pub async fn put_contact(
    State(api): State<St>,
    P((id, peer)): P<(i64, i64)>,
    Body(req): Body<ContactIn>,
) -> ApiResult {
    let kind = contact_kind(&req.state)?;
    let version = upsert_contact(&api.im, id, peer, kind, req.remark).await?;
    ok(serde_json::json!({ "version": version.to_string() }))
}

/// Upserts the contact `id → peer`; returns the owner's contact version after it. 400 bad
/// ids, a user as its own contact or a remark that is not [`plain_text`], 413 remark over
/// [`MAX_NAME`].
pub async fn upsert_contact(
    im: &Im,
    id: i64,
    peer: i64,
    kind: ContactKind,
    remark: String,
) -> Result<u64, ApiError> {
    let (id, peer) = (uid(id, "uid")?, uid(peer, "peer")?);
    if id == peer {
        return Err(ApiError::bad("a user is not its own contact"));
    }
    fits("remark", Some(&remark), MAX_NAME)?;
    plain_text("remark", Some(&remark))?;
    let state = ContactState { kind, remark };
    Ok(im.store.put_contact(id, peer, Some(state)).await?)
}

/// `DELETE /im/v1/users/{uid}/contacts/{peer}` → `{version}`: deletes `uid → peer` (kept as a
/// deletion for incremental lists).
pub async fn delete_contact(State(api): State<St>, P((id, peer)): P<(i64, i64)>) -> ApiResult {
    let version = remove_contact(&api.im, id, peer).await?;
    ok(serde_json::json!({ "version": version.to_string() }))
}

/// Deletes the contact `id → peer` (kept as a deletion for incremental lists); returns the
/// owner's contact version after it.
pub async fn remove_contact(im: &Im, id: i64, peer: i64) -> Result<u64, ApiError> {
    let (id, peer) = (uid(id, "uid")?, uid(peer, "peer")?);
    Ok(im.store.put_contact(id, peer, None).await?)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactsQuery {
    #[serde(default, alias = "since_version")]
    since_version: u64,
    /// 0 = the default.
    #[serde(default)]
    limit: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContactOut {
    #[serde(serialize_with = "as_str")]
    peer: i64,
    /// `friend`, `blocked`, or null once deleted.
    state: Option<&'static str>,
    remark: String,
    #[serde(serialize_with = "as_str")]
    version: u64,
}

impl From<Contact> for ContactOut {
    fn from(c: Contact) -> Self {
        let state = c.state.as_ref().map(|s| match s.kind {
            ContactKind::Friend => "friend",
            ContactKind::Blocked => "blocked",
        });
        ContactOut {
            peer: c.peer,
            state,
            remark: c.state.map(|s| s.remark).unwrap_or_default(),
            version: c.version,
        }
    }
}

/// `GET /im/v1/users/{uid}/contacts?sinceVersion=&limit=` → `{contacts: [{peer, state,
/// remark, version}], version, hasMore}`: the contacts changed after `sinceVersion`,
/// ascending by version, deleted ones with `state: null`; `version` is the last one returned
/// (the next call's `sinceVersion`). `limit` default 100, at most 1000.
pub async fn contacts(State(api): State<St>, P(id): P<i64>, Q(q): Q<ContactsQuery>) -> ApiResult {
    let p = contacts_page(&api.im, id, q.since_version, q.limit).await?;
    let contacts: Vec<ContactOut> = p.contacts.into_iter().map(ContactOut::from).collect();
    ok(
        serde_json::json!({ "contacts": contacts, "version": p.version.to_string(), "hasMore": p.has_more }),
    )
}

/// A page of contact changes.
#[derive(Debug, Clone)]
pub struct ContactsPage {
    /// Ascending by version; deleted ones with `state: None`.
    pub contacts: Vec<Contact>,
    /// The last one returned (the next call's `since_version`).
    pub version: u64,
    pub has_more: bool,
}

/// User `id`'s contacts changed after `since_version`; `limit` 0 = 100, at most 1000.
pub async fn contacts_page(
    im: &Im,
    id: i64,
    since_version: u64,
    limit: usize,
) -> Result<ContactsPage, ApiError> {
    let id = uid(id, "uid")?;
    let limit = match limit {
        0 => CONTACTS_LIMIT_DEFAULT,
        n => n.min(CONTACTS_LIMIT_MAX),
    };
    let mut contacts = im.store.contacts(id, since_version, limit + 1).await?;
    let has_more = contacts.len() > limit;
    contacts.truncate(limit);
    let version = contacts.last().map_or(since_version, |c| c.version);
    Ok(ContactsPage {
        contacts,
        version,
        has_more,
    })
}

#[derive(Deserialize)]
pub struct DirectoryQuery {
    #[serde(default)]
    since: i64,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    epoch: u64,
}

/// `GET /im/v1/users/{uid}/conversations?since=&cursor=&limit=&epoch=` → the user's
/// conversation directory page, as op 22 answers it (`SyncReply` in the proto3 JSON mapping,
/// without `code`): `{convs, hasMore, cursor, serverTs, epoch, reset, ...}`.
pub async fn conversations(
    State(api): State<St>,
    P(id): P<i64>,
    Q(q): Q<DirectoryQuery>,
) -> ApiResult {
    let req = SyncReq {
        since: q.since,
        cursor: q.cursor,
        limit: q.limit,
        epoch: q.epoch,
    };
    ok(proto_json(&directory(&api.im, id, req).await?))
}

/// User `id`'s conversation directory page, as op 22 answers it.
pub async fn directory(im: &Im, id: i64, req: SyncReq) -> Result<SyncReply, ApiError> {
    Ok(crate::read::directory(im, uid(id, "uid")?, req).await?)
}

#[derive(Deserialize)]
pub struct ReadReq {
    conv: ConvIn,
    seq: U64,
}

/// `POST /im/v1/users/{uid}/read {conv: {kind, id}, seq}` → `{seq, moved}`: raises the user's
/// read mark in `conv` (named as the user names it) to `min(seq, last_seq)`; marks never go
/// down. When it moved, the READ events of op 28 go out (the user's devices, the P2P peer).
pub async fn read(State(api): State<St>, P(id): P<i64>, Body(req): Body<ReadReq>) -> ApiResult {
    let marked = mark(&api.im, id, &req.conv, MarkKind::Read, req.seq.0).await?;
    ok(serde_json::json!({ "seq": marked.seq.to_string(), "moved": marked.moved }))
}

/// Raises user `id`'s `kind` mark (read, or deleted-to) in `conv` (named as the user names
/// it) to `min(seq, last_seq)`; a moved read mark sends op 28's READ events (the user's
/// devices, the P2P peer).
pub async fn mark(
    im: &Im,
    id: i64,
    conv: &ConvIn,
    kind: MarkKind,
    seq: u64,
) -> Result<Marked, ApiError> {
    let id = uid(id, "uid")?;
    let conv = conv.resolve(id, id)?;
    let marked = im.store.mark(id, conv, kind, seq).await?;
    if marked.moved && kind == MarkKind::Read {
        im.mark_events(id, "", conv, kind, marked.seq).await;
    }
    Ok(marked)
}

/// `POST /im/v1/users/{uid}/clear {conv: {kind, id}, seq}` → `{seq, moved}`: clears the user's
/// history of `conv` up to `seq` ("delete chat history for me"): the user's `deleted_to` mark
/// rises to `min(seq, last_seq)`, so its floor (first readable seq) moves past it in pulls,
/// history and the directory, and nothing below counts as unread. Others are not affected;
/// marks never go down.
pub async fn clear(State(api): State<St>, P(id): P<i64>, Body(req): Body<ReadReq>) -> ApiResult {
    let marked = mark(&api.im, id, &req.conv, MarkKind::DeletedTo, req.seq.0).await?;
    ok(serde_json::json!({ "seq": marked.seq.to_string(), "moved": marked.moved }))
}
