//! goim's `goim.logic.Logic` gRPC service over [`Logic`], for comets (Starling's or goim's).

use crate::{Logic, LogicError};
use starling_proto::grpc::logic::logic_server;
use starling_proto::grpc::logic::{
    ConnectReply, ConnectReq, DisconnectReply, DisconnectReq, HeartbeatReply, HeartbeatReq,
    NodesReply, NodesReq, OnlineReply, OnlineReq, ReceiveReply, ReceiveReq,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub use starling_proto::grpc::logic::logic_server::LogicServer;

/// The service; `LogicServer::new(Service(logic))` serves it.
pub struct Service(pub Arc<Logic>);

/// A refused token is `UNAUTHENTICATED` (the comet closes that connection); a store or queue
/// failure is `UNAVAILABLE`.
fn status(e: LogicError) -> Status {
    match e {
        LogicError::BadToken(m) => Status::unauthenticated(m),
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl logic_server::Logic for Service {
    async fn connect(&self, r: Request<ConnectReq>) -> Result<Response<ConnectReply>, Status> {
        self.0
            .connect(r.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn disconnect(
        &self,
        r: Request<DisconnectReq>,
    ) -> Result<Response<DisconnectReply>, Status> {
        let has = self.0.disconnect(r.into_inner()).await.map_err(status)?;
        Ok(Response::new(DisconnectReply { has }))
    }

    async fn heartbeat(
        &self,
        r: Request<HeartbeatReq>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        self.0.heartbeat(r.into_inner()).await.map_err(status)?;
        Ok(Response::new(HeartbeatReply {}))
    }

    async fn renew_online(&self, r: Request<OnlineReq>) -> Result<Response<OnlineReply>, Status> {
        self.0
            .renew_online(r.into_inner())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn receive(&self, r: Request<ReceiveReq>) -> Result<Response<ReceiveReply>, Status> {
        let replies = self.0.receive(r.into_inner()).await.map_err(status)?;
        Ok(Response::new(ReceiveReply { replies }))
    }

    async fn nodes(&self, r: Request<NodesReq>) -> Result<Response<NodesReply>, Status> {
        Ok(Response::new(self.0.nodes(&r.into_inner().platform)))
    }
}
