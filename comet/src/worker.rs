//! A worker: one thread, one monoio runtime, and everything its connections need. Nothing in
//! here is shared with other threads except through [`Shared`] (the key directory, counters,
//! the logic client) and the command channel.
//!
//! Tasks on a worker: one accept loop per listener, one reader per connection, a writer only
//! while a connection's socket is full, the wheel tick, the command loop and (worker 0) the
//! online-count loop.

use crate::bucket::{Buckets, ConnId, ConnRef};
use crate::close::{CloseReason, Stats};
use crate::config::Config;
use crate::conn::{Conn, Phase, Transport};
use crate::io;
use crate::logic::LogicClient;
use crate::outbound::Outbound;
use crate::slab::Slab;
use crate::wheel::Wheel;
use starling_proto::grpc::logic::{DisconnectReq, OnlineReq};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Commands other threads send to a worker.
pub(crate) enum Cmd {
    /// Key/mid push: deliver to these connections if they accept `op`.
    Push {
        ids: Vec<ConnId>,
        op: i32,
        msg: Outbound,
    },
    /// Room push: every member, no accept filter (as goim). `done` is signalled once queued
    /// and flushed, which is what job's room batching waits on.
    Room {
        room: Arc<str>,
        msg: Outbound,
        done: flume::Sender<()>,
    },
    /// Broadcast to every connection accepting `op`, at most `speed` per second (0: no limit).
    Broadcast {
        op: i32,
        msg: Outbound,
        speed: u32,
    },
    /// Another connection took this one's key.
    Kick(ConnId),
    /// Reply with this worker's room member counts.
    RoomCounts(flume::Sender<Vec<(Arc<str>, i32)>>),
    /// Cluster-wide room counts from logic, used in heartbeat replies.
    SetAllOnline(Arc<HashMap<String, i32>>),
    Stop,
}

/// State every worker shares.
pub(crate) struct Shared {
    pub config: Config,
    pub server_id: String,
    pub buckets: Buckets,
    pub stats: Arc<Stats>,
    pub logic: Arc<dyn LogicClient>,
    pub senders: OnceLock<Vec<flume::Sender<Cmd>>>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Shared {
    pub fn senders(&self) -> &[flume::Sender<Cmd>] {
        self.senders
            .get()
            .expect("senders set before workers start")
    }
}

/// Ticks since the worker started, in `config.protocol.tick` units.
pub(crate) struct Clock {
    start: Instant,
    tick: Duration,
}

impl Clock {
    pub fn now(&self) -> u64 {
        (self.start.elapsed().as_nanos() / self.tick.as_nanos()) as u64
    }

    pub fn ticks(&self, d: Duration) -> u64 {
        (d.as_nanos() / self.tick.as_nanos()).max(1) as u64
    }
}

pub(crate) struct Worker {
    pub id: u16,
    pub shared: Arc<Shared>,
    pub conns: RefCell<Slab<Conn>>,
    /// Room id → members on this worker. A member's index is kept in its session.
    pub rooms: RefCell<HashMap<Arc<str>, Vec<ConnId>>>,
    pub wheel: RefCell<Wheel<ConnId>>,
    pub clock: Clock,
    /// The one read buffer of this worker (and the TLS plaintext buffer).
    pub scratch: RefCell<Vec<u8>>,
    pub plain: RefCell<Vec<u8>>,
    pub iov: RefCell<Vec<libc::iovec>>,
    /// Connections with output queued since the last flush.
    pub dirty: RefCell<Vec<ConnId>>,
    pub all_online: RefCell<Arc<HashMap<String, i32>>>,
    rng: Cell<u64>,
    pub stopping: Cell<bool>,
}

/// The largest read per syscall; also the worker's only read buffer.
const SCRATCH: usize = 64 * 1024;
/// At most this many buffers in one writev.
pub(crate) const MAX_IOV: usize = 64;
/// Commands handled per wake before flushing.
const CMD_BATCH: usize = 64;

impl Worker {
    pub fn new(id: u16, shared: Arc<Shared>) -> Self {
        let tick = shared.config.protocol.tick;
        let slots = shared.config.protocol.wheel_slots;
        Worker {
            id,
            conns: RefCell::new(Slab::new()),
            rooms: RefCell::new(HashMap::new()),
            wheel: RefCell::new(Wheel::new(slots, 0)),
            clock: Clock {
                start: Instant::now(),
                tick,
            },
            scratch: RefCell::new(vec![0; SCRATCH]),
            plain: RefCell::new(Vec::new()),
            iov: RefCell::new(Vec::with_capacity(MAX_IOV)),
            dirty: RefCell::new(Vec::new()),
            all_online: RefCell::new(Arc::new(HashMap::new())),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15 ^ (u64::from(id) + 1)),
            stopping: Cell::new(false),
            shared,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// xorshift64*: cheap per-worker randomness for spreading logic heartbeats.
    pub fn rand_below(&self, n: u64) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }

    pub fn conn_ref(&self, id: ConnId) -> ConnRef {
        ConnRef {
            worker: self.id,
            id,
        }
    }

    /// Sends a command to a worker without blocking this thread.
    pub fn send_to(&self, worker: u16, cmd: Cmd) {
        let tx = &self.shared.senders()[worker as usize];
        if let Err(flume::TrySendError::Full(cmd)) = tx.try_send(cmd) {
            let tx = tx.clone();
            monoio::spawn(async move {
                let _ = tx.send_async(cmd).await;
            });
        }
    }

    /// Sets a connection's deadline. Later deadlines cost nothing now: the wheel entry
    /// re-inserts itself when it fires early.
    pub fn set_deadline(&self, conn: &mut Conn, id: ConnId, due: u64) {
        conn.deadline = due;
        if due < conn.scheduled {
            conn.scheduled = due;
            self.wheel.borrow_mut().insert(due, id);
        }
    }

    /// Online count reported in heartbeat replies: the cluster's count from logic when known,
    /// else this worker's members (goim: `AllOnline` if > 0 else `Online`).
    pub fn room_online(&self, room: &str) -> i32 {
        if let Some(&n) = self.all_online.borrow().get(room)
            && n > 0
        {
            return n;
        }
        self.rooms.borrow().get(room).map_or(0, |m| m.len() as i32)
    }

    pub fn join_room(&self, id: ConnId, room: &str) {
        let mut conns = self.conns.borrow_mut();
        let Some(sess) = conns.get_mut(id).and_then(|c| c.session.as_mut()) else {
            return;
        };
        if sess.room.as_deref() == Some(room) {
            return; // goim #306: changing to the same room corrupted its list; a no-op here.
        }
        let old = sess.room.take().map(|r| (r, sess.room_slot));
        let mut rooms = self.rooms.borrow_mut();
        if !room.is_empty() {
            let name: Arc<str> = match rooms.get_key_value(room) {
                Some((k, _)) => k.clone(),
                None => room.into(),
            };
            let members = rooms.entry(name.clone()).or_default();
            sess.room_slot = members.len() as u32;
            members.push(id);
            sess.room = Some(name);
        }
        if let Some((old_room, slot)) = old {
            leave_room(&mut rooms, &mut conns, &old_room, slot);
        }
    }

    /// Ends a connection: drops its state, frees its key and room slot, tells logic, and
    /// shuts the socket so its reader wakes and exits.
    pub fn close(&self, id: ConnId, reason: CloseReason) {
        let Some(mut conn) = self.conns.borrow_mut().remove(id) else {
            return;
        };
        let stats = self.stats();
        stats
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        stats.record_close(reason);
        if reason.is_bad_input() {
            info!(peer = %conn.peer, reason = reason.as_str(), code = reason.code(), "connection closed");
        } else {
            debug!(peer = %conn.peer, reason = reason.as_str(), code = reason.code(), "connection closed");
        }
        // Best effort for a last reply (WS close frame, HTTP error) before the socket goes.
        if !conn.out.is_empty() && !conn.writing {
            let mut iov = self.iov.borrow_mut();
            conn.out.io_slices(&mut iov, MAX_IOV);
            let _ = io::writev(conn.fd, &iov);
        }
        io::shutdown(conn.fd);
        if let Some(sess) = conn.session.take() {
            stats
                .sessions
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(room) = &sess.room {
                let mut conns = self.conns.borrow_mut();
                leave_room(
                    &mut self.rooms.borrow_mut(),
                    &mut conns,
                    room,
                    sess.room_slot,
                );
            }
            let owned = self.shared.buckets.remove(&sess.key, self.conn_ref(id));
            self.shared.buckets.remove_ip(conn.peer.ip());
            // A connection whose key was taken over (a kick) must not delete the session,
            // which now belongs to its successor. goim deletes it and loses the new one.
            if !owned {
                return;
            }
            let fut = self.shared.logic.disconnect(DisconnectReq {
                mid: sess.mid,
                key: sess.key.to_string(),
                server: self.shared.server_id.clone(),
            });
            monoio::spawn(async move {
                if let Err(e) = fut.await {
                    warn!(error = %e, "logic disconnect failed");
                }
            });
        }
    }

    /// Queues a push for one connection; a full queue closes it as a slow consumer.
    pub fn queue_push(
        &self,
        conn: &mut Conn,
        id: ConnId,
        msg: &Outbound,
    ) -> Result<(), CloseReason> {
        let cap = self.shared.config.protocol.out_ring;
        let queued = match &mut conn.transport {
            Transport::Tcp => conn.out.push(cap, &[&msg.tcp_head, &msg.body]),
            Transport::Ws(_) => conn.out.push(cap, &[&msg.ws_head, &msg.body]),
            Transport::Tls(tls) => {
                let mut frame = Vec::with_capacity(msg.ws_head.len() + msg.body.len());
                frame.extend_from_slice(&msg.ws_head);
                frame.extend_from_slice(&msg.body);
                tls.encrypt(&frame, &mut conn.out, cap)
            }
        };
        queued.map_err(|_| CloseReason::SlowConsumer)?;
        self.stats()
            .pushed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if !conn.dirty {
            conn.dirty = true;
            self.dirty.borrow_mut().push(id);
        }
        Ok(())
    }

    /// Writes what is queued for one connection in as few writes as possible. If the socket
    /// is full, a writer task waits for it to drain.
    pub fn flush(self: &Rc<Self>, id: ConnId) {
        let result = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return;
            };
            conn.dirty = false;
            if conn.writing {
                return;
            }
            match self.write_out(conn) {
                Ok(true) => return,
                Ok(false) => {
                    conn.writing = true;
                    Ok(conn.stream.clone())
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(stream) => {
                let w = self.clone();
                monoio::spawn(async move {
                    loop {
                        if stream.writable(false).await.is_err() {
                            w.close(id, CloseReason::Io);
                            return;
                        }
                        let done = {
                            let mut conns = w.conns.borrow_mut();
                            let Some(conn) = conns.get_mut(id) else {
                                return;
                            };
                            match w.write_out(conn) {
                                Ok(true) => {
                                    conn.writing = false;
                                    true
                                }
                                Ok(false) => false,
                                Err(_) => {
                                    drop(conns);
                                    w.close(id, CloseReason::Io);
                                    return;
                                }
                            }
                        };
                        if done {
                            return;
                        }
                    }
                });
            }
            Err(_) => self.close(id, CloseReason::Io),
        }
    }

    /// Writes until the queue is empty (`Ok(true)`) or the socket is full (`Ok(false)`).
    fn write_out(&self, conn: &mut Conn) -> std::io::Result<bool> {
        let mut iov = self.iov.borrow_mut();
        loop {
            conn.out.io_slices(&mut iov, MAX_IOV);
            if iov.is_empty() {
                return Ok(true);
            }
            let want: usize = iov.iter().map(|v| v.iov_len).sum();
            match io::writev(conn.fd, &iov) {
                Ok(n) => {
                    self.stats()
                        .writes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    conn.out.consume(n);
                    if n < want {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub fn flush_dirty(self: &Rc<Self>) {
        let dirty = std::mem::take(&mut *self.dirty.borrow_mut());
        for id in &dirty {
            self.flush(*id);
        }
        let mut slot = self.dirty.borrow_mut();
        if slot.is_empty() {
            *slot = dirty;
            slot.clear();
        }
    }

    /// Handles commands from other threads, a batch per wake, flushing once per batch.
    pub async fn command_loop(self: Rc<Self>, rx: flume::Receiver<Cmd>) {
        while let Ok(cmd) = rx.recv_async().await {
            let mut stop = self.handle(cmd);
            for _ in 1..CMD_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => stop |= self.handle(cmd),
                    Err(_) => break,
                }
            }
            self.flush_dirty();
            if stop {
                break;
            }
        }
        self.stop_all();
    }

    fn handle(self: &Rc<Self>, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Push { ids, op, msg } => {
                let mut slow = Vec::new();
                {
                    let mut conns = self.conns.borrow_mut();
                    for id in ids {
                        let Some(conn) = conns.get_mut(id) else {
                            continue;
                        };
                        if conn.accepts(op) && self.queue_push(conn, id, &msg).is_err() {
                            slow.push(id);
                        }
                    }
                }
                for id in slow {
                    self.close(id, CloseReason::SlowConsumer);
                }
            }
            Cmd::Room { room, msg, done } => {
                self.push_room(&room, &msg);
                // The flush that makes "written" true happens before the ack.
                self.flush_dirty();
                let _ = done.send(());
            }
            Cmd::Broadcast { op, msg, speed } => {
                if speed == 0 {
                    let ids = self.conns.borrow().ids();
                    self.push_each(&ids, op, &msg);
                } else {
                    monoio::spawn(self.clone().paced_broadcast(op, msg, speed));
                }
            }
            Cmd::Kick(id) => self.close(id, CloseReason::Kicked),
            Cmd::RoomCounts(reply) => {
                let counts = self
                    .rooms
                    .borrow()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.len() as i32))
                    .collect();
                let _ = reply.send(counts);
            }
            Cmd::SetAllOnline(counts) => *self.all_online.borrow_mut() = counts,
            Cmd::Stop => return true,
        }
        false
    }

    fn push_room(&self, room: &str, msg: &Outbound) {
        let mut slow = Vec::new();
        {
            let rooms = self.rooms.borrow();
            let Some(members) = rooms.get(room) else {
                return;
            };
            let mut conns = self.conns.borrow_mut();
            for &id in members {
                let Some(conn) = conns.get_mut(id) else {
                    continue;
                };
                if self.queue_push(conn, id, msg).is_err() {
                    slow.push(id);
                }
            }
        }
        for id in slow {
            self.close(id, CloseReason::SlowConsumer);
        }
    }

    fn push_each(&self, ids: &[ConnId], op: i32, msg: &Outbound) {
        let mut slow = Vec::new();
        {
            let mut conns = self.conns.borrow_mut();
            for &id in ids {
                let Some(conn) = conns.get_mut(id) else {
                    continue;
                };
                if conn.session.is_some()
                    && conn.accepts(op)
                    && self.queue_push(conn, id, msg).is_err()
                {
                    slow.push(id);
                }
            }
        }
        for id in slow {
            self.close(id, CloseReason::SlowConsumer);
        }
    }

    /// A broadcast spread over time: `speed` connections per second on this worker, in slices
    /// every 100 ms, so a reconnect storm or a burst of client traffic is avoided.
    async fn paced_broadcast(self: Rc<Self>, op: i32, msg: Outbound, speed: u32) {
        const SLICE: Duration = Duration::from_millis(100);
        let per_slice = (speed as usize / 10).max(1);
        let ids = self.conns.borrow().ids();
        for chunk in ids.chunks(per_slice) {
            if self.stopping.get() {
                return;
            }
            self.push_each(chunk, op, &msg);
            self.flush_dirty();
            monoio::time::sleep(SLICE).await;
        }
    }

    /// Enforces deadlines: every tick, expired connections close and entries whose deadline
    /// moved later go back into the wheel.
    pub async fn tick_loop(self: Rc<Self>) {
        let tick = self.clock.tick;
        let mut fired = Vec::new();
        while !self.stopping.get() {
            monoio::time::sleep(tick).await;
            let now = self.clock.now();
            self.wheel.borrow_mut().advance(now, &mut fired);
            for (due, id) in fired.drain(..) {
                let expired = {
                    let mut conns = self.conns.borrow_mut();
                    let Some(conn) = conns.get_mut(id) else {
                        continue;
                    };
                    if conn.scheduled != due {
                        continue; // superseded by an earlier entry
                    }
                    if conn.deadline <= now {
                        Some(match conn.phase {
                            Phase::Authed => CloseReason::HeartbeatTimeout,
                            _ => CloseReason::HandshakeTimeout,
                        })
                    } else {
                        conn.scheduled = conn.deadline;
                        self.wheel.borrow_mut().insert(conn.deadline, id);
                        None
                    }
                };
                if let Some(reason) = expired {
                    self.close(id, reason);
                }
            }
        }
    }

    /// Worker 0 only: every interval, sums room counts over the workers, reports them to
    /// logic (goim's RenewOnline) and hands the cluster counts back to every worker.
    pub async fn online_loop(self: Rc<Self>) {
        let interval = self.shared.config.online_interval;
        loop {
            monoio::time::sleep(interval).await;
            if self.stopping.get() {
                return;
            }
            let counts = gather_room_counts(self.shared.senders()).await;
            let req = OnlineReq {
                server: self.shared.server_id.clone(),
                room_count: counts,
            };
            match self.shared.logic.renew_online(req).await {
                Ok(reply) => {
                    let all = Arc::new(reply.all_room_count);
                    for tx in self.shared.senders() {
                        let _ = tx.send_async(Cmd::SetAllOnline(all.clone())).await;
                    }
                }
                Err(e) => warn!(error = %e, "renew online failed"),
            }
        }
    }

    fn stop_all(&self) {
        self.stopping.set(true);
        let ids = self.conns.borrow().ids();
        for id in ids {
            self.close(id, CloseReason::Shutdown);
        }
    }
}

/// Sums the rooms' member counts over every worker (rooms with members only, as goim).
pub(crate) async fn gather_room_counts(senders: &[flume::Sender<Cmd>]) -> HashMap<String, i32> {
    let (tx, rx) = flume::bounded(senders.len());
    for s in senders {
        let _ = s.send_async(Cmd::RoomCounts(tx.clone())).await;
    }
    drop(tx);
    let mut total: HashMap<String, i32> = HashMap::new();
    while let Ok(counts) = rx.recv_async().await {
        for (room, n) in counts {
            if n > 0 {
                *total.entry(room.to_string()).or_default() += n;
            }
        }
    }
    total
}

/// Removes the member at `slot`, moving the last member into its place.
fn leave_room(
    rooms: &mut HashMap<Arc<str>, Vec<ConnId>>,
    conns: &mut Slab<Conn>,
    room: &str,
    slot: u32,
) {
    let Some(members) = rooms.get_mut(room) else {
        return;
    };
    let slot = slot as usize;
    if slot >= members.len() {
        return;
    }
    members.swap_remove(slot);
    if let Some(&moved) = members.get(slot)
        && let Some(sess) = conns.get_mut(moved).and_then(|c| c.session.as_mut())
    {
        sess.room_slot = slot as u32;
    }
    if members.is_empty() {
        rooms.remove(room);
    }
}
