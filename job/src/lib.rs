//! job: turns `PushMsg`s (from Kafka, or logic's in-process queue) into comet calls.
//!
//! - PUSH goes to the one comet named in the message.
//! - ROOM messages go to every comet, batched per room without goim's fixed 1 s window: a
//!   message to an idle room leaves at once; while a room's batch is being written to a
//!   comet, later messages wait and leave together in that comet's next batch (one OpRaw
//!   payload, order kept).
//! - BROADCAST goes to every comet, `speed` split between them as goim does.
//!
//! - A PUSH for a comet job does not know yet (its registry entry not read yet: a new comet's
//!   first clients) is held up to `unknown_comet_wait` while job asks for a registry reread,
//!   then handed over in order, or dropped (counted) if the comet never shows up.
//!
//! Each comet has its own bounded, ordered queue drained by its own task ([`queue`]), so a
//! stalled or dead comet holds up only its own messages. A message's [`Done`] runs once
//! every comet it targets is through with it (handed over, given up on, or dropped).
//!
//! # Layout
//! - [`CometClient`]: the seam to comets (in-process handle, or gRPC `goim.comet.Comet`).
//! - [`Job`]: the comet set and the dispatcher loop ([`Job::run`]).
//! - [`queue`]: one comet's queue: lanes per key/room/broadcast, bound, behind policy.
//! - [`stats`]: counters, per-comet queue gauges, call latency.
//! - `node`: job as its own process (the `job` binary): Kafka in, gRPC out (feature `kafka`).

use bytes::Bytes;
use queue::{CometQueue, Item, ticket};
use serde::{Deserialize, Serialize};
use starling_cluster::metrics;
use starling_proto::grpc::comet::{BroadcastReq, BroadcastRoomReq, PushMsgReq};
use starling_proto::grpc::logic::{PushMsg, push_msg};
use starling_proto::grpc::protocol::Proto;
use starling_proto::op;
use starling_proto::raw::PUSH_VER;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{info, warn};

pub use stats::Stats;

#[cfg(feature = "kafka")]
pub mod node;
pub mod queue;
pub mod stats;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A `[job]` value the types allow but job cannot run with.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("job.comet_queue must be at least 1")]
    CometQueue,
    #[error("job.room_batch_max must be at least 1")]
    RoomBatchMax,
}

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

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Most messages in one room batch.
    pub room_batch_max: usize,
    /// Most bytes in one room batch (a single larger message still goes alone).
    pub room_batch_bytes: usize,
    /// Most messages waiting for one comet (in flight included); see [`queue`].
    pub comet_queue: usize,
    /// How long a comet with a full queue may go without answering any call before it is
    /// behind and what waits for it is dropped (counted).
    #[serde(with = "humantime_serde")]
    pub comet_stall: Duration,
    /// How long a PUSH for a comet job does not know waits for the registry to list it
    /// before it is dropped (counted). `"0s"` drops at once, as goim does.
    #[serde(with = "humantime_serde")]
    pub unknown_comet_wait: Duration,
}

impl Config {
    /// A queue of 0 could hold nothing (the dispatcher would wait forever), nor could a
    /// batch of 0 messages. `comet_stall = "0s"` is allowed: a full queue is then dropped at
    /// once.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.comet_queue == 0 {
            return Err(ConfigError::CometQueue);
        }
        if self.room_batch_max == 0 {
            return Err(ConfigError::RoomBatchMax);
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            room_batch_max: 200,
            room_batch_bytes: 256 * 1024,
            comet_queue: 16384,
            comet_stall: Duration::from_secs(5),
            unknown_comet_wait: Duration::from_secs(3),
        }
    }
}

/// Called once every comet a message targets is through with it: handed over, given up on
/// after the comet client's retries, or dropped because that comet was behind or left
/// (counted in [`Stats`]). Where a Kafka consumer stores the message's offset.
pub type Done = Box<dyn FnOnce() + Send>;

/// A `PushMsg` and what to do once it has been handed over.
pub struct Delivery {
    pub msg: PushMsg,
    pub done: Option<Done>,
    /// When logic handed the message over, ms since the Unix epoch on logic's clock (split:
    /// the Kafka record's CreateTime; all-in-one: its entry into the in-process queue). Job
    /// observes `starling_job_delivery_seconds` from it once every target comet is through;
    /// `None`: not observed.
    pub produced_ms: Option<i64>,
}

impl From<PushMsg> for Delivery {
    fn from(msg: PushMsg) -> Self {
        Delivery {
            msg,
            done: None,
            produced_ms: None,
        }
    }
}

impl Delivery {
    /// A message handed over now (the all-in-one's queue).
    pub fn produced_now(msg: PushMsg) -> Self {
        Delivery {
            msg,
            done: None,
            produced_ms: Some(unix_ms()),
        }
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub struct Job {
    config: Config,
    /// The comets to push to, as set by [`Job::set_comet`]; the dispatcher keeps a queue per
    /// entry and rereads the map when `version` moves.
    comets: RwLock<HashMap<String, Arc<dyn CometClient>>>,
    version: AtomicU64,
    /// Notified when `comets` changes, so the dispatcher resyncs at once (a departed
    /// comet's queue and its metric series go then, not at the next push).
    changed: Notify,
    stats: Arc<Stats>,
    /// Notified when a PUSH names a comet job does not know: the registry follower rereads.
    reread: Arc<Notify>,
}

/// The OpRaw packet job hands a comet: goim's `{ver 1, op 9, seq 0, body}`, sharing `body`.
pub(crate) fn wrap(body: Bytes) -> Proto {
    Proto {
        ver: i32::from(PUSH_VER),
        op: op::RAW,
        seq: 0,
        body,
    }
}

impl Job {
    pub fn new(config: Config) -> Self {
        Job {
            config,
            comets: RwLock::new(HashMap::new()),
            version: AtomicU64::new(0),
            changed: Notify::new(),
            stats: Arc::default(),
            reread: Arc::new(Notify::new()),
        }
    }

    /// Notified (once per comet newly missing) when a PUSH names a comet job does not know;
    /// whoever follows the registry rereads it then instead of at its next tick.
    pub fn reread(&self) -> Arc<Notify> {
        self.reread.clone()
    }

    /// Adds or replaces the comet known as `server`. A replaced comet's waiting messages are
    /// dropped (counted).
    pub fn set_comet(&self, server: &str, client: Arc<dyn CometClient>) {
        self.comets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(server.to_string(), client);
        self.version.fetch_add(1, Relaxed);
        self.changed.notify_one();
    }

    /// Forgets the comet known as `server`; what waits for it is dropped (counted).
    pub fn remove_comet(&self, server: &str) {
        self.comets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(server);
        self.version.fetch_add(1, Relaxed);
        self.changed.notify_one();
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Registers job's counters, per-comet queue gauges and call latency with `m`.
    pub fn register_metrics(&self, m: &metrics::Metrics) {
        let s = self.stats.clone();
        m.collect(move |enc| {
            for (name, help, v) in [
                (
                    "starling_job_dropped",
                    "Messages for one comet dropped because it was behind or left.",
                    &s.dropped,
                ),
                (
                    "starling_job_comet_behind",
                    "Times a comet's queue was full and the comet silent for job.comet_stall.",
                    &s.behind,
                ),
                (
                    "starling_job_comet_failed",
                    "Calls to a comet given up on after the client's retries.",
                    &s.failed,
                ),
                (
                    "starling_job_unknown_comet_held",
                    "Pushes for a comet job did not know yet, held for job.unknown_comet_wait.",
                    &s.held,
                ),
                (
                    "starling_job_delivered",
                    "Messages (per comet) handed over: the comet answered their call.",
                    &s.delivered,
                ),
            ] {
                metrics::counter(enc, name, help, v.load(Relaxed))?;
            }
            let queues = s.queue_gauges();
            metrics::gauges(
                enc,
                "starling_job_comet_queue",
                "Messages waiting for a comet or in a call to it (at most job.comet_queue).",
                queues.iter().map(|(c, d, _)| ([("comet", c.as_str())], *d)),
            )?;
            // Whole milliseconds: gauges here are integers.
            metrics::gauges(
                enc,
                "starling_job_comet_lag_ms",
                "Milliseconds a comet's calls in flight have gone unanswered (0: none waits).",
                queues
                    .iter()
                    .map(|(c, _, lag)| ([("comet", c.as_str())], (lag * 1000.0) as i64)),
            )
        });
        m.register(
            "starling_job_delivery_seconds",
            "Seconds from logic's hand-over of a push (split: the Kafka record's CreateTime on \
             logic's clock; all-in-one: its entry into the in-process queue) to job being \
             through with it at every comet it targets (answered, given up or dropped).",
            self.stats.delivery_seconds.clone(),
        );
        m.register(
            "starling_job_comet_call_seconds",
            "Seconds from a call to a comet to its answer (delivery to the comet; a room batch \
             returns once written).",
            self.stats.call_seconds.clone(),
        );
    }

    /// Brings the dispatcher's queues in line with the comet map.
    fn sync(&self, queues: &mut Queues) {
        let version = self.version.load(Relaxed);
        if queues.version == Some(version) {
            return;
        }
        queues.version = Some(version);
        let comets = self.comets.read().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = queues
            .by_server
            .iter()
            .filter(|(server, (client, _))| {
                !comets.get(*server).is_some_and(|c| Arc::ptr_eq(c, client))
            })
            .map(|(server, _)| server.clone())
            .collect();
        for server in gone {
            if let Some((_, q)) = queues.by_server.remove(&server) {
                q.remove();
            }
        }
        for (server, client) in comets.iter() {
            queues.by_server.entry(server.clone()).or_insert_with(|| {
                let q = CometQueue::start(
                    server,
                    client.clone(),
                    self.config.clone(),
                    self.stats.clone(),
                );
                (client.clone(), q)
            });
        }
    }

    /// Consumes `PushMsg`s (or [`Delivery`]s) until the sender side closes, handing each to
    /// the queue of every comet it targets (see [`queue`]); then waits until every queue
    /// has handed over what it holds.
    pub async fn run<M: Into<Delivery>>(self: Arc<Self>, mut rx: mpsc::Receiver<M>) {
        let mut queues = Queues::default();
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                // The comet set changed: new queues start, departed ones stop (and their
                // series leave the metrics) without waiting for the next push.
                _ = self.changed.notified() => {
                    self.sync(&mut queues);
                    self.release(&mut queues).await;
                    continue;
                }
                _ = tokio::time::sleep(HELD_POLL), if !queues.held.is_empty() => {
                    self.sync(&mut queues);
                    self.release(&mut queues).await;
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            self.sync(&mut queues);
            self.release(&mut queues).await;
            self.route(msg.into(), &mut queues).await;
        }
        for (server, _, _) in queues.held.drain(..) {
            self.stats.dropped.fetch_add(1, Relaxed);
            warn!(%server, "push for an unknown comet dropped at shutdown");
        }
        for (_, (_, q)) in queues.by_server.drain() {
            q.finish().await;
        }
    }

    /// Hands held pushes whose comet is now known to its queue (in arrival order) and drops
    /// those past their deadline (counted).
    async fn release(&self, queues: &mut Queues) {
        let (cap, stall) = (self.config.comet_queue, self.config.comet_stall);
        let now = Instant::now();
        let mut keep = std::collections::VecDeque::new();
        for (server, until, item) in std::mem::take(&mut queues.held) {
            if let Some((_, q)) = queues.by_server.get(&server) {
                q.offer(item, cap, stall, &self.stats).await;
            } else if until <= now {
                self.stats.dropped.fetch_add(1, Relaxed);
                warn!(%server, "push for an unknown comet dropped");
            } else {
                keep.push_back((server, until, item));
            }
        }
        queues.held = keep;
    }

    /// Holds a PUSH for a comet job does not know (see `unknown_comet_wait`); at most
    /// `comet_queue` are held, the oldest dropped first (counted).
    fn hold(&self, server: String, item: Item, queues: &mut Queues) {
        let wait = self.config.unknown_comet_wait;
        if wait.is_zero() {
            self.stats.dropped.fetch_add(1, Relaxed);
            warn!(%server, "push for an unknown comet dropped");
            return;
        }
        if queues.held.len() >= self.config.comet_queue
            && let Some((old, _, _)) = queues.held.pop_front()
        {
            self.stats.dropped.fetch_add(1, Relaxed);
            warn!(server = %old, "push for an unknown comet dropped (too many held)");
        }
        if !queues.held.iter().any(|(s, _, _)| *s == server) {
            info!(%server, ?wait, "push for a comet job does not know yet held; registry reread");
            self.reread.notify_one();
        }
        self.stats.held.fetch_add(1, Relaxed);
        queues.held.push_back((server, Instant::now() + wait, item));
    }

    async fn route(&self, delivery: Delivery, queues: &mut Queues) {
        let Delivery {
            msg,
            done,
            produced_ms,
        } = delivery;
        let t = ticket(self.stats.timed(done, produced_ms));
        let (cap, stall) = (self.config.comet_queue, self.config.comet_stall);
        match push_msg::Type::try_from(msg.r#type) {
            Ok(push_msg::Type::Push) => {
                let req = PushMsgReq {
                    keys: msg.keys,
                    proto_op: msg.operation,
                    proto: Some(wrap(starling_proto::raw::single(msg.operation, &msg.msg))),
                };
                let item = Item::Push(req, t);
                match queues.by_server.get(&msg.server) {
                    Some((_, q)) => q.offer(item, cap, stall, &self.stats).await,
                    None => self.hold(msg.server, item, queues),
                }
            }
            Ok(push_msg::Type::Room) => {
                let room: Arc<str> = msg.room.into();
                let body = msg.msg;
                for (_, q) in queues.by_server.values() {
                    let item = Item::Room(room.clone(), msg.operation, body.clone(), t.clone());
                    q.offer(item, cap, stall, &self.stats).await;
                }
            }
            Ok(push_msg::Type::Broadcast) => {
                if queues.by_server.is_empty() {
                    return; // goim divides by zero here
                }
                let speed = msg.speed / queues.by_server.len() as i32;
                let proto = wrap(starling_proto::raw::single(msg.operation, &msg.msg));
                for (_, q) in queues.by_server.values() {
                    let req = BroadcastReq {
                        proto_op: msg.operation,
                        proto: Some(proto.clone()),
                        speed,
                    };
                    q.offer(Item::Broadcast(req, t.clone()), cap, stall, &self.stats)
                        .await;
                }
            }
            Err(_) => warn!(kind = msg.r#type, "PushMsg of unknown type dropped"),
        }
    }
}

/// How often held pushes are checked against the comet map while any are held.
const HELD_POLL: Duration = Duration::from_millis(50);

/// The dispatcher's comet queues, keyed by server, with the client each was made for.
#[derive(Default)]
struct Queues {
    version: Option<u64>,
    by_server: HashMap<String, (Arc<dyn CometClient>, CometQueue)>,
    /// PUSHes for comets not (yet) known, oldest first, with their deadline.
    held: std::collections::VecDeque<(String, Instant, Item)>,
}

#[cfg(test)]
mod tests;
