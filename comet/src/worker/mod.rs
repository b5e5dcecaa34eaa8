//! A worker: one thread, one monoio runtime, and everything its connections need. Nothing in
//! here is shared with other threads except through [`Shared`] (the key directory, counters,
//! the logic client) and the command channel.
//!
//! Tasks on a worker: one accept loop per listener, the readiness loop (every connection's
//! input and output, a batch per wake-up: there is no task per connection), an auth task
//! while logic answers, the wheel tick, the command loop and (worker 0) the online-count
//! loop.
//!
//! # Layout
//! - this file: [`Worker`] and what every task uses (deadlines, rooms, [`Worker::close`]).
//! - `input`: what a connection's input means: decoding, the op table, auth, logic's answers.
//! - `write`: flushing the connections touched by a batch (a connection writes itself:
//!   `conn::write`).
//! - `command`: [`Cmd`], what other threads ask of a worker, and the loop that runs it.
//! - `loops`: the wheel tick, the online-count report, shutdown and lame-duck draining.

use crate::bucket::{Buckets, ConnId, ConnRef};
use crate::close::{CloseReason, Stats};
use crate::config::Config;
use crate::conn::{Conn, Phase, Wire};
use crate::io;
use crate::limits::Verdict;
use crate::logic::LogicClient;
use crate::poller::Poller;
use crate::rooms::Rooms;
use crate::slab::Slab;
use crate::wheel::Wheel;
use starling_proto::grpc::logic::DisconnectReq;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tracing::{debug, info};

mod command;
mod input;
mod loops;
mod write;

pub(crate) use input::serve;

pub(crate) use command::{Cmd, Kick, gather_room_counts};

/// State every worker shares.
pub(crate) struct Shared {
    pub config: Config,
    pub server_id: String,
    pub buckets: Buckets,
    pub stats: Arc<Stats>,
    pub logic: Arc<dyn LogicClient>,
    pub senders: OnceLock<Vec<flume::Sender<Cmd>>>,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections per comet and per source address (`[comet.limits]`).
    pub limits: crate::limits::ConnLimits,
    /// Each connection's packet rate; `None`: unlimited.
    pub rate: Option<crate::limits::Rate>,
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

    /// Microseconds since the worker started (the packet-rate meters' time).
    pub fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn ticks(&self, d: Duration) -> u64 {
        (d.as_nanos() / self.tick.as_nanos()).max(1) as u64
    }
}

pub(crate) struct Worker {
    pub id: u16,
    pub shared: Arc<Shared>,
    pub conns: RefCell<Slab<Conn>>,
    /// Room id → members on this worker. A member's slot is kept in its session.
    pub rooms: RefCell<Rooms>,
    pub wheel: RefCell<Wheel<ConnId>>,
    pub clock: Clock,
    /// The one read buffer of this worker (and the TLS plaintext buffer).
    pub scratch: RefCell<Vec<u8>>,
    pub plain: RefCell<Vec<u8>>,
    /// Connections with output queued since the last flush.
    pub dirty: RefCell<Vec<ConnId>>,
    pub all_online: RefCell<Arc<HashMap<String, i32>>>,
    rng: Cell<u64>,
    pub stopping: Cell<bool>,
    /// Lame duck: listeners are shut and connections are being closed over a period.
    pub draining: Cell<bool>,
    /// This worker's listening sockets, shut when draining starts.
    pub listen_fds: RefCell<Vec<std::os::fd::RawFd>>,
    /// Readiness of every connection's socket.
    pub poller: Poller,
}

/// The largest read per syscall; also the worker's only read buffer.
const SCRATCH: usize = 64 * 1024;

impl Worker {
    /// Must run inside the worker's runtime (the readiness set registers with its driver).
    pub fn new(id: u16, shared: Arc<Shared>) -> std::io::Result<Self> {
        let tick = shared.config.protocol.tick;
        let slots = shared.config.protocol.wheel_slots;
        Ok(Worker {
            id,
            conns: RefCell::new(Slab::new()),
            rooms: RefCell::new(Rooms::default()),
            wheel: RefCell::new(Wheel::new(slots, 0)),
            clock: Clock {
                start: Instant::now(),
                tick,
            },
            scratch: RefCell::new(vec![0; SCRATCH]),
            plain: RefCell::new(Vec::new()),
            dirty: RefCell::new(Vec::new()),
            all_online: RefCell::new(Arc::new(HashMap::new())),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15 ^ (u64::from(id) + 1)),
            stopping: Cell::new(false),
            draining: Cell::new(false),
            listen_fds: RefCell::new(Vec::new()),
            poller: Poller::new()?,
            shared,
        })
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

    /// Runs a logic call nobody waits for (its answer is dropped). A failure is counted
    /// (`starling_comet_logic_failures_total`) and logged at debug, `what` naming the call:
    /// with logic down every connection's heartbeat renewal would otherwise flood the log.
    pub fn call_logic<T: 'static>(
        &self,
        what: &'static str,
        call: crate::logic::LocalBoxFuture<Result<T, crate::logic::LogicError>>,
    ) {
        let stats = self.shared.stats.clone();
        monoio::spawn(async move {
            if let Err(e) = call.await {
                stats
                    .logic_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                debug!(error = %e, "logic {what} failed");
            }
        });
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
        self.rooms.borrow().count(room)
    }

    /// Meters one packet (or WebSocket ping) of `conn` against `limits.max_packets_per_sec`:
    /// `Ok(true)` to handle it, `Ok(false)` to refuse it (counted), `Err(Flood)` once it has
    /// been over the rate `limits.flood_strikes` times without a pause.
    pub fn meter(&self, conn: &mut Conn) -> Result<bool, CloseReason> {
        let Some(rate) = &self.shared.rate else {
            return Ok(true);
        };
        match conn.meter.check(rate, self.clock.micros()) {
            Verdict::Pass => Ok(true),
            Verdict::Refuse => {
                self.stats()
                    .flood_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(false)
            }
            Verdict::Close => {
                self.stats()
                    .flood_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(CloseReason::Flood)
            }
        }
    }

    /// Moves the connection to `room` (empty: out of any room).
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
            let seat = rooms.join(room, id);
            sess.room_slot = seat.slot;
            sess.room = Some(seat.room);
        }
        if let Some((old_room, slot)) = old {
            leave_room(&mut rooms, &mut conns, &old_room, slot);
        }
    }

    /// Ends a connection: drops its state, frees its key and room slot, tells logic, and
    /// takes the socket out of the readiness set, shuts it and closes it.
    pub fn close(&self, id: ConnId, reason: CloseReason) {
        let Some(mut conn) = self.conns.borrow_mut().remove(id) else {
            return;
        };
        let stats = self.stats();
        stats
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        stats.record_close(reason);
        self.shared.limits.release(conn.peer);
        if reason.is_bad_input() {
            info!(peer = %conn.peer, reason = reason.as_str(), code = reason.code(), "connection closed");
        } else {
            debug!(peer = %conn.peer, reason = reason.as_str(), code = reason.code(), "connection closed");
        }
        // Best effort for a last reply (WS close frame, HTTP error) before the socket goes:
        // only while the socket takes output (a full socket would not take it anyway).
        if !conn.writing {
            self.last_words(&mut conn, reason);
        }
        if !conn.out.is_empty() && !conn.writing {
            let mut slices = [std::io::IoSlice::new(&[]); crate::conn::MAX_IOV];
            let n = conn.out.io_slices(&mut slices);
            let _ = io::send_vectored(conn.fd(), &slices[..n]);
        }
        self.poller.remove(conn.fd());
        io::shutdown(conn.fd());
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
            self.shared.buckets.remove_ip(conn.peer);
            // A connection whose key was taken over (a kick) must not delete the session,
            // which now belongs to its successor. goim deletes it and loses the new one.
            if !owned {
                return;
            }
            let call = self.shared.logic.disconnect(DisconnectReq {
                mid: sess.mid,
                key: sess.key.to_string(),
                server: self.shared.server_id.clone(),
                conn: self.conn_ref(id).label(),
            });
            self.call_logic("disconnect", call);
        }
    }
}

impl Worker {
    /// What a WebSocket client is told when comet closes it: after the upgrade a Close frame
    /// with [`CloseReason::ws_close_code`] and the reason's label (RFC 6455 §5.5.1, §7.4),
    /// so the client sees why instead of 1006; before it, a handshake that ran out of time
    /// gets `408 Request Timeout`. TCP (goim) has no close packet: nothing.
    fn last_words(&self, conn: &mut Conn, reason: CloseReason) {
        if !conn.is_ws() {
            return;
        }
        let cap = self.bound().past(1);
        if matches!(conn.phase, Phase::Upgrading) {
            if reason == CloseReason::HandshakeTimeout {
                let answer = starling_proto::ws::http_error(408, "Request Timeout");
                let _ = conn.queue(&self.out(), cap, &answer, Wire::Http);
            }
            return;
        }
        let Some(code) = reason.ws_close_code() else {
            return;
        };
        let mut payload = Vec::with_capacity(2 + reason.as_str().len());
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(reason.as_str().as_bytes());
        let close = Wire::Control(starling_proto::ws::Opcode::Close);
        let _ = conn.queue(&self.out(), cap, &payload, close);
    }
}

/// Takes the member at `slot` out of `room`, updating the slot of the member moved there.
fn leave_room(rooms: &mut Rooms, conns: &mut Slab<Conn>, room: &str, slot: u32) {
    if let Some(moved) = rooms.leave(room, slot)
        && let Some(sess) = conns.get_mut(moved).and_then(|c| c.session.as_mut())
    {
        sess.room_slot = slot;
    }
}
