//! Flushing connections: each touched connection once per batch, a full socket waiting in
//! the readiness set for room; a kicked connection closes once its queue is written.

use super::Worker;
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::conn::{Conn, Out, Phase};
use crate::outbound::Bound;

impl Worker {
    /// What a connection may have waiting (`protocol.out_ring`, `protocol.out_bytes`).
    pub fn bound(&self) -> Bound {
        let p = &self.shared.config.protocol;
        Bound {
            messages: p.out_ring,
            bytes: p.out_bytes,
        }
    }

    /// What a connection needs from this worker to queue output.
    pub fn out(&self) -> Out<'_> {
        Out {
            cap: self.bound(),
            stats: self.stats(),
            dirty: &self.dirty,
            deflate: self.shared.config.websocket.deflate(),
            deflated: std::cell::Cell::new((0, 0, 0)),
        }
    }

    /// Writes what is queued for one connection in as few writes as possible. If the socket
    /// is full, the readiness set reports when it has room again ([`Worker::on_writable`]).
    /// A kicked connection closes once its queue is written.
    pub fn flush(&self, id: ConnId) {
        let next = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return;
            };
            conn.dirty = false;
            if conn.writing {
                return;
            }
            match conn.write_out(self.stats()) {
                Ok(true) if matches!(conn.phase, Phase::Kicked) => Err(CloseReason::ImKick),
                Ok(true) => return,
                Ok(false) => {
                    conn.writing = true;
                    Ok(())
                }
                Err(_) => Err(CloseReason::Io),
            }
        };
        match next {
            Ok(()) => self.update_interest(id),
            Err(reason) => self.close(id, reason),
        }
    }

    /// A full socket has room again: write what is queued; stop waiting for room once the
    /// queue is empty (a kicked connection closes then).
    pub fn on_writable(&self, id: ConnId) {
        let (result, kicked) = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return;
            };
            if !conn.writing {
                return;
            }
            let before = conn.out.bytes();
            let r = conn.write_out(self.stats());
            match r {
                Ok(true) => conn.writing = false,
                // Progress restarts the write deadline (`protocol.write_timeout`).
                Ok(false) if conn.out.bytes() < before => {
                    conn.out.stalled(self.clock.now(), true);
                }
                _ => {}
            }
            (r, matches!(conn.phase, Phase::Kicked))
        };
        match result {
            Ok(true) if kicked => self.close(id, CloseReason::ImKick),
            Ok(true) => self.update_interest(id),
            Ok(false) => {}
            Err(_) => self.close(id, CloseReason::Io),
        }
    }

    /// `protocol.write_timeout` in ticks; `None` when it is off.
    pub fn write_ticks(&self) -> Option<u64> {
        let t = self.shared.config.protocol.write_timeout;
        (!t.is_zero()).then(|| self.clock.ticks(t))
    }

    /// The connection's socket is full: its write deadline runs from now, unless it already
    /// runs, and the wheel fires by then. Closed as a slow consumer if the socket takes
    /// nothing until then ([`Worker::write_due`]).
    pub fn arm_write_deadline(&self, conn: &mut Conn, id: ConnId) {
        let Some(ticks) = self.write_ticks() else {
            return;
        };
        conn.out.stalled(self.clock.now(), false);
        if let Some(since) = conn.out.stalled_since() {
            let due = since + ticks;
            if due < conn.scheduled {
                conn.scheduled = due;
                self.wheel.borrow_mut().insert(due, id);
            }
        }
    }

    /// When the connection's write deadline falls, if it runs: its socket full, output
    /// waiting. A kicked connection has its own grace instead.
    pub fn write_due(&self, conn: &Conn) -> Option<u64> {
        if !conn.writing || matches!(conn.phase, Phase::Kicked) {
            return None;
        }
        Some(conn.out.stalled_since()? + self.write_ticks()?)
    }

    pub fn flush_dirty(&self) {
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
}
