//! job → comet over goim's `goim.comet.Comet` gRPC service. Every call has a deadline and
//! is retried a few times (a comet restarting, a connection being remade); after that the
//! failure is logged and the message counts as handed over for that comet: its clients have
//! gone, and will be pushed to through whichever comet they reconnect to.

use crate::{BoxFuture, CometClient, JobError};
use starling_proto::grpc::comet::comet_client::CometClient as CometStub;
use starling_proto::grpc::comet::{BroadcastReq, BroadcastRoomReq, PushMsgReq};
use starling_proto::grpc::tuning;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

pub struct GrpcComet {
    server: String,
    stub: CometStub<Channel>,
    timeout: Duration,
    retries: u32,
}

impl GrpcComet {
    /// A client for the comet `server` at `addr` (`host:port`); connects on first use.
    pub fn new(
        server: &str,
        addr: &str,
        timeout: Duration,
        retries: u32,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = tuning::endpoint(addr, timeout)?.connect_lazy();
        Ok(GrpcComet {
            server: server.to_string(),
            stub: CometStub::new(channel),
            timeout,
            retries,
        })
    }

    async fn call<Req, Rep, F, Fut>(&self, req: Req, f: F) -> Result<(), JobError>
    where
        Req: Clone,
        F: Fn(CometStub<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Rep>, Status>>,
    {
        let mut last = None;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                // 100 ms, 200 ms, 400 ms ... (as `comets.retries` documents).
                tokio::time::sleep(Duration::from_millis(100 << (attempt - 1).min(5))).await;
            }
            let mut r = Request::new(req.clone());
            r.set_timeout(self.timeout);
            // tonic ends the call at its deadline (`grpc-timeout`); the guard is a backstop.
            match tokio::time::timeout(tuning::guard(self.timeout), f(self.stub.clone(), r)).await {
                Ok(Ok(_)) => return Ok(()),
                // The comet refused the request itself: retrying cannot help.
                Ok(Err(s)) if s.code() == Code::InvalidArgument => {
                    last = Some(s.message().to_string());
                    break;
                }
                Ok(Err(s)) => last = Some(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => last = Some("deadline exceeded".into()),
            }
        }
        Err(JobError::Comet {
            server: self.server.clone(),
            message: last.unwrap_or_default(),
        })
    }
}

impl CometClient for GrpcComet {
    fn push_msg(&self, req: PushMsgReq) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(self.call(req, |mut s, r| async move { s.push_msg(r).await }))
    }

    fn broadcast(&self, req: BroadcastReq) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(self.call(req, |mut s, r| async move { s.broadcast(r).await }))
    }

    fn broadcast_room(&self, req: BroadcastRoomReq) -> BoxFuture<'_, Result<(), JobError>> {
        Box::pin(self.call(req, |mut s, r| async move { s.broadcast_room(r).await }))
    }
}
