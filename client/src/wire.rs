//! The client side of goim's framing, sans-IO: packets out (masked WebSocket frames on
//! WebSocket, RFC 6455 §5.3), packets in (TCP stream or one packet per WebSocket message),
//! with op-9 (`OpRaw`) batches unpacked into their packets (reference im.md §5.1, goim.md §1.5).
//!
//! The caller owns the socket: it writes what [`Encoder`] returns and feeds what it reads to
//! [`Decoder::feed`], then takes [`Incoming`] items out of [`Decoder::decode`].

use base64::Engine as _;
use starling_proto::packet::{self, Packet, PacketError};
use starling_proto::{op, raw, ws};
use std::collections::VecDeque;
use thiserror::Error;

/// Which goim transport a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Back-to-back packets.
    Tcp,
    /// One packet per binary WebSocket message (goim's `/sub` endpoint).
    WebSocket,
}

/// The largest packet a client accepts from the server. Server pushes are OpRaw batches of
/// up to a room's batch size, so this is far above the 4096-byte client limit.
pub const MAX_INCOMING: usize = 16 << 20;

/// Why the server's bytes are not goim.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    #[error("bad packet: {0}")]
    Packet(#[from] PacketError),
    #[error("bad WebSocket frame: {0}")]
    Frame(#[from] ws::FrameError),
    #[error("WebSocket upgrade refused: {0}")]
    Upgrade(String),
    /// This client never offers permessage-deflate, so a message marked compressed (RSV1,
    /// RFC 7692 §6) is the server's protocol error.
    #[error("compressed WebSocket message, but permessage-deflate was not negotiated")]
    Compressed,
}

/// Builds the bytes of outgoing packets.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    pub transport: Transport,
}

impl Encoder {
    pub fn new(transport: Transport) -> Self {
        Encoder { transport }
    }

    /// One packet `{ver 1, op, seq, body}`; on WebSocket a FIN binary frame masked with a
    /// fresh random key (RFC 6455 §5.3: a client MUST mask every frame).
    pub fn packet(&self, op: i32, seq: i32, body: &[u8]) -> Vec<u8> {
        let p = Packet::new(1, op, seq, body.to_vec()).to_bytes();
        match self.transport {
            Transport::Tcp => p,
            Transport::WebSocket => ws::encode_client_frame(
                ws::Opcode::Binary,
                true,
                fastrand::u32(..).to_be_bytes(),
                &p,
            ),
        }
    }

    /// A WebSocket pong answering a ping (RFC 6455 §5.5.3); nothing on TCP.
    pub fn pong(&self, payload: &[u8]) -> Vec<u8> {
        match self.transport {
            Transport::Tcp => Vec::new(),
            Transport::WebSocket => ws::encode_client_frame(
                ws::Opcode::Pong,
                true,
                fastrand::u32(..).to_be_bytes(),
                payload,
            ),
        }
    }
}

/// What the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A packet; those of an op-9 batch come one by one, in batch order.
    Packet(Packet),
    /// A WebSocket ping: answer with [`Encoder::pong`].
    Ping(Vec<u8>),
    /// A WebSocket close frame: the server is closing.
    Close,
}

/// Turns the server's bytes into [`Incoming`] items.
#[derive(Debug)]
pub struct Decoder {
    transport: Transport,
    buf: Vec<u8>,
    assembler: ws::Assembler,
    ready: VecDeque<Incoming>,
}

impl Decoder {
    pub fn new(transport: Transport) -> Self {
        Decoder {
            transport,
            buf: Vec::new(),
            assembler: ws::Assembler::new(MAX_INCOMING),
            ready: VecDeque::new(),
        }
    }

    /// Appends bytes read from the socket.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete item, `Ok(None)` until more bytes are fed. An error is final: the
    /// connection should be closed.
    pub fn decode(&mut self) -> Result<Option<Incoming>, WireError> {
        loop {
            if let Some(i) = self.ready.pop_front() {
                return Ok(Some(i));
            }
            if !self.step()? {
                return Ok(None);
            }
        }
    }

    /// Decodes one unit from the buffer into `ready`; false when the buffer holds no whole one.
    fn step(&mut self) -> Result<bool, WireError> {
        match self.transport {
            Transport::Tcp => {
                let Some(p) = packet::decode(&self.buf, MAX_INCOMING)? else {
                    return Ok(false);
                };
                let (p, len) = (p.to_owned(), p.wire_len());
                self.buf.drain(..len);
                self.push_packet(p)?;
            }
            Transport::WebSocket => {
                let Some(head) =
                    ws::decode_frame(&mut self.buf, MAX_INCOMING, ws::Masking::Optional)?
                else {
                    return Ok(false);
                };
                let payload = self.buf[head.header_len..head.frame_len()].to_vec();
                self.buf.drain(..head.frame_len());
                let item = match self.assembler.push(&head, &payload)? {
                    None => None,
                    Some(ws::Message::Data(d)) => {
                        Some(Ok(packet::decode_exact(d, MAX_INCOMING)?.to_owned()))
                    }
                    Some(ws::Message::Ping(p)) => Some(Err(Incoming::Ping(p.to_vec()))),
                    Some(ws::Message::Pong) => None,
                    Some(ws::Message::Close(_)) => Some(Err(Incoming::Close)),
                    Some(ws::Message::Compressed(_)) => return Err(WireError::Compressed),
                };
                self.assembler.release();
                match item {
                    Some(Ok(p)) => self.push_packet(p)?,
                    Some(Err(control)) => self.ready.push_back(control),
                    None => {}
                }
            }
        }
        Ok(true)
    }

    fn push_packet(&mut self, p: Packet) -> Result<(), WireError> {
        if p.op != op::RAW {
            self.ready.push_back(Incoming::Packet(p));
            return Ok(());
        }
        for inner in raw::packets(&p.body) {
            self.ready.push_back(Incoming::Packet(inner?.to_owned()));
        }
        Ok(())
    }
}

/// The opening handshake of a WebSocket client (RFC 6455 §4.1): the request bytes and the
/// key whose accept value the response must carry.
pub fn upgrade_request(host: &str, path: &str) -> (Vec<u8>, String) {
    let key = base64::engine::general_purpose::STANDARD.encode(fastrand::u128(..).to_be_bytes());
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    (req.into_bytes(), key)
}

/// Checks the upgrade response at the start of `buf`: `Ok(None)` while incomplete,
/// `Ok(Some(len))` once a `101` with the right `Sec-WebSocket-Accept` (RFC 6455 §4.2.2) is
/// there (the frames start at `len`), an error otherwise.
pub fn upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, WireError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < ws::MAX_HANDSHAKE => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(WireError::Upgrade("response too long".into()));
        }
        Err(e) => return Err(WireError::Upgrade(e.to_string())),
    };
    if resp.code != Some(101) {
        return Err(WireError::Upgrade(format!("status {:?}", resp.code)));
    }
    let want = ws::accept_key(key);
    let accept = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
        .map(|h| h.value);
    if accept != Some(want.as_bytes()) {
        return Err(WireError::Upgrade("wrong Sec-WebSocket-Accept".into()));
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(p: &[u8]) -> Vec<u8> {
        ws::encode_frame(ws::Opcode::Binary, p)
    }

    #[test]
    fn op9_batches_unpack_split_at_every_byte() {
        let mut batch = raw::RawBatch::new();
        batch.push(op::im::MSG, b"one");
        batch.push(1000, b"two");
        let batch = batch.finish();
        let heartbeat = Packet::new(1, op::HEARTBEAT_REPLY, 0, vec![0, 0, 0, 1]).to_bytes();
        for transport in [Transport::Tcp, Transport::WebSocket] {
            let wrapped = Packet::new(1, op::RAW, 0, batch.clone()).to_bytes();
            let stream = match transport {
                Transport::Tcp => [wrapped, heartbeat.clone()].concat(),
                Transport::WebSocket => [server_frame(&wrapped), server_frame(&heartbeat)].concat(),
            };
            for cut in 0..=stream.len() {
                let mut d = Decoder::new(transport);
                let mut got = Vec::new();
                d.feed(&stream[..cut]);
                while let Some(i) = d.decode().unwrap() {
                    got.push(i);
                }
                d.feed(&stream[cut..]);
                while let Some(i) = d.decode().unwrap() {
                    got.push(i);
                }
                let ops: Vec<i32> = got
                    .iter()
                    .map(|i| match i {
                        Incoming::Packet(p) => p.op,
                        other => panic!("{other:?}"),
                    })
                    .collect();
                assert_eq!(
                    ops,
                    vec![op::im::MSG, 1000, op::HEARTBEAT_REPLY],
                    "{transport:?} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn websocket_frames_are_masked_and_control_frames_surface() {
        let out = Encoder::new(Transport::WebSocket).packet(op::HEARTBEAT, 7, b"");
        assert_eq!(out[1] & 0x80, 0x80, "mask bit set (RFC 6455 §5.3)");
        let mut copy = out.clone();
        let head = ws::decode_frame(&mut copy, 1 << 20, ws::Masking::Required)
            .unwrap()
            .unwrap();
        let p = packet::decode_exact(&copy[head.header_len..head.frame_len()], 4096).unwrap();
        assert_eq!((p.op, p.seq), (op::HEARTBEAT, 7));
        assert_eq!(
            Encoder::new(Transport::Tcp).packet(op::HEARTBEAT, 7, b""),
            Packet::new(1, op::HEARTBEAT, 7, vec![]).to_bytes()
        );

        let mut d = Decoder::new(Transport::WebSocket);
        d.feed(&ws::encode_frame(ws::Opcode::Ping, b"hi"));
        d.feed(&ws::encode_frame(ws::Opcode::Close, b""));
        assert_eq!(d.decode().unwrap(), Some(Incoming::Ping(b"hi".to_vec())));
        assert_eq!(d.decode().unwrap(), Some(Incoming::Close));
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut d = Decoder::new(Transport::Tcp);
        d.feed(&[0, 0, 0, 3, 0, 16, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0]);
        assert!(matches!(d.decode(), Err(WireError::Packet(_))));
        // A batch whose inner packet is cut short.
        let mut d = Decoder::new(Transport::Tcp);
        let inner = Packet::new(1, 1000, 0, b"abc".to_vec()).to_bytes();
        d.feed(&Packet::new(1, op::RAW, 0, inner[..inner.len() - 1].to_vec()).to_bytes());
        assert!(d.decode().is_err());
        // Reserved bits on a WebSocket frame.
        let mut d = Decoder::new(Transport::WebSocket);
        d.feed(&[0xF2, 0]);
        assert!(matches!(d.decode(), Err(WireError::Frame(_))));
    }

    #[test]
    fn upgrade_response_is_checked() {
        let (req, key) = upgrade_request("h", "/sub");
        assert!(String::from_utf8(req).unwrap().contains(&key));
        let ok = String::from_utf8(ws::switching_protocols(&key)).unwrap();
        assert_eq!(upgrade_response(&ok.as_bytes()[..10], &key).unwrap(), None);
        assert_eq!(
            upgrade_response(ok.as_bytes(), &key).unwrap(),
            Some(ok.len())
        );
        let wrong = String::from_utf8(ws::switching_protocols("other")).unwrap();
        assert!(upgrade_response(wrong.as_bytes(), &key).is_err());
        assert!(upgrade_response(&ws::http_error(400, "Bad Request"), &key).is_err());
    }
}
