//! The scripted logic comet talks to in these tests: accepts, refuses, delays, fails or
//! answers as the test says.
#![allow(dead_code)]

use starling_comet::logic::{LocalBoxFuture, LogicClient, LogicError};
use starling_proto::grpc::logic::{
    ConnectReply, ConnectReq, DisconnectReq, HeartbeatReq, OnlineReply, OnlineReq, ReceiveReq,
};
use starling_proto::grpc::protocol::Proto;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the scripted logic does with a Connect.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OnConnect {
    Accept,
    /// A bad token (`LogicError::Refused`).
    Refuse,
    /// logic down (`LogicError::Unavailable`).
    Fail,
    /// Accept, after this long.
    Delay(Duration),
}

/// A scripted logic. Connect follows `on_connect`; the token is goim's JSON, whose fields
/// become the reply's: `im` (a number) `ConnectReply.im`, `max_body` (a number)
/// `ConnectReply.max_body`, `welcome` (a string) `ConnectReply.welcome`, `accepts` (default
/// `[1000]`). Receive follows the packet's body:
/// - `delay:<ms>:<text>` answers like `<text>` after that many milliseconds;
/// - `fail` fails (`Unavailable`), `late` fails as a gRPC deadline would (`Timeout`);
/// - `none` answers with no packet, `two` with two;
/// - anything else: one packet, op + 1, body `re:<body>`.
pub struct Script {
    pub on_connect: Mutex<OnConnect>,
    pub received: Mutex<Vec<ReceiveReq>>,
    pub disconnects: Mutex<Vec<DisconnectReq>>,
    /// Receive calls in flight now, and the most at once.
    in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            on_connect: Mutex::new(OnConnect::Accept),
            received: Mutex::new(Vec::new()),
            disconnects: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }
}

impl Script {
    pub fn set_connect(&self, c: OnConnect) {
        *self.on_connect.lock().unwrap() = c;
    }

    /// The bodies logic received, in order.
    pub fn received_bodies(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.proto.as_ref().unwrap().body).into_owned())
            .collect()
    }
}

/// The `LogicClient` comet gets: the script, shared with the test.
pub struct Scripted(pub Arc<Script>);

fn reply_for(req: &ConnectReq) -> ConnectReply {
    let v: serde_json::Value = serde_json::from_slice(&req.token).unwrap_or_default();
    ConnectReply {
        mid: v["mid"].as_i64().unwrap_or(0),
        key: v["key"].as_str().unwrap_or("k").to_string(),
        room_id: v["room_id"].as_str().unwrap_or("").to_string(),
        accepts: v["accepts"].as_array().map_or(vec![1000], |a| {
            a.iter()
                .filter_map(|o| o.as_i64())
                .map(|o| o as i32)
                .collect()
        }),
        heartbeat: Duration::from_secs(60).as_nanos() as i64,
        im: v["im"].as_i64().unwrap_or(0) as i32,
        max_body: v["max_body"].as_i64().unwrap_or(0) as i32,
        welcome: v["welcome"]
            .as_str()
            .unwrap_or("")
            .as_bytes()
            .to_vec()
            .into(),
    }
}

fn answer(op: i32, body: &str) -> Result<Vec<Proto>, LogicError> {
    let p = |b: String| Proto {
        op: op + 1,
        body: b.into_bytes().into(),
        ..Proto::default()
    };
    match body {
        "fail" => Err(LogicError::Unavailable("scripted failure".into())),
        "late" => Err(LogicError::Timeout("scripted deadline".into())),
        "none" => Ok(Vec::new()),
        "two" => Ok(vec![p("first".into()), p("second".into())]),
        other => Ok(vec![p(format!("re:{other}"))]),
    }
}

impl LogicClient for Scripted {
    fn connect(&self, req: ConnectReq) -> LocalBoxFuture<Result<ConnectReply, LogicError>> {
        let how = *self.0.on_connect.lock().unwrap();
        Box::pin(async move {
            match how {
                OnConnect::Accept => Ok(reply_for(&req)),
                OnConnect::Refuse => Err(LogicError::Refused("scripted bad token".into())),
                OnConnect::Fail => Err(LogicError::Unavailable("scripted logic down".into())),
                OnConnect::Delay(d) => {
                    monoio::time::sleep(d).await;
                    Ok(reply_for(&req))
                }
            }
        })
    }

    fn disconnect(&self, req: DisconnectReq) -> LocalBoxFuture<Result<(), LogicError>> {
        self.0.disconnects.lock().unwrap().push(req);
        Box::pin(async { Ok(()) })
    }

    fn heartbeat(&self, _: HeartbeatReq) -> LocalBoxFuture<Result<(), LogicError>> {
        Box::pin(async { Ok(()) })
    }

    fn renew_online(&self, _: OnlineReq) -> LocalBoxFuture<Result<OnlineReply, LogicError>> {
        Box::pin(async { Ok(OnlineReply::default()) })
    }

    fn receive(&self, req: ReceiveReq) -> LocalBoxFuture<Result<Vec<Proto>, LogicError>> {
        let script = self.0.clone();
        let proto = req.proto.clone().unwrap_or_default();
        script.received.lock().unwrap().push(req);
        let now = script.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        script.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Box::pin(async move {
            let body = String::from_utf8_lossy(&proto.body).into_owned();
            let mut text = body.as_str();
            if let Some(rest) = text.strip_prefix("delay:") {
                let (ms, t) = rest.split_once(':').unwrap_or((rest, ""));
                monoio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
                text = t;
            }
            let r = answer(proto.op, text);
            script.in_flight.fetch_sub(1, Ordering::SeqCst);
            r
        })
    }
}
