//! goim's HTTP push API (reference §3.3): same paths, same query parameters (repeated `keys=`
//! and `mids=`), the raw body as the message, and the `{"code","message","data"}` envelope
//! with HTTP 200: `0` ok, `-400` bad request, `-500` server error. Unknown paths and methods
//! get the envelope too (`-404`, `-405`), never an HTML page.

use crate::logic::{Logic, LogicError};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::{Value, json};
use starling_proto::grpc::logic::Backoff;
use std::sync::Arc;
use tracing::warn;

#[derive(Clone)]
struct AppState {
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
    let body = Envelope {
        code,
        message: message.into(),
        data,
    };
    (StatusCode::OK, axum::Json(body)).into_response()
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

/// The query string as goim's gin binding reads it: repeated names make lists.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<String>) -> Result<Self, String> {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            pairs.push((decode(k)?, decode(v)?));
        }
        Ok(Query(pairs))
    }

    fn first(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// An integer parameter; absent or empty is 0 unless `required` (then 0 is refused too,
    /// as gin's `binding:"required"` does).
    fn int<T: std::str::FromStr + Default + PartialEq>(
        &self,
        name: &str,
        required: bool,
    ) -> Result<T, String> {
        let v = match self.first(name) {
            Some(v) if !v.is_empty() => v
                .parse()
                .map_err(|_| format!("{name} must be an integer, not {v:?}"))?,
            _ => T::default(),
        };
        if required && v == T::default() {
            return Err(format!("{name} is required"));
        }
        Ok(v)
    }

    fn text(&self, name: &str) -> Result<&str, String> {
        match self.first(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("{name} is required")),
        }
    }
}

fn decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("query is not UTF-8: {s:?}"))
}

async fn read_body(state: &AppState, body: Body) -> Result<bytes::Bytes, Response> {
    let max = state.logic.config.http.max_body;
    to_bytes(body, max)
        .await
        .map_err(|_| bad(format!("body over {max} bytes or unreadable")))
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

/// The shape every push endpoint shares: query (a bad one is `-400`), then the body as the
/// message, then logic (a failure is `-500`).
async fn push(
    s: AppState,
    q: Option<String>,
    body: Body,
    target: impl FnOnce(&Query) -> Result<(i32, Target), String>,
) -> Response {
    let q = try_bad!(Query::parse(q));
    let (op, target) = try_bad!(target(&q));
    let msg = match read_body(&s, body).await {
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

async fn push_keys(State(s): State<AppState>, RawQuery(q): RawQuery, body: Body) -> Response {
    push(s, q, body, |q| {
        Ok((q.int("operation", false)?, Target::Keys(q.all("keys"))))
    })
    .await
}

async fn push_mids(State(s): State<AppState>, RawQuery(q): RawQuery, body: Body) -> Response {
    push(s, q, body, |q| {
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

async fn push_room(State(s): State<AppState>, RawQuery(q): RawQuery, body: Body) -> Response {
    push(s, q, body, |q| {
        let op = q.int("operation", true)?;
        let room = format!("{}://{}", q.text("type")?, q.text("room")?);
        Ok((op, Target::Room(room)))
    })
    .await
}

async fn push_all(State(s): State<AppState>, RawQuery(q): RawQuery, body: Body) -> Response {
    push(s, q, body, |q| {
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
/// `starling_cluster::health::router`, merged in by the caller).
pub fn router(logic: Arc<Logic>) -> Router {
    Router::new()
        .route("/goim/push/keys", post(push_keys))
        .route("/goim/push/mids", post(push_mids))
        .route("/goim/push/room", post(push_room))
        .route("/goim/push/all", post(push_all))
        .route("/goim/online/top", get(online_top))
        .route("/goim/online/room", get(online_room))
        .route("/goim/online/total", get(online_total))
        .route("/goim/nodes/weighted", get(nodes_weighted))
        .route("/goim/nodes/instances", get(nodes_instances))
        .fallback(not_found)
        .method_not_allowed_fallback(not_allowed)
        .with_state(AppState { logic })
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeated_names_and_decodes() {
        let q = Query::parse(Some("keys=a%20b&keys=c+d&operation=1000&x".into())).unwrap();
        assert_eq!(q.all("keys"), vec!["a b", "c d"]);
        assert_eq!(q.int::<i32>("operation", true), Ok(1000));
        assert_eq!(q.int::<i32>("missing", false), Ok(0));
        assert!(q.int::<i32>("missing", true).is_err());
        assert!(Query::parse(Some("a=%zz".into())).is_err());
        let bad = Query::parse(Some("operation=12x".into())).unwrap();
        assert!(bad.int::<i32>("operation", false).is_err());
    }

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
