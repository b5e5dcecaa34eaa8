//! A connection's output: pushes and replies queue in its bounded queue, and everything
//! waiting leaves in as few `send`/`sendmsg` calls as the socket allows; a push to an idle
//! connection is written at once from the shared message.

use super::{Conn, Phase, Transport, Wire};
use crate::bucket::ConnId;
use crate::close::{CloseReason, Stats};
use crate::io;
use crate::outbound::{Bound, Outbound};
use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;

/// At most this many buffers in one `sendmsg`.
pub(crate) const MAX_IOV: usize = 64;

/// What a connection needs from its worker to queue output.
pub(crate) struct Out<'a> {
    /// Messages and bytes a connection may have waiting (`protocol.out_ring`,
    /// `protocol.out_bytes`); more closes it as a slow consumer.
    pub cap: Bound,
    pub stats: &'a Stats,
    /// Connections with output queued since the worker's last flush, each listed once.
    pub dirty: &'a RefCell<Vec<ConnId>>,
    /// How to compress for a connection that agreed to permessage-deflate (`None`: comet
    /// is not configured for it).
    pub deflate: Option<crate::deflate::Settings>,
    /// Compressed messages written or queued through this `Out`: (messages, raw payload
    /// bytes, compressed payload bytes), added to the shared counters once, when dropped.
    pub deflated: Cell<(u64, u64, u64)>,
}

impl Out<'_> {
    pub(super) fn tally_deflated(&self, raw: usize, compressed: usize) {
        let (n, r, c) = self.deflated.get();
        self.deflated
            .set((n + 1, r + raw as u64, c + compressed as u64));
    }
}

impl Drop for Out<'_> {
    fn drop(&mut self) {
        let (n, r, c) = self.deflated.get();
        self.stats.deflate.add_out(n, r, c);
    }
}

/// What [`Conn::push_now`] did with a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Written whole in one call.
    Whole,
    /// Written in part; the socket is full and the rest waits for room.
    Partly,
    /// Queued for the next flush (and counted as pushed by the queue).
    Queued,
    /// Not written: the connection was kicked and takes nothing more.
    Dropped,
}

/// The close frame a kicked WebSocket client gets after its kick packet: 1000 (normal
/// closure: the server ends the session on purpose; the reason is in the op-45 packet) and
/// the text `kicked`.
const KICK_CLOSE: &[u8] = b"\x03\xe8kicked";

impl Conn {
    /// Queues a push for one connection; a full queue closes it as a slow consumer. A kicked
    /// connection takes nothing more.
    pub fn queue_push(&mut self, out: &Out, id: ConnId, msg: &Outbound) -> Result<(), CloseReason> {
        if matches!(self.phase, Phase::Kicked) {
            return Ok(());
        }
        self.queue_push_within(out, out.cap, msg)
            .map_err(|_| CloseReason::SlowConsumer)?;
        out.stats.pushed.fetch_add(1, Relaxed);
        self.mark_dirty(out, id);
        Ok(())
    }

    /// logic's kick (op 45 with a body) to a connection that opted in: the packet is queued
    /// behind what waits (on WebSocket, then a close frame), past the queue's bound so a busy
    /// queue cannot lose it, and the connection turns [`Phase::Kicked`]: nothing more is read
    /// or queued, and the worker closes it once the queue is written. The caller sets the
    /// deadline that bounds the wait. A second kick finds it kicked and does nothing.
    pub fn queue_kick(&mut self, out: &Out, id: ConnId, msg: &Outbound) -> Result<(), CloseReason> {
        if matches!(self.phase, Phase::Kicked) {
            return Ok(());
        }
        let cap = out.cap.past(2);
        self.queue_push_within(out, cap, msg)
            .map_err(|_| CloseReason::SlowConsumer)?;
        out.stats.pushed.fetch_add(1, Relaxed);
        if self.is_ws() {
            self.queue(
                out,
                cap,
                KICK_CLOSE,
                Wire::Control(starling_proto::ws::Opcode::Close),
            )
            .map_err(|_| CloseReason::SlowConsumer)?;
        }
        self.phase = Phase::Kicked;
        self.mark_dirty(out, id);
        Ok(())
    }

    /// Queues a push's bytes for this transport, at most `cap` messages and bytes waiting: on a
    /// WebSocket that agreed to permessage-deflate, the push's shared compressed frame when
    /// it has one.
    fn queue_push_within(
        &mut self,
        out: &Out,
        cap: Bound,
        msg: &Outbound,
    ) -> Result<(), crate::outbound::Full> {
        let deflated = self.deflated(msg);
        let result = match (&mut self.transport, deflated) {
            (Transport::Tcp { .. }, _) => self.out.push(cap, &[&msg.tcp_head, &msg.body]),
            (Transport::Ws(_), Some((frame, _))) => self.out.push(cap, &[frame]),
            (Transport::Ws(_), None) => self.out.push(cap, &[&msg.ws_head, &msg.body]),
            (Transport::Tls(tls), Some((frame, _))) => tls.encrypt(frame, &mut self.out, cap),
            (Transport::Tls(tls), None) => {
                let mut frame = Vec::with_capacity(msg.ws_head.len() + msg.body.len());
                frame.extend_from_slice(&msg.ws_head);
                frame.extend_from_slice(&msg.body);
                tls.encrypt(&frame, &mut self.out, cap)
            }
        };
        if let (Ok(()), Some((_, len))) = (&result, deflated) {
            out.tally_deflated(msg.ws_payload_len(), len);
        }
        result
    }

    /// The push's compressed frame, if this connection agreed to permessage-deflate and the
    /// push has one (it is compressed here if no connection needed it before).
    fn deflated<'m>(&self, msg: &'m Outbound) -> Option<(&'m bytes::Bytes, usize)> {
        if self.deflating() {
            msg.ws_deflated()
        } else {
            None
        }
    }

    /// Lists the connection for the worker's next flush (once).
    pub fn mark_dirty(&mut self, out: &Out, id: ConnId) {
        if !self.dirty {
            self.dirty = true;
            out.dirty.borrow_mut().push(id);
        }
    }

    /// A push to a connection with nothing queued or pending is written at once, straight
    /// from the shared message (no queue allocated, no reference taken); only what the socket
    /// does not take is queued. Anything else queues as usual for the next flush.
    /// The caller counts what was written (see [`Sent`]), once per batch of connections:
    /// counters shared by every worker are not touched per delivery.
    pub fn push_now(&mut self, out: &Out, id: ConnId, msg: &Outbound) -> Result<Sent, CloseReason> {
        if matches!(self.phase, Phase::Kicked) {
            return Ok(Sent::Dropped);
        }
        if matches!(self.transport, Transport::Tls(_))
            || !self.out.is_empty()
            || self.writing
            || self.dirty
        {
            return self.queue_push(out, id, msg).map(|()| Sent::Queued);
        }
        let deflated = self.deflated(msg);
        // A compressed frame is one buffer: it goes as the "head" with an empty body.
        let empty = bytes::Bytes::new();
        let (head, body) = match (&self.transport, deflated) {
            (_, Some((frame, _))) => (frame, &empty),
            (Transport::Tcp { .. }, None) => (&msg.tcp_head, &msg.body),
            (_, None) => (&msg.ws_head, &msg.body),
        };
        let mut slices = [IoSlice::new(&[]); 2];
        let mut n_slices = 0;
        for p in [head, body].into_iter().filter(|p| !p.is_empty()) {
            slices[n_slices] = IoSlice::new(p);
            n_slices += 1;
        }
        let total = head.len() + body.len();
        match io::send_vectored(self.fd(), &slices[..n_slices]) {
            Ok(n) => {
                if let Some((_, len)) = deflated {
                    out.tally_deflated(msg.ws_payload_len(), len);
                }
                if n == total {
                    return Ok(Sent::Whole);
                }
                // The socket took part of it: the rest waits for room.
                let rest: [bytes::Bytes; 2] = if n < head.len() {
                    [head.slice(n..), body.clone()]
                } else {
                    [bytes::Bytes::new(), body.slice(n - head.len()..)]
                };
                self.out
                    .push(out.cap, &[&rest[0], &rest[1]])
                    .map_err(|_| CloseReason::SlowConsumer)?;
                self.writing = true;
                Ok(Sent::Partly)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.queue_push(out, id, msg)?;
                // Queued and marked dirty; the flush finds the socket full and waits.
                Ok(Sent::Queued)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                self.queue_push(out, id, msg).map(|()| Sent::Queued)
            }
            Err(_) => Err(CloseReason::Io),
        }
    }

    /// Writes until the queue is empty (`Ok(true)`) or the socket is full (`Ok(false)`).
    pub fn write_out(&mut self, stats: &Stats) -> std::io::Result<bool> {
        loop {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let n_slices = self.out.io_slices(&mut slices);
            if n_slices == 0 {
                return Ok(true);
            }
            let iov = &slices[..n_slices];
            let want: usize = iov.iter().map(|v| v.len()).sum();
            match io::send_vectored(self.fd(), iov) {
                Ok(n) => {
                    stats.writes.fetch_add(1, Relaxed);
                    self.out.consume(n);
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
}
