//! Flushing connections: each touched connection once per batch, a full socket waiting in
//! the readiness set for room; a kicked connection closes once its queue is written.

use super::Worker;
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::conn::{Out, Phase};

impl Worker {
    /// What a connection needs from this worker to queue output.
    pub fn out(&self) -> Out<'_> {
        Out {
            cap: self.shared.config.protocol.out_ring,
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
            let r = conn.write_out(self.stats());
            if let Ok(true) = r {
                conn.writing = false;
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
