//! A worker's background loops: the timing wheel's tick, the online-count report, and the end
//! of a worker (immediate stop, or lame-duck draining).

use super::{Cmd, Worker, gather_room_counts};
use crate::close::CloseReason;
use crate::conn::Phase;
use crate::io;
use starling_proto::grpc::logic::OnlineReq;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// Batches handled back to back before the readiness loop lets the runtime park.
const BUSY_BATCHES: u32 = 4;

/// Pending once (waking itself): the other runnable tasks of the worker go first.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// How often a draining worker closes its next share of connections.
const DRAIN_SLICE: Duration = Duration::from_millis(100);

impl Worker {
    /// Handles readiness reports, a batch per wake-up: room for output first (it may make
    /// room for replies), then input, which is read and answered.
    ///
    /// While connections stay ready the loop would never wait, and nothing else on the
    /// worker would run: after each batch it lets the worker's other tasks run, and after
    /// [`BUSY_BATCHES`] batches in a row without a wait it sleeps one timer tick, so the
    /// runtime polls its driver (accepts, auth answers, commands, the wheel's tick).
    pub async fn poll_loop(self: Rc<Self>) {
        let mut ready = Vec::new();
        let mut busy = 0;
        while !self.stopping.get() {
            match self.poller.wait(&mut ready).await {
                Ok(true) => busy = 0,
                Ok(false) => busy += 1,
                Err(e) => {
                    warn!(worker = self.id, error = %e, "readiness wait failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
            for r in &ready {
                if r.writable {
                    self.on_writable(r.id);
                }
                if r.readable {
                    self.on_input(r.id);
                }
            }
            if busy >= BUSY_BATCHES {
                busy = 0;
                monoio::time::sleep(Duration::from_millis(1)).await;
            } else {
                YieldNow(false).await;
            }
        }
    }

    /// Enforces deadlines: every tick, expired connections close and entries whose deadline
    /// moved later go back into the wheel. A connection has two: its phase's (handshake,
    /// heartbeat, kick grace) and, while its socket is full, the write deadline
    /// (`protocol.write_timeout`, closed as `slow_consumer`).
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
                    let write_due = self.write_due(conn);
                    if write_due.is_some_and(|d| d <= now) {
                        Some(CloseReason::SlowConsumer)
                    } else if conn.deadline <= now {
                        Some(match conn.phase {
                            Phase::Authed { .. } | Phase::Answering => {
                                CloseReason::HeartbeatTimeout
                            }
                            // The client did not take its kick packet within the grace.
                            Phase::Kicked => CloseReason::ImKick,
                            _ => CloseReason::HandshakeTimeout,
                        })
                    } else {
                        let next = write_due.map_or(conn.deadline, |d| d.min(conn.deadline));
                        conn.scheduled = next;
                        self.wheel.borrow_mut().insert(next, id);
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

    /// Lame duck: shuts this worker's listeners, then closes its connections evenly over
    /// `over`, checking every [`DRAIN_SLICE`], so their clients reconnect elsewhere
    /// gradually instead of in one storm: of `n` connections, the `i`-th (from 0) closes
    /// about `i × over / n` after the start (few connections are spread too, not closed one
    /// per slice). Signals `done` when the last is closed.
    pub(super) async fn drain(self: Rc<Self>, over: Duration, done: flume::Sender<()>) {
        if !self.draining.replace(true) {
            for &fd in self.listen_fds.borrow().iter() {
                io::stop_listening(fd);
            }
            let ids = self.conns.borrow().ids();
            info!(worker = self.id, connections = ids.len(), ?over, "draining");
            let started = std::time::Instant::now();
            let slices = (over.as_nanos() / DRAIN_SLICE.as_nanos()).max(1) as usize;
            let mut closed = 0;
            for slice in 1..=slices {
                if self.stopping.get() {
                    break;
                }
                // Due by the end of this slice: ⌈n × slice / slices⌉ (all of them at the last).
                let due = (ids.len() * slice).div_ceil(slices);
                for &id in &ids[closed..due] {
                    self.close(id, CloseReason::LameDuck);
                }
                closed = due;
                if closed == ids.len() {
                    break;
                }
                monoio::time::sleep(DRAIN_SLICE).await;
            }
            info!(worker = self.id, closed, elapsed = ?started.elapsed(), "drained");
        }
        let _ = done.send(());
    }

    pub(super) fn stop_all(&self) {
        self.stopping.set(true);
        let ids = self.conns.borrow().ids();
        for id in ids {
            self.close(id, CloseReason::Shutdown);
        }
    }
}
