//! The IM layer's part in admitting a connection (reference im.md §5.1, §7.6). A connection
//! whose goim token asks for IM (`"im":"pb"|"json"`) is admitted only if the hook grants it;
//! a goim connection never reaches the hook. Without a hook (IM off) asking for IM is refused
//! (§13.7), so a client never believes it opted in when it did not.

use crate::logic::LogicError;
use crate::store::BoxFuture;
use bytes::Bytes;
use starling_proto::AuthToken;
use starling_proto::grpc::logic::HeartbeatReq;

/// A connection asking for IM, after goim's token was parsed and its key settled.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    pub token: &'a AuthToken,
    /// The connection key (the client's, or the one logic generated).
    pub key: &'a str,
    /// The comet holding the connection.
    pub server: &'a str,
    /// The connection's id within its comet (`ConnectReq.conn`; empty from a goim comet).
    pub conn: &'a str,
}

/// What an admitted IM connection gets on top of goim's `ConnectReply`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// `ConnectReply.im`: 1 protobuf, 2 JSON.
    pub im: i32,
    /// Ops added to the connection's accepts (the IM pushes 41, 43, 45).
    pub accepts: Vec<i32>,
    /// `ConnectReply.max_body`: the largest packet the connection may send, bytes.
    pub max_body: i32,
    /// `ConnectReply.welcome`: the op-8 auth reply body.
    pub welcome: Bytes,
}

/// Admits IM connections and learns when they leave.
pub trait ConnectHook: Send + Sync + 'static {
    /// Verifies the IM opt-in; `Err(LogicError::BadToken)` refuses the connection (comet
    /// closes it as goim does on a bad token).
    fn admit<'a>(&'a self, a: Admission<'a>) -> BoxFuture<'a, Result<Grant, LogicError>>;

    /// The connection `conn` (key `key` of `mid`) on `server` closed (goim's `Disconnect`).
    fn left<'a>(
        &'a self,
        mid: i64,
        key: &'a str,
        server: &'a str,
        conn: &'a str,
    ) -> BoxFuture<'a, ()>;

    /// A heartbeat of a connection (goim's `Heartbeat`; `req.im` is its IM codec, 0 for a
    /// goim connection, `req.conn` its id within its comet). The IM layer pushes back the
    /// expiry of its device table here, and puts back an entry Redis lost, as goim's heartbeat
    /// does for the session keys. Nothing by default.
    fn beat<'a>(&'a self, req: &'a HeartbeatReq) -> BoxFuture<'a, ()> {
        let _ = req;
        Box::pin(async {})
    }
}
