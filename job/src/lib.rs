//! job: turns `PushMsg`s (from Kafka, or logic's in-process queue) into comet calls.
//!
//! - PUSH goes to the one comet named in the message.
//! - ROOM messages are batched per room without goim's fixed 1 s window: a message to an idle
//!   room leaves at once; while a room's batch is being written, later messages wait and
//!   leave together in the next batch (one OpRaw payload, order kept). Each room has at most
//!   one batch in flight, so per-room order holds.
//! - BROADCAST goes to every comet, `speed` split between them as goim does.
//!
//! # Layout
//! - [`CometClient`]: the seam to comets (in-process handle, or gRPC `goim.comet.Comet`).
//! - [`Job`]: the comet set and the dispatcher loop ([`Job::run`]).
//! - [`node`]: job as its own process (the `job` binary): Kafka in, gRPC out.

use bytes::Bytes;
use serde::Deserialize;
use starling_proto::grpc::comet::{BroadcastReq, BroadcastRoomReq, PushMsgReq};
use starling_proto::grpc::logic::{PushMsg, push_msg};
use starling_proto::grpc::protocol::Proto;
use starling_proto::op;
use starling_proto::raw::{PUSH_VER, RawBatch};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, warn};

pub mod node;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JobError {
    #[error("comet {server}: {message}")]
    Comet { server: String, message: String },
}

/// The calls job makes on a comet: goim's `goim.comet.Comet` service.
pub trait CometClient: Send + Sync + 'static {
    fn push_msg(&self, req: PushMsgReq) -> BoxFuture<'_, Result<(), JobError>>;
    fn broadcast(&self, req: BroadcastReq) -> BoxFuture<'_, Result<(), JobError>>;
    /// Resolves once the comet has written the batch (what room batching waits for).
    fn broadcast_room(&self, req: BroadcastRoomReq) -> BoxFuture<'_, Result<(), JobError>>;
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Most messages in one room batch.
    pub room_batch_max: usize,
    /// Most bytes in one room batch (a single larger message still goes alone).
    pub room_batch_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            room_batch_max: 200,
            room_batch_bytes: 256 * 1024,
        }
    }
}

/// Called once a message has been handed to every comet it targets (or given up on after
/// the comet client's retries): where a Kafka consumer stores the message's offset.
pub type Done = Box<dyn FnOnce() + Send>;

/// A `PushMsg` and what to do once it has been handed over.
pub struct Delivery {
    pub msg: PushMsg,
    pub done: Option<Done>,
}

impl From<PushMsg> for Delivery {
    fn from(msg: PushMsg) -> Self {
        Delivery { msg, done: None }
    }
}

fn finish(done: Option<Done>) {
    if let Some(d) = done {
        d();
    }
}

/// A room's messages waiting while its previous batch is written.
#[derive(Default)]
struct RoomQueue {
    pending: VecDeque<(i32, Bytes, Option<Done>)>,
    in_flight: bool,
}

pub struct Job {
    config: Config,
    comets: RwLock<HashMap<String, Arc<dyn CometClient>>>,
}

fn wrap(body: Bytes) -> Proto {
    Proto {
        ver: i32::from(PUSH_VER),
        op: op::RAW,
        seq: 0,
        body: body.to_vec(),
    }
}

impl Job {
    pub fn new(config: Config) -> Self {
        Job {
            config,
            comets: RwLock::new(HashMap::new()),
        }
    }

    /// Adds or replaces the comet known as `server`.
    pub fn set_comet(&self, server: &str, client: Arc<dyn CometClient>) {
        self.comets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.to_string(), client);
    }

    pub fn remove_comet(&self, server: &str) {
        self.comets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(server);
    }

    fn comets(&self) -> Vec<(String, Arc<dyn CometClient>)> {
        self.comets
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Consumes `PushMsg`s (or [`Delivery`]s) until the sender side closes.
    pub async fn run<M: Into<Delivery>>(self: Arc<Self>, mut rx: mpsc::Receiver<M>) {
        let mut rooms: HashMap<String, RoomQueue> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.route(msg.into(), &mut rooms, &done_tx).await;
                }
                Some(room) = done_rx.recv() => {
                    let q = rooms.get_mut(&room).expect("in-flight room has a queue");
                    q.in_flight = false;
                    if q.pending.is_empty() {
                        rooms.remove(&room);
                    } else {
                        self.send_room_batch(room, q, &done_tx);
                    }
                }
            }
        }
    }

    async fn route(
        self: &Arc<Self>,
        delivery: Delivery,
        rooms: &mut HashMap<String, RoomQueue>,
        done: &mpsc::UnboundedSender<String>,
    ) {
        let Delivery { msg, done: handed } = delivery;
        match push_msg::Type::try_from(msg.r#type) {
            Ok(push_msg::Type::Push) => {
                let client = self
                    .comets
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&msg.server)
                    .cloned();
                let Some(client) = client else {
                    warn!(server = %msg.server, "push for an unknown comet dropped");
                    finish(handed);
                    return;
                };
                let req = PushMsgReq {
                    keys: msg.keys,
                    proto_op: msg.operation,
                    proto: Some(wrap(starling_proto::raw::single(msg.operation, &msg.msg))),
                };
                // Awaited, not spawned: two pushes to one key must not overtake each other.
                if let Err(e) = client.push_msg(req).await {
                    warn!(error = %e, "push failed");
                }
                finish(handed);
            }
            Ok(push_msg::Type::Room) => {
                let q = rooms.entry(msg.room.clone()).or_default();
                q.pending
                    .push_back((msg.operation, Bytes::from(msg.msg), handed));
                if !q.in_flight {
                    self.send_room_batch(msg.room, q, done);
                }
            }
            Ok(push_msg::Type::Broadcast) => {
                let comets = self.comets();
                if comets.is_empty() {
                    finish(handed);
                    return; // goim divides by zero here
                }
                let speed = msg.speed / comets.len() as i32;
                let proto = wrap(starling_proto::raw::single(msg.operation, &msg.msg));
                for (server, c) in comets {
                    let req = BroadcastReq {
                        proto_op: msg.operation,
                        proto: Some(proto.clone()),
                        speed,
                    };
                    if let Err(e) = c.broadcast(req).await {
                        warn!(%server, error = %e, "broadcast failed");
                    }
                }
                finish(handed);
            }
            Err(_) => {
                warn!(kind = msg.r#type, "PushMsg of unknown type dropped");
                finish(handed);
            }
        }
    }

    /// Sends what the room has waiting (up to the batch limits) to every comet; `done` hears
    /// the room's name when all have written it.
    fn send_room_batch(
        self: &Arc<Self>,
        room: String,
        q: &mut RoomQueue,
        done: &mpsc::UnboundedSender<String>,
    ) {
        let mut batch = RawBatch::new();
        let mut handed = Vec::new();
        while let Some((op, body, _)) = q.pending.front() {
            let full = batch.len() >= self.config.room_batch_max
                || (!batch.is_empty()
                    && batch.byte_len() + body.len() + 16 > self.config.room_batch_bytes);
            if full {
                break;
            }
            batch.push(*op, body);
            if let Some((_, _, Some(d))) = q.pending.pop_front() {
                handed.push(d);
            }
        }
        q.in_flight = true;
        debug!(%room, messages = batch.len(), "room batch");
        let proto = wrap(batch.finish());
        let comets = self.comets();
        let done = done.clone();
        tokio::spawn(async move {
            // Every comet writes the batch at once; the room's next batch waits for all.
            let mut sends = tokio::task::JoinSet::new();
            for (server, c) in comets {
                let req = BroadcastRoomReq {
                    room_id: room.clone(),
                    proto: Some(proto.clone()),
                };
                sends.spawn(async move {
                    if let Err(e) = c.broadcast_room(req).await {
                        warn!(%server, error = %e, "room push failed");
                    }
                });
            }
            while sends.join_next().await.is_some() {}
            handed.into_iter().for_each(|d| d());
            let _ = done.send(room);
        });
    }
}

#[cfg(test)]
mod tests;
