//! Queueing pushes on a connection and writing them out: everything queued leaves in as few
//! `sendmsg` calls as the socket allows; a full socket waits in the readiness set for room.

use super::{MAX_IOV, Worker};
use crate::bucket::ConnId;
use crate::close::CloseReason;
use crate::conn::{Conn, Transport};
use crate::io;
use crate::outbound::Outbound;
use std::io::IoSlice;

/// What [`Worker::push_now`] did with a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Written whole in one call.
    Whole,
    /// Written in part; the socket is full and the rest waits for room.
    Partly,
    /// Queued for the next flush (and counted as pushed by the queue).
    Queued,
}

impl Worker {
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

    /// A push to a connection with nothing queued or pending is written at once, straight
    /// from the shared message (no queue allocated, no reference taken); only what the socket
    /// does not take is queued. Anything else queues as usual for the next flush.
    /// The caller counts what was written (see [`Sent`]), once per batch of connections:
    /// counters shared by every worker are not touched per delivery.
    pub fn push_now(
        &self,
        conn: &mut Conn,
        id: ConnId,
        msg: &Outbound,
    ) -> Result<Sent, CloseReason> {
        let head = match &conn.transport {
            Transport::Tcp => &msg.tcp_head,
            Transport::Ws(_) => &msg.ws_head,
            Transport::Tls(_) => return self.queue_push(conn, id, msg).map(|()| Sent::Queued),
        };
        if !conn.out.is_empty() || conn.writing || conn.dirty {
            return self.queue_push(conn, id, msg).map(|()| Sent::Queued);
        }
        let mut slices = [IoSlice::new(&[]); 2];
        let mut n_slices = 0;
        for p in [head, &msg.body].into_iter().filter(|p| !p.is_empty()) {
            slices[n_slices] = IoSlice::new(p);
            n_slices += 1;
        }
        let total = head.len() + msg.body.len();
        match io::send_vectored(conn.fd(), &slices[..n_slices]) {
            Ok(n) => {
                if n == total {
                    return Ok(Sent::Whole);
                }
                // The socket took part of it: the rest waits for room.
                let rest: [bytes::Bytes; 2] = if n < head.len() {
                    [head.slice(n..), msg.body.clone()]
                } else {
                    [bytes::Bytes::new(), msg.body.slice(n - head.len()..)]
                };
                let cap = self.shared.config.protocol.out_ring;
                conn.out
                    .push(cap, &[&rest[0], &rest[1]])
                    .map_err(|_| CloseReason::SlowConsumer)?;
                conn.writing = true;
                Ok(Sent::Partly)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.queue_push(conn, id, msg)?;
                // Queued and marked dirty; the flush finds the socket full and waits.
                Ok(Sent::Queued)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                self.queue_push(conn, id, msg).map(|()| Sent::Queued)
            }
            Err(_) => Err(CloseReason::Io),
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
            match self.write_out(conn) {
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
            let r = self.write_out(conn);
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

    /// Writes until the queue is empty (`Ok(true)`) or the socket is full (`Ok(false)`).
    fn write_out(&self, conn: &mut Conn) -> std::io::Result<bool> {
        loop {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n_slices = conn.out.io_slices(&mut slices);
            if n_slices == 0 {
                return Ok(true);
            }
            let iov = &slices[..n_slices];
            let want: usize = iov.iter().map(|v| v.len()).sum();
            match io::send_vectored(conn.fd(), iov) {
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
