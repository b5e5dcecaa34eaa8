//! What the WebSocket targets share: comet's frame loop (`comet/src/worker/input/decode.rs`,
//! `process_frames` and `on_message`) without its sockets, over the same proto functions.

use starling_proto::packet::{self, HEADER_LEN};
use starling_proto::ws::deflate::{InflateError, Inflater};
use starling_proto::ws::{self, Assembler, FrameError, Masking, Message};
use std::cell::RefCell;

thread_local! {
    /// One inflater for the thread, as comet keeps one per worker (`comet/src/deflate.rs`):
    /// with no context takeover every message starts afresh.
    static INFLATER: RefCell<Inflater> = RefCell::new(Inflater::new());
}

/// Why comet's frame loop stopped reading a connection.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Frame(FrameError),
    Inflate(InflateError),
    Packet(packet::PacketError),
    Closed,
}

/// The settings a connection reads frames with.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub max_pack: usize,
    pub masking: Masking,
    pub deflate: bool,
}

impl Conn {
    /// From one fuzzed byte: bit 0 masking required, bit 1 deflate agreed, the rest a packet
    /// limit from 16 bytes up (goim's 4112 when 0).
    pub fn from_byte(b: u8) -> Conn {
        let max_pack = match b >> 2 {
            0 => packet::MAX_PACK,
            n => HEADER_LEN + usize::from(n - 1) * 1024,
        };
        Conn {
            max_pack,
            masking: if b & 1 == 1 {
                Masking::Required
            } else {
                Masking::Optional
            },
            deflate: b & 2 == 2,
        }
    }
}

/// One connection's reading state, as comet keeps it between reads: the assembler, and the
/// packets' (op, body) handed on so far.
pub struct Reader {
    conn: Conn,
    asm: Assembler,
    pub packets: Vec<(i32, Vec<u8>)>,
}

impl Reader {
    pub fn new(conn: Conn) -> Reader {
        Reader {
            conn,
            asm: Assembler::new(conn.max_pack),
            packets: Vec::new(),
        }
    }

    /// Reads the frames `input` holds; `Ok(used)`: the rest is an incomplete frame, kept for
    /// the next read. Asserts what must hold of every frame and message on the way.
    pub fn feed(&mut self, input: &mut [u8]) -> Result<usize, End> {
        let conn = self.conn;
        let mut pos = 0;
        loop {
            let head = match ws::decode_frame_ext(
                &mut input[pos..],
                conn.max_pack,
                conn.masking,
                conn.deflate,
            ) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(pos),
                Err(e) => return Err(End::Frame(e)),
            };
            assert!(head.frame_len() <= input.len() - pos);
            assert!(head.payload_len <= conn.max_pack);
            assert!(!head.compressed || conn.deflate);
            if head.opcode.is_control() {
                assert!(head.fin && head.payload_len <= ws::MAX_CONTROL);
            }
            let payload = &input[pos + head.header_len..pos + head.frame_len()];
            pos += head.frame_len();
            let body = match self.asm.push(&head, payload).map_err(End::Frame)? {
                None | Some(Message::Pong) | Some(Message::Ping(_)) => continue,
                Some(Message::Close(_)) => return Err(End::Closed),
                Some(Message::Data(m)) => m.to_vec(),
                Some(Message::Compressed(z)) => {
                    assert!(conn.deflate);
                    let mut out = Vec::new();
                    let inflated =
                        INFLATER.with_borrow_mut(|i| i.inflate(z, conn.max_pack, &mut out));
                    assert!(out.len() <= conn.max_pack, "an inflate stops at its limit");
                    inflated.map_err(End::Inflate)?;
                    out
                }
            };
            assert!(body.len() <= conn.max_pack);
            let p = packet::decode_exact(&body, conn.max_pack - HEADER_LEN).map_err(End::Packet)?;
            self.packets.push((p.op, p.body.to_vec()));
            self.asm.release();
        }
    }
}

/// Reads `stream` whole, then in pieces of `piece` bytes keeping the undecoded tail (as
/// comet's `ingest` does), and asserts both give the same packets and the same end; returns
/// them.
pub fn read_both_ways(
    conn: Conn,
    stream: &[u8],
    piece: usize,
) -> (Vec<(i32, Vec<u8>)>, Option<End>) {
    let mut whole = Reader::new(conn);
    let end = whole.feed(&mut stream.to_vec()).err();
    let mut pieces = Reader::new(conn);
    let mut pending: Vec<u8> = Vec::new();
    let mut piece_end = None;
    // At most about 16 pieces, so that long streams do not spend the fuzzer's time copying.
    for chunk in stream.chunks(piece.max(stream.len() / 16).max(1)) {
        pending.extend_from_slice(chunk);
        match pieces.feed(&mut pending) {
            Ok(used) => drop(pending.drain(..used)),
            Err(e) => {
                piece_end = Some(e);
                break;
            }
        }
    }
    assert_eq!(
        piece_end, end,
        "reading in pieces of {piece} ends differently"
    );
    assert_eq!(
        pieces.packets, whole.packets,
        "reading in pieces of {piece} differs"
    );
    (whole.packets, end)
}
