//! What a WebSocket connection (plain or over TLS) keeps beyond a TCP one. A module of its
//! own so that `conn` and `tls` both use it without depending on each other.

use starling_proto::packet;
use starling_proto::ws::Assembler;

/// What a WebSocket connection (plain or TLS) keeps beyond a TCP one.
pub(crate) struct WsState {
    pub asm: Assembler,
    /// The upgrade request's `Cookie` header, handed to logic with the auth request (goim).
    pub cookie: Box<str>,
    /// The client offered permessage-deflate and comet is configured for it (set by the
    /// upgrade, RFC 7692 §7.1): RSV1 then marks compressed messages both ways. A flag only:
    /// no compressor state lives here (no context takeover), and the settings are the
    /// worker's (`Out::deflate`). It sits in `max_pack`'s padding: no byte more per
    /// connection.
    pub deflate: bool,
    /// The largest message (one packet) the client may send: goim's [`packet::MAX_PACK`]
    /// until logic sets `ConnectReply.max_body`.
    max_pack: u32,
}

impl WsState {
    pub fn new() -> Self {
        WsState {
            asm: Assembler::new(packet::MAX_PACK),
            cookie: Box::default(),
            deflate: false,
            max_pack: packet::MAX_PACK as u32,
        }
    }

    pub fn max_pack(&self) -> usize {
        self.max_pack as usize
    }

    /// Sets the message limit. Called at auth, when no fragmented message is open (input is
    /// only kept, not decoded, while logic answers the auth packet).
    pub fn set_max_pack(&mut self, limit: u32) {
        self.max_pack = limit;
        self.asm = Assembler::new(limit as usize);
    }
}

#[cfg(test)]
mod tests {
    /// The box a WebSocket connection holds stays within glibc's 80-byte chunk.
    #[test]
    fn websocket_state_stays_small() {
        let size = std::mem::size_of::<super::WsState>();
        assert!(size <= 72, "WsState is {size} bytes");
    }
}
