//! The `/im/v1` management API for business backends (reference im.md §8, §13 point 8), on
//! logic's HTTP listener: [`router`] is merged into logic's router.
//!
//! # Conventions
//! - **Auth:** `Authorization: Bearer <im.admin_token>` on every route, compared in constant
//!   time (`starling_logic::http::guard::bearer_ok`, the scheme in any case, as the push
//!   API). Missing or wrong: 401. An empty `admin_token` mounts no route at all:
//!   `/im/v1/...` then falls through to logic's own 404 (goim's `-404` envelope).
//! - **Envelope:** goim's `{"code","message","data"}`. Success: HTTP 200, `code` 0. Errors:
//!   the HTTP status is the IM result code (400, 401, 403, 404, 405, 409, 410, 413, 503; im.md
//!   §5.5) and `code` is the same positive number, `data` null (or, for a send stored but not
//!   handed to delivery, the ack with `stored: true`).
//! - **JSON:** lowerCamel names. 64-bit integers (uids, gids, seqs, ms times, versions) are
//!   accepted as numbers or decimal strings and written as decimal strings, as in the proto3
//!   JSON mapping the client codec uses; messages, directory pages and member pages are the
//!   `starling.im.v1` types in that mapping. Conversation kinds by enum name (`P2P`, `GROUP`,
//!   `NOTICE`; numbers are accepted too), also in paths. A body that is not valid JSON, or
//!   lacks a required field, is 400 with the envelope; an empty body counts as `{}`.
//! - **Unknown** `/im/v1/...` paths: 404 with the envelope (after auth); a known path with
//!   another method: 405 with the envelope. The router sets no fallback of its own: logic's
//!   router, which it is merged into, has one.
//!
//! Routes: [`users`] (tokens, users, contacts, directory, read marks), [`groups`], [`messages`]
//! (send, recall, history).
//!
//! # Layout
//! - this file: the router, the bearer check, the envelope, the JSON helpers ([`I64`],
//!   [`ConvIn`], ...).
//! - [`users`], [`groups`], [`messages`]: one transport-free function per operation (taking
//!   `&Im` and typed arguments, returning a typed result or an [`ApiError`]) and the HTTP
//!   handler that decodes, calls it and encodes.
//! - [`grpc`]: the same operations as gRPC service `starling.im.v1.Admin` (on logic's gRPC
//!   port), calling the same functions; [`grpc::service`] builds it.

pub mod groups;
pub mod grpc;
pub mod messages;
pub mod users;

use crate::service::Im;
use crate::store::{Conv, StoreError};
use axum::Router;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, patch, post, put};
use serde::de::{DeserializeOwned, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Value, json};
use starling_proto::im::v1::ConvKind;
use std::fmt;
use std::sync::Arc;

/// The API's state: the IM service, the bearer token it expects, and logic (whose HTTP port
/// serves the API: its `[logic.http]` body limits and refusal counters apply to [`Body`]).
#[derive(Clone)]
pub struct Api {
    pub im: Arc<Im>,
    token: Arc<str>,
    logic: Arc<starling_logic::Logic>,
}

impl FromRef<Api> for Arc<starling_logic::Logic> {
    fn from_ref(api: &Api) -> Self {
        api.logic.clone()
    }
}

type St = Api;

/// An error reply: HTTP status `code`, envelope `{"code": code, "message", "data"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub message: String,
    pub data: Option<Value>,
}

/// Longest name (user, group) and contact remark, bytes.
pub const MAX_NAME: usize = 256;
/// Longest avatar URL, bytes.
pub const MAX_AVATAR: usize = 2048;

/// `value` of `field` fits in `max` bytes, or 413 naming the field. Profiles travel in
/// SYSTEM messages and directory pages, so they are bounded like message content.
pub fn fits(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > max => Err(ApiError::new(413, format!("{field} over {max} bytes"))),
        _ => Ok(()),
    }
}

/// `value` of `field` (a name shown to people) holds no control character (Unicode Cc, NUL
/// and escape sequences included) and no bidirectional embedding, override or isolate
/// (U+202A–U+202E, U+2066–U+2069: they make a name display as another), or 400 naming the
/// field.
pub fn plain_text(field: &str, value: Option<&str>) -> Result<(), ApiError> {
    let bad =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    match value {
        Some(v) if v.chars().any(bad) => Err(ApiError::bad(format!(
            "{field} holds a control or bidirectional-override character"
        ))),
        _ => Ok(()),
    }
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::new(e.code() as u16, e.to_string())
    }
}

impl From<crate::devices::DeviceError> for ApiError {
    /// The device table is unavailable (Redis down): 503.
    fn from(e: crate::devices::DeviceError) -> Self {
        ApiError::new(503, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({ "code": self.code, "message": self.message, "data": self.data });
        let mut r = (status, axum::Json(body)).into_response();
        if self.code == 401 {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// What a handler returns.
pub type ApiResult = Result<Response, ApiError>;

/// A success: HTTP 200, `{"code":0,"message":"","data":data}`.
pub fn ok(data: impl Serialize) -> ApiResult {
    let data = serde_json::to_value(data).map_err(|e| ApiError::new(500, e.to_string()))?;
    Ok((
        StatusCode::OK,
        axum::Json(json!({ "code": 0, "message": "", "data": data })),
    )
        .into_response())
}

/// A `starling.im.v1` reply in the proto3 JSON mapping, without its `code` (the envelope's).
pub fn proto_json(msg: &impl Serialize) -> Value {
    let mut v = serde_json::to_value(msg).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("code");
    }
    v
}

/// A JSON body, read within `[logic.http]`'s `max_body` (413 past it) and `body_timeout`
/// (408 past it), as the push API's (`starling_logic::http::read_limited`, counted in
/// `starling_logic_http_refused_total`); undecodable → 400; each with the envelope.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    S: Send + Sync,
    Arc<starling_logic::Logic>: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        use starling_logic::http::BodyRefusal;
        let logic = Arc::<starling_logic::Logic>::from_ref(state);
        let bytes = starling_logic::http::read_limited(&logic, req)
            .await
            .map_err(|r| {
                let code = match r {
                    BodyRefusal::TooLarge(_) => 413,
                    BodyRefusal::Timeout(_) => 408,
                    BodyRefusal::Unreadable(_) => 400,
                };
                ApiError::new(code, r.to_string())
            })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| ApiError::bad(format!("body is not the expected JSON: {e}")))
    }
}

/// Query parameters; bad ones → 400 with the envelope.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}

/// Path parameters; bad ones (a uid that is not a number) → 400 with the envelope.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| P(p.0))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}

/// A 64-bit integer accepted as a JSON number or a decimal string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct I64(pub i64);

/// An unsigned 64-bit integer accepted as a JSON number or a decimal string.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct U64(pub u64);

struct IntVisitor;

impl Visitor<'_> for IntVisitor {
    type Value = i128;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer, as a number or a decimal string")
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(v.into())
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(v.into())
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i128, E> {
        v.trim()
            .parse()
            .map_err(|_| E::custom(format!("{v:?} is not an integer")))
    }
}

impl<'de> Deserialize<'de> for I64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(IntVisitor)?;
        i64::try_from(v)
            .map(I64)
            .map_err(|_| serde::de::Error::custom("out of the int64 range"))
    }
}

impl<'de> Deserialize<'de> for U64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = d.deserialize_any(IntVisitor)?;
        u64::try_from(v)
            .map(U64)
            .map_err(|_| serde::de::Error::custom("out of the uint64 range"))
    }
}

/// Writes a 64-bit integer as a decimal string (the proto3 JSON mapping).
pub fn as_str<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Writes a list of 64-bit integers as decimal strings.
pub fn as_strs<S: Serializer>(v: &[i64], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(i64::to_string))
}

/// A conversation kind by enum name (`P2P`, `GROUP`, `NOTICE`, any case) or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind(pub ConvKind);

impl Kind {
    pub fn parse(s: &str) -> Result<Kind, ApiError> {
        let k = ConvKind::from_str_name(&s.to_ascii_uppercase())
            .or_else(|| {
                s.parse::<i32>()
                    .ok()
                    .and_then(|n| ConvKind::try_from(n).ok())
            })
            .filter(|k| *k != ConvKind::Unspecified);
        k.map(Kind)
            .ok_or_else(|| ApiError::bad(format!("conversation kind {s:?}: P2P, GROUP or NOTICE")))
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let s = match &v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(serde::de::Error::custom("kind: P2P, GROUP or NOTICE")),
        };
        Kind::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// A conversation in a request body: `{kind, id}` as the acting user names it (P2P: the
/// peer; GROUP: the gid; NOTICE: the user it belongs to, or `to` beside it), or canonically
/// `{kind, a, b}` (P2P: both uids; GROUP: a = gid; NOTICE: a = uid), as in the history path.
#[derive(Debug, Clone, Deserialize)]
pub struct ConvIn {
    pub kind: Kind,
    #[serde(default)]
    pub id: I64,
    #[serde(default)]
    pub a: I64,
    #[serde(default)]
    pub b: I64,
}

impl ConvIn {
    /// The conversation meant, with `actor` the user acting (0 = the system) and `to` the
    /// notice recipient when given beside it. 400 when it does not name one, or names it
    /// both ways (`id` and `a`/`b`: which one was meant?).
    pub fn resolve(&self, actor: i64, to: i64) -> Result<Conv, ApiError> {
        let (id, a, b) = (self.id.0, self.a.0, self.b.0);
        if id != 0 && (a != 0 || b != 0) {
            return Err(ApiError::bad(
                "conv: give either {kind, id} or {kind, a, b}, not both",
            ));
        }
        canonical(self.kind.0, a, b).or_else(|_| match self.kind.0 {
            ConvKind::P2p if actor > 0 && id > 0 && id != actor => Ok(Conv::p2p(actor, id)),
            ConvKind::P2p => Err(ApiError::bad(
                "a P2P conv needs the acting user and a peer id (not the same), or {a, b}",
            )),
            ConvKind::Group if id > 0 => Ok(Conv::group(id)),
            ConvKind::Notice if to > 0 => Ok(Conv::notice(to)),
            ConvKind::Notice if id > 0 => Ok(Conv::notice(id)),
            ConvKind::Notice => Err(ApiError::bad("a NOTICE needs `to`: the user it goes to")),
            _ => Err(ApiError::bad("a GROUP conv needs its gid as id")),
        })
    }
}

/// The conversation of a history path or a canonical `{kind, a, b}`.
pub fn canonical(kind: ConvKind, a: i64, b: i64) -> Result<Conv, ApiError> {
    match kind {
        ConvKind::P2p if a > 0 && b > 0 && a != b => Ok(Conv::p2p(a, b)),
        ConvKind::Group if a > 0 && b == 0 => Ok(Conv::group(a)),
        ConvKind::Notice if a > 0 && b == 0 => Ok(Conv::notice(a)),
        _ => Err(ApiError::bad(
            "conversation: P2P/{uid}/{uid} (two users), GROUP/{gid}/0 or NOTICE/{uid}/0",
        )),
    }
}

/// `by` of a membership or profile change: 0 (the system) or a user (> 0); 400 otherwise.
pub fn by(v: i64) -> Result<i64, ApiError> {
    if v >= 0 {
        Ok(v)
    } else {
        Err(ApiError::bad("by must be 0 (the system) or a user id"))
    }
}

/// A user id from a path: > 0.
pub fn uid(v: i64, what: &str) -> Result<i64, ApiError> {
    if v > 0 {
        Ok(v)
    } else {
        Err(ApiError::bad(format!("{what} must be > 0")))
    }
}

pub use starling_logic::http::guard::bearer_ok;

async fn auth(State(api): State<St>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !bearer_ok(given, &api.token) {
        return ApiError::new(401, "Authorization: Bearer <im.admin_token> required")
            .into_response();
    }
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::new(404, "not found")
}

async fn not_allowed() -> ApiError {
    ApiError::new(405, "method not allowed")
}

/// A route's methods, with 405 in the envelope for the others (a per-route fallback: the
/// router-wide one is logic's).
fn m(r: MethodRouter<St>) -> MethodRouter<St> {
    r.fallback(not_allowed)
}

/// Every route of im.md §8 under `/im/v1`, behind the bearer token; an empty router when
/// `im.admin_token` is empty. Merge it into `logic`'s router (it sets no fallback).
pub fn router(im: Arc<Im>, logic: Arc<starling_logic::Logic>) -> Router {
    if im.config.admin_token.is_empty() {
        return Router::new();
    }
    let api = Api {
        token: im.config.admin_token.as_str().into(),
        im,
        logic,
    };
    Router::new()
        .route("/im/v1/tokens", m(post(users::token)))
        .route(
            "/im/v1/users/{uid}",
            m(get(users::get_user).put(users::put_user)),
        )
        .route("/im/v1/users/{uid}/disable", m(post(users::disable)))
        .route("/im/v1/users/{uid}/kick", m(post(users::kick)))
        .route("/im/v1/users/{uid}/online", m(get(users::online)))
        .route("/im/v1/users/{uid}/contacts", m(get(users::contacts)))
        .route(
            "/im/v1/users/{uid}/contacts/{peer}",
            m(put(users::put_contact).delete(users::delete_contact)),
        )
        .route(
            "/im/v1/users/{uid}/conversations",
            m(get(users::conversations)),
        )
        .route("/im/v1/users/{uid}/read", m(post(users::read)))
        .route("/im/v1/users/{uid}/clear", m(post(users::clear)))
        .route("/im/v1/groups", m(post(groups::create)))
        .route(
            "/im/v1/groups/{gid}",
            m(get(groups::get_group)
                .patch(groups::update)
                .delete(groups::dissolve)),
        )
        .route(
            "/im/v1/groups/{gid}/members",
            m(get(groups::members)
                .post(groups::add)
                .delete(groups::remove)),
        )
        .route(
            "/im/v1/groups/{gid}/members/{uid}",
            m(patch(groups::set_member)),
        )
        .route("/im/v1/messages", m(post(messages::send)))
        .route("/im/v1/messages/recall", m(post(messages::recall)))
        .route(
            "/im/v1/conversations/{kind}/{a}/{b}/messages",
            m(get(messages::history)),
        )
        .route("/im/v1", any(not_found))
        .route("/im/v1/", any(not_found))
        .route("/im/v1/{*rest}", any(not_found))
        .route_layer(middleware::from_fn_with_state(api.clone(), auth))
        .with_state(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_as_numbers_or_strings() {
        let v: Vec<I64> = serde_json::from_str(r#"[1, "2", " 3 ", -4]"#).unwrap();
        assert_eq!(v, vec![I64(1), I64(2), I64(3), I64(-4)]);
        assert!(serde_json::from_str::<I64>("1.5").is_err());
        assert!(serde_json::from_str::<U64>("-1").is_err());
        assert_eq!(
            serde_json::from_str::<U64>("\"18446744073709551615\"").unwrap(),
            U64(u64::MAX)
        );
    }

    #[test]
    fn conversations_by_name_and_relative_to_the_actor() {
        let c: ConvIn = serde_json::from_str(r#"{"kind":"P2P","id":"7"}"#).unwrap();
        assert_eq!(c.resolve(3, 0).unwrap(), Conv::p2p(3, 7));
        assert!(
            c.resolve(0, 0).is_err(),
            "the system has no P2P conversation"
        );
        let c: ConvIn = serde_json::from_str(r#"{"kind":"p2p","a":9,"b":4}"#).unwrap();
        assert_eq!(c.resolve(0, 0).unwrap(), Conv::p2p(4, 9));
        let c: ConvIn = serde_json::from_str(r#"{"kind":"NOTICE"}"#).unwrap();
        assert_eq!(c.resolve(0, 5).unwrap(), Conv::notice(5));
        assert!(c.resolve(0, 0).is_err());
        let c: ConvIn = serde_json::from_str(r#"{"kind":2,"id":11}"#).unwrap();
        assert_eq!(c.resolve(0, 0).unwrap(), Conv::group(11));
        assert!(serde_json::from_str::<ConvIn>(r#"{"kind":"ROOM","id":1}"#).is_err());
    }
}
