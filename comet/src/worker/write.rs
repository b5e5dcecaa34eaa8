//! Flushing connections: each touched connection once per batch, a full socket waiting in
//! the readiness set for room.

use super::Worker;
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::conn::Out;

impl Worker {
    /// What a connection needs from this worker to queue output.
    pub fn out(&self) -> Out<'_> {
        Out {
            cap: self.shared.config.protocol.out_ring,
            stats: self.stats(),
            dirty: &self.dirty,
        }
    }

    /// Writes what is queued for one connection in as few writes as possible. If the socket
    /// is full, the readiness set reports when it has room again ([`Worker::on_writable`]).
    pub fn flush(&self, id: ConnId) {
        let full = {
            let mut conns = self.conns.borrow_mut();
            let Some(conn) = conns.get_mut(id) else {
                return;
            };
            conn.dirty = false;
            if conn.writing {
                return;
            }
            match conn.write_out(self.stats()) {
                Ok(true) => return,
                Ok(false) => {
                    conn.writing = true;
                    true
                }
                Err(_) => false,
            }
        };
        if full {
            self.update_interest(id);
        } else {
            self.close(id, CloseReason::Io);
        }
    }

    /// A full socket has room again: write what is queued; stop waiting for room once the
    /// queue is empty.
    pub fn on_writable(&self, id: ConnId) {
        let result = {
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
            r
        };
        match result {
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
