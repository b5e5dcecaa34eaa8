//! goim's HTTP push API (reference §3.3): same paths, same query parameters (repeated `keys=`
//! and `mids=`), the raw body as the message, and the `{"code","message","data"}` envelope
//! with HTTP 200: `0` ok, `-400` bad request, `-500` server error. Unknown paths and methods
//! get the envelope too (`-404`, `-405`), never an HTML page.
//!
//! Starling's limits (`[logic.http]`) answer with the HTTP status of their kind and its
//! negative as the code: `401`/`-401` without the bearer token when `push_token` is set,
//! `413`/`-413` for a body over `max_body` or more than `max_keys`/`max_mids` targets,
//! `408`/`-408` for a body not complete within `body_timeout`. Each is counted in
//! `starling_logic_http_refused_total{reason}`.
//!
//! # Layout
//! - `query`: goim's query string (repeated names make lists).
//! - `guard`: the bearer token.
//! - [`server`]: the connection limits (`max_conns`, `header_timeout`) and graceful shutdown.

pub mod guard;
mod query;
pub mod server;

pub use server::Server;

use crate::logic::{Logic, LogicError};
use crate::stats::HttpRefusal;
use axum::Router;
use axum::body::HttpBody as _;
use axum::extract::{RawQuery, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use query::Query;
use serde::Serialize;
use serde_json::{Value, json};
use starling_proto::grpc::logic::Backoff;
use std::sync::Arc;
use tracing::warn;

#[derive(Clone)]
pub(crate) struct AppState {
    logic: Arc<Logic>,
}

#[derive(Serialize)]
struct Envelope {
    code: i32,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

const OK: i32 = 0;
const REQUEST_ERR: i32 = -400;
const SERVER_ERR: i32 = -500;

fn reply(code: i32, message: impl Into<String>, data: Option<Value>) -> Response {
    reply_with(StatusCode::OK, code, message, data)
}

fn reply_with(
    status: StatusCode,
    code: i32,
    message: impl Into<String>,
    data: Option<Value>,
) -> Response {
    let body = Envelope {
        code,
        message: message.into(),
        data,
    };
    (status, axum::Json(body)).into_response()
}

/// A request refused by one of Starling's limits: the limit's HTTP status, and its negative as
/// goim's envelope code (a room name too long is goim's plain `-400`, HTTP 200).
pub(crate) fn refuse(why: HttpRefusal, message: impl Into<String>) -> Response {
    let status = match why {
        HttpRefusal::Unauthorized => StatusCode::UNAUTHORIZED,
        HttpRefusal::BodyTooLarge | HttpRefusal::TooManyTargets => StatusCode::PAYLOAD_TOO_LARGE,
        HttpRefusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        HttpRefusal::RoomTooLong => return bad(message),
    };
    reply_with(status, -i32::from(status.as_u16()), message, None)
}

/// Counts and (once a second) logs a refusal, and answers it.
fn refused(s: &AppState, why: HttpRefusal, message: String) -> Response {
    if s.logic.stats.http_refused(why) {
        warn!(reason = why.label(), message = %message, "push API request refused (logged once a second)");
    }
    refuse(why, message)
}

fn ok(data: Option<Value>) -> Response {
    reply(OK, "", data)
}

fn bad(message: impl Into<String>) -> Response {
    reply(REQUEST_ERR, message, None)
}

fn failed(e: LogicError) -> Response {
    warn!(error = %e, "push failed");
    reply(SERVER_ERR, e.to_string(), None)
}

/// Why a request body was not read whole ([`read_limited`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRefusal {
    /// Over `[logic.http] max_body` (413; before the body is read when the request says
    /// `Expect: 100-continue` and its `Content-Length` is over).
    TooLarge(usize),
    /// Not complete within `[logic.http] body_timeout` (408).
    Timeout(std::time::Duration),
    /// Cut off or broken by the client (400).
    Unreadable(String),
}

impl std::fmt::Display for BodyRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyRefusal::TooLarge(max) => write!(f, "body over max_body, {max} bytes"),
            BodyRefusal::Timeout(t) => write!(f, "body not received within {t:?}"),
            BodyRefusal::Unreadable(e) => write!(f, "body unreadable: {e}"),
        }
    }
}

/// Reads a whole request body on logic's HTTP port within `[logic.http]`'s `max_body` and
/// `body_timeout`, counting a refusal in `starling_logic_http_refused_total` (logged once a
/// second): the push API's routes and IM's management API (`/im/v1`) read bodies with it.
///
/// A request that says `Expect: 100-continue` with a `Content-Length` over the limit is
/// refused before its body is polled: hyper sends `100 Continue` when the body is first
/// polled, and the client is owed the 413 instead (RFC 9110 §10.1.1). Without `Expect`, the
/// body is on its way already: it is read up to the limit as before, so the client is not
/// reset in the middle of its write before it can read the answer.
pub async fn read_limited(logic: &Logic, req: Request) -> Result<bytes::Bytes, BodyRefusal> {
    let http = &logic.config.http;
    let max = http.max_body;
    let waits_for_continue = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let body = req.into_body();
    let (why, refusal) = if waits_for_continue && body.size_hint().lower() > max as u64 {
        (HttpRefusal::BodyTooLarge, BodyRefusal::TooLarge(max))
    } else {
        let read = tokio::time::timeout(http.body_timeout, Limited::new(body, max).collect()).await;
        match read {
            Ok(Ok(b)) => return Ok(b.to_bytes()),
            Ok(Err(e)) if e.is::<LengthLimitError>() => {
                (HttpRefusal::BodyTooLarge, BodyRefusal::TooLarge(max))
            }
            Ok(Err(e)) => return Err(BodyRefusal::Unreadable(e.to_string())),
            Err(_) => (
                HttpRefusal::BodyTimeout,
                BodyRefusal::Timeout(http.body_timeout),
            ),
        }
    };
    if logic.stats.http_refused(why) {
        warn!(reason = why.label(), message = %refusal, "HTTP request body refused (logged once a second)");
    }
    Err(refusal)
}

/// The whole body of a push ([`read_limited`]): 413 / 408 / `-400` in goim's envelope.
async fn read_body(state: &AppState, req: Request) -> Result<bytes::Bytes, Response> {
    read_limited(&state.logic, req).await.map_err(|r| match r {
        BodyRefusal::TooLarge(_) => refuse(HttpRefusal::BodyTooLarge, r.to_string()),
        BodyRefusal::Timeout(_) => refuse(HttpRefusal::BodyTimeout, r.to_string()),
        BodyRefusal::Unreadable(_) => bad(r.to_string()),
    })
}

macro_rules! try_bad {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(msg) => return bad(msg),
        }
    };
}

/// What a push request is aimed at, parsed from its query.
enum Target {
    Keys(Vec<String>),
    Mids(Vec<i64>),
    /// goim's room key, `type://room`.
    Room(String),
    All {
        speed: i32,
    },
}

/// `max_keys`, `max_mids` (413) and `max_room_len` (-400), checked before the body is read: the
/// refusal, or `None` within them.
fn within_limits(s: &AppState, target: &Target) -> Option<Response> {
    let http = &s.logic.config.http;
    let (what, n, max) = match target {
        Target::Keys(keys) => ("keys", keys.len(), http.max_keys),
        Target::Mids(mids) => ("mids", mids.len(), http.max_mids),
        Target::Room(room) if room.len() > http.max_room_len => {
            return Some(refused(
                s,
                HttpRefusal::RoomTooLong,
                format!("room key over max_room_len, {} bytes", http.max_room_len),
            ));
        }
        Target::Room(_) | Target::All { .. } => return None,
    };
    (n > max).then(|| {
        refused(
            s,
            HttpRefusal::TooManyTargets,
            format!("{n} {what} in one request, over max_{what} ({max})"),
        )
    })
}

/// The shape every push endpoint shares: query (a bad one is `-400`), then the body as the
/// message, then logic (a failure is `-500`).
async fn push(
    s: AppState,
    q: Option<String>,
    req: Request,
    target: impl FnOnce(&Query) -> Result<(i32, Target), String>,
) -> Response {
    let q = try_bad!(Query::parse(q));
    let (op, target) = try_bad!(target(&q));
    if let Some(r) = within_limits(&s, &target) {
        return r;
    }
    let msg = match read_body(&s, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let sent = match target {
        Target::Keys(keys) => s.logic.push_keys(op, &keys, msg).await,
        Target::Mids(mids) => s.logic.push_mids(op, &mids, msg).await,
        Target::Room(room) => s.logic.push_room(op, room, msg).await,
        Target::All { speed } => s.logic.push_all(op, speed, msg).await,
    };
    match sent {
        Ok(()) => ok(None),
        Err(e) => failed(e),
    }
}

async fn push_keys(State(s): State<AppState>, RawQuery(q): RawQuery, req: Request) -> Response {
    push(s, q, req, |q| {
        Ok((q.int("operation", false)?, Target::Keys(q.all("keys"))))
    })
    .await
}

async fn push_mids(State(s): State<AppState>, RawQuery(q): RawQuery, req: Request) -> Response {
    push(s, q, req, |q| {
        let op = q.int("operation", false)?;
        let mids = q
            .all("mids")
            .iter()
            .map(|m| {
                m.parse::<i64>()
                    .map_err(|_| format!("mids must be integers, not {m:?}"))
            })
            .collect::<Result<_, _>>()?;
        Ok((op, Target::Mids(mids)))
    })
    .await
}

async fn push_room(State(s): State<AppState>, RawQuery(q): RawQuery, req: Request) -> Response {
    push(s, q, req, |q| {
        let op = q.int("operation", true)?;
        let room = format!("{}://{}", q.text("type")?, q.text("room")?);
        Ok((op, Target::Room(room)))
    })
    .await
}

async fn push_all(State(s): State<AppState>, RawQuery(q): RawQuery, req: Request) -> Response {
    push(s, q, req, |q| {
        let op = q.int("operation", true)?;
        let speed: i32 = q.int("speed", false)?;
        if speed < 0 {
            return Err("speed must not be negative".into());
        }
        Ok((op, Target::All { speed }))
    })
    .await
}

/// `/goim/online/top?type=live&limit=10`: the busiest rooms of a type. goim matches the bare
/// prefix (`live` also matched `lively://`); Starling matches `type://`.
async fn online_top(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let q = try_bad!(Query::parse(q));
    let kind = try_bad!(q.text("type"));
    let limit: usize = try_bad!(q.int("limit", true));
    let prefix = format!("{kind}://");
    let mut rooms: Vec<(String, i32)> = s
        .logic
        .room_counts()
        .into_iter()
        .filter_map(|(k, n)| k.strip_prefix(&prefix).map(|id| (id.to_string(), n)))
        .collect();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rooms.truncate(limit);
    let data: Vec<Value> = rooms
        .into_iter()
        .map(|(id, n)| json!({"room_id": id, "count": n}))
        .collect();
    ok(Some(Value::Array(data)))
}

async fn online_room(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let q = try_bad!(Query::parse(q));
    let kind = try_bad!(q.text("type"));
    let rooms = q.all("rooms");
    if rooms.is_empty() {
        return bad("rooms is required");
    }
    let counts = s.logic.room_counts();
    let data: serde_json::Map<String, Value> = rooms
        .into_iter()
        .map(|r| {
            let n = counts.get(&format!("{kind}://{r}")).copied().unwrap_or(0);
            (r, json!(n))
        })
        .collect();
    ok(Some(Value::Object(data)))
}

async fn online_total(State(s): State<AppState>) -> Response {
    let (conns, ips) = s.logic.totals();
    ok(Some(json!({"ip_count": ips, "conn_count": conns})))
}

async fn nodes_weighted(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    let q = try_bad!(Query::parse(q));
    let r = s.logic.nodes(q.first("platform").unwrap_or(""));
    let mut data = json!({
        "domain": r.domain,
        "tcp_port": r.tcp_port,
        "ws_port": r.ws_port,
        "wss_port": r.wss_port,
        "heartbeat": r.heartbeat,
        "heartbeat_max": r.heartbeat_max,
        "nodes": r.nodes,
    });
    if let Some(b) = r.backoff {
        data["backoff"] = backoff_json(&b);
    }
    ok(Some(data))
}

fn backoff_json(b: &Backoff) -> Value {
    json!({
        "max_delay": b.max_delay,
        "base_delay": b.base_delay,
        "factor": shortest_f64(b.factor),
        "jitter": shortest_f64(b.jitter),
    })
}

/// The f64 whose shortest decimal is the f32's shortest decimal. `Backoff`'s fields are protobuf
/// `float`s (goim's `logic.proto`), and a JSON `Value` holds f64: widening 1.8f32 directly
/// prints `1.7999999523162842`, where goim (Go's `encoding/json` formats a float32 at 32 bits)
/// prints `1.8`.
fn shortest_f64(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

async fn nodes_instances(State(s): State<AppState>) -> Response {
    ok(Some(json!(s.logic.instances())))
}

async fn not_found() -> Response {
    reply(-404, "not found", None)
}

async fn not_allowed() -> Response {
    reply(-405, "method not allowed", None)
}

/// The push API's routes (`/metrics`, `/healthz` and `/readyz` are
/// `starling_cluster::health::router`, merged in by the caller). Every `/goim/*` route but
/// `/goim/nodes/weighted` (which clients call) needs `push_token` when it is set.
pub fn router(logic: Arc<Logic>) -> Router {
    let state = AppState { logic };
    let guarded = Router::new()
        .route("/goim/push/keys", post(push_keys))
        .route("/goim/push/mids", post(push_mids))
        .route("/goim/push/room", post(push_room))
        .route("/goim/push/all", post(push_all))
        .route("/goim/online/top", get(online_top))
        .route("/goim/online/room", get(online_room))
        .route("/goim/online/total", get(online_total))
        .route("/goim/nodes/instances", get(nodes_instances))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::require_token,
        ));
    Router::new()
        .merge(guarded)
        .route("/goim/nodes/weighted", get(nodes_weighted))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_prints_floats_as_goim_does() {
        let b = Backoff {
            max_delay: 300,
            base_delay: 3,
            factor: 1.8,
            jitter: 0.3,
        };
        assert_eq!(
            backoff_json(&b).to_string(),
            r#"{"base_delay":3,"factor":1.8,"jitter":0.3,"max_delay":300}"#
        );
    }
}
