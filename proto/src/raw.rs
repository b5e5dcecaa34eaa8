//! OpRaw batches: several whole packets back to back. Job wraps every business message as a
//! packet `{ver 1, op, seq 0, body}` and room batches concatenate them; comet writes the batch
//! as is on TCP and inside one op-9 packet on WebSocket (reference §1.5).

use crate::packet::{self, PacketError, PacketRef};
use bytes::{Bytes, BytesMut};

/// Version job writes on every pushed packet.
pub const PUSH_VER: i16 = 1;

/// Builds an OpRaw payload.
#[derive(Debug, Default)]
pub struct RawBatch {
    buf: BytesMut,
    count: usize,
}

impl RawBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one pushed message as a whole packet.
    pub fn push(&mut self, op: i32, body: &[u8]) {
        packet::encode(&mut self.buf, PUSH_VER, op, 0, body);
        self.count += 1;
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

/// One pushed message as an OpRaw payload.
pub fn single(op: i32, body: &[u8]) -> Bytes {
    let mut b = RawBatch::new();
    b.push(op, body);
    b.finish()
}

/// Iterates the packets of an OpRaw payload (server side: no body limit).
pub fn packets(raw: &[u8]) -> impl Iterator<Item = Result<PacketRef<'_>, PacketError>> {
    let mut rest = raw;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match packet::decode(rest, usize::MAX - packet::HEADER_LEN) {
            Ok(Some(p)) => {
                rest = &rest[p.wire_len()..];
                Some(Ok(p))
            }
            Ok(None) => {
                let len = rest.len();
                rest = &[];
                Some(Err(PacketError::LengthMismatch {
                    pack_len: packet::HEADER_LEN,
                    len,
                }))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip() {
        let mut b = RawBatch::new();
        b.push(1000, b"hi");
        b.push(1001, b"");
        b.push(2000, &[7u8; 5000]);
        assert_eq!(b.len(), 3);
        let raw = b.finish();
        let got: Vec<_> = packets(&raw).collect::<Result<_, _>>().unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(
            (got[0].ver, got[0].op, got[0].seq, got[0].body),
            (1, 1000, 0, &b"hi"[..])
        );
        assert_eq!(got[1].op, 1001);
        assert_eq!(got[2].body.len(), 5000);
    }

    #[test]
    fn truncated_batch_is_an_error() {
        let raw = single(1000, b"hello");
        let items: Vec<_> = packets(&raw[..raw.len() - 1]).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }
}
