//! What other threads ask of a worker, and the loop that does it: a batch of commands per
//! wake-up, then one flush of every connection they touched.

use super::Worker;
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::conn::Sent;
use crate::conn::{KICK_GRACE, Phase};
use crate::outbound::Outbound;
use starling_proto::grpc::protocol::Proto;
use starling_proto::{op, raw};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Commands other threads send to a worker.
pub(crate) enum Cmd {
    /// Key/mid push: deliver to these connections if they accept `op`. `kick`: `op` is the
    /// IM kick (45), honoured by connections that opted in whatever they accept.
    Push {
        ids: Vec<ConnId>,
        op: i32,
        msg: Outbound,
        kick: Option<Kick>,
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
    /// Reply with (this worker's id, its open connections, authenticated or not).
    ConnCount(flume::Sender<(usize, usize)>),
    /// Reply with what waits in this worker's outbound queues.
    Queues(flume::Sender<crate::outbound::QueueDepth>),
    /// Cluster-wide room counts from logic, used in heartbeat replies.
    SetAllOnline(Arc<HashMap<String, i32>>),
    /// Stop accepting and close every connection spread over `over`; `done` is signalled
    /// when the last one is closed.
    LameDuck {
        over: Duration,
        done: flume::Sender<()>,
    },
    Stop,
}

/// An IM kick (a key push of op 45, reference im.md §7.6) as a connection that opted in takes
/// it. comet looks at goim's packet framing only, never at the IM body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// Write the kick packet, then close (`im_kick`).
    Notice,
    /// An empty message: close at once, nothing written (`kicked`): logic replacing the
    /// connection of the same device key on another comet, as goim's same-key rule (§13.11).
    Silent,
}

impl Kick {
    /// Silent when the message is empty: the proto's body, or every packet inside an OpRaw
    /// batch (job wraps logic's message as one packet).
    pub fn of(proto: &Proto) -> Kick {
        let empty = if proto.op == op::RAW {
            raw::packets(&proto.body).all(|p| p.is_ok_and(|p| p.body.is_empty()))
        } else {
            proto.body.is_empty()
        };
        if empty { Kick::Silent } else { Kick::Notice }
    }
}

/// Commands handled per wake before flushing.
const CMD_BATCH: usize = 64;

impl Worker {
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
            Cmd::Push { ids, op, msg, kick } => self.push_keys(ids, op, &msg, kick),
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
                let _ = reply.send(self.rooms.borrow().counts());
            }
            Cmd::ConnCount(reply) => {
                let _ = reply.send((usize::from(self.id), self.conns.borrow().len()));
            }
            Cmd::Queues(reply) => {
                let mut depth = crate::outbound::QueueDepth::default();
                for c in self.conns.borrow().values() {
                    depth.add(&c.out);
                }
                let _ = reply.send(depth);
            }
            Cmd::SetAllOnline(counts) => *self.all_online.borrow_mut() = counts,
            Cmd::LameDuck { over, done } => {
                monoio::spawn(self.clone().drain(over, done));
            }
            Cmd::Stop => return true,
        }
        false
    }

    /// A key push: each connection that accepts `op` queues it. A kick (`kick`) bypasses the
    /// accepts of a connection that opted in to IM: a kick addressed to a key is always
    /// honoured. A goim connection takes it as any push, so goim's behaviour is unchanged.
    fn push_keys(&self, ids: Vec<ConnId>, op: i32, msg: &Outbound, kick: Option<Kick>) {
        let mut closing = Vec::new();
        {
            let mut conns = self.conns.borrow_mut();
            let out = self.out();
            let kick_due = self.clock.now() + self.clock.ticks(KICK_GRACE);
            for id in ids {
                let Some(conn) = conns.get_mut(id) else {
                    continue;
                };
                let queued = match kick {
                    Some(Kick::Silent) if conn.phase.opted_in() => Err(CloseReason::Kicked),
                    Some(Kick::Notice) if conn.phase.opted_in() => {
                        let first = !matches!(conn.phase, Phase::Kicked);
                        let queued = conn.queue_kick(&out, id, msg);
                        if first {
                            // Closed once flushed (`write`); this bounds the wait for a
                            // client that does not read.
                            let due = kick_due.min(conn.deadline);
                            self.set_deadline(conn, id, due);
                        }
                        queued
                    }
                    _ if conn.accepts(op) => conn.queue_push(&out, id, msg),
                    _ => Ok(()),
                };
                if let Err(reason) = queued {
                    closing.push((id, reason));
                }
            }
        }
        for (id, reason) in closing {
            self.close(id, reason);
        }
    }

    /// A room message goes to each member at once (one message per member per command, so
    /// there is nothing to merge it with unless output is already waiting).
    fn push_room(&self, room: &str, msg: &Outbound) {
        let mut failed = Vec::new();
        let mut full = Vec::new();
        {
            let rooms = self.rooms.borrow();
            let Some(members) = rooms.members(room) else {
                return;
            };
            let mut conns = self.conns.borrow_mut();
            let out = self.out();
            let mut written = 0;
            for &id in members {
                let Some(conn) = conns.get_mut(id) else {
                    continue;
                };
                match conn.push_now(&out, id, msg) {
                    Ok(Sent::Whole) => written += 1,
                    Ok(Sent::Partly) => {
                        written += 1;
                        full.push(id);
                    }
                    Ok(Sent::Queued | Sent::Dropped) => {}
                    Err(reason) => failed.push((id, reason)),
                }
            }
            let stats = self.stats();
            stats.writes.fetch_add(written, Relaxed);
            stats.pushed.fetch_add(written, Relaxed);
        }
        for id in full {
            self.update_interest(id);
        }
        for (id, reason) in failed {
            self.close(id, reason);
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
                    && conn.queue_push(&self.out(), id, msg).is_err()
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
