//! comet → logic over gRPC when most calls end at their deadline (issue 15, soak). tonic ends
//! such a call on both sides, the client resetting the stream; with h2's default limits the
//! late answers to reset streams (client side) and the resets of streams not yet accepted
//! (server side) made h2 close the connection with `GOAWAY(ENHANCE_YOUR_CALM)`, so every call
//! in flight failed as `Unavailable` (503) instead of answering or timing out, and a 5-second
//! Redis pause in the soak became minutes of failures (`starling_proto::grpc::tuning`).

use starling_comet::logic::{LogicClient as _, LogicError};
use starling_comet::node::grpc::GrpcLogic;
use starling_proto::grpc::logic::logic_server::{Logic, LogicServer};
use starling_proto::grpc::logic::{
    ConnectReply, ConnectReq, DisconnectReply, DisconnectReq, HeartbeatReply, HeartbeatReq,
    NodesReply, NodesReq, OnlineReply, OnlineReq, ReceiveReply, ReceiveReq,
};
use starling_proto::grpc::tuning;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// A logic whose `Receive` answers after `ReceiveReq.mid` milliseconds.
struct Slow;

#[tonic::async_trait]
impl Logic for Slow {
    async fn connect(&self, _: Request<ConnectReq>) -> Result<Response<ConnectReply>, Status> {
        Err(Status::unimplemented("connect"))
    }
    async fn disconnect(
        &self,
        _: Request<DisconnectReq>,
    ) -> Result<Response<DisconnectReply>, Status> {
        Err(Status::unimplemented("disconnect"))
    }
    async fn heartbeat(
        &self,
        _: Request<HeartbeatReq>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        Err(Status::unimplemented("heartbeat"))
    }
    async fn renew_online(&self, _: Request<OnlineReq>) -> Result<Response<OnlineReply>, Status> {
        Err(Status::unimplemented("renew_online"))
    }
    async fn receive(&self, r: Request<ReceiveReq>) -> Result<Response<ReceiveReply>, Status> {
        let ms = r.into_inner().mid as u64;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(Response::new(ReceiveReply::default()))
    }
    async fn nodes(&self, _: Request<NodesReq>) -> Result<Response<NodesReply>, Status> {
        Err(Status::unimplemented("nodes"))
    }
}

#[test]
fn calls_past_their_deadline_time_out_without_failing_the_connection() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    rt.spawn(
        tuning::server()
            .add_service(LogicServer::new(Slow))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let deadline = Duration::from_millis(50);
    let channel = {
        let _g = rt.enter();
        tuning::endpoint(&addr, Duration::from_secs(5))
            .unwrap()
            .connect_lazy()
    };
    let logic = GrpcLogic::new(channel.clone(), rt.handle().clone(), deadline);
    // Answers from just before to just after the deadline: those that cross comet's reset
    // on the wire are the late answers h2 counted.
    let late = |n: usize| ReceiveReq {
        mid: 46 + (n % 9) as i64,
        ..Default::default()
    };

    // 8,000 calls around their deadline, 400 at a time: well over the 1,024 late answers
    // that made h2 close a connection that reset its streams.
    let (mut answered, mut timeouts, mut failures) = (0, 0, Vec::new());
    let mut kinds = std::collections::HashMap::new();
    rt.block_on(async {
        for wave in 0..20 {
            let calls: Vec<_> = (0..400)
                .map(|i| logic.receive(late(wave * 400 + i)))
                .collect();
            for r in futures_util::future::join_all(calls).await {
                match r {
                    Ok(_) => answered += 1,
                    Err(LogicError::Timeout(m)) => {
                        timeouts += 1;
                        *kinds.entry(m).or_insert(0) += 1;
                    }
                    other => failures.push(format!("{other:?}")),
                }
            }
        }
    });
    assert!(
        failures.is_empty(),
        "{} of 8000 calls failed instead of answering or timing out, first: {:?} {kinds:?}",
        failures.len(),
        failures.first()
    );
    assert_eq!(answered + timeouts, 8000);
    assert!(timeouts > 1024, "{timeouts} calls past the deadline");
    // The channel still answers (a deadline no load on this machine reaches).
    let patient = GrpcLogic::new(channel, rt.handle().clone(), Duration::from_secs(30));
    let r = rt.block_on(patient.receive(ReceiveReq::default()));
    assert!(r.is_ok(), "{r:?}");
}
