//! What the same client says to each peer: how a subscriber joins, what it keeps sending, how
//! it reads deliveries, and how a publisher's message is accepted. goim's format comes from
//! `starling_proto`; Redis (RESP), NATS and MQTT 3.1.1 are small enough to speak here.

use clap::ValueEnum;
use serde::Serialize;
use starling_client::wire::{Encoder, Transport};
use starling_client::{Codec, Identity};
use starling_proto::packet;
use starling_proto::{op, raw, ws};
use thiserror::Error;

mod peers;
pub use peers::{mqtt_acks, mqtt_connect, mqtt_publish, mqtt_subscribe, resp};
use peers::{parse_mqtt, parse_nats, parse_resp};

/// The server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// Starling (or goim) over TCP: subscribers on the comet, pushes through the HTTP API.
    Starling,
    /// Starling (or goim) over WebSocket `/sub`.
    StarlingWs,
    /// Starling over WebSocket `/sub`, offering permessage-deflate (RFC 7692) as browsers do
    /// (`permessage-deflate; client_max_window_bits`); compressed pushes are inflated here.
    /// The comet must have `comet.websocket.permessage_deflate` on to agree.
    StarlingWsDeflate,
    /// redis-server pub/sub: `SUBSCRIBE` / `PUBLISH`.
    Redis,
    /// nats-server: `SUB` / `PUB` (the publisher runs `verbose` to get `+OK` per message).
    Nats,
    /// Mosquitto (MQTT 3.1.1): subscribers at QoS 0, the publisher at QoS 1 (PUBACK).
    Mqtt,
}

impl Peer {
    /// Starling over WebSocket, with or without permessage-deflate.
    pub fn is_ws(self) -> bool {
        matches!(self, Peer::StarlingWs | Peer::StarlingWsDeflate)
    }
}

/// The operation every benchmark push carries.
pub const BENCH_OP: i32 = 1000;
/// The room every subscriber joins in room mode (goim room key `live://bench`).
pub const ROOM_TYPE: &str = "live";
pub const ROOM_ID: &str = "bench";

/// A subscriber's topic: the shared room, or its own key.
pub fn topic(room_mode: bool, index: u64) -> String {
    if room_mode {
        ROOM_ID.to_string()
    } else {
        format!("k{index}")
    }
}

/// Every message starts with its sequence number and the publisher's clock when it was sent.
pub const STAMP_LEN: usize = 12;

/// A message of `size` bytes stamped with `seq` and `sent_ns`, padded with dots.
#[cfg(test)]
pub fn stamp(seq: u32, sent_ns: u64, size: usize) -> Vec<u8> {
    stamp_filled(seq, sent_ns, size, Fill::Dots)
}

/// What fills a message after its stamp. It matters to compression (permessage-deflate)
/// only: every other path copies bytes whatever they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fill {
    /// `.` repeated: compresses to almost nothing (deflate's best case).
    #[default]
    Dots,
    /// Words drawn from a small vocabulary, different for every message: compresses about
    /// as chat text or JSON does (2–4×).
    Text,
    /// Pseudo-random bytes: does not compress (deflate's worst case: its CPU for nothing).
    Random,
}

/// [`stamp`] with the rest of the message filled as `fill` says (seeded by `seq`).
pub fn stamp_filled(seq: u32, sent_ns: u64, size: usize, fill: Fill) -> Vec<u8> {
    const WORDS: [&str; 32] = [
        "hello",
        "room",
        "message",
        "the",
        "a",
        "to",
        "and",
        "of",
        "is",
        "we",
        "meeting",
        "today",
        "at",
        "group",
        "chat",
        "see",
        "you",
        "later",
        "ok",
        "thanks",
        "sent",
        "read",
        "photo",
        "link",
        "{\"seq\":",
        "\"from\":",
        "\"text\":",
        "42,",
        "1701,",
        "true}",
        "on",
        "new",
    ];
    let size = size.max(STAMP_LEN);
    let mut m = Vec::with_capacity(size);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&sent_ns.to_be_bytes());
    let mut x = u64::from(seq).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while m.len() < size {
        match fill {
            Fill::Dots => m.push(b'.'),
            Fill::Random => m.extend_from_slice(&next().to_le_bytes()),
            Fill::Text => {
                m.extend_from_slice(WORDS[(next() % 32) as usize].as_bytes());
                m.push(b' ');
            }
        }
    }
    m.truncate(size);
    m
}

pub fn read_stamp(m: &[u8]) -> Option<(u32, u64)> {
    if m.len() < STAMP_LEN {
        return None;
    }
    let seq = u32::from_be_bytes(m[..4].try_into().ok()?);
    let sent = u64::from_be_bytes(m[4..12].try_into().ok()?);
    Some((seq, sent))
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("malformed {0} stream")]
    Malformed(&'static str),
    #[error("server refused: {0}")]
    Refused(String),
}

/// The goim identity every bench subscriber authenticates with (goim's JSON token).
fn identity(index: u64) -> Identity {
    Identity {
        mid: index as i64,
        key: format!("k{index}"),
        room_id: format!("{ROOM_TYPE}://{ROOM_ID}"),
        platform: "bench".into(),
        accepts: vec![BENCH_OP],
        ..Default::default()
    }
}

/// What the subscriber sends right after connecting. goim's framing, token and client
/// WebSocket frames (masked, RFC 6455 §5.3) come from `starling-client`.
pub fn hello(peer: Peer, room_mode: bool, index: u64) -> Vec<u8> {
    let topic = topic(room_mode, index);
    match peer {
        Peer::Starling => {
            Encoder::new(Transport::Tcp).packet(op::AUTH, 1, &identity(index).auth_body())
        }
        Peer::StarlingWs | Peer::StarlingWsDeflate => {
            // The decoder checks the status line only: keeping each connection's
            // Sec-WebSocket-Key to verify the accept value would cost memory per connection.
            let (mut out, _key) = starling_client::wire::upgrade_request("bench", "/sub");
            if peer == Peer::StarlingWsDeflate {
                // Offered as browsers do (RFC 7692 §7.1); the request ends with a blank line.
                out.truncate(out.len() - 2);
                out.extend_from_slice(
                    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
                );
            }
            out.extend(Encoder::new(Transport::WebSocket).packet(
                op::AUTH,
                1,
                &identity(index).auth_body(),
            ));
            out
        }
        Peer::Redis => resp(&[b"SUBSCRIBE", topic.as_bytes()]),
        Peer::Nats => format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":\"bench-{index}\"}}\r\n\
             SUB {topic} 1\r\nPING\r\n"
        )
        .into_bytes(),
        Peer::Mqtt => {
            let mut out = mqtt_connect(&format!("bench-sub-{index}"));
            out.extend(mqtt_subscribe(&topic));
            out
        }
    }
}

/// Starling over TCP: [`hello`]'s auth (same key, room and accepts) opting in to IM in
/// protobuf with `im_token`, as user `mid`: what an idle IM connection costs beyond goim's.
pub fn hello_im(index: u64, mid: i64, im_token: String) -> Vec<u8> {
    let id = Identity {
        mid,
        im: Some(Codec::Protobuf),
        im_token,
        ..identity(index)
    };
    Encoder::new(Transport::Tcp).packet(op::AUTH, 1, &id.auth_body())
}

/// What a subscriber sends every heartbeat interval, if the peer needs it.
pub fn heartbeat(peer: Peer, _index: u64) -> Option<Vec<u8>> {
    match peer {
        Peer::Starling => Some(Encoder::new(Transport::Tcp).packet(op::HEARTBEAT, 0, &[])),
        Peer::StarlingWs | Peer::StarlingWsDeflate => {
            Some(Encoder::new(Transport::WebSocket).packet(op::HEARTBEAT, 0, &[]))
        }
        // NATS pings the client (answered in `Decoder`); Redis and MQTT (keepalive 0) need
        // nothing.
        Peer::Redis | Peer::Nats | Peer::Mqtt => None,
    }
}

/// What a decoder found in the bytes it was fed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The subscription is in place.
    Ready,
    /// One delivered message.
    Payload(&'a [u8]),
    /// Bytes to send back (NATS `PONG`).
    Reply(&'static [u8]),
}

/// A resumable parser of what a server sends a subscriber: bytes are appended as they
/// arrive and every whole unit is reported; an incomplete tail waits for more.
pub struct Decoder {
    peer: Peer,
    buf: Vec<u8>,
    /// WebSocket: the `101` response has been read.
    upgraded: bool,
    /// WebSocket: the `101` agreed to permessage-deflate.
    deflate: bool,
}

thread_local! {
    /// With no context takeover one inflater serves every connection of a process.
    static INFLATER: std::cell::RefCell<ws::deflate::Inflater> =
        std::cell::RefCell::new(ws::deflate::Inflater::new());
}

impl Decoder {
    pub fn new(peer: Peer) -> Self {
        Decoder {
            peer,
            buf: Vec::new(),
            upgraded: false,
            deflate: false,
        }
    }

    /// Feeds bytes; calls `on` for every event they complete.
    pub fn feed(&mut self, data: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<(), WireError> {
        // The common case parses straight from `data`: nothing pending, and a decoder that
        // only reads (WebSocket decoding unmasks in place, so it always works on the buffer).
        if self.buf.is_empty() && !self.peer.is_ws() {
            let used = self.parse_plain(data, on)?;
            self.buf.extend_from_slice(&data[used..]);
            return Ok(());
        }
        self.buf.extend_from_slice(data);
        let mut buf = std::mem::take(&mut self.buf);
        let used = match self.peer {
            Peer::StarlingWs | Peer::StarlingWsDeflate => self.parse_ws(&mut buf, on),
            _ => self.parse_plain(&buf, on),
        };
        let used = used?;
        buf.drain(..used);
        self.buf = buf;
        Ok(())
    }

    fn parse_plain(&self, data: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<usize, WireError> {
        match self.peer {
            Peer::Starling => parse_goim(data, on),
            Peer::Redis => parse_resp(data, on),
            Peer::Nats => parse_nats(data, on),
            Peer::Mqtt => parse_mqtt(data, on),
            Peer::StarlingWs | Peer::StarlingWsDeflate => {
                unreachable!("WebSocket input is parsed by parse_ws")
            }
        }
    }

    fn parse_ws(
        &mut self,
        input: &mut [u8],
        on: &mut impl FnMut(Event<'_>),
    ) -> Result<usize, WireError> {
        let mut used = 0;
        if !self.upgraded {
            let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(0);
            };
            if !input.starts_with(b"HTTP/1.1 101") {
                let line = String::from_utf8_lossy(&input[..end]).into_owned();
                return Err(WireError::Refused(line));
            }
            self.upgraded = true;
            self.deflate = String::from_utf8_lossy(&input[..end])
                .to_ascii_lowercase()
                .contains("\r\nsec-websocket-extensions: permessage-deflate");
            used = end + 4;
        }
        let mut inflated = Vec::new();
        loop {
            let rest = &mut input[used..];
            let Some(h) =
                ws::decode_frame_ext(rest, usize::MAX >> 1, ws::Masking::Optional, self.deflate)
                    .map_err(|_| WireError::Malformed("websocket"))?
            else {
                return Ok(used);
            };
            let mut payload = &rest[h.header_len..h.frame_len()];
            if h.compressed {
                inflated.clear();
                INFLATER
                    .with_borrow_mut(|i| i.inflate(payload, usize::MAX >> 1, &mut inflated))
                    .map_err(|_| WireError::Malformed("deflate"))?;
                payload = &inflated;
            }
            let p = packet::decode_exact(payload, usize::MAX >> 1)
                .map_err(|_| WireError::Malformed("goim"))?;
            if p.op == op::RAW {
                for inner in raw::packets(p.body) {
                    let inner = inner.map_err(|_| WireError::Malformed("goim raw"))?;
                    goim_event(inner.op, inner.body, on);
                }
            } else {
                goim_event(p.op, p.body, on);
            }
            used += h.frame_len();
        }
    }
}

fn goim_event(op_code: i32, body: &[u8], on: &mut impl FnMut(Event<'_>)) {
    match op_code {
        op::AUTH_REPLY => on(Event::Ready),
        BENCH_OP => on(Event::Payload(body)),
        _ => {} // heartbeat replies
    }
}

/// goim over TCP: pushed batches arrive as their inner packets.
fn parse_goim(input: &[u8], on: &mut impl FnMut(Event<'_>)) -> Result<usize, WireError> {
    let mut used = 0;
    while let Some(p) =
        packet::decode(&input[used..], usize::MAX >> 1).map_err(|_| WireError::Malformed("goim"))?
    {
        used += p.wire_len();
        goim_event(p.op, p.body, on);
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::peers::{mqtt_packet, mqtt_str};
    use super::*;
    use starling_proto::AuthToken;
    use starling_proto::packet::Packet;

    /// Feeds `stream` split at every position and returns the events' payloads (with
    /// "READY" for readiness), which must not depend on the split.
    fn events(peer: Peer, stream: &[u8]) -> Vec<Vec<u8>> {
        let mut whole = Vec::new();
        let mut d = Decoder::new(peer);
        d.feed(stream, &mut |e| whole.push(render(e))).unwrap();
        for cut in 0..stream.len() {
            let mut got = Vec::new();
            let mut d = Decoder::new(peer);
            d.feed(&stream[..cut], &mut |e| got.push(render(e)))
                .unwrap();
            d.feed(&stream[cut..], &mut |e| got.push(render(e)))
                .unwrap();
            assert_eq!(got, whole, "{peer:?} split at {cut}");
        }
        whole
    }

    fn render(e: Event<'_>) -> Vec<u8> {
        match e {
            Event::Ready => b"READY".to_vec(),
            Event::Payload(p) => p.to_vec(),
            Event::Reply(r) => r.to_vec(),
        }
    }

    #[test]
    fn fills_compress_as_named() {
        let deflated = |fill| {
            let m = stamp_filled(3, 9, 4096, fill);
            assert_eq!((m.len(), read_stamp(&m)), (4096, Some((3, 9))));
            let mut z = Vec::new();
            ws::deflate::Deflater::new(6).compress(&m, &mut z);
            z.len()
        };
        assert!(deflated(Fill::Dots) < 100);
        let text = deflated(Fill::Text);
        assert!((800..2400).contains(&text), "{text}");
        assert!(deflated(Fill::Random) > 4000);
        assert_ne!(
            stamp_filled(1, 0, 64, Fill::Text)[12..],
            stamp_filled(2, 0, 64, Fill::Text)[12..]
        );
    }

    #[test]
    fn stamps_round_trip() {
        let m = stamp(7, 123_456, 64);
        assert_eq!(m.len(), 64);
        assert_eq!(read_stamp(&m), Some((7, 123_456)));
        assert_eq!(read_stamp(&m[..5]), None);
    }

    #[test]
    fn goim_tcp_and_ws() {
        let mut tcp = Packet::new(1, op::AUTH_REPLY, 1, vec![])
            .to_bytes()
            .to_vec();
        tcp.extend_from_slice(&Packet::new(1, op::HEARTBEAT_REPLY, 0, vec![0, 0, 0, 1]).to_bytes());
        tcp.extend_from_slice(&Packet::new(1, BENCH_OP, 0, b"one".to_vec()).to_bytes());
        tcp.extend_from_slice(&Packet::new(1, BENCH_OP, 0, b"two".to_vec()).to_bytes());
        assert_eq!(
            events(Peer::Starling, &tcp),
            vec![b"READY".to_vec(), b"one".to_vec(), b"two".to_vec()]
        );

        let mut batch = raw::RawBatch::new();
        batch.push(BENCH_OP, b"a");
        batch.push(BENCH_OP, b"b");
        let outer = Packet::new(1, op::RAW, 0, batch.finish().to_vec()).to_bytes();
        let mut wsb = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        let reply = Packet::new(1, op::AUTH_REPLY, 1, vec![]).to_bytes();
        wsb.extend(ws::encode_frame(ws::Opcode::Binary, &reply));
        wsb.extend(ws::encode_frame(ws::Opcode::Binary, &outer));
        assert_eq!(
            events(Peer::StarlingWs, &wsb),
            vec![b"READY".to_vec(), b"a".to_vec(), b"b".to_vec()]
        );
    }

    /// With permessage-deflate agreed, RSV1 frames are inflated (comet compresses a push
    /// once); uncompressed ones still pass. Without it, RSV1 is malformed.
    #[test]
    fn goim_ws_deflate() {
        let mut batch = raw::RawBatch::new();
        batch.push(BENCH_OP, &[b'.'; 300]);
        let outer = Packet::new(1, op::RAW, 0, batch.finish().to_vec()).to_bytes();
        let mut z = Vec::new();
        ws::deflate::Deflater::new(6).compress(&outer, &mut z);
        let mut wsb = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
            Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n"
            .to_vec();
        let reply = Packet::new(1, op::AUTH_REPLY, 1, vec![]).to_bytes();
        wsb.extend(ws::encode_frame(ws::Opcode::Binary, &reply));
        let mut frame = Vec::new();
        ws::encode_header_ext(&mut frame, ws::Opcode::Binary, true, z.len());
        frame.extend_from_slice(&z);
        wsb.extend_from_slice(&frame);
        assert_eq!(
            events(Peer::StarlingWsDeflate, &wsb),
            vec![b"READY".to_vec(), vec![b'.'; 300]]
        );
        let mut plain = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        plain.extend_from_slice(&frame);
        let mut d = Decoder::new(Peer::StarlingWsDeflate);
        assert_eq!(
            d.feed(&plain, &mut |_| {}),
            Err(WireError::Malformed("websocket"))
        );
        let hello = String::from_utf8_lossy(&hello(Peer::StarlingWsDeflate, true, 1)).into_owned();
        assert!(hello.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ));
    }

    #[test]
    fn im_hello_is_goim_hello_plus_im() {
        let plain = packet::decode_exact(&hello(Peer::Starling, true, 5), 1 << 20)
            .unwrap()
            .body
            .to_vec();
        let im = hello_im(5, 6, "jwt".into());
        let im = packet::decode_exact(&im, 1 << 20).unwrap();
        assert_eq!(im.op, op::AUTH);
        let (plain, im) = (
            AuthToken::parse(&plain).unwrap(),
            AuthToken::parse(im.body).unwrap(),
        );
        assert_eq!((im.key, im.room_id), (plain.key, plain.room_id));
        assert_eq!(
            (im.mid, im.im.as_str(), im.im_token.as_str()),
            (6, "pb", "jwt")
        );
    }

    #[test]
    fn redis_nats_mqtt() {
        let r = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n\
                  *3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$4\r\nab\r\n\r\n";
        assert_eq!(
            events(Peer::Redis, r),
            vec![b"READY".to_vec(), b"ab\r\n".to_vec()]
        );

        let n = b"INFO {\"x\":1}\r\nPONG\r\nMSG bench 1 3\r\nxyz\r\nPING\r\nMSG bench 1 0\r\n\r\n";
        assert_eq!(
            events(Peer::Nats, n),
            vec![
                b"READY".to_vec(),
                b"xyz".to_vec(),
                b"PONG\r\n".to_vec(),
                b"".to_vec()
            ]
        );

        let mut m = vec![0x20, 2, 0, 0, 0x90, 3, 0, 1, 0];
        let mut publish = Vec::new();
        mqtt_str(b"bench", &mut publish);
        publish.extend_from_slice(b"payload");
        m.extend(mqtt_packet(0x30, &publish));
        assert_eq!(
            events(Peer::Mqtt, &m),
            vec![b"READY".to_vec(), b"payload".to_vec()]
        );
    }

    #[test]
    fn refusals_are_errors() {
        let mut d = Decoder::new(Peer::Redis);
        assert!(d.feed(b"-ERR no\r\n", &mut |_| {}).is_err());
        let mut d = Decoder::new(Peer::StarlingWs);
        assert!(
            d.feed(b"HTTP/1.1 404 Not Found\r\n\r\n", &mut |_| {})
                .is_err()
        );
        let mut d = Decoder::new(Peer::Mqtt);
        assert!(d.feed(&[0x20, 2, 0, 5], &mut |_| {}).is_err());
    }
}
