//! The goim packet: a 16-byte big-endian header followed by the body.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | pack length = 16 + body length |
//! | 4 | 2 | header length, always 16 |
//! | 6 | 2 | version |
//! | 8 | 4 | op |
//! | 12 | 4 | seq |
//!
//! Decoding is `check` then borrow: [`decode`] returns `Ok(None)` while the bytes are
//! incomplete (control flow, not failure), a [`PacketRef`] borrowing the body once a whole
//! packet is there, and an error as soon as the header alone proves the packet invalid.

use bytes::{BufMut, Bytes};
use thiserror::Error;

/// Bytes in every header.
pub const HEADER_LEN: usize = 16;
/// goim's `MaxBodySize`: the largest body comet accepts from a client.
pub const MAX_BODY: usize = 4096;
/// goim's `_maxPackSize`: the largest client packet.
pub const MAX_PACK: usize = HEADER_LEN + MAX_BODY;
/// Bytes in a heartbeat reply body (the room's online count).
pub const HEART_LEN: usize = 4;

/// Why bytes are not a valid packet. Each variant closes the connection that sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PacketError {
    /// Pack length below the header size (negative included).
    #[error("pack length {0} is shorter than the 16-byte header")]
    ShortPackLen(i32),
    /// Header length field other than 16.
    #[error("header length {0} is not 16")]
    HeaderLen(i16),
    /// Body larger than the limit (4096 for client packets).
    #[error("body of {len} bytes is over the {max}-byte limit")]
    BodyTooLarge { len: usize, max: usize },
    /// A WebSocket message whose pack length disagrees with the message size.
    #[error("pack length {pack_len} does not match the {len}-byte message")]
    LengthMismatch { pack_len: usize, len: usize },
}

/// A decoded packet that borrows its body from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketRef<'a> {
    pub ver: i16,
    pub op: i32,
    pub seq: i32,
    pub body: &'a [u8],
}

/// An owned packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packet {
    pub ver: i16,
    pub op: i32,
    pub seq: i32,
    pub body: Bytes,
}

impl PacketRef<'_> {
    /// Bytes this packet takes on the wire.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + self.body.len()
    }

    pub fn to_owned(&self) -> Packet {
        Packet {
            ver: self.ver,
            op: self.op,
            seq: self.seq,
            body: Bytes::copy_from_slice(self.body),
        }
    }
}

impl Packet {
    pub fn new(ver: i16, op: i32, seq: i32, body: impl Into<Bytes>) -> Self {
        Packet {
            ver,
            op,
            seq,
            body: body.into(),
        }
    }

    pub fn as_ref(&self) -> PacketRef<'_> {
        PacketRef {
            ver: self.ver,
            op: self.op,
            seq: self.seq,
            body: &self.body,
        }
    }

    /// The packet's wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.body.len());
        encode(&mut out, self.ver, self.op, self.seq, &self.body);
        out
    }
}

/// Reads the header at the start of `buf` (at least 16 bytes) and returns the total packet
/// length, validated against `max_body`.
fn check_header(buf: &[u8], max_body: usize) -> Result<usize, PacketError> {
    let pack_len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let header_len = i16::from_be_bytes([buf[4], buf[5]]);
    if pack_len < HEADER_LEN as i32 {
        return Err(PacketError::ShortPackLen(pack_len));
    }
    if header_len != HEADER_LEN as i16 {
        return Err(PacketError::HeaderLen(header_len));
    }
    let body_len = pack_len as usize - HEADER_LEN;
    if body_len > max_body {
        return Err(PacketError::BodyTooLarge {
            len: body_len,
            max: max_body,
        });
    }
    Ok(pack_len as usize)
}

fn split(buf: &[u8], pack_len: usize) -> PacketRef<'_> {
    PacketRef {
        ver: i16::from_be_bytes([buf[6], buf[7]]),
        op: i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        seq: i32::from_be_bytes([buf[12], buf[13], buf[14], buf[15]]),
        body: &buf[HEADER_LEN..pack_len],
    }
}

/// Decodes the packet at the start of a byte stream.
///
/// `Ok(None)`: not enough bytes yet (nothing is consumed; call again with more). The header
/// is validated as soon as its 16 bytes are there, so an oversized packet is refused before
/// its body arrives.
pub fn decode(buf: &[u8], max_body: usize) -> Result<Option<PacketRef<'_>>, PacketError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let pack_len = check_header(buf, max_body)?;
    if buf.len() < pack_len {
        return Ok(None);
    }
    Ok(Some(split(buf, pack_len)))
}

/// Decodes a packet that must fill a whole WebSocket message exactly. goim ignores trailing
/// bytes and reads past a short message; Starling refuses both.
pub fn decode_exact(msg: &[u8], max_body: usize) -> Result<PacketRef<'_>, PacketError> {
    if msg.len() < HEADER_LEN {
        return Err(PacketError::LengthMismatch {
            pack_len: HEADER_LEN,
            len: msg.len(),
        });
    }
    let pack_len = check_header(msg, max_body)?;
    if pack_len != msg.len() {
        return Err(PacketError::LengthMismatch {
            pack_len,
            len: msg.len(),
        });
    }
    Ok(split(msg, pack_len))
}

/// Writes a header for a body of `body_len` bytes.
pub fn encode_header(out: &mut impl BufMut, body_len: usize, ver: i16, op: i32, seq: i32) {
    out.put_i32((HEADER_LEN + body_len) as i32);
    out.put_i16(HEADER_LEN as i16);
    out.put_i16(ver);
    out.put_i32(op);
    out.put_i32(seq);
}

/// Writes a whole packet.
pub fn encode(out: &mut impl BufMut, ver: i16, op: i32, seq: i32, body: &[u8]) {
    encode_header(out, body.len(), ver, op, seq);
    out.put_slice(body);
}

/// goim's heartbeat reply: op 3, ver and seq echoed, body = the room's online count.
pub fn heartbeat_reply(ver: i16, seq: i32, online: i32) -> [u8; HEADER_LEN + HEART_LEN] {
    let mut out = [0u8; HEADER_LEN + HEART_LEN];
    let mut w = &mut out[..];
    encode_header(&mut w, HEART_LEN, ver, crate::op::HEARTBEAT_REPLY, seq);
    w.put_i32(online);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn reference_vectors() {
        let hb = hex("00000010 0010 0001 00000002 00000001");
        let p = decode(&hb, MAX_BODY).unwrap().unwrap();
        assert_eq!((p.ver, p.op, p.seq, p.body), (1, 2, 1, &[][..]));
        assert_eq!(
            heartbeat_reply(1, 1, 5).to_vec(),
            hex("00000014 0010 0001 00000003 00000001 00000005")
        );
        assert_eq!(
            Packet::new(1, 8, 1, Bytes::new()).to_bytes(),
            hex("00000010 0010 0001 00000008 00000001")
        );
    }

    #[test]
    fn every_split_of_two_packets_decodes_the_same() {
        let mut stream = Packet::new(1, 7, 1, &b"{\"mid\":1}"[..]).to_bytes();
        stream.extend(Packet::new(3, 1000, -2, vec![9u8; 300]).to_bytes());
        for cut in 0..=stream.len() {
            let mut got = Vec::new();
            let mut pending: Vec<u8> = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                pending.extend_from_slice(part);
                while let Some(p) = decode(&pending, MAX_BODY).unwrap() {
                    let n = p.wire_len();
                    got.push(p.to_owned());
                    pending.drain(..n);
                }
            }
            assert!(pending.is_empty(), "cut {cut}");
            assert_eq!(got.len(), 2, "cut {cut}");
            assert_eq!(got[0].body.as_ref(), b"{\"mid\":1}");
            assert_eq!((got[1].ver, got[1].op, got[1].seq), (3, 1000, -2));
            assert_eq!(got[1].body.len(), 300);
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let bytes = Packet::new(1, 14, 9, &b"1000,1001"[..]).to_bytes();
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n], MAX_BODY), Ok(None), "prefix {n}");
        }
        assert!(decode(&bytes, MAX_BODY).unwrap().is_some());
    }

    #[test]
    fn round_trip_keeps_every_field() {
        for (ver, op, seq, len) in [(0, 0, 0, 0), (-1, i32::MAX, i32::MIN, 1), (7, 9, 3, 4096)] {
            let p = Packet::new(ver, op, seq, vec![0xabu8; len]);
            let bytes = p.to_bytes();
            assert_eq!(bytes.len(), HEADER_LEN + len);
            assert_eq!(decode(&bytes, MAX_BODY).unwrap().unwrap().to_owned(), p);
        }
    }

    #[test]
    fn limits() {
        let ok = Packet::new(1, 4, 1, vec![0u8; MAX_BODY]).to_bytes();
        assert!(decode(&ok, MAX_BODY).unwrap().is_some());
        // Oversized: refused from the header alone, before the body arrives.
        let big = Packet::new(1, 4, 1, vec![0u8; MAX_BODY + 1]).to_bytes();
        assert_eq!(
            decode(&big[..HEADER_LEN], MAX_BODY),
            Err(PacketError::BodyTooLarge {
                len: MAX_BODY + 1,
                max: MAX_BODY
            })
        );
        let mut bad = ok.clone();
        bad[4..6].copy_from_slice(&17i16.to_be_bytes());
        assert_eq!(decode(&bad, MAX_BODY), Err(PacketError::HeaderLen(17)));
        let mut neg = ok.clone();
        neg[0..4].copy_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(decode(&neg, MAX_BODY), Err(PacketError::ShortPackLen(-1)));
        let mut short = ok;
        short[0..4].copy_from_slice(&15i32.to_be_bytes());
        assert_eq!(decode(&short, MAX_BODY), Err(PacketError::ShortPackLen(15)));
    }

    #[test]
    fn exact_decoding_refuses_trailing_or_missing_bytes() {
        let mut p = Packet::new(1, 2, 1, &b"ab"[..]).to_bytes();
        assert!(decode_exact(&p, MAX_BODY).is_ok());
        p.push(0);
        assert!(matches!(
            decode_exact(&p, MAX_BODY),
            Err(PacketError::LengthMismatch { .. })
        ));
        assert!(matches!(
            decode_exact(&p[..p.len() - 2], MAX_BODY),
            Err(PacketError::LengthMismatch { .. })
        ));
        assert!(decode_exact(&p[..3], MAX_BODY).is_err());
    }
}
