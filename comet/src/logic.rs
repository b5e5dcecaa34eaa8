//! The seam between comet and logic, shaped like goim's `goim.logic.Logic` gRPC service so
//! the distributed deployment can put tonic behind it unchanged.
//!
//! Futures are polled on a comet worker (a monoio thread), so they need not be `Send`; an
//! implementation whose work runs elsewhere (a tokio runtime, a gRPC client) hands the
//! request over and awaits a reply channel.

use starling_proto::grpc::logic::{
    ConnectReply, ConnectReq, DisconnectReq, HeartbeatReq, OnlineReply, OnlineReq, ReceiveReq,
};
use starling_proto::grpc::protocol::Proto;
use std::future::Future;
use std::pin::Pin;
use thiserror::Error;

pub type LocalBoxFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LogicError {
    /// logic refused the request (a bad token, for Connect).
    #[error("refused: {0}")]
    Refused(String),
    /// logic could not be reached or failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// logic did not answer within the call's deadline.
    #[error("timed out: {0}")]
    Timeout(String),
}

pub trait LogicClient: Send + Sync + 'static {
    fn connect(&self, req: ConnectReq) -> LocalBoxFuture<Result<ConnectReply, LogicError>>;
    fn disconnect(&self, req: DisconnectReq) -> LocalBoxFuture<Result<(), LogicError>>;
    fn heartbeat(&self, req: HeartbeatReq) -> LocalBoxFuture<Result<(), LogicError>>;
    fn renew_online(&self, req: OnlineReq) -> LocalBoxFuture<Result<OnlineReply, LogicError>>;
    /// goim's `Receive`: a client packet for logic. The answer (`ReceiveReply.replies`) is
    /// written back to the connection for a forward-and-answer op and dropped otherwise.
    fn receive(&self, req: ReceiveReq) -> LocalBoxFuture<Result<Vec<Proto>, LogicError>>;
}
