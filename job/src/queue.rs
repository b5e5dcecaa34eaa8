//! One ordered queue per comet, each drained by its own task, so a stalled or dead comet
//! delays only its own messages.
//!
//! Inside a comet's queue, messages wait in lanes: one for key pushes, one for broadcasts,
//! one per room. Each lane has at most one call in flight and sends its messages in the
//! order job received them; a room lane sends everything that waited as one OpRaw batch (up
//! to the batch limits). So per key, per room and for broadcasts the order holds; between
//! lanes it does not (a room message may reach a comet after a later key push, as in goim,
//! whose room messages wait up to a second in their batch).
//!
//! Bounded: at most `Config::comet_queue` messages wait for one comet (in flight included).
//! When that fills, the dispatcher waits for room while the comet is still answering (a slow
//! comet holds input back, as Kafka lag, and nothing is lost); once the comet has answered
//! nothing for `Config::comet_stall`, it is *behind*: everything waiting for it that is not
//! already in a call is dropped, counted (`starling_job_dropped_total`) and logged, and the
//! message that did not fit is dropped with them. Its clients missed those messages; their
//! sessions stay until they reconnect or expire (goim's protocol has no way to tell them).

use crate::stats::Stats;
use crate::{CometClient, Config, Done, JobError};
use bytes::Bytes;
use starling_cluster::metrics;
use starling_proto::grpc::comet::{BroadcastReq, BroadcastRoomReq, PushMsgReq};
use starling_proto::packet::HEADER_LEN;
use starling_proto::raw::RawBatch;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Runs a message's [`Done`] when the last of its comets is through with it: handed over,
/// given up on after the comet client's retries, or dropped. Shared by every comet queue
/// the message went to.
pub(crate) struct Handed(Mutex<Option<Done>>);

impl Drop for Handed {
    fn drop(&mut self) {
        if let Some(done) = self.0.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
            done();
        }
    }
}

/// A message's share of its [`Done`] (none when nobody waits for it).
pub(crate) type Ticket = Option<Arc<Handed>>;

pub(crate) fn ticket(done: Option<Done>) -> Ticket {
    done.map(|d| Arc::new(Handed(Mutex::new(Some(d)))))
}

/// One message for one comet.
pub(crate) enum Item {
    Push(PushMsgReq, Ticket),
    Room(Arc<str>, i32, Bytes, Ticket),
    Broadcast(BroadcastReq, Ticket),
}

/// What the dispatcher and a comet's task share.
pub(crate) struct Shared {
    pub(crate) server: String,
    /// Messages accepted for this comet and not yet through (waiting or in a call).
    pub(crate) queued: AtomicUsize,
    /// Milliseconds since `epoch` at the last sign of life: a call answered, or a call
    /// started while none was in flight.
    alive_at: AtomicU64,
    /// Calls in flight.
    calls: AtomicUsize,
    /// Set by the dispatcher when the comet is behind; the task drops what waits.
    flush: AtomicBool,
    /// Set when the comet left the set: the task drops everything and ends.
    gone: AtomicBool,
    /// Woken when `queued` goes down or `flush` is set.
    wake: Notify,
    space: Notify,
    epoch: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn mark_alive(&self) {
        self.alive_at.store(self.now_ms(), Relaxed);
    }

    /// How long the comet has had calls in flight without answering any.
    pub(crate) fn silent_for(&self) -> Duration {
        if self.calls.load(Relaxed) == 0 {
            return Duration::ZERO;
        }
        let since = self.now_ms().saturating_sub(self.alive_at.load(Relaxed));
        Duration::from_millis(since)
    }
}

/// The dispatcher's handle on one comet's queue. Dropping it lets the task finish what
/// waits and end; [`CometQueue::remove`] makes it drop what waits instead.
pub(crate) struct CometQueue {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Item>,
    task: tokio::task::JoinHandle<()>,
}

impl CometQueue {
    /// Starts the comet's task on the current tokio runtime.
    pub(crate) fn start(
        server: &str,
        client: Arc<dyn CometClient>,
        config: Config,
        stats: Arc<Stats>,
    ) -> Self {
        let shared = Arc::new(Shared {
            server: server.to_string(),
            queued: AtomicUsize::new(0),
            alive_at: AtomicU64::new(0),
            calls: AtomicUsize::new(0),
            flush: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            wake: Notify::new(),
            space: Notify::new(),
            epoch: Instant::now(),
        });
        stats.track(&shared);
        let (tx, rx) = mpsc::unbounded_channel();
        let drain = Drain {
            shared: shared.clone(),
            client,
            config,
            stats,
            keys: Lane::default(),
            broadcasts: Lane::default(),
            rooms: HashMap::new(),
            calls: JoinSet::new(),
        };
        let task = tokio::spawn(async move {
            let stats = drain.stats.clone();
            let shared = drain.shared.clone();
            drain.run(rx).await;
            stats.untrack(&shared);
        });
        CometQueue { shared, tx, task }
    }

    /// The comet left: what waits for it is dropped (counted) and its calls abandoned.
    pub(crate) fn remove(self) {
        self.shared.gone.store(true, Relaxed);
        self.shared.wake.notify_one();
    }

    /// Lets the task hand over what waits, and waits for it.
    pub(crate) async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }

    /// Queues one message for this comet, in order after everything offered before. Waits
    /// while the queue is full and the comet is answering; drops the queue (and `item`) once
    /// it has not answered for `stall`. See the module docs.
    pub(crate) async fn offer(&self, item: Item, cap: usize, stall: Duration, stats: &Stats) {
        let s = &self.shared;
        loop {
            if s.queued.load(Relaxed) < cap {
                s.queued.fetch_add(1, Relaxed);
                if self.tx.send(item).is_err() {
                    s.queued.fetch_sub(1, Relaxed);
                }
                return;
            }
            let silent = s.silent_for();
            if silent >= stall {
                if !s.flush.swap(true, Relaxed) {
                    stats.behind.fetch_add(1, Relaxed);
                    warn!(
                        server = %s.server, queued = cap, silent = ?silent,
                        "comet behind: dropping what waits for it"
                    );
                    s.wake.notify_one();
                }
                stats.dropped.fetch_add(1, Relaxed);
                return;
            }
            // Full but answering: wait for room, or until it has been silent for `stall`.
            let space = s.space.notified();
            let _ = tokio::time::timeout(stall - silent, space).await;
        }
    }
}

/// Messages waiting in one lane, and whether its call is in flight.
struct Lane<T> {
    pending: VecDeque<T>,
    busy: bool,
}

impl<T> Lane<T> {
    /// The next message to send, unless a call is in flight; the lane is then busy.
    fn next(&mut self) -> Option<T> {
        if self.busy {
            return None;
        }
        let item = self.pending.pop_front()?;
        self.busy = true;
        Some(item)
    }
}

impl<T> Default for Lane<T> {
    fn default() -> Self {
        Lane {
            pending: VecDeque::new(),
            busy: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LaneId {
    Keys,
    Broadcasts,
    Room(Arc<str>),
}

/// A finished call: its lane, how many messages it carried, whether the comet answered.
type CallResult = (LaneId, usize, Result<(), JobError>);

/// The task that owns one comet's lanes.
struct Drain {
    shared: Arc<Shared>,
    client: Arc<dyn CometClient>,
    config: Config,
    stats: Arc<Stats>,
    keys: Lane<(PushMsgReq, Ticket)>,
    broadcasts: Lane<(BroadcastReq, Ticket)>,
    rooms: HashMap<Arc<str>, Lane<(i32, Bytes, Ticket)>>,
    calls: JoinSet<CallResult>,
}

impl Drain {
    /// Runs until the comet is removed, or until the dispatcher is done with it and every
    /// message was handed over.
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Item>) {
        let mut open = true;
        while !self.shared.gone.load(Relaxed) {
            if !open && self.calls.is_empty() {
                return; // every lane with messages has a call in flight
            }
            tokio::select! {
                item = rx.recv(), if open => match item {
                    Some(item) => self.accept(item),
                    None => open = false,
                },
                Some(r) = self.calls.join_next(), if !self.calls.is_empty() => match r {
                    Ok(done) => self.finished(done),
                    Err(e) => warn!(server = %self.shared.server, error = %e, "comet call panicked"),
                },
                _ = self.shared.wake.notified() => {}
            }
            if self.shared.flush.load(Relaxed) {
                self.drop_waiting(&mut rx);
                self.shared.flush.store(false, Relaxed);
            }
        }
        // The comet left: what still waits is given up on, and so are the calls in flight
        // (aborted when `calls` drops).
        self.drop_waiting(&mut rx);
        let in_flight = self.shared.queued.load(Relaxed);
        if in_flight > 0 {
            self.stats.dropped.fetch_add(in_flight as u64, Relaxed);
            info!(server = %self.shared.server, abandoned = in_flight, "comet left with calls in flight");
        }
    }

    fn accept(&mut self, item: Item) {
        match item {
            Item::Push(req, t) => {
                self.keys.pending.push_back((req, t));
                self.start(LaneId::Keys);
            }
            Item::Broadcast(req, t) => {
                self.broadcasts.pending.push_back((req, t));
                self.start(LaneId::Broadcasts);
            }
            Item::Room(room, op, body, t) => {
                let lane = self.rooms.entry(room.clone()).or_default();
                lane.pending.push_back((op, body, t));
                self.start(LaneId::Room(room));
            }
        }
    }

    /// Starts the lane's next call unless one is in flight.
    fn start(&mut self, id: LaneId) {
        let client = self.client.clone();
        let server = self.shared.server.clone();
        match &id {
            LaneId::Keys => {
                let Some((req, t)) = self.keys.next() else {
                    return;
                };
                self.spawn(id, 1, async move {
                    let r = client.push_msg(req).await;
                    drop(t);
                    r
                });
            }
            LaneId::Broadcasts => {
                let Some((req, t)) = self.broadcasts.next() else {
                    return;
                };
                self.spawn(id, 1, async move {
                    let r = client.broadcast(req).await;
                    drop(t);
                    r
                });
            }
            LaneId::Room(room) => {
                let Some(lane) = self.rooms.get_mut(room) else {
                    return;
                };
                if lane.busy || lane.pending.is_empty() {
                    return;
                }
                let (proto, tickets) = room_batch(&mut lane.pending, &self.config);
                lane.busy = true;
                let n = tickets.len();
                debug!(%server, %room, messages = n, "room batch");
                let req = BroadcastRoomReq {
                    room_id: room.to_string(),
                    proto: Some(crate::wrap(proto)),
                };
                self.spawn(id, n, async move {
                    let r = client.broadcast_room(req).await;
                    drop(tickets);
                    r
                });
            }
        }
    }

    fn spawn(
        &mut self,
        id: LaneId,
        n: usize,
        call: impl Future<Output = Result<(), JobError>> + Send + 'static,
    ) {
        if self.shared.calls.fetch_add(1, Relaxed) == 0 {
            self.shared.mark_alive();
        }
        let stats = self.stats.clone();
        self.calls.spawn(async move {
            let start = std::time::Instant::now();
            let r = call.await;
            stats.call_seconds.observe(metrics::seconds_since(start));
            (id, n, r)
        });
    }

    fn finished(&mut self, (id, n, result): CallResult) {
        self.shared.calls.fetch_sub(1, Relaxed);
        match result {
            Ok(()) => {
                self.shared.mark_alive();
                self.stats.delivered.fetch_add(n as u64, Relaxed);
            }
            Err(e) => {
                self.stats.failed.fetch_add(1, Relaxed);
                warn!(error = %e, messages = n, "comet call given up");
            }
        }
        self.release(n);
        match &id {
            LaneId::Keys => self.keys.busy = false,
            LaneId::Broadcasts => self.broadcasts.busy = false,
            LaneId::Room(room) => {
                let Some(lane) = self.rooms.get_mut(room) else {
                    return;
                };
                lane.busy = false;
                if lane.pending.is_empty() {
                    self.rooms.remove(room);
                    return;
                }
            }
        }
        self.start(id);
    }

    fn release(&self, n: usize) {
        self.shared.queued.fetch_sub(n, Relaxed);
        self.shared.space.notify_one();
    }

    /// Drops every message not already in a call (and what is still in the channel).
    fn drop_waiting(&mut self, rx: &mut mpsc::UnboundedReceiver<Item>) {
        while let Ok(item) = rx.try_recv() {
            self.accept_waiting(item);
        }
        let mut n = self.keys.pending.len() + self.broadcasts.pending.len();
        self.keys.pending.clear();
        self.broadcasts.pending.clear();
        self.rooms.retain(|_, lane| {
            n += lane.pending.len();
            lane.pending.clear();
            lane.busy
        });
        if n > 0 {
            self.stats.dropped.fetch_add(n as u64, Relaxed);
            info!(server = %self.shared.server, dropped = n, "messages for comet dropped");
            self.release(n);
        }
    }

    /// Puts a message in its lane without starting a call (it is about to be dropped).
    fn accept_waiting(&mut self, item: Item) {
        match item {
            Item::Push(req, t) => self.keys.pending.push_back((req, t)),
            Item::Broadcast(req, t) => self.broadcasts.pending.push_back((req, t)),
            Item::Room(room, op, body, t) => {
                self.rooms
                    .entry(room)
                    .or_default()
                    .pending
                    .push_back((op, body, t));
            }
        }
    }
}

/// Takes what a room lane has waiting, up to the batch limits (a single larger message
/// still goes alone), as one OpRaw payload and the tickets it carries.
fn room_batch(
    pending: &mut VecDeque<(i32, Bytes, Ticket)>,
    config: &Config,
) -> (Bytes, Vec<Ticket>) {
    let mut batch = RawBatch::new();
    let mut tickets = Vec::new();
    while let Some((op, body, _)) = pending.front() {
        let full = batch.len() >= config.room_batch_max
            || (!batch.is_empty()
                && batch.byte_len() + HEADER_LEN + body.len() > config.room_batch_bytes);
        if full {
            break;
        }
        batch.push(*op, body);
        if let Some((_, _, t)) = pending.pop_front() {
            tickets.push(t);
        }
    }
    (batch.finish(), tickets)
}
