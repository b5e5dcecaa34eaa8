//! The WebSocket frame codec on raw bytes, through comet's frame loop: frame headers
//! (`ws::decode_frame_ext`: masking, reserved bits, control frames, 7/16/64-bit lengths),
//! fragment reassembly (`ws::Assembler`), permessage-deflate inflation with its size limit
//! (`ws::deflate::Inflater`) and one goim packet per message (`packet::decode_exact`).
//!
//! Input: byte 0 picks the connection's settings (`Conn::from_byte`), byte 1 the size of the
//! pieces the frames arrive in; the rest is the stream. Checked: nothing over the limits
//! passes, and reading in pieces (keeping the undecoded tail, as comet does) gives the same
//! packets and ends the same way as reading it whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starling_fuzz::{Conn, read_both_ways};

fuzz_target!(|data: &[u8]| {
    let [settings, piece, stream @ ..] = data else {
        return;
    };
    read_both_ways(Conn::from_byte(*settings), stream, usize::from(*piece));
});
