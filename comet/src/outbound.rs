//! What comet writes: pushes encoded once and shared by every receiver, and the bounded
//! per-connection queue they wait in.

use bytes::Bytes;
use starling_proto::grpc::protocol::Proto;
use starling_proto::{op, packet, ws};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::{Arc, OnceLock};

/// A push, encoded once for each transport. Every receiver queues clones of the same `Bytes`
/// (a reference count, not a copy).
#[derive(Debug, Clone)]
pub struct Outbound {
    /// TCP: an OpRaw body goes out as is (its inner packets); any other proto gets a header.
    pub tcp_head: Bytes,
    /// WebSocket: frame header plus goim header; one frame per push.
    pub ws_head: Bytes,
    pub body: Bytes,
    /// permessage-deflate (RFC 7692): the WebSocket frame compressed once, by the first
    /// worker that writes it to a connection that agreed to deflate, then shared by every
    /// such connection (no context takeover: the bytes are the same for all). `None` when
    /// comet is not configured for it or the message is under `deflate_min_size`.
    deflated: Option<Arc<Deflated>>,
}

#[derive(Debug)]
struct Deflated {
    level: u8,
    /// The frame and its payload's length; `None` inside when deflate did not shrink it.
    frame: OnceLock<Option<(Bytes, u32)>>,
}

impl Outbound {
    /// Shares the proto's body (no copy).
    pub fn from_proto(p: &Proto) -> Self {
        Self::new(p.ver as i16, p.op, p.seq, p.body.clone())
    }

    pub fn new(ver: i16, op_code: i32, seq: i32, body: Bytes) -> Self {
        let mut goim_head = Vec::with_capacity(packet::HEADER_LEN);
        packet::encode_header(&mut goim_head, body.len(), ver, op_code, seq);
        let tcp_head = if op_code == op::RAW {
            Bytes::new()
        } else {
            Bytes::from(goim_head.clone())
        };
        let mut ws_head = Vec::with_capacity(10 + packet::HEADER_LEN);
        ws::encode_header(
            &mut ws_head,
            ws::Opcode::Binary,
            packet::HEADER_LEN + body.len(),
        );
        ws_head.extend_from_slice(&goim_head);
        Outbound {
            tcp_head,
            ws_head: Bytes::from(ws_head),
            body,
            deflated: None,
        }
    }

    /// Lets connections that agreed to permessage-deflate take this push compressed, when
    /// `settings` is set (comet is configured for it) and the message is long enough.
    pub fn deflatable(mut self, settings: Option<crate::deflate::Settings>) -> Self {
        self.deflated = settings
            .filter(|s| self.ws_payload_len() >= s.min_size as usize)
            .map(|s| {
                Arc::new(Deflated {
                    level: s.level,
                    frame: OnceLock::new(),
                })
            });
        self
    }

    /// The WebSocket payload: goim header and body.
    pub fn ws_payload_len(&self) -> usize {
        packet::HEADER_LEN + self.body.len()
    }

    /// The compressed WebSocket frame (RSV1 set) and its payload's length, compressed on the
    /// first call (on any thread) and shared after; `None` when this push goes uncompressed.
    pub fn ws_deflated(&self) -> Option<(&Bytes, usize)> {
        let d = self.deflated.as_ref()?;
        let frame = d.frame.get_or_init(|| {
            let goim_head = &self.ws_head[self.ws_head.len() - packet::HEADER_LEN..];
            crate::deflate::frame(d.level, ws::Opcode::Binary, &[goim_head, &self.body])
                .map(|(f, len)| (Bytes::from(f), len as u32))
        });
        frame.as_ref().map(|(f, len)| (f, *len as usize))
    }
}

/// What waits in outbound queues (one worker's, or a comet's summed over its workers), as
/// exported by [`crate::Comet::register_metrics`]: gathered at scrape time, so the push path
/// pays nothing for it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Connections with something not yet written.
    pub connections: usize,
    /// Messages not yet written whole.
    pub messages: usize,
    /// Bytes not yet written (a shared push counts for each connection holding it).
    pub bytes: usize,
    /// The longest queue, in bytes (what `protocol.out_bytes` bounds).
    pub max_bytes: usize,
}

impl QueueDepth {
    /// Counts one connection's queue.
    pub fn add(&mut self, q: &OutQueue) {
        if q.is_empty() {
            return;
        }
        self.connections += 1;
        self.messages += q.messages();
        self.bytes += q.bytes();
        self.max_bytes = self.max_bytes.max(q.bytes());
    }

    /// Sums another worker's figures into these.
    pub fn merge(&mut self, o: QueueDepth) {
        self.connections += o.connections;
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.max_bytes = self.max_bytes.max(o.max_bytes);
    }
}

/// The queue full: the connection is a slow consumer.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

/// What a connection may have waiting: messages (`protocol.out_ring`) and bytes
/// (`protocol.out_bytes`). A message that would pass either is refused whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    pub messages: usize,
    pub bytes: usize,
}

impl Bound {
    /// Room for `extra` messages past this bound, whatever their size: what must not be lost
    /// once the connection is ending (a kick packet, a close frame).
    pub fn past(self, extra: usize) -> Bound {
        Bound {
            messages: self.messages + extra,
            bytes: usize::MAX,
        }
    }
}

/// A bounded queue of byte strings waiting to be written. Its bound counts messages (a
/// message may take two entries: header and shared body) and bytes. Allocates nothing while
/// empty.
#[derive(Debug)]
pub struct OutQueue {
    /// `None` while nothing is queued: an idle connection holds 8 bytes here, not a queue.
    inner: Option<Box<Queued>>,
}

#[derive(Debug)]
struct Queued {
    /// Message parts in order; `true` marks a message's last part, so a message stops
    /// counting against the bound once it is written whole.
    items: VecDeque<(Bytes, bool)>,
    /// Bytes of the front item already written.
    offset: u32,
    /// Messages not yet written whole.
    messages: u32,
    /// Bytes not yet written (a shared push counts whole for each receiver: what this
    /// connection holds alive).
    bytes: usize,
    /// Tick since which the socket has taken nothing (set while it is full): the write
    /// deadline runs from here.
    stalled_since: Option<u64>,
}

impl OutQueue {
    pub fn new() -> Self {
        OutQueue { inner: None }
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_none()
    }

    pub fn messages(&self) -> usize {
        self.inner.as_ref().map_or(0, |q| q.messages as usize)
    }

    /// Bytes waiting to be written.
    pub fn bytes(&self) -> usize {
        self.inner.as_ref().map_or(0, |q| q.bytes)
    }

    /// Queues one message made of `parts` (empty parts are skipped; a message of only empty
    /// parts is nothing to write). `bound` limits the messages and bytes waiting, partly
    /// written ones included; one message alone always fits the byte bound.
    pub fn push(&mut self, bound: Bound, parts: &[&Bytes]) -> Result<(), Full> {
        let Some(last) = parts.iter().rposition(|p| !p.is_empty()) else {
            return Ok(());
        };
        let len: usize = parts.iter().map(|p| p.len()).sum();
        // An empty queue takes one message of any size (a push may be larger than the
        // bound): the bound is on what waits behind what is being written.
        let over_bytes = self.bytes() > 0 && self.bytes().saturating_add(len) > bound.bytes;
        if self.messages() >= bound.messages || over_bytes {
            return Err(Full);
        }
        let q = self.inner.get_or_insert_with(|| {
            Box::new(Queued {
                items: VecDeque::new(),
                offset: 0,
                messages: 0,
                bytes: 0,
                stalled_since: None,
            })
        });
        q.messages += 1;
        q.bytes += len;
        for (i, p) in parts.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            q.items.push_back(((*p).clone(), i == last));
        }
        Ok(())
    }

    /// Since when (tick) the socket has taken nothing of this queue, once
    /// [`OutQueue::stalled`] said so.
    pub fn stalled_since(&self) -> Option<u64> {
        self.inner.as_ref().and_then(|q| q.stalled_since)
    }

    /// The socket is full at tick `now`: the write deadline runs from now unless it already
    /// runs (`progress`: the socket just took bytes, so it restarts).
    pub fn stalled(&mut self, now: u64, progress: bool) {
        if let Some(q) = &mut self.inner
            && (progress || q.stalled_since.is_none())
        {
            q.stalled_since = Some(now);
        }
    }

    /// Fills `out` with the queued bytes, in order, as far as it goes; returns how many
    /// slices it filled.
    pub fn io_slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let Some(q) = &self.inner else {
            return 0;
        };
        let mut n = 0;
        for (slot, (i, (b, _))) in out.iter_mut().zip(q.items.iter().enumerate()) {
            let s: &'a [u8] = if i == 0 { &b[q.offset as usize..] } else { b };
            *slot = IoSlice::new(s);
            n += 1;
        }
        n
    }

    /// Drops `n` written bytes from the front. Once everything is written the queue's memory
    /// goes back (a burst pays one allocation; a million idle connections keep nothing).
    pub fn consume(&mut self, mut n: usize) {
        let Some(q) = &mut self.inner else {
            assert_eq!(n, 0, "consumed more than queued");
            return;
        };
        while n > 0 {
            let (front, _) = q.items.front().expect("consumed more than queued");
            let left = front.len() - q.offset as usize;
            let taken = n.min(left);
            q.bytes -= taken;
            if n >= left {
                n -= left;
                if let Some((_, true)) = q.items.pop_front() {
                    q.messages -= 1;
                }
                q.offset = 0;
            } else {
                // An item is one message part: far below 4 GiB.
                q.offset += n as u32;
                n = 0;
            }
        }
        if q.items.is_empty() {
            self.inner = None;
        }
    }
}

impl Default for OutQueue {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound of `m` messages and no byte limit.
    fn n(m: usize) -> Bound {
        Bound {
            messages: m,
            bytes: usize::MAX,
        }
    }

    #[test]
    fn raw_push_is_written_bare_on_tcp_and_wrapped_on_ws() {
        let raw = starling_proto::raw::single(1000, b"hi");
        let o = Outbound::new(1, op::RAW, 0, raw.clone());
        assert!(o.tcp_head.is_empty());
        // Reference §1.5: 00000022 0010 0001 00000009 00000000 | inner packet.
        let mut ws_frame = o.ws_head.to_vec();
        ws_frame.extend_from_slice(&o.body);
        assert_eq!(&ws_frame[..2], &[0x82, 34]);
        assert_eq!(
            &ws_frame[2..18],
            &[0, 0, 0, 0x22, 0, 0x10, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0]
        );
        assert_eq!(&ws_frame[18..], &raw[..]);
        let plain = Outbound::new(1, 1000, 5, Bytes::from_static(b"x"));
        assert_eq!(plain.tcp_head.len(), 16);
    }

    /// A push is compressed once, whichever connection or worker asks first, and every
    /// receiver gets the same bytes (a reference count, not a copy).
    #[test]
    fn a_push_is_compressed_once_and_shared() {
        let settings = Some(crate::deflate::Settings {
            level: 6,
            min_size: 64,
        });
        let body = Bytes::from(br#"{"seq":9,"body":"hello room"}"#.repeat(20));
        let o = Outbound::new(1, 1000, 0, body.clone()).deflatable(settings);
        let other_worker = o.clone();
        let (a, len) = o.ws_deflated().expect("compressible");
        let (b, _) = std::thread::scope(|s| {
            s.spawn(|| {
                let (b, len) = other_worker.ws_deflated().unwrap();
                (b.clone(), len)
            })
            .join()
            .unwrap()
        });
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same buffer");
        assert_eq!(a[0], 0xc2);
        assert!(len < o.ws_payload_len() / 4, "{len}");
        let mut inflated = Vec::new();
        crate::deflate::inflate(&a[a.len() - len..], 1 << 20, &mut inflated).unwrap();
        let mut plain = o.ws_head[o.ws_head.len() - 16..].to_vec();
        plain.extend_from_slice(&body);
        assert_eq!(inflated, plain);
        // Off, or under the minimum: nothing to compress.
        assert!(
            Outbound::new(1, 1000, 0, body.clone())
                .ws_deflated()
                .is_none()
        );
        let short = Outbound::new(1, 1000, 0, Bytes::from_static(b"hi")).deflatable(settings);
        assert!(short.ws_deflated().is_none());
    }

    #[test]
    fn queue_bounds_messages_and_tracks_partial_writes() {
        let mut q = OutQueue::new();
        let a = Bytes::from_static(b"abc");
        let b = Bytes::from_static(b"defg");
        q.push(n(2), &[&a, &b]).unwrap();
        q.push(n(2), &[&Bytes::new(), &a]).unwrap();
        assert_eq!(q.push(n(2), &[&a]), Err(Full));
        {
            let mut iov = [IoSlice::new(&[]); 64];
            let n = q.io_slices(&mut iov);
            assert_eq!(iov[..n].iter().map(|v| v.len()).sum::<usize>(), 10);
        }
        q.consume(4);
        {
            let mut iov = [IoSlice::new(&[]); 64];
            assert_eq!(q.io_slices(&mut iov), 2);
            assert_eq!(&*iov[0], b"efg");
            let mut one = [IoSlice::new(&[])];
            assert_eq!(q.io_slices(&mut one), 1, "as far as the slices go");
        }
        q.consume(6);
        assert!(q.is_empty());
        assert_eq!(q.messages(), 0);
    }

    /// The bound counts messages waiting, not messages queued since the queue was last
    /// empty: a connection written to steadily, never quite drained, is not a slow consumer.
    #[test]
    fn written_messages_stop_counting_against_the_bound() {
        let mut q = OutQueue::new();
        let (a, b, c) = (
            Bytes::from_static(b"aa"),
            Bytes::from_static(b"bb"),
            Bytes::from_static(b"cc"),
        );
        q.push(n(3), &[&a]).unwrap();
        q.push(n(3), &[&Bytes::from_static(b"h"), &b]).unwrap();
        q.push(n(3), &[&c]).unwrap();
        q.consume(4); // "aa", "h", and one byte of "bb"
        assert_eq!(q.messages(), 2, "the message partly written still waits");
        q.consume(1);
        assert_eq!(q.messages(), 1);
        q.push(n(3), &[&a]).unwrap();
        q.push(n(3), &[&b]).unwrap();
        assert_eq!(q.push(n(3), &[&c]), Err(Full));
        // A message of empty parts is nothing to write and takes no place.
        q.push(n(3), &[&Bytes::new()]).unwrap();
        assert_eq!(q.messages(), 3);
    }

    /// Room batches are few messages of many bytes: the byte bound refuses what the message
    /// bound lets through, and written bytes stop counting.
    #[test]
    fn the_byte_bound_counts_bytes_waiting() {
        let mut q = OutQueue::new();
        let big = Bytes::from(vec![7u8; 600]);
        let b = Bound {
            messages: 100,
            bytes: 1000,
        };
        q.push(b, &[&Bytes::from_static(b"head"), &big]).unwrap();
        assert_eq!(q.bytes(), 604);
        assert_eq!(q.push(b, &[&big]), Err(Full));
        q.push(b.past(1), &[&big]).unwrap();
        q.consume(700);
        assert_eq!(q.bytes(), 504);
        assert_eq!(q.push(b, &[&big]), Err(Full));
        q.consume(104);
        q.push(b, &[&big]).unwrap();
        assert_eq!(q.bytes(), 1000);
        // The write deadline: set once the socket is full, moved only by progress.
        assert_eq!(q.stalled_since(), None);
        q.stalled(5, false);
        q.stalled(9, false);
        assert_eq!(q.stalled_since(), Some(5));
        q.stalled(12, true);
        assert_eq!(q.stalled_since(), Some(12));
        q.consume(1000);
        assert!(q.is_empty() && q.stalled_since().is_none());
        // Alone, a message larger than the bound is taken (a push may be that large).
        q.push(b, &[&Bytes::from(vec![1u8; 5000])]).unwrap();
        assert_eq!(q.push(b, &[&Bytes::from_static(b"x")]), Err(Full));
    }
}
