//! A worker's background loops: the timing wheel's tick, the online-count report, and the end
//! of a worker (immediate stop, or lame-duck draining).

use super::{Cmd, Worker, gather_room_counts};
use crate::close::CloseReason;
use crate::conn::Phase;
use starling_proto::grpc::logic::OnlineReq;
use std::rc::Rc;
use std::sync::Arc;
use tracing::warn;

impl Worker {
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

    pub(super) fn stop_all(&self) {
        self.stopping.set(true);
        let ids = self.conns.borrow().ids();
        for id in ids {
            self.close(id, CloseReason::Shutdown);
        }
    }
}
