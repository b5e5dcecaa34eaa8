//! DEVELOPMENT ONLY (`[app] dev_signin`): what a business backend would do for the chat app,
//! so that it works with nothing else running. Anyone reaching the port can sign in as any
//! user: never turn this on where the port is reachable by others.
//!
//! Routes, in goim's envelope with the management API's codes (`starling_im::admin`):
//! - `POST /app/api/signin {uid, name?}` → `{uid, name, token, expiresAt}`: an `im_token`
//!   for `uid` minted by the same function as `POST /im/v1/tokens` (`mint_token`, 24 h, any
//!   platform), and the profile name set when `name` is given. 400 bad uid, 403 disabled
//!   user, 413 name over 256 bytes.
//! - Every POST needs `Content-Type: application/json` (415 otherwise: see `json_only`).
//! - With `Authorization: Bearer <im_token>` (401 without a valid, unrevoked one):
//!   - `GET /app/api/users/{uid}` → `{uid, name}` (name empty for a user never stored).
//!   - `POST /app/api/groups {name, members[]}` → the group (`/im/v1/groups`'s reply), the
//!     bearer its owner.
//!   - `GET /app/api/groups/{gid}` → `{gid, name, memberCount, dissolved}`; 403 unless the
//!     bearer is or was a member.
//!   - `POST /app/api/groups/{gid}/members {uids[]}` → the change (`/im/v1/groups/{gid}/
//!     members`'s reply), by the bearer; 403 unless the bearer is a current owner or admin.

use axum::Router;
use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use starling_im::Im;
use starling_im::admin::users::{TOKEN_TTL_DEFAULT, UserIn, mint_token, upsert_user};
use starling_im::admin::{ApiError, ApiResult, Body, I64, P, groups, ok, users};
use starling_im::groups::NewGroup;
use starling_im::store::{Conv, History, ROLE_ADMIN};
use starling_logic::Logic;
use std::sync::Arc;

/// The dev routes' state: IM, and logic (whose `[logic.http]` limits bound a [`Body`]).
#[derive(Clone)]
struct St {
    im: Arc<Im>,
    logic: Arc<Logic>,
}

impl FromRef<St> for Arc<Im> {
    fn from_ref(s: &St) -> Self {
        s.im.clone()
    }
}

impl FromRef<St> for Arc<Logic> {
    fn from_ref(s: &St) -> Self {
        s.logic.clone()
    }
}

/// The dev routes (mount only with `[app] dev_signin`).
pub fn router(im: Arc<Im>, logic: Arc<Logic>) -> Router {
    tracing::warn!(
        "[app] dev_signin is on: POST /app/api/signin gives anyone a token for any user \
         (development only)"
    );
    Router::new()
        .route("/app/api/signin", post(signin))
        .route("/app/api/users/{uid}", get(user))
        .route("/app/api/groups", post(create_group))
        .route("/app/api/groups/{gid}", get(group))
        .route("/app/api/groups/{gid}/members", post(add_members))
        .layer(middleware::from_fn(json_only))
        .with_state(St { im, logic })
}

/// A POST must say `Content-Type: application/json`, else 415: another site's page can POST
/// a form or `text/plain` here without asking (no CORS preflight), and the sign-in needs no
/// bearer, so without this any page the developer visits could rename users through it.
/// `application/json` makes the browser ask first (a preflight), which this server never
/// grants.
async fn json_only(req: Request, next: Next) -> Response {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if req.method() == Method::POST && !json {
        return ApiError::new(415, "Content-Type: application/json required").into_response();
    }
    next.run(req).await
}

/// The user whose `im_token` came as `Authorization: Bearer`; 401 otherwise.
pub struct Me(pub i64);

impl FromRequestParts<St> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &St) -> Result<Me, ApiError> {
        let im = &st.im;
        let unauthorized = |why: String| {
            tracing::info!(%why, "app API: refused bearer");
            ApiError::new(
                401,
                format!("Authorization: Bearer <im_token> required: {why}"),
            )
        };
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or_else(|| unauthorized("no bearer".into()))?;
        let tokens = im
            .tokens()
            .ok_or_else(|| ApiError::new(503, "IM has no token_secret"))?;
        let claims = tokens
            .decode(token)
            .map_err(|e| unauthorized(e.to_string()))?;
        let uid: i64 = claims
            .sub
            .parse()
            .ok()
            .filter(|uid| *uid > 0)
            .ok_or_else(|| unauthorized(format!("sub {:?} is not a uid", claims.sub)))?;
        let user = im.store.user(uid).await?;
        if user.as_ref().is_some_and(|u| u.disabled) {
            return Err(ApiError::new(403, "user disabled"));
        }
        let valid_after = user.map_or(0, |u| u.valid_after_ms);
        tokens
            .verify(token, uid, &claims.plat, valid_after)
            .map_err(|e| unauthorized(e.to_string()))?;
        Ok(Me(uid))
    }
}

#[derive(Deserialize)]
struct SigninReq {
    uid: I64,
    name: Option<String>,
}

async fn signin(State(im): State<Arc<Im>>, Body(req): Body<SigninReq>) -> ApiResult {
    let uid = req.uid.0;
    // Mint first: it refuses a bad uid or a disabled user before anything is stored.
    let minted = mint_token(&im, uid, "", TOKEN_TTL_DEFAULT).await?;
    let name = match req.name.filter(|n| !n.trim().is_empty()) {
        Some(n) => {
            let patch = UserIn {
                name: Some(n.trim().to_string()),
                ..Default::default()
            };
            upsert_user(&im, uid, patch).await?.name
        }
        None => im
            .store
            .user(uid)
            .await?
            .map(|u| u.name)
            .unwrap_or_default(),
    };
    tracing::warn!(uid, "app API: development sign-in");
    ok(serde_json::json!({
        "uid": uid.to_string(),
        "name": name,
        "token": minted.token,
        "expiresAt": minted.expires_at_ms.to_string(),
    }))
}

async fn user(State(im): State<Arc<Im>>, _me: Me, P(uid): P<i64>) -> ApiResult {
    let name = match users::user(&im, uid).await {
        Ok(u) => u.name,
        Err(e) if e.code == 404 => String::new(),
        Err(e) => return Err(e),
    };
    ok(serde_json::json!({ "uid": uid.to_string(), "name": name }))
}

#[derive(Deserialize)]
struct CreateReq {
    #[serde(default)]
    name: String,
    #[serde(default)]
    members: Vec<I64>,
}

async fn create_group(
    State(im): State<Arc<Im>>,
    Me(me): Me,
    Body(req): Body<CreateReq>,
) -> ApiResult {
    let g = NewGroup {
        gid: 0,
        name: req.name,
        owner: me,
        members: req.members.iter().map(|u| u.0).collect(),
        history: History::FromJoin,
        ex: String::new(),
    };
    let (group, change) = groups::create_group(&im, g).await?;
    ok(serde_json::json!({
        "gid": group.gid.to_string(),
        "name": group.name,
        "memberCount": group.member_count,
        "seq": change.message.seq.to_string(),
    }))
}

/// The bearer's membership of group `gid`: 403 when never a member.
async fn membership(
    im: &Im,
    gid: i64,
    me: i64,
) -> Result<starling_im::store::MemberState, ApiError> {
    im.store
        .member(Conv::group(gid), me)
        .await?
        .ok_or_else(|| ApiError::new(403, format!("not a member of group {gid}")))
}

async fn group(State(im): State<Arc<Im>>, Me(me): Me, P(gid): P<i64>) -> ApiResult {
    let g = groups::group(&im, gid).await?;
    membership(&im, gid, me).await?;
    ok(serde_json::json!({
        "gid": g.gid.to_string(),
        "name": g.name,
        "memberCount": g.member_count,
        "dissolved": g.dissolved,
    }))
}

#[derive(Deserialize)]
struct MembersReq {
    uids: Vec<I64>,
}

async fn add_members(
    State(im): State<Arc<Im>>,
    Me(me): Me,
    P(gid): P<i64>,
    Body(req): Body<MembersReq>,
) -> ApiResult {
    groups::group(&im, gid).await?;
    let m = membership(&im, gid, me).await?;
    if m.leave_seq != 0 || m.role < ROLE_ADMIN {
        return Err(ApiError::new(
            403,
            format!("only the owner or an admin of group {gid} adds members"),
        ));
    }
    let uids = req.uids.iter().map(|u| u.0).collect();
    let c = groups::add_members(&im, gid, me, uids, 0, History::FromJoin).await?;
    ok(serde_json::json!({
        "gid": c.gid.to_string(),
        "seq": c.message.seq.to_string(),
        "added": c.added.iter().map(i64::to_string).collect::<Vec<_>>(),
    }))
}
