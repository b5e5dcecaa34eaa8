//! What a WebSocket connection (plain or over TLS) keeps beyond a TCP one. A module of its
//! own so that `conn` and `tls` both use it without depending on each other.

use starling_proto::packet;
use starling_proto::ws::Assembler;

/// What a WebSocket connection (plain or TLS) keeps beyond a TCP one.
pub(crate) struct WsState {
    pub asm: Assembler,
    /// The upgrade request's `Cookie` header, handed to logic with the auth request (goim).
    pub cookie: Box<str>,
}

impl WsState {
    pub fn new() -> Self {
        WsState {
            asm: Assembler::new(packet::MAX_PACK),
            cookie: Box::default(),
        }
    }
}
