//! comet's two gRPC faces: the `goim.comet.Comet` service job pushes through, and a
//! [`LogicClient`] that calls `goim.logic.Logic`. Both run on the comet's tokio thread; a
//! worker asking logic hands the call over and awaits a oneshot, so no worker ever blocks.

use crate::logic::{LocalBoxFuture, LogicClient, LogicError};
use crate::{Comet, CometError};
use starling_proto::grpc::comet::comet_server;
use starling_proto::grpc::comet::{
    BroadcastReply, BroadcastReq, BroadcastRoomReply, BroadcastRoomReq, PushMsgReply, PushMsgReq,
    RoomsReply, RoomsReq,
};
use starling_proto::grpc::logic::logic_client::LogicClient as LogicStub;
use starling_proto::grpc::logic::{
    ConnectReply, ConnectReq, DisconnectReq, HeartbeatReq, OnlineReply, OnlineReq, ReceiveReq,
};
use starling_proto::grpc::protocol::Proto;
use starling_proto::grpc::tuning;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

pub use starling_proto::grpc::comet::comet_server::CometServer;

/// `goim.comet.Comet` over the [`Comet`] handle.
pub struct Service(pub Comet);

fn status(e: CometError) -> Status {
    match e {
        CometError::InvalidArgument(m) => Status::invalid_argument(m),
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl comet_server::Comet for Service {
    async fn push_msg(&self, r: Request<PushMsgReq>) -> Result<Response<PushMsgReply>, Status> {
        self.0.push_msg(r.into_inner()).await.map_err(status)?;
        Ok(Response::new(PushMsgReply {}))
    }

    async fn broadcast(
        &self,
        r: Request<BroadcastReq>,
    ) -> Result<Response<BroadcastReply>, Status> {
        self.0.broadcast(r.into_inner()).await.map_err(status)?;
        Ok(Response::new(BroadcastReply {}))
    }

    async fn broadcast_room(
        &self,
        r: Request<BroadcastRoomReq>,
    ) -> Result<Response<BroadcastRoomReply>, Status> {
        self.0
            .broadcast_room(r.into_inner())
            .await
            .map_err(status)?;
        Ok(Response::new(BroadcastRoomReply {}))
    }

    async fn rooms(&self, _r: Request<RoomsReq>) -> Result<Response<RoomsReply>, Status> {
        Ok(Response::new(self.0.rooms().await))
    }
}

/// comet → logic over gRPC. Every call has `timeout` as its deadline, sent as `grpc-timeout`
/// (tonic ends the call there on both sides; [`tuning::guard`] is a backstop). A logic that is
/// down or slow fails the call (a new login is refused; existing connections are untouched);
/// a call past its deadline is a [`LogicError::Timeout`] (outcome unknown: 504 for an IM op).
/// The channel comes from [`tuning::endpoint`], so that calls ending at their deadline do not
/// make h2 close the connection.
pub struct GrpcLogic {
    stub: LogicStub<Channel>,
    rt: tokio::runtime::Handle,
    timeout: Duration,
}

impl GrpcLogic {
    pub fn new(channel: Channel, rt: tokio::runtime::Handle, timeout: Duration) -> Self {
        GrpcLogic {
            stub: LogicStub::new(channel),
            rt,
            timeout,
        }
    }

    fn call<Req, Rep, T, F, Fut>(
        &self,
        req: Req,
        f: F,
        map: impl FnOnce(Rep) -> T + Send + 'static,
    ) -> LocalBoxFuture<Result<T, LogicError>>
    where
        Req: Send + 'static,
        Rep: Send + 'static,
        T: Send + 'static,
        F: FnOnce(LogicStub<Channel>, Request<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Response<Rep>, Status>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let stub = self.stub.clone();
        let mut request = Request::new(req);
        request.set_timeout(self.timeout);
        let guard = tuning::guard(self.timeout);
        self.rt.spawn(async move {
            let r = match tokio::time::timeout(guard, f(stub, request)).await {
                Ok(Ok(rep)) => Ok(map(rep.into_inner())),
                Ok(Err(s)) if s.code() == Code::Unauthenticated => {
                    Err(LogicError::Refused(s.message().to_string()))
                }
                Ok(Err(s)) if tuning::past_deadline(s.code()) => {
                    Err(LogicError::Timeout(s.message().to_string()))
                }
                Ok(Err(s)) => Err(LogicError::Unavailable(format!(
                    "{:?}: {}",
                    s.code(),
                    s.message()
                ))),
                Err(_) => Err(LogicError::Timeout("deadline exceeded".into())),
            };
            let _ = tx.send(r);
        });
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(LogicError::Unavailable("gRPC thread stopped".into())))
        })
    }
}

impl LogicClient for GrpcLogic {
    fn connect(&self, req: ConnectReq) -> LocalBoxFuture<Result<ConnectReply, LogicError>> {
        self.call(req, |mut s, r| async move { s.connect(r).await }, |r| r)
    }

    fn disconnect(&self, req: DisconnectReq) -> LocalBoxFuture<Result<(), LogicError>> {
        self.call(req, |mut s, r| async move { s.disconnect(r).await }, |_| ())
    }

    fn heartbeat(&self, req: HeartbeatReq) -> LocalBoxFuture<Result<(), LogicError>> {
        self.call(req, |mut s, r| async move { s.heartbeat(r).await }, |_| ())
    }

    fn renew_online(&self, req: OnlineReq) -> LocalBoxFuture<Result<OnlineReply, LogicError>> {
        self.call(
            req,
            |mut s, r| async move { s.renew_online(r).await },
            |r| r,
        )
    }

    fn receive(&self, req: ReceiveReq) -> LocalBoxFuture<Result<Vec<Proto>, LogicError>> {
        self.call(
            req,
            |mut s, r| async move { s.receive(r).await },
            |r| r.replies,
        )
    }
}

/// A `/readyz` check: logic answers `Nodes` on `channel` within `timeout` (any answer,
/// even an error status from logic itself, shows it reachable; transport failures do not).
pub fn logic_check(
    channel: Channel,
    timeout: Duration,
) -> impl Fn() -> starling_cluster::health::CheckFuture + Send + Sync + 'static {
    move || {
        let mut stub = LogicStub::new(channel.clone());
        Box::pin(async move {
            let mut req = Request::new(starling_proto::grpc::logic::NodesReq::default());
            req.set_timeout(timeout);
            match stub.nodes(req).await {
                Ok(_) => Ok(()),
                Err(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded) => {
                    Err(format!("logic: {}", s.message()))
                }
                Err(_) => Ok(()),
            }
        })
    }
}
