//! Client packets comet forwards to logic (goim's `Receive`), routed to handlers by op, so a
//! feature registers handlers instead of adding branches. An op with no handler is logged
//! and answered with nothing, as goim's logic does.
//!
//! comet writes a handler's answer back to the connection only for a forward-and-answer op
//! (an opted-in connection's ops 20–39, `ConnectReply.im`); for every other op comet has
//! already echoed goim's empty reply and drops the answer.

use crate::logic::LogicError;
use crate::store::BoxFuture;
use starling_proto::grpc::logic::ReceiveReq;
use starling_proto::grpc::protocol::Proto;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Answers the client packets of one op.
pub trait Handler: Send + Sync + 'static {
    /// `req.proto` is the client's packet (op, ver, seq, body), `req.mid` and `req.key` its
    /// connection. Returns the packets (op and body; comet sets `ver` and `seq` from the
    /// request) to write back, in order; zero is allowed. An error makes comet answer op + 1
    /// with code 503.
    fn handle(&self, req: ReceiveReq) -> BoxFuture<'_, Result<Vec<Proto>, LogicError>>;
}

/// Handlers by op.
#[derive(Default)]
pub struct Handlers {
    by_op: RwLock<HashMap<i32, Arc<dyn Handler>>>,
}

impl Handlers {
    /// Routes `op` to `handler`, replacing any earlier one.
    pub fn set(&self, op: i32, handler: Arc<dyn Handler>) {
        self.by_op
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(op, handler);
    }

    pub fn get(&self, op: i32) -> Option<Arc<dyn Handler>> {
        self.by_op
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&op)
            .cloned()
    }
}
