//! The goim packet stream decoder (`starling_proto::packet::decode`) as comet's TCP path uses
//! it: bytes arrive in pieces, a tail is kept, every whole packet is taken out.
//!
//! Input: byte 0 picks the body limit (goim's 4096, or a `ConnectReply.max_body` between 0
//! and 64 KiB), byte 1 the size of the pieces the stream arrives in; the rest is the stream.
//! Checked: reading in pieces gives the packets, error and leftover that reading it whole
//! gives; every packet re-encodes to the bytes it came from; no body is over the limit; and
//! `decode_exact` agrees with `decode` on the whole input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_proto::packet::{self, HEADER_LEN, MAX_BODY, Packet, PacketError};

/// Packets, then the error that stopped the stream (if any), and the bytes left over.
type Outcome = (Vec<Packet>, Option<PacketError>, usize);

fn whole(stream: &[u8], max_body: usize) -> Outcome {
    let mut pos = 0;
    let mut got = Vec::new();
    loop {
        match packet::decode(&stream[pos..], max_body) {
            Ok(Some(p)) => {
                assert!(p.body.len() <= max_body);
                let wire = &stream[pos..pos + p.wire_len()];
                assert_eq!(p.to_owned().to_bytes(), wire, "re-encodes to its bytes");
                pos += p.wire_len();
                got.push(p.to_owned());
            }
            Ok(None) => return (got, None, stream.len() - pos),
            Err(e) => return (got, Some(e), stream.len() - pos),
        }
    }
}

/// The way comet's `ingest` reads: append a piece to the kept tail, take packets, keep the rest.
fn in_pieces(stream: &[u8], max_body: usize, piece: usize) -> Outcome {
    let mut pending: Vec<u8> = Vec::new();
    let mut got = Vec::new();
    for chunk in stream.chunks(piece_size(stream.len(), piece)) {
        pending.extend_from_slice(chunk);
        loop {
            match packet::decode(&pending, max_body) {
                Ok(Some(p)) => {
                    let n = p.wire_len();
                    got.push(p.to_owned());
                    pending.drain(..n);
                }
                Ok(None) => break,
                Err(e) => {
                    // The connection closes here; what the stream still held is unread.
                    let unread = pending.len() + stream.len() - consumed(stream, chunk);
                    return (got, Some(e), unread);
                }
            }
        }
    }
    (got, None, pending.len())
}

/// At most about 16 pieces: one-byte reads of a 4 KiB stream would spend the fuzzer's time
/// copying (splits at every byte are the unit tests' job, `proto/src/packet.rs`).
fn piece_size(len: usize, piece: usize) -> usize {
    piece.max(len / 16).max(1)
}

/// Bytes of `stream` up to the end of `chunk` (a sub-slice of it).
fn consumed(stream: &[u8], chunk: &[u8]) -> usize {
    chunk.as_ptr() as usize - stream.as_ptr() as usize + chunk.len()
}

fuzz_target!(|data: &[u8]| {
    let [limit, piece, stream @ ..] = data else {
        return;
    };
    let max_body = match limit {
        0..=127 => MAX_BODY,
        n => (usize::from(*n) - 128) * 512,
    };
    let whole_read = whole(stream, max_body);
    assert_eq!(
        in_pieces(stream, max_body, usize::from(*piece)),
        whole_read,
        "reading in pieces of {piece} differs"
    );
    match packet::decode_exact(stream, max_body) {
        Ok(p) => {
            assert_eq!(p.wire_len(), stream.len());
            assert_eq!(whole_read.0.first(), Some(&p.to_owned()));
        }
        Err(PacketError::LengthMismatch { .. }) => {}
        Err(e) => assert!(stream.len() >= HEADER_LEN && whole_read.1 == Some(e)),
    }
});
