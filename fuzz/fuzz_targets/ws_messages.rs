//! The WebSocket frame codec, structure-aware: frames built from `arbitrary` values (any
//! FIN/RSV bits and opcode, masked or not, lengths in their minimal or a longer form,
//! payloads that are goim packets, deflated goim packets or plain bytes), so the fuzzer spends
//! its time past the frame header: fragmentation, control frames between fragments,
//! permessage-deflate messages and the packet inside.
//!
//! Checked: the same as `ws_frames` (limits, pieces = whole), and that every deflated
//! message the server's own `Deflater` makes inflates back to itself.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use starling_fuzz::{Conn, read_both_ways};
use starling_proto::packet;
use starling_proto::ws::deflate::{Deflater, Inflater};
use std::cell::RefCell;

thread_local! {
    /// One compressor per level and one inflater for the thread, as comet keeps them.
    static DEFLATERS: RefCell<Vec<Deflater>> = RefCell::new((0..10).map(Deflater::new).collect());
    static INFLATER: RefCell<Inflater> = RefCell::new(Inflater::new());
}

#[derive(Debug, Arbitrary)]
enum Payload {
    Bytes(Vec<u8>),
    Packet {
        ver: i16,
        op: i32,
        seq: i32,
        body: Vec<u8>,
    },
    Deflated {
        level: u8,
        op: i32,
        body: Vec<u8>,
    },
}

#[derive(Debug, Arbitrary)]
enum LenForm {
    Minimal,
    Sixteen,
    SixtyFour,
}

#[derive(Debug, Arbitrary)]
struct Frame {
    fin: bool,
    /// RSV1..3 in the low bits.
    rsv: u8,
    /// Low 4 bits.
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: LenForm,
    payload: Payload,
}

#[derive(Debug, Arbitrary)]
struct Input {
    settings: u8,
    piece: u8,
    frames: Vec<Frame>,
}

fn payload_bytes(p: &Payload) -> Vec<u8> {
    match p {
        Payload::Bytes(b) => b.clone(),
        Payload::Packet { ver, op, seq, body } => {
            packet::Packet::new(*ver, *op, *seq, body.clone()).to_bytes()
        }
        Payload::Deflated { level, op, body } => {
            let msg = packet::Packet::new(1, *op, 1, body.clone()).to_bytes();
            let mut z = Vec::new();
            DEFLATERS.with_borrow_mut(|d| d[usize::from(*level % 10)].compress(&msg, &mut z));
            let mut back = Vec::new();
            INFLATER
                .with_borrow_mut(|i| i.inflate(&z, msg.len(), &mut back))
                .expect("our own deflate inflates");
            assert_eq!(back, msg);
            z
        }
    }
}

fn encode(f: &Frame, out: &mut Vec<u8>) {
    let payload = payload_bytes(&f.payload);
    out.push(u8::from(f.fin) << 7 | (f.rsv & 7) << 4 | (f.opcode & 0x0f));
    let m = if f.mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    match f.len {
        LenForm::Minimal if n < 126 => out.push(m | n as u8),
        LenForm::Minimal | LenForm::Sixteen if n <= 0xffff => {
            out.push(m | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match f.mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        }
        None => out.extend_from_slice(&payload),
    }
}

fuzz_target!(|input: Input| {
    let mut stream = Vec::new();
    for f in &input.frames {
        encode(f, &mut stream);
    }
    read_both_ways(
        Conn::from_byte(input.settings),
        &stream,
        usize::from(input.piece),
    );
});
