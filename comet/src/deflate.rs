//! permessage-deflate (RFC 7692) on comet's side: the settings a connection agreed to, the
//! per-thread compressor and inflater every connection of a worker shares (with no context
//! takeover either way, nothing is kept per connection between messages), and the counters.
//! The codec and the negotiation are `starling_proto::ws::deflate`'s.

use starling_cluster::metrics::{self, DescriptorEncoder};
use starling_proto::ws::deflate::{Deflater, InflateError, Inflater};
use starling_proto::ws::{self, Opcode};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How comet compresses for a connection that agreed to permessage-deflate
/// (`[comet.websocket] deflate_level` and `deflate_min_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// zlib level 1 (fastest) to 9 (smallest).
    pub level: u8,
    /// Messages whose WebSocket payload (goim header and body) is shorter go uncompressed
    /// (RSV1 clear: RFC 7692 §6 lets each message choose).
    pub min_size: u32,
}

thread_local! {
    /// Created on a thread's first compressed message: a worker that never compresses
    /// allocates none. Keyed by level (one level per process in practice).
    static DEFLATER: RefCell<Option<(u8, Deflater)>> = const { RefCell::new(None) };
    static INFLATER: RefCell<Option<Inflater>> = const { RefCell::new(None) };
}

/// A whole server frame (FIN, RSV1 set) carrying `parts` compressed as one message, and its
/// payload's length; `None` when compressing does not make the payload smaller (it then goes
/// as it is).
pub fn frame(level: u8, opcode: Opcode, parts: &[&[u8]]) -> Option<(Vec<u8>, usize)> {
    let raw: usize = parts.iter().map(|p| p.len()).sum();
    let mut z = Vec::new();
    DEFLATER.with_borrow_mut(|d| {
        let d = match d {
            Some((l, d)) if *l == level => d,
            _ => &mut d.insert((level, Deflater::new(level.into()))).1,
        };
        d.compress_parts(parts, &mut z);
    });
    if z.len() >= raw {
        return None;
    }
    let mut out = Vec::with_capacity(ws::header_len(z.len()) + z.len());
    ws::encode_header_ext(&mut out, opcode, true, z.len());
    out.extend_from_slice(&z);
    Some((out, z.len()))
}

/// Inflates a client's compressed message into `out`, at most `max` bytes.
pub fn inflate(payload: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    INFLATER.with_borrow_mut(|i| {
        i.get_or_insert_with(Inflater::new)
            .inflate(payload, max, out)
    })
}

/// What permessage-deflate did, for `starling_comet_ws_deflate_*`. Payload bytes (a goim
/// packet), frame headers not counted.
#[derive(Debug, Default)]
pub struct DeflateStats {
    /// Connections that agreed to permessage-deflate.
    pub negotiated: AtomicU64,
    /// Compressed messages written, once per receiving connection.
    pub out_messages: AtomicU64,
    /// Their payload before compression.
    pub out_raw: AtomicU64,
    /// Their payload as written.
    pub out_compressed: AtomicU64,
    /// Compressed messages received and inflated.
    pub in_messages: AtomicU64,
    pub in_compressed: AtomicU64,
    pub in_raw: AtomicU64,
}

impl DeflateStats {
    pub fn add_out(&self, messages: u64, raw: u64, compressed: u64) {
        if messages > 0 {
            self.out_messages.fetch_add(messages, Relaxed);
            self.out_raw.fetch_add(raw, Relaxed);
            self.out_compressed.fetch_add(compressed, Relaxed);
        }
    }

    pub fn add_in(&self, compressed: usize, raw: usize) {
        self.in_messages.fetch_add(1, Relaxed);
        self.in_compressed.fetch_add(compressed as u64, Relaxed);
        self.in_raw.fetch_add(raw as u64, Relaxed);
    }

    /// The `starling_comet_ws_deflate_*` counters.
    pub fn collect(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let c = |v: &AtomicU64| v.load(Relaxed);
        metrics::counter(
            enc,
            "starling_comet_ws_deflate_connections",
            "WebSocket connections that agreed on permessage-deflate.",
            c(&self.negotiated),
        )?;
        metrics::counters(
            enc,
            "starling_comet_ws_deflate_messages",
            "Compressed WebSocket messages, by direction.",
            [("out", &self.out_messages), ("in", &self.in_messages)]
                .map(|(dir, v)| ([("dir", dir)], c(v))),
        )?;
        metrics::counters(
            enc,
            "starling_comet_ws_deflate_bytes",
            "Bytes of compressed WebSocket messages, by direction and stage.",
            [
                ("out", "raw", &self.out_raw),
                ("out", "compressed", &self.out_compressed),
                ("in", "compressed", &self.in_compressed),
                ("in", "raw", &self.in_raw),
            ]
            .map(|(dir, stage, v)| ([("dir", dir), ("stage", stage)], c(v))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use starling_proto::ws::{Masking, decode_frame_ext};

    #[test]
    fn a_frame_is_compressed_only_when_it_shrinks() {
        let json = br#"{"seq":1,"body":"hello hello hello hello"}"#.repeat(8);
        let (mut f, len) = frame(6, Opcode::Binary, &[&json[..16], &json[16..]]).unwrap();
        assert_eq!(f[0], 0xc2, "FIN, RSV1, binary");
        let h = decode_frame_ext(&mut f, 1 << 20, Masking::Optional, true)
            .unwrap()
            .unwrap();
        assert!(h.compressed);
        assert_eq!(h.payload_len, len);
        let mut back = Vec::new();
        inflate(&f[h.header_len..], json.len(), &mut back).unwrap();
        assert_eq!(back, json);
        // Eight bytes of deflate cannot be shorter than eight bytes.
        assert_eq!(
            frame(6, Opcode::Binary, &[b"\x00\x01\x02\x03\xfe\xfd\xfc\xfb"]),
            None
        );
    }
}
