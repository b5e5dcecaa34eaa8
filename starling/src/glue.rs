//! In-process adapters across the seams. The distributed deployment replaces each with a
//! network one (gRPC client, Kafka producer, registry) without touching comet, logic or job.

use starling_cluster::registry::CometMeta;
use starling_comet::{Comet, LocalBoxFuture, LogicClient, LogicError as CometLogicError};
use starling_job::{BoxFuture as JobFuture, CometClient, Delivery, JobError};
use starling_logic::nodes::{Instance, Registry};
use starling_logic::store::BoxFuture;
use starling_logic::{Logic, LogicError, PushError, PushSink};
use starling_proto::grpc::comet::{BroadcastReq, BroadcastRoomReq, PushMsgReq};
use starling_proto::grpc::logic::{
    ConnectReply, ConnectReq, DisconnectReq, HeartbeatReq, OnlineReply, OnlineReq, PushMsg,
    ReceiveReq,
};
use starling_proto::grpc::protocol::Proto;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// comet → logic: runs each call on logic's tokio runtime and awaits the answer on the comet
/// worker (a cross-thread hand-off, as a gRPC client would do).
pub struct InProcessLogic {
    logic: Arc<Logic>,
    rt: tokio::runtime::Handle,
}

impl InProcessLogic {
    pub fn new(logic: Arc<Logic>, rt: tokio::runtime::Handle) -> Self {
        InProcessLogic { logic, rt }
    }

    fn call<T, F, Fut>(&self, f: F) -> LocalBoxFuture<Result<T, CometLogicError>>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Logic>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<T, LogicError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let logic = self.logic.clone();
        self.rt.spawn(async move {
            let _ = tx.send(f(logic).await);
        });
        Box::pin(async move {
            match rx.await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(LogicError::BadToken(m))) => Err(CometLogicError::Refused(m)),
                Ok(Err(e)) => Err(CometLogicError::Unavailable(e.to_string())),
                Err(_) => Err(CometLogicError::Unavailable("logic stopped".into())),
            }
        })
    }
}

impl LogicClient for InProcessLogic {
    fn connect(&self, req: ConnectReq) -> LocalBoxFuture<Result<ConnectReply, CometLogicError>> {
        self.call(move |l| async move { l.connect(req).await })
    }

    fn disconnect(&self, req: DisconnectReq) -> LocalBoxFuture<Result<(), CometLogicError>> {
        self.call(move |l| async move { l.disconnect(req).await.map(|_| ()) })
    }

    fn heartbeat(&self, req: HeartbeatReq) -> LocalBoxFuture<Result<(), CometLogicError>> {
        self.call(move |l| async move { l.heartbeat(req).await })
    }

    fn renew_online(&self, req: OnlineReq) -> LocalBoxFuture<Result<OnlineReply, CometLogicError>> {
        self.call(move |l| async move { l.renew_online(req).await })
    }

    fn receive(&self, req: ReceiveReq) -> LocalBoxFuture<Result<Vec<Proto>, CometLogicError>> {
        self.call(move |l| async move { l.receive(req).await })
    }
}

/// logic → job: the embedded stand-in for Kafka, a bounded queue. A full queue makes the push
/// wait up to 2 s, then fail (HTTP -500) rather than report accepted what was not queued.
pub struct QueueSink {
    tx: mpsc::Sender<Delivery>,
}

impl QueueSink {
    pub fn new(tx: mpsc::Sender<Delivery>) -> Self {
        QueueSink { tx }
    }
}

impl PushSink for QueueSink {
    fn publish(&self, msg: PushMsg) -> BoxFuture<'_, Result<(), PushError>> {
        Box::pin(async move {
            // Stamped now: job's `starling_job_delivery_seconds` counts the queue's wait.
            let d = Delivery::produced_now(msg);
            match tokio::time::timeout(Duration::from_secs(2), self.tx.send(d)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(PushError::Unavailable("job stopped".into())),
                Err(_) => Err(PushError::Unavailable("push queue full for 2s".into())),
            }
        })
    }
}

/// job → comet: the comet's own handle.
pub struct LocalComet(pub Comet);

fn comet_err(c: &Comet, e: starling_comet::CometError) -> JobError {
    JobError::Comet {
        server: c.server_id().to_string(),
        message: e.to_string(),
    }
}

impl CometClient for LocalComet {
    fn push_msg(&self, req: PushMsgReq) -> JobFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            self.0
                .push_msg(req)
                .await
                .map_err(|e| comet_err(&self.0, e))
        })
    }

    fn broadcast(&self, req: BroadcastReq) -> JobFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            self.0
                .broadcast(req)
                .await
                .map_err(|e| comet_err(&self.0, e))
        })
    }

    fn broadcast_room(&self, req: BroadcastRoomReq) -> JobFuture<'_, Result<(), JobError>> {
        Box::pin(async move {
            self.0
                .broadcast_room(req)
                .await
                .map_err(|e| comet_err(&self.0, e))
        })
    }
}

/// The registry of the all-in-one: its own comet, with live counts.
pub struct LocalRegistry {
    comet: OnceLock<Comet>,
    weight: u32,
    public_addrs: Vec<String>,
}

impl LocalRegistry {
    pub fn new(weight: u32, public_addrs: Vec<String>) -> Self {
        LocalRegistry {
            comet: OnceLock::new(),
            weight,
            public_addrs,
        }
    }

    pub fn set(&self, comet: Comet) {
        let _ = self.comet.set(comet);
    }
}

impl Registry for LocalRegistry {
    fn instances(&self) -> Vec<Instance> {
        let Some(c) = self.comet.get() else {
            return Vec::new();
        };
        let addrs = c.addrs().tcp.iter().map(|a| format!("tcp://{a}")).collect();
        let meta = CometMeta {
            weight: self.weight,
            offline: false,
            public_addrs: &self.public_addrs,
            conns: c.conn_count(),
            ips: c.ip_count(),
        };
        vec![Instance::comet(c.server_id(), addrs, meta)]
    }
}
